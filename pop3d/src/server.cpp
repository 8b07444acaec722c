// server.cpp: the POP3 server: what is POP3's own on the libmailnet connection runner
// (RFC 1939 authentication and UPDATE hooks; auth and store calls on the blocking pool).
#include "mailnet/pop3d/server.hpp"

#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <random>

#include "mailnet/auth/throttle.hpp"
#include "mailnet/net/runner.hpp"

namespace mailnet::pop3 {

// State shared by the server object and its sessions (which may outlive a configure()).
struct server::shared {
    explicit shared(server_config c)
        : config(std::move(c)), throttle(std::make_shared<login_throttle>(config.peer_failure_window)),
          account_throttle(std::make_shared<login_throttle>(config.peer_failure_window)),
          // Asked once here, never per connection on the I/O thread (the backend may read files).
          apop(config.enable_apop && config.auth && config.auth->can_lookup()) {}

    server_config config;
    std::shared_ptr<login_throttle> throttle;          // per peer address
    std::shared_ptr<login_throttle> account_throttle;  // per account, apart: junk names cannot evict the peers
    bool apop;
    std::mutex mutex;  // guards random
    std::mt19937_64 random{std::random_device{}()};

    std::string apop_timestamp() {
        std::lock_guard lock(mutex);
        return "<" + std::to_string(::getpid()) + "." + std::to_string(random()) + "@" + config.hostname + ">";
    }
};

namespace {

// The POP3 actions the runner does not know: every backend call runs on the pool, and one that
// throws is a temporary failure for that command (logged), never a dropped connection.
struct pop3_hooks {
    std::shared_ptr<server::shared> sh;
    std::string locked;  // the mailbox this session holds the lock of
    // For the session's closing log line: what it saw and what its QUIT deleted.
    std::string user;
    std::size_t messages = 0, deleted = 0;
    bool updated = false;

    asio::awaitable<bool> operator()(act::authenticate& a, session& s, net::runner& r) {
        auto& auth = sh->config.auth;
        const auto result = co_await r.on_pool_guarded(
            "authenticate", auth_result::tempfail(), [&] { return auth ? auth->authenticate(a.creds) : auth_result::fail(); });
        s.resume(result);
        co_return true;
    }

    asio::awaitable<bool> operator()(act::authenticate_apop& a, session& s, net::runner& r) {
        auto& auth = sh->config.auth;
        const auto result = co_await r.on_pool_guarded("authenticate_apop", auth_result::tempfail(), [&] {
            return auth ? auth->authenticate_apop(a.user, a.timestamp, a.digest) : auth_result::fail();
        });
        s.resume(result);
        co_return true;
    }

    asio::awaitable<bool> operator()(act::open_mailbox& a, session& s, net::runner& r) {
        mailbox_result result;
        auto& store = sh->config.storage;
        if (store) {
            const bool ran = co_await r.on_pool_guarded("open mailbox", false, [&] {
                if (auto l = store->lock(a.mailbox); !l) {
                    result.error = l.error();
                    return true;
                }
                locked = a.mailbox;  // from here on, whatever happens (a throwing backend too) unlocks it
                auto snap = store->snapshot(a.mailbox);
                if (!snap) {
                    locked.clear();
                    store->unlock(a.mailbox);
                    result.error = snap.error();
                    return true;
                }
                result.messages = std::move(*snap);
                return true;
            });
            if (!ran) {
                // The store threw: [SYS/TEMP], and a lock it took is released now, so the
                // session can try again.
                result = mailbox_result{};
                result.error = make_error_code(errc::io_error);
                if (const std::string held = std::exchange(locked, {}); !held.empty())
                    co_await r.on_pool([&] { store->unlock(held); });
            }
        }  // no storage: every mailbox is empty
        if (result.error && result.error != errc::mailbox_in_use)
            r.log()(log_level::error, "pop3 cannot open mailbox " + log_text(a.mailbox) + ": " + result.error.message());
        if (!result.error) {
            r.set_mailbox(a.mailbox);
            r.logged_in(s.user());
            user = s.user();
            messages = result.messages.size();
        }
        s.resume(std::move(result));
        co_return true;
    }

