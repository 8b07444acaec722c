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
#include "mailnet/throttle.hpp"

namespace mailnet::pop3 {
namespace {

// One blocking-pool hop per this much; under glibc's mmap threshold, so the buffer comes
// from the heap (no mmap/munmap and page faults per RETR), uninitialised.
constexpr std::size_t read_chunk_octets = 120 * 1024;
constexpr std::size_t big_read_chunk_octets = 512 * 1024;  // for messages larger than the above
constexpr std::size_t flush_octets = 256 * 1024;        // write when this much is pending
constexpr std::size_t prefetch_octets = 1024 * 1024;    // opened and read ahead in one hop, at most
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

    // A message opened ahead of streaming, with its first chunk read.
    struct fetched {
        bool done = false;
        std::error_code error;
        std::optional<message> msg;
        std::unique_ptr<char[]> buf;
        std::size_t size = 0;  // of buf: the message's size, at most read_chunk_octets
        std::size_t n = 0;     // octets read into buf
        std::uint64_t stored = 0;  // the message's stored octets
    };

    // Opens a message and reads its first chunk (on the blocking pool).
    void fetch(const act::retrieve& r, fetched& f) {
        f.done = true;
        auto& store = sh_->config.storage;
        if (!store) {
            f.error = make_error_code(errc::not_found);
            return;
        }
        auto m = store->open(locked_, r.id);
        if (!m) {
            f.error = m.error();
            return;
        }
        f.msg.emplace(std::move(*m));
        const std::uint64_t stored = f.msg->stored_octets();
        f.size = static_cast<std::size_t>(
            std::clamp<std::uint64_t>(stored, 1, stored > read_chunk_octets ? big_read_chunk_octets : read_chunk_octets));
        f.buf = std::make_unique_for_overwrite<char[]>(f.size);
        auto got = f.msg->read(std::span<char>(f.buf.get(), f.size));
        if (!got) f.error = got.error(); else f.n = *got;
        f.stored = stored;
        // Read whole: its descriptor closes now, so a prefetched batch holds buffers, not files.
        if (!f.error && f.n >= stored) f.msg.reset();
    }

    // Writes out what was queued since the last drain: replies and the messages of a
    // pipelined batch of RETR/TOP, opened and first read in one blocking-pool hop (up to
    // prefetch_octets), so a batch of small messages costs one hop, not one each.
    asio::awaitable<bool> drain_queue() {
        std::vector<const act::retrieve*> wanted;
        for (const auto& item : queue_)
            if (const auto* r = std::get_if<act::retrieve>(&item)) wanted.push_back(r);
        std::vector<fetched> ahead(wanted.size());
        if (!wanted.empty()) {
            co_await c_.run_blocking([&] {
                std::size_t used = 0;
                for (std::size_t i = 0; i < wanted.size() && used < prefetch_octets; ++i) {
                    fetch(*wanted[i], ahead[i]);
                    used += ahead[i].size;
                }
            });
        }
        std::size_t k = 0;
        for (auto& item : queue_) {
            if (auto* text = std::get_if<std::string>(&item)) {
                out_.append(*text);
            } else {
                auto& f = ahead[k];
                const auto& r = *wanted[k++];
                if (!f.done) co_await c_.run_blocking([&] { fetch(r, f); });
                if (!co_await stream(r, f)) co_return false;
                f = fetched{};  // free its buffer now
            }
            if (out_.size() >= flush_octets) {
                if (!co_await flush()) co_return false;
                co_await drain_input();
            }
        }
        queue_.clear();
        co_return true;
    }

    // Streams one fetched message; false if the connection is lost (or the store fails
    // mid-way, after the +OK line: then only closing tells the client).
    asio::awaitable<bool> stream(const act::retrieve& r, fetched& f) {
        if (f.error) {
            c_.log()(log_level::error, "pop3 cannot read " + log_text(r.id, 200) + ": " + f.error.message());
            out_.append(session::retrieve_error(r.msn, f.error));
            s_.resume(retrieve_result{f.error});
            co_return true;
        }
        out_.append(r.ok_line);
        dot_encoder enc(r.top_lines);
        std::uint64_t total = f.n;
        std::size_t n = f.n;
        std::error_code error;
        encode(enc, std::string_view(f.buf.get(), n), out_);
        for (;;) {
            const bool more = !enc.done() && n > 0 && total < f.stored && f.msg;
            if (out_.size() >= flush_octets) {
                if (more) {
                    // The pool reads and encodes the next chunk into spare_ while out_ is
                    // written: disk, encoding and network overlap, and the I/O thread does
                    // little more than the socket writes.
                    using namespace asio::experimental::awaitable_operators;
                    if (!co_await (flush() && read_and_encode(f, enc, spare_, n, error))) co_return false;
                    std::swap(out_, spare_);  // flush() left out_ empty
                } else if (!co_await flush()) {
                    co_return false;
                }
                co_await drain_input();
            } else if (more) {
                co_await read_and_encode(f, enc, out_, n, error);
            }
            if (!more) break;
            if (error) {
                c_.log()(log_level::error, "pop3 read error in " + log_text(r.id, 200) + ": " + error.message());
                co_return false;
            }
            total += n;
        }
        out_.commit(enc.finish_to(out_.room(dot_encoder::finish_octets)));
        s_.resume(retrieve_result{});
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

    // On the blocking pool: reads the next chunk of a message and encodes it into `to`
    // (nothing else touches `to` or `enc` meanwhile).
    asio::awaitable<void> read_and_encode(fetched& f, dot_encoder& enc, wire_buffer& to, std::size_t& n,
                                          std::error_code& error) {
        co_await c_.run_blocking([&] {
            auto got = f.msg->read(std::span<char>(f.buf.get(), f.size));
            if (!got) {
                error = got.error();
                return;
            }
            n = *got;
            encode(enc, std::string_view(f.buf.get(), n), to);
        });
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
