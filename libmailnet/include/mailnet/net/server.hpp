// mailnet/net/server.hpp: the server base every protocol server stands on: listeners on any
// number of addresses (port 0 allowed), implicit TLS (RFC 8314), the connection registry,
// up / down / destroy(kill | defer), connection limits, signals, a pool for blocking calls.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <asio/ssl/context.hpp>
#include <asio/thread_pool.hpp>

#include "mailnet/error.hpp"
#include "mailnet/log.hpp"
#include "mailnet/net/stream.hpp"

namespace mailnet::net {

/// One address to listen on.
struct listen_spec {
    std::string service;        ///< "pop3", "pop3s", "smtp", "smtps": the name in the listening line
    std::string address;        ///< an IP literal: "127.0.0.1", "::1", "0.0.0.0", "::"
    std::uint16_t port = 0;     ///< 0: the OS chooses; listeners() tells which
    bool implicit_tls = false;  ///< TLS handshake before the session starts (RFC 8314 3.3)
};

/// Parses "ADDR:PORT" or "[V6ADDR]:PORT" (port 0-65535); errc::bad_config otherwise.
result<listen_spec> parse_listen(std::string_view text, std::string service, bool implicit_tls);

/// Whether `a` is a loopback address, an IPv4-mapped one (::ffff:127.0.0.1) included.
bool is_loopback(const asio::ip::address& a);

/// Whether the listener's address is a loopback address (open mode and plaintext rules).
bool is_loopback(const listen_spec& l);

/// A bound listener.
struct bound_listener {
    std::string service;                ///< as in its listen_spec
    asio::ip::tcp::endpoint endpoint;   ///< the real address and port
};

/// The line a server prints once a listener is bound: "listening pop3 127.0.0.1:1100".
std::string listening_line(const bound_listener& l);

/// A snapshot of one connection's state, for connections() and logs.
struct connection_info {
    std::uint64_t id = 0;                              ///< unique per server, from 1
    std::string service;                               ///< the listener's service name
    std::string peer;                                  ///< "ADDR:PORT" of the client
    std::string state;                                 ///< set by the session, e.g. "AUTHORIZATION"
    std::string user;                                  ///< set by the session after login
    std::uint64_t bytes_in = 0;                        ///< octets read
    std::uint64_t bytes_out = 0;                       ///< octets written
    bool tls = false;                                  ///< TLS is on (implicit or upgraded)
    std::chrono::system_clock::time_point started{};   ///< accept time
};

/// Limits and parts of a server.
struct server_options {
    std::size_t max_connections = 1024;                ///< excess gets `busy_reply` (over TLS on an implicit-TLS listener), then close
    std::size_t max_per_peer = 32;                     ///< per client address
    bool loopback_exempt = true;                       ///< max_per_peer does not apply to loopback peers
    std::chrono::seconds idle_timeout{600};            ///< read wait and send progress limit
    std::chrono::seconds tls_handshake_timeout{30};
    std::chrono::seconds shutdown_grace{10};           ///< destroy(defer): an exchange in progress gets this long to finish
    std::shared_ptr<asio::ssl::context> tls;           ///< for implicit TLS and STLS/STARTTLS; may be null
    std::size_t blocking_threads = 4;                  ///< pool for auth hashing and store calls
    log_sink log = stderr_log();
};

class server;

/// One accepted connection, handed to the session handler.
class connection {
public:
    /// `peer` is the address accept(2) gave for `socket`.
    connection(server& owner, std::uint64_t id, const listen_spec& listener, asio::ip::tcp::socket socket,
               const asio::ip::tcp::endpoint& peer);

    /// The id in the registry.
    std::uint64_t id() const noexcept { return id_; }
    /// The listener that accepted it.
    const listen_spec& listener() const noexcept { return listener_; }
    /// The client's address.
    const asio::ip::tcp::endpoint& peer() const noexcept { return peer_; }
    /// Whether the client connects over loopback (plaintext-auth and per-peer rules).
    bool peer_is_loopback() const noexcept;
    /// The transport; prefer read_some / write below, which keep the registry's counters.
    stream& io() noexcept { return stream_; }

