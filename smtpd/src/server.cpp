// server.cpp: the SMTP server: what is SMTP's own on the libmailnet connection runner (the
// seed's callbacks, AUTH, recipient routing and durable delivery; every callback, auth and store
// call on the blocking pool).
#include "mailnet/smtpd/server.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "mailnet/auth/throttle.hpp"
#include "mailnet/posix_io.hpp"
#include "mailnet/net/committer.hpp"
#include "mailnet/net/runner.hpp"

namespace mailnet::smtp {

// State shared by the server object and its sessions (which may outlive a configure()).
struct server::shared {
    explicit shared(server_config c)
        : config(std::move(c)), throttle(std::make_shared<login_throttle>(config.peer_failure_window)),
          account_throttle(std::make_shared<login_throttle>(config.peer_failure_window)) {
        // Unique across restarts and processes: the start time to the microsecond and the pid.
        const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
        char buf[64];
        std::snprintf(buf, sizeof buf, "%llX%05llX%X", static_cast<unsigned long long>(us / 1000000),
                      static_cast<unsigned long long>(us % 1000000), static_cast<unsigned>(::getpid()));
        id_prefix = buf;
    }

    server_config config;
    std::shared_ptr<login_throttle> throttle;          // per peer address
    std::shared_ptr<login_throttle> account_throttle;  // per account
    std::string id_prefix;                             // start time and pid: ids differ across restarts
    std::atomic<std::uint64_t> counter{0};
    // Commits the store's deliveries in groups on a thread of its own, the io_context's, while
    // the store says commits_in_groups() (else, or null: each delivery commits on the pool).
    net::delivery_committer* committer = nullptr;

    // A queue id: the server's prefix, then a counter (Postfix-like long ids, 0-9A-Z only).
    std::string next_id() {
        char buf[32];
        std::snprintf(buf, sizeof buf, "Q%llX",
                      static_cast<unsigned long long>(counter.fetch_add(1, std::memory_order_relaxed)));
        return id_prefix + buf;
    }
    std::chrono::system_clock::time_point now() const {
        return config.clock ? config.clock() : std::chrono::system_clock::now();
    }
};

namespace {

// Message octets are written out in pieces of this size (never the whole message in memory;
// 1,000 sessions sending at once hold 64 MiB at most).
constexpr std::size_t flush_octets = 64 * 1024;

// A delivery to more mailboxes than this, or of this many octets or more, commits on the pool,
// alone: on the committer's one thread its links and fsyncs, or the flush of its data, would
// hold up every other session's message.
constexpr std::size_t committer_max_mailboxes = 8;
constexpr std::uint64_t committer_max_octets = 1024 * 1024;

const verdict temporary_failure = verdict::refuse(451, "4.3.0", "Error: temporary failure, try again later");

result<void> write_fd(int fd, std::string_view octets) { return posix::write_all(fd, octets); }

// The recipients for a log line: the first few addresses, then how many more.
std::string recipients_text(const envelope& mail) {
    constexpr std::size_t shown = 4;
    std::string out;
    for (std::size_t i = 0; i < mail.recipients.size() && i < shown; ++i)
        out += (i ? "," : "") + log_text(mail.recipients[i].address(), 100);
    if (mail.recipients.size() > shown) out += ",+" + std::to_string(mail.recipients.size() - shown);
    return out;
}

// The SMTP actions the runner does not know. One per connection; lives on its I/O thread, and
// the pool runs one call of it at a time (the runner awaits each).
struct smtp_hooks {
    std::shared_ptr<server::shared> sh;
    std::vector<std::pair<std::string, std::string>> routes;  // accepted recipient address -> mailbox

    // The message in progress.
    bool started = false;
    transaction_info info;             // id and receipt time from its first octet
    std::string pending;               // octets not yet written out
    std::uint64_t octets = 0;          // stored octets so far
    std::unique_ptr<delivery> out;     // with a store: the delivery under way
    std::vector<std::string> targets;  // the mailboxes `out` was begun for
    int spool = -1;                    // the spool file, once past flush_octets: without a store, or
                                       // with one until the message ends if a mailbox is new
    std::error_code write_error;       // a write failed: the message can only be refused (451)

    smtp_hooks() = default;
    smtp_hooks(const smtp_hooks&) = delete;
    smtp_hooks& operator=(const smtp_hooks&) = delete;
    ~smtp_hooks() {
        if (spool >= 0) ::close(spool);
    }

