// async_client.cpp: the POP3 client's calls as Asio coroutines over the sans-I/O core: the
// transport (connect, implicit TLS, STLS), login, and every call. The blocking client
// (client.cpp) runs these on a private io_context.
#include "mailnet/pop3c/async_client.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <deque>
#include <unordered_map>
#include <utility>

#include <asio/ssl.hpp>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "mailnet/auth/sasl.hpp"
#include "mailnet/net/server.hpp"
#include "mailnet/net/stream.hpp"
#include "mailnet/net/tls.hpp"
#include "mailnet/pop3c/core.hpp"

namespace mailnet::pop3c {
namespace {

template <class... F>
struct overloaded : F... {
    using F::operator()...;
};
template <class... F>
overloaded(F...) -> overloaded<F...>;

failure make_failure(std::error_code e, std::string text, std::string code = {}) {
    return failure{e, std::move(text), std::move(code)};
}
failure make_failure(errc e, std::string text, std::string code = {}) {
    return failure{make_error_code(e), std::move(text), std::move(code)};
}

failure refused(const response& r) { return make_failure(errc::server_error, r.text, r.code); }

// The first number of a text ("3 1200", "1200 octets"); nullopt if it does not start with one.
std::optional<std::uint64_t> leading_number(std::string_view& text) {
    std::uint64_t n = 0;
    const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || p == text.data()) return std::nullopt;
    text.remove_prefix(static_cast<std::size_t>(p - text.data()));
    while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    return n;
}

bool valid_uid(std::string_view uid) {
    if (uid.empty() || uid.size() > 70) return false;
    return std::all_of(uid.begin(), uid.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return c >= 0x21 && c <= 0x7E;
    });
}

std::string x509_name(X509_NAME* name) {
    if (name == nullptr) return {};
    BIO* bio = BIO_new(BIO_s_mem());
    if (bio == nullptr) return {};
    X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio, &data);
    std::string s(data, static_cast<std::size_t>(len > 0 ? len : 0));
    BIO_free(bio);
    return s;
}

}  // namespace

struct async_client::impl {
    std::unique_ptr<net::stream> s;
    std::shared_ptr<asio::ssl::context> tls_ctx;
    core c;
    options o;
    std::string host;
    capabilities caps;
    bool capa_listed = false;  // CAPA answered +OK (caps is what the server offers, not nothing known)
    std::string greeting_text;
    std::string apop_timestamp;
    std::string login;
    std::uint32_t count = 0;
    retr_mode mode = retr_mode::retr;
    // list mode: one LIST's sizes by number (a map: STAT's count, which the server may
    // overstate, sizes nothing)
    std::optional<std::unordered_map<std::uint32_t, std::uint64_t>> list_sizes;
    std::vector<char> buf = std::vector<char>(64 * 1024);
    std::optional<failure> broken;  // why the connection is unusable

    explicit impl(options opts)
        : c(core_options{8192, 1, opts.msex, opts.bare_lf_commands, opts.line_ends}), o(std::move(opts)) {
        mode = o.mode;
    }

    void trace(std::string_view dir, std::string_view line) {
        if (o.trace) o.trace(log_level::debug, std::string(dir) + core::describe(line));
    }

    std::uint64_t submit(command cmd, std::string_view shown = {}) {
        trace("C: ", shown.empty() ? std::string_view(cmd.line) : shown);
        return c.submit(std::move(cmd));
    }

    failure break_with(failure f) {
        if (!broken) broken = std::move(f);
        if (s) s->close();
        return *broken;
    }

    void set_deadline() { s->set_deadline(net::stream::clock::now() + o.timeout); }

    static constexpr std::size_t max_capa_lines = 512;
    std::size_t listing_cap() const { return std::min<std::size_t>(count, o.max_messages) + 64; }

