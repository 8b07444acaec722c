// fetchmda.cpp: the MDA bench/fetchrun gives fetchmail, which has no Maildir writer of its own
// (/work/shared/PEERS.md): one message on stdin into the Maildir DIR, durably and as cheaply as
// one process can (maildir(5)): DIR/tmp/NAME created (O_EXCL), written, fsync'd, renamed into
// DIR/new/NAME, DIR/new fsync'd. NAME: <secs>.M<usecs>P<pid>.fetchmda. libc only; built by
// bench/fetchrun with g++ -O2.
// Usage: fetchmda DIR   (exit 0; 64 usage; 75 anything failed: fetchmail then keeps the message)
#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace {

bool write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(fd, p, n);
        if (w < 0) return false;
        p += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

bool fsync_path(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::fsync(fd) == 0;
    return ::close(fd) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: fetchmda DIR\n");
        return 64;
    }
    const std::string dir = argv[1];
    timeval tv{};
    ::gettimeofday(&tv, nullptr);
    const std::string name = std::to_string(tv.tv_sec) + ".M" + std::to_string(tv.tv_usec) + "P" +
                             std::to_string(::getpid()) + ".fetchmda";
    const std::string tmp = dir + "/tmp/" + name, fin = dir + "/new/" + name;
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return std::perror(tmp.c_str()), 75;
    static char buf[64 * 1024];
    bool ok = true;
    for (;;) {
        const ssize_t n = ::read(0, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0 || !write_all(fd, buf, static_cast<size_t>(n))) {
            ok = false;
            break;
        }
    }
    ok = ok && ::fsync(fd) == 0;
    ok = ::close(fd) == 0 && ok;
    if (!ok || ::rename(tmp.c_str(), fin.c_str()) != 0) {
        std::perror(tmp.c_str());
        ::unlink(tmp.c_str());
        return 75;
    }
    if (!fsync_path(dir + "/new")) return std::perror(dir.c_str()), 75;
    return 0;
}
