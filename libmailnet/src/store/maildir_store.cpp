// maildir_store.cpp: the Maildir store (DESIGN.md "On disk"; the Maildir format of qmail's
// maildir(5) and Dovecot's extensions ,S= ,W= and :2,<flags>); POP3 locking (RFC 1939 8).
#include "mailnet/store/store.hpp"

#include "mailnet/dot_stuffing.hpp"
#include "mailnet/posix_io.hpp"
#include "maildir_watch.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <csignal>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace mailnet {
namespace {

constexpr std::size_t max_base_name = 70;  // DESIGN.md: our base names stay within 70 (RFC 1939 UIDL)
constexpr const char* lock_file_name = "mailnet-pop3.lock";
// A hashed mailbox directory (a name over 200 octets, "%H...") keeps its name in this file, so
// mailboxes() can tell it; written when delivery makes the mailbox.
constexpr const char* name_file_name = "mailnet-mailbox-name";
constexpr std::size_t max_name_file_octets = 64 * 1024;
// A large message's pages are handed to the disk (sync_file_range WRITE: started, not waited
// for) each time this much more is written, so that its commit's sync finds most of them
// written while the rest was still arriving. Small messages never reach it.
constexpr std::uint64_t writeback_step = 1024 * 1024;
// Direct writes (maildir_options::direct_io_from): blocks of this size from a buffer aligned
// to direct_align, at file offsets and of lengths that are multiples of it (4096: what the
// block devices and file systems in use ask at most; one that asks more fails the write with
// EINVAL, and the delivery goes on through the page cache).
constexpr std::size_t direct_block = 256 * 1024;
constexpr std::size_t direct_align = 4096;

std::error_code sys_error(int e) { return {e, std::system_category()}; }

using posix::unique_fd;

// A regular file opened by open_regular(), with its size at that moment.
struct regular_file {
    unique_fd fd;
    std::uint64_t size = 0;
};

// Opens `name` (relative to `dir`, or a path with AT_FDCWD) only if it is a regular file
// (DESIGN.md: what is on disk is an error for that message, never a wait): O_NOFOLLOW makes
// a symlink ELOOP, O_NONBLOCK keeps a FIFO from waiting for a writer; anything but a regular
// file is then errc::io_error. O_NONBLOCK is cleared again before the descriptor is used.
result<regular_file> open_regular(int dir, const char* name, int flags, mode_t mode = 0) {
    unique_fd fd(::openat(dir, name, flags | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC, mode));
    if (fd.get() < 0) return unexpected(last_system_error());
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) return unexpected(last_system_error());
    if (!S_ISREG(st.st_mode)) return unexpected(errc::io_error);
    // NOTE: O_NONBLOCK stays set: it changes nothing for a regular file's reads and writes,
    // and clearing it would cost two more system calls per RETR.
    return regular_file{std::move(fd), static_cast<std::uint64_t>(st.st_size)};
}

using posix::write_all;
using posix::fsync_dir;
using posix::make_dir;
using posix::make_dirs;

// The wire size of a file without ,W= in its name (RFC 1939 LIST counts CRLF line ends).
result<std::uint64_t> wire_size_of_file(int dir, const char* name) {
    auto file = open_regular(dir, name, O_RDONLY);
    if (!file) return unexpected(file.error());
    const unique_fd fd = std::move(file->fd);
    std::array<char, 64 * 1024> buf{};
    wire_size_counter total;
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return unexpected(last_system_error());
        }
        if (n == 0) break;
        total.add(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    }
    return total.octets();
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
    if (s.empty()) return std::nullopt;
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
    return v;
}

// The value of a ",W=<n>" (or ",S=<n>") field of a base name, ending at ',' or the end.
// Renames without replacing a file already at `to` (another message: two files of one base
// name); 0 or the errno. A file system without RENAME_NOREPLACE: link() never replaces either.
int rename_noreplace(int from_dir, const char* from, int to_dir, const char* to) {
    if (::renameat2(from_dir, from, to_dir, to, RENAME_NOREPLACE) == 0) return 0;
    // Not supported (old kernels, some FUSE file systems, seccomp filters): link() then.
    if (errno != EINVAL && errno != ENOSYS && errno != EPERM && errno != EOPNOTSUPP) return errno;
    if (::linkat(from_dir, from, to_dir, to, 0) != 0) return errno;
    // NOTE: if this unlink fails, both names are one file: a scan sees one message (one inode).
    return ::unlinkat(from_dir, from, 0) == 0 ? 0 : errno;
}

// A size past 1 TiB is no size a name of a message tells truthfully (STAT sums them): ignored.
std::optional<std::uint64_t> name_field(std::string_view base, std::string_view key) {
    for (std::size_t at = base.find(key); at != std::string_view::npos; at = base.find(key, at + 1)) {
        std::string_view rest = base.substr(at + key.size());
        rest = rest.substr(0, rest.find(','));
        if (auto v = parse_u64(rest); v && *v <= (std::uint64_t{1} << 40)) return v;
    }
    return std::nullopt;
}

// Names in new/ and cur/ that are not messages: dot-files, Dovecot's and Maildir++'s files.
bool ignored_name(std::string_view name) {
    return name.empty() || name.front() == '.' || name.starts_with("dovecot") || name == "maildirfolder" ||
           name == "subscriptions";
}

// When a Maildir name says the message was delivered.
struct delivery_key {
    std::uint64_t secs = 0;
    std::uint64_t usecs = 0;
    std::uint64_t counter = 0;  // Q: orders one process's deliveries within a microsecond
};

// The delivery time of "<secs>.M<usecs>P<pid>Q<n>..." (qmail, Dovecot, ours) or
// "<secs>.<anything>" (mutt, old qmail: no microseconds); nothing for other names.
std::optional<delivery_key> delivery_time(std::string_view base) {
    const std::size_t dot = base.find('.');
    if (dot == std::string_view::npos) return std::nullopt;
    auto secs = parse_u64(base.substr(0, dot));
    if (!secs) return std::nullopt;
    // The second field starts with <letter><digits> tokens in Dovecot's and qmail's names
    // ("M123P45Q6"); M counts only among those, so a mutt part ("R8f3M1") gives nothing.
    std::string_view field = base.substr(dot + 1);
    field = field.substr(0, field.find('.'));
    delivery_key key{*secs, 0, 0};
    std::size_t i = 0;
    while (i < field.size()) {
        const char letter = field[i];
        if (letter < 'A' || letter > 'Z') break;
        std::size_t j = i + 1;
        while (j < field.size() && field[j] >= '0' && field[j] <= '9') ++j;
        auto v = parse_u64(field.substr(i + 1, j - i - 1));
        if (!v) break;  // e.g. Dovecot's V<hex>: M, if any, came before
        if (letter == 'M') key.usecs = *v;
        if (letter == 'Q') key.counter = *v;
        i = j;
    }
    return key;
}

// One message file found in new/ or cur/. The base name is the only allocation per file:
// it becomes message_info::id (DESIGN.md: snapshots of 100,000 messages stay small).
struct found_file {
    std::string base;        // before ':'
    std::uint32_t info = 0;  // index of the part after ':' in the scan's interned infos
    bool in_cur = false;
    std::uint64_t size = 0;  // octets on disk: from ,S= or, without it, stat'd
    std::int64_t mtime = 0;  // stat'd only for names without a delivery time
};

// Where the last scan found a message, and its size then (open() checks it).
struct cached_file {
    std::string rel;  // "new/<name>" or "cur/<name>"
    std::uint64_t size = 0;
};

// A mailbox's directories, opened without following a symlink; files are opened relative
// to them (nothing under the store is followed out of it).
struct box_dirs {
    unique_fd box;  // -1: no such mailbox
    unique_fd new_dir, cur_dir;  // -1: missing
    int sub(std::string_view rel) const { return rel.starts_with("cur/") ? cur_dir.get() : new_dir.get(); }
};

// What a scan remembers of a mailbox for open() and commit(): 24 octets per message, keyed
// by a hash of the base name, and the directories it read (a RETR opens one file, not the
// mailbox's directories again).
struct scan_cache {
    std::shared_ptr<const box_dirs> dirs;
    struct entry {
        std::uint64_t hash = 0;
        std::uint64_t size = 0;
        std::uint32_t info = 0;
        bool in_cur = false;
    };
    std::vector<std::string> infos;  // distinct info parts ("", "2,", "2,S", ...): few
    std::vector<entry> entries;      // sorted by hash
};

// True when a base name is its own UIDL (DESIGN.md "UIDL": 1-70 octets in 0x21-0x7E).
bool own_uidl(std::string_view base) {
    return !base.empty() && base.size() <= max_base_name &&
           std::all_of(base.begin(), base.end(), [](char c) { return c >= 0x21 && c <= 0x7E; });
}

// Escapes a host name for file names as Dovecot does ('/' and ':' as \057 and \072); also ','
// (the field separator of ,S= ,W=), '\' and anything outside 0x21-0x7E, so the name parses.
std::string escape_host(std::string_view host) {
    std::string out;
    for (char c : host) {
        const auto u = static_cast<unsigned char>(c);
        if (u == '/' || u == ':' || u == ',' || u == '\\' || u < 0x21 || u > 0x7E) {
            out += '\\';
            out += static_cast<char>('0' + ((u >> 6) & 7u));
            out += static_cast<char>('0' + ((u >> 3) & 7u));
            out += static_cast<char>('0' + (u & 7u));
        } else {
            out += c;
        }
    }
    return out;
}

// Shortens an escaped host name to at most `budget` octets without cutting an escape apart.
std::string truncate_host(const std::string& host, std::size_t budget) {
    if (host.size() <= budget) return host;
    std::string out = host.substr(0, budget);
    const std::size_t bs = out.rfind('\\');
    if (bs != std::string::npos && out.size() - bs < 4) out.resize(bs);
    return out;
}

std::string system_hostname() {
    std::array<char, 256> buf{};
    if (::gethostname(buf.data(), buf.size() - 1) != 0 || buf[0] == '\0') return "localhost";
    return buf.data();
}

// The sorted flags of a Maildir info part with `add` added (maildir(5): flags in ASCII order).
std::string info_with_flag(std::string_view info, char add) {
    std::string flags;
    if (info.starts_with("2,")) flags = info.substr(2);
    // NOTE: an experimental "1,..." info part has no defined meaning to keep; it is replaced.
    flags += add;
    std::sort(flags.begin(), flags.end());
    flags.erase(std::unique(flags.begin(), flags.end()), flags.end());
    return "2," + flags;
}

// Group commit of one directory's fsync (DESIGN.md "pluggable interfaces", Delivery: concurrent
// deliveries share their durability work). A delivery that linked its file into the directory
// needs an fsync of it that *started after* the link: one already running may have written the
// directory out before the link. Rounds are numbered; one thread at a time runs a round, and
// every caller that arrives while round g runs waits for it to end, then is covered by round
// g + 1, which the first of them to wake runs for all of them. So under load one fsync per
// round covers every delivery that linked during the round before; alone, a delivery still
// waits for exactly one fsync of its own.
// A round that fails removes the links it should have made durable, and the removal is made
// durable in turn by the next round, run at once by the same thread (it also covers whoever
// linked meanwhile): the deliveries answer 451, and a retry must not find their message back
// after a crash. One removal round serves every link of the failed round, so failing
// deliveries share their fsyncs too.
class directory_sync {
public:
    explicit directory_sync(std::string dir) : dir_(std::move(dir)) {}

    /// A caller's link into the directory, for sync().
    struct link {
        std::string path;
        bool removed = false;  ///< the round that should have covered it failed: it was unlinked
    };

    /// Returns once an fsync of the directory that started after this call has succeeded, or
    /// with the error of the one that should have covered it. If that one failed, `l` (when
    /// given) was unlinked and l->removed set, and an fsync that started after the unlink has
    /// run (its own failure is not reported: the caller fails anyway).
    result<void> sync(link* l = nullptr) {
        link* const one[] = {l};
        return sync(std::span<link* const>(one, l ? 1 : 0));
    }

