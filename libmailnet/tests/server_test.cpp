// server_test.cpp: the server base over real loopback sockets: port 0, the registry,
// up/down/destroy(kill|defer), the connection limit, idle timeout, the blocking pool,
// accept back-off on EMFILE, SIGTERM/SIGINT shutdown, implicit TLS listeners (RFC 8314 3.3).
#include "mailnet/net/server.hpp"
#include "mailnet/net/stream.hpp"
#include "mailnet/net/tls.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/executor_work_guard.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "support/test_client.hpp"
#include "test_certs.hpp"

namespace {

using namespace std::chrono_literals;
using mailnet::net::server;

using client = mailnet::testing::test_client;

// An echo session: greets, echoes lines until "QUIT", records state and user.
asio::awaitable<void> echo_session(mailnet::net::connection& c) {
    c.set_state("GREETING");
    co_await c.write(asio::buffer(std::string_view("hello\r\n")));
    char buf[1024];
    for (;;) {
        std::error_code ec;
        const auto n = co_await c.read_some(asio::buffer(buf), ec);
        if (ec) co_return;
        std::string_view got(buf, n);
        if (got.starts_with("USER ")) c.set_user(got.substr(5, got.find('\r') - 5));
        if (got.starts_with("SLOW")) {
            std::thread::id pool_thread;
            co_await c.run_blocking([&] { pool_thread = std::this_thread::get_id(); });
            const bool other = pool_thread != std::this_thread::get_id();
            co_await c.write(asio::buffer(std::string(other ? "pool\r\n" : "same\r\n")));
            continue;
        }
        c.set_state("ECHO");
        if (got.starts_with("QUIT")) {
            co_await c.write(asio::buffer(std::string_view("bye\r\n")));
            co_return;
        }
        co_await c.write(asio::buffer(got));
    }
}

// Runs a server on its own I/O thread for one test.
struct fixture {
    asio::io_context io;
    std::shared_ptr<server> srv;
    std::thread thread;
    asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};

    explicit fixture(mailnet::net::server_options options = {}, mailnet::log_sink log = mailnet::null_log()) {
        options.log = std::move(log);
        srv = server::create(io, std::move(options), echo_session, "busy\r\n");
        EXPECT_TRUE(srv->listen({"echo", "127.0.0.1", 0, false}));
    }
    void start() {
        ASSERT_TRUE(srv->up());
        thread = std::thread([this] { io.run(); });
    }
    std::uint16_t port() const { return srv->listeners().at(0).endpoint.port(); }
    // Runs f on the I/O thread and waits for it.
    template <class F> auto on_io(F f) {
        std::packaged_task<decltype(f())()> task(std::move(f));
        auto fut = task.get_future();
        asio::post(io, [&task] { task(); });
        return fut.get();
    }
    ~fixture() {
        std::promise<void> gone;
        srv->destroy(server::destroy_mode::kill, [&] { gone.set_value(); });
        if (thread.joinable()) {
            gone.get_future().wait_for(5s);
            work.reset();
            io.stop();
            thread.join();
        }
    }
};

TEST(server, parse_listen_accepts_v4_v6_and_port_zero) {
    auto a = mailnet::net::parse_listen("127.0.0.1:0", "pop3", false);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->address, "127.0.0.1");
    EXPECT_EQ(a->port, 0);
    auto b = mailnet::net::parse_listen("[::1]:995", "pop3s", true);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->address, "::1");
    EXPECT_EQ(b->port, 995);
    EXPECT_TRUE(b->implicit_tls);
    for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "localhost:25", "::1:25", "[::1]25",
                            "1.2.3.4:x", "1.2.3.4:-1"})
        EXPECT_FALSE(mailnet::net::parse_listen(bad, "smtp", false)) << bad;
}

TEST(server, listening_line_has_the_real_port) {
    fixture f;
    f.start();
    EXPECT_NE(f.port(), 0);
    EXPECT_EQ(mailnet::net::listening_line(f.srv->listeners().at(0)),
              "listening echo 127.0.0.1:" + std::to_string(f.port()));
}

