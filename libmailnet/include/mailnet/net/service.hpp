// mailnet/net/service.hpp: the server object's shape every protocol server shares (DESIGN.md
// "Layers" 3): up / down / destroy(kill | defer), the bound listeners with their real ports, the
// connection list, and a configure() that only replaces a configuration while nothing runs.
// pop3::server and smtp::server derive from it and add only their protocol's configuration.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ssl/context.hpp>

#include "mailnet/auth/throttle.hpp"
#include "mailnet/error.hpp"
#include "mailnet/log.hpp"
#include "mailnet/net/runner.hpp"
#include "mailnet/net/server.hpp"

namespace mailnet {
class authenticator;
class fault_rules;
class store;
}  // namespace mailnet

namespace mailnet::net {

/// What every protocol server is configured with (the seed's configure/cget options that are
/// not its protocol's own; DESIGN.md "Limits"). pop3::server_config and smtp::server_config
/// derive from it.
struct service_config {
    std::vector<listen_spec> listen;                ///< plain (STLS/STARTTLS) and implicit-TLS listeners
    std::shared_ptr<authenticator> auth;            ///< logins (and SMTP recipients in users mode)
    std::shared_ptr<store> storage;                 ///< the mailboxes
    std::shared_ptr<asio::ssl::context> tls;        ///< enables STLS/STARTTLS and implicit-TLS listeners
    /// Fault rules every session consults (mailnet/faults.hpp), which may change while the server
    /// runs; null: none, at no cost. mailnetd shares one between its servers and its HTTP API.
    std::shared_ptr<fault_rules> faults;
    bool allow_plaintext_auth = false;              ///< plaintext passwords from non-loopback peers without TLS
    std::string hostname = "localhost";             ///< in greetings (and SMTP's Received:)
    std::size_t max_connections = 1024;             ///< excess: a temporary error and close
    std::size_t max_per_peer = 32;                  ///< per client address, loopback exempt
    std::chrono::seconds idle_timeout{600};         ///< the protocol's RFC minimum at least (POP3 600 s, SMTP 300 s)
    bool allow_short_idle_timeout = false;          ///< accept an idle_timeout below that minimum (tests)
    std::chrono::seconds tls_handshake_timeout{30};
    std::chrono::seconds shutdown_grace{10};        ///< destroy(defer): an exchange in progress gets this long
    std::size_t read_ahead_octets = 64 * 1024;      ///< pipelined input buffered at most
    std::chrono::seconds line_timeout{60};          ///< a command line completes within this of its first octet
    std::chrono::seconds login_timeout{120};        ///< logged in within this, or closed
    std::uint32_t min_data_rate = 0;                ///< octets/s a message must average (runner_options); 0: none
    std::chrono::seconds peer_failure_window{60};   ///< failed logins per peer counted this long
    std::size_t blocking_threads = 4;               ///< pool for auth hashing, callbacks and store calls
    log_sink log = stderr_log();

    /// Why these settings cannot run ("" if they can): the idle timeout below `min_idle`
    /// (named by `rfc`) without allow_short_idle_timeout, a timeout or limit that is not
    /// positive, a read-ahead limit below `min_read_ahead` octets.
    std::string problem(std::chrono::seconds min_idle, std::string_view rfc, std::size_t min_read_ahead) const;
    /// The server base's options.
    server_options base_options() const;
    /// The runner's options for `protocol`, with the service's failed-login tables.
    runner_options runner(std::string protocol, std::shared_ptr<login_throttle> per_peer,
                          std::shared_ptr<login_throttle> per_account) const;
};

class service {
public:
    service(const service&) = delete;
    service& operator=(const service&) = delete;

    /// Binds every listener and starts serving; the real ports are in listeners(). The error of
    /// an unusable configuration (errc::bad_config) if the last configure() or construction failed.
    result<void> up();
    /// Stops listening; open sessions go on.
    void down();
    /// Stops listening and closes sessions now (kill) or when they end (defer); `on_gone` runs
    /// once none is left.
    void destroy(server::destroy_mode mode, std::function<void()> on_gone = {});
    /// The bound listeners with their real ports (port 0 resolved).
    std::vector<bound_listener> listeners() const;
    /// The open connections (id, peer, state, user, bytes, start).
    std::vector<connection_info> connections() const;
    /// One connection's state, if it is open.
    std::optional<connection_info> connection(std::uint64_t id) const;
    /// The underlying server base (for run_until_signalled).
    std::shared_ptr<server> base() const noexcept { return base_; }

protected:
    explicit service(asio::io_context& io) : io_(io) {}
    ~service();  ///< kills what is still open

    /// Whether a new configuration may be put in force: down, and no session of the current one
    /// left (they would drop out of connections() and out of destroy()'s reach).
    bool replaceable() const;
    /// (Re)creates the server base with its listeners; a failure is kept and returned by up().
    result<void> rebuild(server_options options, session_handler handler, std::string busy_reply,
                         const std::vector<listen_spec>& listen);
    /// Records why the configuration cannot run (up() returns it).
    void set_build_error(std::error_code e) noexcept { build_error_ = e; }
    /// configure(): puts `next` in force as `current` only while replaceable() and only if
    /// `check(next)` passes (else errc::bad_config and `current` stays); then `build()`.
    template <class Config, class Check, class Build>
    result<void> replace(Config& current, Config next, Check check, Build build) {
        if (!replaceable()) return unexpected(errc::bad_config);
        if (auto v = check(next); !v) return v;
        current = std::move(next);
        auto r = build();
        if (!r) set_build_error(r.error());
        return r;
    }

    asio::io_context& io_;

private:
    std::shared_ptr<server> base_;
    std::error_code build_error_;
};

/// A service with its configuration: config() (cget) and configure(), which puts a new one in
/// force only while down and idle and only if check() passes. A component's server derives,
/// calls start() at the end of its constructor, and implements check() and build().
template <class Config>
class configured_service : public service {
public:
    /// The configuration in force (cget).
    const Config& config() const noexcept { return config_; }
    /// Replaces the configuration (configure); only while down with no session open, and only
    /// with usable limits. errc::bad_config otherwise (the reason is logged); the previous
    /// configuration then stays in force.
    result<void> configure(Config next) {
        return replace(config_, std::move(next), [&](const Config& c) { return check(c); }, [&] { return build(); });
    }

protected:
    configured_service(asio::io_context& io, Config config) : service(io), config_(std::move(config)) {}
    ~configured_service() = default;
    /// Builds from the constructor's configuration (a failure is returned by up()).
    void start() {
        if (!config_.log) config_.log = null_log();
        if (auto r = check(config_); !r) return set_build_error(r.error());
        if (auto r = build(); !r) set_build_error(r.error());
    }
    /// errc::bad_config, with the reason logged, if `c` cannot run.
    virtual result<void> check(const Config& c) const = 0;
    /// (Re)creates the server base from config_ (rebuild()).
    virtual result<void> build() = 0;

    Config config_;
};

}  // namespace mailnet::net
