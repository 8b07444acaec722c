// server.cpp: the server base: listeners, registry, limits, up/down/destroy, signals.
// One io_context thread runs the I/O; blocking calls go to a small pool (DESIGN.md "Limits").
#include "mailnet/net/server.hpp"

#include <sys/resource.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/dispatch.hpp>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/write.hpp>

#include <cerrno>
#include <charconv>
#include <exception>

namespace mailnet::net {
namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

std::string endpoint_text(const asio::ip::tcp::endpoint& ep) {
    const auto a = ep.address();
    std::string s = a.is_v6() ? "[" + a.to_string() + "]" : a.to_string();
    return s + ":" + std::to_string(ep.port());
}

// Errors of accept() that concern only the connection being accepted (it was reset or
// refused by a filter before we took it): the next accept may succeed at once.
// NOTE: Asio reports errno values in its own "asio.system" category, which does not map them
// to std::errc conditions, so the values are compared, not conditions.
bool is_per_connection_error(const std::error_code& ec) {
    if (ec == asio::error::connection_aborted) return true;
    if (ec.category() != asio::error::get_system_category() && ec.category() != std::system_category()) return false;
    return ec.value() == ECONNABORTED || ec.value() == EPROTO || ec.value() == EPERM || ec.value() == ENETDOWN ||
           ec.value() == ENOPROTOOPT || ec.value() == EHOSTDOWN || ec.value() == ENONET ||
           ec.value() == EHOSTUNREACH || ec.value() == EOPNOTSUPP || ec.value() == ENETUNREACH;
}

}  // namespace

bool is_loopback(const asio::ip::address& a) {
    if (a.is_loopback()) return true;
    // An IPv4-mapped IPv6 loopback (::ffff:127.0.0.1) from a dual-stack listener.
    return a.is_v6() && a.to_v6().is_v4_mapped() &&
           asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).is_loopback();
}

bool is_loopback(const listen_spec& l) {
    std::error_code ec;
    const auto a = asio::ip::make_address(l.address, ec);
    return !ec && is_loopback(a);
}


result<listen_spec> parse_listen(std::string_view text, std::string service, bool implicit_tls) {
    std::string_view host, port;
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return unexpected(errc::bad_config);
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos || text.find(':') != colon) return unexpected(errc::bad_config);
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
        return unexpected(errc::bad_config);
    std::error_code aec;
    const auto address = asio::ip::make_address(std::string(host), aec);
    if (aec) return unexpected(errc::bad_config);
    return listen_spec{std::move(service), address.to_string(), static_cast<std::uint16_t>(value), implicit_tls};
}

std::string listening_line(const bound_listener& l) {
    return "listening " + l.service + " " + endpoint_text(l.endpoint);
}

// ---- connection -------------------------------------------------------------------------

connection::connection(server& owner, std::uint64_t id, const listen_spec& listener, asio::ip::tcp::socket socket,
                       const asio::ip::tcp::endpoint& peer)
    : owner_(owner), id_(id), listener_(listener), peer_(peer), stream_(std::move(socket), peer),
      started_(std::chrono::system_clock::now()) {
    // Replies are coalesced before each write, so Nagle only delays the tail of a batch
    // until the client's delayed ACK (up to 40 ms a batch). NOTE: set on each connection
    // although Linux's own stack passes the listener's on (bind() sets it there too): a
    // user-space stack that also says __linux__ (gVisor) does not.
    std::error_code ec;
    stream_.socket().set_option(asio::ip::tcp::no_delay(true), ec);
    stream_.set_progress_timeout(owner_.options_.idle_timeout);
}

bool connection::peer_is_loopback() const noexcept { return is_loopback(peer_.address()); }

asio::awaitable<std::size_t> connection::read_some(asio::mutable_buffer buf, std::error_code& ec) {
    stream_.set_deadline(stream::clock::now() + owner_.options_.idle_timeout);
    const std::size_t n = co_await stream_.read_some(buf, ec);
    bytes_in_ += n;
    co_return n;
}

asio::awaitable<std::size_t> connection::read_some_until(asio::mutable_buffer buf, std::error_code& ec,
                                                         stream::clock::time_point deadline,
                                                         stream::on_expiry then) {
    stream_.set_deadline(deadline, then);
    const std::size_t n = co_await stream_.read_some(buf, ec);
    bytes_in_ += n;
    co_return n;
}

