// mailnet/net/service.hpp: the server object's shape every protocol server shares (DESIGN.md
// "Layers" 3): up / down / destroy(kill | defer), the bound listeners with their real ports, the
// connection list, and a configure() that only replaces a configuration while nothing runs.
// pop3::server and smtp::server derive from it and add only their protocol's configuration.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <asio/io_context.hpp>

#include "mailnet/error.hpp"
#include "mailnet/net/server.hpp"

namespace mailnet::net {

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

    asio::io_context& io_;

private:
    std::shared_ptr<server> base_;
    std::error_code build_error_;
};

}  // namespace mailnet::net
