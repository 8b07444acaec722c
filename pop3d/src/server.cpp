// server.cpp: the POP3 server: the thin Asio loop that feeds the protocol core and performs
// its actions (auth and store calls on the blocking pool, RETR/TOP streamed with dot-stuffing).
#include "mailnet/pop3d/server.hpp"

#include <unistd.h>

#include <openssl/evp.h>

#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <variant>

#include "mailnet/dot_stuffing.hpp"
#include "mailnet/auth/throttle.hpp"

namespace mailnet::pop3 {
namespace {

// One blocking-pool hop per this much; under glibc's mmap threshold, so the buffer comes
// from the heap (no mmap/munmap and page faults per RETR), uninitialised.
constexpr std::size_t read_chunk_octets = 120 * 1024;
constexpr std::size_t big_read_chunk_octets = 512 * 1024;  // for messages larger than the above
constexpr std::size_t flush_octets = 256 * 1024;        // write when this much is pending
constexpr std::size_t max_queued = 256;                 // queued replies and retrievals, at most
constexpr std::size_t idle_buffer_octets = 16 * 1024;   // keep no more than this while idle

// Octets waiting to be written. Unlike std::string, it grows without zero-filling what the
// encoder is about to overwrite (a measurable share of a 1 MiB RETR).
class wire_buffer {
public:
    /// Room for `n` more octets at the end; commit() what was written there.
    char* room(std::size_t n) {
        if (capacity_ - size_ < n) grow(size_ + n);
        return data_.get() + size_;
    }
    void commit(std::size_t n) noexcept { size_ += n; }
    void append(std::string_view s) {
        std::memcpy(room(s.size()), s.data(), s.size());
        size_ += s.size();
    }
    const char* data() const noexcept { return data_.get(); }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    void clear() noexcept { size_ = 0; }
    /// Frees the storage if it is larger than `keep` and empty (idle sessions stay small).
    void shrink(std::size_t keep) noexcept {
        if (size_ == 0 && capacity_ > keep) {
            data_.reset();
            capacity_ = 0;
        }
    }

private:
    void grow(std::size_t need) {
        const std::size_t cap = std::max({need, 2 * capacity_, std::size_t{256}});
        auto bigger = std::make_unique_for_overwrite<char[]>(cap);
        if (size_ > 0) std::memcpy(bigger.get(), data_.get(), size_);
        data_ = std::move(bigger);
        capacity_ = cap;
    }
    std::unique_ptr<char[]> data_;
    std::size_t size_ = 0, capacity_ = 0;
};

std::string md5_hex(std::string_view data) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), digest, &len, EVP_md5(), nullptr);
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
        out += hex[digest[i] >> 4];
        out += hex[digest[i] & 15];
    }
    return out;
}

}  // namespace

auth_result verify_apop(authenticator& auth, const std::string& user, const std::string& timestamp,
                        const std::string& digest_hex) {
    const auto secret = auth.lookup(user);
    // An unknown user costs the same digest and comparison (no user enumeration).
    const std::string expected = md5_hex(timestamp + (secret ? *secret : std::string("\x01 no such user")));
    if (!secrets_equal(expected, digest_hex) || !secret) return auth_result::fail();
    return auth_result::ok(user, user);
}

// State shared by the server object and its sessions (which may outlive a configure()).
struct server::shared {
    explicit shared(server_config c) : config(std::move(c)), throttle(config.peer_failure_window) {}

    server_config config;
    login_throttle throttle;
    std::mutex mutex;  // guards random
    std::mt19937_64 random{std::random_device{}()};

    std::string apop_timestamp() {
        std::lock_guard lock(mutex);
        return "<" + std::to_string(::getpid()) + "." + std::to_string(random()) + "@" + config.hostname + ">";
    }

    // Records a failed login of `peer`; returns the extra delay its recent failures earn.
    std::chrono::milliseconds note_failure(const asio::ip::address& peer) {
        const auto extra = throttle.failed(peer.to_string(), login_throttle::clock::now());
        return config.session_limits.auth_failure_delay.count() == 0 ? std::chrono::milliseconds(0) : extra;
    }
};

namespace {

// One POP3 connection: feeds the core, performs its actions. Unlocks the mailbox at the end,
// whatever ends it (QUIT, a dropped connection, an exception, a kill).
class runner {
public:
    runner(std::shared_ptr<server::shared> sh, net::connection& c) : sh_(std::move(sh)), c_(c), s_(make_config(), sh_->config.session_limits) {}

