// smtpload.cpp: the load tools of bench/run smtp and bench/mailnetdrun (libc and libstdc++ only;
// built by them with g++ -O2). Every loop is bounded in count and in time.
//
//   smtpload hold --port P [--sessions 1000] [--size 4096] [--seconds 120] [--wait]
//       opens SESSIONS connections to 127.0.0.1:P (at most 128 waiting for their greeting at
//       once) and holds them; once every one has its 220 greeting it prints
//       "ready sessions=N connect_secs=S" (with --wait it then waits for a line on stdin), and
//       then all of them at once do EHLO, MAIL, RCPT, DATA of one SIZE-octet message (its
//       header X-Bench-Seq: I, I = 0..N-1, so a delivery can be checked exactly once), QUIT.
//       Prints "sessions=N delivered=D failed=F connect_secs=S data_secs=S msgs_per_s=R client_cpu=C".
//   smtpload fsync --dir D [--threads 1] [--count 2000] [--size 4096] [--seconds 20]
//       the disk's fsync'd Maildir write, as mailnet's Maildir store does it per message: open
//       D/tmp/NAME (O_CREAT|O_EXCL), write SIZE octets, fsync, close, link into D/new/, open
//       D/new and fsync it, unlink the tmp/ name; THREADS threads share COUNT files. Prints the
//       rate and, per file, the time of the fsync, link and fsync of new/ (flush_us_per_file).
//       Prints "files=N threads=T secs=S per_s=R user_us_per_file=U sys_us_per_file=K" (its own CPU).
//   smtpload probe --port P --rcpt ADDR (--pop3-port Q --user U --pass W
//                  | --http-port H [--http-path /api/email?subject=])
//                  [--count 200] [--seconds 60] [--probe-seconds 10] [--size 4096] [--out FILE]
//       send-to-visible latency, one probe after another (open loop per probe): a new SMTP
//       connection delivers one SIZE-octet message to ADDR (Subject: probe-PID-I); from its 250
//       on, new sessions poll until the message can be fetched: POP3 (USER, PASS, STAT, QUIT on
//       a new connection each time; visible when STAT counts the mailbox's messages before the
//       probes plus I+1: the mailbox must get nothing else) or HTTP (GET
//       HTTP-PATH + probe-PID-I on a new connection: MailDev 3's REST API filter; visible when
//       the reply is 200 and its body names the subject). The SMTP session's QUIT follows.
//       Latency = from the 250 read to the reply that shows the message. At most COUNT probes,
//       SECONDS in all, PROBE-SECONDS each (a probe not visible by then fails the run).
//       Prints "probes=N failed=F p50_ms= p90_ms= p99_ms= max_ms= mean_ms= polls_mean= send_p50_ms=
//       e2e_p50_ms= e2e_p99_ms= secs=" (send: SMTP connect to 250; e2e: SMTP connect to visible)
//       and with --out one line per probe: "latency_ms polls send_ms".
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/time.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "benchclock.hpp"

namespace {

using benchclock::clk;
using benchclock::cpu_self;
using benchclock::secs_since;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "smtpload: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(70);
}

std::map<std::string, std::string> parse_args(int argc, char** argv, int from) {
    std::map<std::string, std::string> a;
    for (int i = from; i < argc; ++i) {
        std::string k = argv[i];
        if (k.rfind("--", 0) != 0) {
            std::fprintf(stderr, "smtpload: unexpected %s\n", argv[i]);
            std::exit(64);
        }
        if (k == "--wait") {
            a[k] = "1";
            continue;
        }
        if (i + 1 >= argc) {
            std::fprintf(stderr, "smtpload: %s needs a value\n", argv[i]);
            std::exit(64);
        }
        a[k] = argv[++i];
    }
    return a;
}
long num(const std::map<std::string, std::string>& a, const std::string& k, long def) {
    auto it = a.find(k);
    return it == a.end() ? def : std::strtol(it->second.c_str(), nullptr, 10);
}

// ---- hold ------------------------------------------------------------------------------------
enum class st { connecting, greeting, idle, ehlo, mail, rcpt, data, body, quit, done, failed };

struct session {
    int fd = -1;
    st state = st::connecting;
    std::string in, out;
    std::size_t out_pos = 0;
    int index = 0;
};

std::string message(int index, std::size_t size) {
    std::string m = "From: <bench@example.com>\r\nTo: <rcpt@example.com>\r\nSubject: hold " + std::to_string(index) +
                    "\r\nMessage-ID: <hold." + std::to_string(index) + "@bench.example>\r\nX-Bench-Seq: " +
                    std::to_string(index) + "\r\n\r\n";
    const std::string line = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\r\n";
    while (m.size() + line.size() <= size) m += line;
    while (m.size() + 2 < size) m += 'x';
    m += "\r\n";
    return m + ".\r\n";
}