TEST(server, an_accepted_connection_knows_its_peer_and_has_nagle_off) {
    // The peer's address comes from accept(2) (no getpeername), and an accepted connection
    // has Nagle off, whatever the network stack passes on from the listener.
    asio::io_context io;
    std::promise<std::pair<std::string, bool>> seen;
    auto srv = server::create(
        io, {},
        [&](mailnet::net::connection& c) -> asio::awaitable<void> {
            asio::ip::tcp::no_delay nd;
            std::error_code ec;
            c.io().socket().get_option(nd, ec);
            std::ostringstream peer;
            peer << c.peer() << " " << c.io().remote_endpoint();
            seen.set_value({peer.str(), !ec && nd.value()});
            co_return;
        },
        "busy\r\n");
    ASSERT_TRUE(srv->listen({"t", "127.0.0.1", 0, false}));
    ASSERT_TRUE(srv->up());
    std::thread t([&] { io.run(); });
    asio::io_context cio;
    asio::ip::tcp::socket c(cio);
    c.connect(srv->listeners().at(0).endpoint);
    std::ostringstream local;
    local << c.local_endpoint();
    const std::string me = local.str();
    auto f = seen.get_future();
    ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
    const auto [peer, nodelay] = f.get();
    EXPECT_EQ(peer, me + " " + me);
    EXPECT_TRUE(nodelay);
    srv->destroy(server::destroy_mode::kill);
    io.stop();
    t.join();
}

TEST(server, serves_and_registers_connections) {
    fixture f;
    f.start();
    client c(f.port());
    ASSERT_TRUE(c.connected());
    EXPECT_EQ(c.read_until("hello\r\n"), "hello\r\n");
    c.send("USER alice\r\n");
    c.read_until("USER alice\r\n");
    // The client may see the echo before the server's write completion counts it.
    auto list = f.srv->connections();
    for (int i = 0; i < 200 && !list.empty() && list[0].bytes_out < 19; ++i) {
        std::this_thread::sleep_for(5ms);
        list = f.srv->connections();
    }
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].id, 1u);
    EXPECT_EQ(list[0].service, "echo");
    EXPECT_EQ(list[0].state, "ECHO");
    EXPECT_EQ(list[0].user, "alice");
    EXPECT_EQ(list[0].bytes_in, 12u);
    EXPECT_EQ(list[0].bytes_out, 7u + 12u);
    EXPECT_TRUE(list[0].peer.starts_with("127.0.0.1:"));
    EXPECT_FALSE(list[0].tls);
    EXPECT_TRUE(f.srv->connection_state(1));
    c.send("QUIT\r\n");
    EXPECT_TRUE(c.read_until("bye\r\n").ends_with("bye\r\n"));
    EXPECT_TRUE(c.closed_within(2s));
    // The registry forgets a closed connection.
    for (int i = 0; i < 100 && !f.srv->connections().empty(); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_TRUE(f.srv->connections().empty());
    EXPECT_FALSE(f.srv->connection_state(1));
}

TEST(server, excess_connections_get_the_busy_reply) {
    mailnet::net::server_options o;
    o.max_connections = 2;
    fixture f(o);
    f.start();
    client a(f.port()), b(f.port());
    a.read_until("hello\r\n");
    b.read_until("hello\r\n");
    client c(f.port());
    EXPECT_EQ(c.read_until("busy\r\n"), "busy\r\n");
    EXPECT_TRUE(c.closed_within(2s));
    EXPECT_EQ(f.srv->connections().size(), 2u);
}

TEST(server, per_address_limit_refuses_the_excess_and_frees_slots) {
    mailnet::net::server_options o;
    o.max_per_peer = 2;
    o.loopback_exempt = false;  // the tests can only use loopback
    fixture f(o);
    f.start();
    auto a = std::make_unique<client>(f.port());
    client b(f.port());
    a->read_until("hello\r\n");
    b.read_until("hello\r\n");
    client c(f.port());
    EXPECT_EQ(c.read_until("busy\r\n"), "busy\r\n");
    EXPECT_TRUE(c.closed_within(2s));
    a->send("QUIT\r\n");
    a->read_until("bye\r\n");
    a.reset();
    // Once a connection closes, its address may connect again.
    std::string got;
    for (int i = 0; i < 100 && got != "hello\r\n"; ++i) {
        client d(f.port());
        got = d.read_until("\r\n");
        if (got != "hello\r\n") std::this_thread::sleep_for(20ms);
    }
    EXPECT_EQ(got, "hello\r\n");
}