    /// Reads some octets, waiting at most the idle timeout; 0 and an error at EOF/timeout.
    asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, std::error_code& ec);
    /// Reads some octets, waiting until `deadline` at most (errc::timed_out then; with
    /// on_expiry::cancel the stream stays open, see stream::clear_timeout).
    asio::awaitable<std::size_t> read_some_until(asio::mutable_buffer buf, std::error_code& ec,
                                                 stream::clock::time_point deadline,
                                                 stream::on_expiry then = stream::on_expiry::close);
    /// The idle timeout of the server.
    std::chrono::seconds idle_timeout() const noexcept;
    /// Writes everything; a peer that reads nothing for the idle timeout is closed, and after
    /// destroy(defer) one that has not read it all by read_limit() (a second at least).
    asio::awaitable<std::error_code> write(asio::const_buffer buf);
    /// Upgrades to TLS in place (STLS/STARTTLS), with the handshake timeout.
    asio::awaitable<std::error_code> start_tls();
    /// Runs a blocking call (hashing, disk) on the server's pool; resumes here after.
    asio::awaitable<void> run_blocking(std::function<void()> work);

    /// Sets the state name shown in connection_info.
    void set_state(std::string_view state);
    /// Sets the user shown in connection_info.
    void set_user(std::string_view user);
    /// True once the server is destroyed with defer: finish the exchange, then close.
    bool stopping() const noexcept;
    /// Marks the connection idle (waiting for a new command, or in a failed-login delay):
    /// destroy(defer) closes idle connections at once. I/O thread only.
    void set_idle(bool idle) noexcept { idle_ = idle; }
    /// Marks an idle connection whose session has words for the peer at shutdown (SMTP's 421):
    /// destroy(defer) then ends its read (operation_aborted; the connection stays open) instead
    /// of closing it, and the session writes them and closes. I/O thread only.
    void set_notice_on_stop(bool notice) noexcept { notice_on_stop_ = notice; }
    /// Marks the connection waiting for input (I/O thread): destroy(defer) shortens that wait
    /// to the shutdown grace; a hook's work and the writing of its reply are never cut by it.
    void set_reading(bool reading) noexcept { reading_ = reading; }
    /// After destroy(defer): when reads and writes must be done by (an exchange in progress
    /// gets the shutdown grace); time_point::max() before. I/O thread.
    stream::clock::time_point read_limit() const noexcept { return read_limit_; }
    /// Whether a TLS context is configured (STLS/STARTTLS can be offered).
    bool tls_available() const noexcept;
    /// The server's log.
    const log_sink& log() const noexcept;
    /// This connection's entry.
    connection_info info() const;

private:
    friend class server;
    server& owner_;
    std::uint64_t id_;
    listen_spec listener_;
    asio::ip::tcp::endpoint peer_;
    stream stream_;
    std::atomic<std::uint64_t> bytes_in_{0}, bytes_out_{0};
    std::atomic<bool> tls_{false};  // for info() from other threads: the stream's own state is the I/O thread's
    bool idle_ = false;
    bool notice_on_stop_ = false;
    bool reading_ = false;
    stream::clock::time_point read_limit_ = stream::clock::time_point::max();
    bool writing_ = false;
    std::chrono::system_clock::time_point started_;
    mutable std::mutex mutex_;  // guards state_ and user_ (read from other threads)
    std::string state_, user_;
};

/// What a component runs for each accepted connection (after the implicit TLS handshake).
using session_handler = std::function<asio::awaitable<void>(connection&)>;

/// A TCP server: the seed's up / down / destroy semantics over Asio coroutines.
class server : public std::enable_shared_from_this<server> {
public:
    /// How destroy() treats open connections.
    enum class destroy_mode {
        kill,   ///< close every connection now
        defer,  ///< stop accepting; the server is gone when the last connection closes
    };

    /// Creates a server on `io`; `busy_reply` is written to a connection over a limit
    /// (e.g. "-ERR [SYS/TEMP] too many connections\r\n").
    static std::shared_ptr<server> create(asio::io_context& io, server_options options, session_handler handler,
                                          std::string busy_reply);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Adds a listener; bound at up() (or now, if already up).
    result<void> listen(listen_spec spec);
    /// Binds every listener and starts accepting. errc::io_error with a log line if any
    /// address cannot be bound (nothing stays bound then).
    result<void> up();
    /// Stops accepting; open connections go on.
    void down();
    /// down(), then kill or defer; `on_gone` (optional) runs once no connection is left.
    void destroy(destroy_mode mode, std::function<void()> on_gone = {});

