// mailnet/smtpd/server.hpp: the SMTP server object: the protocol core on the libmailnet
// connection runner, with the seed's callbacks, AUTH against an authenticator, and durable
// delivery into a store (RFC 5321, RFC 3207, RFC 4954, RFC 8314).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ssl/context.hpp>

#include "mailnet/auth/auth.hpp"
#include "mailnet/error.hpp"
#include "mailnet/log.hpp"
#include "mailnet/net/server.hpp"
#include "mailnet/net/service.hpp"
#include "mailnet/smtpd/callbacks.hpp"
#include "mailnet/smtpd/session.hpp"
#include "mailnet/store/store.hpp"

namespace mailnet::smtp {

/// Everything an SMTP server is configured with (the seed's configure/cget options).
struct server_config {
    std::vector<net::listen_spec> listen;          ///< "smtp" (STARTTLS) and "smtps" (implicit TLS) listeners
    std::shared_ptr<callbacks> handler;            ///< validate_* and (without a store) deliver; null: accept all
    /// Where accepted mail goes, durably, before the 250 (Return-Path and Received prepended).
    /// Null: handler->deliver gets each message instead.
    std::shared_ptr<store> storage;
    /// AUTH PLAIN/LOGIN checks it; null: no AUTH. With `recipients_from_auth`, RCPT is accepted
    /// only for its accounts (authenticator::resolve_recipient; unknown: 550 5.1.1) and mail goes
    /// to the account's mailbox; without, to mailbox_for_address(recipient) (open mode).
    std::shared_ptr<authenticator> auth;
    bool recipients_from_auth = false;
    std::shared_ptr<asio::ssl::context> tls;       ///< enables STARTTLS and smtps listeners
    bool allow_plaintext_auth = false;             ///< AUTH without TLS from non-loopback peers
    bool require_auth = false;                     ///< MAIL only after AUTH (a submission server)
    bool normalise_bare_line_ends = false;         ///< bare CR/LF in DATA become line ends instead of 550
    std::string hostname = "localhost";            ///< greeting, EHLO, Received:
    std::size_t max_connections = 1024;            ///< excess: "421 4.3.2" and close
    std::size_t max_per_peer = 32;                 ///< per client address, loopback exempt
    std::chrono::seconds idle_timeout{300};        ///< RFC 5321 4.5.3.2.7: at least 5 minutes
    bool allow_short_idle_timeout = false;         ///< accept an idle_timeout below 300 s (tests)
    std::chrono::seconds tls_handshake_timeout{30};
    std::size_t read_ahead_octets = 64 * 1024;     ///< pipelined input buffered at most
    std::chrono::seconds line_timeout{60};         ///< a command line completes within this of its first octet
    std::chrono::seconds login_timeout{120};       ///< with require_auth: AUTH within this, or closed
    std::chrono::seconds peer_failure_window{60};  ///< failed logins per peer counted this long
    std::size_t blocking_threads = 8;              ///< pool for callbacks, hashing and store calls
    limits session_limits;                         ///< command and message sizes, recipients, failures
    /// The time in Received: headers; empty: the system clock (tests fix it).
    std::function<std::chrono::system_clock::time_point()> clock;
    log_sink log = stderr_log();
};

/// An SMTP server: create, up, down, destroy(kill | defer), list connections (net::service).
class server : public net::service {
public:
    /// Creates the server on `io` (run it on one thread). Nothing is bound before up(), which
    /// returns errc::bad_config if the configuration was unusable (smtps or STARTTLS without a
    /// certificate, an idle timeout below 300 s without allow_short_idle_timeout, limits below
    /// RFC 5321's minimums).
    server(asio::io_context& io, server_config config);

    /// The configuration in force (cget).
    const server_config& config() const noexcept { return config_; }
    /// Replaces the configuration (configure); only while down with no session open, and only
    /// with usable limits. errc::bad_config otherwise (the reason is logged).
    result<void> configure(server_config config);

    struct shared;  ///< state shared with the sessions (implementation detail)

private:
    result<void> build();
    server_config config_;
    std::shared_ptr<shared> shared_;
};

}  // namespace mailnet::smtp