    // The next event of the core, doing the I/O it needs. An I/O failure or a protocol
    // violation breaks the connection: ev::failed, and `broken` says why.
    asio::awaitable<event> next_event() {
        for (;;) {
            if (broken) co_return ev::failed{broken->text};
            std::string out = c.take_output();
            if (!out.empty()) {
                set_deadline();
                const std::error_code ec = co_await s->write_all(asio::buffer(out));
                if (ec) {
                    const bool timeout = ec == make_error_code(mailnet::errc::timed_out);
                    break_with(make_failure(timeout ? make_error_code(mailnet::errc::timed_out) : make_error_code(errc::closed),
                                            timeout ? "timed out writing to the server" : "writing to the server: " + ec.message()));
                    continue;
                }
            }
            event e = c.next();
            if (auto* f = std::get_if<ev::failed>(&e)) {
                break_with(make_failure(errc::protocol_error, f->what));
                co_return e;
            }
            if (!std::holds_alternative<ev::need_input>(e)) {
                // Nothing awaited: no deadline, so the blocking client's io_context::run()
                // returns and a client left idle between calls is not closed.
                if (c.idle()) s->set_deadline(net::stream::clock::time_point::max());
                co_return e;
            }
            set_deadline();
            std::error_code ec;
            const std::size_t n = co_await s->read_some(asio::buffer(buf), ec);
            if (ec || n == 0) {
                const bool timeout = ec == make_error_code(mailnet::errc::timed_out);
                const bool mid = c.in_flight() > 0;
                break_with(timeout ? make_failure(make_error_code(mailnet::errc::timed_out), "timed out waiting for the server")
                                   : make_failure(errc::closed, mid ? "the server closed the connection in the middle of an answer"
                                                                    : "the server closed the connection"));
                continue;
            }
            c.feed(std::string_view(buf.data(), n));
        }
    }

    // One command with a one-line answer.
    // NOTE: coroutine helpers take plain parameters, never an aggregate built in the call
    // (`simple(command{...})`): g++ 12 copies such temporaries into the frame bitwise.
    asio::awaitable<outcome<response>> simple(std::string line, std::string shown = {}, bool starts_tls = false) {
        if (broken) co_return *broken;
        const std::uint64_t seq = submit(command{std::move(line), answer::single, starts_tls}, shown);
        for (;;) {
            event e = co_await next_event();
            if (std::holds_alternative<ev::failed>(e)) co_return *broken;
            if (auto* r = std::get_if<ev::reply>(&e); r && r->seq == seq) {
                trace("S: ", (r->r.ok ? "+OK " : "-ERR ") + r->r.text);
                co_return std::move(r->r);
            }
            // Anything else answers an earlier command whose caller stopped listening.
        }
    }

    // A command with a multiline listing; on_line sees each line. A false from on_line marks
    // the listing bad (it is read to its end all the same).
    // A listing longer than `max_lines` is a hostile server's: the connection is failed (the
    // numbers of a session never change, so LIST and UIDL have one line per message).
    template <class OnLine>
    asio::awaitable<outcome<response>> listing(std::string line, OnLine on_line, std::size_t max_lines) {
        if (broken) co_return *broken;
        const std::uint64_t seq = submit(command{std::move(line), answer::lines});
        std::optional<response> status;
        std::optional<failure> bad;
        std::size_t lines = 0;
        for (;;) {
            event e = co_await next_event();
            if (std::holds_alternative<ev::failed>(e)) co_return *broken;
            if (auto* r = std::get_if<ev::reply>(&e); r && r->seq == seq) {
                trace("S: ", (r->r.ok ? "+OK " : "-ERR ") + r->r.text);
                if (!r->r.ok) co_return std::move(r->r);
                status = std::move(r->r);
            } else if (auto* l = std::get_if<ev::line>(&e); l && l->seq == seq) {
                if (++lines > max_lines)
                    co_return break_with(make_failure(errc::protocol_error, "the server's listing has more than " +
                                                                                std::to_string(max_lines) + " lines" +
                                                                                (count > o.max_messages ? " (options::max_messages)" : "")));
                if (!bad) {
                    if (auto f = on_line(l->text)) bad = std::move(*f);
                }
            } else if (auto* end = std::get_if<ev::end>(&e); end && end->seq == seq) {
                if (bad) co_return *bad;
                co_return std::move(*status);
            }
        }
    }

    asio::awaitable<outcome<void>> handshake() {
        if (!tls_ctx) {
            std::string why;
            net::tls_client_options v{o.ca_file, o.fingerprint_sha256, o.insecure};
            auto ctx = net::make_client_tls(v, &why);
            if (!ctx) co_return make_failure(ctx.error(), "TLS set-up: " + why);
            tls_ctx = *ctx;
        }
        std::string why;
        net::tls_client_options v{o.ca_file, o.fingerprint_sha256, o.insecure};
        const std::error_code ec = co_await s->client_handshake(*tls_ctx, host, v, o.connect_timeout, &why);
        if (ec) co_return break_with(make_failure(ec, "TLS with " + host + ": " + (why.empty() ? ec.message() : why)));
        c.tls_started();
        if (o.tls_callback) {
            peer_certificate pc;
            pc.tls = s->tls_description();
            if (SSL* ssl = s->native_ssl()) {
                if (X509* cert = SSL_get1_peer_certificate(ssl)) {
                    pc.subject = x509_name(X509_get_subject_name(cert));
                    pc.issuer = x509_name(X509_get_issuer_name(cert));
                    unsigned char md[EVP_MAX_MD_SIZE];
                    unsigned int len = 0;
                    if (X509_digest(cert, EVP_sha256(), md, &len) == 1) {
                        static constexpr char hex[] = "0123456789abcdef";
                        for (unsigned i = 0; i < len; ++i) {
                            pc.fingerprint_sha256 += hex[md[i] >> 4];
                            pc.fingerprint_sha256 += hex[md[i] & 15];
                        }
                    }
                    X509_free(cert);
                }
            }
            if (!o.tls_callback(pc))
                co_return break_with(make_failure(mailnet::errc::tls_error, "the verification callback refused " + host));
        }
        co_return outcome<void>{};
    }

