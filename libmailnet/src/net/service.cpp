// service.cpp: the server object's shape every protocol server shares.
#include "mailnet/net/service.hpp"

#include <algorithm>

namespace mailnet::net {

std::string service_config::problem(std::chrono::seconds min_idle, std::string_view rfc,
                                    std::size_t min_read_ahead) const {
    if (idle_timeout.count() <= 0) return "idle timeout must be positive";
    if (idle_timeout < min_idle && !allow_short_idle_timeout)
        return "idle timeout below " + std::to_string(min_idle.count()) + " s breaks " + std::string(rfc) +
               " (set allow_short_idle_timeout)";
    if (line_timeout.count() <= 0 || login_timeout.count() <= 0) return "command line and login timeouts must be positive";
    if (tls_handshake_timeout.count() <= 0 || shutdown_grace.count() <= 0)
        return "TLS handshake timeout and shutdown grace must be positive";
    if (max_connections == 0 || max_per_peer == 0 || blocking_threads == 0)
        return "connection limits and the pool size must be at least 1";
    if (read_ahead_octets < min_read_ahead) return "the read-ahead limit must hold one command (or SASL) line";
    if (hostname.empty() ||
        !std::all_of(hostname.begin(), hostname.end(), [](char c) { return c > 32 && c < 127; }))
        return "the hostname must be printable ASCII without spaces";
    return {};
}

server_options service_config::base_options() const {
    server_options o;
    o.max_connections = max_connections;
    o.max_per_peer = max_per_peer;
    o.idle_timeout = idle_timeout;
    o.tls_handshake_timeout = tls_handshake_timeout;
    o.shutdown_grace = shutdown_grace;
    o.tls = tls;
    o.blocking_threads = blocking_threads;
    o.log = log ? log : null_log();
    return o;
}

runner_options service_config::runner(std::string protocol, std::shared_ptr<login_throttle> per_peer,
                                      std::shared_ptr<login_throttle> per_account) const {
    runner_options o;
    o.protocol = std::move(protocol);
    o.read_ahead_octets = read_ahead_octets;
    o.line_timeout = line_timeout;
    o.login_timeout = login_timeout;
    o.min_data_rate = min_data_rate;
    o.throttle = std::move(per_peer);
    o.account_throttle = std::move(per_account);
    return o;
}

service::~service() {
    if (base_) base_->destroy(server::destroy_mode::kill);
}

bool service::replaceable() const { return !base_ || (!base_->is_up() && base_->connections().empty()); }

result<void> service::rebuild(server_options options, session_handler handler, std::string busy_reply,
                              const std::vector<listen_spec>& listen) {
    build_error_.clear();
    base_ = server::create(io_, std::move(options), std::move(handler), std::move(busy_reply));
    for (const auto& l : listen) {
        if (auto r = base_->listen(l); !r) {
            build_error_ = r.error();
            return r;
        }
    }
    return {};
}

result<void> service::up() {
    if (build_error_) return unexpected(build_error_);
    if (!base_) return unexpected(errc::bad_config);
    return base_->up();
}

void service::down() {
    if (base_) base_->down();
}

void service::destroy(server::destroy_mode mode, std::function<void()> on_gone) {
    if (base_)
        base_->destroy(mode, std::move(on_gone));
    else if (on_gone)
        on_gone();
}

std::vector<bound_listener> service::listeners() const { return base_ ? base_->listeners() : std::vector<bound_listener>{}; }

std::vector<connection_info> service::connections() const {
    return base_ ? base_->connections() : std::vector<connection_info>{};
}

std::optional<connection_info> service::connection(std::uint64_t id) const {
    return base_ ? base_->connection_state(id) : std::nullopt;
}

}  // namespace mailnet::net
