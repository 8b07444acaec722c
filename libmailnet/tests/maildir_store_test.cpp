// maildir_store_test.cpp: the Maildir store as Dovecot, mutt and a second process see it:
// delivery (tmp/ -> new/, hard links, rollback), foreign names, locks, commit; name encoding, UIDL.
#include "mailnet/store/store.hpp"

#include "support/fixtures.hpp"

#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <future>
#include <latch>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>
#include <cstdio>

#include "support/heap.hpp"

// ---- which directories the store fsyncs, seen from outside the library
// NOTE: this test binary defines fsync(2), fdatasync(2), syncfs(2), sync_file_range(2) and
// link(2) itself. The executable comes first in symbol lookup, so libmailnet's calls bind to
// it (shared or static) and the store needs no test hook. Every call goes on to the kernel;
// while a test records, each directory fsync'd is noted with the names it held at that moment,
// and every durability step goes into one ordered log (ops). No unit test can cut the power,
// so this shows only that the store asks for the right things in the right order, not that a
// crash keeps the mail.
namespace {

struct dir_sync {
    dev_t dev = 0;
    ino_t ino = 0;
    std::set<std::string> names;  // the directory's entries when it was fsync'd
};

// One step of the log, in the order the calls were made (and returned, for syncfs).
struct op {
    enum kind {
        file_sync,     // fsync or fdatasync of a regular file returned: `ino`, `size` then
        syncfs_start,  // a syncfs is called: `files` holds every watched tmp/ file and its size
        syncfs_end,    // ... and returned
        flush,         // fsync or fdatasync of a directory that is not watched (the flush after syncfs)
        dir_sync,      // fsync of a watched directory: `ino`, its entries in `names`
        link,          // link(2) returned: `ino` of the file, `name` the new base name
        returned,      // the test's own note: a commit returned, `name` the delivered base name
    };
    op() = default;
    op(kind k, ino_t i = 0) : what(k), ino(i) {}  // NOLINT: implicit, for {op::flush}
    kind what = file_sync;
    ino_t ino = 0;
    off_t size = 0;
    std::string name;
    std::map<ino_t, off_t> files;
    std::set<std::string> names;
    bool failed = false;  // the call failed
};

struct fsync_recorder {
    std::mutex mutex;
    bool on = false;
    std::vector<dir_sync> syncs;
    std::vector<op> ops;                  // while on
    std::vector<std::string> watched;     // tmp/ directories a syncfs_start lists
    long syncfs_calls = 0, file_syncs = 0;  // while on
    // A failure to inject: fsync of this directory (by inode), or fsync/fdatasync of any regular
    // file, says EIO; syncfs and sync_file_range say these errnos (0: no failure).
    std::optional<std::pair<dev_t, ino_t>> fail_dir;
    bool fail_files = false;
    int fail_syncfs = 0, fail_sync_file_range = 0;
    // Called before each fsync, outside the mutex (it may wait for other threads): 0 goes on,
    // an errno fails that call with it.
    std::function<int(int fd)> before;
    // Called before each syncfs and each fsync/fdatasync of a regular file (a data sync), as
    // `before`.
    std::function<int(int fd)> before_data;
};

// True if the injected failure applies to `fd`.
bool injected_failure(const fsync_recorder& r, int fd) {
    if (!r.fail_dir && !r.fail_files) return false;
    struct stat st{};
    if (::fstat(fd, &st) != 0) return false;
    if (S_ISREG(st.st_mode)) return r.fail_files;
    return r.fail_dir && r.fail_dir->first == st.st_dev && r.fail_dir->second == st.st_ino;
}

fsync_recorder& recorder() {
    static fsync_recorder r;
    return r;
}

void note_dir_sync(int fd) {
    struct stat st{};
    if (::fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode)) return;
    dir_sync sync{st.st_dev, st.st_ino, {}};
    const int own = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);  // its own offset
    if (own < 0) return;
    if (DIR* d = ::fdopendir(own)) {
        while (const dirent* e = ::readdir(d)) {
            const std::string_view name = e->d_name;
            if (name != "." && name != "..") sync.names.emplace(name);
        }
        ::closedir(d);
    } else {
        ::close(own);
    }
    op o;
    o.what = op::dir_sync;
    o.ino = st.st_ino;
    o.names = sync.names;
    recorder().ops.push_back(std::move(o));
    recorder().syncs.push_back(std::move(sync));
}

bool is_regular(int fd, struct stat* out = nullptr) {
    struct stat st{};
    if (::fstat(fd, &st) != 0) return false;
    if (out) *out = st;
    return S_ISREG(st.st_mode);
}

// Every regular file in the watched directories, with its size (under the recorder's mutex).
std::map<ino_t, off_t> watched_files(const fsync_recorder& r) {
    std::map<ino_t, off_t> out;
    for (const auto& dir : r.watched) {
        DIR* d = ::opendir(dir.c_str());
        if (!d) continue;
        while (const dirent* e = ::readdir(d)) {
            struct stat st{};
            if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                out[st.st_ino] = st.st_size;
        }
        ::closedir(d);
    }
    return out;
}

// fsync or fdatasync (`nr`) as the store sees them: recorded, failed on request, then real.
int recorded_sync(int fd, long nr) {
    std::function<int(int)> before;
    struct stat st{};
    const bool regular = is_regular(fd, &st);
    {
        auto& r = recorder();
        std::lock_guard g(r.mutex);
        if (r.on && nr == SYS_fsync) note_dir_sync(fd);
        if (r.on && !regular && !(nr == SYS_fsync && S_ISDIR(st.st_mode))) r.ops.push_back({op::flush});
        if (injected_failure(r, fd)) {
            errno = EIO;
            return -1;
        }
        before = regular ? r.before_data : r.before;
        if (nr == SYS_fdatasync && !regular) before = nullptr;
    }
    if (before) {
        if (const int e = before(fd); e != 0) {
            errno = e;
            return -1;
        }
    }
    const int rc = static_cast<int>(::syscall(nr, fd));
    const int saved = errno;
    if (regular) {
        auto& r = recorder();
        std::lock_guard g(r.mutex);
        if (r.on) {
            ++r.file_syncs;
            op o{op::file_sync, st.st_ino};
            struct stat now{};
            if (::fstat(fd, &now) == 0) o.size = now.st_size;
            o.failed = rc != 0;
            r.ops.push_back(std::move(o));
        }
    }
    errno = saved;
    return rc;
}

}  // namespace

extern "C" int fsync(int fd) { return recorded_sync(fd, SYS_fsync); }
extern "C" int fdatasync(int fd) { return recorded_sync(fd, SYS_fdatasync); }

extern "C" int syncfs(int fd) {
    std::function<int(int)> before;
    {
        auto& r = recorder();
        std::lock_guard g(r.mutex);
        if (r.on) {
            ++r.syncfs_calls;
            op o{op::syncfs_start};
            o.files = watched_files(r);
            r.ops.push_back(std::move(o));
        }
        before = r.before_data;
    }
    int rc = 0;
    if (before) {
        if (const int e = before(fd); e != 0) {
            errno = e;
            rc = -1;
        }
    }
    if (rc == 0) rc = static_cast<int>(::syscall(SYS_syncfs, fd));
    const int saved = errno;
    auto& r = recorder();
    std::lock_guard g(r.mutex);
    if (rc == 0 && r.fail_syncfs != 0) {
        rc = -1;
        errno = r.fail_syncfs;
    } else {
        errno = saved;
    }
    if (r.on) {
        op o{op::syncfs_end};
        o.failed = rc != 0;
        r.ops.push_back(std::move(o));
    }
    return rc;
}

extern "C" int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
    {
        auto& r = recorder();
        std::lock_guard g(r.mutex);
        if (r.fail_sync_file_range != 0) {
            errno = r.fail_sync_file_range;
            return -1;
        }
    }
    return static_cast<int>(::syscall(SYS_sync_file_range, fd, offset, nbytes, flags));
}

// link(2) says EXDEV for a new name containing this part, as across file systems. As with
// fsync above, the executable's definition is the one libmailnet's calls bind to.
namespace {
std::mutex exdev_mutex;
std::string exdev_part;  // empty: no injection
// Runs before each link(2) whose new name contains before_link_part (a POP3 session acting
// between a delivery's links); called without exdev_mutex.
std::string before_link_part;
std::function<void()> before_link;
}  // namespace

namespace {
std::string fs_base_name(const char* path) {
    const std::string_view p(path);
    return std::string(p.substr(p.rfind('/') + 1));
}
}  // namespace

extern "C" int link(const char* from, const char* to) {
    std::function<void()> hook;
    {
        std::lock_guard g(exdev_mutex);
        if (before_link && std::string_view(to).find(before_link_part) != std::string_view::npos) hook = before_link;
    }
    if (hook) hook();
    const auto record = [&](int rc) {
        auto& r = recorder();
        std::lock_guard g(r.mutex);
        if (!r.on || rc != 0) return rc;
        struct stat st{};
        if (::stat(from, &st) != 0) return rc;
        op o{op::link, st.st_ino};
        o.name = fs_base_name(to);
        r.ops.push_back(std::move(o));
        return rc;
    };
    {
        std::lock_guard g(exdev_mutex);
        // Only a link from another mailbox (the delivery's tmp/ file): the copy's own tmp/ ->
        // new/ link inside the far mailbox works. exdev_part is "/<mailbox>/new/".
        const std::string_view part(exdev_part);
        const std::string_view far_box = part.substr(0, part.find("/new/") + 1);
        if (!part.empty() && std::string_view(to).find(part) != std::string_view::npos &&
            std::string_view(from).find(far_box) == std::string_view::npos) {
            errno = EXDEV;
            return -1;
        }
    }
    const int rc = static_cast<int>(::syscall(SYS_link, from, to));
    const int saved = errno;
    record(rc);
    errno = saved;
    return rc;
}

// fstatat(2) counted while a test counts: how many files a snapshot stats.
namespace {
std::atomic<bool> counting_stats{false};
std::atomic<long> stat_calls{0};
int counted_fstatat(int dir, const char* path, struct stat* st, int flags) {
    if (counting_stats) ++stat_calls;
    return static_cast<int>(::syscall(SYS_newfstatat, dir, path, st, flags));
}
}  // namespace

extern "C" int fstatat(int dir, const char* path, struct stat* st, int flags) { return counted_fstatat(dir, path, st, flags); }
extern "C" int fstatat64(int dir, const char* path, struct stat64* st, int flags) {
    return counted_fstatat(dir, path, reinterpret_cast<struct stat*>(st), flags);  // one layout on 64-bit Linux
}

namespace {
// Injects EXDEV for link()s to names containing `part` until destroyed.
struct exdev_injection {
    explicit exdev_injection(std::string part) {
        std::lock_guard g(exdev_mutex);
        exdev_part = std::move(part);
    }
    exdev_injection(const exdev_injection&) = delete;
    exdev_injection& operator=(const exdev_injection&) = delete;
    ~exdev_injection() {
        std::lock_guard g(exdev_mutex);
        exdev_part.clear();
    }
};
}  // namespace

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using mailnet::errc;

using mailnet::testing::log_capture;

// A fresh directory under /tmp, removed with everything in it.
struct temp_dir : mailnet::testing::temp_dir {
    temp_dir() : mailnet::testing::temp_dir("mailnet-maildir") {}
};

mailnet::maildir_options options(const fs::path& root, mailnet::log_sink log = mailnet::null_log()) {
    mailnet::maildir_options o;
    o.root = root / "store";
    o.hostname = "testhost";
    o.fsync = false;
    o.log = std::move(log);
    return o;
}

std::unique_ptr<mailnet::store> open_store(mailnet::maildir_options o) {
    auto s = mailnet::open_maildir_store(std::move(o));
    EXPECT_TRUE(s) << s.error().message();
    return s ? std::move(*s) : nullptr;
}