    asio::awaitable<outcome<void>> read_capa() {
        capabilities got;
        auto r = co_await listing("CAPA", [&](std::string_view line) -> std::optional<failure> {
            std::vector<std::string> words;
            std::size_t at = 0;
            while (at < line.size()) {
                const auto sp = line.find(' ', at);
                const auto w = line.substr(at, sp == std::string_view::npos ? std::string_view::npos : sp - at);
                if (!w.empty()) words.emplace_back(w);
                if (sp == std::string_view::npos) break;
                at = sp + 1;
            }
            if (words.empty()) return std::nullopt;
            std::string name = std::move(words.front());
            for (char& ch : name)
                if (ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 'a' + 'A');
            words.erase(words.begin());
            got.items[std::move(name)] = std::move(words);
            return std::nullopt;
        }, max_capa_lines);
        if (!r) co_return r.why();
        caps = std::move(got);  // an -ERR (RFC 1939 server without CAPA) leaves none
        capa_listed = r->ok;
        co_return outcome<void>{};
    }

    bool cleartext_allowed() const {
        if (s->is_tls() || o.allow_plaintext_password) return true;
        return net::is_loopback(s->remote_endpoint().address());
    }

    asio::awaitable<outcome<void>> log_in(const std::string& user, const std::string& password) {
        login_method m = o.login;
        const auto& sasl = caps.args("SASL");
        const bool plain_offered = std::find(sasl.begin(), sasl.end(), "PLAIN") != sasl.end();
        if (m == login_method::automatic) {
            // APOP keeps the password off the wire, but its MD5 over a cleartext connection is
            // an offline dictionary attack: the same rule as a cleartext password (DESIGN.md).
            if (!s->is_tls() && !apop_timestamp.empty() && cleartext_allowed())
                m = login_method::apop;
            else if (plain_offered)
                m = login_method::plain;
            else
                m = login_method::user;
        }
        // A method the server does not offer is said first: no cleartext question arises.
        if (m == login_method::apop && apop_timestamp.empty())
            co_return make_failure(errc::no_mechanism, "the server offers no APOP");
        // PLAIN asked for by name: a server whose CAPA lists no SASL PLAIN is told apart from
        // one that refuses the password (one without CAPA at all is tried).
        if (m == login_method::plain && !caps.items.empty() && !plain_offered)
            co_return make_failure(errc::no_mechanism, "the server offers no SASL PLAIN");
        if (!cleartext_allowed())
            co_return make_failure(errc::plaintext_refused,
                                   std::string(m == login_method::apop ? "APOP's digest of the password" : "the password") +
                                       " would cross an unencrypted connection to " + host +
                                       " (use TLS or STLS, or allow cleartext passwords)");
        if (m == login_method::apop) {
            login = "APOP";
            auto r = co_await simple("APOP " + user + " " + apop_digest(apop_timestamp, password),
                                     "APOP " + user + " ***");
            if (!r) co_return r.why();
            if (!r->ok) co_return refused(*r);
            co_return outcome<void>{};
        }
        if (m == login_method::plain) {
            login = "PLAIN";
            const std::string payload = encode_sasl_plain(user, password);
            // RFC 5034 4: an initial response only if the command stays within 255 octets.
            const bool initial = 11 + payload.size() + 2 <= 255;
            if (broken) co_return *broken;
            const std::uint64_t seq = submit(command{initial ? "AUTH PLAIN " + payload : "AUTH PLAIN", answer::sasl},
                                             "AUTH PLAIN ***");
            int challenges = 0;
            for (;;) {
                event e = co_await next_event();
                if (std::holds_alternative<ev::failed>(e)) co_return *broken;
                if (auto* ch = std::get_if<ev::challenge>(&e); ch && ch->seq == seq) {
                    // The payload once (if not sent yet, or asked again), then cancel.
                    trace("S: ", "+ ");
                    if (challenges >= 2)
                        co_return break_with(make_failure(errc::protocol_error, "the server goes on challenging after AUTH was cancelled"));
                    const bool send = challenges++ == 0;
                    c.respond(send ? std::string_view(payload) : std::string_view("*"));
                    trace("C: ", send ? "***" : "*");
                } else if (auto* r = std::get_if<ev::reply>(&e); r && r->seq == seq) {
                    trace("S: ", (r->r.ok ? "+OK " : "-ERR ") + r->r.text);
                    if (!r->r.ok) co_return refused(r->r);
                    co_return outcome<void>{};
                }
            }
        }
        login = "USER";
        if (broken) co_return *broken;
        if (!caps.has("PIPELINING")) {
            // USER refused: no PASS (the password is not sent to a server that took no user).
            auto u = co_await simple("USER " + user);
            if (!u) co_return u.why();
            if (!u->ok) co_return refused(*u);
            auto pass = co_await simple("PASS " + password, "PASS ***");
            if (!pass) co_return pass.why();
            if (!pass->ok) co_return refused(*pass);
            co_return outcome<void>{};
        }
        // USER and PASS go together with PIPELINING (RFC 2449 6.6); both must be +OK (a server
        // that refused USER and then took PASS has no user logged in).
        const std::uint64_t user_seq = submit(command{"USER " + user});
        const std::uint64_t pass_seq = submit(command{"PASS " + password}, "PASS ***");
        std::optional<response> user_reply;
        for (;;) {
            event e = co_await next_event();
            if (std::holds_alternative<ev::failed>(e)) co_return *broken;
            auto* r = std::get_if<ev::reply>(&e);
            if (!r) continue;
            if (r->seq == user_seq) {
                trace("S: ", (r->r.ok ? "+OK " : "-ERR ") + r->r.text);
                user_reply = std::move(r->r);
            } else if (r->seq == pass_seq) {
                trace("S: ", (r->r.ok ? "+OK " : "-ERR ") + r->r.text);
                if (user_reply && !user_reply->ok) co_return refused(*user_reply);
                if (!r->r.ok) co_return refused(r->r);
                co_return outcome<void>{};
            }
        }
    }

