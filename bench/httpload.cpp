// httpload.cpp: the listing load client of bench/httprun (libc and libstdc++ only; built by it
// with g++ -O2). HTTP/1.1 GET with keep-alive, Content-Length or chunked bodies. Bounded in count and time.
//
//   httpload list --port P --path PATH [--path PATH ...] [--clients 1] [--max-listings 1000]
//                 [--seconds 10] [--timeout 60]
//       CLIENTS threads, each on its own keep-alive connection to 127.0.0.1:P, each fetching one
//       listing after another; a listing is one GET of every PATH in turn (the pages of one full
//       list), every answer read to its end and required to be 200. Stops once MAX-LISTINGS
//       listings are done in all or SECONDS have passed (checked before each listing, so the
//       last ones finish); a single request taking longer than TIMEOUT seconds fails the run.
//       A connection the server closes is opened again (counted: reconnects=).
//       Prints "listings=N secs=S listings_per_s=R requests=Q bytes_per_listing=B
//       min_bytes=A max_bytes=B p50_ms=M p99_ms=M reconnects=K client_cpu=C" (client_cpu: this
//       process's user + system CPU over the wall time, in cores; p50/p99: one listing's time).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "benchclock.hpp"

namespace {

using benchclock::clk;
using benchclock::cpu_self;
using benchclock::secs_since;

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "httpload: %s\n", what.c_str());
    std::exit(70);
}

// One keep-alive connection: requests written whole, answers read with a buffer.
class connection {
public:
    connection(int port, double timeout_s) : port_(port), timeout_ms_(static_cast<int>(timeout_s * 1000)) {}
    ~connection() { close_fd(); }

    // GET path; returns the body's octets (the body itself is not kept) or -1 when the server had
    // closed the connection before answering (the caller reconnects and asks again).
    long get(const std::string& path) {
        if (fd_ < 0) open_fd();
        const std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n";
        std::size_t off = 0;
        while (off < req.size()) {
            const ssize_t n = ::send(fd_, req.data() + off, req.size() - off, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                close_fd();
                return -1;
            }
            off += static_cast<std::size_t>(n);
        }
        // Status line and headers.
        std::size_t hend;
        while ((hend = buf_.find("\r\n\r\n", pos_)) == std::string::npos) {
            if (!fill()) {
                if (buf_.size() == pos_) {  // closed before any answer: a stale keep-alive
                    close_fd();
                    return -1;
                }
                fail("connection closed inside the headers");
            }
        }
        const std::string head = buf_.substr(pos_, hend - pos_);
        pos_ = hend + 4;
        if (head.compare(0, 9, "HTTP/1.1 ") != 0 || head.compare(9, 3, "200") != 0)
            fail("not 200 for " + path + ": " + head.substr(0, head.find("\r\n")));
        std::string lower = head;
        std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
        const bool close_after = lower.find("\r\nconnection: close") != std::string::npos;
        long body = 0;
        if (lower.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
            while (true) {
                std::size_t eol;
                while ((eol = buf_.find("\r\n", pos_)) == std::string::npos)
                    if (!fill()) fail("connection closed inside a chunk size");
                const long size = std::strtol(buf_.c_str() + pos_, nullptr, 16);
                pos_ = eol + 2;
                if (size < 0) fail("bad chunk size");
                skip(static_cast<std::size_t>(size) + 2);  // the chunk and its CRLF
                body += size;
                if (size == 0) break;  // no trailers from either server
            }
        } else {
            const auto at = lower.find("\r\ncontent-length:");
            if (at == std::string::npos) fail("no length in the answer to " + path);
            body = std::strtol(lower.c_str() + at + 17, nullptr, 10);
            skip(static_cast<std::size_t>(body));
        }
        compact();
        if (close_after) close_fd();
        return body;
    }
    int reconnects = 0;

private:
    void open_fd() {
        if (opened_) ++reconnects;
        opened_ = true;
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        if (fd_ < 0) fail(std::string("socket: ") + std::strerror(errno));
        const int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(static_cast<std::uint16_t>(port_));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
            fail(std::string("connect: ") + std::strerror(errno));
        buf_.clear();
        pos_ = 0;
    }
    void close_fd() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
        buf_.clear();
        pos_ = 0;
    }
    // Reads more into buf_; false at end of stream.
    bool fill() {
        pollfd p{fd_, POLLIN, 0};
        const int r = ::poll(&p, 1, timeout_ms_);
        if (r == 0) fail("no answer within the timeout");
        char tmp[256 * 1024];
        while (true) {
            const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) fail(std::string("recv: ") + std::strerror(errno));
            if (n == 0) return false;
            buf_.append(tmp, static_cast<std::size_t>(n));
            return true;
        }
    }
    // Skips n octets of body, reading as needed (large bodies are not kept: compact as we go).
    void skip(std::size_t n) {
        while (buf_.size() - pos_ < n) {
            n -= buf_.size() - pos_;
            buf_.clear();
            pos_ = 0;
            if (!fill()) fail("connection closed inside a body");
        }
        pos_ += n;
    }
    void compact() {
        buf_.erase(0, pos_);
        pos_ = 0;
    }
    int port_;
    int timeout_ms_;
    int fd_ = -1;
    bool opened_ = false;
    std::string buf_;
    std::size_t pos_ = 0;
};

