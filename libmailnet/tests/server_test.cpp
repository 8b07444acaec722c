// server_test.cpp: the server base over real loopback sockets: port 0, the registry,
// up/down/destroy(kill|defer), the connection limit, idle timeout, the blocking pool.
#include "mailnet/net/server.hpp"

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/executor_work_guard.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "support/test_client.hpp"

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

    explicit fixture(mailnet::net::server_options options = {}) {
        options.log = mailnet::null_log();
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

}  // namespace
