// server_fixture.hpp: what the pop3d server tests share: a users table, a server on its own
// I/O thread, a logged-in client.
#pragma once

#include <gtest/gtest.h>

#include "mailnet/pop3d/server.hpp"
#include "support/fixtures.hpp"
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
struct fixture : mailnet::testing::server_thread<pop3::server> {
    // failure_delay: the session's own failed-login delay (0: none, and no per-peer delay).
    explicit fixture(pop3::server_config cfg, std::chrono::milliseconds failure_delay = 0ms,
                     mailnet::log_sink log = mailnet::null_log())
        : server_thread(adjusted(std::move(cfg), failure_delay, std::move(log))) {}

    static pop3::server_config adjusted(pop3::server_config cfg, std::chrono::milliseconds failure_delay,
                                        mailnet::log_sink log) {
        cfg.listen = {{"pop3", "127.0.0.1", 0, false}};
        cfg.log = std::move(log);
        cfg.session_limits.auth_failure_delay = failure_delay;
        return cfg;
    }
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
