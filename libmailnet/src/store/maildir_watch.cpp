// maildir_watch.cpp: inotify on a Maildir store's root, its mailboxes and their new/ and cur/.
#include "maildir_watch.hpp"

#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <unordered_map>
#include <vector>

namespace mailnet::detail {

namespace {

constexpr std::uint32_t root_mask = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR | IN_DONT_FOLLOW;
constexpr std::uint32_t box_mask = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW;  // new/, cur/, a name file
constexpr std::uint32_t messages_mask = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR | IN_DONT_FOLLOW;

}  // namespace

struct maildir_watch::state {
    enum class kind { root, box, messages };
    struct watched {
        std::string entry;  // the mailbox's directory name in the root (empty for the root)
        kind what = kind::root;
    };

    std::filesystem::path root;
    name_of_entry name_of;
    std::shared_ptr<event_hub> hub;
    log_sink log;
    std::chrono::milliseconds pause;
    posix::unique_fd root_fd;
    posix::unique_fd inotify;
    posix::unique_fd stop;  // an eventfd: written once by the destructor
    std::unordered_map<int, watched> watches;
    std::unordered_map<std::string, std::string> names;  // directory entry -> mailbox name, once read
    std::set<std::string> dirty;                          // directory entries changed since the last publish
    bool overflow = false;
    bool warned = false;

    void warn(const std::string& text) {
        if (log && !warned) log(log_level::warning, "maildir: " + text);
        warned = true;
    }

    void add(const std::string& rel, std::uint32_t mask, watched w) {
        const std::string path = rel.empty() ? root.string() : (root / rel).string();
        const int wd = ::inotify_add_watch(inotify.get(), path.c_str(), mask);
        if (wd >= 0) {
            watches[wd] = std::move(w);
        } else if (errno == ENOSPC) {
            warn("the inotify watch limit (fs.inotify.max_user_watches) is reached: files other programs "
                 "write into further mailboxes are not noticed until a restart");
        }
        // ENOENT, ENOTDIR: gone meanwhile, or no directory (a file in the root).
    }

    void add_box(const std::string& entry) {
        if (entry.empty() || entry.front() == '.') return;
        add(entry, box_mask, {entry, kind::box});
        for (const char* sub : {"new", "cur"}) add(entry + "/" + sub, messages_mask, {entry, kind::messages});
    }

    // Every mailbox directory of the root watched (again: a path watched already keeps its
    // watch), each marked changed when `all_changed`.
    void start(bool all_changed = false) {
        // The root's watch first: a mailbox made while the root is read is heard of, then found twice.
        add("", root_mask, {{}, kind::root});
        const int own = ::dup(root_fd.get());
        if (own < 0) return;
        DIR* d = ::fdopendir(own);
        if (!d) {
            ::close(own);
            return;
        }
        ::rewinddir(d);  // the dup shares the offset an earlier read left at the end
        while (const dirent* e = ::readdir(d)) {
            const std::string entry = e->d_name;
            if (entry == "." || entry == ".." || (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN)) continue;
            add_box(entry);
            if (all_changed) dirty.insert(entry);
        }
        ::closedir(d);
    }

    void take(const inotify_event& e) {
        if (e.mask & IN_Q_OVERFLOW) {
            overflow = true;
            return;
        }
        const auto it = watches.find(e.wd);
        if (it == watches.end()) return;
        const std::string name = e.len > 0 ? std::string(e.name, ::strnlen(e.name, e.len)) : std::string();
        if (e.mask & IN_IGNORED) {  // its directory went
            if (it->second.what != kind::root) dirty.insert(it->second.entry);
            watches.erase(it);
            return;
        }
        switch (it->second.what) {
            case kind::root:
                if (name.empty() || !(e.mask & IN_ISDIR)) return;
                if (e.mask & (IN_CREATE | IN_MOVED_TO)) {
                    add_box(name);  // made, or moved in whole
                } else {
                    // Removed or moved out: its watches go (a directory moved elsewhere would
                    // still be heard of under this name, and hold watches).
                    std::vector<int> gone;
                    for (const auto& [wd, w] : watches)
                        if (w.what != kind::root && w.entry == name) gone.push_back(wd);
                    for (const int wd : gone) ::inotify_rm_watch(inotify.get(), wd);  // each then IN_IGNORED
                }
                dirty.insert(name);
                return;
            case kind::box:
                if ((e.mask & IN_ISDIR) && (name == "new" || name == "cur"))
                    add(it->second.entry + "/" + name, messages_mask, {it->second.entry, kind::messages});
                // new/, cur/, or the name file of a hashed name coming after its messages; not
                // tmp/ or a lock file (each POP3 login makes one); the name file as maildir_store.cpp names it
                if (name == "new" || name == "cur" || name == "mailnet-mailbox-name") dirty.insert(it->second.entry);
                return;
            case kind::messages:
                dirty.insert(it->second.entry);
                return;
        }
    }