// File names in a directory, sorted; empty if it does not exist.
std::vector<std::string> names_in(const fs::path& dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

void write_file(const fs::path& path, std::string_view content) {
    fs::create_directories(path.parent_path());
    std::ofstream f(path, std::ios::binary);
    f.write(content.data(), static_cast<std::streamsize>(content.size()));
}

std::string read_file(const fs::path& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void set_mtime(const fs::path& path, std::time_t secs) {
    const std::array<timeval, 2> tv{timeval{secs, 0}, timeval{secs, 0}};
    ASSERT_EQ(::utimes(path.c_str(), tv.data()), 0);
}

std::string read_message(mailnet::message& m, std::size_t chunk) {
    std::string out;
    std::vector<char> buf(chunk);
    for (;;) {
        auto n = m.read(buf);
        if (!n) {
            ADD_FAILURE() << n.error().message();
            break;
        }
        if (*n == 0) break;
        out.append(buf.data(), *n);
    }
    return out;
}

std::vector<std::string> ids_of(const std::vector<mailnet::message_info>& snap) {
    std::vector<std::string> out;
    for (const auto& m : snap) out.push_back(m.id);
    return out;
}

std::vector<std::string> boxes(std::initializer_list<const char*> names) { return {names.begin(), names.end()}; }

ino_t inode_of(const fs::path& p) {
    struct stat st{};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_ino;
}

// Records the directory fsyncs from construction to stop().
struct recording {
    recording() {
        std::lock_guard g(recorder().mutex);
        recorder().syncs.clear();
        recorder().ops.clear();
        recorder().syncfs_calls = recorder().file_syncs = 0;
        recorder().on = true;
    }
    recording(const recording&) = delete;
    recording& operator=(const recording&) = delete;
    ~recording() { stop(); }
    std::vector<dir_sync> stop() {
        std::lock_guard g(recorder().mutex);
        recorder().on = false;
        recorder().watched.clear();
        return std::exchange(recorder().syncs, {});
    }
    /// The ordered log so far (call after stop(), or while the deliveries are done).
    std::vector<op> ops() {
        std::lock_guard g(recorder().mutex);
        return recorder().ops;
    }
    std::pair<long, long> syncfs_and_file_syncs() {
        std::lock_guard g(recorder().mutex);
        return {recorder().syncfs_calls, recorder().file_syncs};
    }
    /// Lists `dir`'s files at each syncfs.
    void watch(const fs::path& dir) {
        std::lock_guard g(recorder().mutex);
        recorder().watched.push_back(dir.string());
    }
    /// The test's note that a commit returned having delivered `name`.
    static void returned(std::string name) {
        std::lock_guard g(recorder().mutex);
        if (!recorder().on) return;
        op o{op::returned};
        o.name = std::move(name);
        recorder().ops.push_back(std::move(o));
    }
};

// The fsyncs of `dir` (by inode: paths are not known to the recorder).
std::vector<dir_sync> syncs_of(const std::vector<dir_sync>& syncs, const fs::path& dir) {
    struct stat st{};
    EXPECT_EQ(::stat(dir.c_str(), &st), 0) << dir;
    std::vector<dir_sync> out;
    for (const auto& s : syncs)
        if (s.dev == st.st_dev && s.ino == st.st_ino) out.push_back(s);
    return out;
}

// True if `dir` was fsync'd at least once while it held every name of `names`.
bool synced_holding(const std::vector<dir_sync>& syncs, const fs::path& dir, std::initializer_list<const char*> names) {
    const auto mine = syncs_of(syncs, dir);
    return std::any_of(mine.begin(), mine.end(), [&](const dir_sync& s) {
        return std::all_of(names.begin(), names.end(), [&](const char* n) { return s.names.contains(n); });
    });
}

const std::regex delivered_name(R"((\d+)\.M(\d+)P(\d+)Q(\d+)\.([^,:/]*),S=(\d+),W=(\d+))");

TEST(maildir_store, delivers_one_message_to_three_mailboxes_as_hard_links) {
    temp_dir d;
    auto o = options(d.path);
    o.clock = [] { return std::chrono::system_clock::time_point(1700000000s + 123456us); };
    auto s = open_store(o);
    const std::string text = "Subject: hi\n\nline one\nline two\n";  // 31 octets, 4 LF
    ASSERT_TRUE(s->deliver(boxes({"alice", "bob", "carol"}), text));

    const fs::path root = d.path / "store";
    std::string name;
    std::set<ino_t> inodes;
    for (const char* box : {"alice", "bob", "carol"}) {
        const auto in_new = names_in(root / box / "new");
        ASSERT_EQ(in_new.size(), 1u) << box;
        if (name.empty()) name = in_new[0];
        EXPECT_EQ(in_new[0], name) << "one name in every mailbox";
        EXPECT_TRUE(names_in(root / box / "tmp").empty()) << box;
        EXPECT_TRUE(names_in(root / box / "cur").empty()) << box;
        EXPECT_EQ(read_file(root / box / "new" / name), text);
        inodes.insert(inode_of(root / box / "new" / name));

        auto snap = s->snapshot(box);
        ASSERT_TRUE(snap);
        ASSERT_EQ(snap->size(), 1u);
        EXPECT_EQ((*snap)[0].id, name);
        EXPECT_EQ((*snap)[0].pop3_uidl(), name);
        EXPECT_EQ((*snap)[0].octets, 35u);
        EXPECT_FALSE((*snap)[0].seen);
    }
    EXPECT_EQ(inodes.size(), 1u) << "hard links share one inode";
    EXPECT_EQ(fs::hard_link_count(root / "alice" / "new" / name), 3u);

    std::smatch m;
    ASSERT_TRUE(std::regex_match(name, m, delivered_name)) << name;
    EXPECT_EQ(m[1], "1700000000");
    EXPECT_EQ(m[2], "123456");
    EXPECT_EQ(m[3], std::to_string(::getpid()));
    EXPECT_EQ(m[5], "testhost");
    EXPECT_EQ(m[6], "31");
    EXPECT_EQ(m[7], "35");
    EXPECT_LE(name.size(), 70u);
}

TEST(maildir_store, a_mailbox_on_another_file_system_gets_a_copy) {
    // link(2) across file systems fails with EXDEV: that target gets a copy written through its
    // own tmp/, the others keep sharing one inode. A mailbox may not be a symlink to another
    // file system (nothing is followed out of the store), so the EXDEV is injected.
    temp_dir d;
    auto s = open_store(options(d.path));
    const fs::path root = d.path / "store";
    const std::string text = "Subject: far\n\nbody\n";
    {
        exdev_injection far("/bob/new/");
        ASSERT_TRUE(s->deliver(boxes({"alice", "bob", "carol"}), text));
    }
    const auto alice = names_in(root / "alice" / "new");
    const auto bob = names_in(root / "bob" / "new");
    ASSERT_EQ(alice.size(), 1u);
    ASSERT_EQ(bob, alice) << "the same name everywhere";
    EXPECT_EQ(read_file(root / "bob" / "new" / bob[0]), text);
    EXPECT_TRUE(names_in(root / "bob" / "tmp").empty()) << "the copy's tmp/ name is gone";
    EXPECT_NE(inode_of(root / "bob" / "new" / bob[0]), inode_of(root / "alice" / "new" / alice[0])) << "a copy";
    EXPECT_EQ(inode_of(root / "alice" / "new" / alice[0]), inode_of(root / "carol" / "new" / alice[0]));
    EXPECT_EQ(fs::hard_link_count(root / "alice" / "new" / alice[0]), 2u);
    auto snap = s->snapshot("bob");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 1u);
}

TEST(maildir_store, a_copy_fetched_between_the_links_of_a_delivery_fails_nothing_and_duplicates_nothing) {
    // A POP3 session may take the first mailbox's copy (DELE+QUIT, or RETR moving it to cur/)
    // before the delivery links the others: they link the tmp/ file, so the delivery still
    // succeeds everywhere (a 451 here would make the client's retry a duplicate).
    for (const bool deleted : {true, false}) {
        temp_dir d;
        auto s = open_store(options(d.path));
        const fs::path root = d.path / "store";
        {
            std::lock_guard g(exdev_mutex);
            before_link_part = "/bob/new/";
            before_link = [&] {
                for (const auto& name : names_in(root / "alice" / "new")) {
                    if (deleted)
                        fs::remove(root / "alice" / "new" / name);
                    else
                        fs::rename(root / "alice" / "new" / name, root / "alice" / "cur" / (name + ":2,S"));
                }
            };
        }
        const bool ok = bool(s->deliver(boxes({"alice", "bob"}), "Subject: race\n\nbody\n"));
        {
            std::lock_guard g(exdev_mutex);
            before_link = nullptr;
        }
        EXPECT_TRUE(ok) << (deleted ? "deleted" : "seen");
        EXPECT_EQ(names_in(root / "bob" / "new").size(), 1u);
        EXPECT_EQ(names_in(root / "alice" / "cur").size(), deleted ? 0u : 1u);
    }
}

TEST(maildir_store, durable_delivery_creates_the_mailbox_with_fsync_on) {
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    auto s = open_store(o);
    ASSERT_TRUE(s->deliver(boxes({"new-user@example.org", "other"}), "a\n"));
    const fs::path root = d.path / "store";
    EXPECT_EQ(names_in(root / "new-user@example.org" / "new").size(), 1u);
    EXPECT_EQ(names_in(root / "other" / "new").size(), 1u);
}

TEST(maildir_store, a_large_message_written_in_pieces_with_fsync_on_is_stored_exactly) {
    // The write path of a multi-MiB message with fsync on, linked to two mailboxes: every
    // octet stored in order and the sizes in the names. (The writeback started each MiB,
    // sync_file_range, changes no outcome a test can see; this guards the path it sits on.)
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    auto s = open_store(o);
    auto dl = s->begin_delivery(boxes({"alice", "bob"}));
    ASSERT_TRUE(dl);
    std::string all;
    for (int i = 0; all.size() < 3 * 1024 * 1024 + 777; ++i) {
        std::string piece = "line " + std::to_string(i) + " " + std::string(static_cast<std::size_t>(i % 97) * 13, 'x') + "\n";
        ASSERT_TRUE((*dl)->write(piece));
        all += piece;
    }
    ASSERT_TRUE((*dl)->commit());
    for (const char* box : {"alice", "bob"}) {
        const auto in_new = names_in(d.path / "store" / box / "new");
        ASSERT_EQ(in_new.size(), 1u) << box;
        EXPECT_NE(in_new[0].find(",S=" + std::to_string(all.size()) + ","), std::string::npos) << in_new[0];
        std::ifstream in(d.path / "store" / box / "new" / in_new[0], std::ios::binary);
        const std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        EXPECT_TRUE(got == all) << box << ": " << got.size() << " octets read, " << all.size() << " written";
    }
}

std::string read_whole(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Whether the store writes directly into `dir`'s file system (ext2/3/4, xfs; see
// maildir_delivery::start_direct) and it takes O_DIRECT there.
bool writes_directly(const fs::path& dir) {
    struct statfs st{};
    if (::statfs(dir.c_str(), &st) != 0 || (st.f_type != 0xEF53 && st.f_type != 0x58465342)) return false;
    const fs::path probe = dir / "o_direct.probe";
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_DIRECT, 0600);
    if (fd >= 0) ::close(fd);
    ::unlink(probe.c_str());
    return fd >= 0;
}

TEST(maildir_store, messages_written_directly_past_direct_io_from_are_stored_exactly_whatever_their_pieces) {
    // Every way the octets can meet the direct path: a message that ends before it, at a block
    // boundary, one past it, past a whole 256 KiB buffer; pieces of one octet, of odd sizes
    // that straddle the boundaries, one piece; committed alone, and in a group with
    // end_of_message() called first (pop3c's way) or not.
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    o.direct_io_from = 5000;
    auto s = open_store(o);
    int n = 0;
    for (const std::size_t size : {std::size_t{1}, std::size_t{4999}, std::size_t{5000}, std::size_t{5001}, std::size_t{8192},
                                   std::size_t{8193}, std::size_t{256 * 1024 + 4096}, std::size_t{600 * 1024 + 123}}) {
        for (const std::size_t piece : {std::size_t{1}, std::size_t{4097}, std::size_t{70001}, size}) {
            if (piece == 1 && size > 9000) continue;  // one octet at a time: the small ones only
            std::string all;
            for (std::size_t i = 0; all.size() < size; ++i) all += static_cast<char>('a' + (i * 7 + size) % 26);
            all.resize(size);
            const std::string box = "m" + std::to_string(n++);
            std::vector<std::unique_ptr<mailnet::delivery>> ds;
            for (int way = 0; way < 3; ++way) {
                auto dl = s->begin_delivery(std::vector<std::string>{box});
                ASSERT_TRUE(dl);
                for (std::size_t at = 0; at < all.size(); at += piece) ASSERT_TRUE((*dl)->write(std::string_view(all).substr(at, piece)));
                if (way == 0) {
                    ASSERT_TRUE((*dl)->commit());
                    continue;
                }
                if (way == 1) {
                    ASSERT_TRUE((*dl)->end_of_message());
                    EXPECT_FALSE((*dl)->write("more")) << "a write after end_of_message()";
                }
                ds.push_back(std::move(*dl));
            }
            std::vector<mailnet::delivery*> group{ds[0].get(), ds[1].get()};
            for (const auto& r : mailnet::commit_together(group)) ASSERT_TRUE(r);
            const auto in_new = names_in(d.path / "store" / box / "new");
            ASSERT_EQ(in_new.size(), 3u) << box;
            for (const auto& name : in_new) {
                EXPECT_NE(name.find(",S=" + std::to_string(size) + ","), std::string::npos) << name;
                const std::string got = read_whole(d.path / "store" / box / "new" / name);
                EXPECT_TRUE(got == all) << "size " << size << ", pieces of " << piece << ": " << got.size() << " octets read";
            }
            EXPECT_TRUE(names_in(d.path / "store" / box / "tmp").empty()) << box;
        }
    }
}

TEST(maildir_store, a_large_messages_octets_past_direct_io_from_never_pass_through_the_page_cache) {
    // What direct writes are for (a copy into fresh page cache costs the writing thread about
    // 2 ms of CPU a MiB on the bench's VM): after the commit, the file's pages from the first
    // block boundary after direct_io_from up to its last partial block were never in the page
    // cache (mincore, looked at before anything reads the file), while a message written the
    // usual way has its pages there.
    temp_dir d;
    if (!writes_directly(d.path)) GTEST_SKIP() << d.path << ": the store writes no file there directly";
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    if (4096 % page != 0) GTEST_SKIP() << "pages of " << page << " octets: a 4096 block is no whole page";
    const std::size_t size = 2 * 1024 * 1024 + 100;
    std::string all(size, 'q');
    for (std::size_t i = 0; i < size; i += 1000) all[i] = '\n';
    // The number of the file's pages in [from, to) that are in the page cache.
    auto cached = [&](const fs::path& file, std::size_t from, std::size_t to) {
        const int fd = ::open(file.c_str(), O_RDONLY);
        EXPECT_GE(fd, 0) << file;
        void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
        ::close(fd);
        EXPECT_NE(map, MAP_FAILED);
        std::vector<unsigned char> in((size + page - 1) / page);
        EXPECT_EQ(::mincore(map, size, in.data()), 0);
        ::munmap(map, size);
        std::size_t n = 0;
        for (std::size_t p = from / page; p < to / page; ++p) n += in[p] & 1;
        return n;
    };
    auto deliver = [&](std::uint64_t direct_from) {
        auto o = options(d.path);
        o.fsync = true;
        o.direct_io_from = direct_from;
        auto s = open_store(o);
        const std::string box = "box" + std::to_string(direct_from);
        auto dl = s->begin_delivery(std::vector<std::string>{box});
        EXPECT_TRUE(dl);
        for (std::size_t at = 0; at < size; at += 65536) EXPECT_TRUE((*dl)->write(std::string_view(all).substr(at, 65536)));
        EXPECT_TRUE((*dl)->commit());
        const auto in_new = names_in(d.path / "store" / box / "new");
        EXPECT_EQ(in_new.size(), 1u);
        return d.path / "store" / box / "new" / in_new.at(0);
    };
    const std::size_t direct_from = 100000, first_direct = (direct_from + 4095) / 4096 * 4096, last_whole = size / 4096 * 4096;
    const fs::path direct = deliver(direct_from), usual = deliver(0);
    EXPECT_EQ(cached(direct, first_direct, last_whole), 0u);
    // ...and only past direct_io_from: what comes before it went through the page cache, also
    // the start of the write() that crossed it.
    EXPECT_EQ(cached(direct, 0, direct_from / 4096 * 4096), direct_from / 4096 * 4096 / page);
    EXPECT_EQ(cached(usual, first_direct, last_whole), (last_whole - first_direct) / page);
    EXPECT_TRUE(read_whole(direct) == all);
    EXPECT_TRUE(read_whole(usual) == all);
}

TEST(maildir_store, a_delivery_whose_name_is_taken_replaces_nothing_and_leaves_nothing) {
    // The link into new/ never replaces a file there: a message that asked to keep a name
    // another message has fails, the other stays, nothing is left in tmp/.
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    auto s = open_store(o);
    for (const char* text : {"first\n", "second\n"}) {
        auto dl = s->begin_delivery(boxes({"alice"}));
        ASSERT_TRUE(dl);
        ASSERT_TRUE((*dl)->keep("same-name", false));
        ASSERT_TRUE((*dl)->write(text));
        const auto r = (*dl)->commit();
        EXPECT_EQ(bool(r), std::string(text) == "first\n") << text;
        if (!r) {
            EXPECT_EQ(r.error(), std::errc::file_exists);
        }
    }
    EXPECT_EQ(names_in(d.path / "store" / "alice" / "new"), std::vector<std::string>{"same-name"});
    EXPECT_EQ(read_whole(d.path / "store" / "alice" / "new" / "same-name"), "first\n");
    EXPECT_TRUE(names_in(d.path / "store" / "alice" / "tmp").empty());
}

TEST(maildir_store, a_mailbox_removed_behind_the_stores_back_is_made_again_by_the_next_delivery) {
    // The store remembers the mailboxes it made and checks only their new/ on later
    // deliveries: whatever part of one is removed, the next delivery still lands, whole.
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    auto s = open_store(o);
    const fs::path box = d.path / "store" / "alice";
    ASSERT_TRUE(s->deliver(boxes({"alice", "bob"}), "1\n"));
    for (const char* gone : {"tmp", "new", "cur", ""}) {
        fs::remove_all(std::string(gone).empty() ? box : box / gone);
        auto r = s->deliver(boxes({"alice", "bob"}), "again\n");
        ASSERT_TRUE(r) << "after removing alice/" << gone << ": " << r.error().message();
        for (const char* sub : {"tmp", "new", "cur"}) EXPECT_TRUE(fs::is_directory(box / sub)) << gone << " -> " << sub;
        EXPECT_FALSE(names_in(box / "new").empty()) << gone;
    }
    // bob as the second target, its new/ gone: linked into a new/ made again.
    fs::remove_all(d.path / "store" / "bob" / "new");
    ASSERT_TRUE(s->deliver(boxes({"alice", "bob"}), "to bob\n"));
    EXPECT_EQ(names_in(d.path / "store" / "bob" / "new").size(), 1u);
    auto snap = s->snapshot("bob");
    ASSERT_TRUE(snap);
}

// The message in `dir` whose name starts with `tmp_name` (a tmp/ file's name, "<unique>.<host>"),
// "" if none.
std::string message_named_after(const fs::path& dir, const std::string& tmp_name) {
    for (const auto& n : names_in(dir))
        if (n.rfind(tmp_name + ",", 0) == 0 || n == tmp_name) return read_file(dir / n);
    return {};
}

// Waits (up to 5 s) until `dir` holds `n` files; their names.
std::vector<std::string> settled(const fs::path& dir, std::size_t n) {
    const auto until = std::chrono::steady_clock::now() + 5s;
    auto names = names_in(dir);
    while (names.size() != n && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(10ms);
        names = names_in(dir);
    }
    return names;
}

// Whether a message in `dir` is named after one of `tmp_names` (files made ahead), and its text.
std::string taken_from(const fs::path& dir, const std::vector<std::string>& tmp_names) {
    for (const auto& t : tmp_names) {
        const std::string m = message_named_after(dir, t);
        if (!m.empty()) return m;
    }
    return {};
}

// Options with fsync on and the made-ahead windows long enough for a loaded machine (tests
// that are not about expiry must not see a file expire).
mailnet::maildir_options made_ahead_options(const fs::path& root) {
    auto o = options(root);
    o.fsync = true;
    o.made_ahead_busy = 30s;
    o.made_ahead_lifetime = 30s;
    return o;
}

TEST(maildir_store, a_mailbox_hinted_twice_within_a_second_gets_files_made_ahead_for_its_next_deliveries) {
    temp_dir d;
    auto s = open_store(made_ahead_options(d.path));
    const fs::path alice = d.path / "store" / "alice";
    const fs::path bob = d.path / "store" / "bob";
    s->prepare_delivery(boxes({"alice"}));
    s->prepare_delivery(boxes({"alice"}));
    std::this_thread::sleep_for(100ms);
    EXPECT_FALSE(fs::exists(alice)) << "a hint makes no mailbox: deliveries do";
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "1\n"));
    s->prepare_delivery(boxes({"alice"}));  // the first hint since it was made
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "2\n"));
    std::this_thread::sleep_for(100ms);
    EXPECT_TRUE(names_in(alice / "tmp").empty()) << "one hint is not a busy mailbox";
    s->prepare_delivery(boxes({"alice"}));  // again within a second, one delivery since: two ahead
    auto made = settled(alice / "tmp", 2);
    ASSERT_EQ(made.size(), 2u);
    for (const auto& n : made) EXPECT_EQ(fs::file_size(alice / "tmp" / n), 0u) << n;
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "3\n"));
    EXPECT_EQ(taken_from(alice / "new", made), "3\n") << "the delivery took a file made ahead";
    made = settled(alice / "tmp", 2);  // made again
    ASSERT_EQ(made.size(), 2u);
    // bob, delivered to once and hinted once, gets none, and takes none of alice's.
    ASSERT_TRUE(s->deliver(boxes({"bob"}), "b1\n"));
    s->prepare_delivery(boxes({"bob"}));
    ASSERT_TRUE(s->deliver(boxes({"bob"}), "b2\n"));
    std::this_thread::sleep_for(100ms);
    EXPECT_TRUE(names_in(bob / "tmp").empty());
    EXPECT_EQ(names_in(alice / "tmp"), made);
    EXPECT_EQ(taken_from(bob / "new", made), "");
    // A delivery to both takes one of the first mailbox's, and both get the message.
    ASSERT_TRUE(s->deliver(boxes({"alice", "bob"}), "both\n"));
    EXPECT_EQ(taken_from(alice / "new", made), "both\n");
    EXPECT_EQ(taken_from(bob / "new", made), "both\n");
    EXPECT_EQ(names_in(alice / "new").size(), 4u);
    EXPECT_EQ(names_in(bob / "new").size(), 3u);
    s.reset();
    EXPECT_TRUE(names_in(alice / "tmp").empty()) << "the files made ahead go with the store";
    EXPECT_TRUE(names_in(bob / "tmp").empty());
}