// The complete reply at the front of `in` (multi-line: up to the "NNN " line): its code, or 0.
int take_reply(std::string& in) {
    std::size_t pos = 0;
    while (true) {
        const auto eol = in.find("\r\n", pos);
        if (eol == std::string::npos) return 0;
        if (eol - pos < 3) return -1;
        const bool last = eol - pos == 3 || in[pos + 3] == ' ';
        if (last) {
            const int code = std::atoi(in.substr(pos, 3).c_str());
            in.erase(0, eol + 2);
            return code;
        }
        pos = eol + 2;
    }
}

int hold(const std::map<std::string, std::string>& a) {
    const int port = static_cast<int>(num(a, "--port", 0));
    const int n = static_cast<int>(num(a, "--sessions", 1000));
    const auto size = static_cast<std::size_t>(num(a, "--size", 4096));
    const double limit = static_cast<double>(num(a, "--seconds", 120));
    const bool wait = a.count("--wait") != 0;
    const auto t0 = clk::now();
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    std::vector<session> s(static_cast<std::size_t>(n));
    int started = 0, greeted = 0, delivered = 0, failed = 0, finished = 0;
    auto fail = [&](session& x, const char* why) {
        if (failed < 5) std::fprintf(stderr, "smtpload: session %d failed: %s\n", x.index, why);
        if (x.fd >= 0) ::close(x.fd);
        x.fd = -1;
        x.state = st::failed;
        ++failed;
        ++finished;
    };
    auto send = [](session& x, std::string text) {
        x.out += text;
    };
    bool go = false;
    double connect_secs = 0;
    clk::time_point t_data{};
    std::vector<pollfd> pfd;
    std::vector<int> who;
    while (finished < n) {
        if (secs_since(t0) > limit) {
            std::fprintf(stderr, "smtpload: time limit: %d of %d sessions not finished\n", n - finished, n);
            break;
        }
        // Connect more while fewer than 128 wait for their greeting.
        while (started < n && started - greeted - (failed) < 128) {
            session& x = s[static_cast<std::size_t>(started)];
            x.index = started++;
            x.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (x.fd < 0) die("socket");
            int one = 1;
            ::setsockopt(x.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (::connect(x.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 && errno != EINPROGRESS) {
                fail(x, "connect");
                continue;
            }
            x.state = st::greeting;
        }
        if (!go && greeted + failed == n) {
            connect_secs = secs_since(t0);
            std::printf("ready sessions=%d failed=%d connect_secs=%.3f\n", greeted, failed, connect_secs);
            std::fflush(stdout);
            if (wait) {
                std::string line;
                std::getline(std::cin, line);
            }
            go = true;
            t_data = clk::now();
            for (auto& x : s)
                if (x.state == st::idle) {
                    send(x, "EHLO load" + std::to_string(x.index) + ".bench.example\r\n");
                    x.state = st::ehlo;
                }
        }
        pfd.clear();
        who.clear();
        for (auto& x : s) {
            if (x.fd < 0) continue;
            short ev = POLLIN;
            if (x.out_pos < x.out.size()) ev |= POLLOUT;
            pfd.push_back({x.fd, ev, 0});
            who.push_back(x.index);
        }
        if (pfd.empty()) {
            if (started < n) continue;
            break;
        }
        const int r = ::poll(pfd.data(), pfd.size(), 200);
        if (r < 0 && errno != EINTR) die("poll");
        for (std::size_t i = 0; r > 0 && i < pfd.size(); ++i) {
            session& x = s[static_cast<std::size_t>(who[i])];
            if (pfd[i].revents == 0 || x.fd < 0) continue;
            if (pfd[i].revents & POLLOUT) {
                const auto w = ::send(x.fd, x.out.data() + x.out_pos, x.out.size() - x.out_pos, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) {
                    fail(x, "send");
                    continue;
                }
                if (w > 0) x.out_pos += static_cast<std::size_t>(w);
                if (x.out_pos == x.out.size()) {
                    x.out.clear();
                    x.out_pos = 0;
                }
            }
            if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                char buf[8192];
                const auto got = ::recv(x.fd, buf, sizeof buf, 0);
                if (got < 0 && errno == EAGAIN) continue;
                if (got <= 0) {
                    if (x.state == st::quit) {
                        ::close(x.fd);
                        x.fd = -1;
                        x.state = st::done;
                        ++finished;
                    } else {
                        fail(x, got == 0 ? "closed by the server" : "recv");
                    }
                    continue;
                }
                x.in.append(buf, static_cast<std::size_t>(got));
                for (int code; x.fd >= 0 && (code = take_reply(x.in)) != 0;) {
                    auto expect = [&](int want, st next, const std::string& text) {
                        if (code != want) {
                            const std::string why = "reply " + std::to_string(code) + " in state " +
                                                    std::to_string(static_cast<int>(x.state));
                            fail(x, why.c_str());
                            return;
                        }
                        x.state = next;
                        send(x, text);
                    };
                    switch (x.state) {
                        case st::greeting:
                            if (code != 220) {
                                fail(x, "greeting");
                                break;
                            }
                            ++greeted;
                            x.state = st::idle;
                            break;
                        case st::ehlo: expect(250, st::mail, "MAIL FROM:<bench@example.com>\r\n"); break;
                        case st::mail: expect(250, st::rcpt, "RCPT TO:<rcpt@example.com>\r\n"); break;
                        case st::rcpt: expect(250, st::data, "DATA\r\n"); break;
                        case st::data: expect(354, st::body, message(x.index, size)); break;
                        case st::body:
                            expect(250, st::quit, "QUIT\r\n");
                            if (x.state == st::quit) ++delivered;
                            break;
                        case st::quit:
                            if (code != 221) fail(x, "QUIT");
                            break;
                        default: fail(x, "unexpected reply"); break;
                    }
                }
            }
        }
    }
    const double data_secs = go ? secs_since(t_data) : 0;
    for (auto& x : s)
        if (x.fd >= 0) ::close(x.fd);
    std::printf("sessions=%d delivered=%d failed=%d connect_secs=%.3f data_secs=%.3f msgs_per_s=%.1f client_cpu=%.2f\n",
                n, delivered, failed + (n - finished), connect_secs, data_secs,
                data_secs > 0 ? delivered / data_secs : 0.0, cpu_self() / secs_since(t0));
    return delivered == n ? 0 : 1;
}

// ---- fsync -------------------------------------------------------------------------------------
int fsync_rate(const std::map<std::string, std::string>& a) {
    const auto it = a.find("--dir");
    if (it == a.end()) {
        std::fprintf(stderr, "smtpload fsync: --dir is required\n");
        return 64;
    }
    const std::string dir = it->second;
    const int threads = static_cast<int>(num(a, "--threads", 1));
    const long count = num(a, "--count", 2000);
    const auto size = static_cast<std::size_t>(num(a, "--size", 4096));
    const double limit = static_cast<double>(num(a, "--seconds", 20));
    ::mkdir(dir.c_str(), 0755);
    ::mkdir((dir + "/tmp").c_str(), 0755);
    ::mkdir((dir + "/new").c_str(), 0755);
    const std::string body(size, 'x');
    std::atomic<long> next{0}, done{0};
    std::atomic<bool> error{false};
    std::atomic<long long> flush_ns{0};
    const auto t0 = clk::now();
    auto worker = [&](int t) {
        const std::string newdir = dir + "/new";
        while (!error) {
            const long i = next.fetch_add(1);
            if (i >= count || secs_since(t0) > limit) return;
            const std::string name = std::to_string(getpid()) + "." + std::to_string(t) + "." + std::to_string(i);
            const std::string tmp = dir + "/tmp/" + name, fin = newdir + "/" + name;
            const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            bool ok = fd >= 0 && ::write(fd, body.data(), body.size()) == static_cast<ssize_t>(body.size());
            // flush_us_per_file: the steps that must follow a message's last octet one after the
            // other (its data's flush, its link, new/'s flush); open, write, close could overlap
            // the message's transfer.
            auto t_flush = clk::now();
            ok = ok && ::fsync(fd) == 0;
            auto flushing = clk::now() - t_flush;
            if (fd >= 0 && ::close(fd) != 0) ok = false;
            if (ok) {
                const int dfd = ::open(newdir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                t_flush = clk::now();
                ok = ::link(tmp.c_str(), fin.c_str()) == 0 && dfd >= 0 && ::fsync(dfd) == 0;
                flushing += clk::now() - t_flush;
                if (dfd >= 0) ::close(dfd);
            }
            flush_ns.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(flushing).count());
            ::unlink(tmp.c_str());
            if (!ok) {
                std::perror("smtpload fsync");
                error = true;
                return;
            }
            done.fetch_add(1);
        }
    };
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back(worker, t);
    for (auto& t : pool) t.join();
    const double secs = secs_since(t0);
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const double user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    const double per = done > 0 ? 1e6 / static_cast<double>(done.load()) : 0;
    std::printf("files=%ld threads=%d secs=%.3f per_s=%.1f user_us_per_file=%.0f sys_us_per_file=%.0f flush_us_per_file=%.0f\n",
                done.load(), threads, secs, done / secs, user * per, sys * per,
                static_cast<double>(flush_ns.load()) / 1e3 * per / 1e6);
    return error ? 70 : 0;
}

// ---- probe ------------------------------------------------------------------------------------
// Blocking line-oriented client sockets with a receive timeout.
struct conn {
    int fd = -1;
    std::string in;
    conn() = default;
    conn(const conn&) = delete;
    conn& operator=(const conn&) = delete;
    ~conn() {
        if (fd >= 0) ::close(fd);
    }
    bool open(int port, double timeout) {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) die("socket");
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        timeval tv{};
        tv.tv_sec = static_cast<time_t>(timeout);
        tv.tv_usec = static_cast<suseconds_t>((timeout - static_cast<double>(tv.tv_sec)) * 1e6);
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(static_cast<std::uint16_t>(port));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    }
    bool put(const std::string& text) {
        std::size_t pos = 0;
        while (pos < text.size()) {
            const auto w = ::send(fd, text.data() + pos, text.size() - pos, MSG_NOSIGNAL);
            if (w <= 0) return false;
            pos += static_cast<std::size_t>(w);
        }
        return true;
    }
    bool fill() {  // false on EOF, error or timeout
        char buf[16384];
        const auto got = ::recv(fd, buf, sizeof buf, 0);
        if (got <= 0) return false;
        in.append(buf, static_cast<std::size_t>(got));
        return true;
    }
    int smtp_reply() {  // the next complete SMTP reply's code, -1 on failure
        for (int code; true;) {
            if ((code = take_reply(in)) != 0) return code;
            if (!fill()) return -1;
        }
    }
    bool line(std::string& out) {  // the next CRLF line (POP3 status lines)
        while (true) {
            const auto eol = in.find("\r\n");
            if (eol != std::string::npos) {
                out = in.substr(0, eol);
                in.erase(0, eol + 2);
                return true;
            }
            if (!fill()) return false;
        }
    }
    bool rest() {  // everything until the peer closes
        while (fill()) {
        }
        return true;
    }
};

