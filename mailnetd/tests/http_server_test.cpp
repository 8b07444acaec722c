// http_server_test.cpp: the HTTP server on a real socket with a memory store: /healthz, the
// /api/v1/faults slots (fault_endpoint: where the fault rules plug in) and the request limits.
#include "mailnet/mailnetd/http_server.hpp"

#include <gtest/gtest.h>

#include <asio/connect.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include <mutex>
#include <thread>

namespace {

using namespace mailnet::mailnetd;

struct reply {
    int status = 0;
    std::string head;
    std::string body;
};

// The server on its own thread, as in mailnetd (one io_context), bound to 127.0.0.1:0.
class server_fixture {
public:
    explicit server_fixture(std::optional<fault_endpoint> faults) {
        http_config cfg;
        cfg.address = "127.0.0.1";
        cfg.port = 0;
        cfg.faults = std::move(faults);
        server_.emplace(io_, cfg, std::shared_ptr<mailnet::store>(mailnet::make_memory_store()), index_, pool_);
        auto ep = server_->start();
        EXPECT_TRUE(ep);
        if (ep) port_ = ep->port();
        thread_ = std::thread([this] { io_.run(); });
    }
    ~server_fixture() {
        // http_server::stop on the I/O thread, then the loop ends (the work guard keeps it running till then).
        asio::post(io_, [this] {
            server_->stop();
            io_.stop();
        });
        thread_.join();
        server_.reset();
        pool_.join();
    }

    // One request on its own connection ("Connection: close"); the whole answer.
    reply request(const std::string& method, const std::string& target, const std::string& body = {},
                  const std::string& extra_headers = {}) {
        asio::io_context client;
        asio::ip::tcp::socket s(client);
        s.connect({asio::ip::make_address("127.0.0.1"), port_});
        std::string req = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + extra_headers;
        if (!body.empty() || method == "PUT") req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
        req += "\r\n" + body;
        asio::write(s, asio::buffer(req));
        std::string got;
        asio::error_code ec;
        asio::read(s, asio::dynamic_buffer(got), ec);
        reply r;
        const auto end = got.find("\r\n\r\n");
        r.head = got.substr(0, end);
        if (end != std::string::npos) r.body = got.substr(end + 4);
        if (got.size() > 12) r.status = std::stoi(got.substr(9, 3));
        return r;
    }

private:
    asio::io_context io_;
    asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
    asio::thread_pool pool_{1};
    mail_index index_;
    std::optional<http_server> server_;
    std::uint16_t port_ = 0;
    std::thread thread_;
};

// A stand-in for the fault rules: remembers what it was given.
struct fake_rules {
    std::mutex m;
    std::string list = "[]";
    std::vector<std::string> given;
    int cleared = 0;

    fault_endpoint endpoint() {
        fault_endpoint f;
        f.list = [this] {
            std::lock_guard g(m);
            return list;
        };
        f.replace = [this](std::string_view body) -> std::variant<std::string, api_error> {
            std::lock_guard g(m);
            given.emplace_back(body);
            if (body.empty() || body.front() != '[') return api_error{400, "want a JSON array of rules"};
            list = std::string(body);
            return list;
        };
        f.clear = [this] {
            std::lock_guard g(m);
            list = "[]";
            ++cleared;
        };
        return f;
    }
};

TEST(http_server, healthz_and_unknown_paths) {
    server_fixture srv(std::nullopt);
    auto r = srv.request("GET", "/healthz");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, R"({"status":"ok"})");
    EXPECT_NE(r.head.find("Content-Type: application/json"), std::string::npos) << r.head;
    EXPECT_EQ(srv.request("GET", "/api/v1/nothing").status, 404);
    EXPECT_EQ(srv.request("POST", "/healthz").status, 405);
}

TEST(http_server, faults_without_rules_is_404) {
    server_fixture srv(std::nullopt);
    for (const char* m : {"GET", "PUT", "DELETE"}) {
        auto r = srv.request(m, "/api/v1/faults", std::string(m) == "PUT" ? "[]" : "");
        EXPECT_EQ(r.status, 404) << m;
        EXPECT_NE(r.body.find("\"error\""), std::string::npos) << r.body;
    }
}

TEST(http_server, faults_reach_their_slots) {
    fake_rules rules;
    server_fixture srv(rules.endpoint());
    auto r = srv.request("GET", "/api/v1/faults");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "[]");
    const std::string rule = R"([{"phase":"rcpt","reply":"452 4.2.2 full","match":{"rcpt":"bob@"}}])";
    r = srv.request("PUT", "/api/v1/faults", rule, "Content-Type: application/json\r\n");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, rule);
    EXPECT_EQ(srv.request("GET", "/api/v1/faults").body, rule);
    // A refused PUT: the slot's 400 and reason, the old list still in force.
    r = srv.request("PUT", "/api/v1/faults", "{not json");
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.body, R"({"error":"want a JSON array of rules"})");
    EXPECT_EQ(srv.request("GET", "/api/v1/faults").body, rule);
    r = srv.request("DELETE", "/api/v1/faults");
    EXPECT_EQ(r.status, 204);
    EXPECT_EQ(r.body, "");
    EXPECT_EQ(srv.request("GET", "/api/v1/faults").body, "[]");
    EXPECT_EQ(srv.request("POST", "/api/v1/faults", "[]").status, 405);
    EXPECT_EQ(srv.request("GET", "/api/v1/faults?x=1").status, 400);
    // Over 64 KiB: 413, and the slot never sees it.
    r = srv.request("PUT", "/api/v1/faults", "[" + std::string(65 * 1024, ' ') + "]");
    EXPECT_EQ(r.status, 413);
    std::lock_guard g(rules.m);
    EXPECT_EQ(rules.given, (std::vector<std::string>{rule, "{not json"}));
    EXPECT_EQ(rules.cleared, 1);
}

TEST(http_server, header_limit) {
    server_fixture srv(std::nullopt);
    EXPECT_EQ(srv.request("GET", "/healthz", {}, "X-Big: " + std::string(17 * 1024, 'a') + "\r\n").status, 413);
    EXPECT_EQ(srv.request("GET", "/healthz", {}, "X-Ok: " + std::string(8 * 1024, 'a') + "\r\n").status, 200);
}

}  // namespace
