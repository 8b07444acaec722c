// mailnet/net/runner.hpp: the one connection runner (DESIGN.md "Layers" 3). It drives any
// sans-I/O protocol core over a connection: feeds it input, performs the actions every core
// shares (mailnet/actions.hpp) and hands the others to the component's hooks.
#pragma once

#include <chrono>
#include <concepts>
#include <exception>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include <asio/awaitable.hpp>

#include "mailnet/actions.hpp"
#include "mailnet/auth/throttle.hpp"
#include "mailnet/net/server.hpp"

namespace mailnet {
class store;
}

namespace mailnet::net {

/// What any core offers the runner. The core owns every ordering rule of its protocol: the
/// runner writes the output of send and stream_message actions in the order they were taken,
/// answers stream_message with streamed(), and never holds a queue of replies of its own.
template <class Core>
concept protocol_core = requires(Core c, const Core cc, std::string_view in, std::error_code ec) {
    c.feed(in);                                          // input octets
    { c.next() } -> std::same_as<typename Core::action>;  // the next action, need_input when idle
    { cc.buffered() } -> std::convertible_to<std::size_t>;  // input octets fed and not yet used
    { cc.partial_line_octets() } -> std::convertible_to<std::size_t>;  // of the line in progress, dropped ones included
    c.streamed(ec);                                      // answers the oldest stream_message
    c.tls_started();                                     // the handshake start_tls asked for is done
    { cc.state_text() } -> std::convertible_to<std::string_view>;  // for connection listings
};

/// The runner's limits and parts (DESIGN.md "Limits").
struct runner_options {
    std::string protocol = "pop3";                    ///< in log lines
    std::size_t read_ahead_octets = 64 * 1024;        ///< pipelined input buffered at most
    std::chrono::seconds line_timeout{60};            ///< a command line completes within this of its first octet
    std::chrono::seconds login_timeout{120};          ///< until logged_in(): AUTHORIZATION, or SMTP before MAIL with AUTH required
    bool login_required = true;                       ///< false: no login deadline (SMTP without required AUTH)
    /// Octets per second the input of a transfer (the core's transfer(), else its in_exchange():
    /// SMTP, a message, DATA or BDAT from its first chunk to LAST) must average while the runner
    /// waits for it: each octet read moves its deadline, the idle timeout from the first such
    /// wait, 1/min_data_rate s later, so a peer that trickles it slower is timed out (as an idle
    /// one) within about the idle timeout, and one that keeps the rate never is. Only waits for
    /// input count (on wall time, the server's own work between them too); what the server does
    /// with the octets (a delivery) never runs into it, nor into any other limit of the peer's
    /// but the login limit. 0: none.
    std::uint32_t min_data_rate = 0;
    std::shared_ptr<login_throttle> throttle;         ///< failed logins per peer address; null: none
    std::shared_ptr<login_throttle> account_throttle; ///< failed logins per account (a table of its own); null: none
    std::shared_ptr<mailnet::store> storage;          ///< where stream_message reads from; null: every message is gone
};

/// The type-erased view of a core the runner's compiled part uses.
class core_port {
public:
    virtual ~core_port() = default;
    virtual void feed(std::string_view octets) = 0;
    virtual std::size_t buffered() const = 0;
    virtual std::size_t partial_line_octets() const = 0;
    virtual void streamed(std::error_code error) = 0;
    virtual void tls_started() = 0;
    virtual bool in_exchange() const = 0;
    virtual std::uint64_t transfer() const = 0;
    virtual std::string_view shutdown_notice() const = 0;
    virtual std::string_view timeout_notice() const = 0;
};

/// One connection's runner: the write buffer, the read-ahead rule, the message producer on the
/// blocking pool, the failed-login delay and TLS. Hooks use it to reach the pool and the log.
class runner {
public:
    runner(connection& c, core_port& core, runner_options options);
    ~runner();
    runner(const runner&) = delete;
    runner& operator=(const runner&) = delete;