// One POP3 session: USER, PASS, STAT; the message count, or -1.
long pop3_stat(int port, const std::string& user, const std::string& pass, double timeout) {
    conn c;
    if (!c.open(port, timeout)) return -1;
    std::string l;
    if (!c.line(l) || l.rfind("+OK", 0) != 0) return -1;
    if (!c.put("USER " + user + "\r\n") || !c.line(l) || l.rfind("+OK", 0) != 0) return -1;
    if (!c.put("PASS " + pass + "\r\n") || !c.line(l) || l.rfind("+OK", 0) != 0) return -1;
    if (!c.put("STAT\r\n") || !c.line(l) || l.rfind("+OK ", 0) != 0) return -1;
    const long n = std::strtol(l.c_str() + 4, nullptr, 10);
    c.put("QUIT\r\n");
    c.line(l);
    return n;
}

// One HTTP/1.1 GET on a new connection: 1 if the reply is 200 and names `needle`, 0 if not, -1 on failure.
int http_has(int port, const std::string& path, const std::string& needle, double timeout) {
    conn c;
    if (!c.open(port, timeout)) return -1;
    if (!c.put("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: close\r\n\r\n"))
        return -1;
    c.rest();
    if (c.in.rfind("HTTP/1.1 200", 0) != 0) return -1;
    const auto body = c.in.find("\r\n\r\n");
    return body != std::string::npos && c.in.find(needle, body) != std::string::npos ? 1 : 0;
}