std::chrono::seconds connection::idle_timeout() const noexcept { return owner_.options_.idle_timeout; }

asio::awaitable<std::error_code> connection::write(asio::const_buffer buf) {
    // After destroy(defer), the grace's limit, but at least a second for this write: the reply
    // of a hook that ran past the limit still goes out to a client that reads. A cap, since
    // write_all renews its deadline after every piece it writes (its progress timeout).
    const auto now = stream::clock::now();
    if (read_limit_ != stream::clock::time_point::max())
        stream_.set_deadline_cap(std::max(read_limit_, now + std::chrono::seconds(1)));
    stream_.set_deadline(now + owner_.options_.idle_timeout);
    writing_ = true;
    const auto ec = co_await stream_.write_all(buf);
    writing_ = false;
    if (!ec) bytes_out_ += buf.size();
    co_return ec;
}

asio::awaitable<std::error_code> connection::start_tls() {
    if (!owner_.options_.tls) co_return make_error_code(errc::tls_error);
    tls_ = true;
    co_return co_await stream_.server_handshake(*owner_.options_.tls, owner_.options_.tls_handshake_timeout);
}

asio::awaitable<void> connection::run_blocking(std::function<void()> work) {
    // The spawned coroutine runs on the pool; its completion resumes us on our executor.
    co_await asio::co_spawn(
        owner_.pool_, [&work]() -> asio::awaitable<void> { work(); co_return; }, asio::use_awaitable);
}

void connection::set_state(std::string_view state) {
    std::lock_guard lock(mutex_);
    state_ = state;
}

void connection::set_user(std::string_view user) {
    std::lock_guard lock(mutex_);
    user_ = user;
}

bool connection::stopping() const noexcept { return owner_.stopping_; }
bool connection::tls_available() const noexcept { return owner_.options_.tls != nullptr; }
const log_sink& connection::log() const noexcept { return owner_.options_.log; }

connection_info connection::info() const {
    connection_info i;
    i.id = id_;
    i.service = listener_.service;
    i.peer = endpoint_text(peer_);
    {
        std::lock_guard lock(mutex_);
        i.state = state_;
        i.user = user_;
    }
    i.bytes_in = bytes_in_;
    i.bytes_out = bytes_out_;
    i.tls = tls_;
    i.started = started_;
    return i;
}

// ---- server -----------------------------------------------------------------------------

server::server(asio::io_context& io, server_options options, session_handler handler, std::string busy_reply)
    : io_(io), options_(std::move(options)), handler_(std::move(handler)), busy_reply_(std::move(busy_reply)),
      pool_(options_.blocking_threads == 0 ? 1 : options_.blocking_threads) {
    if (!options_.log) options_.log = null_log();
}

std::shared_ptr<server> server::create(asio::io_context& io, server_options options, session_handler handler,
                                       std::string busy_reply) {
    return std::shared_ptr<server>(new server(io, std::move(options), std::move(handler), std::move(busy_reply)));
}

server::~server() {
    for (auto& [spec, acceptor] : acceptors_) {
        std::error_code ec;
        acceptor->close(ec);
    }
    pool_.join();
}

result<void> server::listen(listen_spec spec) {
    std::error_code ec;
    asio::ip::make_address(spec.address, ec);
    if (ec) return unexpected(errc::bad_config);
    if (spec.implicit_tls && !options_.tls) return unexpected(errc::bad_config);
    specs_.push_back(spec);
    if (up_) {
        auto acceptor = bind(spec);
        if (!acceptor) {
            specs_.pop_back();
            return unexpected(acceptor.error());
        }
        specs_.back().port = (*acceptor)->local_endpoint().port();
        acceptors_.emplace_back(specs_.back(), *acceptor);
        asio::co_spawn(io_, accept_loop(shared_from_this(), *acceptor, specs_.back()), asio::detached);
    }
    return {};
}

result<std::shared_ptr<asio::ip::tcp::acceptor>> server::bind(const listen_spec& spec) {
    std::error_code ec;
    const asio::ip::tcp::endpoint ep(asio::ip::make_address(spec.address), spec.port);
    auto acceptor = std::make_shared<asio::ip::tcp::acceptor>(io_);
    acceptor->open(ep.protocol(), ec);
    if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor->set_option(asio::ip::tcp::no_delay(true), ec);  // and on each accepted socket (connection)
    if (!ec && ep.address().is_v6()) acceptor->set_option(asio::ip::v6_only(true), ec);
    if (!ec) acceptor->bind(ep, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
        options_.log(log_level::error, "cannot listen on " + endpoint_text(ep) + ": " + ec.message());
        return unexpected(errc::io_error);
    }
    return acceptor;
}

