// service.cpp: the server object's shape every protocol server shares.
#include "mailnet/net/service.hpp"

namespace mailnet::net {

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