// A store (fsync on) whose mailbox alice got two deliveries, each followed by a hint: busy,
// with two files made ahead in its tmp/ (`made`).
struct busy_alice {
    std::unique_ptr<mailnet::store> s;
    fs::path box;
    std::vector<std::string> made;
    busy_alice(const temp_dir& d, mailnet::maildir_options o) : box(d.path / "store" / "alice") {
        s = open_store(std::move(o));
        const auto alice = boxes({"alice"});
        for (const char* text : {"1\n", "2\n"}) {
            EXPECT_TRUE(s->deliver(alice, text));
            s->prepare_delivery(alice);
        }
        made = settled(box / "tmp", 2);
    }
};

TEST(maildir_store, a_file_made_ahead_that_was_removed_or_replaced_is_not_used_and_a_replacement_is_kept) {
    temp_dir d;
    busy_alice b(d, made_ahead_options(d.path));
    auto& s = b.s;
    const fs::path& box = b.box;
    const auto alice = boxes({"alice"});
    auto made = b.made;
    ASSERT_EQ(made.size(), 2u);
    for (const auto& n : made) fs::remove(box / "tmp" / n);  // a tmp/ cleaner
    ASSERT_TRUE(s->deliver(alice, "3\n"));
    EXPECT_EQ(taken_from(box / "new", made), "");
    s->prepare_delivery(alice);  // two ahead again (one delivery since the last hint)
    made = settled(box / "tmp", 2);
    ASSERT_EQ(made.size(), 2u);
    for (const auto& n : made) {  // other files under their names
        fs::remove(box / "tmp" / n);
        write_file(box / "tmp" / n, "not ours\n");
    }
    ASSERT_TRUE(s->deliver(alice, "4\n"));
    EXPECT_EQ(taken_from(box / "new", made), "");
    s.reset();  // the files made ahead go, what replaced them stays
    EXPECT_EQ(names_in(box / "tmp"), made);
    for (const auto& n : made) EXPECT_EQ(read_file(box / "tmp" / n), "not ours\n");
    std::vector<std::string> texts;
    for (const auto& n : names_in(box / "new")) texts.push_back(read_file(box / "new" / n));
    std::sort(texts.begin(), texts.end());
    EXPECT_EQ(texts, (std::vector<std::string>{"1\n", "2\n", "3\n", "4\n"}));
}

// A delivery to a mailbox whose tmp/ vanished begins again (the mailbox made anew); the
// next hint counts it once: one delivery since the hint before, so two files ahead, not three.
TEST(maildir_store, a_delivery_begun_again_after_its_tmp_vanished_counts_once_toward_the_next_hint) {
    temp_dir d;
    busy_alice b(d, made_ahead_options(d.path));
    ASSERT_EQ(b.made.size(), 2u);
    fs::remove_all(b.box / "tmp");
    ASSERT_TRUE(b.s->deliver(boxes({"alice"}), "3\n"));
    EXPECT_TRUE(fs::is_directory(b.box / "tmp"));
    b.s->prepare_delivery(boxes({"alice"}));
    const auto made = settled(b.box / "tmp", 2);
    std::this_thread::sleep_for(200ms);  // a third would come now
    EXPECT_EQ(names_in(b.box / "tmp"), made);
    EXPECT_EQ(made.size(), 2u);
}

TEST(maildir_store, files_made_ahead_for_one_mailbox_stop_at_32) {
    // One more than the deliveries since the last hint, but never more than 32 for a mailbox
    // (nor more than a thirty-second of the descriptor limit in all).
    temp_dir d;
    busy_alice b(d, made_ahead_options(d.path));
    ASSERT_EQ(b.made.size(), 2u);
    for (int i = 0; i < 40; ++i) ASSERT_TRUE(b.s->deliver(boxes({"alice"}), "m\n"));
    b.s->prepare_delivery(boxes({"alice"}));
    rlimit rl{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
    const std::size_t cap = rl.rlim_cur == RLIM_INFINITY ? 32 : std::min<std::size_t>(32, rl.rlim_cur / 32);
    EXPECT_EQ(settled(b.box / "tmp", cap).size(), cap);
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(names_in(b.box / "tmp").size(), cap);
    EXPECT_EQ(names_in(b.box / "new").size(), 42u);
}

TEST(maildir_store, files_made_ahead_go_when_no_delivery_takes_them_in_time) {
    temp_dir d;
    auto o = made_ahead_options(d.path);
    o.made_ahead_lifetime = 300ms;
    busy_alice b(d, o);
    auto& s = b.s;
    const fs::path& box = b.box;
    const auto alice = boxes({"alice"});
    const auto made = b.made;
    ASSERT_EQ(made.size(), 2u);
    EXPECT_TRUE(settled(box / "tmp", 0).empty()) << "removed with no delivery to take them";
    std::this_thread::sleep_for(400ms);
    EXPECT_TRUE(names_in(box / "tmp").empty()) << "and not made again before the next hint";
    ASSERT_TRUE(s->deliver(alice, "late\n"));
    EXPECT_EQ(taken_from(box / "new", made), "");
    EXPECT_EQ(names_in(box / "new").size(), 3u);
}

TEST(maildir_store, without_recheck_a_known_mailbox_is_checked_once_per_store) {
    // recheck_mailboxes = false (pop3c's folder): no lstat of new/ and cur/ per delivery. A tmp/
    // removed is still made again (the open fails first); a cur/ removed stays missing; a new/
    // removed fails the delivery at its link, leaving nothing behind, until a new store.
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    o.recheck_mailboxes = false;
    auto s = open_store(o);
    const fs::path box = d.path / "store" / "alice";
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "1\n"));
    fs::remove_all(box / "tmp");
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "2\n"));
    EXPECT_TRUE(fs::is_directory(box / "tmp"));
    fs::remove_all(box / "cur");
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "3\n"));
    EXPECT_FALSE(fs::exists(box / "cur")) << "not checked again by this store";
    EXPECT_EQ(names_in(box / "new").size(), 3u);
    fs::remove_all(box / "new");
    EXPECT_FALSE(s->deliver(boxes({"alice"}), "4\n"));
    EXPECT_TRUE(names_in(box / "tmp").empty());
    // A new store checks the mailbox again and makes what is missing.
    auto again = open_store(o);
    ASSERT_TRUE(again->deliver(boxes({"alice"}), "5\n"));
    for (const char* sub : {"tmp", "new", "cur"}) EXPECT_TRUE(fs::is_directory(box / sub)) << sub;
    EXPECT_EQ(names_in(box / "new").size(), 1u);
}

TEST(maildir_store, lock_never_creates_a_mailbox_and_a_missing_one_is_empty) {
    // DESIGN.md: a login to an empty account is an empty snapshot; only delivery makes a
    // mailbox, so logins (open mode: any name) leave nothing on disk.
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    auto s = open_store(o);
    const fs::path root = d.path / "store";
    recording rec;
    ASSERT_TRUE(s->lock("alice"));
    EXPECT_EQ(s->lock("alice").error(), errc::mailbox_in_use) << "the in-process table still excludes";
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    EXPECT_TRUE(snap->empty());
    EXPECT_TRUE(s->commit("alice", {}, {}).empty());
    const std::vector<std::string> gone = {"1.M1P1.x"};
    const auto r = s->commit("alice", gone, gone);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_FALSE(r[0]) << r[0].message();
    s->unlock("alice");
    EXPECT_TRUE(rec.stop().empty()) << "nothing was made, so nothing was fsync'd";
    EXPECT_TRUE(names_in(root).empty()) << "no directory, no lock file";
    ASSERT_TRUE(s->lock("alice")) << "unlock released the table entry";
    s->unlock("alice");
}

TEST(maildir_store, mail_arriving_after_a_lock_of_a_missing_mailbox_waits_for_the_next_session) {
    // Without a mailbox there was no lock file to flock: another process's session may own
    // what arrives, so this session's snapshot stays empty; the next lock takes the flock.
    temp_dir d;
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s->lock("alice"));
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "late\n"));
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    EXPECT_TRUE(snap->empty());
    s->unlock("alice");
    ASSERT_TRUE(s->lock("alice"));
    EXPECT_TRUE(fs::is_regular_file(d.path / "store" / "alice" / "mailnet-pop3.lock"));
    auto next = s->snapshot("alice");
    ASSERT_TRUE(next);
    EXPECT_EQ(next->size(), 1u);
    s->unlock("alice");
}

TEST(maildir_store, locking_an_existing_mailbox_fsyncs_nothing) {
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    auto s = open_store(o);
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "a\n"));
    recording rec;
    ASSERT_TRUE(s->lock("alice"));
    EXPECT_TRUE(rec.stop().empty());
    s->unlock("alice");
}

TEST(maildir_store, a_first_delivery_makes_the_mailbox_durable_and_the_next_fsyncs_only_new) {
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    auto s = open_store(o);
    const fs::path root = d.path / "store";
    {
        recording rec;
        ASSERT_TRUE(s->deliver(boxes({"bob", "carol"}), "a\n"));
        const auto syncs = rec.stop();
        for (const char* box : {"bob", "carol"}) {
            EXPECT_TRUE(synced_holding(syncs, root, {box})) << box;
            EXPECT_TRUE(synced_holding(syncs, root / box, {"tmp", "new", "cur"})) << box;
            ASSERT_EQ(names_in(root / box / "new").size(), 1u);
            EXPECT_TRUE(synced_holding(syncs, root / box / "new", {names_in(root / box / "new")[0].c_str()})) << box;
        }
    }
    recording rec;
    ASSERT_TRUE(s->deliver(boxes({"bob", "carol"}), "b\n"));
    const auto syncs = rec.stop();
    EXPECT_EQ(syncs.size(), 2u) << "one per new/, nothing else";
    EXPECT_EQ(syncs_of(syncs, root / "bob" / "new").size(), 1u);
    EXPECT_EQ(syncs_of(syncs, root / "carol" / "new").size(), 1u);
}

TEST(maildir_store, a_half_made_mailbox_is_finished_and_made_durable_again) {
    // What a crash, or a racing creator not yet past its fsyncs, leaves: no cur/. Its entries
    // may not be durable yet, so the next user fsyncs them instead of trusting them.
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    auto s = open_store(o);
    const fs::path root = d.path / "store";
    fs::create_directories(root / "dave" / "tmp");
    fs::create_directories(root / "dave" / "new");
    recording rec;
    ASSERT_TRUE(s->deliver(boxes({"dave"}), "a\n"));
    const auto syncs = rec.stop();
    EXPECT_TRUE(synced_holding(syncs, root, {"dave"}));
    EXPECT_TRUE(synced_holding(syncs, root / "dave", {"tmp", "new", "cur"}));
}

TEST(maildir_store, a_new_store_directory_is_made_durable_in_each_parent) {
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    o.root = d.path / "a" / "b" / "store";
    recording rec;
    ASSERT_TRUE(open_store(o));
    const auto syncs = rec.stop();
    EXPECT_TRUE(synced_holding(syncs, d.path, {"a"}));
    EXPECT_TRUE(synced_holding(syncs, d.path / "a", {"b"}));
    EXPECT_TRUE(synced_holding(syncs, d.path / "a" / "b", {"store"}));
}

TEST(maildir_store, with_fsync_off_nothing_is_fsynced) {
    temp_dir d;
    auto o = options(d.path);
    o.root = d.path / "a" / "store";
    recording rec;
    auto s = open_store(o);
    ASSERT_TRUE(s->lock("alice"));
    s->unlock("alice");
    ASSERT_TRUE(s->deliver(boxes({"alice", "bob"}), "a\n"));
    EXPECT_TRUE(rec.stop().empty());
}

TEST(maildir_store, wire_size_counts_crlf_split_across_writes) {
    temp_dir d;
    auto s = open_store(options(d.path));
    auto dl = s->begin_delivery(boxes({"alice"}));
    ASSERT_TRUE(dl);
    ASSERT_TRUE((*dl)->write("a\r"));
    ASSERT_TRUE((*dl)->write("\nb\n"));  // "a\r\nb\n": a CRLF stays 2 octets, the bare LF becomes 2
    ASSERT_TRUE((*dl)->commit());
    const auto in_new = names_in(d.path / "store" / "alice" / "new");
    ASSERT_EQ(in_new.size(), 1u);
    EXPECT_NE(in_new[0].find(",S=5,W=6"), std::string::npos) << in_new[0];
}

TEST(maildir_store, host_name_is_escaped_and_shortened_to_keep_the_name_within_70) {
    temp_dir d;
    auto o = options(d.path);
    o.hostname = "a/b:c" + std::string(100, 'h');
    auto s = open_store(o);
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "x\n"));
    const auto in_new = names_in(d.path / "store" / "alice" / "new");
    ASSERT_EQ(in_new.size(), 1u);
    const std::string& name = in_new[0];
    EXPECT_NE(name.find(".a\\057b\\072chh"), std::string::npos) << name;
    EXPECT_EQ(name.size(), 70u) << name;
    EXPECT_NE(name.find(",S=2,W=3"), std::string::npos) << name;
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 1u);
    EXPECT_EQ((*snap)[0].pop3_uidl(), name);

    // An escape is never cut in half.
    o.hostname = std::string(40, 'h') + "/////";
    auto s2 = open_store(o);
    ASSERT_TRUE(s2->deliver(boxes({"bob"}), "x\n"));
    const auto bob = names_in(d.path / "store" / "bob" / "new");
    ASSERT_EQ(bob.size(), 1u);
    std::smatch m;
    ASSERT_TRUE(std::regex_match(bob[0], m, delivered_name)) << bob[0];
    EXPECT_TRUE(std::regex_match(m[5].str(), std::regex(R"(h*(\\057)*)"))) << bob[0];
    EXPECT_LE(bob[0].size(), 70u);
}

TEST(maildir_store, a_target_that_fails_at_begin_leaves_nothing_anywhere) {
    temp_dir d;
    auto s = open_store(options(d.path));
    const fs::path root = d.path / "store";
    fs::create_directories(root / "carol" / "cur");
    fs::create_directories(root / "carol" / "tmp");
    write_file(root / "carol" / "new", "not a directory");
    EXPECT_FALSE(s->deliver(boxes({"alice", "carol", "bob"}), "x\n"));
    for (const char* box : {"alice", "bob"}) {
        EXPECT_TRUE(names_in(root / box / "new").empty()) << box;
        EXPECT_TRUE(names_in(root / box / "tmp").empty()) << box;
    }
    EXPECT_TRUE(names_in(root / "carol" / "tmp").empty());
}

TEST(maildir_store, a_target_that_fails_at_commit_removes_the_links_already_made) {
    for (std::size_t failing = 0; failing < 3; ++failing) {
        temp_dir d;
        auto s = open_store(options(d.path));
        const fs::path root = d.path / "store";
        const auto targets = boxes({"alice", "bob", "carol"});
        auto dl = s->begin_delivery(targets);
        ASSERT_TRUE(dl);
        ASSERT_TRUE((*dl)->write("Subject: x\n\nbody\n"));
        // Something not a directory is in the way of one target's new/.
        const fs::path bad = root / targets[failing] / "new";
        fs::remove(bad);
        write_file(bad, "in the way");
        EXPECT_FALSE((*dl)->commit()) << "failing " << failing;
        dl->reset();
        for (const auto& box : targets) {
            if (box != targets[failing]) {
                EXPECT_TRUE(names_in(root / box / "new").empty()) << box << " failing " << failing;
            }
            EXPECT_TRUE(names_in(root / box / "tmp").empty()) << box << " failing " << failing;
        }
        // The retry delivers exactly once everywhere.
        fs::remove(bad);
        fs::create_directory(bad);
        ASSERT_TRUE(s->deliver(targets, "Subject: x\n\nbody\n"));
        for (const auto& box : targets) EXPECT_EQ(names_in(root / box / "new").size(), 1u) << box;
    }
}