    const server_config& cfg() const { return sh->config; }

    // A callback on the pool; an exception is logged and becomes `failed`.
    template <class F>
    asio::awaitable<verdict> ask(net::runner& r, const char* what, verdict failed, F call) {
        if (!cfg().handler) co_return verdict::accept();
        co_return co_await r.on_pool_guarded(std::string(what) + " callback", failed,
                                             [&] { return call(*cfg().handler); });
    }

    asio::awaitable<bool> operator()(act::validate_host& a, session& s, net::runner& r) {
        // RFC 5321 3.1 and 4.2.3: a greeting that is not 220 is 554 or 421.
        s.resume(co_await ask(r, "validate_host", verdict::refuse(421, "4.3.0", "Error: temporary failure, try again later"),
                              [&](callbacks& cb) { return cb.validate_host(a.peer); }));
        co_return true;
    }

    asio::awaitable<bool> operator()(act::validate_sender& a, session& s, net::runner& r) {
        routes.clear();  // a new transaction
        s.resume(co_await ask(r, "validate_sender", temporary_failure,
                              [&](callbacks& cb) { return cb.validate_sender(a.sender); }));
        co_return true;
    }

    asio::awaitable<bool> operator()(act::validate_recipient& a, session& s, net::runner& r) {
        auto v = co_await ask(r, "validate_recipient", temporary_failure,
                              [&](callbacks& cb) { return cb.validate_recipient(a.recipient); });
        if (v.accepted && cfg().storage) v = co_await route(a.recipient, r);
        s.resume(v);
        co_return true;
    }

    // Which mailbox an accepted recipient's copy goes to (DESIGN.md "On disk").
    asio::awaitable<verdict> route(const mailbox_address& rcpt, net::runner& r) {
        const std::string address = rcpt.address();
        std::string mailbox;
        if (cfg().auth && cfg().recipients_from_auth) {
            // RFC 5321 4.1.1.3: RCPT TO:<Postmaster> with no domain (the parser takes no other
            // local part without one) is this server's postmaster: postmaster@<hostname>, or
            // when that is no account, what the authenticator makes of a bare "postmaster"
            // (a passwd-file: its first postmaster@ line), since the postmaster must be reachable.
            const bool bare_postmaster = rcpt.domain.empty();
            const std::string lookup = bare_postmaster ? "postmaster@" + cfg().hostname : address;
            const auto res = co_await r.on_pool_guarded("resolve_recipient", recipient_result::tempfail(), [&] {
                auto found = cfg().auth->resolve_recipient(lookup);
                if (bare_postmaster && found.outcome == recipient_result::status::unknown)
                    found = cfg().auth->resolve_recipient(rcpt.local);
                return found;
            });
            if (res.outcome == recipient_result::status::unknown)
                co_return verdict::refuse(550, "5.1.1", "Error: no such user here");
            if (res.outcome == recipient_result::status::tempfail) co_return temporary_failure;
            mailbox = res.mailbox;
        } else {
            mailbox = mailbox_for_address(address);
        }
        routes.emplace_back(address, std::move(mailbox));
        co_return verdict::accept();
    }

    // The distinct mailboxes of the envelope's recipients (two addresses may share one).
    std::vector<std::string> mailboxes(const envelope& mail) const {
        std::vector<std::string> m;
        for (const auto& rcpt : mail.recipients) {
            const auto address = rcpt.address();
            for (auto it = routes.rbegin(); it != routes.rend(); ++it)
                if (it->first == address) {
                    if (std::find(m.begin(), m.end(), it->second) == m.end()) m.push_back(it->second);
                    break;
                }
        }
        return m;
    }

    void start_message(const session& s) {
        started = true;
        info = transaction_info{};
        info.mail = s.transaction();
        info.id = sh->next_id();
        info.peer_address = s.peer_address();
        info.helo = s.helo_name();
        info.protocol = s.with_protocol();
        info.account = s.account();
        info.hostname = cfg().hostname;
        info.received = sh->now();
    }