result<void> server::up() {
    if (up_) return {};
    std::vector<std::pair<listen_spec, std::shared_ptr<asio::ip::tcp::acceptor>>> bound;
    for (auto& spec : specs_) {
        auto acceptor = bind(spec);
        if (!acceptor) {
            for (auto& [s, a] : bound) {
                std::error_code ec;
                a->close(ec);
            }
            return unexpected(acceptor.error());
        }
        bound.emplace_back(spec, *acceptor);
    }
    // Keep the chosen ports: a later up() after down() listens on the same ones.
    for (std::size_t i = 0; i < specs_.size(); ++i) specs_[i].port = bound[i].second->local_endpoint().port();
    acceptors_ = std::move(bound);
    up_ = true;
    for (auto& [spec, acceptor] : acceptors_)
        asio::co_spawn(io_, accept_loop(shared_from_this(), acceptor, spec), asio::detached);
    return {};
}

void server::down() {
    up_ = false;
    auto acceptors = std::move(acceptors_);
    acceptors_.clear();
    // Acceptors belong to the I/O thread: close them there.
    asio::dispatch(io_, [acceptors = std::move(acceptors)] {
        for (auto& [spec, acceptor] : acceptors) {
            std::error_code ec;
            acceptor->close(ec);
        }
    });
}

void server::destroy(destroy_mode mode, std::function<void()> on_gone) {
    down();
    stopping_ = true;
    std::vector<std::shared_ptr<connection>> open;
    bool empty = false;
    {
        std::lock_guard lock(mutex_);
        if (on_gone) on_gone_ = std::move(on_gone);
        for (auto& [id, weak] : registry_)
            if (auto c = weak.lock()) open.push_back(std::move(c));
        empty = registry_.empty();
    }
    if (!open.empty()) {
        // kill: every connection now; defer: the idle ones now (DESIGN.md "Command lines":
        // idle sessions close at once, after their session's shutdown notice if it has one;
        // the exchange in progress finishes).
        // An exchange in progress may not hold the server for ever (a client trickling DATA):
        // its reads get shutdown_grace, then the connection closes like any other; so do its
        // writes (a client that stopped reading a 7 MB RETR). A hook at work (a delivery's
        // fsync) is not cut, and its reply has a second at least, so a client that reads is
        // never left without the 250 of a delivered message.
        asio::dispatch(io_, [open = std::move(open), mode, grace = options_.shutdown_grace] {
            const auto limit = stream::clock::now() + grace;
            for (auto& c : open) {
                if (mode == destroy_mode::kill || (c->idle_ && !c->notice_on_stop_)) {
                    c->io().close();
                    continue;
                }
                c->read_limit_ = std::min(c->read_limit_, limit);
                if (c->idle_) {
                    // Idle, with a notice for the peer (SMTP: 421, RFC 5321 3.8): its read
                    // ends, the session writes the notice (within the grace) and closes.
                    c->io().cancel();
                    continue;
                }
                // Only a grace that ends first replaces the read's deadline (and its way of
                // ending: an idle limit's cancel lets the session say 421 4.4.2 first).
                if (c->reading_ && c->read_limit_ < c->io().deadline()) c->io().set_deadline(c->read_limit_);
                // A write under way: capped (write_all renews its deadline after each piece).
                if (c->writing_) c->io().set_deadline_cap(c->read_limit_);
            }
        });
    }
    if (empty) {
        asio::post(io_, [self = shared_from_this()] {
            std::function<void()> f;
            {
                std::lock_guard lock(self->mutex_);
                f = std::move(self->on_gone_);
                self->on_gone_ = nullptr;
            }
            if (f) f();
        });
    }
}

std::vector<bound_listener> server::listeners() const {
    std::vector<bound_listener> out;
    for (const auto& [spec, acceptor] : acceptors_) {
        std::error_code ec;
        auto ep = acceptor->local_endpoint(ec);
        if (!ec) out.push_back({spec.service, ep});
    }
    return out;
}