    /// The same for several links at once (commit_together): one round covers them all.
    result<void> sync(std::span<link* const> ls) {
        std::unique_lock lock(mutex_);
        const std::uint64_t need = started_ + 1;  // a round running now may predate the caller's links
        for (link* l : ls) links_.push_back({need, l});
        while (synced_ < need) {
            if (running_) {
                cv_.wait(lock);
                continue;
            }
            // Nothing runs and round `need` is not done: it has not started, and this caller
            // starts it (rounds end in order, so started_ == synced_ == need - 1 here).
            assert(started_ + 1 == need);
            running_ = true;
            for (bool again = true; again;) {
                const std::uint64_t round = ++started_;
                lock.unlock();  // others link and register meanwhile: they need the next round
                auto r = fsync_dir(dir_);
                lock.lock();
                synced_ = round;
                if (!r) {
                    failed_ = round;
                    error_ = r.error();
                }
                // The links of this round are settled: durable, or removed (under the lock, so
                // no caller hears of the failure before its link is gone) and then covered by
                // the next round, which runs now if anything was removed.
                again = false;
                std::erase_if(links_, [&](const pending& p) {
                    if (p.round != round) return false;
                    if (!r) {
                        ::unlink(p.l->path.c_str());
                        p.l->removed = true;
                        again = true;
                    }
                    return true;
                });
            }
            running_ = false;
            cv_.notify_all();
        }
        // A failed round fails every caller that depended on it: never a 250 without the fsync.
        // NOTE: only the latest failure is kept, so a caller woken late, after a failed round
        // later than its own, fails although its own round succeeded: a needless 451 (the
        // client retries), never a false success, and rare enough not to keep more. Its link
        // is then not removed here (l->removed stays false): the caller removes it.
        if (failed_ >= need) return unexpected(error_);
        return {};
    }

private:
    struct pending {
        std::uint64_t round;  // the round that covers it
        link* l;              // the caller's, which waits until that round is done
    };
    const std::string dir_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::uint64_t started_ = 0;  // the latest round begun
    std::uint64_t synced_ = 0;   // the latest round ended (rounds run one at a time, in order)
    bool running_ = false;
    std::uint64_t failed_ = 0;  // the latest round that failed, with its error
    std::error_code error_;
    std::vector<pending> links_;  // registered links whose round has not ended
};

// Runs fn(0) .. fn(n - 1), up to 8 at a time: the calls block on the disk (fsync), and one
// flush after another from one thread waits for the disk once each. The calling thread takes
// part; fewer threads (or none) help when none can be had.
template <class F>
void in_parallel(std::size_t n, F fn) {
    constexpr std::size_t max_threads = 8;
    if (n == 0) return;
    if (n == 1) return fn(0);
    std::atomic<std::size_t> next{0};
    auto work = [&] {
        for (std::size_t i; (i = next.fetch_add(1)) < n;) fn(i);
    };
    std::vector<std::thread> helpers;
    try {
        for (std::size_t t = 0; t + 1 < std::min(n, max_threads); ++t) helpers.emplace_back(work);
    } catch (const std::exception&) {
        // NOTE: no thread (or no memory for one): fewer help; the started ones are joined below.
    }
    work();
    for (auto& t : helpers) t.join();
}

// Round one of a delivery's group commit (DESIGN.md "pluggable interfaces", Delivery): the
// tmp/ files of one file system are made durable before any of them is linked into new/ (a
// link that reached the disk before its file's data and inode would show an empty or short
// file after a crash; ext4 allocates blocks late). Rounds run one at a time and are numbered,
// as directory_sync's: a delivery that registers while round g runs is served by round g + 1,
// which the first of the waiters to find nothing running leads for every file registered by
// then. A round either
//  - syncfs: syncfs(2) of the file system, then fdatasync of a directory of it. syncfs writes
//    and waits for every dirty page and inode of the file system (this group's files among
//    them); the fdatasync adds a device cache flush after that, because on ext4 without a
//    journal syncfs's own flush (its sync_fs step) comes before its last write-out of the
//    block device's buffers (inode tables); or
//  - file: each delivery of the round fdatasyncs its own file, all in parallel, and the round
//    ends when the last one is done (so the next group gathers meanwhile).
// Which: the mode; adaptive: file below min_group; from there syncfs while its measured time
// per file is at most 4 times file's, the other way being tried again once 20 times its last
// round's time (at least a second) has passed since, so a slow syncfs (another process's dirty
// pages on the same file system, which syncfs writes too) costs at most about a twentieth of
// the time before files take over.
// Errors: a file round's fdatasync reports its own file's. syncfs reports the writeback errors
// of the whole file system since the last call on the same descriptor (errseq, Linux >= 5.8),
// including those of background writeback, which may concern any file, of another round or
// another process: a round that sees one has each of its files synced by its own fdatasync
// instead, and syncfs is never used again (every later file's own fdatasync reports its own
// error, also one written back before). Each file a syncfs round covered also checks its own
// data's writeback error (sync_file_range WAIT_BEFORE: no I/O on a clean file).
class data_sync {
public:
    using clock = std::chrono::steady_clock;
    data_sync(unique_fd fs_dir, maildir_data_sync mode, std::size_t min_group)
        : fs_dir_(std::move(fs_dir)), mode_(mode), min_group_(std::max<std::size_t>(min_group, 1)),
          syncfs_unusable_(!syncfs_reaches_storage(fs_dir_.get())) {}

    /// Returns once `fd`'s data and inode are durable (an fdatasync or a syncfs that began after
    /// this call has succeeded), or with the error that prevented it.
    result<void> sync(int fd) {
        if (mode_ == maildir_data_sync::file) return own_sync(fd);
        std::unique_lock lock(mutex_);
        member m;
        queue_.push_back(&m);
        while (m.state == member::waiting) {
            if (running_) {
                cv_.wait(lock);
                continue;
            }
            lead(lock);  // this caller's round: m is in it
        }
        if (m.state == member::own_turn) {
            lock.unlock();
            auto r = own_sync(fd);
            lock.lock();
            if (--own_left_ == 0) {
                note(false, clock::now() - own_started_, own_count_);
                running_ = false;
                cv_.notify_all();
            }
            return r;
        }
        lock.unlock();
        if (::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE) != 0) return unexpected(last_system_error());
        return {};
    }

    /// The same for the files of one group (commit_together): one round for all of them, a
    /// syncfs when the mode and the measurements allow, else each file's fdatasync, several at
    /// a time. One result per descriptor, in order.
    std::vector<result<void>> sync_group(std::span<const int> fds) {
        std::vector<result<void>> out(fds.size());
        if (fds.empty()) return out;
        if (mode_ == maildir_data_sync::file) {
            own_syncs(fds, out);
            return out;
        }
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return !running_; });  // rounds run one at a time
        running_ = true;
        bool covered = false;
        std::size_t trial = 0;  // files of a bounded trial of fdatasync, synced on their own
        // At least min_group files: a smaller round is not noted (note()), so adaptive mode would
        // never learn from it and would try again on every group.
        const std::size_t trial_size = std::max(own_sync_threads, min_group_);
        if (!use_syncfs(fds.size()) && trying_files(fds.size()) && fds.size() > trial_size) {
            // NOTE: adaptive mode tries the file way now and then while syncfs is ahead; a group
            // can be hundreds of files (pop3c's batches), so the trial takes one file per helper
            // thread (enough to measure) and a syncfs covers the rest, instead of the whole
            // group's fdatasyncs (0.4 s for 500 files on the bench's disk).
            trial = trial_size;
            lock.unlock();
            const auto started = clock::now();
            own_syncs(fds.first(trial), std::span(out).first(trial));
            const auto took = clock::now() - started;
            lock.lock();
            note(false, took, trial);
        }
        if (trial > 0 || use_syncfs(fds.size())) {
            lock.unlock();
            const auto started = clock::now();
            const bool ok = ::syncfs(fs_dir_.get()) == 0 && ::fdatasync(fs_dir_.get()) == 0;
            const auto took = clock::now() - started;
            lock.lock();
            if (ok) {
                note(true, took, fds.size() - trial);
                covered = true;
            } else {
                syncfs_unusable_ = true;  // NOTE: as in lead(): each file's own fdatasync tells its own
            }
        }
        if (!covered) {
            lock.unlock();
            const auto started = clock::now();
            own_syncs(fds.subspan(trial), std::span(out).subspan(trial));
            const auto took = clock::now() - started;
            lock.lock();
            note(false, took, fds.size() - trial);
        }
        running_ = false;
        cv_.notify_all();
        lock.unlock();
        if (covered)
            for (std::size_t i = trial; i < fds.size(); ++i)
                if (::sync_file_range(fds[i], 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE) != 0) out[i] = unexpected(last_system_error());
        return out;
    }

private:
    struct member {
        enum { waiting, own_turn, covered } state = waiting;
    };

    // Each file's fdatasync, up to own_sync_threads at a time: one flush after another from one
    // thread would wait for the disk once per file (docs/benchmarks.md: 137 files/s from one
    // thread against 3,158 from eight on the bench's disk).
    static constexpr std::size_t own_sync_threads = 8;
    static void own_syncs(std::span<const int> fds, std::span<result<void>> out) {
        in_parallel(fds.size(), [&](std::size_t i) { out[i] = own_sync(fds[i]); });
    }

    // Whether syncfs (plus a directory's fdatasync) makes every file of the file system durable
    // there: only on local file systems known to do it. FUSE, ecryptfs, CIFS, 9p (no sync_fs
    // of their own), overlayfs (errors on the upper file unseen) and NFS (unstable writes) get
    // each file's own fdatasync, whatever the mode.
    static bool syncfs_reaches_storage(int dir) {
        struct statfs st {};
        if (::fstatfs(dir, &st) != 0) return false;
        switch (static_cast<unsigned long>(st.f_type)) {
            case 0xEF53UL:      // ext2, ext3, ext4
            case 0x58465342UL:  // xfs
            case 0x9123683EUL:  // btrfs
            case 0x01021994UL:  // tmpfs
                return true;
            default:
                return false;
        }
    }

    static result<void> own_sync(int fd) {
        if (::fdatasync(fd) != 0) return unexpected(last_system_error());
        return {};
    }

    // Runs a round for everything queued (the caller's own file among it), under `lock`,
    // which is released while a syncfs runs. A file round only hands the files out.
    void lead(std::unique_lock<std::mutex>& lock) {
        running_ = true;
        std::vector<member*> batch = std::exchange(queue_, {});
        const auto n = batch.size();
        // A file round: each member syncs its own file; the last to finish ends the round.
        auto hand_out = [&] {
            own_left_ = n;
            own_count_ = n;
            own_started_ = clock::now();
            for (auto* b : batch) b->state = member::own_turn;
            cv_.notify_all();
        };
        if (!use_syncfs(n)) return hand_out();
        lock.unlock();
        const auto started = clock::now();
        std::error_code ec;
        if (::syncfs(fs_dir_.get()) != 0)
            ec = last_system_error();
        else if (::fdatasync(fs_dir_.get()) != 0)  // the cache flush after syncfs's last write-out
            ec = last_system_error();
        const auto took = clock::now() - started;
        lock.lock();
        if (ec) {
            // NOTE: no syncfs here (seccomp, an old kernel), no fdatasync of a directory (a file
            // system that refuses it), or an error that may be another process's file's: each
            // file's own fdatasync tells its own, this round and from now on (a failing syncfs
            // must not turn into 451s for deliveries whose data is fine).
            syncfs_unusable_ = true;
            return hand_out();
        }
        note(true, took, n);
        for (auto* b : batch) b->state = member::covered;
        running_ = false;
        cv_.notify_all();
    }

    // Whether use_syncfs(n) says no only to try the file way again (adaptive, syncfs ahead).
    bool trying_files(std::size_t n) const {
        if (syncfs_unusable_ || mode_ != maildir_data_sync::adaptive || n < min_group_ || !syncfs_.measured()) return false;
        return !file_.measured() || syncfs_.per_file <= 4 * file_.per_file;
    }

    bool use_syncfs(std::size_t n) const {
        if (syncfs_unusable_) return false;
        if (mode_ == maildir_data_sync::syncfs) return true;
        if (n < min_group_) return false;
        if (!syncfs_.measured()) return true;  // the first group tries syncfs, the next one files
        // NOTE: syncfs is kept while its wall time per file is up to 4 times fdatasync's: it
        // cost less kernel CPU per message in smtpd (docs/benchmarks.md: a median of 722
        // against 1,057 µs), which a wall-time comparison does not see.
        const bool syncfs_better = !file_.measured() || syncfs_.per_file <= 4 * file_.per_file;
        const auto& other = syncfs_better ? file_ : syncfs_;
        const auto wait = std::max<clock::duration>(20 * other.round, std::chrono::seconds(1));
        const bool try_other = clock::now() - other.tried > wait;
        return syncfs_better != try_other;
    }

    // What a round of one kind took: its time per file (moving average) and its latest length.
    struct cost {
        double per_file = 0;          // seconds, exponentially weighted over the rounds, 0: none yet
        clock::duration round{};      // the latest round's length
        clock::time_point tried{};    // when the latest round ended
        bool measured() const { return per_file > 0; }
    };

    void note(bool was_syncfs, clock::duration took, std::size_t n) {
        // Rounds below min_group never compete with syncfs: their time per file says nothing
        // about a group's.
        if (!was_syncfs && n < min_group_) return;
        auto& c = was_syncfs ? syncfs_ : file_;
        const double per_file = std::chrono::duration<double>(took).count() / static_cast<double>(n);
        c.per_file = c.measured() ? 0.75 * c.per_file + 0.25 * per_file : std::max(per_file, 1e-9);
        c.round = took;
        c.tried = clock::now();
    }

    const unique_fd fs_dir_;  // a directory of the file system: syncfs and the flush go through it
    const maildir_data_sync mode_;
    const std::size_t min_group_;
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<member*> queue_;  // registered, waiting for the next round
    bool running_ = false;
    std::size_t own_left_ = 0;    // a file round: files not yet done
    std::size_t own_count_ = 0;
    clock::time_point own_started_{};
    bool syncfs_unusable_ = false;
    cost syncfs_, file_;
};