    // NOTE: the lock is normally released on the pool (a store's unlock may block); this is
    // the fallback for an exception or a kill that ends the coroutine on the way.
    ~runner() {
        if (!locked_.empty() && sh_->config.storage) sh_->config.storage->unlock(locked_);
    }

    asio::awaitable<void> run() {
        co_await serve_session();
        co_await unlock();  // however the session ended: QUIT, a drop, a timeout
    }

private:
    asio::awaitable<void> serve_session() {
        s_.start();
        for (;;) {
            c_.set_state(state_name(s_.current()));
            action a = s_.next();
            // Anything but more replies or retrievals first writes out what is queued.
            if (!queue_.empty() && !std::holds_alternative<act::send>(a) && !std::holds_alternative<act::retrieve>(a)) {
                if (!co_await drain_queue()) co_return;
                // Answered retrievals may have released a deferred RSET/LAST/QUIT: ask again.
                if (std::holds_alternative<act::need_input>(a)) continue;
            }
            if (std::holds_alternative<act::need_input>(a)) {
                if (!co_await flush()) co_return;
                if (eof_) co_return;
                if (!co_await read_more()) co_return;
            } else if (auto* send = std::get_if<act::send>(&a)) {
                if (!queue_.empty()) {
                    queue_.emplace_back(std::move(send->octets));
                    continue;
                }
                out_.append(send->octets);
                if (out_.size() >= flush_octets && !co_await flush()) co_return;
            } else if (auto* retr = std::get_if<act::retrieve>(&a)) {
                queue_.emplace_back(std::move(*retr));
                if (queue_.size() >= max_queued && !co_await drain_queue()) co_return;
            } else if (auto* auth = std::get_if<act::authenticate>(&a)) {
                if (!co_await flush()) co_return;
                auth_result r;
                co_await c_.run_blocking([&] {
                    r = sh_->config.auth ? sh_->config.auth->authenticate(auth->creds) : auth_result::fail();
                });
                logged(r, auth->creds.user);
                s_.resume(r);
            } else if (auto* apop = std::get_if<act::authenticate_apop>(&a)) {
                if (!co_await flush()) co_return;
                auth_result r;
                co_await c_.run_blocking([&] {
                    r = sh_->config.auth ? verify_apop(*sh_->config.auth, apop->user, apop->timestamp, apop->digest)
                                         : auth_result::fail();
                });
                logged(r, apop->user);
                s_.resume(r);
            } else if (auto* open = std::get_if<act::open_mailbox>(&a)) {
                if (!co_await flush()) co_return;
                s_.resume(co_await open_mailbox(open->mailbox));
            } else if (auto* commit = std::get_if<act::commit>(&a)) {
                if (!co_await flush()) co_return;
                commit_result r;
                auto& store = sh_->config.storage;
                co_await c_.run_blocking([&] {
                    r.errors = store ? store->commit(locked_, commit->deleted, commit->seen)
                                     : std::vector<std::error_code>(commit->deleted.size());
                });
                for (std::size_t i = 0; i < r.errors.size(); ++i)
                    if (r.errors[i])
                        c_.log()(log_level::error, "pop3 " + log_text(s_.user()) + ": cannot delete " +
                                                       log_text(commit->deleted[i], 200) +
                                                       ": " + r.errors[i].message());
                s_.resume(r);
            } else if (std::holds_alternative<act::start_tls>(a)) {
                if (!co_await flush()) co_return;
                if (const auto ec = co_await c_.start_tls()) {
                    c_.log()(log_level::info, "pop3 connection " + std::to_string(c_.id()) +
                                                  ": STLS handshake failed: " + ec.message());
                    co_return;
                }
                s_.tls_started();
            } else if (auto* d = std::get_if<act::delay>(&a)) {
                if (!co_await flush()) co_return;
                // Every failed login (wrong password, malformed SASL) delays; recent failures
                // from the same address add to it (DESIGN.md "Limits").
                const auto penalty = sh_->note_failure(c_.peer().address());
                asio::steady_timer t(c_.io().get_executor());
                t.expires_after(d->duration + penalty);
                co_await t.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
            } else if (std::holds_alternative<act::close>(a)) {
                // After QUIT's commit: free the mailbox before "+OK bye" goes out, so a client
                // that logs in again at once never meets its own lock ([IN-USE]).
                co_await unlock();
                co_await flush();
                co_return;
            }
        }
    }