    asio::awaitable<outcome<mailbox_status>> stat() {
        auto r = co_await simple("STAT");
        if (!r) co_return r.why();
        if (!r->ok) co_return refused(*r);
        std::string_view t = r->text;
        const auto n = leading_number(t);
        const auto octets = leading_number(t);
        if (!n || !octets || *n > UINT32_MAX)
            co_return break_with(make_failure(errc::protocol_error, "STAT answer without count and size: " + core::describe(r->text)));
        co_return mailbox_status{static_cast<std::uint32_t>(*n), *octets};
    }

    asio::awaitable<outcome<std::uint32_t>> last() {
        auto r = co_await simple("LAST");
        if (!r) co_return r.why();
        if (!r->ok) co_return refused(*r);
        std::string_view t = r->text;
        const auto n = leading_number(t);
        if (!n || *n > UINT32_MAX) co_return make_failure(errc::protocol_error, "LAST answer without a number: " + core::describe(r->text));
        co_return static_cast<std::uint32_t>(*n);
    }

    outcome<void> check_number(std::uint32_t n) const {
        if (n < 1 || n > count)
            return make_failure(errc::no_such_message,
                                "message " + std::to_string(n) + " does not exist (the mailbox has " + std::to_string(count) + ")");
        return {};
    }

    asio::awaitable<outcome<range>> resolve_range(message_index start, std::optional<message_index> end) {
        // LAST only when next or last is used (the seed asked it before every retrieve).
        const bool needs_last = start.w == message_index::word::next || (end && end->w == message_index::word::last);
        std::optional<outcome<std::uint32_t>> last_read;
        if (needs_last) {
            last_read = co_await last();
            // A server without LAST (Dovecot's default): nothing counts as read, as the seed did.
            if (!*last_read && last_read->error() == make_error_code(errc::server_error)) last_read = 0u;
        }
        co_return resolve(start, end, count, [&]() -> outcome<std::uint32_t> {
            if (last_read) return *last_read;
            return 0u;
        });
    }

    // list mode: one LIST of the whole mailbox gives every size; a LIST that fails: slow.
    asio::awaitable<void> load_list_sizes() {
        std::unordered_map<std::uint32_t, std::uint64_t> sizes;
        auto r = co_await listing("LIST", [&](std::string_view line) -> std::optional<failure> {
            const auto n = leading_number(line);
            const auto octets = leading_number(line);
            if (n && octets && *n >= 1 && *n <= count) sizes[static_cast<std::uint32_t>(*n)] = *octets;
            return std::nullopt;
        }, listing_cap());
        if (r && r->ok)
            list_sizes = std::move(sizes);
        else
            mode = retr_mode::slow;
    }

