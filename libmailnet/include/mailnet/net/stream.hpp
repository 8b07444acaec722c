// mailnet/net/stream.hpp: one stream type that starts as plain TCP and can be upgraded to TLS
// in place (STLS RFC 2595 4, STARTTLS RFC 3207 4), or starts with TLS (RFC 8314 implicit
// TLS). Reads and writes never throw: they return error codes. A deadline closes the
// socket when it passes: a cancelled TLS read is never resumed.
#pragma once

#include <chrono>
#include <cstddef>
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

#include "mailnet/net/tls.hpp"

namespace mailnet::net {

/// A TCP connection, plain or TLS.
class stream {
public:
    using clock = std::chrono::steady_clock;

    explicit stream(asio::ip::tcp::socket socket);
    stream(const stream&) = delete;
    stream& operator=(const stream&) = delete;
    ~stream();

    /// Reads some octets; 0 with an error at EOF (asio::error::eof) or failure.
    asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, std::error_code& ec);

    /// Writes all of `buf` (several writes; the deadline is renewed by `progress_timeout`
    /// after each, so a peer that reads nothing is closed).
    asio::awaitable<std::error_code> write_all(asio::const_buffer buf);

    /// Server handshake (implicit TLS or after STLS/STARTTLS). The caller has already
    /// dropped any plaintext bytes it buffered. Fails cleanly after `timeout`.
    asio::awaitable<std::error_code> server_handshake(asio::ssl::context& ctx, std::chrono::seconds timeout);

    /// Client handshake: sets SNI and checks the host name (unless the context is insecure
    /// or pinned; a pinned fingerprint is compared here). `why` gets a human reason.
    asio::awaitable<std::error_code> client_handshake(asio::ssl::context& ctx, const std::string& host,
                                                      const tls_client_options& verify, std::chrono::seconds timeout,
                                                      std::string* why = nullptr);

    /// Sends close_notify if TLS (bounded by `timeout`), then shuts the socket down.
    asio::awaitable<void> shutdown(std::chrono::seconds timeout = std::chrono::seconds(5));

    /// Closes the socket now (cancels pending operations).
    void close() noexcept;

    /// Sets the time after which the socket is closed, whatever is pending
    /// (the idle timeout); `clock::time_point::max()` for none.
    void set_deadline(clock::time_point when);
    /// After every completed write, the deadline becomes now + this (send progress).
    void set_progress_timeout(std::chrono::seconds t) noexcept { progress_timeout_ = t; }

    bool is_tls() const noexcept { return tls_ != nullptr; }
    bool is_open() const noexcept;
    /// The TLS protocol and cipher, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"; empty if plain.
    std::string tls_description() const;
    asio::ip::tcp::socket& socket() noexcept { return socket_; }
    asio::ip::tcp::endpoint remote_endpoint() const;
    asio::any_io_executor get_executor() noexcept { return socket_.get_executor(); }

private:
    void arm_watchdog();
    asio::ip::tcp::socket socket_;
    std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;
    std::shared_ptr<struct stream_watchdog> watchdog_;
    std::chrono::seconds progress_timeout_{0};
};

}  // namespace mailnet::net