// The directory and file names a delivery needs; copied into each delivery so that it stays
// valid whatever happens to the store object.
struct delivery_config {
    std::string root;
    std::string host;  // escaped
    bool fsync = true;
    log_sink log;
    std::shared_ptr<event_hub> events;  // told of the message once it is durable everywhere
    std::uint64_t direct_io_from = 0;   // maildir_options::direct_io_from (0: never)
};

class maildir_delivery final : public delivery {
public:
    struct target {
        std::string mailbox;  // the name, as begin_delivery was given it (for the subscribers)
        std::string dir;  // root/<encoded>, its directories already durable (ensure_mailbox)
        std::shared_ptr<directory_sync> new_sync;  // dir/new, shared with the store; null: fsync off
    };

    // `data`: round one's group commit for the tmp/ file's file system (null: fsync off).
    maildir_delivery(delivery_config config, std::vector<target> targets, std::string prefix, std::string tmp_path,
                     int fd, std::shared_ptr<data_sync> data, std::shared_ptr<std::atomic<std::uint64_t>> counter,
                     std::string unique_tail)
        : config_(std::move(config)),
          targets_(std::move(targets)),
          prefix_(std::move(prefix)),
          tmp_path_(std::move(tmp_path)),
          fd_(fd),
          data_(std::move(data)),
          counter_(std::move(counter)),
          unique_tail_(std::move(unique_tail)) {}
    maildir_delivery(const maildir_delivery&) = delete;
    maildir_delivery& operator=(const maildir_delivery&) = delete;
    ~maildir_delivery() override { abort(); }

    result<void> write(std::string_view octets) override {
        if (done_ || ended_) return unexpected(errc::bad_input);
        if (write_error_) return unexpected(write_error_);
        const bool direct = direct_buf_ || (config_.direct_io_from > 0 && data_ &&
                                            stored_ + octets.size() > config_.direct_io_from);
        if (auto r = direct ? write_direct(octets) : write_all(fd_, octets); !r) {
            // A partial write leaves the file unknown: this delivery can only be aborted now.
            write_error_ = r.error();
            direct_buf_.reset();
            return r;
        }
        stored_ += octets.size();
        wire_.add(octets);
        base_name_.clear();
        // Whole pages only: the page the next write() appends to is not put under writeback
        // (where pages are kept stable while written, that write would wait for the device).
        const std::uint64_t whole = stored_ & ~std::uint64_t{4095};
        if (data_ && !direct_buf_ && whole - written_back_ >= writeback_step) {
            // A hint: its failure changes nothing (the commit's sync reports any error).
            (void)::sync_file_range(fd_, static_cast<off_t>(written_back_), static_cast<off_t>(whole - written_back_),
                                    SYNC_FILE_RANGE_WRITE);
            written_back_ = whole;
        }
        return {};
    }

    // The octets held back for a direct write are written (the last partial block through the
    // page cache) and the buffer let go of; commit() does it too.
    result<void> end_of_message() override {
        if (done_) return unexpected(errc::bad_input);
        if (write_error_) return unexpected(write_error_);
        ended_ = true;  // no write() from now on
        if (auto r = finish_direct(); !r) {
            write_error_ = r.error();
            return fail("write", tmp_path_, r.error());
        }
        return {};
    }

    result<void> commit() override {
        if (done_) return unexpected(errc::bad_input);
        auto r = end_of_message();
        if (r) r = commit_once();
        finish(r);
        return r;
    }

    std::string name() const override { return prefix_; }

    // commit_together(): round one for every file of the batch at once, then every link, then
    // round two once per new/ for all of them. Only for a batch of this store's deliveries on
    // one file system (one data_sync), none committed yet; anything else is committed alone.
    bool commit_batch(std::span<delivery* const> batch, std::span<result<void>> results) override {
        std::vector<maildir_delivery*> ds;
        ds.reserve(batch.size());
        for (delivery* b : batch) {
            auto* d = dynamic_cast<maildir_delivery*>(b);
            if (d == nullptr || d->done_ || d->data_ != data_ || d->config_.fsync != config_.fsync) return false;
            ds.push_back(d);
        }
        // Round one. A delivery whose write failed takes no part: it fails below.
        std::vector<int> fds;
        std::vector<std::size_t> of;  // fds[k] is ds[of[k]]'s
        for (std::size_t i = 0; i < ds.size(); ++i) {
            if (auto w = ds[i]->end_of_message(); !w) {
                results[i] = unexpected(w.error());
                continue;
            }
            fds.push_back(ds[i]->fd_);
            of.push_back(i);
        }
        if (data_) {
            auto synced = data_->sync_group(fds);
            for (std::size_t k = 0; k < fds.size(); ++k)
                if (!synced[k]) results[of[k]] = ds[of[k]]->fail("sync", ds[of[k]]->tmp_path_, synced[k].error());
        }
        // The links, each only after its file is durable.
        std::vector<std::vector<std::string>> made(ds.size());
        try {
            for (const std::size_t i : of)
                if (results[i]) results[i] = ds[i]->close_and_link(made[i]);
            // Round two: one fsync of each new/ covers every link made into it; the new/ of
            // several mailboxes are fsync'd in parallel (commit() calls of several pool threads
            // did so too).
            if (config_.fsync) {
                std::map<directory_sync*, std::vector<std::pair<std::size_t, std::size_t>>> by_dir;  // (delivery, target)
                for (std::size_t i = 0; i < ds.size(); ++i)
                    if (results[i])
                        for (std::size_t t = 0; t < made[i].size(); ++t) by_dir[ds[i]->targets_[t].new_sync.get()].emplace_back(i, t);
                std::vector<std::vector<directory_sync::link>> links(ds.size());
                for (std::size_t i = 0; i < ds.size(); ++i)
                    for (const auto& m : made[i]) links[i].push_back({m});
                std::vector<std::pair<directory_sync*, std::vector<directory_sync::link*>>> dirs;
                for (auto& [dir, members] : by_dir) {
                    std::vector<directory_sync::link*> ls;
                    for (const auto& [i, t] : members) ls.push_back(&links[i][t]);
                    dirs.emplace_back(dir, std::move(ls));
                }
                std::vector<result<void>> synced(dirs.size());
                in_parallel(dirs.size(), [&](std::size_t k) { synced[k] = dirs[k].first->sync(dirs[k].second); });
                std::vector<std::size_t> gone(ds.size(), std::string::npos);  // as commit_once's `i`
                std::size_t k = 0;
                for (auto& [dir, members] : by_dir) {
                    const auto& r = synced[k++];
                    if (r) continue;
                    for (const auto& [i, t] : members) {
                        if (!results[i]) continue;  // failed in another new/ already
                        results[i] = ds[i]->fail("fsync", ds[i]->targets_[t].dir + "/new", r.error());
                        gone[i] = links[i][t].removed ? t : std::string::npos;
                    }
                }
                for (std::size_t i = 0; i < ds.size(); ++i) {
                    if (results[i] || made[i].empty()) continue;
                    ds[i]->remove_all(made[i], gone[i]);
                    ds[i]->withdraw();
                }
            }
        } catch (...) {
            // NOTE: an allocation failed after links were made: none of the batch is reported
            // delivered (the caller fails them all), so every link goes again, or a client's
            // retry would find its first copy visible.
            for (std::size_t i = 0; i < ds.size(); ++i) {
                if (made[i].empty()) continue;
                ds[i]->remove_all(made[i]);
                ds[i]->withdraw();
            }
            throw;
        }
        for (std::size_t i = 0; i < ds.size(); ++i) ds[i]->finish(results[i]);
        return true;
    }

    // A copied message keeps its UIDL as its base name when that can be one (the UIDL of a
    // Maildir message is its base name): not "." first (a hidden file), no '/' or ':' (the
    // info part). Seen flags are not kept here (the message goes to new/).
    bool keep(std::string_view uidl, bool /*seen*/) override {
        if (done_ || !own_uidl(uidl) || uidl.front() == '.' || uidl.find_first_of("/:") != std::string_view::npos) return false;
        kept_name_ = uidl;
        return true;
    }

    void abort() noexcept override {
        direct_buf_.reset();
        direct_len_ = 0;
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
        if (!tmp_path_.empty()) {
            ::unlink(tmp_path_.c_str());
            tmp_path_.clear();
        }
        done_ = true;
    }

private:
    // The end of a commit, alone or in a batch: the descriptor closed and the tmp/ name
    // removed, delivered or not; the subscribers told of a delivery.
    void finish(const result<void>& r) {
        abort();
        done_ = true;
        if (r && config_.events) {
            // Also without subscribers: it ends link_everywhere's expect().
            const std::string id = final_base_name();  // the id snapshot() gives: the base name
            for (const auto& t : targets_)
                config_.events->publish({store_event::kind::delivered, t.mailbox, id, wire_.octets(), 0});
        }
    }

    // Delivery step two, once the file is durable in tmp/: closed, linked into every target's
    // new/ (`made`: the links).
    result<void> close_and_link(std::vector<std::string>& made) {
        const int fd = std::exchange(fd_, -1);
        if (::close(fd) != 0) return fail("close", tmp_path_, last_system_error());
        result<void> r = expect_and_link(made);
        for (int attempt = 0; !r && r.error() == std::errc::file_exists && kept_name_.empty() && attempt < 8; ++attempt) {
            // A name already taken (another store object in this process with the same
            // counter and a coarse clock): link() never replaces, so take a fresh Q value.
            prefix_ = unique_tail_ + std::to_string(counter_->fetch_add(1));
            base_name_.clear();
            r = expect_and_link(made);
        }
        return r;
    }

    // Round one (data_sync: the file durable in tmp/, shared with the deliveries of the same
    // moment on its file system), the links into every target's new/, round two (each new/
    // fsync'd, shared as well: directory_sync); only then does commit() return.
    result<void> commit_once() {
        // Delivery step one (maildir(5)): the file is complete and durable in tmp/.
        if (data_) {
            if (auto d = data_->sync(fd_); !d) return fail("sync", tmp_path_, d.error());
        }
        std::vector<std::string> made;
        if (auto r = close_and_link(made); !r) return r;

        if (config_.fsync) {
            // Only new/ here: a mailbox this delivery made was fsync'd by ensure_mailbox. The
            // fsync is shared with concurrent deliveries into the same new/ (group commit);
            // the file's own fsync above cannot be.
            for (std::size_t i = 0; i < targets_.size(); ++i) {
                directory_sync::link l{made[i]};
                auto s = targets_[i].new_sync->sync(&l);
                if (!s) {
                    auto failed = fail("fsync", targets_[i].dir + "/new", s.error());  // logged before the removal's own
                    remove_all(made, l.removed ? i : std::string::npos);
                    withdraw();
                    return failed;
                }
            }
        }
        return {};
    }

    // Links the tmp/ file into every target's new/ under one final name; on failure removes
    // the links already made, so a retry never delivers twice. `made` is left empty then.
    // link_everywhere, told to the subscribers first: a POP3 session may delete the message
    // once it is visible, before commit() publishes its delivery (event_hub::expect).
    result<void> expect_and_link(std::vector<std::string>& made) {
        if (config_.events)
            for (const auto& t : targets_) config_.events->expect(t.mailbox, final_base_name());
        auto r = link_everywhere(made);
        if (!r) withdraw();
        return r;
    }
    void withdraw() const {
        if (config_.events)
            for (const auto& t : targets_) config_.events->withdraw(t.mailbox, final_base_name());
    }

    result<void> link_everywhere(std::vector<std::string>& made) {
        const std::string& base = final_base_name();
        const std::string first = targets_.front().dir + "/new/" + base;
        // link(), not rename(): it never replaces an existing file, and the tmp/ name is
        // dropped in abort() after the message is visible everywhere.
        if (::link(tmp_path_.c_str(), first.c_str()) != 0) {
            const int e = errno;
            if (e == EEXIST) return unexpected(sys_error(e));
            if (e != EPERM && e != ENOTSUP && e != EOPNOTSUPP) return fail("link", first, sys_error(e));
            // NOTE: a file system without hard links: rename, then the unique name is all
            // that keeps an existing file from being replaced.
            if (::rename(tmp_path_.c_str(), first.c_str()) != 0) return fail("rename", first, last_system_error());
            tmp_path_.clear();
        }
        made.push_back(first);
        // The other targets link the tmp/ name, never the first target's new/ one: a POP3
        // session may already have deleted that or moved it to cur/ (only after a rename
        // fallback is `first` the one name left).
        const std::string& source = tmp_path_.empty() ? first : tmp_path_;
        for (std::size_t i = 1; i < targets_.size(); ++i) {
            const std::string path = targets_[i].dir + "/new/" + base;
            result<void> r;
            if (::link(source.c_str(), path.c_str()) != 0) {
                const int e = errno;
                if (e == EXDEV || e == EPERM || e == ENOTSUP || e == EOPNOTSUPP || e == EMLINK)
                    r = copy_into(source, targets_[i].dir, base);
                else
                    r = unexpected(sys_error(e));
            }
            if (!r) {
                if (r.error() != std::errc::file_exists) r = fail("link", path, r.error());
                remove_all(made);
                return r;
            }
            made.push_back(path);
        }
        return {};
    }