    asio::awaitable<void> unlock() {
        // Taken out first: the destructor's fallback must never unlock it a second time (by
        // then another session may hold that mailbox).
        const std::string mailbox = std::exchange(locked_, {});
        if (mailbox.empty() || !sh_->config.storage) co_return;
        co_await c_.run_blocking([&] { sh_->config.storage->unlock(mailbox); });
    }

    session_config make_config() {
        const auto& cfg = sh_->config;
        session_config sc;
        sc.peer_is_loopback = c_.peer_is_loopback();
        sc.allow_plaintext_auth = cfg.allow_plaintext_auth;
        sc.tls_active = c_.io().is_tls();
        sc.tls_available = cfg.tls != nullptr;
        sc.apop = cfg.enable_apop && cfg.auth && cfg.auth->can_lookup();
        if (sc.apop) sc.apop_timestamp = sh_->apop_timestamp();
        return sc;
    }

    void logged(const auth_result& r, const std::string& user) {
        if (r.outcome == auth_result::status::ok) {
            c_.set_user(r.account);
            c_.log()(log_level::info, "pop3 login " + log_text(r.account) + " from " + c_.peer().address().to_string());
        } else if (r.outcome == auth_result::status::fail) {
            c_.log()(log_level::info, "pop3 failed login for " + log_text(user) + " from " +
                                          c_.peer().address().to_string());
        }
    }

    asio::awaitable<mailbox_result> open_mailbox(const std::string& mailbox) {
        mailbox_result r;
        auto& store = sh_->config.storage;
        if (!store) co_return r;  // no storage: every mailbox is empty
        co_await c_.run_blocking([&] {
            if (auto locked = store->lock(mailbox); !locked) {
                r.error = locked.error();
                return;
            }
            locked_ = mailbox;  // from here on, whatever happens (a throwing backend too) unlocks it
            auto snap = store->snapshot(mailbox);
            if (!snap) {
                locked_.clear();
                store->unlock(mailbox);
                r.error = snap.error();
                return;
            }
            r.messages = std::move(*snap);
        });
        if (r.error && r.error != errc::mailbox_in_use)
            c_.log()(log_level::error, "pop3 cannot open mailbox " + log_text(mailbox) + ": " + r.error.message());
        co_return r;
    }

    // Turns the queue (replies, RETR/TOP) into wire octets, one segment of about flush_octets
    // at a time, on the blocking pool: it opens, reads and dot-stuffs messages. The I/O thread
    // writes one segment while the pool makes the next, so disk, encoding and network overlap,
    // and a batch of small messages costs one pool hop per segment, not one per message.
    // NOTE: the session is not touched here (it is not thread-safe): finished retrievals are
    // collected in `finished` and the I/O thread answers them after the hop.
    struct producer {
        std::size_t next = 0;                   // the next queue_ item to start
        const act::retrieve* current = nullptr;  // the message being streamed
        std::optional<message> msg;
        std::optional<dot_encoder> enc;
        std::uint64_t stored = 0, read = 0;      // its stored octets, and how many were read
        std::unique_ptr<char[]> buf;             // read buffer, sized for the message
        std::size_t buf_size = 0;
        std::vector<std::error_code> finished;   // retrievals completed since the last hop, in order
        bool broken = false;                     // the store failed mid-message: close the connection

        bool done(std::size_t items) const noexcept { return current == nullptr && next == items; }
    };