    void publish() {
        if (overflow) {
            // Events were lost: the making of a mailbox (or of its new/), the removal of one.
            // Every mailbox once heard of and every one there now is told as changed, and all
            // is watched again on a new descriptor (a removal's IN_IGNORED may be lost too).
            overflow = false;
            for (const auto& [entry, name] : names) dirty.insert(entry);
            for (const auto& [wd, w] : watches)
                if (w.what != kind::root) dirty.insert(w.entry);
            watches.clear();
            inotify.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
            if (inotify.get() < 0) warn(std::string("cannot watch again after an overflow (") + std::strerror(errno) + ")");
            else start(true);
        }
        for (const auto& entry : dirty) {
            auto known = names.find(entry);
            if (known == names.end()) {
                auto name = name_of(root_fd.get(), entry);
                if (!name) continue;  // no mailbox of this store (yet: its name file comes later)
                known = names.emplace(entry, std::move(*name)).first;
            }
            hub->publish({store_event::kind::changed, known->second, {}, 0, 0});
            // A mailbox no longer there is forgotten once told (a name used once per test).
            struct stat st {};
            if (::fstatat(root_fd.get(), entry.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) names.erase(known);
        }
        dirty.clear();
    }
};

maildir_watch::maildir_watch(std::filesystem::path root, name_of_entry name_of, std::shared_ptr<event_hub> hub,
                             log_sink log, std::chrono::milliseconds pause)
    : s_(std::make_unique<state>()) {
    s_->root = std::move(root);
    s_->name_of = std::move(name_of);
    s_->hub = std::move(hub);
    s_->log = std::move(log);
    s_->pause = pause;
    s_->root_fd.reset(::open(s_->root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    s_->inotify.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    s_->stop.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (s_->root_fd.get() < 0 || s_->inotify.get() < 0 || s_->stop.get() < 0) {
        s_->warn("cannot watch " + s_->root.string() + " (" + std::strerror(errno) +
                 "): files other programs write into it are not noticed");
        return;
    }
    s_->start();
    thread_ = std::thread([this] { run(); });
}

maildir_watch::~maildir_watch() {
    if (thread_.joinable()) {
        const std::uint64_t one = 1;
        [[maybe_unused]] const auto n = ::write(s_->stop.get(), &one, sizeof one);
        thread_.join();
    }
}

void maildir_watch::run() {
    alignas(inotify_event) char buf[64 * 1024];
    for (;;) {
        pollfd fds[2] = {{s_->inotify.get(), POLLIN, 0}, {s_->stop.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
        if (fds[1].revents) return;
        for (;;) {
            const ssize_t n = ::read(s_->inotify.get(), buf, sizeof buf);
            if (n <= 0) break;  // EAGAIN: all read
            for (ssize_t at = 0; at < n;) {
                const auto* e = reinterpret_cast<const inotify_event*>(buf + at);
                s_->take(*e);
                at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
            }
        }
        s_->publish();
        // At most one round every pause: a busy mailbox is told a few times a second, not
        // once per file (the kernel queues what comes meanwhile).
        pollfd stop{s_->stop.get(), POLLIN, 0};
        if (::poll(&stop, 1, static_cast<int>(s_->pause.count())) > 0) return;
    }
}

}  // namespace mailnet::detail