// Makes fsync(2) fail with EIO for one directory, or for every regular file, until destroyed.
struct fsync_failure {
    explicit fsync_failure(const fs::path& dir) {
        struct stat st{};
        EXPECT_EQ(::stat(dir.c_str(), &st), 0) << dir;
        std::lock_guard g(recorder().mutex);
        recorder().fail_dir = std::pair{st.st_dev, st.st_ino};
    }
    explicit fsync_failure(bool files) {
        std::lock_guard g(recorder().mutex);
        recorder().fail_files = files;
    }
    fsync_failure(const fsync_failure&) = delete;
    fsync_failure& operator=(const fsync_failure&) = delete;
    ~fsync_failure() {
        std::lock_guard g(recorder().mutex);
        recorder().fail_dir.reset();
        recorder().fail_files = false;
    }
};

TEST(maildir_store, a_failed_fsync_fails_the_delivery_and_leaves_nothing_anywhere) {
    // No 250 without durability: a failed fsync of the message or of any target's new/ is an
    // error, every link already made is removed, and the retry delivers exactly once.
    for (int failing = 0; failing < 4; ++failing) {  // 0-2: that target's new/; 3: the file
        temp_dir d;
        auto o = options(d.path);
        o.fsync = true;
        auto s = open_store(o);
        const fs::path root = d.path / "store";
        const auto targets = boxes({"alice", "bob", "carol"});
        for (const auto& box : targets)  // the mailboxes exist before the failing delivery
            for (const char* sub : {"tmp", "new", "cur"}) fs::create_directories(root / box / sub);
        {
            std::optional<fsync_failure> fail;
            if (failing < 3)
                fail.emplace(root / targets[static_cast<std::size_t>(failing)] / "new");
            else
                fail.emplace(true);
            EXPECT_FALSE(s->deliver(targets, "Subject: x\n\nbody\n")) << "failing " << failing;
        }
        for (const auto& box : targets) {
            EXPECT_TRUE(names_in(root / box / "new").empty()) << box << " failing " << failing;
            EXPECT_TRUE(names_in(root / box / "tmp").empty()) << box << " failing " << failing;
        }
        ASSERT_TRUE(s->deliver(targets, "Subject: x\n\nbody\n"));
        for (const auto& box : targets) EXPECT_EQ(names_in(root / box / "new").size(), 1u) << box;
    }
}

// ---- group commit: concurrent deliveries into one new/ share its fsync (DESIGN.md "pluggable
// interfaces", Delivery)

// The message (thread, i) delivers in the concurrent tests: distinct, of varying sizes.
std::string message_for(int thread, int i) {
    std::string m = "Subject: t" + std::to_string(thread) + " n" + std::to_string(i) + "\n\n";
    for (int line = 0; line <= (thread * 7 + i) % 13; ++line) m += "line " + std::to_string(line) + "\n";
    return m;
}

using chooser = std::function<std::vector<std::string>(int thread, int i)>;

// Delivers message_for(t, i) to to(t, i) for each i < per_thread from each of `threads`
// threads, all started at once. Whether each succeeded, indexed t * per_thread + i; `returned`
// counts the deliveries that have returned.
std::vector<char> deliver_concurrently(mailnet::store& s, int threads, int per_thread, const chooser& to,
                                       std::atomic<int>* returned = nullptr) {
    std::vector<char> ok(static_cast<std::size_t>(threads * per_thread));
    std::latch start(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            start.arrive_and_wait();
            for (int i = 0; i < per_thread; ++i) {
                ok[static_cast<std::size_t>(t * per_thread + i)] = s.deliver(to(t, i), message_for(t, i)) ? 1 : 0;
                if (returned) ++*returned;
            }
        });
    for (auto& th : pool) th.join();
    return ok;
}

// What each mailbox must hold after deliver_concurrently: every successful message, sorted.
std::map<std::string, std::vector<std::string>> expected_contents(const std::vector<char>& ok, int per_thread,
                                                                  const chooser& to) {
    std::map<std::string, std::vector<std::string>> out;
    for (std::size_t n = 0; n < ok.size(); ++n) {
        if (!ok[n]) continue;
        const int t = static_cast<int>(n) / per_thread, i = static_cast<int>(n) % per_thread;
        for (const auto& box : to(t, i)) out[box].push_back(message_for(t, i));
    }
    for (auto& [box, messages] : out) std::sort(messages.begin(), messages.end());
    return out;
}

// The contents of every file in `dir`, sorted.
std::vector<std::string> contents_in(const fs::path& dir) {
    std::vector<std::string> out;
    for (const auto& name : names_in(dir)) out.push_back(read_file(dir / name));
    std::sort(out.begin(), out.end());
    return out;
}

// Holds the first fsync of `dir` until `dir` has `count` entries (at most 10 s), so that the
// other deliveries link their files while it runs; `at_release` runs then. That fsync fails
// with `first_error`, later ones of `dir` with `later_error` (0: they succeed). Until destroyed.
struct hold_first_sync {
    hold_first_sync(const fs::path& dir, std::size_t count, std::function<void()> at_release, int first_error = 0,
                    int later_error = 0) {
        struct stat st{};
        EXPECT_EQ(::stat(dir.c_str(), &st), 0) << dir;
        auto first = std::make_shared<std::atomic<bool>>(true);
        std::lock_guard g(recorder().mutex);
        recorder().before = [=](int fd) {
            struct stat f{};
            if (::fstat(fd, &f) != 0 || f.st_dev != st.st_dev || f.st_ino != st.st_ino) return 0;
            if (!first->exchange(false)) return later_error;
            const auto until = std::chrono::steady_clock::now() + 10s;
            while (names_in(dir).size() < count && std::chrono::steady_clock::now() < until)
                std::this_thread::sleep_for(1ms);
            at_release();
            return first_error;
        };
    }
    hold_first_sync(const hold_first_sync&) = delete;
    hold_first_sync& operator=(const hold_first_sync&) = delete;
    ~hold_first_sync() {
        std::lock_guard g(recorder().mutex);
        recorder().before = nullptr;
    }
};

// A mailbox made up front: a delivery to it then fsyncs its new/ only.
void make_mailbox(const fs::path& box) {
    for (const char* sub : {"tmp", "new", "cur"}) fs::create_directories(box / sub);
}

TEST(maildir_store, links_removed_after_a_failure_are_made_durable_by_an_fsync_of_their_new) {
    // A link removed because a target failed may already have been written out by a
    // concurrent delivery's fsync of that new/: without an fsync of new/ after the unlink, a
    // crash could bring it back and the retry would deliver twice. That holds for the target
    // whose own fsync failed too (its group-commit round removes the link and runs again).
    for (int failing = 0; failing < 2; ++failing) {  // carol's new/: 0 its fsync fails, 1 its link
        temp_dir d;
        auto o = options(d.path);
        o.fsync = true;
        auto s = open_store(o);
        const fs::path root = d.path / "store";
        const auto targets = boxes({"alice", "bob", "carol"});
        for (const auto& box : targets) make_mailbox(root / box);
        auto dl = s->begin_delivery(targets);
        ASSERT_TRUE(dl);
        ASSERT_TRUE((*dl)->write("Subject: x\n\nbody\n"));
        recording rec;
        {
            std::optional<fsync_failure> fail;
            if (failing == 0) {
                fail.emplace(root / "carol" / "new");
            } else {
                fs::remove(root / "carol" / "new");
                write_file(root / "carol" / "new", "in the way");
            }
            EXPECT_FALSE((*dl)->commit()) << "failing " << failing;
        }
        const auto syncs = rec.stop();
        // carol's new/ is fsync'd again only if it was (0): its failed round removes the link.
        for (const char* box : {"alice", "bob", "carol"}) {
            if (failing == 1 && std::string_view(box) == "carol") continue;
            EXPECT_TRUE(names_in(root / box / "new").empty()) << box << " failing " << failing;
            const auto mine = syncs_of(syncs, root / box / "new");
            ASSERT_FALSE(mine.empty()) << box << " failing " << failing << ": the removal was not fsync'd";
            EXPECT_TRUE(mine.back().names.empty())
                << box << " failing " << failing << ": new/ was not fsync'd after the link was removed";
            if (failing == 0) {
                EXPECT_GE(mine.size(), 2u) << box << ": once with the link, once without";
                EXPECT_FALSE(mine.front().names.empty()) << box;
            }
        }
    }
}

TEST(maildir_store, concurrent_deliveries_each_arrive_once_with_their_bytes) {
    // 16 threads x 50 deliveries: all into one mailbox, then each into two of four mailboxes
    // (pairs in both orders, so a delivery waits for one new/ while others wait for it in turn).
    constexpr int threads = 16, per_thread = 50;
    const std::vector<std::string> four = {"alice", "bob", "carol", "dave"};
    const std::vector<chooser> choosers = {
        [](int, int) { return boxes({"alice"}); },
        [&](int t, int i) {  // (t + i) and (t + 3i + 1) differ mod 4: always two mailboxes
            return std::vector<std::string>{four[static_cast<std::size_t>((t + i) % 4)],
                                            four[static_cast<std::size_t>((t + 3 * i + 1) % 4)]};
        }};
    for (const bool durable : {true, false}) {
        for (std::size_t c = 0; c < choosers.size(); ++c) {
            temp_dir d;
            auto o = options(d.path);
            o.fsync = durable;
            auto s = open_store(o);
            const auto ok = deliver_concurrently(*s, threads, per_thread, choosers[c]);
            EXPECT_EQ(std::count(ok.begin(), ok.end(), 1), threads * per_thread) << "fsync " << durable << " case " << c;
            const auto expected = expected_contents(ok, per_thread, choosers[c]);
            for (const auto& box : four) {
                const fs::path dir = d.path / "store" / box;
                const auto it = expected.find(box);
                EXPECT_EQ(contents_in(dir / "new"), it == expected.end() ? std::vector<std::string>{} : it->second)
                    << box << " fsync " << durable << " case " << c;
                EXPECT_TRUE(names_in(dir / "tmp").empty()) << box;
            }
        }
    }
}

TEST(maildir_store, concurrent_deliveries_into_one_mailbox_share_its_new_fsync) {
    // The first delivery's fsync of new/ is held until all 16 have linked their files: the 15
    // others arrive while it runs, so they cannot count on it, and share the next one.
    constexpr int threads = 16;
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    auto s = open_store(o);
    const fs::path box = d.path / "store" / "alice";
    make_mailbox(box);
    std::atomic<int> returned{0};
    int returned_while_held = -1;
    hold_first_sync hold(box / "new", threads, [&] { returned_while_held = returned; });
    recording rec;
    const auto ok = deliver_concurrently(*s, threads, 1, [](int, int) { return boxes({"alice"}); }, &returned);
    const auto syncs = rec.stop();
    EXPECT_EQ(std::count(ok.begin(), ok.end(), 1), threads);
    EXPECT_EQ(returned_while_held, 0) << "deliveries ran an fsync of their own while one was running";
    const auto news = syncs_of(syncs, box / "new");
    EXPECT_GE(news.size(), 2u);
    EXPECT_LT(news.size(), static_cast<std::size_t>(threads)) << "no fsync of new/ was shared";
    const auto names = names_in(box / "new");
    ASSERT_EQ(names.size(), static_cast<std::size_t>(threads));
    for (const auto& name : names) EXPECT_TRUE(synced_holding(syncs, box / "new", {name.c_str()})) << name;
}

TEST(maildir_store, deliveries_one_after_another_each_wait_for_an_fsync_of_their_own) {
    constexpr std::size_t count = 5;
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    auto s = open_store(o);
    const fs::path box = d.path / "store" / "alice";
    make_mailbox(box);
    recording rec;
    for (std::size_t i = 0; i < count; ++i) ASSERT_TRUE(s->deliver(boxes({"alice"}), message_for(0, static_cast<int>(i))));
    const auto news = syncs_of(rec.stop(), box / "new");
    ASSERT_EQ(news.size(), count);
    for (std::size_t i = 0; i < count; ++i) EXPECT_EQ(news[i].names.size(), i + 1) << "fsync " << i;
}

TEST(maildir_store, a_delivery_outliving_its_store_still_commits_durably) {
    // The delivery shares its new/'s group-commit state with the store, and keeps it alive.
    temp_dir d;
    auto o = options(d.path);
    o.fsync = true;
    auto s = open_store(o);
    auto dl = s->begin_delivery(boxes({"alice"}));
    ASSERT_TRUE(dl);
    s.reset();
    ASSERT_TRUE((*dl)->write("Subject: late\n\n"));
    recording rec;
    ASSERT_TRUE((*dl)->commit());
    const fs::path news = d.path / "store" / "alice" / "new";
    const auto names = names_in(news);
    ASSERT_EQ(names.size(), 1u);
    EXPECT_TRUE(synced_holding(rec.stop(), news, {names[0].c_str()}));
}

TEST(maildir_store, a_failed_shared_fsync_fails_every_delivery_that_waited_for_it) {
    constexpr int threads = 16;
    const chooser alice = [](int, int) { return boxes({"alice"}); };
    {
        // Every fsync of new/ fails: all 16 fail, through fewer fsyncs than deliveries, and
        // nothing stays visible.
        temp_dir d;
        auto o = options(d.path);
        o.fsync = true;
        auto s = open_store(o);
        const fs::path box = d.path / "store" / "alice";
        make_mailbox(box);
        std::optional<hold_first_sync> hold;
        hold.emplace(box / "new", threads, [] {}, EIO, EIO);
        recording rec;
        const auto ok = deliver_concurrently(*s, threads, 1, alice);
        const auto syncs = rec.stop();
        hold.reset();
        EXPECT_EQ(std::count(ok.begin(), ok.end(), 0), threads);
        const auto news = syncs_of(syncs, box / "new");
        EXPECT_LT(news.size(), static_cast<std::size_t>(threads)) << "the removals' fsyncs were not shared";
        ASSERT_FALSE(news.empty());
        EXPECT_TRUE(news.back().names.empty()) << "new/ was not fsync'd after the links were removed";
        EXPECT_TRUE(names_in(box / "new").empty());
        EXPECT_TRUE(names_in(box / "tmp").empty());
        // The retry delivers each once.
        const auto again = deliver_concurrently(*s, threads, 1, alice);
        EXPECT_EQ(std::count(again.begin(), again.end(), 1), threads);
        EXPECT_EQ(contents_in(box / "new"), expected_contents(again, 1, alice)["alice"]);
    }
    {
        // Only the first fsync fails: the one delivery that depended on it fails and is gone;
        // the 15 that linked while it ran were covered by the next one and arrive once each.
        temp_dir d;
        auto o = options(d.path);
        o.fsync = true;
        auto s = open_store(o);
        const fs::path box = d.path / "store" / "alice";
        make_mailbox(box);
        std::optional<hold_first_sync> hold;
        hold.emplace(box / "new", threads, [] {}, EIO, 0);
        const auto ok = deliver_concurrently(*s, threads, 1, alice);
        hold.reset();
        EXPECT_EQ(std::count(ok.begin(), ok.end(), 0), 1);
        EXPECT_EQ(contents_in(box / "new"), expected_contents(ok, 1, alice)["alice"]);
        EXPECT_TRUE(names_in(box / "tmp").empty());
    }
}

// ---- group commit of the data (round one): the tmp/ files of deliveries that arrive together
// are made durable by one syncfs of their file system (or each by its own fdatasync), always
// before any of them is linked into new/; round two (each new/ fsync'd) comes before commit()
// returns.

// Holds the first data sync (a syncfs, or an fsync/fdatasync of a regular file) until `dir`
// holds `count` files (at most 10 s), so that the other deliveries register meanwhile; that
// call then fails with `first_error` (0: goes on). Until destroyed.
struct hold_first_data_sync {
    hold_first_data_sync(const fs::path& dir, std::size_t count, int first_error = 0) {
        auto first = std::make_shared<std::atomic<bool>>(true);
        std::lock_guard g(recorder().mutex);
        recorder().before_data = [=](int) {
            if (!first->exchange(false)) return 0;
            const auto until = std::chrono::steady_clock::now() + 10s;
            while (names_in(dir).size() < count && std::chrono::steady_clock::now() < until)
                std::this_thread::sleep_for(1ms);
            std::this_thread::sleep_for(20ms);  // the last ones get from their write to commit()
            return first_error;
        };
    }
    hold_first_data_sync(const hold_first_data_sync&) = delete;
    hold_first_data_sync& operator=(const hold_first_data_sync&) = delete;
    ~hold_first_data_sync() {
        std::lock_guard g(recorder().mutex);
        recorder().before_data = nullptr;
    }
};

// Injects an errno into every syncfs, or every sync_file_range, until destroyed.
struct data_failure {
    data_failure(int syncfs_error, int range_error) {
        std::lock_guard g(recorder().mutex);
        recorder().fail_syncfs = syncfs_error;
        recorder().fail_sync_file_range = range_error;
    }
    data_failure(const data_failure&) = delete;
    data_failure& operator=(const data_failure&) = delete;
    ~data_failure() {
        std::lock_guard g(recorder().mutex);
        recorder().fail_syncfs = recorder().fail_sync_file_range = 0;
    }
};

mailnet::maildir_options durable(const fs::path& root, mailnet::maildir_data_sync mode) {
    auto o = options(root);
    o.fsync = true;
    o.data_sync = mode;
    return o;
}