    // On the pool: appends to `to` until it holds flush_octets or the queue is done.
    void produce(producer& p, wire_buffer& to) {
        auto& store = sh_->config.storage;
        while (to.size() < flush_octets && !p.broken) {
            if (!p.current) {
                if (p.next == queue_.size()) return;
                auto& item = queue_[p.next++];
                if (const auto* text = std::get_if<std::string>(&item)) {
                    to.append(*text);
                    continue;
                }
                const auto& r = std::get<act::retrieve>(item);
                auto m = store ? store->open(locked_, r.id) : result<message>(unexpected(errc::not_found));
                if (!m) {
                    c_.log()(log_level::error, "pop3 cannot read " + log_text(r.id, 200) + ": " + m.error().message());
                    to.append(session::retrieve_error(r.msn, m.error()));
                    p.finished.push_back(m.error());
                    continue;
                }
                p.current = &r;
                p.msg.emplace(std::move(*m));
                p.enc.emplace(r.top_lines);
                p.stored = p.msg->stored_octets();
                p.read = 0;
                const std::size_t want = static_cast<std::size_t>(std::clamp<std::uint64_t>(
                    p.stored, 1, p.stored > read_chunk_octets ? big_read_chunk_octets : read_chunk_octets));
                if (p.buf_size < want || p.buf_size > 2 * want) {
                    p.buf = std::make_unique_for_overwrite<char[]>(want);
                    p.buf_size = want;
                }
                to.append(r.ok_line);
            }
            // Stream the current message: one chunk per pass, then see whether it is done.
            if (!p.enc->done() && p.read < p.stored) {
                // Never past the size the +OK line and LIST announced, even if the file grew.
                const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(p.buf_size, p.stored - p.read));
                auto got = p.msg->read(std::span<char>(p.buf.get(), want));
                std::string why;
                if (!got)
                    why = got.error().message();
                else if (*got == 0)
                    why = "the file is shorter than its " + std::to_string(p.stored) + " octets";
                if (!why.empty()) {
                    // After the +OK line only closing tells the client; the message is not
                    // marked seen and the session ends without UPDATE.
                    c_.log()(log_level::error, "pop3 read error in " + log_text(p.current->id, 200) + ": " + why);
                    p.broken = true;
                    return;
                }
                p.read += *got;
                encode(*p.enc, std::string_view(p.buf.get(), *got), to);
            }
            if (p.enc->done() || p.read >= p.stored) {
                to.commit(p.enc->finish_to(to.room(dot_encoder::finish_octets)));
                p.finished.push_back({});
                p.current = nullptr;
                p.msg.reset();  // its descriptor closes now
                p.enc.reset();
            }
        }
    }

    // Writes out what was queued since the last drain (replies and the messages of a
    // pipelined batch of RETR/TOP), taking in pipelined input between segments.
    asio::awaitable<bool> drain_queue() {
        producer p;
        co_await c_.run_blocking([&] { produce(p, out_); });
        for (;;) {
            for (const auto& ec : p.finished) s_.resume(retrieve_result{ec});
            p.finished.clear();
            if (p.broken) co_return false;
            if (p.done(queue_.size())) break;
            // out_ is full: write it while the pool makes the next segment in spare_.
            using namespace asio::experimental::awaitable_operators;
            if (!co_await (flush() && c_.run_blocking([&] { produce(p, spare_); }))) co_return false;
            std::swap(out_, spare_);  // flush() left out_ empty
            co_await drain_input();
        }
        queue_.clear();
        co_return true;
    }

    // Encodes stored octets into `to`, 64 KiB at a time (bounded growth of the buffer).
    static void encode(dot_encoder& enc, std::string_view chunk, wire_buffer& to) {
        constexpr std::size_t slice = 64 * 1024;
        while (!chunk.empty() && !enc.done()) {
            const auto piece = chunk.substr(0, slice);
            const auto [used, written] = enc.encode_to(piece, to.room(dot_encoder::max_encoded(piece.size())));
            to.commit(written);
            chunk.remove_prefix(used);
        }
    }

    asio::awaitable<bool> flush() {
        if (out_.empty()) co_return c_.io().is_open();
        const auto ec = co_await c_.write(asio::buffer(out_.data(), out_.size()));
        out_.clear();
        co_return !ec;
    }

    asio::awaitable<bool> read_more() {
        // An idle session keeps small buffers (DESIGN.md: memory per idle session).
        out_.shrink(idle_buffer_octets);
        spare_.shrink(0);
        std::error_code ec;
        const auto n = co_await c_.read_some(asio::buffer(in_), ec);
        if (ec) co_return false;
        s_.feed(std::string_view(in_.data(), n));
        co_return true;
    }

    // While a long reply is written, take in what the client pipelined, up to the read-ahead
    // limit, so a client that writes all its commands before reading never deadlocks.
    asio::awaitable<void> drain_input() {
        std::error_code ec;
        if (eof_ || s_.buffered() >= sh_->config.read_ahead_octets) co_return;
        if (c_.io().socket().available(ec) == 0 || ec) co_return;
        const auto n = co_await c_.read_some(asio::buffer(in_), ec);
        if (ec) {
            eof_ = true;
            co_return;
        }
        s_.feed(std::string_view(in_.data(), n));
    }

