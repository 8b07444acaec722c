// test_client.hpp: a blocking TCP client for server tests, every wait bounded.
// Shared by the test binaries of libmailnet and the components (header-only).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace mailnet::testing {

/// Connects to 127.0.0.1:port; reads and writes with bounded waits.
class test_client {
public:
    /// `source`: a local address to connect from (e.g. "127.0.0.2": another peer address).
    explicit test_client(std::uint16_t port, const char* source = nullptr) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        if (source) {
            sockaddr_in from{};
            from.sin_family = AF_INET;
            ::inet_pton(AF_INET, source, &from.sin_addr);
            (void)::bind(fd_, reinterpret_cast<sockaddr*>(&from), sizeof from);
        }
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    }
    ~test_client() { close(); }
    test_client(const test_client&) = delete;
    test_client& operator=(const test_client&) = delete;

    bool connected() const { return connected_; }
    void send(std::string_view s) {
        while (!s.empty()) {
            const auto n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
            if (n <= 0) return;
            s.remove_prefix(static_cast<std::size_t>(n));
        }
    }
    /// Reads until `until` has arrived, EOF, or the limit; returns everything read so far.
    const std::string& read_until(std::string_view until,
                                  std::chrono::milliseconds limit = std::chrono::milliseconds(10000)) {
        const auto end = std::chrono::steady_clock::now() + limit;
        while (got_.find(until, scan_from(until)) == std::string::npos && !eof_) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
            if (left.count() <= 0) break;
            if (!read_once(static_cast<int>(left.count()))) break;
        }
        return got_;
    }
    /// Reads and counts up to `octets` without keeping them (big RETRs).
    std::size_t read_discard(std::size_t octets, std::chrono::milliseconds limit = std::chrono::milliseconds(30000)) {
        const auto end = std::chrono::steady_clock::now() + limit;
        std::size_t total = 0;
        char buf[65536];
        while (total < octets && std::chrono::steady_clock::now() < end) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 1000) <= 0) continue;
            const auto n = ::read(fd_, buf, std::min(sizeof buf, octets - total));
            if (n <= 0) break;
            total += static_cast<std::size_t>(n);
        }
        return total;
    }
    /// True if the server closed the connection within the limit.
    bool closed_within(std::chrono::milliseconds limit) {
        const auto end = std::chrono::steady_clock::now() + limit;
        while (!eof_) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !read_once(static_cast<int>(left.count()))) break;
        }
        return eof_;
    }
    /// Everything received so far; clear() forgets it.
    const std::string& received() const { return got_; }
    void clear() { got_.clear(); }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    std::size_t scan_from(std::string_view until) const {
        return got_.size() > until.size() + 65536 ? got_.size() - until.size() - 65536 : 0;
    }
    bool read_once(int timeout_ms) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) <= 0) return false;
        char buf[65536];
        const auto n = ::read(fd_, buf, sizeof buf);
        if (n <= 0) eof_ = true;
        else got_.append(buf, static_cast<std::size_t>(n));
        return true;
    }

    int fd_ = -1;
    bool connected_ = false;
    bool eof_ = false;
    std::string got_;
};

}  // namespace mailnet::testing