int list(const std::map<std::string, std::vector<std::string>>& a) {
    auto one = [&](const std::string& k, const std::string& def) {
        auto it = a.find(k);
        return it == a.end() ? def : it->second.back();
    };
    const int port = std::atoi(one("--port", "0").c_str());
    const int clients = std::max(1, std::atoi(one("--clients", "1").c_str()));
    const long max_listings = std::max(1L, std::atol(one("--max-listings", "1000").c_str()));
    const double seconds = std::atof(one("--seconds", "10").c_str());
    const double timeout = std::atof(one("--timeout", "60").c_str());
    const auto pit = a.find("--path");
    if (port <= 0 || pit == a.end()) fail("list needs --port and --path");
    const std::vector<std::string> paths = pit->second;

    std::atomic<long> claimed{0};
    std::mutex mu;
    std::vector<double> times;
    long requests = 0, min_bytes = -1, max_bytes = 0, sum_bytes = 0, done = 0;
    int reconnects = 0;
    const double cpu0 = cpu_self();
    const auto t0 = clk::now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c)
        threads.emplace_back([&] {
            connection conn(port, timeout);
            std::vector<double> mine;
            long my_requests = 0, my_min = -1, my_max = 0, my_sum = 0;
            while (secs_since(t0) < seconds && claimed.fetch_add(1) < max_listings) {
                const auto l0 = clk::now();
                long bytes = 0;
                for (const auto& p : paths) {
                    long b = conn.get(p);
                    if (b < 0) b = conn.get(p);  // once more on a fresh connection
                    if (b < 0) fail("the server closed a fresh connection before answering " + p);
                    bytes += b;
                    ++my_requests;
                }
                mine.push_back(secs_since(l0));
                my_min = my_min < 0 ? bytes : std::min(my_min, bytes);
                my_max = std::max(my_max, bytes);
                my_sum += bytes;
            }
            std::lock_guard lock(mu);
            times.insert(times.end(), mine.begin(), mine.end());
            requests += my_requests;
            done += static_cast<long>(mine.size());
            sum_bytes += my_sum;
            max_bytes = std::max(max_bytes, my_max);
            if (my_min >= 0) min_bytes = min_bytes < 0 ? my_min : std::min(min_bytes, my_min);
            reconnects += conn.reconnects;
        });
    for (auto& t : threads) t.join();
    const double secs = secs_since(t0);
    const double cpu = cpu_self() - cpu0;
    if (done == 0) fail("no listing done");
    std::sort(times.begin(), times.end());
    auto pct = [&](double q) {  // nearest rank
        const auto i = static_cast<std::size_t>(std::max(1.0, std::ceil(q * static_cast<double>(times.size()))) - 1);
        return times[std::min(i, times.size() - 1)] * 1000;
    };
    std::printf("listings=%ld secs=%.3f listings_per_s=%.2f requests=%ld bytes_per_listing=%ld min_bytes=%ld "
                "max_bytes=%ld p50_ms=%.2f p99_ms=%.2f reconnects=%d client_cpu=%.2f\n",
                done, secs, static_cast<double>(done) / secs, requests, sum_bytes / done, min_bytes, max_bytes,
                pct(0.5), pct(0.99), reconnects, cpu / secs);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::string(argv[1]) != "list") {
        std::fprintf(stderr, "usage: httpload list --port P --path PATH [--path PATH ...] [--clients N] "
                             "[--max-listings N] [--seconds S] [--timeout S]\n");
        return 64;
    }
    std::map<std::string, std::vector<std::string>> a;
    for (int i = 2; i < argc; ++i) {
        const std::string k = argv[i];
        if (k.rfind("--", 0) != 0 || i + 1 >= argc) {
            std::fprintf(stderr, "httpload: bad argument %s\n", argv[i]);
            return 64;
        }
        a[k].push_back(argv[++i]);
    }
    return list(a);
}
