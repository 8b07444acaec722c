// mailnet/net/stream.hpp: one stream type that starts as plain TCP and can be upgraded to TLS
// in place (STLS RFC 2595 4, STARTTLS RFC 3207 4), or starts with TLS (RFC 8314 implicit
// TLS). Reads and writes never throw: they return error codes. A deadline closes the
// socket when it passes: a cancelled TLS read is never resumed.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/steady_timer.hpp>

#include "mailnet/error.hpp"
#include "mailnet/net/tls.hpp"

namespace mailnet::net {

/// A TCP connection, plain or TLS.
class stream {
public:
    using clock = std::chrono::steady_clock;

    /// Takes a connected socket; plain until a handshake.
    explicit stream(asio::ip::tcp::socket socket);
    /// The same, with the peer's address already known (accept(2) gave it): no getpeername(2).
    stream(asio::ip::tcp::socket socket, const asio::ip::tcp::endpoint& remote);
    stream(const stream&) = delete;
    stream& operator=(const stream&) = delete;
    ~stream();

    /// Reads some octets; 0 with an error at EOF (asio::error::eof; over TLS without
    /// close_notify asio::ssl::error::stream_truncated), failure, or errc::timed_out.
    asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, std::error_code& ec);

    /// Writes all of `buf` in chunks of at most 64 KiB; with a progress timeout the deadline is
    /// renewed after each, so a peer that reads nothing is closed (errc::timed_out).
    asio::awaitable<std::error_code> write_all(asio::const_buffer buf);

    /// Server handshake (implicit TLS or after STLS/STARTTLS). The caller has already
    /// dropped any plaintext bytes it buffered. Fails cleanly after `timeout` (0: no limit of
    /// its own): errc::timed_out, or errc::tls_error with the reason in `why`; the stream is
    /// closed on failure.
    asio::awaitable<std::error_code> server_handshake(asio::ssl::context& ctx, std::chrono::seconds timeout,
                                                      std::string* why = nullptr);

    /// Client handshake: sets SNI (names only, RFC 6066 3) and checks the host name or IP
    /// literal (unless `verify` is insecure or pinned; a pinned fingerprint is compared here).
    /// Failures as server_handshake, plus errc::bad_config for a malformed pin.
    asio::awaitable<std::error_code> client_handshake(asio::ssl::context& ctx, const std::string& host,
                                                      const tls_client_options& verify, std::chrono::seconds timeout,
                                                      std::string* why = nullptr);

    /// Sends close_notify if TLS (bounded by `timeout`), then shuts the socket down and closes it.
    asio::awaitable<void> shutdown(std::chrono::seconds timeout = std::chrono::seconds(5));

    /// Closes the socket now (cancels pending operations) and disarms the deadline.
    void close() noexcept;
    /// Ends the pending operations (they complete with asio::error::operation_aborted) and
    /// leaves the socket open. A TLS stream whose read was cancelled may still be written to
    /// and shut down, never read again (a record may have been cut).
    void cancel() noexcept;

    /// What a deadline does when it passes: close the socket (the default), or only cancel
    /// what is pending, so the caller can still say why before it closes (SMTP's 421 4.4.2).
    enum class on_expiry { close, cancel };
    /// Sets the time after which the socket is closed (or, with on_expiry::cancel, its pending
    /// operations ended), whatever is pending (the idle timeout); `clock::time_point::max()` for
    /// none. Operations cut short by it complete with errc::timed_out. The latest call's
    /// `then` applies.
    void set_deadline(clock::time_point when, on_expiry then = on_expiry::close);
    /// After a deadline with on_expiry::cancel passed: the stream may be written to again (under
    /// a new deadline); a TLS stream is never read again. No effect on a closed stream.
    void clear_timeout() noexcept;
    /// The deadline now in force (`clock::time_point::max()` for none).
    clock::time_point deadline() const noexcept;
    /// No deadline set from now on (by set_deadline, a write's progress, a handshake) lies past
    /// `cap` (a login limit); `clock::time_point::max()` lifts it. Applies to the current one too.
    void set_deadline_cap(clock::time_point cap);
    /// While write_all runs, the deadline becomes now + this before it starts and after every
    /// chunk (send progress); 0 (the default): write_all leaves the deadline alone.
    void set_progress_timeout(std::chrono::seconds t) noexcept { progress_timeout_ = t; }

    /// True once a TLS handshake was started on this stream.
    bool is_tls() const noexcept { return tls_ != nullptr; }
    /// True until closed (by close(), shutdown(), a failed handshake or the deadline).
    bool is_open() const noexcept;
    /// True if the deadline passed and closed the stream (or cancelled what was pending).
    bool timed_out() const noexcept;
    /// The TLS protocol and cipher, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"; empty if plain.
    std::string tls_description() const;
    /// OpenSSL's handle once a handshake was started (peer certificate, SNI); null if plain.
    /// Read from it; reading or writing through it would bypass the stream.
    SSL* native_ssl() noexcept { return tls_ ? tls_->native_handle() : nullptr; }
    /// The socket, for options only: never read or write it directly (the stream keeps it
    /// non-blocking for its own plain reads and writes, and TLS owns it once on).
    asio::ip::tcp::socket& socket() noexcept { return socket_; }
    /// The peer's address, as it was at construction (still valid after close).
    asio::ip::tcp::endpoint remote_endpoint() const { return remote_; }
    /// The socket's executor; the stream must only be used from it (a strand if multi-threaded).
    asio::any_io_executor get_executor() noexcept { return socket_.get_executor(); }

private:
    asio::awaitable<std::error_code> handshake(asio::ssl::stream_base::handshake_type type,
                                               std::chrono::seconds timeout, std::string* why);
    std::error_code handshake_failed(std::error_code ec, std::string* why);
    asio::ip::tcp::socket socket_;
    asio::ip::tcp::endpoint remote_;
    std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;
    std::shared_ptr<struct stream_watchdog> watchdog_;
    bool inline_io();
    std::chrono::seconds progress_timeout_{0};
    clock::time_point cap_ = clock::time_point::max();
    int inline_ops_ = 0;        // plain reads and writes done at once since the last wait (net.cpp)
    bool read_filled_ = false;  // the last read filled its buffer: more input is likely waiting
};

/// The client side's first step: resolves `host` (a name or an IP literal) and connects to its
/// addresses in turn, all within `timeout` (0: no limit of its own). Fails with
/// errc::timed_out, errc::not_found (the name does not resolve) or the last address's error,
/// with the reason in `why`. Never throws.
asio::awaitable<result<asio::ip::tcp::socket>> connect_to(asio::any_io_executor ex, std::string host,
                                                           std::uint16_t port, std::chrono::seconds timeout,
                                                           std::string* why = nullptr);

}  // namespace mailnet::net
