// smtpload.cpp: bench/run smtp's own load tools (libc and libstdc++ only; built by bench/run
// with g++ -O2). Every loop is bounded in count and in time.
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
//       D/new and fsync it, unlink the tmp/ name; THREADS threads share COUNT files.
//       Prints "files=N threads=T secs=S per_s=R user_us_per_file=U sys_us_per_file=K" (its own CPU).
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

using clk = std::chrono::steady_clock;
double secs_since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }

double cpu_self() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

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
    const auto t0 = clk::now();
    auto worker = [&](int t) {
        const std::string newdir = dir + "/new";
        while (!error) {
            const long i = next.fetch_add(1);
            if (i >= count || secs_since(t0) > limit) return;
            const std::string name = std::to_string(getpid()) + "." + std::to_string(t) + "." + std::to_string(i);
            const std::string tmp = dir + "/tmp/" + name, fin = newdir + "/" + name;
            const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            bool ok = fd >= 0 && ::write(fd, body.data(), body.size()) == static_cast<ssize_t>(body.size()) &&
                      ::fsync(fd) == 0;
            if (fd >= 0 && ::close(fd) != 0) ok = false;
            ok = ok && ::link(tmp.c_str(), fin.c_str()) == 0;
            if (ok) {
                const int dfd = ::open(newdir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                ok = dfd >= 0 && ::fsync(dfd) == 0;
                if (dfd >= 0) ::close(dfd);
            }
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
    std::printf("files=%ld threads=%d secs=%.3f per_s=%.1f user_us_per_file=%.0f sys_us_per_file=%.0f\n", done.load(),
                threads, secs, done / secs, user * per, sys * per);
    return error ? 70 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: smtpload hold|fsync [--option value...]\n");
        return 64;
    }
    const std::string cmd = argv[1];
    const auto a = parse_args(argc, argv, 2);
    if (cmd == "hold") return hold(a);
    if (cmd == "fsync") return fsync_rate(a);
    std::fprintf(stderr, "smtpload: unknown command %s\n", cmd.c_str());
    return 64;
}
