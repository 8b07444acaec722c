// mailnet/mailnetd/http_server.hpp: mailnetd's HTTP API (DESIGN.md "mailnetd's HTTP API and web
// view") on the program's own io_context. RESTinio lives only in http_server.cpp: this header
// is all the rest of mailnetd sees of it.
#pragma once

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/thread_pool.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "mailnet/error.hpp"
#include "mailnet/log.hpp"
#include "mailnet/mailnetd/api.hpp"
#include "mailnet/mailnetd/mail_index.hpp"
#include "mailnet/store/store.hpp"

namespace mailnet::mailnetd {

/// The API's side of the fault rules (DESIGN.md "Fault rule"): GET/PUT/DELETE /api/v1/faults.
/// The rules themselves (parsing, matching, acting in the SMTP and POP3 sessions) belong to
/// libmailnet, smtpd and pop3d; mailnetd's main() fills these slots with them. Each slot is
/// called on the I/O thread. Without them (http_config::faults empty) the path answers 404.
struct fault_endpoint {
    /// The list in force, as the JSON array GET and PUT answer.
    std::function<std::string()> list;
    /// Replaces the list with `body` (a JSON array of rules): the new list as JSON, or the
    /// error (400: bad JSON, an unknown field or phase) with the old list left in force.
    std::function<std::variant<std::string, api_error>(std::string_view body)> replace;
    /// Removes every rule.
    std::function<void()> clear;
};

/// What the HTTP server needs.
struct http_config {
    std::string address = "127.0.0.1";  ///< an IP literal
    std::uint16_t port = 8025;          ///< 0: the OS chooses; start() tells which
    api_limits limits;
    log_sink log = null_log();
    std::optional<fault_endpoint> faults;  ///< /api/v1/faults; empty: 404
    /// Answer requests whatever their Host header names (--allow-open-network). Otherwise only
    /// a loopback name or address is served (403 else), and a PUT or DELETE whose Origin is
    /// another site is refused: a web page cannot reach the API by DNS rebinding.
    bool any_host = false;
};

/// The HTTP API. Runs on `io`'s thread; blocking store calls (message views, deletions) go to a
/// pool of its own, so they never delay the index's updates (index_sync has its own thread).
/// GET /healthz answers 503 until `index` is complete().
class http_server {
public:
    http_server(asio::io_context& io, http_config cfg, std::shared_ptr<store> st, mail_index& index);
    ~http_server();
    http_server(const http_server&) = delete;
    http_server& operator=(const http_server&) = delete;

    /// Binds and listens (before or on `io`'s thread); the bound endpoint, or why not.
    result<asio::ip::tcp::endpoint> start();
    /// Closes the listener and every connection (on `io`'s thread, or before it runs).
    void stop();

    struct impl;

private:
    // Owned here, not by impl: a pool job may hold impl's last reference, and a pool cannot be
    // joined from its own thread. The destructor stops the server, then waits for the pool.
    std::unique_ptr<asio::thread_pool> pool_;
    std::shared_ptr<impl> impl_;
};

}  // namespace mailnet::mailnetd