    asio::awaitable<bool> operator()(act::commit& a, session& s, net::runner& r) {
        commit_result result;
        auto& store = sh->config.storage;
        result.errors = co_await r.on_pool_guarded(
            "commit", std::vector<std::error_code>(a.deleted.size(), make_error_code(errc::io_error)), [&] {
                return store ? store->commit(locked, a.deleted, a.seen) : std::vector<std::error_code>(a.deleted.size());
            });
        for (std::size_t i = 0; i < result.errors.size() && i < a.deleted.size(); ++i)
            if (result.errors[i])
                r.log()(log_level::error, "pop3 " + log_text(s.user()) + ": cannot delete " + log_text(a.deleted[i], 200) +
                                              ": " + result.errors[i].message());
        updated = true;
        deleted = static_cast<std::size_t>(std::count_if(result.errors.begin(), result.errors.end(),
                                                         [](const std::error_code& e) { return !e; }));
        s.resume(result);
        co_return true;
    }

    // However the session ends (QUIT, a drop, a timeout, a kill): the lock is released on the
    // pool, before QUIT's "+OK bye" goes out, so a client that logs in again at once never
    // meets its own lock ([IN-USE]).
    asio::awaitable<void> finish(session& s, net::runner& r) {
        if (!user.empty())  // one line per logged-in session, however it ended
            r.log()(log_level::info, "pop3 " + log_text(user) + " from " + r.conn().peer().address().to_string() +
                                         (updated || s.quit_in_transaction() ? " quit: " + std::to_string(deleted) + " of " + std::to_string(messages) +
                                                        " messages deleted"
                                                  : " left without QUIT: " + std::to_string(messages) +
                                                        " messages, none deleted"));
        const std::string mailbox = std::exchange(locked, {});
        if (mailbox.empty() || !sh->config.storage) co_return;
        auto& store = sh->config.storage;
        co_await r.on_pool([&] { store->unlock(mailbox); });
    }
};

session_config make_session_config(server::shared& sh, net::connection& c) {
    const auto& cfg = sh.config;
    session_config sc;
    sc.peer_is_loopback = c.peer_is_loopback();
    sc.allow_plaintext_auth = cfg.allow_plaintext_auth;
    sc.tls_active = c.listener().implicit_tls;
    sc.tls_available = cfg.tls != nullptr;
    sc.apop = sh.apop;
    if (sc.apop) sc.apop_timestamp = sh.apop_timestamp();
    sc.faults = cfg.faults;
    return sc;
}

asio::awaitable<void> serve(std::shared_ptr<server::shared> sh, net::connection& c) {
    session s(make_session_config(*sh, c), sh->config.session_limits);
    s.start();
    auto o = sh->config.runner("pop3", sh->throttle, sh->account_throttle);
    o.storage = sh->config.storage;
    pop3_hooks hooks;
    hooks.sh = sh;
    co_await net::run_connection(c, s, hooks, std::move(o));
}

}  // namespace

server::server(asio::io_context& io, server_config config) : configured_service(io, std::move(config)) {
    start();
}

namespace {

// The limits a server can run with (DESIGN.md "Limits"); the reason is logged.
result<void> validate(const server_config& c, const log_sink& log) {
    const auto& l = c.session_limits;
    std::string why = c.problem(std::chrono::seconds(600), "RFC 1939 3", l.max_command_octets);
    if (!why.empty())
        ;
    else if (l.max_command_octets < 255)
        why = "command lines of 255 octets must be accepted (RFC 2449 4)";
    else if (l.max_sasl_octets < l.max_command_octets)
        why = "the SASL line limit must not be below the command line limit";
    else if (l.max_failed_logins == 0 || l.max_bad_commands == 0)
        why = "failed-login and bad-command limits must be at least 1";
    if (why.empty()) return {};
    log(log_level::error, "pop3 configuration: " + why);
    return unexpected(errc::bad_config);
}

}  // namespace

result<void> server::build() {
    if (!config_.log) config_.log = null_log();
    shared_ = std::make_shared<shared>(config_);
    return rebuild(
        config_.base_options(), [sh = shared_](net::connection& c) { return serve(sh, c); },
        "-ERR [SYS/TEMP] too many connections, try later\r\n", config_.listen);
}

result<void> server::check(const server_config& c) const {
    // A configuration without a log reports to the one in force.
    return validate(c, c.log ? c.log : (config_.log ? config_.log : null_log()));
}

}  // namespace mailnet::pop3