    std::shared_ptr<server::shared> sh_;
    net::connection& c_;
    session s_;
    wire_buffer out_;
    wire_buffer spare_;  // the next chunk of a long RETR, encoded on the pool while out_ is written
    std::vector<std::variant<std::string, act::retrieve>> queue_;  // replies and RETR/TOP not yet written
    std::array<char, 4096> in_{};
    std::string locked_;  // the mailbox this session holds the lock of
    bool eof_ = false;
};

asio::awaitable<void> serve(std::shared_ptr<server::shared> sh, net::connection& c) {
    runner r(std::move(sh), c);
    co_await r.run();
}

}  // namespace

server::server(asio::io_context& io, server_config config) : io_(io), config_(std::move(config)) {
    if (auto r = build(); !r) build_error_ = r.error();
}

server::~server() {
    if (base_) base_->destroy(net::server::destroy_mode::kill);
}

namespace {

// The limits a server can run with (DESIGN.md "Limits"); the reason is logged.
result<void> validate(const server_config& c, const log_sink& log) {
    std::string why;
    const auto& l = c.session_limits;
    if (c.idle_timeout.count() <= 0)
        why = "idle timeout must be positive";
    else if (c.idle_timeout < std::chrono::seconds(600) && !c.allow_short_idle_timeout)
        why = "idle timeout below 600 s breaks RFC 1939 3 (set allow_short_idle_timeout)";
    else if (c.tls_handshake_timeout.count() <= 0)
        why = "TLS handshake timeout must be positive";
    else if (c.max_connections == 0 || c.max_per_peer == 0)
        why = "connection limits must be at least 1";
    else if (l.max_command_octets < 255)
        why = "command lines of 255 octets must be accepted (RFC 2449 4)";
    else if (l.max_sasl_octets < l.max_command_octets)
        why = "the SASL line limit must not be below the command line limit";
    else if (c.read_ahead_octets < l.max_command_octets)
        why = "the read-ahead limit must hold one command line";
    else if (l.max_failed_logins == 0 || l.max_bad_commands == 0)
        why = "failed-login and bad-command limits must be at least 1";
    if (why.empty()) return {};
    log(log_level::error, "pop3 configuration: " + why);
    return unexpected(errc::bad_config);
}

}  // namespace

result<void> server::build() {
    build_error_.clear();
    if (!config_.log) config_.log = null_log();
    if (auto v = validate(config_, config_.log); !v) return v;
    shared_ = std::make_shared<shared>(config_);
    net::server_options o;
    o.max_connections = config_.max_connections;
    o.max_per_peer = config_.max_per_peer;
    o.idle_timeout = config_.idle_timeout;
    o.tls_handshake_timeout = config_.tls_handshake_timeout;
    o.tls = config_.tls;
    o.log = config_.log;
    base_ = net::server::create(
        io_, o, [sh = shared_](net::connection& c) { return serve(sh, c); },
        "-ERR [SYS/TEMP] too many connections, try later\r\n");
    for (const auto& l : config_.listen)
        if (auto r = base_->listen(l); !r) return r;
    return {};
}

result<void> server::configure(server_config config) {
    // NOTE: sessions of the previous configuration would drop out of connections() and out
    // of destroy()'s reach: refuse until they are gone (destroy with defer, or wait).
    if (base_ && (base_->is_up() || !base_->connections().empty())) return unexpected(errc::bad_config);
    // An unusable configuration changes nothing: the previous one stays in force.
    if (auto v = validate(config, config.log ? config.log : config_.log); !v) return v;
    config_ = std::move(config);
    auto r = build();
    if (!r) build_error_ = r.error();
    return r;
}

result<void> server::up() {
    if (build_error_) return unexpected(build_error_);
    return base_->up();
}

void server::down() {
    if (base_) base_->down();
}

void server::destroy(net::server::destroy_mode mode, std::function<void()> on_gone) {
    if (base_) base_->destroy(mode, std::move(on_gone));
}

std::vector<net::bound_listener> server::listeners() const { return base_ ? base_->listeners() : decltype(listeners()){}; }

std::vector<net::connection_info> server::connections() const {
    return base_ ? base_->connections() : std::vector<net::connection_info>{};
}

std::optional<net::connection_info> server::connection(std::uint64_t id) const {
    return base_ ? base_->connection_state(id) : std::nullopt;
}

}  // namespace mailnet::pop3
