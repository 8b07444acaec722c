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

/// Everything a POP3 server is configured with (the seed's configure/cget options).
struct server_config {
    std::vector<net::listen_spec> listen;            ///< "pop3" (STLS) and "pop3s" (implicit TLS) listeners
    std::shared_ptr<authenticator> auth;             ///< null: every login is rejected
    std::shared_ptr<store> storage;                  ///< null: every mailbox is empty
    std::shared_ptr<asio::ssl::context> tls;         ///< enables STLS and pop3s listeners
    bool allow_plaintext_auth = false;               ///< plaintext passwords from non-loopback peers without TLS
    bool enable_apop = false;                        ///< APOP, when the auth backend can give secrets
    std::string hostname = "localhost";              ///< for the APOP timestamp
    std::size_t max_connections = 1024;              ///< excess: "-ERR [SYS/TEMP]" and close
    std::size_t max_per_peer = 32;                   ///< per client address, loopback exempt
    std::chrono::seconds idle_timeout{600};          ///< RFC 1939 3: at least 10 minutes
    bool allow_short_idle_timeout = false;           ///< accept an idle_timeout below 600 s (tests)
    std::chrono::seconds tls_handshake_timeout{30};
    std::size_t read_ahead_octets = 64 * 1024;       ///< pipelined input buffered at most
    std::chrono::seconds line_timeout{60};           ///< a command line completes within this of its first octet
    std::chrono::seconds login_timeout{120};         ///< AUTHORIZATION ends within this (logged in, or closed)
    std::chrono::seconds peer_failure_window{60};    ///< failed logins per peer counted this long
    limits session_limits;                           ///< command length, failed logins, delays
    log_sink log = stderr_log();
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