    /// Queues octets for the peer (written once enough is pending, or before any other action).
    asio::awaitable<bool> perform(act::send& a);
    /// Queues a message to stream (see act::stream_message).
    asio::awaitable<bool> perform(act::stream_message& a);
    /// Writes what is queued, then waits for input (within the idle, line and login limits) and
    /// feeds it; false when the peer is gone, timed out, or the server stops and this is idle
    /// (after writing the core's shutdown_notice(), if it has one, within a few seconds).
    asio::awaitable<bool> perform(act::need_input& a);
    /// Writes what is queued, then upgrades to TLS and tells the core; false on failure.
    asio::awaitable<bool> perform(act::start_tls& a);
    /// Logs, counts and waits (see act::login_failed); false if the peer left meanwhile.
    asio::awaitable<bool> perform(act::login_failed& a);
    /// Writes what is queued, then waits (see act::delay); false if the peer left meanwhile.
    asio::awaitable<bool> perform(act::delay& a);
    /// Writes what is queued; false (the connection ends).
    asio::awaitable<bool> perform(act::close& a);
    /// Streams the messages still queued (before a core that closes early gives up its mailbox).
    asio::awaitable<bool> drain_messages();

    /// Writes everything queued (replies and messages); false if the connection broke. Also
    /// false, after writing what is queued and then the core's timeout notice, once a limit
    /// passed during a wait (a failed login's delay): a hook is called only after drain(), and
    /// the runner's own actions (reads, waits, TLS) begin with it, so nothing the peer pipelined
    /// reaches a hook (no guess is checked, no message delivered) or is read any more; replies
    /// the core gives by itself meanwhile (act::send: the 535 owed, a NOOP's) are written
    /// first, and a pipelined QUIT's close ends the session with its own reply, not the notice.
    asio::awaitable<bool> drain();
    /// Runs `work` on the blocking pool (auth and store calls) and resumes here with its result.
    template <class F>
    asio::awaitable<std::invoke_result_t<F&>> on_pool(F work) {
        using R = std::invoke_result_t<F&>;
        if constexpr (std::is_void_v<R>) {
            co_await c_.run_blocking([&] { work(); });
        } else {
            std::optional<R> r;
            co_await c_.run_blocking([&] { r.emplace(work()); });
            co_return std::move(*r);
        }
    }
    /// As on_pool, for a call into code that may throw (a backend, a callback): an exception is
    /// logged ("PROTOCOL WHAT failed: TEXT", never sent to the peer) and `fallback` returned.
    template <class F, class R = std::invoke_result_t<F&>>
    asio::awaitable<R> on_pool_guarded(std::string_view what, R fallback, F work) {
        std::string error;
        auto r = co_await on_pool([&]() -> R {
            try {
                return work();
            } catch (const std::exception& e) {
                error = e.what();
            } catch (...) {
                error = "unknown exception";
            }
            return fallback;
        });
        if (!error.empty()) log_failure(what, error);
        co_return r;
    }
    /// The mailbox stream_message reads from (after a POP3 login), or none.
    void set_mailbox(std::string mailbox);
    /// The login succeeded: the login deadline ends; `user` shows in connection listings.
    void logged_in(std::string_view user);
    /// The connection.
    connection& conn() noexcept { return c_; }
    /// The server's log.
    const log_sink& log() const noexcept { return c_.log(); }
    /// Ends any read still in flight (before the connection is shut down).
    asio::awaitable<void> finish();
    /// Logs "PROTOCOL WHAT failed: TEXT" as an error.
    void log_failure(std::string_view what, std::string_view text) const;