int probe(const std::map<std::string, std::string>& a) {
    const int port = static_cast<int>(num(a, "--port", 0));
    const int pop3_port = static_cast<int>(num(a, "--pop3-port", 0));
    const int http_port = static_cast<int>(num(a, "--http-port", 0));
    const long count = num(a, "--count", 200);
    const double limit = static_cast<double>(num(a, "--seconds", 60));
    const double per_probe = static_cast<double>(num(a, "--probe-seconds", 10));
    const auto size = static_cast<std::size_t>(num(a, "--size", 4096));
    const auto get = [&](const char* k) {
        const auto it = a.find(k);
        return it == a.end() ? std::string() : it->second;
    };
    const std::string rcpt = get("--rcpt"), user = get("--user"), pass = get("--pass"), out_file = get("--out");
    const std::string http_path = a.count("--http-path") ? get("--http-path") : "/api/email?subject=";
    if (port <= 0 || rcpt.empty() || (pop3_port > 0) == (http_port > 0) || (pop3_port > 0 && user.empty())) {
        std::fprintf(stderr, "smtpload probe: --port, --rcpt and either --pop3-port with --user/--pass or --http-port\n");
        return 64;
    }
    long base = 0;
    if (pop3_port > 0 && (base = pop3_stat(pop3_port, user, pass, per_probe)) < 0) {
        std::fprintf(stderr, "smtpload probe: the first POP3 session failed\n");
        return 70;
    }
    const std::string body_line = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\r\n";
    std::vector<double> lat, send_ms, e2e;
    std::vector<long> polls_of;
    long failed = 0;
    const auto t0 = clk::now();
    for (long i = 0; i < count && secs_since(t0) < limit; ++i) {
        const std::string subject = "probe-" + std::to_string(getpid()) + "-" + std::to_string(i);
        std::string m = "From: <probe@example.com>\r\nTo: <" + rcpt + ">\r\nSubject: " + subject + "\r\nMessage-ID: <" +
                        subject + "@bench.example>\r\n\r\n";
        while (m.size() + body_line.size() <= size) m += body_line;
        while (m.size() + 2 < size) m += 'x';
        m += "\r\n.\r\n";
        const auto ts = clk::now();
        conn s;
        const bool sent = s.open(port, per_probe) && s.smtp_reply() == 220 && s.put("EHLO probe.bench.example\r\n") &&
                          s.smtp_reply() == 250 && s.put("MAIL FROM:<probe@example.com>\r\n") && s.smtp_reply() == 250 &&
                          s.put("RCPT TO:<" + rcpt + ">\r\n") && s.smtp_reply() == 250 && s.put("DATA\r\n") &&
                          s.smtp_reply() == 354 && s.put(m) && s.smtp_reply() == 250;
        const auto t250 = clk::now();
        if (!sent) {
            std::fprintf(stderr, "smtpload probe %ld: the SMTP delivery failed\n", i);
            ++failed;
            break;
        }
        long polls = 0;
        bool seen = false;
        while (!seen && secs_since(t250) < per_probe) {
            ++polls;
            if (pop3_port > 0) {
                const long n = pop3_stat(pop3_port, user, pass, per_probe);
                seen = n >= base + i + 1;
            } else {
                seen = http_has(http_port, http_path + subject, subject, per_probe) == 1;
            }
        }
        const auto tv = clk::now();
        s.put("QUIT\r\n");
        s.smtp_reply();
        if (!seen) {
            std::fprintf(stderr, "smtpload probe %ld: not visible after %.0f s (%ld polls)\n", i, per_probe, polls);
            ++failed;
            break;
        }
        lat.push_back(std::chrono::duration<double, std::milli>(tv - t250).count());
        send_ms.push_back(std::chrono::duration<double, std::milli>(t250 - ts).count());
        e2e.push_back(std::chrono::duration<double, std::milli>(tv - ts).count());
        polls_of.push_back(polls);
    }
    if (!out_file.empty()) {
        if (FILE* f = std::fopen(out_file.c_str(), "w")) {
            for (std::size_t i = 0; i < lat.size(); ++i) std::fprintf(f, "%.3f %ld %.3f\n", lat[i], polls_of[i], send_ms[i]);
            std::fclose(f);
        }
    }
    auto pct = [](std::vector<double> v, double p) {
        if (v.empty()) return 0.0;
        std::sort(v.begin(), v.end());
        // nearest rank
        auto k = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
        return v[k == 0 ? 0 : k - 1];
    };
    double sum = 0, psum = 0;
    for (double x : lat) sum += x;
    for (long x : polls_of) psum += static_cast<double>(x);
    const double n = lat.empty() ? 1 : static_cast<double>(lat.size());
    std::printf("probes=%zu failed=%ld p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f mean_ms=%.3f polls_mean=%.2f "
                "send_p50_ms=%.3f e2e_p50_ms=%.3f e2e_p99_ms=%.3f secs=%.2f\n",
                lat.size(), failed, pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 100), sum / n, psum / n,
                pct(send_ms, 50), pct(e2e, 50), pct(e2e, 99), secs_since(t0));
    return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: smtpload hold|fsync|probe [--option value...]\n");
        return 64;
    }
    const std::string cmd = argv[1];
    const auto a = parse_args(argc, argv, 2);
    if (cmd == "hold") return hold(a);
    if (cmd == "fsync") return fsync_rate(a);
    if (cmd == "probe") return probe(a);
    std::fprintf(stderr, "smtpload: unknown command %s\n", cmd.c_str());
    return 64;
}
