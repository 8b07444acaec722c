// mailnet/pop3c/async_client.hpp: the POP3 client as Asio coroutines (asio::awaitable), over
// the sans-I/O core. Every seed call (open, status, last, retrieve, delete, list, top, uidl,
// capa, close) plus streaming and pipelined retrieval. Not thread-safe: one call at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include "mailnet/pop3c/types.hpp"

namespace mailnet::pop3c {

/// One logged-in POP3 session.
class async_client {
public:
    /// Connects, secures (options.tls), reads CAPA, logs in and takes STAT. Port 0: 995 with
    /// implicit TLS, else 110. Errors as client::open's.
    static asio::awaitable<outcome<std::unique_ptr<async_client>>> open(asio::any_io_executor ex, std::string host,
                                                                        std::string user, std::string password,
                                                                        std::uint16_t port = 0, options opts = {});
    ~async_client();
    async_client(const async_client&) = delete;
    async_client& operator=(const async_client&) = delete;

    /// STAT: count and octets now (the numbers stay those of the login snapshot).
    asio::awaitable<outcome<mailbox_status>> status();
    /// LAST: the highest message number already retrieved (0 if none).
    asio::awaitable<outcome<std::uint32_t>> last();
    /// LIST: every message with its size; list(n): one.
    asio::awaitable<outcome<std::vector<listing>>> list();
    asio::awaitable<outcome<listing>> list(std::uint32_t n);
    /// UIDL: every message's unique id; uidl(n): one.
    asio::awaitable<outcome<std::vector<unique_id>>> uidl();
    asio::awaitable<outcome<unique_id>> uidl(std::uint32_t n);
    /// CAPA: the capabilities now (after STLS, the ones asked again).
    asio::awaitable<outcome<capabilities>> capa();
    /// TOP n lines: the header block and that many body lines.
    asio::awaitable<outcome<std::string>> top(std::uint32_t n, std::uint32_t lines);
    /// RETR of start[..end] (the seed's index words), each message whole in memory.
    asio::awaitable<outcome<std::vector<std::string>>> retrieve(message_index start, std::optional<message_index> end = {});
    /// RETR of start[..end], streamed to `h`, pipelined when the server allows.
    asio::awaitable<outcome<void>> retrieve(message_index start, std::optional<message_index> end, retrieval_handler& h);
    /// RETR of the given numbers in order, streamed to `h`, pipelined when the server allows.
    asio::awaitable<outcome<void>> retrieve_each(std::vector<std::uint32_t> numbers, retrieval_handler& h);
    /// DELE of start[..end] (takes effect at close()).
    asio::awaitable<outcome<void>> remove(message_index start, std::optional<message_index> end = {});
    /// DELE of the given numbers, pipelined when the server allows.
    asio::awaitable<outcome<void>> remove_each(std::vector<std::uint32_t> numbers);
    /// NOOP.
    asio::awaitable<outcome<void>> noop();
    /// RSET: undeletes.
    asio::awaitable<outcome<void>> reset();
    /// QUIT: the server deletes what was marked (UPDATE); then closes. An -ERR here means some
    /// deletions failed (RFC 1939 6). Dropping the client without close() deletes nothing.
    asio::awaitable<outcome<void>> close();

    /// The message count of the login snapshot (STAT at login).
    std::uint32_t count() const noexcept;
    /// The capabilities read at login (after TLS when used).
    const capabilities& server_capabilities() const noexcept;
    /// The greeting's text.
    const std::string& greeting() const noexcept;
    /// The retrieval mode in force (it falls back: retr to list, list to slow).
    retr_mode mode() const noexcept;
    /// True when the connection is TLS.
    bool secure() const noexcept;
    /// How the client logged in: "USER", "APOP" or "PLAIN".
    const std::string& login_used() const noexcept;

    struct impl;

private:
    explicit async_client(std::unique_ptr<impl> p);
    std::unique_ptr<impl> p_;
};

}  // namespace mailnet::pop3c