const char* mode_name(mailnet::maildir_data_sync m) {
    switch (m) {
        case mailnet::maildir_data_sync::file: return "file";
        case mailnet::maildir_data_sync::syncfs: return "syncfs";
        case mailnet::maildir_data_sync::adaptive: return "adaptive";
    }
    return "?";
}

TEST(maildir_store, deliveries_arriving_together_share_one_syncfs_of_their_data) {
    // 16 deliveries at once; the first data sync is held until all 16 have written their tmp/
    // files: the 15 others then form one group, whose data one syncfs makes durable. Before,
    // each file had an fsync of its own: 16 data syncs.
    constexpr int threads = 16;
    for (const auto mode : {mailnet::maildir_data_sync::syncfs, mailnet::maildir_data_sync::adaptive}) {
        temp_dir d;
        auto s = open_store(durable(d.path, mode));
        const fs::path box = d.path / "store" / "alice";
        make_mailbox(box);
        hold_first_data_sync hold(box / "tmp", threads);
        recording rec;
        const auto ok = deliver_concurrently(*s, threads, 1, [](int, int) { return boxes({"alice"}); });
        const auto [syncfs_calls, file_syncs] = rec.syncfs_and_file_syncs();
        rec.stop();
        EXPECT_EQ(std::count(ok.begin(), ok.end(), 1), threads) << mode_name(mode);
        EXPECT_EQ(names_in(box / "new").size(), static_cast<std::size_t>(threads));
        EXPECT_GE(syncfs_calls, 1) << mode_name(mode);
        EXPECT_LE(syncfs_calls + file_syncs, 4) << mode_name(mode) << ": " << syncfs_calls << " syncfs, " << file_syncs
                                                << " file syncs for " << threads << " deliveries";
        if (mode == mailnet::maildir_data_sync::syncfs) {
            EXPECT_EQ(file_syncs, 0);
        }
    }
}

TEST(maildir_store, file_mode_syncs_each_file_and_never_the_file_system) {
    constexpr int threads = 8, per_thread = 5;
    temp_dir d;
    auto s = open_store(durable(d.path, mailnet::maildir_data_sync::file));
    make_mailbox(d.path / "store" / "alice");
    recording rec;
    const auto ok = deliver_concurrently(*s, threads, per_thread, [](int, int) { return boxes({"alice"}); });
    const auto [syncfs_calls, file_syncs] = rec.syncfs_and_file_syncs();
    EXPECT_EQ(std::count(ok.begin(), ok.end(), 1), threads * per_thread);
    EXPECT_EQ(syncfs_calls, 0);
    EXPECT_EQ(file_syncs, threads * per_thread);
}

TEST(maildir_store, a_lone_delivery_in_adaptive_mode_syncs_its_file_not_the_file_system) {
    // A group below syncfs_min_group: fdatasync of the file, whose cost does not depend on what
    // other processes have written to the file system.
    temp_dir d;
    auto s = open_store(durable(d.path, mailnet::maildir_data_sync::adaptive));
    make_mailbox(d.path / "store" / "alice");
    recording rec;
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(s->deliver(boxes({"alice"}), message_for(0, i)));
    const auto [syncfs_calls, file_syncs] = rec.syncfs_and_file_syncs();
    EXPECT_EQ(syncfs_calls, 0);
    EXPECT_EQ(file_syncs, 3);
}

// The ",S=" of a delivered base name.
off_t stored_size(const std::string& name) {
    const auto at = name.find(",S=");
    EXPECT_NE(at, std::string::npos) << name;
    return static_cast<off_t>(std::stoll(name.substr(at + 3)));
}

TEST(maildir_store, each_file_is_durable_before_its_link_and_each_new_before_commit_returns) {
    // The order of the durability steps, from the calls' own log, for every mode: before a file
    // is linked into new/, an fdatasync of it returned, or a syncfs that began when the file had
    // all its octets returned and a cache flush followed; before commit() returns, every new/ it
    // was linked into was fsync'd holding its name.
    constexpr int threads = 8, per_thread = 12;
    const std::vector<std::string> three = {"alice", "bob", "carol"};
    for (const auto mode : {mailnet::maildir_data_sync::file, mailnet::maildir_data_sync::syncfs,
                            mailnet::maildir_data_sync::adaptive}) {
        SCOPED_TRACE(mode_name(mode));
        temp_dir d;
        auto s = open_store(durable(d.path, mode));
        const fs::path root = d.path / "store";
        for (const auto& box : three) make_mailbox(root / box);
        recording rec;
        for (const auto& box : three) rec.watch(root / box / "tmp");
        std::latch start(threads);
        std::atomic<int> failures{0};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&, t] {
                start.arrive_and_wait();
                for (int i = 0; i < per_thread; ++i) {
                    std::vector<std::string> to{three[static_cast<std::size_t>((t + i) % 3)]};
                    if (i % 2 == 1) to.push_back(three[static_cast<std::size_t>((t + i + 1) % 3)]);
                    auto dl = s->begin_delivery(to);
                    if (!dl || !(*dl)->write(message_for(t, i))) {
                        ++failures;
                        continue;
                    }
                    const std::string name = (*dl)->name();
                    if (!(*dl)->commit()) {
                        ++failures;
                        continue;
                    }
                    recording::returned(name + ".");
                }
            });
        for (auto& th : pool) th.join();
        rec.stop();
        const auto ops = rec.ops();
        EXPECT_EQ(failures, 0);

        std::size_t links = 0, returns = 0;
        for (std::size_t at = 0; at < ops.size(); ++at) {
            const op& o = ops[at];
            if (o.what == op::link) {
                ++links;
                const off_t size = stored_size(o.name);
                bool durable_before = false;
                std::optional<std::size_t> syncfs_began;  // a syncfs_start that saw the whole file
                bool ended = false;                      // ... and its end
                for (std::size_t i = 0; i < at && !durable_before; ++i) {
                    const op& p = ops[i];
                    if (p.what == op::file_sync && !p.failed && p.ino == o.ino && p.size == size) durable_before = true;
                    if (p.what == op::syncfs_start) {
                        const auto f = p.files.find(o.ino);
                        if (f != p.files.end() && f->second == size) syncfs_began = i;
                    }
                    if (p.what == op::syncfs_end && syncfs_began && !p.failed) ended = true;
                    if (p.what == op::flush && ended) durable_before = true;
                }
                EXPECT_TRUE(durable_before) << o.name << " was linked before its data was made durable";
            }
            if (o.what == op::returned) {
                ++returns;
                // Every link of this delivery, and after each one an fsync of a directory
                // holding the name, all before the return.
                std::size_t mine = 0, synced = 0;
                std::vector<std::size_t> linked_at;
                for (std::size_t i = 0; i < at; ++i) {
                    const op& p = ops[i];
                    if (p.what == op::link && p.name.starts_with(o.name)) {
                        ++mine;
                        linked_at.push_back(i);
                    }
                }
                // Each link needs its own new/ fsync'd after it: count fsyncs of distinct
                // directories holding the name after the first link.
                std::set<ino_t> dirs;
                if (!linked_at.empty())
                    for (std::size_t i = linked_at.front(); i < at; ++i) {
                        const op& p = ops[i];
                        if (p.what != op::dir_sync) continue;
                        if (std::any_of(p.names.begin(), p.names.end(), [&](const std::string& n) { return n.starts_with(o.name); }))
                            dirs.insert(p.ino);
                    }
                synced = dirs.size();
                EXPECT_GE(mine, 1u) << o.name;
                EXPECT_EQ(synced, mine) << o.name << ": commit returned before every new/ holding it was fsync'd";
            }
        }
        EXPECT_EQ(returns, static_cast<std::size_t>(threads * per_thread));
        EXPECT_EQ(links, static_cast<std::size_t>(threads * per_thread * 3 / 2));
    }
}

TEST(maildir_store, a_batch_committed_together_shares_one_data_round_and_one_new_fsync) {
    // commit_together (pop3c fetch's batches): every file durable before any link (one syncfs
    // and its cache flush, or each file's fdatasync in file mode), then all the links, then
    // one fsync of new/ holding every name, and only then do the results come back.
    constexpr int count = 40;
    for (const auto mode : {mailnet::maildir_data_sync::file, mailnet::maildir_data_sync::syncfs,
                            mailnet::maildir_data_sync::adaptive}) {
        SCOPED_TRACE(mode_name(mode));
        temp_dir d;
        auto s = open_store(durable(d.path, mode));
        const fs::path box = d.path / "store" / "alice";
        make_mailbox(box);
        std::vector<std::unique_ptr<mailnet::delivery>> batch;
        std::vector<mailnet::delivery*> ptrs;
        std::vector<std::string> sent;
        for (int i = 0; i < count; ++i) {
            auto dl = s->begin_delivery(boxes({"alice"}));
            ASSERT_TRUE(dl);
            sent.push_back(message_for(0, i));
            ASSERT_TRUE((*dl)->write(sent.back()));
            ptrs.push_back(dl->get());
            batch.push_back(std::move(*dl));
        }
        recording rec;
        rec.watch(box / "tmp");
        const auto results = mailnet::commit_together(ptrs);
        recording::returned("all");
        const auto syncs = rec.stop();
        const auto ops = rec.ops();
        const auto [syncfs_calls, file_syncs] = rec.syncfs_and_file_syncs();
        ASSERT_EQ(results.size(), static_cast<std::size_t>(count));
        for (const auto& r : results) EXPECT_TRUE(r);
        EXPECT_EQ(names_in(box / "new").size(), static_cast<std::size_t>(count));
        EXPECT_TRUE(names_in(box / "tmp").empty());
        if (mode == mailnet::maildir_data_sync::file) {
            EXPECT_EQ(syncfs_calls, 0);
            EXPECT_EQ(file_syncs, count);
        } else {
            EXPECT_EQ(syncfs_calls, 1);  // adaptive: the first group of 40 tries syncfs
            EXPECT_EQ(file_syncs, 0);
        }
        const auto new_syncs = syncs_of(syncs, box / "new");
        ASSERT_EQ(new_syncs.size(), 1u) << "one fsync of new/ for the whole batch";
        EXPECT_EQ(new_syncs.front().names.size(), static_cast<std::size_t>(count));
        // The order: every data step before the first link; the new/ fsync after the last
        // link; the return last.
        std::size_t first_link = ops.size(), last_link = 0, last_data = 0, new_sync = ops.size(), returned = 0;
        for (std::size_t i = 0; i < ops.size(); ++i) {
            const op& o = ops[i];
            if (o.what == op::link) {
                first_link = std::min(first_link, i);
                last_link = i;
            }
            if (o.what == op::file_sync || o.what == op::syncfs_end || (o.what == op::flush && new_sync == ops.size()))
                last_data = std::max(last_data, i);
            if (o.what == op::dir_sync && o.names.size() == static_cast<std::size_t>(count)) new_sync = i;
            if (o.what == op::returned) returned = i;
        }
        EXPECT_LT(last_data, first_link) << "a file was linked before every file of the batch was durable";
        EXPECT_LT(last_link, new_sync);
        EXPECT_LT(new_sync, returned);
    }
}

TEST(maildir_store, adaptive_tries_the_file_way_on_a_few_files_of_a_large_batch_only) {
    // The first group of 40 is covered by a syncfs; the second is when adaptive mode tries
    // fdatasync again: on 8 of its files (or syncfs_min_group, if larger: a smaller trial would
    // not count), the other 32 by one more syncfs; the third, having measured, tries no more.
    for (const std::size_t min_group : {std::size_t{0}, std::size_t{16}}) {
    SCOPED_TRACE("syncfs_min_group " + std::to_string(min_group));
    temp_dir d;
    auto o = durable(d.path, mailnet::maildir_data_sync::adaptive);
    if (min_group > 0) o.syncfs_min_group = min_group;
    auto s = open_store(o);
    const fs::path box = d.path / "store" / "alice";
    make_mailbox(box);
    auto commit_batch = [&](int round) {
        std::vector<std::unique_ptr<mailnet::delivery>> batch;
        std::vector<mailnet::delivery*> ptrs;
        for (int i = 0; i < 40; ++i) {
            auto dl = s->begin_delivery(boxes({"alice"}));
            EXPECT_TRUE(dl && (*dl)->write(message_for(round, i)));
            ptrs.push_back(dl->get());
            batch.push_back(std::move(*dl));
        }
        recording rec;
        for (const auto& r : mailnet::commit_together(ptrs)) EXPECT_TRUE(r);
        return rec.syncfs_and_file_syncs();
    };
    EXPECT_EQ(commit_batch(0), (std::pair<long, long>{1, 0}));
    EXPECT_EQ(commit_batch(1), (std::pair<long, long>{1, min_group > 8 ? static_cast<long>(min_group) : 8}));
    EXPECT_EQ(commit_batch(2), (std::pair<long, long>{1, 0})) << "the trial was not counted: tried again";
    EXPECT_EQ(names_in(box / "new").size(), 120u);
    EXPECT_TRUE(names_in(box / "tmp").empty());
    }
}

TEST(maildir_store, a_batch_whose_new_cannot_take_links_fails_whole_and_leaves_nothing) {
    temp_dir d;
    auto s = open_store(durable(d.path, mailnet::maildir_data_sync::adaptive));
    const fs::path box = d.path / "store" / "alice";
    make_mailbox(box);
    std::vector<std::unique_ptr<mailnet::delivery>> batch;
    std::vector<mailnet::delivery*> ptrs;
    for (int i = 0; i < 5; ++i) {
        auto dl = s->begin_delivery(boxes({"alice"}));
        ASSERT_TRUE(dl);
        ASSERT_TRUE((*dl)->write(message_for(0, i)));
        ptrs.push_back(dl->get());
        batch.push_back(std::move(*dl));
    }
    fs::rename(box / "new", box / "new.away");
    std::ofstream(box / "new") << "in the way";
    const auto results = mailnet::commit_together(ptrs);
    for (const auto& r : results) EXPECT_FALSE(r);
    fs::remove(box / "new");
    fs::rename(box / "new.away", box / "new");
    EXPECT_TRUE(names_in(box / "new").empty());
    EXPECT_TRUE(names_in(box / "tmp").empty());
}

TEST(maildir_store, a_failed_syncfs_falls_back_to_each_files_own_sync) {
    // The first data sync fails (EIO) while the other 15 deliveries have written their files.
    // A syncfs error may be any file's of the file system (another process's too): each file's
    // own fdatasync then tells its own, so all 16 are delivered once, and syncfs is not used
    // again by this store (a failing syncfs must not turn into 451s).
    constexpr int threads = 16;
    const chooser alice = [](int, int) { return boxes({"alice"}); };
    temp_dir d;
    auto s = open_store(durable(d.path, mailnet::maildir_data_sync::syncfs));
    const fs::path box = d.path / "store" / "alice";
    make_mailbox(box);
    std::vector<char> ok;
    {
        hold_first_data_sync hold(box / "tmp", threads, EIO);
        ok = deliver_concurrently(*s, threads, 1, alice);
        EXPECT_EQ(std::count(ok.begin(), ok.end(), 1), threads);
    }
    EXPECT_EQ(contents_in(box / "new"), expected_contents(ok, 1, alice)["alice"]);
    EXPECT_TRUE(names_in(box / "tmp").empty());
}

TEST(maildir_store, a_file_whose_own_writeback_failed_is_not_delivered_by_a_syncfs) {
    // syncfs succeeded, but the file's own writeback error (sync_file_range reports it) fails it.
    temp_dir d;
    auto s = open_store(durable(d.path, mailnet::maildir_data_sync::syncfs));
    const fs::path box = d.path / "store" / "alice";
    make_mailbox(box);
    {
        data_failure fail(0, EIO);
        EXPECT_FALSE(s->deliver(boxes({"alice", "bob"}), "Subject: x\n\nbody\n"));
    }
    EXPECT_TRUE(names_in(box / "new").empty());
    EXPECT_TRUE(names_in(box / "tmp").empty());
    {
        // A failed syncfs: the file's own fdatasync decides (here it succeeds).
        data_failure fail(EIO, 0);
        EXPECT_TRUE(s->deliver(boxes({"alice"}), "Subject: x\n\nbody\n"));
    }
    EXPECT_EQ(names_in(box / "new").size(), 1u);
}

TEST(maildir_store, without_syncfs_the_data_is_synced_file_by_file) {
    // ENOSYS (seccomp, an old kernel) or EINVAL (no fdatasync of a directory there) is no
    // failure of the delivery: that round and every later one sync each file instead.
    for (const int e : {ENOSYS, EINVAL}) {
        temp_dir d;
        auto s = open_store(durable(d.path, mailnet::maildir_data_sync::syncfs));
        make_mailbox(d.path / "store" / "alice");
        data_failure fail(e, 0);
        recording rec;
        ASSERT_TRUE(s->deliver(boxes({"alice"}), "Subject: x\n\none\n")) << e;
        ASSERT_TRUE(s->deliver(boxes({"alice"}), "Subject: x\n\ntwo\n")) << e;
        const auto [syncfs_calls, file_syncs] = rec.syncfs_and_file_syncs();
        EXPECT_EQ(syncfs_calls, 1) << e << ": tried once";
        EXPECT_EQ(file_syncs, 2) << e;
        EXPECT_EQ(names_in(d.path / "store" / "alice" / "new").size(), 2u);
    }
}