    /// The bound listeners (after up()), with their real ports.
    std::vector<bound_listener> listeners() const;
    /// The open connections.
    std::vector<connection_info> connections() const;
    /// One connection, if open.
    std::optional<connection_info> connection_state(std::uint64_t id) const;
    /// Whether it is accepting.
    bool is_up() const noexcept { return up_; }
    /// The options it runs with.
    const server_options& options() const noexcept { return options_; }

private:
    friend class connection;
    server(asio::io_context& io, server_options options, session_handler handler, std::string busy_reply);
    // The coroutines take their owner as a parameter: it is copied into the frame when the
    // coroutine is created, so the server outlives every one of them (shared_from_this()
    // inside the body would run only once the coroutine starts, possibly too late).
    static asio::awaitable<void> accept_loop(std::shared_ptr<server> self,
                                             std::shared_ptr<asio::ip::tcp::acceptor> acceptor, listen_spec spec);
    static asio::awaitable<void> run_connection(std::shared_ptr<server> self, std::shared_ptr<connection> c);
    void refuse(asio::ip::tcp::socket socket);
    static asio::awaitable<void> refuse_over_tls(std::shared_ptr<server> self, asio::ip::tcp::socket socket);
    result<std::shared_ptr<asio::ip::tcp::acceptor>> bind(const listen_spec& spec);
    void connection_closed(std::uint64_t id);

    asio::io_context& io_;
    server_options options_;
    session_handler handler_;
    std::string busy_reply_;
    asio::thread_pool pool_;
    std::vector<listen_spec> specs_;
    std::vector<std::pair<listen_spec, std::shared_ptr<asio::ip::tcp::acceptor>>> acceptors_;
    mutable std::mutex mutex_;  // guards the registry and the per-peer counts
    std::map<std::uint64_t, std::weak_ptr<connection>> registry_;
    std::map<asio::ip::address, std::size_t> per_peer_;
    std::uint64_t next_id_ = 1;
    std::atomic<bool> up_{false};
    std::atomic<bool> stopping_{false};
    std::function<void()> on_gone_;
    // Refusals of implicit-TLS clients in progress (each a handshake): beyond this many, the
    // excess is closed without a word, so a flood costs no more than that many handshakes.
    static constexpr std::size_t max_refusing_tls = 64;
    std::atomic<std::size_t> refusing_tls_{0};
};

/// Raises the soft RLIMIT_NOFILE to the hard limit (DESIGN.md "Limits"); returns the new soft limit.
std::uint64_t raise_fd_limit() noexcept;

/// SIGTERM / SIGINT: the first destroys `servers` with defer, a second with kill. When
/// every server is gone, `on_all_gone` runs (typically io.stop() is not needed: the
/// signal set is cancelled so the io_context runs out of work).
class shutdown_on_signals {
public:
    shutdown_on_signals(asio::io_context& io, std::vector<std::shared_ptr<server>> servers,
                        std::function<void()> on_all_gone = {});
    /// Stops listening for signals.
    void cancel();
    /// The program stops by itself (mailnetd --exit-after): stop accepting at once, give open
    /// sessions up to `patience` to end by themselves (a client that just got its reply QUITs
    /// normally), then what a first signal does; a signal meanwhile is that first signal.
    /// On the io_context's thread. Once only; nothing if a signal came first.
    void stop(std::chrono::milliseconds patience = {});

private:
    void wait();
    void begin_stop();  // the first signal's work: destroy(defer), once
    void wait_for_idle(std::chrono::steady_clock::time_point until);
    asio::signal_set signals_;
    asio::steady_timer timer_;  // stop()'s patience
    std::vector<std::shared_ptr<server>> servers_;
    std::function<void()> on_all_gone_;
    bool stopping_ = false;  // begin_stop() ran: the next signal kills
    bool asked_ = false;     // stop() ran
    std::size_t gone_ = 0;
};

}  // namespace mailnet::net