    struct impl;  ///< implementation detail

private:
    connection& c_;
    std::unique_ptr<impl> p_;
};

namespace detail {
template <class T>
concept shared_action = std::is_same_v<T, act::need_input> || std::is_same_v<T, act::send> ||
                        std::is_same_v<T, act::stream_message> || std::is_same_v<T, act::start_tls> ||
                        std::is_same_v<T, act::login_failed> || std::is_same_v<T, act::delay> ||
                        std::is_same_v<T, act::close>;

template <protocol_core Core>
class port final : public core_port {
public:
    explicit port(Core& core) : core_(core) {}
    void feed(std::string_view octets) override { core_.feed(octets); }
    std::size_t buffered() const override { return core_.buffered(); }
    std::size_t partial_line_octets() const override { return core_.partial_line_octets(); }
    void streamed(std::error_code error) override { core_.streamed(error); }
    void tls_started() override { core_.tls_started(); }
    // Optional in a core: whether input it waits for belongs to an exchange in progress (SMTP:
    // a message being sent), which a shutdown lets finish. Without it: never.
    bool in_exchange() const override {
        if constexpr (requires(const Core& c) { { c.in_exchange() } -> std::convertible_to<bool>; })
            return core_.in_exchange();
        else
            return false;
    }
    // Optional in a core: the transfer under way, 0 if none, another number for each new one,
    // also between its exchanges (SMTP: a message, from DATA's 354 or its first BDAT chunk until
    // it ends), over which runner_options::min_data_rate counts. Without it: in_exchange().
    std::uint64_t transfer() const override {
        if constexpr (requires(const Core& c) { { c.transfer() } -> std::convertible_to<std::uint64_t>; })
            return core_.transfer();
        else
            return in_exchange() ? 1 : 0;
    }
    // Optional in a core: what to tell the peer when the server stops while the session waits
    // for a command (SMTP: 421 4.3.2, RFC 5321 3.8), written before the close. Without it, or
    // empty: the session is closed without a word (POP3 has nothing to say then).
    std::string_view shutdown_notice() const override {
        if constexpr (requires(const Core& c) { { c.shutdown_notice() } -> std::convertible_to<std::string_view>; })
            return core_.shutdown_notice();
        else
            return {};
    }
    // Optional in a core: what to tell the peer when it sent nothing in time (the idle, line
    // or login limit: SMTP's 421 4.4.2, as Postfix says it), written before the close. Without
    // it, or empty: the session is closed without a word (RFC 1939 3: POP3 says nothing then).
    std::string_view timeout_notice() const override {
        if constexpr (requires(const Core& c) { { c.timeout_notice() } -> std::convertible_to<std::string_view>; })
            return core_.timeout_notice();
        else
            return {};
    }

private:
    Core& core_;
};
}  // namespace detail

/// Drives `core` over `c` until it closes or the connection ends. `hooks(action, core, runner)`
/// performs the component's own actions (returning awaitable<bool>: false ends the connection);
/// `hooks.finish(core, runner)` runs once at the end, before the last octets are written when the
/// core closes (POP3 releases its mailbox there), and on every other way out too.
template <protocol_core Core, class Hooks>
asio::awaitable<void> run_connection(connection& c, Core& core, Hooks& hooks, runner_options options) {
    detail::port<Core> p(core);
    runner r(c, p, std::move(options));
    bool finished = false;
    std::exception_ptr failure;
    try {
        for (;;) {
            c.set_state(core.state_text());
            auto a = core.next();
            if (std::holds_alternative<act::close>(a)) {
                // Messages still queued go out while the hooks hold what they read (POP3: the
                // mailbox lock); the last replies after `finish` (POP3: "+OK bye" only once the
                // mailbox is free again).
                const bool whole = co_await r.drain_messages();
                finished = true;
                co_await hooks.finish(core, r);
                if (whole) co_await r.perform(std::get<act::close>(a));  // nothing after a cut message
                break;
            }
            const bool go = co_await std::visit(
                [&](auto& x) -> asio::awaitable<bool> {
                    using T = std::decay_t<decltype(x)>;
                    if constexpr (detail::shared_action<T>) {
                        co_return co_await r.perform(x);
                    } else {
                        // A hook's answer may depend on what went before: write that first.
                        const bool drained = co_await r.drain();
                        if (!drained) co_return false;
                        co_return co_await hooks(x, core, r);
                    }
                },
                a);
            if (!go) break;
        }
    } catch (...) {
        failure = std::current_exception();
    }
    if (!finished) {
        try {
            co_await hooks.finish(core, r);
        } catch (...) {
            if (!failure) failure = std::current_exception();
        }
    }
    // Always: no background read may outlive the runner.
    co_await r.finish();
    if (failure) std::rethrow_exception(failure);
}

}  // namespace mailnet::net
