// scripted_server.hpp: a one-connection POP3 server that plays a script (what to send, which
// command line to expect next, when to stall or hang up), for the client's bad-server and
// quirk tests. Listens on 127.0.0.1 with an OS-chosen port; every wait is bounded.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pop3c_test {

/// One step: send `send` (if any) after reading a command line starting with `expect` (if any);
/// then stall for `stall`, or hang up if `hang_up`.
struct step {
    std::string expect;
    std::string send;
    bool hang_up = false;
    std::chrono::milliseconds stall{0};
};

class scripted_server {
public:
    explicit scripted_server(std::vector<step> script) : script_(std::move(script)) {
        listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        ::listen(listener_, 1);
        socklen_t len = sizeof a;
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] { run(); });
    }
    ~scripted_server() {
        thread_.join();
        ::close(listener_);
    }
    scripted_server(const scripted_server&) = delete;
    scripted_server& operator=(const scripted_server&) = delete;

    std::uint16_t port() const { return port_; }
    /// The command lines received (without CRLF), after the script ended.
    std::vector<std::string> received() {
        std::lock_guard lock(mutex_);
        return received_;
    }
    /// The steps whose expected command did not come (empty when the script ran as written).
    std::vector<std::string> mismatches() {
        std::lock_guard lock(mutex_);
        return mismatches_;
    }

private:
    bool wait_readable(int fd, int ms) {
        pollfd p{fd, POLLIN, 0};
        return ::poll(&p, 1, ms) > 0;
    }
    // Reads one line (LF-terminated) from the connection within 5 s; false on EOF/timeout.
    bool read_line(int fd, std::string& line) {
        for (;;) {
            const auto lf = buf_.find('\n');
            if (lf != std::string::npos) {
                line = buf_.substr(0, lf);
                if (!line.empty() && line.back() == '\r') line.pop_back();
                buf_.erase(0, lf + 1);
                return true;
            }
            if (!wait_readable(fd, 5000)) return false;
            char tmp[4096];
            const auto n = ::recv(fd, tmp, sizeof tmp, 0);
            if (n <= 0) return false;
            buf_.append(tmp, static_cast<std::size_t>(n));
        }
    }
    void send_all(int fd, const std::string& s) {
        std::size_t at = 0;
        while (at < s.size()) {
            const auto n = ::send(fd, s.data() + at, s.size() - at, MSG_NOSIGNAL);
            if (n <= 0) return;
            at += static_cast<std::size_t>(n);
        }
    }
    void run() {
        if (!wait_readable(listener_, 10000)) return;
        const int fd = ::accept(listener_, nullptr, nullptr);
        if (fd < 0) return;
        for (const auto& s : script_) {
            if (!s.expect.empty()) {
                std::string line;
                if (!read_line(fd, line)) {
                    std::lock_guard lock(mutex_);
                    mismatches_.push_back("no command; expected " + s.expect);
                    break;
                }
                std::lock_guard lock(mutex_);
                received_.push_back(line);
                if (line.rfind(s.expect, 0) != 0) mismatches_.push_back("got " + line + "; expected " + s.expect);
            }
            if (!s.send.empty()) send_all(fd, s.send);
            if (s.stall.count() > 0) std::this_thread::sleep_for(s.stall);
            if (s.hang_up) break;
        }
        // Drain what the client still sends (QUIT) for a moment, then hang up.
        std::string line;
        while (wait_readable(fd, 200) && read_line(fd, line)) {
            std::lock_guard lock(mutex_);
            received_.push_back(line);
        }
        ::close(fd);
    }

    std::vector<step> script_;
    int listener_ = -1;
    std::uint16_t port_ = 0;
    std::thread thread_;
    std::string buf_;
    std::mutex mutex_;
    std::vector<std::string> received_;
    std::vector<std::string> mismatches_;
};

}  // namespace pop3c_test
