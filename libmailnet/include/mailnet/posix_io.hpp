// mailnet/posix_io.hpp: the few POSIX file helpers the stores, smtpd's spool and pop3c's local
// side share: a descriptor closed on scope exit, a write that finishes or fails, fsync of a
// directory, a directory made (durably), an unnamed spool file. No Asio here.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mailnet/error.hpp"

namespace mailnet::posix {

/// Closes a descriptor on scope exit unless released.
class unique_fd {
public:
    explicit unique_fd(int fd = -1) noexcept : fd_(fd) {}
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    unique_fd(unique_fd&& other) noexcept : fd_(other.release()) {}
    unique_fd& operator=(unique_fd&& other) noexcept {
        if (this != &other) reset(other.release());
        return *this;
    }
    ~unique_fd() { reset(); }
    int get() const noexcept { return fd_; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_;
};

/// Writes all of `octets` (retrying short writes and EINTR), or fails with errno.
inline result<void> write_all(int fd, std::string_view octets) {
    while (!octets.empty()) {
        const ssize_t n = ::write(fd, octets.data(), octets.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return unexpected(last_system_error());
        }
        octets.remove_prefix(static_cast<std::size_t>(n));
    }
    return {};
}

/// fsync of a directory, so that an entry made or renamed in it is durable.
inline result<void> fsync_dir(const std::string& dir) {
    unique_fd fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0 || ::fsync(fd.get()) != 0) return unexpected(last_system_error());
    return {};
}

/// Creates a directory; true if this call created it, false if a directory was already
/// there (lstat: a symbolic link there is not taken for one).
inline result<bool> make_dir(const std::string& path, mode_t mode = 0700) {
    if (::mkdir(path.c_str(), mode) == 0) return true;
    if (errno != EEXIST) return unexpected(last_system_error());
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) return unexpected(last_system_error());
    if (!S_ISDIR(st.st_mode)) return unexpected(std::error_code(ENOTDIR, std::system_category()));
    return false;
}

/// Creates `path` and its missing parents (mode 0777 less the umask, as mkdir -p); with
/// `durable`, each new entry is fsync'd in its parent before the next level is made, so a
/// power cut never keeps a file made below while losing a directory above it.
inline result<void> make_dirs(const std::filesystem::path& path, bool durable) {
    std::vector<std::filesystem::path> missing;  // deepest first
    for (std::filesystem::path p = path; !p.empty(); p = p.parent_path()) {
        struct stat st{};
        if (::stat(p.c_str(), &st) == 0 || errno != ENOENT) break;
        missing.push_back(p);
        if (p == p.parent_path()) break;
    }
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
        auto made = make_dir(it->string(), 0777);
        if (!made) return unexpected(made.error());
        if (!durable) continue;
        // Also when another process made it a moment ago: its fsync may not be done yet.
        if (auto s = fsync_dir(it->parent_path().string()); !s) return s;
    }
    auto last = make_dir(path.string(), 0777);  // there already, or not a directory
    if (!last) return unexpected(last.error());
    return {};
}

/// An unnamed temporary file (O_TMPFILE, else mkostemp and unlink) in `in`, by default the
/// temporary directory ($TMPDIR, else /tmp), for octets spooled past what is kept in memory;
/// -1 with errno on failure.
inline int open_unnamed_temp_file(const std::filesystem::path& in = {}) {
    std::error_code ec;
    auto dir = in.empty() ? std::filesystem::temp_directory_path(ec) : in;
    if (ec) dir = "/tmp";
    int fd = -1;
#ifdef O_TMPFILE
    fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
#endif
    std::string name = (dir / "mailnet-spool-XXXXXX").string();
    fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd >= 0) ::unlink(name.c_str());
    return fd;
}

}  // namespace mailnet::posix
