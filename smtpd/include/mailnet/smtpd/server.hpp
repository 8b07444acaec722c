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

#include <asio/awaitable.hpp>
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

/// Everything an SMTP server is configured with (the seed's configure/cget options): what every
/// server has (net::service_config: listeners "smtp" (STARTTLS) and "smtps" (implicit TLS), TLS,
/// limits, timeouts; idle_timeout at least 300 s, RFC 5321 4.5.3.2.7) and SMTP's own.
// listen (service_config): empty means the seed's default, smtp on all interfaces, port 25
// (listeners_of); the smtpd program always passes its own (127.0.0.1:25 by default).
struct server_config : net::service_config {
    server_config() {
        idle_timeout = std::chrono::seconds(300);
        blocking_threads = 8;  // deliveries wait for the disk: more of them share each fsync
        // A message (DATA, the rest of one over the size limit too, or BDAT from its first
        // chunk to LAST; each chunk refused after a 552 on its own) averages 500 octets/s
        // after the idle timeout from its start, or the client is timed out: one that trickles
        // it would hold its connection for ever (Postfix's smtpd_min_data_rate).
        min_data_rate = 500;
    }
    std::shared_ptr<callbacks> handler;            ///< validate_* and (without a store) deliver; null: accept all
    // storage (service_config): where accepted mail goes, durably, before the 250 (Return-Path
    // and Received prepended). Null: handler->deliver gets each message instead.
    // auth (service_config): AUTH PLAIN/LOGIN checks it; null: no AUTH. With
    // `recipients_from_auth`, RCPT is accepted only for its accounts
    // (authenticator::resolve_recipient; unknown: 550 5.1.1) and mail goes to the account's
    // mailbox; without, to mailbox_for_address(recipient) (open mode).
    bool recipients_from_auth = false;
    bool require_auth = false;                     ///< MAIL only after AUTH (a submission server)
    /// Open mode (`storage` set, neither `recipients_from_auth` nor `require_auth`: anyone who
    /// connects may store mail for any address) listens on loopback addresses only unless this
    /// is set (DESIGN.md "Rules"); a non-loopback listener, the default 0.0.0.0 included, is
    /// errc::bad_config otherwise.
    bool allow_open_network = false;
    bool normalise_bare_line_ends = false;         ///< bare CR/LF in DATA become line ends instead of 550
    limits session_limits;                         ///< command and message sizes, recipients, failures
    /// Told of each message accepted (durable in every recipient's mailbox, or taken by
    /// handler->deliver), just before its 250 goes out; called on the I/O thread, so it must
    /// return at once (count, post work elsewhere). mailnetd --exit-after counts with it.
    std::function<void(const transaction_info&)> on_delivered;
    /// Awaited on the I/O thread after a message was accepted (after on_delivered) and before
    /// its 250 goes out: what must show the message before its sender hears it was taken
    /// (mailnetd: its HTTP index, so a client that got its 250 finds the message through the
    /// API at once). It cannot refuse the message; one that throws is logged. Keep it short:
    /// the session waits.
    std::function<asio::awaitable<void>(const transaction_info&)> before_reply;
    /// The time in Received: headers; empty: the system clock (tests fix it).
    std::function<std::chrono::system_clock::time_point()> clock;
};

/// The listeners `c` runs: `c.listen`, or when it is empty the seed's default, "smtp" on
/// 0.0.0.0 port 25 (all IPv4 interfaces).
std::vector<net::listen_spec> listeners_of(const server_config& c);

/// An SMTP server: create, up, down, destroy(kill | defer), list connections (net::service).
class server : public net::configured_service<server_config> {
public:
    /// Creates the server on `io` (run it on one thread). Nothing is bound before up(), which
    /// returns errc::bad_config if the configuration was unusable (smtps or STARTTLS without a
    /// certificate, an idle timeout below 300 s without allow_short_idle_timeout, limits below
    /// RFC 5321's minimums, open mode on a non-loopback address without allow_open_network).
    server(asio::io_context& io, server_config config);

    struct shared;  ///< state shared with the sessions (implementation detail)

private:
    result<void> check(const server_config& c) const override;
    result<void> build() override;
    std::shared_ptr<shared> shared_;
};

}  // namespace mailnet::smtp
