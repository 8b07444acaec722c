// server_fixture.hpp: what the pop3d server tests share: a users table, a server on its own
// I/O thread, a logged-in client.
#pragma once

#include <asio/executor_work_guard.hpp>
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "mailnet/pop3d/server.hpp"
#include "support/test_client.hpp"

namespace pop3_test {

using namespace std::chrono_literals;
using mailnet::testing::test_client;
namespace pop3 = mailnet::pop3;

inline std::shared_ptr<mailnet::auth_functions> users() {
    auto a = std::make_shared<mailnet::auth_functions>();
    a->on_authenticate = [](const mailnet::credentials& c) {
        const bool ok = (c.user == "alice" || c.user == "bob") && c.password == "secret";
        return ok ? mailnet::auth_result::ok(c.user, c.user) : mailnet::auth_result::fail();
    };
    a->on_exists = [](std::string_view u) { return u == "alice" || u == "bob"; };
    return a;
}

// A pop3 server on its own I/O thread.
struct fixture {
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
    std::unique_ptr<pop3::server> srv;
    std::thread thread;

    // failure_delay: the session's own failed-login delay (0: none, and no per-peer delay).
    explicit fixture(pop3::server_config cfg, std::chrono::milliseconds failure_delay = 0ms,
                     mailnet::log_sink log = mailnet::null_log()) {
        cfg.listen = {{"pop3", "127.0.0.1", 0, false}};
        cfg.log = std::move(log);
        cfg.session_limits.auth_failure_delay = failure_delay;
        srv = std::make_unique<pop3::server>(io, std::move(cfg));
        EXPECT_TRUE(srv->up());
        thread = std::thread([this] { io.run(); });
    }
    ~fixture() {
        std::promise<void> gone;
        srv->destroy(mailnet::net::server::destroy_mode::kill, [&] { gone.set_value(); });
        gone.get_future().wait_for(5s);
        work.reset();
        io.stop();
        thread.join();
    }
    std::uint16_t port() const { return srv->listeners().at(0).endpoint.port(); }
};

// Logs in on a fresh connection; the greeting and login replies are consumed.
inline std::unique_ptr<test_client> login(std::uint16_t port, const std::string& user = "alice") {
    auto c = std::make_unique<test_client>(port);
    c->read_until("\r\n");
    c->send("USER " + user + "\r\nPASS secret\r\n");
    c->read_until("logged in");
    c->read_until("\r\n");
    c->clear();
    return c;
}

}  // namespace pop3_test