std::vector<connection_info> server::connections() const {
    std::vector<std::shared_ptr<connection>> open;
    {
        std::lock_guard lock(mutex_);
        for (const auto& [id, weak] : registry_)
            if (auto c = weak.lock()) open.push_back(std::move(c));
    }
    std::vector<connection_info> out;
    for (const auto& c : open) out.push_back(c->info());
    // A connection that ended meanwhile may be held only here: it must die on the I/O thread,
    // which owns its socket and timer (found by ThreadSanitizer).
    asio::post(io_, [open = std::move(open)] {});
    return out;
}

std::optional<connection_info> server::connection_state(std::uint64_t id) const {
    std::shared_ptr<connection> c;
    {
        std::lock_guard lock(mutex_);
        auto it = registry_.find(id);
        if (it != registry_.end()) c = it->second.lock();
    }
    if (!c) return std::nullopt;
    auto i = c->info();
    asio::post(io_, [c = std::move(c)] {});  // as in connections()
    return i;
}

asio::awaitable<void> server::accept_loop(std::shared_ptr<server> self,
                                          std::shared_ptr<asio::ip::tcp::acceptor> acceptor, listen_spec spec) {
    auto& io_ = self->io_;
    auto& options_ = self->options_;
    auto& mutex_ = self->mutex_;
    auto& registry_ = self->registry_;
    auto& per_peer_ = self->per_peer_;
    auto& next_id_ = self->next_id_;
    asio::steady_timer backoff(io_);
    asio::ip::tcp::endpoint peer;  // filled by accept(2) itself: no getpeername(2) per connection
    while (acceptor->is_open()) {
        auto [ec, socket] = co_await acceptor->async_accept(peer, use_tuple);
        if (ec) {
            if (ec == asio::error::operation_aborted || !acceptor->is_open()) break;
            if (!is_per_connection_error(ec)) {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM or anything unforeseen: the pending connection
                // stays queued, so retrying at once would spin.
                options_.log(log_level::warning, "accept on " + spec.service + ": " + ec.message() + "; backing off");
                backoff.expires_after(std::chrono::milliseconds(100));
                co_await backoff.async_wait(use_tuple);
            }
            continue;
        }
        std::shared_ptr<connection> c;
        {
            std::lock_guard lock(mutex_);
            const bool exempt = options_.loopback_exempt && is_loopback(peer.address());
            if (self->stopping_) {
                // destroy() raced this accept: refuse below.
            } else if (registry_.size() >= options_.max_connections) {
                options_.log(log_level::warning, "connection limit reached; refusing " + endpoint_text(peer));
            } else if (!exempt && per_peer_[peer.address()] >= options_.max_per_peer) {
                options_.log(log_level::warning, "per-address limit reached; refusing " + endpoint_text(peer));
            } else {
                const auto id = next_id_++;
                c = std::make_shared<connection>(*self, id, spec, std::move(socket), peer);
                registry_.emplace(id, c);
                ++per_peer_[peer.address()];
            }
        }
        if (!c) {
            if (spec.implicit_tls && options_.tls && self->refusing_tls_ < max_refusing_tls)
                asio::co_spawn(io_, refuse_over_tls(self, std::move(socket)), asio::detached);
            else
                self->refuse(std::move(socket));
            continue;
        }
        options_.log(log_level::debug, spec.service + " connection " + std::to_string(c->id()) + " from " +
                                           endpoint_text(peer));
        asio::co_spawn(io_, run_connection(self, std::move(c)), asio::detached);
    }
}

void server::refuse(asio::ip::tcp::socket socket) {
    // A short reply into an empty socket buffer: a non-blocking write never waits on the peer.
    std::error_code ec;
    socket.non_blocking(true, ec);
    if (!ec) socket.write_some(asio::buffer(busy_reply_), ec);
    socket.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    socket.close(ec);
}

asio::awaitable<void> server::refuse_over_tls(std::shared_ptr<server> self, asio::ip::tcp::socket socket) {
    // An implicit-TLS client understands nothing before the handshake: the busy reply goes
    // over TLS, within a short time limit, so it learns "try later" rather than "broken".
    auto& refusing_tls_ = self->refusing_tls_;
    auto& options_ = self->options_;
    auto& busy_reply_ = self->busy_reply_;
    ++refusing_tls_;
    struct release {
        std::atomic<std::size_t>& n;
        ~release() { --n; }
    } released{refusing_tls_};  // whatever ends this coroutine
    const auto limit = std::min<std::chrono::seconds>(options_.tls_handshake_timeout, std::chrono::seconds(10));
    stream s(std::move(socket));
    const auto failed = co_await s.server_handshake(*options_.tls, limit);
    if (!failed) {
        s.set_deadline(stream::clock::now() + limit);
        const auto unsent = co_await s.write_all(asio::buffer(busy_reply_));
        if (!unsent) co_await s.shutdown(limit);
    }
    s.close();
}