    // The fallback when a hard link cannot be made: a copy through the target's tmp/.
    // A copy a POP3 session moved to cur/ (seen, `<base>:2,S`) before the delivery failed: the
    // 451 must leave nothing a retry would duplicate (DESIGN.md "On disk": delivery).
    void remove_from_cur(const std::string& dir) const {
        const std::string cur = dir + "/cur", prefix = final_base_name() + ":";
        std::error_code ec;
        bool removed = false;
        for (std::filesystem::directory_iterator it(cur, ec), end; !ec && it != end; it.increment(ec)) {
            const std::string name = it->path().filename().string();
            if (name.compare(0, prefix.size(), prefix) == 0 && ::unlink(it->path().c_str()) == 0) removed = true;
        }
        if (removed && config_.fsync)
            if (auto s = fsync_dir(cur); !s) (void)fail("fsync after removing a link from", cur, s.error());
    }

    result<void> copy_into(const std::string& from, const std::string& dir, const std::string& base) {
        unique_fd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
        if (in.get() < 0) return unexpected(last_system_error());
        const std::string tmp = dir + "/tmp/" + base;
        unique_fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (out.get() < 0) return unexpected(last_system_error());
        auto cleanup = [&](std::error_code ec) -> result<void> {
            ::unlink(tmp.c_str());
            return unexpected(ec);
        };
        std::array<char, 64 * 1024> buf{};
        for (;;) {
            const ssize_t n = ::read(in.get(), buf.data(), buf.size());
            if (n < 0) {
                if (errno == EINTR) continue;
                return cleanup(last_system_error());
            }
            if (n == 0) break;
            if (auto w = write_all(out.get(), {buf.data(), static_cast<std::size_t>(n)}); !w) return cleanup(w.error());
        }
        if (config_.fsync && ::fsync(out.get()) != 0) return cleanup(last_system_error());
        const std::string dest = dir + "/new/" + base;
        if (::link(tmp.c_str(), dest.c_str()) != 0) return cleanup(last_system_error());
        ::unlink(tmp.c_str());
        return {};
    }

    // Removes the links already made (made[i] is in targets_[i]'s new/, as link_everywhere
    // makes them), so a retry never delivers twice, and makes the removal durable: a concurrent
    // delivery's fsync of that new/ may already have written a link out, and after a crash it
    // would be back. The fsync is the new/'s shared one (group commit), as for the links.
    // `gone`: the index of a link its failed fsync round already removed and covered.
    void remove_all(std::vector<std::string>& made, std::size_t gone = std::string::npos) const {
        assert(made.size() <= targets_.size());
        for (std::size_t i = 0; i < made.size(); ++i)
            if (i != gone && ::unlink(made[i].c_str()) != 0 && errno == ENOENT) remove_from_cur(targets_[i].dir);
        if (config_.fsync) {
            for (std::size_t i = 0; i < made.size(); ++i) {
                if (i == gone) continue;
                if (auto s = targets_[i].new_sync->sync(); !s)
                    (void)fail("fsync after removing a link from", targets_[i].dir + "/new", s.error());
            }
        }
        made.clear();
    }

    // "<prefix>.<host>,S=<stored>,W=<wire>", the host shortened to keep it within 70 octets;
    // or the name keep() was given. Made once and kept (a commit asks for it three or four
    // times) until what it is made of changes: a write, a new prefix_.
    const std::string& final_base_name() const {
        if (!kept_name_.empty()) return kept_name_;
        if (base_name_.empty()) {
            const std::string sizes = ",S=" + std::to_string(stored_) + ",W=" + std::to_string(wire_.octets());
            const std::size_t fixed = prefix_.size() + 1 + sizes.size();
            const std::size_t budget = fixed < max_base_name ? max_base_name - fixed : 0;
            base_name_ = prefix_ + "." + truncate_host(config_.host, budget) + sizes;
        }
        return base_name_;
    }

    // write() past direct_io_from: the octets go into the delivery's aligned buffer, written
    // with O_DIRECT whenever it is full. The file offset first reaches a block boundary through
    // the page cache. A file system or descriptor that takes no O_DIRECT: the page cache.
    result<void> write_direct(std::string_view octets) {
        if (!direct_buf_) {
            // Up to direct_io_from, then to the next block boundary, through the page cache.
            const std::uint64_t from = std::max<std::uint64_t>(stored_, config_.direct_io_from);
            const std::uint64_t boundary = (from + direct_align - 1) / direct_align * direct_align;
            const std::size_t head = static_cast<std::size_t>(std::min<std::uint64_t>(octets.size(), boundary - stored_));
            if (auto r = write_all(fd_, octets.substr(0, head)); !r) return r;
            octets.remove_prefix(head);
            if (octets.empty()) return {};
            if (!start_direct()) {
                config_.direct_io_from = 0;  // this delivery's own copy
                return write_all(fd_, octets);
            }
        }
        while (!octets.empty()) {
            const std::size_t n = std::min(octets.size(), direct_block - direct_len_);
            std::memcpy(direct_buf_.get() + direct_len_, octets.data(), n);
            direct_len_ += n;
            octets.remove_prefix(n);
            if (direct_len_ == direct_block) {
                if (auto r = write_out(direct_block); !r) return r;
                direct_len_ = 0;
            }
        }
        return {};
    }

    bool start_direct() {
        // Only where O_DIRECT bypasses the page cache and the data round covers what it wrote:
        // ext4 (ext2/3 too) and xfs. Elsewhere it may be taken and cached all the same (tmpfs),
        // or be another path of the file system's own (btrfs, ZFS, network file systems).
        struct statfs fs{};
        if (::fstatfs(fd_, &fs) != 0 || (fs.f_type != 0xEF53 && fs.f_type != 0x58465342)) return false;
        void* p = nullptr;
        if (::posix_memalign(&p, direct_align, direct_block) != 0) return false;
        direct_buf_.reset(static_cast<char*>(p));
        const int flags = ::fcntl(fd_, F_GETFL);
        if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_DIRECT) != 0) {
            direct_buf_.reset();
            return false;
        }
        direct_on_ = true;
        return true;
    }

    // Writes the buffer's first n octets (a multiple of direct_align unless the page cache is
    // in use already); on EINVAL (an alignment the device asks for beyond direct_align) the
    // descriptor leaves O_DIRECT and they go through the page cache, as the rest will.
    result<void> write_out(std::size_t n) {
        std::string_view rest(direct_buf_.get(), n);
        while (!rest.empty()) {
            const ssize_t w = ::write(fd_, rest.data(), rest.size());
            if (w >= 0) {
                rest.remove_prefix(static_cast<std::size_t>(w));
                continue;
            }
            if (errno == EINTR) continue;
            if (errno != EINVAL || !direct_on_) return unexpected(last_system_error());
            if (auto r = leave_direct(); !r) return r;
        }
        return {};
    }

    result<void> leave_direct() {
        const int flags = ::fcntl(fd_, F_GETFL);
        if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT) != 0) return unexpected(last_system_error());
        direct_on_ = false;
        return {};
    }

    // The buffer's whole blocks written directly, the partial one through the page cache; the
    // buffer let go of. Nothing to do for a delivery that never wrote directly.
    result<void> finish_direct() {
        if (!direct_buf_) return {};
        const std::size_t whole = direct_len_ / direct_align * direct_align;
        result<void> r = whole > 0 ? write_out(whole) : result<void>{};
        if (r && direct_on_) r = leave_direct();
        if (r) r = write_all(fd_, {direct_buf_.get() + whole, direct_len_ - whole});
        direct_buf_.reset();
        direct_len_ = 0;
        return r;
    }

    result<void> fail(const char* what, const std::string& path, std::error_code ec) const {
        if (config_.log)
            config_.log(log_level::warning,
                        log_text(std::string("maildir delivery: ") + what + " " + path + ": " + ec.message(), 1024));
        return unexpected(ec);
    }

    delivery_config config_;
    std::vector<target> targets_;
    std::string prefix_;  // "<secs>.M<usecs>P<pid>Q<n>"
    std::string kept_name_;  // keep(): the base name to use instead of prefix_'s
    mutable std::string base_name_;  // final_base_name() as last made; empty: to be made
    std::string tmp_path_;
    int fd_;
    std::shared_ptr<data_sync> data_;
    std::shared_ptr<std::atomic<std::uint64_t>> counter_;
    std::string unique_tail_;  // prefix_ without the Q number
    std::uint64_t stored_ = 0;
    std::uint64_t written_back_ = 0;  // octets whose writeback write() started (writeback_step)
    struct free_deleter {
        void operator()(char* p) const noexcept { std::free(p); }
    };
    std::unique_ptr<char, free_deleter> direct_buf_;  // write_direct(): aligned, direct_block octets
    std::size_t direct_len_ = 0;  // octets in direct_buf_ not yet written
    bool direct_on_ = false;      // fd_ has O_DIRECT (while direct_buf_ is set)
    bool ended_ = false;          // end_of_message() was called: no more write()
    wire_size_counter wire_;  // octets with CRLF line ends (,W=)
    bool done_ = false;
    std::error_code write_error_;
};

// A file made in a mailbox's tmp/ for one delivery (open_tmp). Removed again by its destructor
// unless a delivery took its descriptor.
struct tmp_file {
    std::string dir;     // the mailbox's directory
    std::string prefix;  // the unique part of its name (maildir_delivery's prefix)
    std::string tail;    // time, pid and "Q": the start of a fresh name (after one taken at the link)
    std::string path;    // dir/tmp/<prefix>.<host>
    unique_fd fd;
    std::shared_ptr<data_sync> data;  // round one for its file system; null: fsync off
    std::chrono::steady_clock::time_point made{};  // a spare's (prepare_delivery)
    tmp_file() = default;
    tmp_file(tmp_file&&) noexcept = default;
    tmp_file& operator=(tmp_file&& o) noexcept {
        if (this != &o) {
            remove();
            dir = std::move(o.dir);
            prefix = std::move(o.prefix);
            tail = std::move(o.tail);
            path = std::move(o.path);
            fd = std::move(o.fd);
            data = std::move(o.data);
            made = o.made;
        }
        return *this;
    }
    ~tmp_file() { remove(); }
    // Whether `path` still names this file (nothing removed or replaced it); its size in `size`.
    bool still_named(off_t* size = nullptr) const noexcept {
        struct stat own{};
        struct stat named{};
        if (fd.get() < 0 || path.empty() || ::fstat(fd.get(), &own) != 0 || ::lstat(path.c_str(), &named) != 0) return false;
        if (size) *size = own.st_size;
        return own.st_ino == named.st_ino && own.st_dev == named.st_dev;
    }
    // The file removed, if this still holds it (a moved-from one holds nothing) and its name
    // is still this file's: another file put there under that name is left alone.
    void remove() noexcept {
        if (still_named()) ::unlink(path.c_str());
        fd.reset();
    }
};

class maildir_store final : public store {
public:
    // folder: `root` is itself the one Maildir, whatever the mailbox name (open_maildir_folder).
    maildir_store(maildir_options options, std::string root, std::string host, bool folder)
        : options_(std::move(options)), root_(std::move(root)), host_(std::move(host)), folder_(folder) {}
    maildir_store(const maildir_store&) = delete;
    maildir_store& operator=(const maildir_store&) = delete;
    ~maildir_store() override {
        {
            std::lock_guard guard(spares_mutex_);
            opener_stop_ = true;
        }
        opener_cv_.notify_one();
        if (opener_.joinable()) opener_.join();
        spares_.clear();  // their files removed
        for (auto& [name, fd] : locks_)
            if (fd >= 0) ::close(fd);
    }