    asio::awaitable<outcome<void>> retrieve_each(std::vector<std::uint32_t> numbers, retrieval_handler& h,
                                                 std::optional<std::uint32_t> top_lines = std::nullopt) {
        if (broken) co_return *broken;
        for (const std::uint32_t n : numbers) {
            if (auto ok = check_number(n); !ok) co_return ok;
        }
        if (mode == retr_mode::list && !list_sizes && !top_lines) co_await load_list_sizes();
        if (broken) co_return *broken;
        std::deque<std::pair<std::uint64_t, std::uint32_t>> sent;  // seq, number
        std::size_t next = 0;
        std::uint32_t current = 0;
        std::uint64_t octets = 0;  // of the current message so far
        bool skipping = false;     // the current message is over max_message_octets: read past, handed over no more
        // Bounded: at most two windows of commands queued or in flight, however many messages.
        const std::size_t ahead = std::max<std::size_t>(1, o.window) * 2;
        while (next < numbers.size() || !sent.empty()) {
            while (next < numbers.size() && sent.size() < ahead) {
                const std::uint32_t n = numbers[next++];
                std::string line = top_lines ? "TOP " + std::to_string(n) + " " + std::to_string(*top_lines)
                                             : "RETR " + std::to_string(n);
                sent.emplace_back(submit(command{std::move(line), answer::message}), n);
            }
            event e = co_await next_event();
            if (std::holds_alternative<ev::failed>(e)) co_return *broken;
            bool go_on = true;
            // NOTE: a handler that throws leaves RETRs in flight: the connection is closed
            // (nothing deleted, no watchdog left to hold io_context::run()), then it propagates.
            try {
            if (auto* r = std::get_if<ev::reply>(&e)) {
                if (sent.empty() || r->seq != sent.front().first) continue;
                const std::uint32_t n = sent.front().second;
                trace("S: ", (r->r.ok ? "+OK " : "-ERR ") + r->r.text);
                if (!r->r.ok) {
                    h.refused(n, refused(r->r));
                    sent.pop_front();
                    continue;
                }
                std::optional<std::uint64_t> hint;
                if (!top_lines) {
                    if (mode == retr_mode::retr) {
                        std::string_view t = r->r.text;
                        hint = leading_number(t);
                        // The seed's fallback: a server that gives no size in RETR's answer is
                        // asked with LIST from the next retrieval on.
                        if (!hint) mode = retr_mode::list;
                    } else if (const auto it = mode == retr_mode::list && list_sizes ? list_sizes->find(n) : decltype(list_sizes->end()){};
                               mode == retr_mode::list && list_sizes && it != list_sizes->end()) {
                        hint = it->second;
                    }
                }
                current = n;
                octets = 0;
                skipping = false;
                go_on = h.begin(n, hint);
            } else if (auto* d = std::get_if<ev::data>(&e)) {
                if (!sent.empty() && d->seq == sent.front().first) {
                    octets += d->octets.size();
                    const auto too_large = [&] {
                        return make_failure(mailnet::errc::too_large, "message " + std::to_string(current) + " is larger than " +
                                                                          std::to_string(o.max_message_octets) + " octets");
                    };
                    if (!skipping && octets > o.max_message_octets) {
                        skipping = true;
                        h.refused(current, too_large());  // the handler drops what it was given
                    }
                    if (!skipping) {
                        go_on = h.data(current, d->octets);
                    } else if (octets - o.max_message_octets > o.max_message_octets) {
                        // Read past to its terminator, so the others go on; a server that goes
                        // on past twice the limit is not followed further.
                        co_return break_with(too_large());
                    }
                }
            } else if (auto* end = std::get_if<ev::end>(&e)) {
                if (!sent.empty() && end->seq == sent.front().first) {
                    sent.pop_front();
                    if (!std::exchange(skipping, false)) go_on = h.end(current, end->octets);
                }
            }
            } catch (...) {
                break_with(make_failure(errc::stopped, "the retrieval handler threw; the connection is closed"));
                throw;
            }
            if (!go_on) co_return break_with(make_failure(errc::stopped, "the retrieval was stopped; the connection is closed"));
        }
        // Every answer is in: octets already here answered nothing (a RETR answered twice, the
        // second taken for the next one's answer). Said now, not at the next command, so a
        // caller does not make this batch durable under numbers that may be shifted.
        if (c.in_flight() == 0 && !c.unread().empty())
            co_return break_with(make_failure(errc::protocol_error,
                                              "the server sent octets no command asked for: " + core::describe(c.unread())));
        co_return outcome<void>{};
    }

