// mailnet/pop3d/server.hpp: the POP3 server object: the protocol core on the libmailnet
// server base, with pluggable authentication and storage (RFC 1939, RFC 2449, RFC 2595, RFC 8314).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ssl/context.hpp>

#include "mailnet/auth/auth.hpp"
#include "mailnet/error.hpp"
#include "mailnet/log.hpp"
#include "mailnet/net/server.hpp"
#include "mailnet/net/service.hpp"
#include "mailnet/pop3d/session.hpp"
#include "mailnet/store/store.hpp"

namespace mailnet::pop3 {

/// Everything a POP3 server is configured with (the seed's configure/cget options): what every
/// server has (net::service_config: listeners "pop3" and "pop3s", auth — null: every login is
/// rejected —, storage — null: every mailbox is empty —, TLS, limits; idle_timeout at least
/// 600 s, RFC 1939 3) and POP3's own.
struct server_config : net::service_config {
    bool enable_apop = false;                        ///< APOP, when the auth backend can give secrets
    limits session_limits;                           ///< command length, failed logins, delays
};

/// A POP3 server: create, up, down, destroy(kill | defer), list connections (net::service).
class server : public net::service {
public:
    /// Creates the server on `io` (run it on one thread). Nothing is bound before up(), which
    /// returns errc::bad_config if the configuration was unusable (pop3s without TLS, an idle
    /// timeout below 600 s without allow_short_idle_timeout, limits below RFC minimums).
    server(asio::io_context& io, server_config config);

    /// The configuration in force (cget).
    const server_config& config() const noexcept { return config_; }
    /// Replaces the configuration (configure); only while down with no session open, and
    /// only with usable limits. errc::bad_config otherwise (the reason is logged).
    result<void> configure(server_config config);

    struct shared;  ///< state shared with the sessions (implementation detail)

private:
    result<void> build();
    server_config config_;
    std::shared_ptr<shared> shared_;
};

}  // namespace mailnet::pop3