    // Writes `pending` out (on the pool): into the store's delivery, begun with the trace
    // headers, or into the spool file. `ended`: the message is whole and the core took it, so a
    // store's delivery may begin even for a mailbox the store does not know yet. Before that,
    // such a message is spooled instead: beginning its delivery would make the mailbox
    // (Maildir: DIR/<mailbox>/), and the message may still be refused (its size, a bare line
    // end); at the end the spool is copied into the delivery. A failure is kept for the end of
    // the message. May throw (a store's code): the caller guards it.
    void write_out(bool ended = true) {
        if (write_error) return pending.clear();
        if (cfg().storage && !out && (ended || (spool < 0 && cfg().storage->knows_mailboxes(mailboxes(info.mail))))) {
            targets = mailboxes(info.mail);
            auto d = cfg().storage->begin_delivery(targets);
            if (!d) {
                write_error = d.error();
                return pending.clear();
            }
            out = std::move(*d);
            if (auto w = out->write(trace_headers(info)); !w) write_error = w.error();
            if (!write_error && spool >= 0)
                if (auto c = copy_spool(); !c) write_error = c.error();
        }
        if (out) {
            if (!write_error && !pending.empty())
                if (auto w = out->write(pending); !w) write_error = w.error();
        } else if (!pending.empty()) {
            if (spool < 0 && (spool = posix::open_unnamed_temp_file()) < 0) write_error = last_system_error();
            if (!write_error)
                if (auto w = write_fd(spool, pending); !w) write_error = w.error();
        }
        pending.clear();
    }

    // The spooled octets into `out`, then the spool closed.
    result<void> copy_spool() {
        std::string buf(flush_octets, '\0');
        for (off_t at = 0;;) {
            const ssize_t n = ::pread(spool, buf.data(), buf.size(), at);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return unexpected(last_system_error());
            if (n == 0) break;
            if (auto w = out->write(std::string_view(buf.data(), static_cast<std::size_t>(n))); !w) return w;
            at += n;
        }
        ::close(std::exchange(spool, -1));
        return {};
    }

    asio::awaitable<bool> operator()(act::message_data& a, session& s, net::runner& r) {
        if (!started) start_message(s);
        octets += a.octets.size();
        if (!cfg().storage && !cfg().handler) co_return true;  // a sink: nobody reads the octets
        pending += a.octets;
        if (pending.size() >= flush_octets) {
            const bool ok = co_await r.on_pool_guarded("message write", false, [&] {
                write_out(false);
                return true;
            });
            if (!ok && !write_error) write_error = make_error_code(errc::io_error);
        }
        co_return true;
    }

    static asio::awaitable<verdict> accepted_here() { co_return verdict::accept(); }
    static asio::awaitable<verdict> refused_here() { co_return temporary_failure; }

    // complete() by the committer: the delivery (begun on the pool if the message was long
    // enough) and the octets still pending are handed over; the delivery ends there.
    asio::awaitable<verdict> commit_in_group(net::runner& r) {
        if ((!out && !cfg().storage->knows_mailboxes(targets)) || spool >= 0) {
            // A mailbox to make first (mkdir and fsyncs), or a spool to copy: on the pool, not on
            // the committer's one thread, which every other session's message waits for.
            const bool ok = co_await r.on_pool_guarded("message write", false, [&] {
                write_out();
                return true;
            });
            if (!ok && !write_error) write_error = make_error_code(errc::io_error);
            if (write_error) co_return temporary_failure;
        }
        net::commit_request rq;
        rq.storage = cfg().storage;
        if (!out) {
            rq.mailboxes = targets;
            rq.octets = trace_headers(info);
        }
        rq.out = std::move(out);
        rq.octets += pending;
        std::string().swap(pending);
        const auto outcome = co_await sh->committer->commit(std::move(rq));
        if (!outcome.exception.empty()) r.log_failure("delivery", outcome.exception);
        if (outcome.error) {
            write_error = outcome.error;
            co_return temporary_failure;
        }
        co_return verdict::accept();
    }