TEST(maildir_store, abort_or_destruction_without_commit_leaves_nothing) {
    temp_dir d;
    auto s = open_store(options(d.path));
    const fs::path root = d.path / "store";
    {
        auto dl = s->begin_delivery(boxes({"alice", "bob"}));
        ASSERT_TRUE(dl);
        ASSERT_TRUE((*dl)->write("half a message\n"));
        EXPECT_EQ(names_in(root / "alice" / "tmp").size(), 1u) << "written to tmp/ first";
        (*dl)->abort();
        EXPECT_FALSE((*dl)->commit()) << "nothing to commit after abort";
    }
    {
        auto dl = s->begin_delivery(boxes({"alice", "bob"}));
        ASSERT_TRUE(dl);
        ASSERT_TRUE((*dl)->write("half a message\n"));
    }  // destroyed without commit
    for (const char* box : {"alice", "bob"}) {
        EXPECT_TRUE(names_in(root / box / "new").empty()) << box;
        EXPECT_TRUE(names_in(root / box / "tmp").empty()) << box;
        auto snap = s->snapshot(box);
        ASSERT_TRUE(snap);
        EXPECT_TRUE(snap->empty());
    }
}

TEST(maildir_store, a_crash_between_tmp_and_new_shows_nothing_and_is_cleaned_later) {
    temp_dir d;
    log_capture log;
    auto s = open_store(options(d.path, log.sink()));
    const fs::path root = d.path / "store";
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        auto dl = s->begin_delivery(boxes({"alice"}));
        if (dl) (void)(*dl)->write("Subject: lost\n\nbody\n");
        ::_exit(dl ? 0 : 1);  // dies before commit, no destructor runs
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_EQ(names_in(root / "alice" / "tmp").size(), 1u);
    EXPECT_TRUE(names_in(root / "alice" / "new").empty());
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    EXPECT_TRUE(snap->empty());

    // At the next start it is fresh: kept. 37 hours later: removed.
    auto o = options(d.path, log.sink());
    open_store(o);
    EXPECT_EQ(names_in(root / "alice" / "tmp").size(), 1u);
    o.clock = [] { return std::chrono::system_clock::now() + 37h; };
    open_store(o);
    EXPECT_TRUE(names_in(root / "alice" / "tmp").empty());
    EXPECT_TRUE(log.contains("removed stale"));
}

TEST(maildir_store, stale_tmp_files_are_removed_at_open_and_fresh_ones_kept) {
    temp_dir d;
    const fs::path root = d.path / "store";
    const auto now = std::time(nullptr);
    write_file(root / "alice" / "tmp" / "old", "x");
    set_mtime(root / "alice" / "tmp" / "old", now - 37 * 3600);
    write_file(root / "alice" / "tmp" / "recent", "x");
    set_mtime(root / "alice" / "tmp" / "recent", now - 35 * 3600);
    write_file(root / "bob" / "tmp" / "old", "x");
    set_mtime(root / "bob" / "tmp" / "old", now - 100 * 3600);
    write_file(root / ".Sent" / "tmp" / "old", "x");  // not a mailbox of ours
    set_mtime(root / ".Sent" / "tmp" / "old", now - 100 * 3600);
    log_capture log;
    open_store(options(d.path, log.sink()));
    EXPECT_EQ(names_in(root / "alice" / "tmp"), std::vector<std::string>{"recent"});
    EXPECT_TRUE(names_in(root / "bob" / "tmp").empty());
    EXPECT_EQ(names_in(root / ".Sent" / "tmp"), std::vector<std::string>{"old"});
    EXPECT_TRUE(log.contains((root / "alice" / "tmp" / "old").string()));
}

TEST(maildir_store, empty_tmp_files_an_ended_process_of_this_host_left_are_removed_at_open) {
    // A kill -9 leaves the files made ahead (empty) in tmp/: the next start removes those of
    // this host's ended processes once a minute old, not only after tmp_max_age.
    temp_dir d;
    const fs::path tmp = d.path / "store" / "alice" / "tmp";
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) ::_exit(0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    const std::string ended = std::to_string(child), alive = std::to_string(::getppid());
    const auto now = std::time(nullptr);
    const auto made = [&](const std::string& name, const std::string& text, std::time_t age) {
        write_file(tmp / name, text);
        set_mtime(tmp / name, now - age);
    };
    made("1700000000.M1P" + ended + "Q1.testhost", "", 120);           // removed
    made("1700000000.M2P" + ended + "Q2.testhost", "", 20);            // too young
    made("1700000000.M3P" + ended + "Q3.testhost", "written\n", 120);  // not empty
    made("1700000000.M4P" + alive + "Q4.testhost", "", 120);           // its process lives
    made("1700000000.M5P" + ended + "Q5.otherhost", "", 120);          // another host's
    made("1700000000.M6P" + ended + "Q6.testhost.x", "", 120);         // not our name for it
    made("courier.12345.tmp", "", 120);                                // another writer's
    log_capture log;
    open_store(options(d.path, log.sink()));
    auto left = names_in(tmp);
    std::sort(left.begin(), left.end());
    EXPECT_EQ(left, (std::vector<std::string>{"1700000000.M2P" + ended + "Q2.testhost",
                                              "1700000000.M3P" + ended + "Q3.testhost",
                                              "1700000000.M4P" + alive + "Q4.testhost",
                                              "1700000000.M5P" + ended + "Q5.otherhost",
                                              "1700000000.M6P" + ended + "Q6.testhost.x", "courier.12345.tmp"}));
    EXPECT_TRUE(log.contains("1700000000.M1P" + ended + "Q1.testhost"));
}

TEST(maildir_folder, the_root_is_the_maildir_whatever_the_mailbox_name) {
    // A fetcher's --maildir DIR: DIR/{tmp,new,cur}, no DIR/<name>/ below it.
    temp_dir d;
    const fs::path dir = d.path / "Mail" / "inbox";
    write_file(d.path / "Mail" / "sibling" / "tmp" / "old", "x");  // another folder's tmp/: not ours
    set_mtime(d.path / "Mail" / "sibling" / "tmp" / "old", std::time(nullptr) - 100 * 3600);
    write_file(dir / "tmp" / "old", "x");
    set_mtime(dir / "tmp" / "old", std::time(nullptr) - 100 * 3600);
    mailnet::maildir_options o = options(d.path);
    o.root = dir;
    auto opened = mailnet::open_maildir_folder(o);
    ASSERT_TRUE(opened) << opened.error().message();
    auto& folder = **opened;
    EXPECT_TRUE(names_in(dir / "tmp").empty()) << "its own stale tmp/ file is removed";
    EXPECT_EQ(names_in(d.path / "Mail" / "sibling" / "tmp"), std::vector<std::string>{"old"});

    const std::vector<std::string> any{"whatever"};
    ASSERT_TRUE(folder.deliver(any, "Subject: one\n\nbody\n"));
    const auto files = names_in(dir / "new");
    ASSERT_EQ(files.size(), 1u);
    EXPECT_TRUE(std::regex_match(files[0], delivered_name)) << files[0];
    EXPECT_TRUE(fs::is_directory(dir / "cur"));
    EXPECT_FALSE(fs::exists(dir / "whatever")) << "no mailbox directory below the folder";
    EXPECT_TRUE(names_in(dir / "tmp").empty());
    // Any name reads the same folder back.
    auto snap = folder.snapshot("inbox");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 1u);
    EXPECT_EQ((*snap)[0].octets, 22u);  // 19 stored octets, 3 LF sent as CRLF
    EXPECT_EQ(folder.deliver(std::vector<std::string>{""}, "x\n").error(), mailnet::errc::bad_input);
}

TEST(maildir_folder, a_folder_that_cannot_be_a_directory_is_bad_config) {
    temp_dir d;
    write_file(d.path / "file", "x");
    mailnet::maildir_options o = options(d.path);
    o.root = d.path / "file";
    EXPECT_EQ(mailnet::open_maildir_folder(o).error(), mailnet::errc::bad_config);
}

TEST(maildir_store, reads_a_maildir_written_by_dovecot_and_mutt) {
    temp_dir d;
    const fs::path box = d.path / "store" / "alice";
    struct file {
        fs::path path;
        std::string content;
    };
    const std::vector<file> files = {
        {box / "cur" / "1700000000.M1P2.host,S=10,W=12:2,S", "abcd\nefgh\n"},          // Dovecot, seen
        {box / "new" / "1700000000.M10P3.host", "Subject: ten\n\nx\n"},                 // numeric M: after M9
        {box / "new" / "1700000000.M9P4.host", "Subject: nine\n"},
        {box / "cur" / "1700000001.12345_1.mutthost:2,RS", "a\nb\n"},                   // mutt, no S=/W=
        {box / "new" / "1700000002.R123456.mutt", "x\r\ny\r\n"},                        // CRLF file
        {box / "cur" / "1699999999.M999999P1.old:2,", "z\n"},                           // oldest, not seen
        {box / "cur" / "no-time-in-this-name:2,F", "q\n"},                               // mtime decides
        {box / "cur" / "1700000003.M5P6.my host:2,S", "h\n"},                            // needs a hashed UIDL
    };
    for (const auto& f : files) write_file(f.path, f.content);
    set_mtime(box / "cur" / "no-time-in-this-name:2,F", 1700000001);
    // Everything else a Maildir may hold.
    write_file(box / "dovecot-uidlist", "3 V1 N1\n");
    write_file(box / "dovecot.index", "binary");
    write_file(box / "dovecot-keywords", "");
    write_file(box / "maildirfolder", "");
    write_file(box / "subscriptions", "Sent\n");
    write_file(box / ".Sent" / "cur" / "1700000000.M7P7.host:2,S", "sent\n");
    write_file(box / "new" / ".hidden", "no\n");
    fs::create_directories(box / "cur" / "subdir");
    write_file(box / "cur" / "subdir" / "1700000000.M8P8.host", "nested\n");

    auto s = open_store(options(d.path));
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    const std::string hashed_id = "1700000003.M5P6.my host";
    EXPECT_EQ(ids_of(*snap), (std::vector<std::string>{"1699999999.M999999P1.old", "1700000000.M1P2.host,S=10,W=12",
                                                       "1700000000.M9P4.host", "1700000000.M10P3.host",
                                                       "1700000001.12345_1.mutthost", "no-time-in-this-name",
                                                       "1700000002.R123456.mutt", hashed_id}));
    const std::vector<std::uint64_t> octets = {3, 12, 15, 19, 6, 3, 6, 3};
    const std::vector<bool> seen = {false, true, false, false, true, false, false, true};
    for (std::size_t i = 0; i < snap->size(); ++i) {
        EXPECT_EQ((*snap)[i].octets, octets[i]) << (*snap)[i].id;
        EXPECT_EQ((*snap)[i].seen, seen[i]) << (*snap)[i].id;
        if ((*snap)[i].id != hashed_id) {
            EXPECT_EQ((*snap)[i].pop3_uidl(), (*snap)[i].id);
        }
    }
    EXPECT_EQ(snap->back().pop3_uidl(), mailnet::uidl_for_id(hashed_id));
    EXPECT_EQ(snap->back().pop3_uidl().size(), 32u);

    for (const auto& f : files) {
        const std::string name = f.path.filename().string();
        auto m = s->open("alice", name.substr(0, name.find(':')));
        ASSERT_TRUE(m) << name;
        EXPECT_EQ(m->stored_octets(), f.content.size());
        EXPECT_EQ(read_message(*m, 3), f.content) << name;
    }
    EXPECT_EQ(s->open("alice", "dovecot-uidlist").error(), errc::not_found);
    EXPECT_EQ(s->open("alice", "../dovecot-uidlist").error(), errc::not_found);
    EXPECT_EQ(s->open("alice", ".hidden").error(), errc::not_found);
}

TEST(maildir_store, two_processes_exclude_each_other_and_a_crash_releases_the_lock) {
    temp_dir d;
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s->deliver(boxes({"alice", "bob"}), "x\n"));  // flock needs a mailbox to hold its file
    std::array<int, 2> to_parent{}, to_child{};
    ASSERT_EQ(::pipe(to_parent.data()), 0);
    ASSERT_EQ(::pipe(to_child.data()), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::close(to_parent[0]);
        ::close(to_child[1]);
        auto other = mailnet::open_maildir_store(options(d.path));
        const char ok = other && (*other)->lock("alice") ? 'L' : 'E';
        (void)!::write(to_parent[1], &ok, 1);
        char go = 0;
        (void)!::read(to_child[0], &go, 1);
        ::_exit(0);  // a crash: no unlock, no destructor
    }
    ::close(to_parent[1]);
    ::close(to_child[0]);
    char got = 0;
    ASSERT_EQ(::read(to_parent[0], &got, 1), 1);
    ASSERT_EQ(got, 'L');
    EXPECT_EQ(s->lock("alice").error(), errc::mailbox_in_use);
    EXPECT_TRUE(s->lock("bob")) << "other mailboxes stay free";
    ::close(to_child[1]);  // lets the child die
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ::close(to_parent[0]);
    EXPECT_TRUE(s->lock("alice")) << "the lock of a dead process is gone";
    s->unlock("alice");
    s->unlock("bob");
}

TEST(maildir_store, two_sessions_in_one_process_exclude_each_other) {
    temp_dir d;
    auto a = open_store(options(d.path));
    auto b = open_store(options(d.path));
    ASSERT_TRUE(a->deliver(boxes({"alice"}), "x\n"));
    ASSERT_TRUE(a->lock("alice"));
    EXPECT_EQ(a->lock("alice").error(), errc::mailbox_in_use);
    EXPECT_EQ(b->lock("alice").error(), errc::mailbox_in_use);
    EXPECT_EQ(a->lock("").error(), errc::bad_input);
    a->unlock("alice");
    ASSERT_TRUE(b->lock("alice"));
    EXPECT_EQ(a->lock("alice").error(), errc::mailbox_in_use);
    b->unlock("alice");
    EXPECT_TRUE(a->lock("alice"));
    EXPECT_TRUE(fs::is_regular_file(d.path / "store" / "alice" / "mailnet-pop3.lock"));
    auto snap = a->snapshot("alice");
    ASSERT_TRUE(snap);
    EXPECT_EQ(snap->size(), 1u) << "the lock file is no message";
}

TEST(maildir_store, commit_deletes_only_the_given_ids) {
    temp_dir d;
    auto s = open_store(options(d.path));
    for (const char* text : {"one\n", "two\n", "three\n"}) ASSERT_TRUE(s->deliver(boxes({"alice"}), text));
    ASSERT_TRUE(s->lock("alice"));
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 3u);
    const std::vector<std::string> deleted = {(*snap)[1].id, "already-gone-elsewhere"};
    const auto results = s->commit("alice", deleted, {});
    ASSERT_EQ(results.size(), 2u);
    EXPECT_FALSE(results[0]) << results[0].message();
    EXPECT_FALSE(results[1]) << "a file deleted by someone else counts as deleted";
    s->unlock("alice");
    auto after = s->snapshot("alice");
    ASSERT_TRUE(after);
    EXPECT_EQ(ids_of(*after), (std::vector<std::string>{(*snap)[0].id, (*snap)[2].id}));
    auto m = s->open("alice", (*snap)[2].id);
    ASSERT_TRUE(m);
    EXPECT_EQ(read_message(*m, 100), "three\n");
}

TEST(maildir_store, a_message_renamed_meanwhile_is_found_by_its_base_name) {
    temp_dir d;
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "first\n"));
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "second\n"));
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 2u);
    const fs::path box = d.path / "store" / "alice";
    // mutt or Dovecot moves both to cur/ and sets flags after our snapshot.
    for (const auto& m : *snap) fs::rename(box / "new" / m.id, box / "cur" / (m.id + ":2,S"));
    auto m = s->open("alice", (*snap)[0].id);
    ASSERT_TRUE(m);
    EXPECT_EQ(read_message(*m, 2), "first\n");
    fs::rename(box / "cur" / ((*snap)[1].id + ":2,S"), box / "cur" / ((*snap)[1].id + ":2,RS"));
    const std::vector<std::string> deleted = {(*snap)[0].id, (*snap)[1].id};
    const auto results = s->commit("alice", deleted, {});
    ASSERT_EQ(results.size(), 2u);
    EXPECT_FALSE(results[0]);
    EXPECT_FALSE(results[1]);
    EXPECT_TRUE(names_in(box / "cur").empty());
    EXPECT_TRUE(names_in(box / "new").empty());
    EXPECT_EQ(s->open("alice", (*snap)[0].id).error(), errc::not_found);
}