asio::awaitable<void> server::run_connection(std::shared_ptr<server> self, std::shared_ptr<connection> c) {
    auto& options_ = self->options_;
    try {
        bool ready = true;
        if (c->listener_.implicit_tls) {
            c->tls_ = true;
            c->idle_ = true;  // no exchange yet: a shutdown need not wait for the handshake
            const auto ec = co_await c->stream_.server_handshake(*options_.tls, options_.tls_handshake_timeout);
            c->idle_ = false;
            if (ec) {
                options_.log(log_level::info, c->listener_.service + " connection " + std::to_string(c->id_) +
                                                  ": TLS handshake failed: " + ec.message());
                ready = false;
            }
        }
        if (ready && !self->stopping_) {
            co_await self->handler_(*c);
            co_await c->stream_.shutdown();
        }
    } catch (const std::exception& e) {
        options_.log(log_level::error, "connection " + std::to_string(c->id_) + ": " + e.what());
    }
    c->stream_.close();
    self->connection_closed(c->id_);
}

void server::connection_closed(std::uint64_t id) {
    std::function<void()> gone;
    {
        std::lock_guard lock(mutex_);
        auto it = registry_.find(id);
        if (it == registry_.end()) return;
        if (auto c = it->second.lock()) {
            auto p = per_peer_.find(c->peer_.address());
            if (p != per_peer_.end() && --p->second == 0) per_peer_.erase(p);
        }
        registry_.erase(it);
        if (stopping_ && registry_.empty()) {
            gone = std::move(on_gone_);
            on_gone_ = nullptr;
        }
    }
    if (gone) gone();
}

std::uint64_t raise_fd_limit() noexcept {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rlimit want = rl;
        want.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
    }
    return rl.rlim_cur;
}

// ---- signals ----------------------------------------------------------------------------

shutdown_on_signals::shutdown_on_signals(asio::io_context& io, std::vector<std::shared_ptr<server>> servers,
                                         std::function<void()> on_all_gone)
    : signals_(io, SIGINT, SIGTERM), timer_(io), servers_(std::move(servers)), on_all_gone_(std::move(on_all_gone)) {
    wait();
}

void shutdown_on_signals::cancel() {
    std::error_code ec;
    signals_.cancel(ec);
    timer_.cancel();
}

void shutdown_on_signals::wait() {
    signals_.async_wait([this](const std::error_code& ec, int) {
        if (ec) return;
        if (!stopping_)
            begin_stop();
        else
            for (auto& s : servers_) s->destroy(server::destroy_mode::kill);
        wait();
    });
}

void shutdown_on_signals::begin_stop() {
    if (stopping_) return;
    stopping_ = true;
    timer_.cancel();
    for (auto& s : servers_) {
        s->destroy(server::destroy_mode::defer, [this] {
            if (++gone_ == servers_.size()) {
                cancel();
                if (on_all_gone_) on_all_gone_();
            }
        });
    }
}

void shutdown_on_signals::stop(std::chrono::milliseconds patience) {
    if (stopping_ || asked_) return;
    asked_ = true;
    for (auto& s : servers_) s->down();
    wait_for_idle(std::chrono::steady_clock::now() + patience);
}

void shutdown_on_signals::wait_for_idle(std::chrono::steady_clock::time_point until) {
    if (stopping_) return;
    bool idle = true;
    for (const auto& s : servers_) idle = idle && s->connections().empty();
    if (idle || std::chrono::steady_clock::now() >= until) return begin_stop();
    // NOTE: polled, not signalled: the registry has no "became empty" event short of destroy(),
    // and a few checks a second for a few seconds cost nothing.
    timer_.expires_after(std::chrono::milliseconds(20));
    timer_.async_wait([this, until](const std::error_code& ec) {
        if (!ec) wait_for_idle(until);
    });
}

}  // namespace mailnet::net
