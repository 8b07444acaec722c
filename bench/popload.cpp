// popload.cpp: the POP3 load client of bench/run (standalone: libc, libstdc++ and, for
// --tls, OpenSSL's libssl/libcrypto).
//
//   popload loopback --bytes N [--seconds T]
//       two processes (fork): the child blasts N bytes over a loopback TCP connection, the
//       parent receives them into the same buffer the RETR reader uses; what loopback carries.
//   popload retr --port P --user U --pass W [--batch 50] [--passes 1] [--seconds T] [--tls 0|1]
//       one session: USER/PASS, LIST, then RETR 1..N in pipelined batches; checks every body's
//       length against LIST; times the RETR phase only, then QUIT. --tls 1: implicit TLS
//       (pop3s), TLS 1.3 only, offering only --ciphersuite (TLS_AES_128_GCM_SHA256); the
//       server's certificate is not verified (a self-signed one on 127.0.0.1).
//   popload list --port P --user U --pass W [--seconds T] [--hold T] [--tls 0|1]
//       one session: connect, greeting, USER/PASS, STAT, LIST, UIDL (every reply read to its
//       end; the line counts and the LIST sizes checked against STAT), QUIT and its reply;
//       times the whole session from connect. --hold T: before QUIT print "listed ..." and wait
//       for a line on stdin (at most T s), so the caller can read the server's memory.
//   popload sessions --port P --prefix u --pass W [--first 1] [--clients 20]
//                    [--max-sessions N] [--seconds T]
//       CLIENTS threads, each with its own user (PREFIX<first+i>), loop: connect, greeting,
//       USER, PASS, STAT, QUIT, wait for the server's close; bounded in count and time.
//   popload idle --port P --prefix u --pass W [--first 1] [--count 1000] [--parallel 64]
//                [--seconds T] [--hold T]
//       opens COUNT sessions (at most PARALLEL logins in flight, poll, non-blocking), logs each
//       in, prints "ready ...", holds them until a line on stdin (or --hold seconds), QUITs.
//
// Every mode prints one line of key=value pairs on stdout; exit 0 only when all went well.
// Every loop is bounded in count and in time; every socket wait has a deadline.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

double now_s() { return std::chrono::duration<double>(clock_type::now().time_since_epoch()).count(); }

double cpu_s() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "popload: %s\n", what.c_str());
    std::exit(1);
}

struct options {
    std::map<std::string, std::string> kv;
    std::string get(const std::string& k, const std::string& def = {}) const {
        auto it = kv.find(k);
        if (it != kv.end()) return it->second;
        if (def.empty()) die("missing --" + k);
        return def;
    }
    long num(const std::string& k, const std::string& def = {}) const { return std::stol(get(k, def)); }
};

options parse(int argc, char** argv, int from) {
    options o;
    for (int i = from; i < argc; ++i) {
        std::string a = argv[i];
        if (a.rfind("--", 0) != 0 || i + 1 >= argc) die("bad argument " + a);
        o.kv[a.substr(2)] = argv[++i];
    }
    return o;
}

void raise_nofile() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

