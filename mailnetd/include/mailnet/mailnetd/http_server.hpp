// mailnet/mailnetd/http_server.hpp: mailnetd's HTTP API (DESIGN.md "mailnetd's HTTP API and web
// view") on the program's own io_context. RESTinio lives only in http_server.cpp: this header
// is all the rest of mailnetd sees of it.
#pragma once

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/thread_pool.hpp>

#include <memory>
#include <string>

#include "mailnet/error.hpp"
#include "mailnet/log.hpp"
#include "mailnet/mailnetd/api.hpp"
#include "mailnet/mailnetd/mail_index.hpp"
#include "mailnet/store/store.hpp"

namespace mailnet::mailnetd {

/// What the HTTP server needs.
struct http_config {
    std::string address = "127.0.0.1";  ///< an IP literal
    std::uint16_t port = 8025;          ///< 0: the OS chooses; start() tells which
    api_limits limits;
    log_sink log = null_log();
};

/// The HTTP API. Runs on `io`'s thread; blocking store calls go to `pool`.
class http_server {
public:
    http_server(asio::io_context& io, http_config cfg, std::shared_ptr<store> st, mail_index& index,
                asio::thread_pool& pool);
    ~http_server();
    http_server(const http_server&) = delete;
    http_server& operator=(const http_server&) = delete;

    /// Binds and listens (before or on `io`'s thread); the bound endpoint, or why not.
    result<asio::ip::tcp::endpoint> start();
    /// Closes the listener and every connection (on `io`'s thread, or before it runs).
    void stop();

    struct impl;

private:
    std::shared_ptr<impl> impl_;
};

}  // namespace mailnet::mailnetd