TEST(server, loopback_is_exempt_from_the_per_address_limit_by_default) {
    mailnet::net::server_options o;
    o.max_per_peer = 1;
    fixture f(o);
    f.start();
    client a(f.port()), b(f.port());
    EXPECT_EQ(a.read_until("hello\r\n"), "hello\r\n");
    EXPECT_EQ(b.read_until("hello\r\n"), "hello\r\n");
}

TEST(server, down_keeps_sessions_and_refuses_new_ones_then_up_reuses_the_port) {
    fixture f;
    f.start();
    const auto port = f.port();
    client a(port);
    a.read_until("hello\r\n");
    f.srv->down();
    for (int i = 0; i < 100 && client(port).connected(); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_FALSE(client(port).connected());
    a.send("ping\r\n");
    EXPECT_TRUE(a.read_until("ping\r\n").ends_with("ping\r\n"));
    ASSERT_TRUE(f.on_io([&] { return static_cast<bool>(f.srv->up()); }));
    EXPECT_EQ(f.port(), port);
    client b(port);
    EXPECT_EQ(b.read_until("hello\r\n"), "hello\r\n");
}

TEST(server, destroy_defer_waits_for_the_last_connection) {
    fixture f;
    f.start();
    auto a = std::make_unique<client>(f.port());
    a->read_until("hello\r\n");
    std::promise<void> gone;
    auto fut = gone.get_future();
    f.srv->destroy(server::destroy_mode::defer, [&] { gone.set_value(); });
    EXPECT_EQ(fut.wait_for(300ms), std::future_status::timeout);
    a->send("still here\r\n");
    EXPECT_TRUE(a->read_until("still here\r\n").ends_with("still here\r\n"));
    a->send("QUIT\r\n");
    a->read_until("bye\r\n");
    EXPECT_EQ(fut.wait_for(5s), std::future_status::ready);
}

TEST(server, destroy_kill_closes_every_connection) {
    fixture f;
    f.start();
    client a(f.port()), b(f.port());
    a.read_until("hello\r\n");
    b.read_until("hello\r\n");
    std::promise<void> gone;
    auto fut = gone.get_future();
    f.srv->destroy(server::destroy_mode::kill, [&] { gone.set_value(); });
    EXPECT_EQ(fut.wait_for(5s), std::future_status::ready);
    EXPECT_TRUE(a.closed_within(2s));
    EXPECT_TRUE(b.closed_within(2s));
}

TEST(server, idle_client_is_closed) {
    mailnet::net::server_options o;
    o.idle_timeout = 1s;
    fixture f(o);
    f.start();
    client a(f.port());
    a.read_until("hello\r\n");
    EXPECT_TRUE(a.closed_within(5s));
}

TEST(server, run_blocking_runs_on_the_pool) {
    fixture f;
    f.start();
    client a(f.port());
    a.read_until("hello\r\n");
    a.send("SLOW\r\n");
    EXPECT_TRUE(a.read_until("pool\r\n").ends_with("pool\r\n"));
}

TEST(server, binding_a_used_port_fails_cleanly) {
    fixture f;
    f.start();
    asio::io_context io2;
    mailnet::net::server_options o;
    o.log = mailnet::null_log();
    auto other = server::create(io2, o, echo_session, "busy\r\n");
    ASSERT_TRUE(other->listen({"echo", "127.0.0.1", f.port(), false}));
    auto r = other->up();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), mailnet::errc::io_error);
    EXPECT_FALSE(other->is_up());
}


// ---- accept back-off on EMFILE ------------------------------------------------------------