sockaddr_in loopback(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

void set_timeouts(int fd, int secs) {
    timeval tv{secs, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int connect_to(int port, int timeout_secs) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    set_timeouts(fd, timeout_secs);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto a = loopback(port);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

bool send_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
        ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}
bool send_all(int fd, const std::string& s) { return send_all(fd, s.data(), s.size()); }

// A connection: a socket, and the TLS session over it when --tls 1.
struct link {
    int fd = -1;
    SSL* ssl = nullptr;
};

bool send_all(link& l, const char* p, std::size_t n) {
    if (!l.ssl) return send_all(l.fd, p, n);
    while (n > 0) {
        const int w = SSL_write(l.ssl, p, static_cast<int>(std::min<std::size_t>(n, 1 << 20)));
        if (w <= 0) {
            const int e = SSL_get_error(l.ssl, w);
            if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ || (e == SSL_ERROR_SYSCALL && errno == EINTR))
                continue;
            return false;
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}
bool send_all(link& l, const std::string& s) { return send_all(l, s.data(), s.size()); }

// The client context of --tls 1: TLS 1.3 only, one cipher suite offered, no verification.
SSL_CTX* g_tls = nullptr;

void init_tls(const std::string& suite) {
    g_tls = SSL_CTX_new(TLS_client_method());
    if (!g_tls) die("tls: SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(g_tls, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(g_tls, TLS1_3_VERSION);
    if (SSL_CTX_set_ciphersuites(g_tls, suite.c_str()) != 1) die("tls: bad cipher suite " + suite);
    SSL_CTX_set_verify(g_tls, SSL_VERIFY_NONE, nullptr);
}

// Connects (and handshakes when --tls 1); fd -1 on failure.
link open_link(int port, int timeout_secs) {
    link l;
    l.fd = connect_to(port, timeout_secs);
    if (l.fd < 0 || !g_tls) return l;
    l.ssl = SSL_new(g_tls);
    if (!l.ssl || SSL_set_fd(l.ssl, l.fd) != 1 || SSL_connect(l.ssl) != 1) {
        ERR_print_errors_fp(stderr);
        if (l.ssl) SSL_free(l.ssl);
        ::close(l.fd);
        return link{};
    }
    return l;
}

void close_link(link& l) {
    if (l.ssl) {
        SSL_shutdown(l.ssl);
        SSL_free(l.ssl);
        l.ssl = nullptr;
    }
    if (l.fd >= 0) ::close(l.fd);
    l.fd = -1;
}

std::string tls_desc(const link& l) {
    if (!l.ssl) return "tls=none";
    return std::string("tls=") + SSL_get_version(l.ssl) + " cipher=" + SSL_get_cipher_name(l.ssl);
}

// A blocking connection with a receive buffer; every wait ends at the socket timeout or at
// the deadline, whichever comes first (the deadline is checked between receives).
class reader {
public:
    reader(const link& l, std::size_t cap, double deadline) : fd_(l.fd), ssl_(l.ssl), buf_(cap), deadline_(deadline) {}

    // Receives more bytes; false on EOF, error, timeout or deadline.
    bool fill() {
        if (now_s() > deadline_) return false;
        if (b_ > 0 && (e_ == buf_.size() || b_ > buf_.size() / 2)) {
            std::memmove(buf_.data(), buf_.data() + b_, e_ - b_);
            e_ -= b_;
            b_ = 0;
        }
        if (e_ == buf_.size()) buf_.resize(buf_.size() * 2);
        for (;;) {
            if (ssl_) {
                const int r = SSL_read(ssl_, buf_.data() + e_, static_cast<int>(std::min<std::size_t>(buf_.size() - e_, 1 << 30)));
                if (r > 0) {
                    e_ += static_cast<std::size_t>(r);
                    total_ += static_cast<std::uint64_t>(r);
                    return true;
                }
                const int e = SSL_get_error(ssl_, r);
                if (e == SSL_ERROR_WANT_READ || (e == SSL_ERROR_SYSCALL && errno == EINTR)) {
                    if (now_s() > deadline_) return false;
                    continue;
                }
                return false;
            }
            ssize_t r = ::recv(fd_, buf_.data() + e_, buf_.size() - e_, 0);
            if (r > 0) {
                e_ += static_cast<std::size_t>(r);
                total_ += static_cast<std::uint64_t>(r);
                return true;
            }
            if (r < 0 && errno == EINTR) continue;
            return false;
        }
    }

    // One CRLF-terminated line without its CRLF.
    bool line(std::string& out) {
        for (;;) {
            if (auto* nl = static_cast<char*>(std::memchr(buf_.data() + b_, '\n', e_ - b_))) {
                std::size_t end = static_cast<std::size_t>(nl - buf_.data());
                std::size_t len = end - b_;
                if (len > 0 && buf_[end - 1] == '\r') --len;
                out.assign(buf_.data() + b_, len);
                b_ = end + 1;
                prev_[0] = '\r';
                prev_[1] = '\n';
                return true;
            }
            if (!fill()) return false;
        }
    }

    // The body of a multi-line reply after its status line: octets up to the terminating
    // CRLF.CRLF, with dot-stuffing undone (the count LIST gives). Counts lines only when asked.
    bool body(std::uint64_t& octets, std::vector<std::string>* lines = nullptr) {
        octets = 0;
        std::string cur;
        for (;;) {
            char* base = buf_.data();
            char* dot = static_cast<char*>(std::memchr(base + b_, '.', e_ - b_));
            if (lines) {
                // Slow path (LIST, a few KiB): collect whole lines.
                std::size_t stop = dot ? static_cast<std::size_t>(dot - base) : e_;
                cur.append(base + b_, stop - b_);
            }
            if (!dot) {
                octets += e_ - b_;
                consume(e_ - b_);
                if (!fill()) return false;
                continue;
            }
            std::size_t q = static_cast<std::size_t>(dot - base);
            if (e_ - q < 3) {  // need the two bytes after the dot to decide
                octets += q - b_;
                consume(q - b_);
                if (!fill()) return false;
                continue;
            }
            bool line_start;
            if (q - b_ >= 2) line_start = base[q - 2] == '\r' && base[q - 1] == '\n';
            else if (q - b_ == 1) line_start = prev_[1] == '\r' && base[q - 1] == '\n';
            else line_start = prev_[0] == '\r' && prev_[1] == '\n';
            if (line_start && base[q + 1] == '\r' && base[q + 2] == '\n') {
                octets += q - b_;
                consume(q + 3 - b_);
                prev_[0] = '\r';
                prev_[1] = '\n';
                if (lines) split_lines(cur, *lines);
                return true;
            }
            if (line_start && base[q + 1] == '.') {  // a stuffed dot: not counted
                octets += q - b_;
                consume(q + 1 - b_);
                continue;
            }
            octets += q + 1 - b_;
            if (lines) cur += '.';
            consume(q + 1 - b_);
        }
    }

    std::uint64_t total() const { return total_; }

private:
    void consume(std::size_t n) {
        if (n >= 2) {
            prev_[0] = buf_[b_ + n - 2];
            prev_[1] = buf_[b_ + n - 1];
        } else if (n == 1) {
            prev_[0] = prev_[1];
            prev_[1] = buf_[b_];
        }
        b_ += n;
    }
    static void split_lines(const std::string& s, std::vector<std::string>& out) {
        std::size_t p = 0;
        while (p < s.size()) {
            std::size_t nl = s.find("\r\n", p);
            if (nl == std::string::npos) nl = s.size();
            out.push_back(s.substr(p, nl - p));
            p = nl + 2;
        }
    }

    int fd_;
    SSL* ssl_;
    std::vector<char> buf_;
    std::size_t b_ = 0, e_ = 0;
    char prev_[2] = {'\r', '\n'};
    double deadline_;
    std::uint64_t total_ = 0;
};

bool ok(const std::string& l) { return l.rfind("+OK", 0) == 0; }

bool command(link& fd, reader& r, const std::string& cmd, std::string* reply = nullptr) {
    std::string l;
    if (!send_all(fd, cmd + "\r\n") || !r.line(l)) return false;
    if (reply) *reply = l;
    return ok(l);
}

bool login(link& fd, reader& r, const std::string& user, const std::string& pass) {
    std::string l;
    if (!r.line(l) || !ok(l)) return false;
    return command(fd, r, "USER " + user) && command(fd, r, "PASS " + pass);
}

// ---- loopback -------------------------------------------------------------------------------
int mode_loopback(const options& o) {
    const std::uint64_t bytes = static_cast<std::uint64_t>(o.num("bytes", "1073741824"));
    const double seconds = static_cast<double>(o.num("seconds", "20"));
    int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    auto a = loopback(0);
    socklen_t alen = sizeof a;
    if (ls < 0 || ::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(ls, 1) != 0 ||
        ::getsockname(ls, reinterpret_cast<sockaddr*>(&a), &alen) != 0)
        die("loopback: cannot listen");
    const int port = ntohs(a.sin_port);
    pid_t child = ::fork();
    if (child < 0) die("fork");
    if (child == 0) {
        ::close(ls);
        int fd = connect_to(port, 10);
        if (fd < 0) ::_exit(2);
        std::vector<char> chunk(256 * 1024, 'x');
        const double deadline = now_s() + seconds;
        std::uint64_t sent = 0;
        while (sent < bytes && now_s() < deadline) {
            std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), bytes - sent));
            if (!send_all(fd, chunk.data(), n)) ::_exit(3);
            sent += n;
        }
        ::close(fd);
        ::_exit(0);
    }
    int fd = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) die("accept");
    set_timeouts(fd, 10);
    std::vector<char> buf(1024 * 1024);
    const double t0 = now_s(), c0 = cpu_s(), deadline = t0 + seconds + 5;
    std::uint64_t got = 0;
    for (;;) {
        ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
        if (r > 0) {
            got += static_cast<std::uint64_t>(r);
            if (now_s() > deadline) break;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        break;
    }
    const double secs = now_s() - t0, cpu = cpu_s() - c0;
    ::close(fd);
    int status = 0;
    ::waitpid(child, &status, 0);
    std::printf("mode=loopback bytes=%llu secs=%.4f MBps=%.1f receiver_cpu=%.2f\n",
                static_cast<unsigned long long>(got), secs, static_cast<double>(got) / secs / 1e6, cpu / secs);
    return got == bytes && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

// ---- retr ---------------------------------------------------------------------------------
int mode_retr(const options& o) {
    const int port = static_cast<int>(o.num("port"));
    const std::string user = o.get("user"), pass = o.get("pass");
    const long batch = o.num("batch", "50"), passes = o.num("passes", "1");
    const double deadline = now_s() + static_cast<double>(o.num("seconds", "120"));
    if (o.num("tls", "0")) init_tls(o.get("ciphersuite", "TLS_AES_128_GCM_SHA256"));
    const double session_t0 = now_s();  // session_secs: from the connect to the close after QUIT
    link fd = open_link(port, 30);
    if (fd.fd < 0) die("retr: cannot connect");
    reader r(fd, 1024 * 1024, deadline);
    if (!login(fd, r, user, pass)) die("retr: login failed");
    std::string st;
    std::vector<std::string> lines;
    std::uint64_t dummy = 0;
    if (!command(fd, r, "LIST", &st) || !r.body(dummy, &lines)) die("retr: LIST failed: " + st);
    std::vector<std::uint64_t> sizes;
    for (const auto& l : lines) sizes.push_back(std::stoull(l.substr(l.find(' ') + 1)));
    const long n = static_cast<long>(sizes.size());
    if (n == 0) die("retr: empty mailbox");

    const std::uint64_t before = r.total();
    const double t0 = now_s(), c0 = cpu_s();
    long done = 0, bad = 0;
    std::uint64_t body_octets = 0;
    std::string cmds, l;
    for (long p = 0; p < passes && now_s() < deadline; ++p) {
        for (long i = 1; i <= n && now_s() < deadline; i += batch) {
            const long last = std::min(n, i + batch - 1);
            cmds.clear();
            for (long k = i; k <= last; ++k) cmds += "RETR " + std::to_string(k) + "\r\n";
            if (!send_all(fd, cmds)) die("retr: send failed");
            for (long k = i; k <= last; ++k) {
                std::uint64_t octets = 0;
                if (!r.line(l)) die("retr: connection lost at " + std::to_string(k));
                if (!ok(l)) die("retr: RETR " + std::to_string(k) + ": " + l);
                if (!r.body(octets)) die("retr: body of " + std::to_string(k) + " cut short");
                if (octets != sizes[static_cast<std::size_t>(k - 1)]) ++bad;
                body_octets += octets;
                ++done;
            }
        }
    }
    const double secs = now_s() - t0, cpu = cpu_s() - c0;
    const std::uint64_t wire = r.total() - before;
    command(fd, r, "QUIT");
    const std::string tls = tls_desc(fd);
    close_link(fd);
    const double session_secs = now_s() - session_t0;
    std::printf("mode=retr msgs=%ld wire_bytes=%llu body_bytes=%llu secs=%.4f msgs_per_s=%.1f MBps=%.1f "
                "client_cpu=%.2f size_mismatches=%ld session_secs=%.4f %s\n",
                done, static_cast<unsigned long long>(wire), static_cast<unsigned long long>(body_octets), secs,
                static_cast<double>(done) / secs, static_cast<double>(wire) / secs / 1e6, cpu / secs, bad,
                session_secs, tls.c_str());
    return bad == 0 && done == n * passes ? 0 : 1;
}

// ---- list ---------------------------------------------------------------------------------
// Reads a multi-line reply's lines up to the terminating ".", counting them and summing the
// second field (LIST's sizes); false on a lost connection.
bool listing(reader& r, long& lines, std::uint64_t& sum) {
    std::string l;
    lines = 0;
    sum = 0;
    for (;;) {
        if (!r.line(l)) return false;
        if (l == ".") return true;
        ++lines;
        const auto sp = l.find(' ');
        if (sp != std::string::npos) sum += std::strtoull(l.c_str() + sp + 1, nullptr, 10);
    }
}

int mode_list(const options& o) {
    const int port = static_cast<int>(o.num("port"));
    const std::string user = o.get("user"), pass = o.get("pass");
    const double deadline = now_s() + static_cast<double>(o.num("seconds", "120"));
    const long hold = o.num("hold", "0");
    if (o.num("tls", "0")) init_tls(o.get("ciphersuite", "TLS_AES_128_GCM_SHA256"));
    const double t0 = now_s(), c0 = cpu_s();
    link fd = open_link(port, 60);
    if (fd.fd < 0) die("list: cannot connect");
    reader r(fd, 1024 * 1024, deadline);
    if (!login(fd, r, user, pass)) die("list: login failed");
    const double t_login = now_s();
    std::string st;
    if (!command(fd, r, "STAT", &st)) die("list: STAT: " + st);
    long n = 0;
    unsigned long long octets = 0;
    if (std::sscanf(st.c_str(), "+OK %ld %llu", &n, &octets) != 2) die("list: STAT reply: " + st);
    const double t_stat = now_s();
    long list_lines = 0, uidl_lines = 0;
    std::uint64_t list_sum = 0, uidl_sum = 0;
    if (!command(fd, r, "LIST", &st) || !listing(r, list_lines, list_sum)) die("list: LIST failed: " + st);
    const double t_list = now_s();
    if (!command(fd, r, "UIDL", &st) || !listing(r, uidl_lines, uidl_sum)) die("list: UIDL failed: " + st);
    const double t_uidl = now_s();
    const double cpu = cpu_s() - c0;
    if (hold > 0) {
        std::printf("listed msgs=%ld\n", n);
        std::fflush(stdout);
        pollfd in{0, POLLIN, 0};
        ::poll(&in, 1, static_cast<int>(hold * 1000));
    }
    const double t_quit0 = now_s();
    if (!command(fd, r, "QUIT", &st)) die("list: QUIT: " + st);
    const double t1 = now_s();
    const std::string tls = tls_desc(fd);
    close_link(fd);
    const bool fine = list_lines == n && uidl_lines == n && list_sum == octets;
    // With --hold, the whole-session time leaves out the wait.
    const double secs = (t1 - t0) - (t_quit0 - t_uidl);
    std::printf("mode=list msgs=%ld octets=%llu list_lines=%ld uidl_lines=%ld list_sum=%llu secs=%.4f "
                "login_secs=%.4f stat_secs=%.4f list_secs=%.4f uidl_secs=%.4f quit_secs=%.4f client_cpu=%.2f %s\n",
                n, octets, list_lines, uidl_lines, static_cast<unsigned long long>(list_sum), secs, t_login - t0,
                t_stat - t_login, t_list - t_stat, t_uidl - t_list, t1 - t_quit0, cpu / secs, tls.c_str());
    if (!fine) std::fprintf(stderr, "popload: list: counts do not match STAT\n");
    return fine ? 0 : 1;
}

// ---- sessions -----------------------------------------------------------------------------
int mode_sessions(const options& o) {
    const int port = static_cast<int>(o.num("port"));
    const std::string prefix = o.get("prefix"), pass = o.get("pass");
    const long first = o.num("first", "1"), clients = o.num("clients", "20");
    const long max_sessions = o.num("max-sessions", "5000");
    const double seconds = static_cast<double>(o.num("seconds", "10"));
    std::atomic<long> claimed{0}, good{0}, failed{0};
    const double t0 = now_s(), c0 = cpu_s(), deadline = t0 + seconds;
    std::vector<std::thread> threads;
    for (long c = 0; c < clients; ++c) {
        threads.emplace_back([&, c] {
            const std::string user = prefix + std::to_string(first + c);
            std::string l;
            while (now_s() < deadline && claimed.fetch_add(1) < max_sessions) {
                bool fine = false;
                link fd{connect_to(port, 10), nullptr};
                if (fd.fd >= 0) {
                    reader r(fd, 4096, deadline + 10);
                    fine = login(fd, r, user, pass) && command(fd, r, "STAT") && command(fd, r, "QUIT");
                    // Wait for the server's close, so TIME_WAIT stays on its side.
                    if (fine) while (r.fill()) {}
                    ::close(fd.fd);
                }
                (fine ? good : failed).fetch_add(1);
                if (failed.load() > 100) break;
            }
        });
    }
    for (auto& t : threads) t.join();
    const double secs = now_s() - t0, cpu = cpu_s() - c0;
    std::printf("mode=sessions sessions=%ld failed=%ld secs=%.4f sessions_per_s=%.1f client_cpu=%.2f\n",
                good.load(), failed.load(), secs, static_cast<double>(good.load()) / secs, cpu / secs);
    return failed.load() == 0 ? 0 : 1;
}

// ---- idle ---------------------------------------------------------------------------------
int mode_idle(const options& o) {
    const int port = static_cast<int>(o.num("port"));
    const std::string prefix = o.get("prefix"), pass = o.get("pass");
    const long first = o.num("first", "1"), count = o.num("count", "1000");
    const long parallel = o.num("parallel", "64");
    const double seconds = static_cast<double>(o.num("seconds", "120"));
    const int hold_ms = static_cast<int>(o.num("hold", "300") * 1000);

    enum class st { connecting, greeting, user, pass, ready, failed };
    struct conn {
        int fd = -1;
        st state = st::connecting;
        std::string in;
    };
    std::vector<conn> cs(static_cast<std::size_t>(count));
    const double t0 = now_s(), deadline = t0 + seconds;
    long next = 0, inflight = 0, ready = 0, failed = 0;
    auto fail = [&](conn& c) {
        if (c.fd >= 0) ::close(c.fd);
        c.fd = -1;
        c.state = st::failed;
        --inflight;
        ++failed;
    };
    auto start = [&](conn& c) {
        c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ++inflight;
        if (c.fd < 0) return fail(c);
        auto a = loopback(port);
        if (::connect(c.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) fail(c);
    };
    std::vector<pollfd> pfds;
    std::vector<std::size_t> idx;
    while ((ready + failed) < count && now_s() < deadline) {
        while (inflight < parallel && next < count) start(cs[static_cast<std::size_t>(next++)]);
        pfds.clear();
        idx.clear();
        for (std::size_t i = 0; i < static_cast<std::size_t>(next); ++i) {
            auto& c = cs[i];
            if (c.state == st::ready || c.state == st::failed) continue;
            pfds.push_back({c.fd, static_cast<short>(c.state == st::connecting ? POLLOUT : POLLIN), 0});
            idx.push_back(i);
        }
        if (pfds.empty()) continue;
        if (::poll(pfds.data(), pfds.size(), 1000) < 0 && errno != EINTR) die("poll");
        for (std::size_t k = 0; k < pfds.size(); ++k) {
            if (!pfds[k].revents) continue;
            auto& c = cs[idx[k]];
            if (c.state == st::connecting) {
                int err = 0;
                socklen_t len = sizeof err;
                ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) fail(c);
                else c.state = st::greeting;
                continue;
            }
            char buf[1024];
            ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                fail(c);
                continue;
            }
            c.in.append(buf, static_cast<std::size_t>(r));
            std::size_t nl;
            while (c.state != st::failed && (nl = c.in.find("\r\n")) != std::string::npos) {
                const std::string l = c.in.substr(0, nl);
                c.in.erase(0, nl + 2);
                if (!ok(l)) {
                    std::fprintf(stderr, "popload: idle: %s%ld: %s\n", prefix.c_str(),
                                 first + static_cast<long>(idx[k]), l.c_str());
                    fail(c);
                    break;
                }
                std::string cmd;
                if (c.state == st::greeting) cmd = "USER " + prefix + std::to_string(first + static_cast<long>(idx[k]));
                else if (c.state == st::user) cmd = "PASS " + pass;
                if (c.state == st::pass) {
                    c.state = st::ready;
                    --inflight;
                    ++ready;
                    std::string().swap(c.in);
                    break;
                }
                if (!send_all(c.fd, cmd + "\r\n")) {
                    fail(c);
                    break;
                }
                c.state = c.state == st::greeting ? st::user : st::pass;
            }
        }
    }
    const double secs = now_s() - t0;
    std::printf("ready sessions=%ld failed=%ld secs=%.3f logins_per_s=%.1f\n", ready, failed, secs,
                static_cast<double>(ready) / secs);
    std::fflush(stdout);
    // Hold until a line on stdin (or EOF), bounded by --hold.
    pollfd in{0, POLLIN, 0};
    ::poll(&in, 1, hold_ms);
    long quit_ok = 0;
    for (auto& c : cs) {
        if (c.state != st::ready) continue;
        // A session that died while held is counted: the measurement would be wrong.
        char probe;
        if (::recv(c.fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT) == 0) continue;
        if (send_all(c.fd, "QUIT\r\n", 6)) ++quit_ok;
    }
    for (auto& c : cs)
        if (c.fd >= 0) ::close(c.fd);
    std::printf("done held=%ld\n", quit_ok);
    return failed == 0 && quit_ok == ready ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    ::signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (argc < 2) die("usage: popload loopback|retr|list|sessions|idle --key value ...");
    const std::string mode = argv[1];
    try {
        const options o = parse(argc, argv, 2);
        if (mode == "loopback") return mode_loopback(o);
        if (mode == "retr") return mode_retr(o);
        if (mode == "list") return mode_list(o);
        if (mode == "sessions") return mode_sessions(o);
        if (mode == "idle") return mode_idle(o);
    } catch (const std::exception& e) {
        die(std::string("bad option value: ") + e.what());
    }
    die("unknown mode " + mode);
}