    asio::awaitable<outcome<void>> remove_each(const std::vector<std::uint32_t>& numbers) {
        if (broken) co_return *broken;
        for (const std::uint32_t n : numbers) {
            if (auto ok = check_number(n); !ok) co_return ok;
        }
        std::deque<std::uint64_t> sent;
        std::optional<failure> first;
        std::size_t next = 0;
        const std::size_t ahead = std::max<std::size_t>(1, o.window) * 2;
        while (next < numbers.size() || !sent.empty()) {
            while (next < numbers.size() && sent.size() < ahead)
                sent.push_back(submit(command{"DELE " + std::to_string(numbers[next++])}));
            event e = co_await next_event();
            if (std::holds_alternative<ev::failed>(e)) co_return *broken;
            if (auto* r = std::get_if<ev::reply>(&e); r && !sent.empty() && r->seq == sent.front()) {
                sent.pop_front();
                if (!r->r.ok) {
                    trace("S: ", "-ERR " + r->r.text);
                    if (!first) first = refused(r->r);
                }
            }
        }
        if (first) co_return *first;
        co_return outcome<void>{};
    }
};

namespace {

// Collects whole messages (the seed's retrieve returned them as a list).
class collect_handler final : public retrieval_handler {
public:
    std::vector<std::string> messages;
    std::optional<failure> first_refusal;
    bool begin(std::uint32_t, std::optional<std::uint64_t> hint) override {
        messages.emplace_back();
        open = true;
        // A hint only reserves, within reason: it is never trusted.
        if (hint) messages.back().reserve(static_cast<std::size_t>(std::min<std::uint64_t>(*hint + 64, 1u << 20)));
        return true;
    }
    bool data(std::uint32_t, std::string_view octets) override {
        messages.back().append(octets);
        return true;
    }
    bool end(std::uint32_t, std::uint64_t) override {
        open = false;
        return true;
    }
    void refused(std::uint32_t, const failure& why) override {
        if (std::exchange(open, false)) messages.pop_back();  // too large: dropped
        if (!first_refusal) first_refusal = why;
    }

private:
    bool open = false;  // a message begun and not ended
};

}  // namespace

async_client::async_client(std::unique_ptr<impl> p) : p_(std::move(p)) {}
async_client::~async_client() = default;