std::chrono::nanoseconds process_cpu_time() {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

long long in_ms(std::chrono::nanoseconds d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

// Fills the process's descriptor table: lowers the soft RLIMIT_NOFILE to a little above the
// highest descriptor in use, then opens /dev/null until EMFILE. The destructor closes them and
// restores the limit, whatever the test's outcome, so later tests keep their descriptors.
class fd_exhaustion {
public:
    fd_exhaustion() {
        // NOTE: with MAILNET_SANITIZE, UBSan checks the dynamic type of each polymorphic object a
        // member is called on; the first time it sees an (object type, static type) pair it reads
        // the vtable's memory through a pipe(), which fails once the table is full, and it then
        // aborts on a bogus "invalid vptr". Every path taken while the table is full must have
        // run before: the caller serves a client first; here, what an accept loop may do on
        // EMFILE: compare codes of Asio's, the system's and the generic category.
        for (const auto& probe : {std::error_code(EINTR, asio::error::get_system_category()),
                                  std::error_code(EINTR, std::system_category()),
                                  std::error_code(EINTR, std::generic_category())}) {
            warmed_ += probe == std::errc::too_many_files_open;
            warmed_ += probe == asio::error::no_descriptors;
            warmed_ += !probe.message().empty();
        }
        if (::getrlimit(RLIMIT_NOFILE, &saved_) != 0) return;
        int highest = 0;
        for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
            highest = std::max(highest, std::stoi(e.path().filename().string()));
        rlimit lower = saved_;
        lower.rlim_cur = static_cast<rlim_t>(highest) + 1 + 16;
        if (lower.rlim_cur > saved_.rlim_cur || ::setrlimit(RLIMIT_NOFILE, &lower) != 0) return;
        lowered_ = true;
        fds_.reserve(lower.rlim_cur);
        for (rlim_t i = 0; i < lower.rlim_cur; ++i) {
            const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                last_errno_ = errno;
                break;
            }
            fds_.push_back(fd);
        }
    }
    ~fd_exhaustion() { release(); }
    fd_exhaustion(const fd_exhaustion&) = delete;
    fd_exhaustion& operator=(const fd_exhaustion&) = delete;

    /// True if the table is full: the next descriptor fails with EMFILE.
    bool exhausted() const { return lowered_ && last_errno_ == EMFILE; }
    /// Frees one slot (for the test's own client socket).
    void free_one() {
        if (fds_.empty()) return;
        ::close(fds_.back());
        fds_.pop_back();
    }
    /// Closes every descriptor it opened and restores the limit.
    void release() {
        for (const int fd : fds_) ::close(fd);
        fds_.clear();
        if (lowered_) ::setrlimit(RLIMIT_NOFILE, &saved_);
        lowered_ = false;
    }

private:
    int warmed_ = 0;
    rlimit saved_{};
    bool lowered_ = false;
    int last_errno_ = 0;
    std::vector<int> fds_;
};

TEST(server, accept_backs_off_while_descriptors_run_out_then_serves_the_waiting_client) {
    auto backoffs = std::make_shared<std::atomic<int>>(0);
    fixture f({}, [backoffs](mailnet::log_level, std::string_view line) {
        if (line.find("backing off") != std::string_view::npos) ++*backoffs;
    });
    f.start();
    const auto port = f.port();
    {
        // Every path of the server runs once before the descriptors run out (see fd_exhaustion).
        client first(port);
        ASSERT_EQ(first.read_until("hello\r\n"), "hello\r\n");
        first.send("SLOW\r\n");
        first.read_until("pool\r\n");
        first.send("QUIT\r\n");
        ASSERT_TRUE(first.closed_within(2000ms));
        for (int i = 0; i < 100 && !f.srv->connections().empty(); ++i) std::this_thread::sleep_for(10ms);
        ASSERT_TRUE(f.srv->connections().empty());
    }
    std::optional<client> waiting;
    std::chrono::nanoseconds cpu{}, wall{};
    std::string served_while_full;
    {
        fd_exhaustion full;
        ASSERT_TRUE(full.exhausted()) << "could not fill the descriptor table";
        full.free_one();  // room for the client's socket, none for the server's accept()
        waiting.emplace(port);
        ASSERT_TRUE(waiting->connected());  // the kernel completes it into the listen backlog
        const auto cpu0 = process_cpu_time();
        const auto wall0 = std::chrono::steady_clock::now();
        std::this_thread::sleep_for(500ms);
        cpu = process_cpu_time() - cpu0;
        wall = std::chrono::steady_clock::now() - wall0;
        served_while_full = waiting->read_until("\r\n", 10ms);
    }  // every descriptor freed, the limit restored
    EXPECT_EQ(served_while_full, "") << "accept() succeeded although no descriptor was free";
    EXPECT_GE(backoffs->load(), 1) << "the server did not log backing off after accept() failed with EMFILE";
    // The one I/O thread busy-looping on accept() would burn about all of the 500 ms.
    EXPECT_LT(cpu, 150ms) << "the accept loop spun: " << in_ms(cpu) << " ms of CPU in " << in_ms(wall) << " ms";
    EXPECT_EQ(waiting->read_until("hello\r\n", 3000ms), "hello\r\n");
    client later(port);
    EXPECT_EQ(later.read_until("hello\r\n"), "hello\r\n");
}

TEST(server, raise_fd_limit_lifts_the_soft_limit_to_the_hard_one) {
    rlimit saved{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
    if (saved.rlim_max < 256) GTEST_SKIP() << "hard limit too low to lower the soft one";
    rlimit low = saved;
    low.rlim_cur = 128;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
    const auto got = mailnet::net::raise_fd_limit();
    rlimit now{};
    ::getrlimit(RLIMIT_NOFILE, &now);
    ::setrlimit(RLIMIT_NOFILE, &saved);
    EXPECT_EQ(now.rlim_cur, saved.rlim_max);
    EXPECT_EQ(got, static_cast<std::uint64_t>(saved.rlim_max));
}

// ---- SIGTERM / SIGINT ---------------------------------------------------------------------

// Counts calls of the callback it hands out; the test thread can wait for the first.
class call_counter {
public:
    std::function<void()> callback() const {
        return [s = state_] {
            std::lock_guard lock(s->mutex);
            ++s->calls;
            s->cv.notify_all();
        };
    }
    /// True if called at least once within `limit`.
    bool called_within(std::chrono::milliseconds limit) const {
        std::unique_lock lock(state_->mutex);
        return state_->cv.wait_for(lock, limit, [&] { return state_->calls > 0; });
    }
    int calls() const {
        std::lock_guard lock(state_->mutex);
        return state_->calls;
    }

private:
    struct state {
        std::mutex mutex;
        std::condition_variable cv;
        int calls = 0;
    };
    std::shared_ptr<state> state_ = std::make_shared<state>();
};

// A shutdown_on_signals made and torn down on the fixture's I/O thread (it is not thread-safe).
// While it exists, SIGTERM and SIGINT are caught by Asio's handler, so raise() cannot kill the
// test binary; once it is gone, the default actions are back for the other tests.
class signal_handling {
public:
    signal_handling(fixture& f, std::function<void()> on_all_gone) : f_(f) {
        f_.on_io([&] {
            signals_ = std::make_unique<mailnet::net::shutdown_on_signals>(
                f_.io, std::vector<std::shared_ptr<server>>{f_.srv}, std::move(on_all_gone));
        });
    }
    ~signal_handling() {
        f_.on_io([this] {
            signals_->cancel();
            // NOTE: a server still holds the on_gone callback that points into *signals_ until its
            // last connection closes; replace it before that object goes.
            f_.srv->destroy(server::destroy_mode::kill, [] {});
            signals_.reset();
        });
    }
    signal_handling(const signal_handling&) = delete;
    signal_handling& operator=(const signal_handling&) = delete;
    /// The program stops by itself (shutdown_on_signals::stop), on the I/O thread.
    void stop(std::chrono::milliseconds patience) {
        f_.on_io([&] { signals_->stop(patience); });
    }

private:
    fixture& f_;
    std::unique_ptr<mailnet::net::shutdown_on_signals> signals_;
};

// Waits until connecting to `port` is refused (the listener closed); false after 2 s.
bool refuses_within_2s(std::uint16_t port) {
    for (int i = 0; i < 200; ++i) {
        if (!client(port).connected()) return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

// A graceful stop, however it is asked for (`begin`): the listener closes at once, the open
// session goes on until it ends by itself, and only then is every server gone.
void expect_graceful_stop(const std::function<void(signal_handling&)>& begin, const char* what) {
    fixture f;
    f.start();
    const auto port = f.port();
    client a(port);
    ASSERT_EQ(a.read_until("hello\r\n"), "hello\r\n");
    call_counter all_gone;
    signal_handling signals(f, all_gone.callback());
    begin(signals);
    EXPECT_TRUE(refuses_within_2s(port)) << "still accepting after " << what;
    a.send("still here\r\n");
    EXPECT_TRUE(a.read_until("still here\r\n").ends_with("still here\r\n"));
    EXPECT_FALSE(all_gone.called_within(300ms)) << "on_all_gone ran while a session was open";
    a.send("QUIT\r\n");
    EXPECT_TRUE(a.read_until("bye\r\n").ends_with("bye\r\n"));
    EXPECT_TRUE(all_gone.called_within(5000ms));
    EXPECT_EQ(all_gone.calls(), 1);
}

TEST(server, sigterm_stops_accepting_and_waits_for_the_open_session) {
    expect_graceful_stop([](signal_handling&) { ASSERT_EQ(std::raise(SIGTERM), 0); }, "SIGTERM");
}

TEST(server, second_signal_closes_the_open_session) {
    fixture f;
    f.start();
    const auto port = f.port();
    client a(port);
    ASSERT_EQ(a.read_until("hello\r\n"), "hello\r\n");
    call_counter all_gone;
    signal_handling signals(f, all_gone.callback());
    ASSERT_EQ(std::raise(SIGTERM), 0);
    ASSERT_TRUE(refuses_within_2s(port)) << "still accepting after SIGTERM";
    a.send("ping\r\n");
    EXPECT_TRUE(a.read_until("ping\r\n").ends_with("ping\r\n"));
    ASSERT_EQ(std::raise(SIGINT), 0);
    EXPECT_TRUE(a.closed_within(2000ms)) << "the session outlived the second signal";
    EXPECT_TRUE(all_gone.called_within(5000ms));
    EXPECT_EQ(all_gone.calls(), 1);
}

TEST(server, stop_closes_the_listeners_at_once_and_lets_open_sessions_end_by_themselves) {
    // A patience far longer than the test: the session's own QUIT ends the wait.
    expect_graceful_stop([](signal_handling& s) { s.stop(10s); }, "stop()");
}

TEST(server, after_stop_s_patience_a_signal_is_the_second_one) {
    fixture f;
    f.start();
    client a(f.port());
    ASSERT_EQ(a.read_until("hello\r\n"), "hello\r\n");
    call_counter all_gone;
    signal_handling signals(f, all_gone.callback());
    signals.stop(100ms);
    std::this_thread::sleep_for(400ms);  // the patience is over: destroy(defer) is under way
    a.send("ping\r\n");
    EXPECT_TRUE(a.read_until("ping\r\n").ends_with("ping\r\n")) << "the exchange in progress goes on";
    ASSERT_EQ(std::raise(SIGTERM), 0);
    EXPECT_TRUE(a.closed_within(2000ms)) << "a signal after stop() closes what is left";
    EXPECT_TRUE(all_gone.called_within(5000ms));
    EXPECT_EQ(all_gone.calls(), 1);
}

TEST(server, after_sigterm_io_run_returns_once_the_last_session_is_gone) {
    // As in a daemon's main: the signal set is made before io.run(), and nothing calls io.stop().
    asio::io_context io;
    mailnet::net::server_options o;
    o.log = mailnet::null_log();
    auto srv = server::create(io, o, echo_session, "busy\r\n");
    ASSERT_TRUE(srv->listen({"echo", "127.0.0.1", 0, false}));
    ASSERT_TRUE(srv->up());
    const auto port = srv->listeners().at(0).endpoint.port();
    call_counter all_gone;
    std::optional<mailnet::net::shutdown_on_signals> signals(std::in_place, io,
                                                             std::vector<std::shared_ptr<server>>{srv},
                                                             all_gone.callback());
    std::promise<void> returned;
    auto run_returned = returned.get_future();
    std::thread thread([&] {
        io.run();
        returned.set_value();
    });
    auto a = std::make_unique<client>(port);
    EXPECT_EQ(a->read_until("hello\r\n"), "hello\r\n");
    EXPECT_EQ(std::raise(SIGTERM), 0);
    EXPECT_EQ(run_returned.wait_for(300ms), std::future_status::timeout) << "io.run() left an open session";
    a->send("QUIT\r\n");
    EXPECT_TRUE(a->read_until("bye\r\n").ends_with("bye\r\n"));
    const bool ran_out = run_returned.wait_for(5s) == std::future_status::ready;
    if (!ran_out) io.stop();
    thread.join();
    EXPECT_TRUE(ran_out) << "io.run() still had work after the last server was gone";
    EXPECT_EQ(all_gone.calls(), 1);
    signals.reset();  // the handler ran: SIGTERM is no longer caught from here on
}

// ---- implicit TLS (RFC 8314 3.3) ----------------------------------------------------------

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// Runs `exchange` on a fresh io_context in this thread; fails the test if it is not done in `limit`.
void run_client(const std::function<asio::awaitable<void>(asio::io_context&)>& exchange,
                std::chrono::seconds limit = 10s) {
    asio::io_context io;
    bool done = false;
    asio::co_spawn(io, exchange(io), [&](std::exception_ptr e) {
        done = true;
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            ADD_FAILURE() << "exception: " << x.what();
        }
    });
    io.run_for(limit);
    EXPECT_TRUE(done) << "the client did not finish within " << limit.count() << " s";
}

// Reads one CRLF line byte by byte; "<reason>" appended at EOF or error.
asio::awaitable<std::string> read_line(mailnet::net::stream& s) {
    std::string out;
    while (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0) {
        char c = 0;
        std::error_code ec;
        const auto n = co_await s.read_some(asio::buffer(&c, 1), ec);
        if (ec || n == 0) co_return out + "<" + ec.message() + ">";
        out += c;
    }
    co_return out;
}

// What a TLS client saw, and the server's registry while it was connected.
struct tls_visit {
    std::error_code handshake;
    std::string why;
    std::string greeting, echoed, bye;
    std::vector<mailnet::net::connection_info> open;
};

// Connects over TLS to 127.0.0.1:port, checking the certificate against `verify` and the name
// "localhost"; reads the greeting, echoes a line, QUITs.
tls_visit visit_over_tls(const fixture& f, std::uint16_t port, const mailnet::net::tls_client_options& verify) {
    tls_visit v;
    std::string why;
    auto ctx = mailnet::net::make_client_tls(verify, &why);
    if (!ctx) {
        ADD_FAILURE() << why;
        return v;
    }
    const std::string host = "localhost";
    run_client([&](asio::io_context& io) -> asio::awaitable<void> {
        asio::ip::tcp::socket sock(io);
        const asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
        auto [ec] = co_await sock.async_connect(ep, use_tuple);
        if (ec) {
            v.handshake = ec;
            co_return;
        }
        mailnet::net::stream s(std::move(sock));
        v.handshake = co_await s.client_handshake(**ctx, host, verify, 5s, &v.why);
        if (v.handshake) co_return;
        v.greeting = co_await read_line(s);
        v.open = f.srv->connections();
        (void)co_await s.write_all(asio::buffer(std::string_view("ping\r\n")));
        v.echoed = co_await read_line(s);
        (void)co_await s.write_all(asio::buffer(std::string_view("QUIT\r\n")));
        v.bye = co_await read_line(s);
        co_await s.shutdown(2s);
    });
    return v;
}

// Server options with a TLS context for the test PKI's server certificate.
mailnet::net::server_options with_tls(const mailnet::test_support::test_pki& pki) {
    std::string why;
    auto tls = mailnet::net::make_server_tls({pki.server_cert, pki.server_key}, &why);
    EXPECT_TRUE(tls) << why;
    mailnet::net::server_options o;
    if (tls) o.tls = *tls;
    return o;
}

TEST(server, implicit_tls_listener_greets_over_tls_and_drops_plaintext_clients) {
    auto pki = mailnet::test_support::test_pki::create();
    auto o = with_tls(pki);
    ASSERT_TRUE(o.tls);
    o.tls_handshake_timeout = 2s;
    fixture f(o);
    ASSERT_TRUE(f.srv->listen({"echos", "127.0.0.1", 0, true}));
    f.start();
    ASSERT_EQ(f.srv->listeners().size(), 2u);
    const auto tls_port = f.srv->listeners().at(1).endpoint.port();
    const mailnet::net::tls_client_options verify{pki.ca_cert, {}, false};

    const auto first = visit_over_tls(f, tls_port, verify);
    ASSERT_FALSE(first.handshake) << first.handshake.message() << ": " << first.why;
    EXPECT_EQ(first.greeting, "hello\r\n");
    EXPECT_EQ(first.echoed, "ping\r\n");
    EXPECT_EQ(first.bye, "bye\r\n");
    ASSERT_EQ(first.open.size(), 1u);
    EXPECT_EQ(first.open[0].service, "echos");
    EXPECT_TRUE(first.open[0].tls);

    // A plaintext command is not a ClientHello: no greeting, closed at once, not at the timeout.
    client plain(tls_port);
    ASSERT_TRUE(plain.connected());
    plain.send("USER x\r\n");
    EXPECT_TRUE(plain.closed_within(1500ms)) << "a plaintext client was not dropped";
    EXPECT_EQ(plain.received().find("hello"), std::string::npos);

    // A client that says nothing is dropped by the handshake timeout, not the 600 s idle one.
    const auto t0 = std::chrono::steady_clock::now();
    client silent(tls_port);
    ASSERT_TRUE(silent.connected());
    EXPECT_TRUE(silent.closed_within(5000ms)) << "a silent client outlived the handshake timeout";
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 1500ms) << "dropped before the handshake timeout";
    EXPECT_EQ(silent.received(), "");
    for (int i = 0; i < 100 && !f.srv->connections().empty(); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_TRUE(f.srv->connections().empty()) << "a failed handshake left its registry entry";

    const auto again = visit_over_tls(f, tls_port, verify);
    ASSERT_FALSE(again.handshake) << again.handshake.message() << ": " << again.why;
    EXPECT_EQ(again.greeting, "hello\r\n");
}

TEST(server, implicit_tls_client_over_the_limit_reads_the_busy_reply_over_tls) {
    auto pki = mailnet::test_support::test_pki::create();
    auto o = with_tls(pki);
    ASSERT_TRUE(o.tls);
    o.max_connections = 1;
    std::string why;
    fixture f(o);
    ASSERT_TRUE(f.srv->listen({"echos", "127.0.0.1", 0, true}));
    f.start();
    client first(f.port());  // the one connection allowed, on the plain listener
    ASSERT_EQ(first.read_until("hello\r\n"), "hello\r\n");
    const auto tls_port = f.srv->listeners().at(1).endpoint.port();
    const mailnet::net::tls_client_options verify{pki.ca_cert, {}, false};
    auto ctx = mailnet::net::make_client_tls(verify, &why);
    ASSERT_TRUE(ctx) << why;
    std::error_code handshake;
    std::string reply;
    run_client([&](asio::io_context& io) -> asio::awaitable<void> {
        asio::ip::tcp::socket sock(io);
        auto [ec] = co_await sock.async_connect({asio::ip::make_address("127.0.0.1"), tls_port}, use_tuple);
        if (ec) {
            handshake = ec;
            co_return;
        }
        mailnet::net::stream s(std::move(sock));
        handshake = co_await s.client_handshake(**ctx, "localhost", verify, 5s, &why);
        if (!handshake) reply = co_await read_line(s);
    });
    ASSERT_FALSE(handshake) << handshake.message() << ": " << why;
    EXPECT_EQ(reply, "busy\r\n") << "the busy reply must come over TLS, not as plaintext before it";
}

TEST(server, implicit_tls_listener_needs_a_tls_context) {
    fixture f;  // options.tls is null
    const auto r = f.srv->listen({"echos", "127.0.0.1", 0, true});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), mailnet::errc::bad_config);
    f.start();
    ASSERT_EQ(f.srv->listeners().size(), 1u);  // the refused spec was not kept
    EXPECT_EQ(f.srv->listeners().at(0).service, "echo");
}

}  // namespace