TEST(maildir_store, seen_messages_move_to_cur_with_flag_s_in_ascii_order) {
    temp_dir d;
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "a\n"));
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "b\n"));
    const fs::path box = d.path / "store" / "alice";
    write_file(box / "cur" / "1999999999.M1P1.host:2,FT", "c\n");
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 3u);
    const std::string a = (*snap)[0].id, b = (*snap)[1].id, c = (*snap)[2].id;
    const std::vector<std::string> seen = {a, c, b};
    const std::vector<std::string> deleted = {b};  // deleted wins over seen
    EXPECT_FALSE(s->commit("alice", deleted, seen)[0]);
    EXPECT_EQ(names_in(box / "cur"), (std::vector<std::string>{a + ":2,S", "1999999999.M1P1.host:2,FST"}));
    EXPECT_TRUE(names_in(box / "new").empty());
    auto after = s->snapshot("alice");
    ASSERT_TRUE(after);
    ASSERT_EQ(after->size(), 2u);
    EXPECT_TRUE((*after)[0].seen);
    EXPECT_TRUE((*after)[1].seen);
    EXPECT_EQ((*after)[0].pop3_uidl(), (*snap)[0].pop3_uidl()) << "the UIDL survives the move";
    // Marking again changes nothing.
    const std::vector<std::string> again = {a};
    EXPECT_TRUE(s->commit("alice", {}, again).empty());
    EXPECT_EQ(names_in(box / "cur").size(), 2u);
}

// A mailbox made by hand (its new/ and cur/), for files written into it as another program would.
fs::path hand_made_box(const fs::path& box) {
    fs::create_directories(box / "new");
    fs::create_directories(box / "cur");
    return box;
}

// What the files of a mailbox hold, sorted (wherever they are: new/ or cur/, any name).
std::vector<std::string> contents_of_box(const fs::path& box) {
    std::vector<std::string> out = contents_in(box / "new");
    for (auto& c : contents_in(box / "cur")) out.push_back(std::move(c));
    std::sort(out.begin(), out.end());
    return out;
}

TEST(maildir_store, two_files_of_one_base_name_are_two_messages_and_marking_seen_replaces_neither) {
    // A Maildir restored over itself, or a foreign tool: two files whose names differ in their
    // flags only. Kept as one, the other was never listed, and marking the first seen renamed
    // it over the second.
    temp_dir d;
    log_capture log;
    auto s = open_store(options(d.path, log.sink()));
    const fs::path box = hand_made_box(d.path / "store" / "alice");
    write_file(box / "cur" / "7001.M1P1Q1.h:2,", "three\n");
    write_file(box / "cur" / "7001.M1P1Q1.h:2,S", "four\n");
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 2u);
    EXPECT_NE((*snap)[0].id, (*snap)[1].id);
    EXPECT_NE((*snap)[0].pop3_uidl(), (*snap)[1].pop3_uidl());
    std::vector<std::string> read;
    for (const auto& m : *snap) {
        auto opened = s->open("alice", m.id);
        ASSERT_TRUE(opened) << m.id;
        read.push_back(read_message(*opened, 100));
    }
    std::sort(read.begin(), read.end());
    EXPECT_EQ(read, (std::vector<std::string>{"four\n", "three\n"}));
    EXPECT_TRUE(log.contains("two messages named 7001.M1P1Q1.h")) << log.all();
    const std::vector<std::string> seen = {(*snap)[0].id, (*snap)[1].id};
    EXPECT_TRUE(s->commit("alice", {}, seen).empty());
    EXPECT_EQ(contents_of_box(box), (std::vector<std::string>{"four\n", "three\n"}));
    auto again = s->snapshot("alice");
    ASSERT_TRUE(again);
    EXPECT_EQ(ids_of(*again), ids_of(*snap)) << "the ids stay";
}

TEST(maildir_store, two_files_of_one_base_name_whose_later_cannot_be_renamed_keep_the_first) {
    // The name the later would get is taken (here by hand, for either file, since which one is
    // later depends on the directory's order; in life a scan of another process renamed it
    // meanwhile): the first stays listed, never replaced by a name that is gone.
    temp_dir d;
    log_capture log;
    auto s = open_store(options(d.path, log.sink()));
    const fs::path box = hand_made_box(d.path / "store" / "alice");
    const std::vector<std::pair<std::string, std::string>> files = {{"7001.M1P1Q1.h:2,", "one\n"},
                                                                    {"7001.M1P1Q1.h:2,S", "two\n"}};
    for (const auto& [name, text] : files) {
        write_file(box / "cur" / name, text);
        struct stat st{};
        ASSERT_EQ(::stat((box / "cur" / name).c_str(), &st), 0);
        const std::string info = name.substr(name.find(':'));
        write_file(box / "cur" / ("7001.M1P1Q1.h-dup" + std::to_string(st.st_ino) + info), "taken " + text);
    }
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    std::vector<std::string> read;
    for (const auto& m : *snap) {
        auto opened = s->open("alice", m.id);
        ASSERT_TRUE(opened) << m.id;
        read.push_back(read_message(*opened, 100));
    }
    ASSERT_EQ(read.size(), 3u) << "one of the two, and the two that took their names";
    EXPECT_EQ(std::count(read.begin(), read.end(), "taken one\n"), 1);
    EXPECT_EQ(std::count(read.begin(), read.end(), "taken two\n"), 1);
    EXPECT_EQ(std::count(read.begin(), read.end(), "one\n") + std::count(read.begin(), read.end(), "two\n"), 1);
    EXPECT_TRUE(log.contains("cannot rename one")) << log.all();
    EXPECT_EQ(contents_of_box(box).size(), 4u) << "nothing renamed over anything";
}

TEST(maildir_store, a_size_in_a_name_past_one_tib_is_not_believed) {
    // STAT and the login's reply sum the sizes: 2^64-1 from a name wrapped them round.
    temp_dir d;
    auto s = open_store(options(d.path));
    const fs::path box = hand_made_box(d.path / "store" / "alice");
    write_file(box / "new" / "1.M1P1.h,S=18446744073709551615,W=18446744073709551615", "x\n");
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 1u);
    EXPECT_EQ((*snap)[0].octets, 3u);  // counted from the file: "x" CRLF
}

TEST(maildir_store, marking_seen_never_replaces_a_file_that_took_the_name_meanwhile) {
    temp_dir d;
    auto s = open_store(options(d.path));
    const fs::path box = hand_made_box(d.path / "store" / "alice");
    write_file(box / "new" / "1.M1P1.host", "a\n");
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 1u);
    write_file(box / "cur" / "1.M1P1.host:2,S", "b\n");  // after the snapshot: the seen name taken
    const std::vector<std::string> seen = {(*snap)[0].id};
    (void)s->commit("alice", {}, seen);
    EXPECT_EQ(contents_of_box(box), (std::vector<std::string>{"a\n", "b\n"}));
}

TEST(maildir_store, a_mailbox_made_by_hand_without_cur_gets_one_when_a_message_is_seen) {
    // `mkdir -p box/new` and a file in it (README's first try of pop3d, once): what a POP3
    // session read moves to a cur/ made for it, as Dovecot does, not a warning per message.
    temp_dir d;
    log_capture log;
    auto o = options(d.path, log.sink());
    o.fsync = true;
    auto s = open_store(o);
    const fs::path box = d.path / "store" / "alice";
    fs::create_directories(box / "new");
    write_file(box / "new" / "1.M1P1.host", "Subject: hi\n\nhello\n");
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 1u);
    const std::vector<std::string> seen = {(*snap)[0].id};
    EXPECT_TRUE(s->commit("alice", {}, seen).empty());
    EXPECT_EQ(names_in(box / "cur"), (std::vector<std::string>{"1.M1P1.host:2,S"}));
    EXPECT_TRUE(names_in(box / "new").empty());
    EXPECT_FALSE(log.contains("cannot mark")) << log.all();
    // Nothing to mark seen, only deletions: no cur/ is made.
    const fs::path bob = d.path / "store" / "bob";
    fs::create_directories(bob / "new");
    write_file(bob / "new" / "2.M1P1.host", "x\n");
    auto bobs = s->snapshot("bob");
    ASSERT_TRUE(bobs);
    const std::vector<std::string> gone = {(*bobs)[0].id};
    EXPECT_FALSE(s->commit("bob", gone, gone)[0]);
    EXPECT_FALSE(fs::exists(bob / "cur"));
}

TEST(maildir_store, reads_a_5_mib_message_back_in_small_chunks) {
    temp_dir d;
    auto s = open_store(options(d.path));
    // Lines of 61 octets (60 letters and LF) whose letters shift from line to line over 26
    // lines: a chunk of 1000 or 4093 octets out of place shows.
    std::string period;
    for (std::size_t line = 0; line < 26; ++line) {
        for (std::size_t i = 0; i < 60; ++i) period += static_cast<char>('a' + (line + i) % 26);
        period += '\n';
    }
    std::string text;
    text.reserve((5u << 20) + period.size());
    while (text.size() < (5u << 20)) text += period;
    text.resize(5u << 20);
    const std::uint64_t lfs = text.size() / 61;
    auto dl = s->begin_delivery(boxes({"alice"}));
    ASSERT_TRUE(dl);
    for (std::size_t at = 0; at < text.size(); at += 65536) ASSERT_TRUE((*dl)->write(std::string_view(text).substr(at, 65536)));
    ASSERT_TRUE((*dl)->commit());
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 1u);
    EXPECT_EQ((*snap)[0].octets, text.size() + lfs);
    auto m = s->open("alice", (*snap)[0].id);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->stored_octets(), text.size());
    EXPECT_TRUE(read_message(*m, 1000) == text);
    ASSERT_TRUE(m->rewind());
    EXPECT_TRUE(read_message(*m, 4093) == text);
}

// open() on another thread, given `limit` to answer; a FIFO it waits on is then opened for
// writing so the call returns and the test ends (failed) instead of hanging.
mailnet::result<mailnet::message> open_within(mailnet::store& s, const std::string& id, const fs::path& fifo,
                                              std::chrono::milliseconds limit = 5000ms) {
    auto f = std::async(std::launch::async, [&s, id] { return s.open("alice", id); });
    if (f.wait_for(limit) == std::future_status::timeout) {
        ADD_FAILURE() << "open() still waiting after " << limit.count() << " ms";
        const int w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        auto r = f.get();
        if (w >= 0) ::close(w);
        return r;
    }
    return f.get();
}

TEST(maildir_store, a_message_file_replaced_by_a_fifo_directory_or_symlink_is_an_error_at_once) {
    // DESIGN.md: a FIFO, a directory or a symlink where a message was is an error for that
    // message (not errc::not_found: pop3d answers -ERR [SYS/TEMP]), never a wait, and a
    // symlink is not followed out of the store.
    temp_dir d;
    auto s = open_store(options(d.path));
    for (const char* text : {"one\n", "two\n", "three\n"}) ASSERT_TRUE(s->deliver(boxes({"alice"}), text));
    const fs::path outside = d.path / "outside";
    write_file(outside, "secre\n");  // the size of "three\n": only following the link would open it
    ASSERT_TRUE(s->lock("alice"));
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 3u);
    const fs::path box = d.path / "store" / "alice" / "new";
    const std::string fifo_id = (*snap)[0].id, dir_id = (*snap)[1].id, link_id = (*snap)[2].id;
    fs::remove(box / fifo_id);
    ASSERT_EQ(::mkfifo((box / fifo_id).c_str(), 0600), 0);
    fs::remove(box / dir_id);
    fs::create_directory(box / dir_id);
    fs::remove(box / link_id);
    fs::create_symlink(outside, box / link_id);
    for (const auto& id : {fifo_id, dir_id, link_id}) {
        const auto start = std::chrono::steady_clock::now();
        auto m = open_within(*s, id, box / fifo_id);
        EXPECT_FALSE(m) << id << " opened: " << (m ? read_message(*m, 100) : "");
        if (!m) {
            EXPECT_NE(m.error(), errc::not_found) << id;
        }
        EXPECT_LT(std::chrono::steady_clock::now() - start, 1s) << id;
    }
    EXPECT_EQ(read_file(outside), "secre\n");
    s->unlock("alice");
}

TEST(maildir_store, a_lock_file_that_is_a_fifo_or_a_symlink_fails_the_lock) {
    temp_dir d;
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s->deliver(boxes({"alice", "bob"}), "x\n"));
    const fs::path root = d.path / "store";
    ASSERT_EQ(::mkfifo((root / "alice" / "mailnet-pop3.lock").c_str(), 0600), 0);
    const fs::path outside = d.path / "outside-lock";
    fs::create_symlink(outside, root / "bob" / "mailnet-pop3.lock");
    for (const char* box : {"alice", "bob"}) {
        auto r = s->lock(box);
        EXPECT_FALSE(r) << box;
        if (!r) {
            EXPECT_NE(r.error(), errc::mailbox_in_use) << box << ": a system failure, not a busy mailbox";
        }
    }
    EXPECT_FALSE(fs::exists(outside)) << "the symlink was not followed";
}

TEST(maildir_store, a_message_whose_size_changed_since_the_snapshot_does_not_open) {
    // Sent anyway, a shorter file would end early with a final dot and a longer one would
    // run past the count LIST and RETR announced.
    temp_dir d;
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "hello world\n"));
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "second\n"));
    const fs::path box = d.path / "store" / "alice";
    write_file(box / "cur" / "1999999999.R1.mutt:2,", "mutt's own\n");  // no S= in the name
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 3u);
    const fs::path shrunk = box / "new" / (*snap)[0].id;
    const fs::path grown = box / "new" / (*snap)[1].id;
    const fs::path foreign = box / "cur" / "1999999999.R1.mutt:2,";
    fs::resize_file(shrunk, 5);
    { std::ofstream(grown, std::ios::app) << "more\n"; }
    { std::ofstream(foreign, std::ios::app) << "more\n"; }
    for (const auto& id : {(*snap)[0].id, (*snap)[1].id, (*snap)[2].id}) {
        auto m = s->open("alice", id);
        EXPECT_FALSE(m) << id;
        if (!m) {
            EXPECT_NE(m.error(), errc::not_found) << id;
        }
    }
    // Put back as announced, they open again.
    fs::resize_file(grown, 7);
    fs::resize_file(foreign, 11);
    for (const auto& id : {(*snap)[1].id, (*snap)[2].id}) {
        auto m = s->open("alice", id);
        ASSERT_TRUE(m) << id << ": " << m.error().message();
        EXPECT_EQ(m->stored_octets(), fs::file_size(id == (*snap)[1].id ? grown : foreign));
    }
    // A name whose S= lies is refused the same way.
    write_file(box / "new" / "1999999998.M1P1Q1.x,S=99,W=101", "short\n");
    auto again = s->snapshot("alice");
    ASSERT_TRUE(again);
    EXPECT_FALSE(s->open("alice", "1999999998.M1P1Q1.x,S=99,W=101"));
    // Without W= the snapshot reads the file for its wire size anyway: a wrong S= (Dovecot
    // knows such Maildirs: maildir_broken_filename_sizes) is then not trusted, and the
    // message is served as the snapshot announced it.
    write_file(box / "new" / "1999999997.M1P1Q1.x,S=99", "short\n");
    auto third = s->snapshot("alice");
    ASSERT_TRUE(third);
    const auto listed = std::find_if(third->begin(), third->end(),
                                     [](const auto& m) { return m.id == "1999999997.M1P1Q1.x,S=99"; });
    ASSERT_NE(listed, third->end());
    EXPECT_EQ(listed->octets, 7u);
    auto served = s->open("alice", "1999999997.M1P1Q1.x,S=99");
    ASSERT_TRUE(served) << served.error().message();
    EXPECT_EQ(served->stored_octets(), 6u);
}

// Every file under `dir` with its contents and mtime: what "untouched" means.
std::map<std::string, std::pair<std::string, fs::file_time_type>> tree_of(const fs::path& dir) {
    std::map<std::string, std::pair<std::string, fs::file_time_type>> out;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        out[fs::relative(e.path(), dir).string()] = {e.is_regular_file() ? read_file(e.path()) : "<dir>",
                                                     fs::last_write_time(e.path())};
    return out;
}

TEST(maildir_store, a_mailbox_that_is_a_symlink_is_never_followed_out_of_the_store) {
    temp_dir d;
    const fs::path outside = d.path / "elsewhere";
    const std::string id = "1700000000.M1P1Q1.x,S=7,W=8";
    write_file(outside / "new" / id, "secret\n");
    write_file(outside / "cur" / "1700000001.M1P1Q2.x,S=4,W=5:2,", "old\n");
    write_file(outside / "tmp" / "1600000000.M1P1Q3.x", "stale\n");
    set_mtime(outside / "tmp" / "1600000000.M1P1Q3.x", 1600000000);  // what clean_tmp would remove
    fs::create_directories(d.path / "store");
    fs::create_directory_symlink(outside, d.path / "store" / "alice");
    const auto before = tree_of(outside);
    auto s = open_store(options(d.path));  // removes stale tmp/ files at open
    auto locked = s->lock("alice");
    auto snap = s->snapshot("alice");
    if (snap) {
        EXPECT_TRUE(snap->empty());
    }
    EXPECT_FALSE(s->open("alice", id));
    const std::vector<std::string> ids = {id, "1700000001.M1P1Q2.x,S=4,W=5"};
    (void)s->commit("alice", ids, ids);
    if (locked) s->unlock("alice");
    EXPECT_FALSE(s->deliver(boxes({"alice"}), "new mail\n"));
    EXPECT_TRUE(tree_of(outside) == before) << "the directory outside the store is untouched";
    EXPECT_FALSE(fs::exists(outside / "mailnet-pop3.lock"));
}