asio::awaitable<outcome<std::unique_ptr<async_client>>> async_client::open(asio::any_io_executor ex, std::string host,
                                                                          std::string user, std::string password,
                                                                          std::uint16_t port, options opts) {
    auto p = std::make_unique<impl>(std::move(opts));
    impl& i = *p;
    i.host = host;
    if (port == 0) port = i.o.tls == tls_mode::implicit ? 995 : 110;
    if (user.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos ||
        password.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
        co_return make_failure(mailnet::errc::bad_config, "a user name or password holds a line end or NUL");
    std::string why;
    auto sock = co_await net::connect_to(ex, host, port, i.o.connect_timeout, &why);
    if (!sock)
        co_return make_failure(sock.error(), "connecting to " + host + ":" + std::to_string(port) + ": " +
                                                 (why.empty() ? sock.error().message() : why));
    i.s = std::make_unique<net::stream>(std::move(*sock));
    if (i.o.tls == tls_mode::implicit) {
        auto secured = co_await i.handshake();
        if (!secured) co_return secured.why();
    }
    // The greeting.
    for (;;) {
        event e = co_await i.next_event();
        if (std::holds_alternative<ev::failed>(e)) co_return *i.broken;
        if (auto* g = std::get_if<ev::greeting>(&e)) {
            i.trace("S: ", (g->r.ok ? "+OK " : "-ERR ") + g->r.text);
            if (!g->r.ok) co_return i.break_with(refused(g->r));
            i.greeting_text = g->r.text;
            i.apop_timestamp = g->apop_timestamp;
            break;
        }
    }
    auto capa_read = co_await i.read_capa();
    if (!capa_read) co_return capa_read.why();
    if (i.o.tls == tls_mode::stls) {
        // RFC 2595 4: STLS; a server that refuses leaves the connection unusable for us: an
        // error, never a fall back to cleartext. A server whose CAPA lists no STLS does not
        // offer it (RFC 2595 4): not asked (one that closes on an unknown command would turn
        // "unavailable" into a protocol error); one without CAPA is asked.
        if (i.capa_listed && !i.caps.has("STLS"))
            co_return i.break_with(make_failure(errc::tls_unavailable, "the server's CAPA does not offer STLS"));
        auto r = co_await i.simple("STLS", std::string(), true);
        if (!r) co_return r.why();
        if (!r->ok) co_return i.break_with(make_failure(errc::tls_unavailable, r->text, r->code));
        auto secured = co_await i.handshake();
        if (!secured) co_return secured.why();
        // RFC 2595 4: capabilities are asked again after TLS.
        auto capa_reread = co_await i.read_capa();
        if (!capa_reread) co_return capa_reread.why();
    }
    if (i.caps.has("PIPELINING")) i.c.set_window(i.o.window);
    auto logged_in = co_await i.log_in(user, password);
    if (!logged_in) co_return i.break_with(logged_in.why());
    auto st = co_await i.stat();
    if (!st) {
        failure f = st.why();
        // Not a refused login: the server took it and then could not open the mailbox.
        if (f.error == make_error_code(errc::server_error)) f.error = make_error_code(errc::mailbox_refused);
        co_return i.break_with(std::move(f));
    }
    i.count = st->count;
    co_return std::unique_ptr<async_client>(new async_client(std::move(p)));
}

asio::awaitable<outcome<mailbox_status>> async_client::status() { co_return co_await p_->stat(); }

asio::awaitable<outcome<std::uint32_t>> async_client::last() { co_return co_await p_->last(); }

asio::awaitable<outcome<std::vector<listing>>> async_client::list() {
    std::vector<listing> out;
    auto r = co_await p_->listing("LIST", [&](std::string_view line) -> std::optional<failure> {
        std::string_view t = line;
        const auto n = leading_number(t);
        const auto octets = leading_number(t);
        if (!n || !octets || *n > UINT32_MAX) return make_failure(errc::protocol_error, "bad LIST line: " + core::describe(line));
        out.push_back(listing{static_cast<std::uint32_t>(*n), *octets});
        return std::nullopt;
    }, p_->listing_cap());
    if (!r) co_return r.why();
    if (!r->ok) co_return refused(*r);
    co_return out;
}

asio::awaitable<outcome<listing>> async_client::list(std::uint32_t n) {
    if (auto ok = p_->check_number(n); !ok) co_return ok.why();
    auto r = co_await p_->simple("LIST " + std::to_string(n));
    if (!r) co_return r.why();
    if (!r->ok) co_return refused(*r);
    std::string_view t = r->text;
    const auto num = leading_number(t);
    const auto octets = leading_number(t);
    if (!num || !octets || *num != n) co_return make_failure(errc::protocol_error, "bad LIST answer: " + core::describe(r->text));
    co_return listing{n, *octets};
}

asio::awaitable<outcome<std::vector<unique_id>>> async_client::uidl() {
    std::vector<unique_id> out;
    auto r = co_await p_->listing("UIDL", [&](std::string_view line) -> std::optional<failure> {
        std::string_view t = line;
        const auto n = leading_number(t);
        if (!n || *n > UINT32_MAX || !valid_uid(t)) return make_failure(errc::protocol_error, "bad UIDL line: " + core::describe(line));
        out.push_back(unique_id{static_cast<std::uint32_t>(*n), std::string(t)});
        return std::nullopt;
    }, p_->listing_cap());
    if (!r) co_return r.why();
    if (!r->ok) co_return refused(*r);
    co_return out;
}

asio::awaitable<outcome<unique_id>> async_client::uidl(std::uint32_t n) {
    if (auto ok = p_->check_number(n); !ok) co_return ok.why();
    auto r = co_await p_->simple("UIDL " + std::to_string(n));
    if (!r) co_return r.why();
    if (!r->ok) co_return refused(*r);
    std::string_view t = r->text;
    const auto num = leading_number(t);
    if (!num || *num != n || !valid_uid(t)) co_return make_failure(errc::protocol_error, "bad UIDL answer: " + core::describe(r->text));
    co_return unique_id{n, std::string(t)};
}

asio::awaitable<outcome<capabilities>> async_client::capa() {
    auto capa_read = co_await p_->read_capa();
    if (!capa_read) co_return capa_read.why();
    co_return p_->caps;
}

asio::awaitable<outcome<std::string>> async_client::top(std::uint32_t n, std::uint32_t lines) {
    collect_handler h;
    std::vector<std::uint32_t> one(1, n);  // NOTE: a braced {n} argument trips g++ 12's coroutines
    auto r = co_await p_->retrieve_each(std::move(one), h, lines);
    if (!r) co_return r.why();
    if (h.first_refusal) co_return *h.first_refusal;
    co_return std::move(h.messages.front());
}

asio::awaitable<outcome<std::vector<std::string>>> async_client::retrieve(message_index start, std::optional<message_index> end) {
    collect_handler h;
    auto r = co_await retrieve(start, end, h);
    if (!r) co_return r.why();
    if (h.first_refusal) co_return *h.first_refusal;
    co_return std::move(h.messages);
}

namespace {
constexpr std::uint64_t range_part = 4096;  // numbers of a range handled at a time
constexpr std::chrono::seconds quit_close_wait{1};  // for the server's close after QUIT's answer
}  // namespace

asio::awaitable<outcome<void>> async_client::retrieve(message_index start, std::optional<message_index> end, retrieval_handler& h) {
    auto rg = co_await p_->resolve_range(start, end);
    if (!rg) co_return rg.why();
    // In parts: a range comes from STAT's count, which the server may overstate (4,000,000,000
    // must not size anything here).
    for (std::uint64_t from = rg->first; !rg->empty() && from <= rg->last; from += range_part) {
        std::vector<std::uint32_t> numbers;
        for (std::uint64_t n = from; n <= rg->last && n < from + range_part; ++n) numbers.push_back(static_cast<std::uint32_t>(n));
        auto r = co_await p_->retrieve_each(std::move(numbers), h);
        if (!r) co_return r;
    }
    co_return outcome<void>{};
}

asio::awaitable<outcome<void>> async_client::retrieve_each(std::vector<std::uint32_t> numbers, retrieval_handler& h) {
    co_return co_await p_->retrieve_each(std::move(numbers), h);
}

asio::awaitable<outcome<void>> async_client::remove(message_index start, std::optional<message_index> end) {
    auto rg = co_await p_->resolve_range(start, end);
    if (!rg) co_return rg.why();
    for (std::uint64_t from = rg->first; !rg->empty() && from <= rg->last; from += range_part) {  // as retrieve()
        std::vector<std::uint32_t> numbers;
        for (std::uint64_t n = from; n <= rg->last && n < from + range_part; ++n) numbers.push_back(static_cast<std::uint32_t>(n));
        auto r = co_await p_->remove_each(numbers);
        if (!r) co_return r;
    }
    co_return outcome<void>{};
}

asio::awaitable<outcome<void>> async_client::remove_each(std::vector<std::uint32_t> numbers) {
    co_return co_await p_->remove_each(numbers);
}

asio::awaitable<outcome<void>> async_client::noop() {
    auto r = co_await p_->simple("NOOP");
    if (!r) co_return r.why();
    if (!r->ok) co_return refused(*r);
    co_return outcome<void>{};
}

asio::awaitable<outcome<void>> async_client::reset() {
    auto r = co_await p_->simple("RSET");
    if (!r) co_return r.why();
    if (!r->ok) co_return refused(*r);
    co_return outcome<void>{};
}

asio::awaitable<outcome<void>> async_client::close() {
    if (p_->broken) co_return *p_->broken;
    auto r = co_await p_->simple("QUIT");
    // RFC 1939 6: the server closes the connection after QUIT's answer. Octets before that
    // close answered no command: a reply was taken for another's (a RETR answered twice, the
    // second late), so what the session retrieved may sit under the wrong numbers.
    std::optional<failure> after;
    if (r && r->ok && p_->s && p_->s->is_open()) {
        std::string extra(p_->c.unread());
        if (extra.empty()) {
            std::array<char, 512> buf;
            p_->s->set_deadline(net::stream::clock::now() + quit_close_wait);
            std::error_code ec;
            const std::size_t n = co_await p_->s->read_some(asio::buffer(buf), ec);
            if (!ec) extra.assign(buf.data(), n);
        }
        if (!extra.empty())
            after = make_failure(errc::protocol_error, "the server sent octets after QUIT's answer: " + core::describe(extra));
    }
    if (p_->s && p_->s->is_open()) co_await p_->s->shutdown(std::chrono::seconds(2));
    if (!p_->broken) p_->broken = make_failure(errc::not_connected, "the session was closed");
    if (!r) co_return r.why();
    if (!r->ok) co_return refused(*r);
    if (after) co_return *after;
    co_return outcome<void>{};
}

std::uint32_t async_client::count() const noexcept { return p_->count; }
const capabilities& async_client::server_capabilities() const noexcept { return p_->caps; }
const std::string& async_client::greeting() const noexcept { return p_->greeting_text; }
retr_mode async_client::mode() const noexcept { return p_->mode; }
bool async_client::secure() const noexcept { return p_->s && p_->s->is_tls(); }
const std::string& async_client::login_used() const noexcept { return p_->login; }

}  // namespace mailnet::pop3c