    // The message ended: durable in every recipient's mailbox (or given to the deliver
    // callback), and only then accepted.
    asio::awaitable<verdict> complete(const envelope& mail, net::runner& r) {
        if (cfg().storage && sh->committer && cfg().storage->commits_in_groups()) {
            // The end of the message goes to the committer: its thread writes it with the
            // others that end meanwhile and commits them together (no pool thread per message).
            if (write_error) return refused_here();
            if (!out) targets = mailboxes(info.mail);
            // Every recipient accepted since the delivery began is in it (the core takes no
            // RCPT once a message is under way); checked, since a miss would lose mail.
            if (mailboxes(mail) != targets) {
                write_error = make_error_code(errc::bad_input);
                return refused_here();
            }
            if (targets.size() <= committer_max_mailboxes && octets < committer_max_octets) return commit_in_group(r);
        }
        if (cfg().storage) {
            return r.on_pool_guarded("delivery", temporary_failure, [&] {
                write_out();  // the rest, and the trace headers if nothing was written yet
                if (write_error) return temporary_failure;
                // Every recipient accepted since the delivery began is in it (the core takes no
                // RCPT once a message is under way); checked, since a miss would lose mail.
                if (mailboxes(mail) != targets) {
                    write_error = make_error_code(errc::bad_input);
                    return temporary_failure;
                }
                auto c = out->commit();  // durable in every mailbox, or in none
                if (!c) {
                    write_error = c.error();
                    return temporary_failure;
                }
                out.reset();
                return verdict::accept();
            });
        }
        // No store, no handler, nothing spooled: the default deliver accepts and drops, which
        // cannot block, so it takes no trip to the pool (as ask() does for validate_*).
        if (!cfg().handler && spool < 0 && !write_error) return accepted_here();
        return r.on_pool_guarded("deliver callback", temporary_failure, [&] {
            if (spool >= 0) write_out();  // the rest after what was spooled; a small message stays in memory
            if (write_error) return temporary_failure;
            std::unique_ptr<message_source> src;
            if (spool >= 0)
                src = file_source(std::exchange(spool, -1));
            else
                src = string_source(std::make_shared<const std::string>(std::exchange(pending, {})));
            message m(std::move(src), octets);
            return cfg().handler ? cfg().handler->deliver(info, m) : verdict::accept();
        });
    }

    asio::awaitable<bool> operator()(act::deliver& a, session& s, net::runner& r) {
        if (!started) start_message(s);  // an empty message
        info.mail = a.mail;
        auto v = co_await complete(a.mail, r);
        if (v.accepted && v.answer.code == 250 && v.answer.text == "Ok") v.answer.text = "Ok: queued as " + info.id;
        if (write_error)
            r.log()(log_level::error, "smtp " + info.id + " not delivered: " + write_error.message());
        else
            r.log()(log_level::info, "smtp " + info.id + (v.accepted ? " delivered" : " refused") +
                                         " from=" + log_text(a.mail.sender.is_null() ? "<>" : a.mail.sender.address()) +
                                         " rcpts=" + std::to_string(a.mail.recipients.size()) +
                                         " octets=" + std::to_string(octets) + " to=" + recipients_text(a.mail));
        if (v.accepted && !write_error && cfg().on_delivered) {
            try {
                cfg().on_delivered(info);
            } catch (const std::exception& e) {  // the message is stored: its 250 goes out all the same
                r.log_failure("on_delivered", e.what());
            }
        }
        if (v.accepted && !write_error && cfg().before_reply) {
            // A copy: a reconfiguration meanwhile must not destroy the hook under its coroutine.
            const auto hook = cfg().before_reply;
            try {
                co_await hook(info);
            } catch (const std::exception& e) {  // stored all the same: the 250 goes out
                r.log_failure("before_reply", e.what());
            }
        }
        // Whatever the outcome, nothing of this message outlives it (a refused one leaves no
        // tmp/ file and no open delivery for the next message to write into).
        co_await drop(r);
        s.resume(v);
        co_return true;
    }

    asio::awaitable<bool> operator()(act::discard&, session&, net::runner& r) {
        co_await drop(r);
        co_return true;
    }

    // Ends the message in progress: an open delivery is aborted (its tmp/ file goes), the
    // spool closed, the buffer given back.
    asio::awaitable<void> drop(net::runner& r) {
        if (out || spool >= 0) {
            // Taken from the hooks first: whatever abort() does (a store's code may throw), the
            // next message never writes into this delivery or spool.
            auto d = std::move(out);
            const int fd = std::exchange(spool, -1);
            co_await r.on_pool_guarded("delivery abort", true, [&] {
                if (fd >= 0) ::close(fd);
                if (d) d->abort();
                d.reset();
                return true;
            });
        }
        started = false;
        octets = 0;
        targets.clear();
        write_error.clear();
        std::string().swap(pending);  // a big message's buffer is not kept for an idle session
    }

    asio::awaitable<bool> operator()(act::authenticate& a, session& s, net::runner& r) {
        auto& auth = cfg().auth;
        const auto result = co_await r.on_pool_guarded(
            "authenticate", auth_result::tempfail(), [&] { return auth ? auth->authenticate(a.creds) : auth_result::fail(); });
        if (result.outcome == auth_result::status::ok) r.logged_in(result.account);
        s.resume(result);
        co_return true;
    }