TEST(maildir_store, a_snapshot_of_names_with_s_and_w_stats_no_file) {
    // The names carry sizes and delivery times: a big mailbox is listed from readdir alone
    // (100,000 files cost a stat each before). Names without S= still get one.
    temp_dir d;
    auto s = open_store(options(d.path));
    const fs::path new_dir = d.path / "store" / "alice" / "new";
    fs::create_directories(new_dir);
    fs::create_directories(d.path / "store" / "alice" / "cur");
    constexpr int count = 20000;
    for (int i = 0; i < count; ++i) {
        // Names as long as real ones (ours, Dovecot's): the id's heap block is part of the cost.
        const std::string name = std::to_string(1700000000 + i) + ".M" + std::to_string(100000 + i) + "P12345Q" +
                                 std::to_string(i) + ".mail.example.org,S=2,W=3";
        const int fd = ::open((new_dir / name).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::write(fd, "x\n", 2), 2);
        ::close(fd);
    }
    write_file(new_dir / "1600000000.mutt-style", "no sizes\n");
    stat_calls = 0;
    counting_stats = true;
    const auto heap_before = mailnet::testing::heap_in_use();
    auto snap = s->snapshot("alice");
    // What a session holds for its snapshot (the store's own index of the mailbox included):
    // at most 200 octets a message (issue 11, big mailboxes).
    const auto held = mailnet::testing::heap_in_use() - heap_before;
    counting_stats = false;
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), static_cast<std::size_t>(count) + 1);
    EXPECT_LE(stat_calls.load(), 10) << "one stat per file is back";
    EXPECT_LE(held / (count + 1), 200u) << held << " octets of heap for " << count + 1 << " messages";
    std::printf("snapshot: %zu octets of heap a message (id, UIDL, size, flag; the store's index)\n",
                held / (count + 1));
    EXPECT_EQ((*snap)[0].id, "1600000000.mutt-style");
    EXPECT_EQ((*snap)[0].octets, 10u);
    EXPECT_EQ((*snap)[1].octets, 3u);
    auto m = s->open("alice", (*snap)[count].id);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ(m->stored_octets(), 2u);
}

TEST(maildir_store, missing_things_and_bad_names) {
    temp_dir d;
    auto s = open_store(options(d.path));
    auto snap = s->snapshot("nobody");
    ASSERT_TRUE(snap);
    EXPECT_TRUE(snap->empty());
    EXPECT_EQ(s->open("nobody", "1.M1P1.x").error(), errc::not_found);
    EXPECT_EQ(s->snapshot("").error(), errc::bad_input);
    EXPECT_EQ(s->begin_delivery({}).error(), errc::bad_input);
    EXPECT_EQ(s->begin_delivery(boxes({"alice", ""})).error(), errc::bad_input);
    EXPECT_TRUE(names_in(d.path / "store").empty()) << "a refused delivery creates nothing";
}

TEST(maildir_store, a_mailbox_named_twice_gets_the_message_once) {
    temp_dir d;
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s->deliver(boxes({"alice", "bob", "alice"}), "x\n"));
    EXPECT_EQ(names_in(d.path / "store" / "alice" / "new").size(), 1u);
    EXPECT_EQ(names_in(d.path / "store" / "bob" / "new").size(), 1u);
}

TEST(maildir_store, mailbox_names_never_reach_outside_the_root) {
    temp_dir d;
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s->deliver(boxes({"../evil", ".", "..", "a/b", ".hidden"}), "x\n"));
    EXPECT_EQ(names_in(d.path), std::vector<std::string>{"store"});
    EXPECT_EQ(names_in(d.path / "store"), (std::vector<std::string>{"%2E", "%2E.", "%2E.%2Fevil", "%2Ehidden", "a%2Fb"}));
}

TEST(maildir_store, a_root_that_cannot_be_a_directory_is_bad_config) {
    temp_dir d;
    write_file(d.path / "file", "x");
    mailnet::maildir_options o;
    o.root = d.path / "file";
    o.log = mailnet::null_log();
    EXPECT_EQ(mailnet::open_maildir_store(o).error(), errc::bad_config);
    o.root = d.path / "file" / "below";
    EXPECT_EQ(mailnet::open_maildir_store(o).error(), errc::bad_config);
    o.root.clear();
    EXPECT_EQ(mailnet::open_maildir_store(o).error(), errc::bad_config);
    o.root = d.path / "a" / "b" / "c";
    EXPECT_TRUE(mailnet::open_maildir_store(o));
    EXPECT_TRUE(fs::is_directory(o.root));
}

// ---- the one encoding of mailbox names into directory names

TEST(mailbox_name, escapes_what_could_leave_the_root_or_hide_the_folder) {
    const std::vector<std::pair<std::string, std::string>> table = {
        {"alice", "alice"},
        {"Alice@Example.COM", "Alice@Example.COM"},
        {"../x", "%2E.%2Fx"},
        {".", "%2E"},
        {"..", "%2E."},
        {".Sent", "%2ESent"},
        {"a.b.", "a.b."},
        {"a/b", "a%2Fb"},
        {"a\\b", "a%5Cb"},
        {"%", "%25"},
        {"%2E", "%252E"},
        {std::string("a\0b", 3), "a%00b"},
        {"tab\there\n", "tab%09here%0A"},
        {"\x7f", "%7F"},
        {"j\xc3\xbcrgen@\xe4\xbe\x8b.jp", "j\xc3\xbcrgen@\xe4\xbe\x8b.jp"},
        {"", "%-"},
        {std::string(200, 'a'), std::string(200, 'a')},
        {std::string(66, '/'), [] {
             std::string s;
             for (int i = 0; i < 66; ++i) s += "%2F";
             return s;
         }()},
        {std::string(201, 'a'), "%HVEXP3AQQSNZ6LD42EBLN5YA6QB7CC3HGA5PXAUJAPQFJ67LGNZIA"},
    };
    for (const auto& [in, out] : table) EXPECT_EQ(mailnet::encode_mailbox_name(in), out) << in;
}

TEST(mailbox_name, long_names_become_distinct_hashes) {
    const std::string a = mailnet::encode_mailbox_name(std::string(67, '/'));  // 201 octets escaped
    const std::string b = mailnet::encode_mailbox_name(std::string(300, 'x'));
    const std::string c = mailnet::encode_mailbox_name(std::string(300, 'x') + "y");
    for (const auto& s : {a, b, c}) {
        EXPECT_TRUE(s.starts_with("%H")) << s;
        EXPECT_EQ(s.size(), 54u);
    }
    EXPECT_NE(b, c);
}

TEST(mailbox_name, every_result_is_one_distinct_path_component_not_starting_with_a_dot) {
    std::vector<std::string> inputs = {"", ".", "..", "...", "%", "%%", "%2F", "%H", "%-", std::string(250, '.')};
    for (int b = 0; b < 256; ++b) {
        const char c = static_cast<char>(b);
        inputs.emplace_back(1, c);
        inputs.push_back(std::string(1, c) + c);
        inputs.push_back(std::string("x") + c);
        inputs.push_back(std::string(1, c) + "x");
    }
    std::sort(inputs.begin(), inputs.end());
    inputs.erase(std::unique(inputs.begin(), inputs.end()), inputs.end());
    std::set<std::string> outputs;
    for (const auto& in : inputs) {
        const std::string e = mailnet::encode_mailbox_name(in);
        EXPECT_FALSE(e.empty());
        EXPECT_LE(e.size(), 200u);
        EXPECT_NE(e, ".");
        EXPECT_NE(e, "..");
        EXPECT_NE(e.front(), '.') << in;
        EXPECT_EQ(e.find('/'), std::string::npos) << in;
        EXPECT_EQ(e.find('\0'), std::string::npos) << in;
        EXPECT_EQ(fs::path(e).filename().string(), e) << in;
        outputs.insert(e);
    }
    EXPECT_EQ(outputs.size(), inputs.size()) << "two names never share a folder";
}

TEST(mailbox_name, address_lowercases_ascii_letters_only) {
    EXPECT_EQ(mailnet::mailbox_for_address("Alice@Example.COM"), "alice@example.com");
    EXPECT_EQ(mailnet::mailbox_for_address("\xc3\x84LICE@X.org"), "\xc3\x84lice@x.org");  // Ä untouched
    EXPECT_EQ(mailnet::mailbox_for_address("a+b_C-9@[127.0.0.1]"), "a+b_c-9@[127.0.0.1]");
}

// ---- UIDL (RFC 1939 7)

TEST(uidl, a_printable_base_name_of_1_to_70_octets_is_its_own_uidl) {
    EXPECT_EQ(mailnet::uidl_for_id("1700000000.M1P2.host,S=10,W=12"), "1700000000.M1P2.host,S=10,W=12");
    EXPECT_EQ(mailnet::uidl_for_id("!"), "!");
    EXPECT_EQ(mailnet::uidl_for_id("~"), "~");
    EXPECT_EQ(mailnet::uidl_for_id(std::string(70, 'x')), std::string(70, 'x'));
}

TEST(uidl, anything_else_is_a_truncated_base32_sha256) {
    EXPECT_EQ(mailnet::uidl_for_id(""), "4OYMIQUY7QOBJGX36TEJS35ZEQT24QPE");
    EXPECT_EQ(mailnet::uidl_for_id("a b"), "ZBUHUCFKLVXNEBCDFD5GU2L2XDUW3Q2C");
    EXPECT_EQ(mailnet::uidl_for_id(std::string(71, 'x')), "Q6Q6JQOJFN5XU7CGIM6XQDPGZQM7T3ZU");
    for (const std::string& id : {std::string("caf\xc3\xa9"), std::string("a\tb"), std::string("x\x7f")}) {
        const std::string u = mailnet::uidl_for_id(id);
        EXPECT_EQ(u.size(), 32u);
        EXPECT_TRUE(std::all_of(u.begin(), u.end(), [](char c) { return (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'); }))
            << u;
        EXPECT_EQ(u, mailnet::uidl_for_id(id)) << "stable";
    }
}

}  // namespace

namespace {

// The mailboxes a subscriber heard told `changed` ("(whole store)" for a resync), kept under a
// lock: the Maildir store tells them from its watch thread.
class change_log {
public:
    explicit change_log(mailnet::store& s)
        : sub_(s.subscribe([this](const mailnet::store_event& e) {
              std::lock_guard lock(m_);
              if (e.what == mailnet::store_event::kind::resync) boxes_.insert("(whole store)");
              if (e.what != mailnet::store_event::kind::changed) return;
              boxes_.insert(e.mailbox);
              cv_.notify_all();
          })) {}
    /// Whether `box` was told changed, waiting up to 5 s for it.
    bool heard(const std::string& box) {
        std::unique_lock lock(m_);
        return cv_.wait_for(lock, std::chrono::seconds(5), [&] { return boxes_.contains(box); });
    }
    bool contains(const std::string& box) {
        std::lock_guard lock(m_);
        return boxes_.contains(box);
    }
    void clear() {
        std::lock_guard lock(m_);
        boxes_.clear();
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    std::multiset<std::string> boxes_;
    mailnet::subscription sub_;  // last: unsubscribed before the members it uses go
};

// While anyone subscribes, what changes on disk is told as a `changed` naming the mailbox,
// whoever changed it: a file copied in by hand, a mailbox made by hand, a file removed.
TEST(maildir_store, a_subscriber_hears_which_mailbox_changed_on_disk) {
    temp_dir d;
    fs::create_directories(d.path / "store");
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s);
    const fs::path alice = hand_made_box(d.path / "store" / "alice");
    change_log log(*s);
    const auto heard = [&](const std::string& box) {
        const bool got = log.heard(box);
        log.clear();
        return got;
    };
    write_file(alice / "new" / "7001.M1P1Q1.elsewhere", "one\n");
    EXPECT_TRUE(heard("alice")) << "a file copied into new/";
    const fs::path bob = hand_made_box(d.path / "store" / "bob");
    write_file(bob / "cur" / "7002.M1P1Q1.elsewhere:2,S", "two\n");
    EXPECT_TRUE(heard("bob")) << "a mailbox made by hand";
    fs::remove(alice / "new" / "7001.M1P1Q1.elsewhere");
    EXPECT_TRUE(heard("alice")) << "a file removed";
    fs::remove_all(bob);
    EXPECT_TRUE(heard("bob")) << "a mailbox removed";
    EXPECT_FALSE(log.contains("(whole store)")) << "never the whole store for a few files";
}

// When the kernel's queue overflows (more changes than it holds before the watcher reads),
// the mailboxes made meanwhile are watched all the same and every mailbox is told changed.
TEST(maildir_store, after_an_inotify_overflow_a_mailbox_made_meanwhile_is_watched) {
    temp_dir d;
    fs::create_directories(d.path / "store");
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s);
    const fs::path busy = hand_made_box(d.path / "store" / "busy");
    write_file(busy / "cur" / "7001.M1P1Q1.x:2,", "one\n");
    change_log log(*s);
    // Renames back and forth, far more than the queue holds (16384 events by default) while
    // the watcher waits between its rounds; a mailbox made in the middle of them.
    const fs::path doomed = hand_made_box(d.path / "store" / "doomed");
    write_file(doomed / "new" / "7003.M1P1Q1.x", "three\n");
    const fs::path a = busy / "cur" / "7001.M1P1Q1.x:2,", b = busy / "cur" / "7001.M1P1Q1.x:2,S";
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    bool made = false;
    for (int i = 0; std::chrono::steady_clock::now() < end; ++i) {
        ::rename((i % 2 ? b : a).c_str(), (i % 2 ? a : b).c_str());
        if (!made && i == 40000) {
            log.clear();
            hand_made_box(d.path / "store" / "late");
            fs::remove_all(doomed);  // its removal's events may be lost in the overflow
            made = true;
        }
    }
    ASSERT_TRUE(made) << "the renames were too slow to fill the queue";
    EXPECT_TRUE(log.heard("doomed")) << "a mailbox removed during the overflow is not told changed";
    log.clear();
    write_file(d.path / "store" / "late" / "new" / "7002.M1P1Q1.x", "two\n");
    EXPECT_TRUE(log.heard("late")) << "a file copied into a mailbox made during the overflow is not heard of";
}

}  // namespace

namespace {

// A message not in any scan yet (just delivered) is opened from new/ by its id at once; one
// whose S= lies is refused all the same.
TEST(maildir_store, a_message_in_new_is_opened_by_id_without_a_scan_and_a_lying_size_refused) {
    temp_dir d;
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s);
    const fs::path box = hand_made_box(d.path / "store" / "alice");
    write_file(box / "new" / "7001.M1P1Q1.h,S=6,W=7", "hello\n");
    write_file(box / "new" / "7002.M1P1Q1.h,S=99,W=101", "hi\n");
    auto m = s->open("alice", "7001.M1P1Q1.h,S=6,W=7");
    ASSERT_TRUE(m) << m.error().message();
    std::string text(16, '\0');
    auto n = m->read(text);
    ASSERT_TRUE(n);
    EXPECT_EQ(text.substr(0, *n), "hello\n");
    EXPECT_FALSE(s->open("alice", "7002.M1P1Q1.h,S=99,W=101")) << "its S= says 99 octets; it has 3";
    EXPECT_FALSE(s->open("alice", "../alice/new/7001.M1P1Q1.h,S=6"));
}

}  // namespace

namespace {

// A file another program was still writing when a listing saw it (cp into new/ writes in
// place) is opened at its whole size once no session has announced one; a session's message
// keeps the size its snapshot announced.
TEST(maildir_store, a_file_seen_half_written_outside_a_session_is_opened_whole) {
    temp_dir d;
    auto s = open_store(options(d.path));
    ASSERT_TRUE(s);
    const fs::path box = hand_made_box(d.path / "store" / "alice");
    write_file(box / "new" / "7001.M1P1Q1.cp", "Sub");
    ASSERT_TRUE(s->contents("alice"));
    write_file(box / "new" / "7001.M1P1Q1.cp", "Subject: whole\n\nx\n");
    ASSERT_TRUE(s->contents("alice"));  // a listing after it was written whole
    auto m = s->open("alice", "7001.M1P1Q1.cp");
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ(m->stored_octets(), 18u);
    // Within a session, the size its snapshot announced stands.
    ASSERT_TRUE(s->lock("alice"));
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    write_file(box / "new" / "7001.M1P1Q1.cp", "Subject: longer now\n\nx\n");
    ASSERT_TRUE(s->contents("alice"));
    EXPECT_FALSE(s->open("alice", "7001.M1P1Q1.cp")) << "a session's message is not sent at another size";
    s->unlock("alice");
}

}  // namespace