    result<void> lock(std::string_view mailbox) override {
        if (mailbox.empty()) return unexpected(errc::bad_input);
        const std::string enc = encode_mailbox_name(mailbox);
        std::lock_guard guard(mutex_);
        // The table answers for sessions of this process; flock for the other processes. A
        // second flock from this process (another descriptor) would also fail, but the table
        // says so without touching the disk.
        if (locks_.contains(enc)) return unexpected(errc::mailbox_in_use);
        // A session starts from its own scan: sizes a former one's rescans kept are not its.
        caches_.erase(enc);
        const std::string path = dir_of(enc) + "/" + lock_file_name;
        auto dirs = open_dirs(enc);
        if (!dirs) {
            log(log_level::warning, "maildir: cannot use mailbox " + dir_of(enc) + ": " + dirs.error().message());
            return unexpected(dirs.error());
        }
        if (dirs->box.get() >= 0) {
            auto file = open_regular(dirs->box.get(), lock_file_name, O_RDWR | O_CREAT, 0600);
            if (!file) {
                log(log_level::warning, "maildir: cannot use lock file " + path + ": " + file.error().message());
                return unexpected(file.error());
            }
            unique_fd fd = std::move(file->fd);
            while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
                if (errno == EINTR) continue;
                if (errno == EWOULDBLOCK) return unexpected(errc::mailbox_in_use);
                return unexpected(last_system_error());
            }
            // The descriptor stays open until unlock(); the kernel releases the lock if we die.
            locks_.emplace(enc, fd.release());
            return {};
        }
        {
            // No mailbox directory. lock() never
            // creates a mailbox (DESIGN.md: delivery does), or every login of open mode would
            // leave a directory behind: the in-process table alone holds this lock, and the
            // session's snapshot is empty (see snapshot()).
            locks_.emplace(enc, -1);
            return {};
        }
    }

    void unlock(std::string_view mailbox) noexcept override {
        const std::string enc = encode_mailbox_name(mailbox);
        std::lock_guard guard(mutex_);
        if (auto it = locks_.find(enc); it != locks_.end()) {
            if (it->second >= 0) ::close(it->second);
            locks_.erase(it);
        }
        caches_.erase(enc);
    }

    result<std::vector<message_info>> snapshot(std::string_view mailbox) override { return list(mailbox, true); }
    result<std::vector<message_info>> contents(std::string_view mailbox) override { return list(mailbox, false); }

    // as_session: snapshot()'s view for this process's session of a locked mailbox.
    result<std::vector<message_info>> list(std::string_view mailbox, bool as_session) {
        if (mailbox.empty()) return unexpected(errc::bad_input);
        const std::string enc = encode_mailbox_name(mailbox);
        if (as_session) {
            std::lock_guard guard(mutex_);
            // A mailbox that was missing at lock() has no flock: a message delivered since
            // could belong to another process's session, so this session sees none.
            if (auto it = locks_.find(enc); it != locks_.end() && it->second < 0) return std::vector<message_info>{};
        }
        auto dirs = open_dirs(enc);
        if (!dirs) {
            log(log_level::warning, "maildir: cannot use mailbox " + dir_of(enc) + ": " + dirs.error().message());
            return unexpected(dirs.error());
        }
        auto files = scan(*dirs, enc);
        if (!files) return unexpected(files.error());

        // Sorted through keys and indexes (40 octets a message), each message then built once
        // in its place: the peak holds the scan's list, the keys and the snapshot, no more.
        struct order {
            delivery_key key;
            std::uint64_t octets;
            std::size_t index;
        };
        auto& found = files->files;
        std::vector<order> keys;
        keys.reserve(found.size());
        for (std::size_t i = 0; i < found.size(); ++i) {
            const auto& f = found[i];
            const int sub = f.in_cur ? dirs->cur_dir.get() : dirs->new_dir.get();
            delivery_key key;
            if (auto t = delivery_time(f.base))
                key = *t;
            else
                key.secs = f.mtime > 0 ? static_cast<std::uint64_t>(f.mtime) : 0;
            std::uint64_t octets = 0;
            if (auto w = name_field(f.base, ",W=")) {
                octets = *w;
            } else {
                // NOTE: no ,W= (mutt, foreign tools): the file is read to count its lines on
                // every snapshot; nothing is cached on disk, so the Maildir stays untouched.
                const std::string name = file_name(f.base, files->infos[f.info]);
                auto n = wire_size_of_file(sub, name.c_str());
                if (!n) {
                    if (n.error() == std::errc::no_such_file_or_directory) continue;
                    return unexpected(n.error());
                }
                octets = *n;
            }
            keys.push_back({key, octets, i});
        }
        std::sort(keys.begin(), keys.end(), [&](const order& a, const order& b) {
            return std::tie(a.key.secs, a.key.usecs, a.key.counter, found[a.index].base) <
                   std::tie(b.key.secs, b.key.usecs, b.key.counter, found[b.index].base);
        });
        std::vector<message_info> out;
        out.reserve(keys.size());
        for (const auto& k : keys) {
            auto& f = found[k.index];
            const std::string& info = files->infos[f.info];
            const bool seen = info.starts_with("2,") && info.find('S', 2) != std::string::npos;
            // An id that is its own UIDL leaves `uidl` empty: one string per message, not two.
            std::string uidl = own_uidl(f.base) ? std::string() : uidl_for_id(f.base);
            out.push_back({std::move(f.base), k.octets, std::move(uidl), seen});
        }
        return out;
    }

    result<message> open(std::string_view mailbox, std::string_view id) override {
        if (mailbox.empty()) return unexpected(errc::bad_input);
        const std::string enc = encode_mailbox_name(mailbox);
        // The directories the session's scan opened; opened again only without a scan.
        std::shared_ptr<const box_dirs> dirs;
        {
            std::lock_guard guard(mutex_);
            if (auto it = caches_.find(enc); it != caches_.end()) dirs = it->second.dirs;
        }
        if (!dirs) {
            auto opened = open_dirs(enc);
            if (!opened) {
                log(log_level::warning, "maildir: cannot use mailbox " + dir_of(enc) + ": " + opened.error().message());
                return unexpected(opened.error());
            }
            dirs = std::make_shared<const box_dirs>(std::move(*opened));
        }
        if (dirs->new_dir.get() < 0 && dirs->cur_dir.get() < 0) return unexpected(errc::not_found);
        std::error_code last = make_error_code(errc::not_found);
        for (int attempt = 0; attempt < 3; ++attempt) {
            if (attempt > 0) {
                // Moved meanwhile: look again in directories opened now (a cur/ made since the
                // scan, say), not in the ones the scan kept.
                auto fresh = open_dirs(enc);
                if (!fresh) return unexpected(fresh.error());
                dirs = std::make_shared<const box_dirs>(std::move(*fresh));
            }
            auto rel = attempt == 0 ? cached_path(enc, id) : rescan_for(*dirs, enc, id);
            if (!rel && attempt == 0) {
                // Not in the last scan: a message just delivered is in new/ under its id, and is
                // opened so without reading the whole directory again (mailnetd's index reads
                // each delivery's head; a rescan of a 100,000-message mailbox took 80 ms).
                if (auto fresh = open_in_new(*dirs, enc, id)) return std::move(*fresh);
                continue;
            }
            if (!rel) return unexpected(errc::not_found);
            auto file = open_regular(dirs->sub(rel->rel), rel->rel.c_str() + 4, O_RDONLY);
            if (!file) {
                last = file.error();
                // renamed (new/ -> cur/, flags) or deleted meanwhile
                if (last == std::errc::no_such_file_or_directory) continue;
                log(log_level::warning, "maildir: cannot open " + dir_of(enc) + "/" + rel->rel + ": " + last.message());
                return unexpected(last);
            }
            // The snapshot announced a size derived from this one (S= beside W= in the name,
            // else what the scan saw): a file that shrank or grew since, or whose S= lies, would
            // be sent short (with a final dot) or past the announced count: an error here.
            const std::uint64_t expected = rel->size;
            if (file->size != expected) {
                log(log_level::warning, "maildir: " + dir_of(enc) + "/" + rel->rel + " has " + std::to_string(file->size) +
                                            " octets, the snapshot expected " + std::to_string(expected));
                return unexpected(errc::io_error);
            }
            return message(file_source(file->fd.release()), file->size);
        }
        return unexpected(errc::not_found);
    }

    std::vector<std::error_code> commit(std::string_view mailbox, std::span<const std::string> deleted,
                                        std::span<const std::string> seen) override {
        std::vector<std::error_code> out(deleted.size());
        if (mailbox.empty()) {
            std::fill(out.begin(), out.end(), make_error_code(errc::bad_input));
            return out;
        }
        const std::string enc = encode_mailbox_name(mailbox);
        const std::string dir = dir_of(enc) + "/";
        auto dirs = open_dirs(enc);
        if (!dirs) {
            log(log_level::warning, "maildir: cannot use mailbox " + dir + ": " + dirs.error().message());
            std::fill(out.begin(), out.end(), dirs.error());
            return out;
        }
        if (dirs->box.get() < 0) return out;  // no mailbox: every deletion is already true
        std::vector<std::string> gone;  // told to the subscribers: what this commit removed
        for (std::size_t i = 0; i < deleted.size(); ++i) {
            out[i] = on_current_path(*dirs, enc, deleted[i], [&](const std::string& rel) {
                return ::unlinkat(dirs->sub(rel), rel.c_str() + 4, 0) == 0 ? 0 : errno;
            });
            if (!out[i]) gone.push_back(deleted[i]);
            // NOTE: ENOENT (the file is in neither new/ nor cur/) counts as success: someone
            // else deleted it, and the goal of the deletion is met.
            if (out[i] == std::errc::no_such_file_or_directory) out[i].clear();
            if (out[i]) log(log_level::warning, "maildir: cannot delete " + dir + deleted[i] + ": " + out[i].message());
        }
        const std::set<std::string_view> doomed(deleted.begin(), deleted.end());
        if (dirs->cur_dir.get() < 0 && std::any_of(seen.begin(), seen.end(), [&](const std::string& id) {
                return !doomed.contains(id);
            })) {
            // A mailbox made by hand with new/ only (a Maildir has cur/ too): cur/ is made,
            // as Dovecot does, so what was read moves there instead of a warning per message.
            // Made durable with the mailbox directory's fsync when the store is.
            if (::mkdirat(dirs->box.get(), "cur", 0700) == 0 || errno == EEXIST) {
                if (options_.fsync) (void)::fsync(dirs->box.get());  // NOTE: a lost cur/ is made again next time
                dirs->cur_dir = unique_fd(::openat(dirs->box.get(), "cur", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            }
        }
        for (const auto& id : seen) {
            if (doomed.contains(id)) continue;
            std::string moved_to;
            auto ec = on_current_path(*dirs, enc, id, [&](const std::string& rel) {
                const std::string_view name = std::string_view(rel).substr(4);  // after "new/" or "cur/"
                const std::size_t colon = name.find(':');
                const std::string_view info = colon == std::string_view::npos ? "" : name.substr(colon + 1);
                const std::string target =
                    "cur/" + std::string(name.substr(0, colon)) + ":" + info_with_flag(info, 'S');
                if (target == rel) return 0;
                if (dirs->cur_dir.get() < 0) return ENOENT;
                if (const int e = rename_noreplace(dirs->sub(rel), name.data(), dirs->cur_dir.get(), target.c_str() + 4))
                    return e;  // EEXIST: another file has that name (two files of one base name): not replaced
                moved_to = target;
                return 0;
            });
            if (ec) {
                log(log_level::warning, "maildir: cannot mark " + dir + id + " seen: " + ec.message());
            } else if (!moved_to.empty()) {
                std::lock_guard guard(mutex_);
                if (auto it = caches_.find(enc); it != caches_.end()) {
                    const std::string info = moved_to.substr(moved_to.find(':') + 1);
                    auto& infos = it->second.infos;
                    auto known = std::find(infos.begin(), infos.end(), info);
                    if (known == infos.end()) known = infos.insert(infos.end(), info);
                    const auto index = static_cast<std::uint32_t>(known - infos.begin());
                    const std::uint64_t h = hash_of(id);
                    auto& entries = it->second.entries;
                    auto e = std::lower_bound(entries.begin(), entries.end(), h,
                                              [](const scan_cache::entry& x, std::uint64_t v) { return x.hash < v; });
                    for (; e != entries.end() && e->hash == h; ++e) {
                        e->info = index;
                        e->in_cur = true;
                    }
                }
            }
        }
        tell_deleted(mailbox, gone);
        return out;
    }

    result<std::unique_ptr<delivery>> begin_delivery(std::span<const std::string> mailboxes) override {
        return begin_delivery(mailboxes, true);
    }

    // `trust_known`: a mailbox this store already made or checked (ensured_) is taken as it is
    // if its new/ and cur/ are still directories: two lstat instead of ensure_mailbox's three
    // mkdir and four lstat per delivery. If its tmp/ is gone after all, the delivery begins again with
    // every mailbox checked.
    result<std::unique_ptr<delivery>> begin_delivery(std::span<const std::string> mailboxes, bool trust_known) {
        if (mailboxes.empty()) return unexpected(errc::bad_input);
        for (const auto& m : mailboxes)
            if (m.empty()) return unexpected(errc::bad_input);  // before any directory is made
        std::vector<maildir_delivery::target> targets;
        std::vector<std::string> seen_enc;
        for (const auto& m : mailboxes) {
            std::string enc = encode_mailbox_name(m);
            // The same mailbox named twice receives the message once.
            if (std::find(seen_enc.begin(), seen_enc.end(), enc) != seen_enc.end()) continue;
            if (!(trust_known && still_there(enc))) {
                auto made = ensure_mailbox(enc, m);
                if (!made) {
                    log(log_level::warning, "maildir: cannot create mailbox " + dir_of(enc) + ": " +
                                                made.error().message());
                    return unexpected(made.error());
                }
                remember_ensured(enc);
            }
            std::string dir = dir_of(enc);
            auto sync = options_.fsync ? sync_of(dir + "/new") : nullptr;
            targets.push_back({m, std::move(dir), std::move(sync)});
            seen_enc.push_back(std::move(enc));
        }

        // A tmp/ file made ahead for the first target (prepare_delivery), else a new one. The
        // retry below (trust_known false) is the same delivery: it is not counted again.
        std::optional<tmp_file> file = take_spare(targets.front().dir, trust_known);
        if (!file) {
            auto made = open_tmp(targets.front().dir);
            if (!made) {
                if (made.error() == std::errc::no_such_file_or_directory && trust_known) {
                    // A mailbox taken as known lost its tmp/ (or more) behind our back.
                    forget_ensured(seen_enc);
                    return begin_delivery(mailboxes, false);
                }
                log(log_level::warning, "maildir: cannot create a file in " + targets.front().dir + "/tmp: " +
                                            made.error().message());
                return unexpected(made.error());
            }
            file = std::move(*made);
        }
        delivery_config config{root_, host_, options_.fsync, options_.log, events(), options_.direct_io_from};
        auto data = std::move(file->data);
        return std::unique_ptr<delivery>(std::make_unique<maildir_delivery>(
            std::move(config), std::move(targets), std::move(file->prefix), std::move(file->path), file->fd.release(),
            std::move(data), counter_, std::move(file->tail)));
    }

    // A hint (store::prepare_delivery): a mailbox hinted again within spare_hot_ is busy, and
    // the opener thread keeps as many files made ahead for it as deliveries began there since
    // the hint before, and one more, at most max_spares_per_box. Cheap: a lookup under a lock,
    // no disk work.
    void prepare_delivery(std::span<const std::string> mailboxes) override {
        if (mailboxes.empty() || mailboxes.front().empty() || max_spares_ == 0) return;
        const std::string enc = encode_mailbox_name(mailboxes.front());
        {
            std::lock_guard guard(syncs_mutex_);
            if (!ensured_.contains(enc)) return;  // made and checked by a delivery first
        }
        const std::string dir = dir_of(enc);
        const auto now = std::chrono::steady_clock::now();
        std::lock_guard guard(spares_mutex_);
        if (opener_stop_) return;
        if (hints_.size() >= max_hints && !hints_.contains(dir)) {
            // Bounded: the mailboxes quiet for a while, and with no file made ahead, go first;
            // all of them if none is (their files then expire unused).
            std::erase_if(hints_, [&](const auto& e) { return e.second.have == 0 && now - e.second.last > spare_max_age_; });
            if (hints_.size() >= max_hints) {
                hints_.clear();
                for (auto& f : spares_) f.made = {};  // expire: no hint counts them now
            }
        }
        auto& h = hints_[dir];
        const bool hot = h.last != std::chrono::steady_clock::time_point{} && now - h.last < spare_hot_;
        h.last = now;
        h.want = hot ? std::clamp<std::size_t>(h.taken + 1, 1, max_spares_per_box) : 0;
        h.taken = 0;
        if (h.want <= h.have) return;
        if (!opener_.joinable()) {
            try {
                opener_ = std::thread([this] { open_ahead(); });
            } catch (...) {  // no thread: no files made ahead
                h.want = 0;
                return;
            }
        }
        opener_cv_.notify_one();
    }

    // The opener thread (from the first busy mailbox on): makes the files the hints want, one
    // at a time, and removes those that waited past spare_max_age_ (it wakes for that too).
    // Nothing it meets ends the process: a failure (no memory, no descriptor) pauses it.
    void open_ahead() {
        std::unique_lock lock(spares_mutex_);
        while (!opener_stop_) {
            std::chrono::milliseconds pause{0};
            try {
                pause = open_one(lock);
            } catch (...) {
                pause = std::chrono::seconds(1);
            }
            if (!lock.owns_lock()) lock.lock();
            if (pause.count() > 0 && !opener_stop_) opener_cv_.wait_for(lock, pause);
        }
    }

    // One step of the opener, with `lock` (spares_mutex_) held on entry and on return: removes
    // the expired files, makes one file for the busy mailbox that has the fewest, or says how
    // long to wait (zero: go on at once).
    std::chrono::milliseconds open_one(std::unique_lock<std::mutex>& lock) {
        const auto now = std::chrono::steady_clock::now();
        std::vector<tmp_file> stale;
        take_expired(now, stale);
        const hint* need = nullptr;
        std::string dir;
        if (spares_.size() < max_spares_ && now >= paused_until_) {
            for (const auto& [d, h] : hints_)
                if (h.have < h.want && now - h.last <= spare_max_age_ && (!need || h.have < need->have)) {
                    need = &h;
                    dir = d;
                }
        }
        lock.unlock();
        stale.clear();  // their files removed, outside the lock
        if (!need) {
            lock.lock();
            if (now < paused_until_) return std::chrono::duration_cast<std::chrono::milliseconds>(paused_until_ - now);
            return spares_.empty() ? std::chrono::milliseconds(60000)
                                   : std::chrono::duration_cast<std::chrono::milliseconds>(spare_max_age_);
        }
        auto made = open_tmp(dir);
        lock.lock();
        auto it = hints_.find(dir);
        if (!made) {
            const int e = made.error().value();
            if (made.error().category() == std::system_category() && (e == EMFILE || e == ENFILE)) {
                // Out of descriptors: what is held goes back at once, and nothing is made for a
                // second (sessions and deliveries need them more).
                std::vector<tmp_file> all = std::move(spares_);
                spares_.clear();
                for (auto& [d, h] : hints_) h.have = 0;
                paused_until_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
                lock.unlock();
                all.clear();
                lock.lock();
                return std::chrono::seconds(1);
            }
            // The delivery that comes says why, if it fails too; no more tries until a hint.
            if (it != hints_.end()) it->second.want = 0;
            return std::chrono::milliseconds(0);
        }
        if (it == hints_.end()) return std::chrono::milliseconds(0);  // forgotten meanwhile: `made` goes
        made->made = std::chrono::steady_clock::now();
        spares_.push_back(std::move(*made));
        ++it->second.have;
        return std::chrono::milliseconds(0);
    }

    // Moves the files made ahead that waited past spare_max_age_ into `stale` (spares_mutex_
    // held); their mailbox is not made any more until its next hint (a file that expired there
    // was not needed).
    void take_expired(std::chrono::steady_clock::time_point now, std::vector<tmp_file>& stale) {
        if (spares_.empty()) return;
        std::vector<tmp_file> keep;
        keep.reserve(spares_.size());
        stale.reserve(spares_.size());
        for (auto& f : spares_) {
            if (now - f.made <= spare_max_age_) {
                keep.push_back(std::move(f));
                continue;
            }
            if (auto it = hints_.find(f.dir); it != hints_.end()) {
                it->second.want = 0;
                if (it->second.have > 0) --it->second.have;
            }
            stale.push_back(std::move(f));
        }
        spares_.swap(keep);
    }

    // A new file in dir/tmp/ under a maildir(5) unique name: time, microseconds, pid and a
    // per-store counter (Dovecot's); O_EXCL, so a name taken takes the next counter.
    result<tmp_file> open_tmp(const std::string& dir) {
        const auto now = (options_.clock ? options_.clock() : std::chrono::system_clock::now()).time_since_epoch();
        const auto secs = std::chrono::duration_cast<std::chrono::seconds>(now);
        const auto usecs = std::chrono::duration_cast<std::chrono::microseconds>(now - secs);
        const std::string tail = std::to_string(secs.count()) + ".M" + std::to_string(usecs.count()) + "P" + pid_ + "Q";
        for (int attempt = 0; attempt < 8; ++attempt) {
            std::string prefix = tail + std::to_string(counter_->fetch_add(1));
            const std::size_t budget = prefix.size() + 1 < max_base_name ? max_base_name - prefix.size() - 1 : 0;
            std::string path = dir + "/tmp/" + prefix + "." + truncate_host(host_, budget);
            unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
            if (fd.get() < 0) {
                if (errno == EEXIST) continue;
                return unexpected(last_system_error());
            }
            tmp_file f;
            f.dir = dir;
            f.prefix = std::move(prefix);
            f.tail = tail;
            f.path = std::move(path);
            f.fd = std::move(fd);
            if (options_.fsync) {
                auto found = data_sync_of(f.fd.get(), dir + "/tmp");
                if (!found) return unexpected(found.error());  // f's destructor removes the file
                f.data = std::move(*found);
            }
            return f;
        }
        return unexpected(sys_error(EEXIST));
    }

    // A file made ahead for `dir` (prepare_delivery), if there is one, young enough (its name
    // holds the time it was made), and still that name's file, empty: nothing else took it.
    // One that is not is dropped, and the next tried (a tmp/ cleaner may have taken them all).
    // Counts the delivery for the mailbox's next hint either way, if `count`.
    std::optional<tmp_file> take_spare(const std::string& dir, bool count) {
        {
            std::lock_guard guard(spares_mutex_);
            auto h = hints_.find(dir);
            if (h == hints_.end()) return std::nullopt;
            if (count) ++h->second.taken;
        }
        for (;;) {
            std::optional<tmp_file> f;
            {
                std::lock_guard guard(spares_mutex_);
                auto it = std::find_if(spares_.begin(), spares_.end(), [&](const tmp_file& t) { return t.dir == dir; });
                if (it == spares_.end()) return std::nullopt;
                f = std::move(*it);
                spares_.erase(it);
                if (auto h = hints_.find(dir); h != hints_.end() && h->second.have > 0) --h->second.have;
                opener_cv_.notify_one();  // one to make again, if the hint wants it
            }
            off_t size = -1;
            if (f->still_named(&size) && size == 0 && std::chrono::steady_clock::now() - f->made <= spare_max_age_) return f;
            // f's destructor removes it if it is still ours
        }
    }

    // ensured_: mailboxes (encoded) whose directories this store made or found complete.
    bool still_there(const std::string& enc) {
        {
            std::lock_guard guard(syncs_mutex_);
            if (!ensured_.contains(enc)) return false;
        }
        if (!options_.recheck_mailboxes) return true;
        // lstat, as make_dir: a directory replaced by a symlink is not taken. new/ is where the
        // links go, cur/ what POP3 needs; a missing tmp/ shows at the open (begin_delivery).
        const std::string dir = dir_of(enc);
        for (const char* sub : {"/new", "/cur"}) {
            struct stat st{};
            if (::lstat((dir + sub).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
        }
        return true;
    }
    void remember_ensured(const std::string& enc) {
        std::lock_guard guard(syncs_mutex_);
        if (ensured_.size() >= max_ensured) ensured_.clear();  // bounded: forgetting costs one check each
        ensured_.insert(enc);
    }
    void forget_ensured(std::span<const std::string> encs) {
        std::lock_guard guard(syncs_mutex_);
        for (const auto& e : encs) ensured_.erase(e);
    }

    // Whether a tmp/ file is one this host's mailnet (or a Maildir writer naming files as it
    // does) made and left empty, in a process that has ended, over a minute ago: a file made
    // ahead (prepare_delivery) or a delivery begun when that process was killed. Its name says
    // so: "<secs>.M<usecs>P<pid>Q<n>.<host>", as open_tmp() makes it for this host.
    // NOTE: a process of another PID namespace on a host of the same name, sharing this store,
    // could be seen as ended: its file is empty and a minute old, which no delivery of ours
    // keeps (a file made ahead lives 2 s, a delivery writes at once), and a delivery whose
    // file went fails its link and is answered with a temporary error, never lost.
    bool left_by_an_ended_process(std::string_view name, const struct stat& st,
                                  std::chrono::system_clock::time_point now) const {
        if (st.st_size != 0 || st.st_mtime >= std::chrono::system_clock::to_time_t(now - std::chrono::minutes(1)))
            return false;
        const auto dot = name.find('.', name.find('Q'));
        const auto p = name.find(".M"), q = name.find('P');
        if (dot == name.npos || p == name.npos || q == name.npos || !(p < q && q < name.find('Q'))) return false;
        const std::string_view prefix = name.substr(0, dot);
        const std::string_view pid_text = name.substr(q + 1, name.find('Q') - q - 1);
        const std::size_t budget = prefix.size() + 1 < max_base_name ? max_base_name - prefix.size() - 1 : 0;
        if (name.substr(dot + 1) != truncate_host(host_, budget) || pid_text.empty() || pid_text.size() > 9 ||
            !std::all_of(pid_text.begin(), pid_text.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
            pid_text == pid_)
            return false;
        const pid_t pid = static_cast<pid_t>(std::stol(std::string(pid_text)));
        return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH;
    }

    // Removes files in every mailbox's tmp/ older than tmp_max_age (maildir(5): a tmp/ file
    // that old is a delivery that died), and the empty ones an ended process of this host
    // left (left_by_an_ended_process).
    void clean_tmp() {
        const auto now = options_.clock ? options_.clock() : std::chrono::system_clock::now();
        const auto limit = std::chrono::system_clock::to_time_t(now - options_.tmp_max_age);
        // A folder has its own tmp/ only; a store has one per mailbox.
        const std::vector<std::string> boxes = folder_ ? std::vector<std::string>{""} : list_names(root_);
        for (const auto& box : boxes) {
            if (!box.empty() && box.front() == '.') continue;  // Maildir++ subfolders are not ours
            const std::string tmp = folder_ ? root_ + "/tmp" : root_ + "/" + box + "/tmp";
            // Through descriptors opened without following symlinks: a mailbox or tmp/ that
            // is a symlink is skipped, so nothing outside the store is ever removed.
            auto dirs = open_dirs(box);
            if (!dirs || dirs->box.get() < 0) continue;
            const int tmp_fd = ::openat(dirs->box.get(), "tmp", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (tmp_fd < 0) continue;
            DIR* d = ::fdopendir(tmp_fd);
            if (!d) {
                ::close(tmp_fd);
                continue;
            }
            while (const dirent* e = ::readdir(d)) {
                const std::string_view name = e->d_name;
                if (name == "." || name == "..") continue;
                struct stat st{};
                if (::fstatat(tmp_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
                const bool stale = st.st_mtime < limit;
                if (!stale && !left_by_an_ended_process(name, st, now)) continue;
                const std::string path = tmp + "/" + std::string(name);
                if (::unlinkat(tmp_fd, e->d_name, 0) == 0)
                    log(log_level::info, stale ? "maildir: removed stale " + path
                                               : "maildir: removed " + path + ", left empty by a process that ended");
                else
                    log(log_level::warning, "maildir: cannot remove stale " + path + ": " + last_system_error().message());
            }
            ::closedir(d);
        }
    }

private:
    // The group-commit state of a new/ directory, shared by the deliveries into it. The table
    // holds weak references: a state lives while a delivery holds it (also past the store's
    // end), and expired entries are swept as the table doubles, so a mailbox delivered to once
    // does not stay in memory.
    std::shared_ptr<directory_sync> sync_of(const std::string& new_dir) {
        std::lock_guard guard(syncs_mutex_);
        auto& slot = syncs_[new_dir];
        auto sync = slot.lock();
        if (!sync) {
            sync = std::make_shared<directory_sync>(new_dir);
            slot = sync;
        }
        if (syncs_.size() > sweep_at_) {
            std::erase_if(syncs_, [](const auto& e) { return e.second.expired(); });
            sweep_at_ = 2 * syncs_.size() + 64;
        }
        return sync;
    }

    // Round one's group commit for the file system of `fd` (a file just made in `tmp_dir`): one
    // per file system (st_dev), made on first use with a descriptor of `tmp_dir` for its syncfs.
    result<std::shared_ptr<data_sync>> data_sync_of(int fd, const std::string& tmp_dir) {
        struct stat st{};
        if (::fstat(fd, &st) != 0) return unexpected(last_system_error());
        std::lock_guard guard(syncs_mutex_);
        auto& slot = data_syncs_[st.st_dev];
        if (!slot) {
            unique_fd dir(::open(tmp_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (dir.get() < 0) return unexpected(last_system_error());
            slot = std::make_shared<data_sync>(std::move(dir), options_.data_sync, options_.syncfs_min_group);
        }
        return slot;
    }

    // The Maildir of an encoded mailbox name.
    std::string dir_of(const std::string& enc) const { return folder_ ? root_ : root_ + "/" + enc; }

    // The directories of one mailbox, none of them reached through a symlink (DESIGN.md:
    // nothing under --store is followed out of it); all further work is relative to them.
    result<box_dirs> open_dirs(const std::string& enc) const {
        box_dirs d;
        // The encoded name is one path component, so O_NOFOLLOW on it is enough. The root of
        // a folder is the configured directory itself, symlink or not (the user's choice).
        const int nofollow = folder_ ? 0 : O_NOFOLLOW;
        d.box = unique_fd(::open(dir_of(enc).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | nofollow));
        if (d.box.get() < 0) {
            if (errno == ENOENT) return d;
            return unexpected(last_system_error());
        }
        for (auto [name, fd] : {std::pair{"new", &d.new_dir}, std::pair{"cur", &d.cur_dir}}) {
            *fd = unique_fd(::openat(d.box.get(), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (fd->get() < 0 && errno != ENOENT) return unexpected(last_system_error());
        }
        return d;
    }

    // Every entry of a directory but "." and ".."; empty when it cannot be read.
    static std::vector<std::string> list_names(const std::string& path) {
        std::vector<std::string> out;
        DIR* d = ::opendir(path.c_str());
        if (!d) return out;
        while (const dirent* e = ::readdir(d)) {
            const std::string_view name = e->d_name;
            if (name != "." && name != "..") out.emplace_back(name);
        }
        ::closedir(d);
        return out;
    }

    // Creates DIR/<enc>/{tmp,new,cur} as needed and, before returning, makes what it created
    // durable (DESIGN.md "Delivery": DIR and DIR/<mailbox> fsync'd). Only a delivery calls
    // it: lock() never creates a mailbox.
    // cur/ is made last and only after those fsyncs, so a mailbox that has cur/ was made
    // durable by whoever made cur/: the common case (all there) costs no fsync, and a
    // mailbox found half made (a racing creator still before its fsyncs, or a crash) is
    // fsync'd again here rather than trusted.
    // NOTE: delivery still works by path: make_dir's lstat refuses a mailbox, tmp/, new/ or
    // cur/ that is a symlink, but one swapped in between that check and the link() would be
    // followed. Only someone who can write the store's root could do that.
    result<void> ensure_mailbox(const std::string& enc, const std::string& name) {
        const std::string dir = dir_of(enc);
        auto box = make_dir(dir);
        if (!box) return unexpected(box.error());
        if (!folder_ && enc.starts_with("%H")) {
            if (auto n = write_name_file(dir, name); !n) return n;
        }
        bool made_sub = false;
        for (const char* s : {"/tmp", "/new"}) {
            auto r = make_dir(dir + s);
            if (!r) return unexpected(r.error());
            made_sub = made_sub || *r;
        }
        const std::string cur = dir + "/cur";
        struct stat st{};
        const bool has_cur = ::lstat(cur.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
        if (has_cur && !*box && !made_sub) return {};
        const bool durable = options_.fsync;
        if (durable) {
            if (auto s = fsync_dir(dir); !s) return s;  // tmp/, new/
            if (*box || !has_cur) {
                // DIR/<mailbox> (a folder: its entry in its parent, made durable at open)
                if (!folder_) {
                    if (auto s = fsync_dir(root_); !s) return s;
                }
            }
        }
        if (has_cur) return {};
        auto made_cur = make_dir(cur);
        if (!made_cur) return unexpected(made_cur.error());
        if (durable && *made_cur) return fsync_dir(dir);  // cur/
        return {};
    }

    // The name of a hashed mailbox directory, beside its tmp/ new/ cur/: written once (a
    // temporary file renamed into place, so a reader never sees half of it), made durable with
    // the directory's own fsync that follows for a new mailbox.
    result<void> write_name_file(const std::string& dir, const std::string& name) {
        const std::string path = dir + "/" + name_file_name;
        struct stat st{};
        if (::lstat(path.c_str(), &st) == 0) return {};
        const std::string tmp = path + "." + std::to_string(::getpid()) + "." + std::to_string(counter_->fetch_add(1));
        unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (fd.get() < 0) return unexpected(last_system_error());
        auto w = write_all(fd.get(), name);
        if (w && options_.fsync && ::fsync(fd.get()) != 0) w = unexpected(last_system_error());
        if (w && ::rename(tmp.c_str(), path.c_str()) != 0) w = unexpected(last_system_error());
        if (!w) ::unlink(tmp.c_str());
        if (w && options_.fsync) return fsync_dir(dir);
        return w;
    }

public:
    bool commits_in_groups() const noexcept override { return true; }

    bool knows_mailboxes(std::span<const std::string> mailboxes) override {
        std::lock_guard guard(syncs_mutex_);
        return std::all_of(mailboxes.begin(), mailboxes.end(),
                           [&](const std::string& m) { return !m.empty() && ensured_.contains(encode_mailbox_name(m)); });
    }

    result<std::vector<std::string>> mailboxes() override {
        if (folder_) return unexpected(errc::unsupported);
        unique_fd root(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (root.get() < 0) return unexpected(last_system_error());
        const int own = ::dup(root.get());
        if (own < 0) return unexpected(last_system_error());
        DIR* d = ::fdopendir(own);
        if (!d) {
            const auto ec = last_system_error();
            ::close(own);
            return unexpected(ec);
        }
        std::vector<std::string> names;
        while (const dirent* e = ::readdir(d)) {
            const std::string_view entry = e->d_name;
            if (ignored_name(entry)) continue;
            if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN) continue;
            // A mailbox is a directory (never a symlink) with new/ in it, as delivery makes it.
            struct stat st{};
            if (::fstatat(root.get(), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) continue;
            const std::string sub = std::string(entry) + "/new";
            if (::fstatat(root.get(), sub.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) continue;
            if (auto name = mailbox_of_entry(root.get(), std::string(entry))) names.push_back(std::move(*name));
        }
        ::closedir(d);
        std::sort(names.begin(), names.end());
        return names;
    }

    // Also told of what other programs change on disk (inotify, while anyone listens): each
    // mailbox whose files changed, as a `changed` naming it.
    subscription subscribe(event_hub::listener listener) override {
        auto s = store::subscribe(std::move(listener));
        if (!folder_)
            std::call_once(watch_once_, [this] {
                watch_ = std::make_unique<detail::maildir_watch>(root_, &maildir_store::mailbox_of_entry, events(),
                                                                 options_.log);
            });
        return s;
    }

private:
    // The mailbox whose directory in the root is `entry`: a folder no name of ours leads to
    // (made by hand, or a hashed one without its file) is no mailbox this store can open.
    static std::optional<std::string> mailbox_of_entry(int root, const std::string& entry) {
        std::optional<std::string> name = decode_mailbox_name(entry);
        if (!name && entry.starts_with("%H")) name = read_name_file(root, entry);
        if (name && encode_mailbox_name(*name) == entry) return name;
        return std::nullopt;
    }

    static std::optional<std::string> read_name_file(int root, const std::string& entry) {
        const std::string rel = entry + "/" + name_file_name;
        auto file = open_regular(root, rel.c_str(), O_RDONLY);
        if (!file || file->size == 0 || file->size > max_name_file_octets) return std::nullopt;
        std::string name(static_cast<std::size_t>(file->size), '\0');
        std::size_t got = 0;
        while (got < name.size()) {
            const ssize_t n = ::read(file->fd.get(), name.data() + got, name.size() - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return std::nullopt;
            got += static_cast<std::size_t>(n);
        }
        return name;
    }

    // The message files of new/ then cur/: a file renamed new/ -> cur/ between the two reads
    // is seen twice and kept once (its cur/ name); read the other way round it could be lost.
    struct scan_result {
        std::vector<found_file> files;
        std::vector<std::string> infos;  // found_file::info indexes these
    };

    result<scan_result> scan(const box_dirs& dirs, const std::string& enc) {
        std::vector<found_file> files;
        scan_cache cache;
        cache.dirs = dup_dirs(dirs);
        cache.infos.emplace_back();  // index 0: no info part
        for (const bool in_cur : {false, true}) {
            const int sub_fd = in_cur ? dirs.cur_dir.get() : dirs.new_dir.get();
            if (sub_fd < 0) continue;  // no such mailbox or folder yet: no messages
            // fdopendir takes its own descriptor: the box_dirs keep theirs.
            const int own = ::openat(sub_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (own < 0) return unexpected(last_system_error());
            DIR* d = ::fdopendir(own);
            if (!d) {
                const auto ec = last_system_error();
                ::close(own);
                return unexpected(ec);
            }
            while (const dirent* e = ::readdir(d)) {
                const std::string_view name = e->d_name;
                if (ignored_name(name)) continue;
                // d_type says "regular file" without a stat; only file systems that do not
                // fill it in (DT_UNKNOWN) cost one. Subdirectories, links, devices: not mail.
                if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) continue;
                const std::size_t colon = name.find(':');
                const std::string_view base = name.substr(0, colon);
                const std::string_view info = colon == std::string_view::npos ? "" : name.substr(colon + 1);
                found_file f;
                const auto s_field = name_field(base, ",S=");
                // S= is trusted only beside W=: without W= the snapshot reads the file anyway,
                // and the stat'd size is what open() then checks (a wrong S= is not fatal).
                const bool sized_name = s_field && name_field(base, ",W=");
                if (e->d_type == DT_UNKNOWN || !sized_name || !delivery_time(base)) {
                    // The size a name without S= does not say, and the mtime that orders a
                    // name without a delivery time, are what the snapshot is based on.
                    struct stat st{};
                    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
                        continue;  // gone meanwhile, or not a regular file
                    f.size = static_cast<std::uint64_t>(st.st_size);
                    f.mtime = st.st_mtime;
                }
                if (sized_name) f.size = *s_field;
                auto known = std::find(cache.infos.begin(), cache.infos.end(), info);
                if (known == cache.infos.end()) known = cache.infos.emplace(cache.infos.end(), info);
                f.info = static_cast<std::uint32_t>(known - cache.infos.begin());
                f.in_cur = in_cur;
                f.base.assign(base);
                files.push_back(std::move(f));
            }
            ::closedir(d);
        }
        // A file renamed new/ -> cur/ between the two reads is seen twice: keep its cur/ name.
        // Two files that both still exist under one base name (a Maildir restored over itself,
        // a foreign tool) are two messages: the later one is renamed to a base of its own, as
        // Dovecot does; kept as one, the other would never be listed.
        std::stable_sort(files.begin(), files.end(), [](const found_file& a, const found_file& b) { return a.base < b.base; });
        // In place, so a big mailbox holds one list of names at a time.
        std::vector<found_file> separated;
        auto kept = files.begin();
        for (auto it = files.begin(); it != files.end(); ++it) {
            if (kept != files.begin() && std::prev(kept)->base == it->base) {
                bool two_files = false;
                if (auto own = separate_duplicate(dirs, cache.infos, *std::prev(kept), *it, two_files))
                    separated.push_back(std::move(*own));
                else if (!two_files)
                    *std::prev(kept) = std::move(*it);  // new/ came first in the stable order
                // Two files, the later not renamed (another scan renamed it meanwhile, or an
                // error): the first is kept; the later is found under its new name next time.
            } else if (kept++ != it) {
                *std::prev(kept) = std::move(*it);
            }
        }
        files.erase(kept, files.end());
        for (auto& f : separated) files.push_back(std::move(f));
        std::vector<found_file>& out = files;
        cache.entries.reserve(out.size());
        std::lock_guard guard(mutex_);
        const auto old = caches_.find(enc);
        const bool session = locks_.contains(enc);
        for (const auto& f : out) {
            scan_cache::entry c{hash_of(f.base), f.size, f.info, f.in_cur};
            if (session && old != caches_.end() && !(name_field(f.base, ",S=") && name_field(f.base, ",W="))) {
                // A rescan (a file moved) keeps the size the session's snapshot was based on.
                // Without a session nothing was announced: a file another program was still
                // writing when an earlier scan saw it (cp into new/) has its whole size now.
                if (auto prev = find_cached(old->second, f.base)) c.size = prev->size;
            }
            cache.entries.push_back(c);
        }
        std::sort(cache.entries.begin(), cache.entries.end(),
                  [](const scan_cache::entry& a, const scan_cache::entry& b) { return a.hash < b.hash; });
        std::vector<std::string> infos = cache.infos;
        // NOTE: a mailbox scanned without this process's lock (mailnetd's HTTP API) keeps its
        // cache (24 octets a message, self-correcting: a miss rescans) but not two descriptors
        // per mailbox for as long as the store lives; open() then opens the directories itself.
        if (!locks_.contains(enc)) cache.dirs = nullptr;
        caches_[enc] = std::move(cache);
        return scan_result{std::move(out), std::move(infos)};
    }

    static std::uint64_t hash_of(std::string_view base) { return std::hash<std::string_view>{}(base); }

    // `later` has the base name of `first`: the same file seen twice (renamed between two
    // reads, or two links of one file) or two files. Two files: `later` is renamed to a base
    // of its own ("-dupINODE" before the name's first ',', so S= and W= stay) and returned so.
    std::optional<found_file> separate_duplicate(const box_dirs& dirs, const std::vector<std::string>& infos,
                                                 const found_file& first, const found_file& later, bool& two_files) {
        const auto where = [&](const found_file& f) { return f.in_cur ? dirs.cur_dir.get() : dirs.new_dir.get(); };
        const std::string first_name = file_name(first.base, infos[first.info]);
        const std::string later_name = file_name(later.base, infos[later.info]);
        struct stat a{}, b{};
        if (::fstatat(where(first), first_name.c_str(), &a, AT_SYMLINK_NOFOLLOW) != 0 ||
            ::fstatat(where(later), later_name.c_str(), &b, AT_SYMLINK_NOFOLLOW) != 0)
            return std::nullopt;  // one is gone: it was renamed meanwhile
        if (a.st_dev == b.st_dev && a.st_ino == b.st_ino) return std::nullopt;
        two_files = true;
        found_file own = later;
        const std::size_t comma = later.base.find(',');
        own.base.insert(comma == std::string::npos ? own.base.size() : comma, "-dup" + std::to_string(b.st_ino));
        const std::string own_name = file_name(own.base, infos[own.info]);
        if (const int e = rename_noreplace(where(later), later_name.c_str(), where(later), own_name.c_str())) {
            log(log_level::warning, "maildir: two messages named " + later.base + "; cannot rename one to " + own_name +
                                        ": " + std::error_code(e, std::system_category()).message());
            return std::nullopt;
        }
        log(log_level::warning, "maildir: two messages named " + later.base + ": one renamed to " + own_name);
        return own;
    }

    // Copies of new/ and cur/ for the scan cache (the caller keeps its own): two descriptors a
    // locked mailbox. Null when a copy fails (EMFILE): open() then opens them itself.
    static std::shared_ptr<const box_dirs> dup_dirs(const box_dirs& d) {
        auto c = std::make_shared<box_dirs>();
        for (auto [from, to] : {std::pair{&d.new_dir, &c->new_dir}, std::pair{&d.cur_dir, &c->cur_dir}}) {
            if (from->get() < 0) continue;
            *to = unique_fd(::fcntl(from->get(), F_DUPFD_CLOEXEC, 0));
            if (to->get() < 0) return nullptr;
        }
        return c;
    }

    // "<base>" or "<base>:<info>".
    static std::string file_name(std::string_view base, std::string_view info) {
        std::string name(base);
        if (!info.empty()) (name += ':') += info;
        return name;
    }

    // The cached entry for `base`, found by its hash alone.
    // NOTE: with two base names of one mailbox sharing the 64-bit hash (about 3e-10 for
    // 100,000 names) the first entry answers for both: the other message then reads as gone
    // (its path does not exist), never as another message's octets.
    std::optional<scan_cache::entry> find_cached(const scan_cache& cache, std::string_view base) const {
        const std::uint64_t h = hash_of(base);
        auto it = std::lower_bound(cache.entries.begin(), cache.entries.end(), h,
                                   [](const scan_cache::entry& e, std::uint64_t v) { return e.hash < v; });
        if (it == cache.entries.end() || it->hash != h) return std::nullopt;
        return *it;
    }

    std::optional<cached_file> cached_path(const std::string& enc, std::string_view id) {
        std::lock_guard guard(mutex_);
        auto box = caches_.find(enc);
        if (box == caches_.end()) return std::nullopt;
        auto e = find_cached(box->second, id);
        if (!e) return std::nullopt;
        // NOTE: a hash collision gives another file's info part: the path does not exist
        // (ENOENT), so callers rescan and then find it again the same way; the chance of two
        // of one mailbox's base names sharing 64 bits is negligible.
        return cached_file{(e->in_cur ? "cur/" : "new/") + file_name(id, box->second.infos.at(e->info)), e->size};
    }

    // new/<id> when it is there: a file in new/ has no info part, so its name is its id. Only
    // for a name whose S= and W= give its size (as this store names its deliveries), and for a
    // mailbox no session of this process holds: a session's message is opened at the size its
    // snapshot announced, and a second file of one base name is told apart by the scan. One
    // whose S= lies is left to the rescan, which refuses it as it refuses a scanned one.
    std::optional<message> open_in_new(const box_dirs& dirs, const std::string& enc, std::string_view id) {
        if (dirs.new_dir.get() < 0 || id.empty() || id.find_first_of(std::string_view("/\0", 2)) != std::string_view::npos ||
            ignored_name(id) || !name_field(id, ",S=") || !name_field(id, ",W="))
            return std::nullopt;
        {
            std::lock_guard guard(mutex_);
            if (locks_.contains(enc)) return std::nullopt;
        }
        const std::string name(id);
        auto file = open_regular(dirs.new_dir.get(), name.c_str(), O_RDONLY);
        if (!file) return std::nullopt;
        if (const auto s = name_field(name, ",S="); s && *s != file->size) return std::nullopt;
        return message(file_source(file->fd.release()), file->size);
    }

    std::optional<cached_file> rescan_for(const box_dirs& dirs, const std::string& enc, std::string_view id) {
        if (!scan(dirs, enc)) return std::nullopt;
        return cached_path(enc, id);
    }

    // Runs `op` (returning 0 or an errno) on the current relative path of `id`, looking the
    // file up again when it moved. ENOENT when it is nowhere.
    template <class Op>
    std::error_code on_current_path(const box_dirs& dirs, const std::string& enc, std::string_view id, Op op) {
        for (int attempt = 0; attempt < 3; ++attempt) {
            auto rel = attempt == 0 ? cached_path(enc, id) : rescan_for(dirs, enc, id);
            if (!rel) {
                if (attempt == 0) continue;
                return sys_error(ENOENT);
            }
            const int e = op(rel->rel);
            if (e == 0) return {};
            if (e != ENOENT) return sys_error(e);
        }
        return sys_error(ENOENT);
    }

    // Paths in these lines come from file names anyone with write access to a Maildir
    // chooses: escaped, so no name can forge a line (a failed login for a log watcher).
    void log(log_level level, const std::string& text) const {
        if (options_.log) options_.log(level, log_text(text, 1024));
    }

    maildir_options options_;
    std::string root_;
    std::string host_;  // escaped for file names
    bool folder_ = false;  // root_ is the one Maildir (open_maildir_folder)
    std::once_flag watch_once_;
    std::unique_ptr<detail::maildir_watch> watch_;  // from the first subscribe() on (not for a folder)
    std::shared_ptr<std::atomic<std::uint64_t>> counter_ = std::make_shared<std::atomic<std::uint64_t>>(0);
    // NOTE: the process id of the names, read once (getpid() was a system call per delivery).
    // A child forked with this store names its files with the parent's id: still unique, since
    // tmp/ files are made with O_EXCL and links never replace (both take the next counter).
    const std::string pid_ = std::to_string(::getpid());
    std::mutex mutex_;
    std::map<std::string, int> locks_;  // encoded mailbox -> descriptor holding the flock; -1: no mailbox at lock()
    // encoded mailbox -> where the last scan found each message
    std::map<std::string, scan_cache> caches_;
    std::mutex syncs_mutex_;  // guards syncs_, sweep_at_, data_syncs_ and ensured_ (apart from mutex_: scans hold that long)
    std::map<std::string, std::weak_ptr<directory_sync>> syncs_;  // new/ path -> its group commit
    std::size_t sweep_at_ = 64;  // syncs_ size at which expired entries are dropped
    std::map<dev_t, std::shared_ptr<data_sync>> data_syncs_;  // file system -> round one's group commit
    // prepare_delivery's tmp/ files made ahead (spares_), by the opener thread: for a mailbox
    // hinted twice within spare_hot_ only (hints_), so one delivered to once in a while costs
    // nothing more; at most max_spares_per_box for one and max_spares_ in all (64, less with a
    // low descriptor limit), each taken within spare_max_age_ or removed (by the opener, which
    // wakes for it, and by the destructor).
    static constexpr std::size_t max_spares_per_box = 32;
    static constexpr std::size_t max_hints = 1024;
    const std::size_t max_spares_ = spares_allowed();
    const std::chrono::steady_clock::duration spare_max_age_ = options_.made_ahead_lifetime;
    const std::chrono::steady_clock::duration spare_hot_ = options_.made_ahead_busy;
    struct hint {
        std::chrono::steady_clock::time_point last{};
        std::size_t want = 0;   // files to keep made ahead
        std::size_t have = 0;   // files made ahead now (in spares_)
        std::size_t taken = 0;  // deliveries begun since the last hint
    };
    std::chrono::steady_clock::time_point paused_until_{};  // out of descriptors: nothing made before
    // 64 files made ahead at most, and never more than a thirty-second of the descriptor limit
    // (32 under the usual 1,024): sessions and deliveries need them first.
    static std::size_t spares_allowed() {
        rlimit rl{};
        if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 64;
        return std::min<std::size_t>(64, static_cast<std::size_t>(rl.rlim_cur / 32));
    }
    std::mutex spares_mutex_;  // guards spares_, hints_, opener_stop_
    std::condition_variable opener_cv_;
    bool opener_stop_ = false;
    std::vector<tmp_file> spares_;
    std::unordered_map<std::string, hint> hints_;
    std::thread opener_;  // open_ahead(), from the first hot hint
    static constexpr std::size_t max_ensured = 16384;
    std::unordered_set<std::string> ensured_;  // encoded mailboxes made or checked (begin_delivery)
};

}  // namespace

namespace {

result<std::unique_ptr<store>> open_maildir(maildir_options options, bool folder) {
    const char* what = folder ? "Maildir folder" : "store";
    if (!options.log) options.log = null_log();
    if (options.root.empty()) {
        options.log(log_level::error, std::string("maildir: no ") + what + " directory given");
        return unexpected(errc::bad_config);
    }
    if (auto made = make_dirs(options.root, options.fsync); !made) {
        options.log(log_level::error,
                    "maildir: cannot use " + options.root.string() + " as " + what + ": " + made.error().message());
        return unexpected(errc::bad_config);
    }
    std::string root = options.root.string();
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    std::string host = escape_host(options.hostname.empty() ? system_hostname() : options.hostname);
    auto s = std::make_unique<maildir_store>(std::move(options), std::move(root), std::move(host), folder);
    s->clean_tmp();
    return std::unique_ptr<store>(std::move(s));
}

}  // namespace

result<std::unique_ptr<store>> open_maildir_store(maildir_options options) {
    return open_maildir(std::move(options), false);
}

result<std::unique_ptr<store>> open_maildir_folder(maildir_options options) {
    return open_maildir(std::move(options), true);
}

}  // namespace mailnet