    // However the session ends: a message half received is dropped (nothing delivered).
    asio::awaitable<void> finish(session&, net::runner& r) { co_await drop(r); }
};

asio::awaitable<void> serve(std::shared_ptr<server::shared> sh, net::connection& c) {
    const auto& cfg = sh->config;
    session_config sc;
    sc.hostname = cfg.hostname;
    sc.peer_address = c.peer().address().to_string();
    sc.normalise_bare_line_ends = cfg.normalise_bare_line_ends;
    sc.tls_available = cfg.tls != nullptr;
    sc.tls_active = c.listener().implicit_tls;
    sc.auth_available = cfg.auth != nullptr;
    sc.peer_is_loopback = c.peer_is_loopback();
    sc.allow_plaintext_auth = cfg.allow_plaintext_auth;
    sc.require_auth = cfg.require_auth;
    sc.faults = cfg.faults;
    session s(std::move(sc), cfg.session_limits);
    s.start();
    auto o = cfg.runner("smtp", sh->throttle, sh->account_throttle);
    o.login_required = cfg.require_auth;  // otherwise no login deadline: anyone may send
    smtp_hooks hooks;
    hooks.sh = sh;
    co_await net::run_connection(c, s, hooks, std::move(o));
}

// The limits a server can run with (DESIGN.md "Limits"); the reason is logged.
result<void> validate(const server_config& c, const log_sink& log) {
    const auto& l = c.session_limits;
    std::string why = c.problem(std::chrono::seconds(300), "RFC 5321 4.5.3.2.7", l.max_sasl_octets);
    if (!why.empty())
        ;
    else if (l.max_command_octets < 512)
        why = "command lines of 512 octets must be accepted (RFC 5321 4.5.3.1.4)";
    else if (l.max_text_line_octets < 1000)
        why = "text lines of 1000 octets must be accepted (RFC 5321 4.5.3.1.6)";
    else if (l.max_sasl_octets < l.max_command_octets)
        why = "the SASL line limit must not be below the command line limit";
    else if (l.max_message_octets == 0 || l.max_recipients == 0)
        why = "message size and recipient limits must be at least 1";
    else if (l.max_failed_logins == 0 || l.max_bad_commands == 0 || l.max_refused_recipients == 0 ||
             l.max_junk_commands == 0 || l.max_recipient_overshoot == 0)
        why = "failed-login, bad-command, refused-recipient, junk-command and recipient-overshoot limits must be at least 1";
    // DESIGN.md "Rules": open mode takes mail for any address, so only from this machine.
    const bool open_mode = c.storage && !c.recipients_from_auth && !c.require_auth;
    if (why.empty() && open_mode && !c.allow_open_network) {
        for (const auto& listener : listeners_of(c)) {
            if (net::is_loopback(listener)) continue;
            why = "open mode (a store without recipients_from_auth or require_auth: mail for any address) "
                  "listens on loopback addresses only, not " + listener.address +
                  (c.listen.empty() ? " (the default when listen is empty: 0.0.0.0:25)" : "") +
                  "; set allow_open_network, or listen on loopback addresses";
            break;
        }
    }
    if (why.empty()) return {};
    log(log_level::error, "smtp configuration: " + why);
    return unexpected(errc::bad_config);
}

}  // namespace

std::vector<net::listen_spec> listeners_of(const server_config& c) {
    if (!c.listen.empty()) return c.listen;
    return {{"smtp", "0.0.0.0", 25, false}};  // the seed's smtpd::start: all interfaces, port 25
}

server::server(asio::io_context& io, server_config config) : configured_service(io, std::move(config)) {
    start();
}

result<void> server::build() {
    if (!config_.log) config_.log = null_log();
    shared_ = std::make_shared<shared>(config_);
    if (config_.storage) shared_->committer = &net::delivery_committer::of(io_);  // used while commits_in_groups()
    return rebuild(
        config_.base_options(), [sh = shared_](net::connection& c) { return serve(sh, c); },
        "421 4.3.2 " + config_.hostname + " Too many connections, try again later\r\n", listeners_of(config_));
}

result<void> server::check(const server_config& c) const {
    // A configuration without a log reports to the one in force.
    return validate(c, c.log ? c.log : (config_.log ? config_.log : null_log()));
}

}  // namespace mailnet::smtp
