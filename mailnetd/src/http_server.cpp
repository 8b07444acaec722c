// http_server.cpp: mailnetd's HTTP/1.1 API (DESIGN.md "mailnetd's HTTP API and web view") with
// RESTinio on the program's io_context: routing, answers, the raw stream, the waiters of
// /api/v1/wait and the Server-Sent Events stream (WHATWG HTML 9.2). The only RESTinio file.
#include "mailnet/mailnetd/http_server.hpp"

#include <restinio/all.hpp>

#include <sys/socket.h>

#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <array>
#include <cassert>
#include <cctype>
#include <map>
#include <unordered_map>

#include "mailnet/mailnetd/message_view.hpp"
#include "mailnet/mailnetd/web_view.hpp"
#include "off_thread.hpp"

namespace mailnet::mailnetd {
namespace {

constexpr std::size_t raw_chunk_octets = 64 * 1024;
constexpr std::size_t max_event_backlog_octets = 4 << 20;  // an events client this far behind is dropped
constexpr std::chrono::seconds event_keepalive{20};
constexpr std::size_t max_lingering_refusals = 128;

class connection_listener;

// A request the HTTP parser refuses (a header or body over the limits, or no HTTP at all) is
// closed by RESTinio at once, without an answer: the client would see a reset, not a 413.
// RESTinio logs the parser's error, then closes the socket, in one call on the I/O thread, so
// api_logger notes the answer that error calls for here, and api_socket's close() that follows
// writes it before closing. One per io_context (an Asio service: the socket has nothing else).
class parser_refusals : public asio::execution_context::service {
public:
    using key_type = parser_refusals;
    static inline asio::execution_context::id id;
    explicit parser_refusals(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}
    std::string pending;  // the whole HTTP answer for the socket closed next; empty: none
    // Refusals still lingering (each a socket and 16 KiB for up to 2 s): a flood of bad
    // requests beyond max_lingering_refusals is closed without an answer.
    std::shared_ptr<std::size_t> lingering = std::make_shared<std::size_t>(0);
    // Each open connection's socket by its peer (api_socket adds itself at its first read), so
    // an answer that cannot be finished can cut its connection (cut_connection).
    struct open_socket {
        int fd = -1;
        std::uint64_t generation = 0;  // a new one per registration: a reused peer address is another
    };
    std::map<asio::ip::tcp::endpoint, open_socket> open;
    std::uint64_t generations = 0;
    // Peers whose connection has an answer under way (a view, a wait, a list, /raw, events): a
    // parser refusal there would land inside that answer's body, so their connection is just
    // closed.
    std::map<asio::ip::tcp::endpoint, std::size_t> streaming;

private:
    void shutdown() override {}
};

// The answer to a parser error RESTinio logs ("[connection:N] parser error HPE_...: ..."): 413
// when a limit callback refused (RESTinio's callbacks fail only on its limits, set to ours),
// 400 for anything else; nothing for other errors.
std::optional<std::string> refusal_for(std::string_view log_line, const api_limits& lim) {
    const auto at = log_line.find("parser error HPE_");
    if (at == std::string_view::npos) return std::nullopt;
    const std::string_view name = log_line.substr(at + 13, log_line.find(':', at) - at - 13);
    int code = 400;
    std::string why = "not an HTTP/1.1 request";
    if (name == "HPE_CB_body" || name == "HPE_CB_headers_complete") {
        code = 413;
        why = "request body over " + std::to_string(lim.max_body_octets) + " octets";
    } else if (name == "HPE_CB_url" || name == "HPE_CB_header_field" || name == "HPE_CB_header_value" ||
               name == "HPE_HEADER_OVERFLOW") {
        code = 413;
        why = "request headers over " + std::to_string(lim.max_header_octets) + " octets";
    }
    const std::string body = error_json(why);
    return "HTTP/1.1 " + std::to_string(code) + (code == 413 ? " Content Too Large" : " Bad Request") +
           "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n" + body;
}

// RESTinio's logger: silent, but for the parser errors above.
class api_logger {
public:
    api_logger(asio::io_context* io, api_limits lim) : io_(io), lim_(lim) {}
    template <class B> void trace(B&&) const noexcept {}
    template <class B> void info(B&&) const noexcept {}
    template <class B> void warn(B&&) const noexcept {}
    template <class B>
    void error(B&& builder) const noexcept {
        try {
            if (auto answer = refusal_for(builder(), lim_)) asio::use_service<parser_refusals>(*io_).pending = std::move(*answer);
        } catch (...) {
        }
    }

private:
    asio::io_context* io_;
    api_limits lim_;
};

// The answer, then a lingering close: what the client still sends is read and dropped for a
// while (bounded in time and octets), so the answer is not lost to a reset.
struct refusal : std::enable_shared_from_this<refusal> {
    asio::ip::tcp::socket s;
    std::string text;
    asio::steady_timer timer;
    std::array<char, 16 * 1024> sink{};
    std::size_t drained = 0;
    std::shared_ptr<std::size_t> count;  // parser_refusals::lingering
    refusal(asio::ip::tcp::socket sock, std::string t, std::shared_ptr<std::size_t> c)
        : s(std::move(sock)), text(std::move(t)), timer(s.get_executor()), count(std::move(c)) {
        ++*count;
    }
    ~refusal() { --*count; }
    void start() {
        timer.expires_after(std::chrono::seconds(2));
        timer.async_wait([me = shared_from_this()](const asio::error_code& ec) {
            if (!ec) me->finish();
        });
        asio::async_write(s, asio::buffer(text), [me = shared_from_this()](const asio::error_code& ec, std::size_t) {
            if (ec) return me->finish();
            asio::error_code ignored;
            me->s.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
            me->drain();
        });
    }
    void drain() {
        s.async_read_some(asio::buffer(sink), [me = shared_from_this()](const asio::error_code& ec, std::size_t n) {
            me->drained += n;
            if (ec || me->drained > (16u << 20)) return me->finish();
            me->drain();
        });
    }
    void finish() {
        timer.cancel();
        asio::error_code ignored;
        s.close(ignored);
    }
};

// RESTinio's socket type: a TCP socket whose close() first answers a refusal the parser's
// error left (parser_refusals), on a socket of its own that outlives RESTinio's connection.
class api_socket : public asio::ip::tcp::socket {
public:
    explicit api_socket(asio::io_context& io) : asio::ip::tcp::socket(io), io_(&io) {}
    api_socket(api_socket&& o) noexcept
        : asio::ip::tcp::socket(std::move(o)), io_(o.io_), peer_(o.peer_), known_(std::exchange(o.known_, false)) {
        if (known_) remember();
    }
    api_socket& operator=(api_socket&&) = delete;
    ~api_socket() { forget_peer(); }

    // RESTinio reads through this first: the socket makes itself known by its peer then.
    template <typename Buffers, typename Handler>
    decltype(auto) async_read_some(const Buffers& buffers, Handler&& handler) {
        if (!known_) {
            asio::error_code ec;
            const auto peer = remote_endpoint(ec);
            if (!ec) {
                peer_ = peer;
                known_ = true;
                remember();
            }
        }
        return asio::ip::tcp::socket::async_read_some(buffers, std::forward<Handler>(handler));
    }

    void shutdown(shutdown_type what, asio::error_code& ec) {
        if (!asio::use_service<parser_refusals>(*io_).pending.empty()) return;  // close() answers first
        asio::ip::tcp::socket::shutdown(what, ec);
    }
    void close() {
        auto& refusals = asio::use_service<parser_refusals>(*io_);
        std::string answer = std::exchange(refusals.pending, std::string{});
        if (known_ && refusals.streaming.contains(peer_)) answer.clear();  // never inside another answer
        forget_peer();
        if (!answer.empty() && is_open() && *refusals.lingering < max_lingering_refusals) {
            std::make_shared<refusal>(std::move(static_cast<asio::ip::tcp::socket&>(*this)), std::move(answer),
                                      refusals.lingering)
                ->start();
            return;
        }
        asio::ip::tcp::socket::close();
    }

private:
    // In parser_refusals::open under peer_ (known_); called from RESTinio's noexcept read chain,
    // so no exception leaves it: without memory the socket is just not known (nothing is cut).
    void remember() noexcept {
        try {
            auto& refusals = asio::use_service<parser_refusals>(*io_);
            refusals.open[peer_] = {native_handle(), ++refusals.generations};
        } catch (...) {
            known_ = false;
        }
    }
    void forget_peer() noexcept {
        if (!std::exchange(known_, false)) return;
        auto& open = asio::use_service<parser_refusals>(*io_).open;
        if (const auto it = open.find(peer_); it != open.end() && it->second.fd == native_handle()) open.erase(it);
    }

    asio::io_context* io_;
    asio::ip::tcp::endpoint peer_;
    bool known_ = false;  // in parser_refusals::open under peer_
};

// While it lives, `peer`'s connection streams an answer (parser_refusals::streaming).
struct streaming_answer {
    asio::io_context& io;
    asio::ip::tcp::endpoint peer;
    streaming_answer(asio::io_context& i, asio::ip::tcp::endpoint p) : io(i), peer(std::move(p)) {
        ++asio::use_service<parser_refusals>(io).streaming[peer];
    }
    ~streaming_answer() {
        auto& s = asio::use_service<parser_refusals>(io).streaming;
        if (const auto it = s.find(peer); it != s.end() && --it->second == 0) s.erase(it);
    }
    streaming_answer(const streaming_answer&) = delete;
    streaming_answer& operator=(const streaming_answer&) = delete;
};

// One connection, as its answer began: its peer and the registration it had then.
struct connection_token {
    asio::ip::tcp::endpoint peer;
    std::uint64_t generation = 0;  // 0: not known
};
connection_token connection_of(asio::io_context& io, const asio::ip::tcp::endpoint& peer) {
    const auto& open = asio::use_service<parser_refusals>(io).open;
    const auto it = open.find(peer);
    return {peer, it == open.end() ? 0 : it->second.generation};
}

// Cuts the connection `t` (both directions shut down): an answer that cannot be finished must
// not end as if whole (a chunked /raw would otherwise get its last chunk). RESTinio then fails
// its next read or write there and closes the connection. False if that connection is not
// open any more (its peer's address may be another connection's now: that one is left alone).
bool cut_connection(asio::io_context& io, const connection_token& t) {
    auto& open = asio::use_service<parser_refusals>(io).open;
    const auto it = open.find(t.peer);
    if (t.generation == 0 || it == open.end() || it->second.generation != t.generation) return false;
    ::shutdown(it->second.fd, SHUT_RDWR);
    return true;
}

struct traits : restinio::default_single_thread_traits_t {
    using connection_state_listener_t = connection_listener;
    using logger_t = api_logger;
    using stream_socket_t = api_socket;
    // api_limits::max_connections: beyond it, connections wait in the listen backlog.
    static constexpr bool use_connection_count_limiter = true;
};

using request = restinio::request_handle_t;
using server_t = restinio::http_server_t<traits>;

const char* reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 403: return "Forbidden";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

restinio::http_status_line_t status(int code) {
    return restinio::http_status_line_t{restinio::http_status_code_t{static_cast<std::uint16_t>(code)}, reason(code)};
}

// `hold` is kept until the answer is written (or its connection is gone).
void answer(const request& req, int code, std::string body, const char* type = "application/json",
            std::shared_ptr<void> hold = nullptr) {
    auto r = req->create_response(status(code));
    if (code != 204) {
        r.append_header(restinio::http_field::content_type, type);
        r.set_body(std::move(body));
    }
    r.append_header("Cache-Control", "no-store");
    r.append_header("X-Content-Type-Options", "nosniff");
    if (hold)
        r.done([hold = std::move(hold)](const restinio::asio_ns::error_code&) {});
    else
        r.done();
}

// Whether `host` (a Host header: name or address, and maybe ":port") names this machine's
// loopback: localhost, 127.0.0.1 (127/8), [::1]. A DNS-rebinding page sends its own name.
bool loopback_host(std::string_view host) {
    std::string_view name = host, port;
    if (!name.empty() && name.front() == '[') {
        const auto end = name.find(']');
        if (end == std::string_view::npos) return false;
        port = name.substr(end + 1);
        name = name.substr(1, end - 1);
        if (!port.empty() && port.front() != ':') return false;  // "[::1]evil.example"
    } else if (const auto colon = name.rfind(':'); colon != std::string_view::npos) {
        port = name.substr(colon);
        name = name.substr(0, colon);
    }
    // RFC 9110 7.2: uri-host [ ":" port ], the port all digits (or none after the colon).
    if (!port.empty() && !std::all_of(port.begin() + 1, port.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return false;
    std::string lower(name);
    for (char& c : lower)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (lower == "localhost" || lower == "localhost.") return true;
    std::error_code ec;
    const auto a = asio::ip::make_address(lower, ec);
    return !ec && a.is_loopback();
}

// An Origin header of another site (a page elsewhere posting to the API); none is fine.
bool foreign_origin(std::string_view origin) {
    if (origin.empty()) return false;
    for (std::string_view scheme : {"http://", "https://"})
        if (origin.substr(0, scheme.size()) == scheme) return !loopback_host(origin.substr(scheme.size()));
    return true;  // "null" and anything else
}

void fail(const request& req, int code, std::string_view message) { answer(req, code, error_json(message)); }

// 503 for a request over one of the API's caps (waiters, event streams, views): try again later.
void busy(const request& req, std::string_view message) {
    auto r = req->create_response(status(503));
    r.append_header(restinio::http_field::content_type, "application/json");
    r.append_header("Retry-After", "1");
    r.append_header("Cache-Control", "no-store");
    r.append_header("X-Content-Type-Options", "nosniff");
    r.set_body(error_json(message));
    r.done();
}

// LF not preceded by CR becomes CRLF (DESIGN.md "On disk": the way out, without the
// dot-stuffing, which belongs to POP3's framing), for chunks split anywhere.
struct crlf_encoder {
    bool prev_cr = false;
    void encode(std::string_view in, std::string& out) {
        out.reserve(out.size() + in.size() + in.size() / 16);
        for (char c : in) {
            if (c == '\n' && !prev_cr) out += '\r';
            out += c;
            prev_cr = c == '\r';
        }
    }
};

// A message's stored octets, at most `max` (errc::too_large beyond).
result<std::string> load(store& st, const message_summary& s, std::uint64_t max) {
    auto m = st.open(s.mailbox, s.store_id);
    if (!m) return unexpected(m.error());
    if (m->stored_octets() > max) return unexpected(errc::too_large);
    std::string octets(static_cast<std::size_t>(m->stored_octets()), '\0');
    std::size_t got = 0;
    while (got < octets.size()) {
        auto n = m->read(std::span<char>(octets.data() + got, octets.size() - got));
        if (!n) return unexpected(n.error());
        if (*n == 0) break;
        got += *n;
    }
    octets.resize(got);
    return octets;
}

// RFC 6266 4.3: a filename parameter a browser cannot misread (ASCII only, quoted), plus the
// exact name as filename* (RFC 8187 ext-value).
std::string disposition(std::string_view filename) {
    std::string ascii, ext;
    static constexpr char hex[] = "0123456789ABCDEF";
    for (unsigned char c : filename) {
        ascii += (c >= 0x20 && c < 0x7F && c != '"' && c != '\\' && c != '/') ? static_cast<char>(c) : '_';
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_') {
            ext += static_cast<char>(c);
        } else {
            ext += '%';
            ext += hex[c >> 4];
            ext += hex[c & 15u];
        }
    }
    if (filename.empty()) return "attachment";
    return "attachment; filename=\"" + ascii + "\"; filename*=UTF-8''" + ext;
}

// The path split at '/': "/api/v1/messages/ID/raw" -> {"api","v1","messages","ID","raw"}; "/"
// -> {}. An empty segment is kept (so the path names no endpoint): "/api/v1/messages/" is not
// the collection, or a Delete of the message "." (a browser makes ".../messages/." that path)
// would empty every mailbox.
// A request target in absolute form (RFC 9112 3.2.2: "http://host:port/path", which a server
// must accept): its authority, and the path in origin form; any other target, as it is.
struct target_parts {
    std::optional<std::string_view> authority;
    std::string_view path;
};
target_parts split_target(std::string_view target) {
    for (std::string_view scheme : {"http://", "https://"}) {
        if (target.size() < scheme.size()) continue;
        bool same = true;
        for (std::size_t i = 0; i < scheme.size(); ++i)
            if (std::tolower(static_cast<unsigned char>(target[i])) != scheme[i]) same = false;
        if (!same) continue;
        target.remove_prefix(scheme.size());
        const auto slash = target.find_first_of("/?#");
        if (slash == std::string_view::npos || target[slash] != '/') return {target.substr(0, slash), "/"};  // an empty path is "/"
        return {target.substr(0, slash), target.substr(slash)};
    }
    return {std::nullopt, target};
}

std::vector<std::string_view> segments(std::string_view path) {
    std::vector<std::string_view> out;
    if (path.empty() || path == "/") return out;
    if (path.front() == '/') path.remove_prefix(1);
    for (;;) {
        const auto slash = path.find('/');
        out.push_back(path.substr(0, slash));
        if (slash == std::string_view::npos) break;
        path.remove_prefix(slash + 1);
    }
    return out;
}

// The methods a path takes (an Allow header's value), or nullptr when it names no endpoint.
const char* allowed_methods(const std::vector<std::string_view>& seg) {
    if (seg.empty()) return "GET";
    if (seg.size() == 1) return seg[0] == "healthz" ? "GET" : nullptr;
    if (seg.size() < 3 || seg[0] != "api" || seg[1] != "v1") return nullptr;
    const std::string_view what = seg[2];
    if (what == "messages") {
        if (seg.size() <= 4) return "GET, DELETE";
        if (seg.size() == 5 && (seg[4] == "raw" || seg[4] == "html")) return "GET";
        if (seg.size() == 6 && seg[4] == "parts") return "GET";
        return nullptr;
    }
    if (seg.size() != 3) return nullptr;
    if (what == "mailboxes" || what == "wait" || what == "events") return "GET";
    if (what == "faults") return "GET, PUT, DELETE";
    return nullptr;
}

}  // namespace

struct event_stream;

// Callbacks kept by connection id, each taken back by its token; run() runs (and drops) all
// of a connection's.
class connection_callbacks {
public:
    std::uint64_t add(std::uint64_t conn, std::function<void()> f) {
        const auto token = next_++;
        by_conn_[conn].emplace(token, std::move(f));
        return token;
    }
    void remove(std::uint64_t conn, std::uint64_t token) {
        auto it = by_conn_.find(conn);
        if (it == by_conn_.end()) return;
        it->second.erase(token);
        if (it->second.empty()) by_conn_.erase(it);
    }
    void run(std::uint64_t conn) {
        auto it = by_conn_.find(conn);
        if (it == by_conn_.end()) return;
        auto fs = std::move(it->second);
        by_conn_.erase(it);
        for (auto& [token, f] : fs) f();
    }
    void drop(std::uint64_t conn) { by_conn_.erase(conn); }
    /// Runs every connection's, then forgets them all.
    void run_all() {
        auto all = std::move(by_conn_);
        by_conn_.clear();
        for (auto& [conn, fs] : all)
            for (auto& [token, f] : fs) f();
    }
    void clear() { by_conn_.clear(); }

private:
    std::unordered_map<std::uint64_t, std::map<std::uint64_t, std::function<void()>>> by_conn_;
    std::uint64_t next_ = 1;
};

// Everything of the server; shared with the pool's jobs and posted handlers, which keep it alive.
struct http_server::impl : std::enable_shared_from_this<http_server::impl> {
    asio::io_context& io;
    http_config cfg;
    std::shared_ptr<store> st;
    mail_index& index;
    asio::thread_pool* pool;  // http_server's; null once it has been joined
    std::unique_ptr<server_t> server;
    asio::ip::tcp::endpoint bound;
    bool stopped = false;
    // What to undo when a connection closes (a waiter, an events stream), by connection id.
    connection_callbacks on_close;
    std::size_t views = 0;  // message views being decoded (api_limits::max_views)
    // The open events streams, by number; one index watcher writes each change's text once
    // and hands the same octets to every stream.
    std::map<std::uint64_t, std::shared_ptr<event_stream>> streams;
    std::uint64_t next_stream = 1;
    std::uint64_t watcher = 0;

    impl(asio::io_context& i, http_config c, std::shared_ptr<store> s, mail_index& x, asio::thread_pool& p)
        : io(i), cfg(std::move(c)), st(std::move(s)), index(x), pool(&p) {}

    std::uint64_t when_closed(std::uint64_t conn, std::function<void()> f) { return on_close.add(conn, std::move(f)); }
    void forget(std::uint64_t conn, std::uint64_t token) { on_close.remove(conn, token); }
    void closed(std::uint64_t conn) {
        superseded.drop(conn);
        on_close.run(conn);
    }
    // What ends a wait or an events stream when another request comes in behind it on the same
    // connection (by connection id): RESTinio answers a connection's requests in order, and
    // stops reading it with 16 unanswered; a wait left pending under a pipelined request held
    // the connection unread, so a client that went away was never seen and its waiter's place
    // was held until the timeout.
    connection_callbacks superseded;
    std::uint64_t when_superseded(std::uint64_t conn, std::function<void()> f) { return superseded.add(conn, std::move(f)); }
    void forget_superseded(std::uint64_t conn, std::uint64_t token) { superseded.remove(conn, token); }
    void supersede(std::uint64_t conn) { superseded.run(conn); }

    // Runs `work` on the pool, then `then(result)` on the I/O thread (off_thread.hpp), with
    // this object kept alive till then.
    template <class Work, class Then>
    void off_thread(Work work, Then then) {
        if (!pool) return;  // stopped and joined: nothing more runs
        mailnetd::off_thread(*pool, io, std::move(work),
                             [self = shared_from_this(), then = std::move(then)](auto&& r) mutable {
                                 then(std::forward<decltype(r)>(r));
                             });
    }
    // A message view's place among api_limits::max_views, held from its decoding until its
    // answer is written (or its connection is gone): a client that does not read cannot pile
    // answers (a detail's JSON is up to 6 times the message) up in the write buffers.
    struct view_slot {
        std::shared_ptr<impl> self;
        streaming_answer answering;  // its connection has this answer due
        view_slot(std::shared_ptr<impl> s, asio::ip::tcp::endpoint peer)
            : self(std::move(s)), answering(self->io, std::move(peer)) {
            ++self->views;
        }
        ~view_slot() { --self->views; }
        view_slot(const view_slot&) = delete;
        view_slot& operator=(const view_slot&) = delete;
    };
    // Connections with a long answer under way (a wait, an event stream, a list, /raw): their
    // count each. RESTinio writes a connection's answers in order, so a view pipelined behind
    // one would hold its place until that answer ended, and one connection that kept an event
    // stream open could keep every view refused.
    std::map<std::uint64_t, std::size_t> long_answers;
    struct long_answer {
        std::shared_ptr<impl> self;
        std::uint64_t conn;
        streaming_answer answering;  // its connection has this answer due
        long_answer(std::shared_ptr<impl> s, std::uint64_t c, asio::ip::tcp::endpoint peer)
            : self(std::move(s)), conn(c), answering(self->io, std::move(peer)) {
            ++self->long_answers[conn];
        }
        ~long_answer() {
            const auto it = self->long_answers.find(conn);
            if (it != self->long_answers.end() && --it->second == 0) self->long_answers.erase(it);
        }
        long_answer(const long_answer&) = delete;
        long_answer& operator=(const long_answer&) = delete;
    };
    // A message view may start: its slot; 503 and null else.
    std::shared_ptr<view_slot> begin_view(const request& req) {
        if (long_answers.contains(req->connection_id())) {
            busy(req, "a message view cannot wait behind a wait, an event stream, a list or /raw on the same "
                      "connection: use another one");
            return nullptr;
        }
        if (views >= cfg.limits.max_views) {
            busy(req, "too many message views at once (at most " + std::to_string(cfg.limits.max_views) +
                          "): try again");
            return nullptr;
        }
        return std::make_shared<view_slot>(shared_from_this(), req->remote_endpoint());
    }
    // A message the index lists is gone from the store (deleted by another process): the index
    // lets go of it, as it would on the store's event.
    void gone(const std::string& id) { index.remove(id); }
    // A view that could not be read: 413 over `max` (with `hint`), 404 if the message is gone
    // (and the index lets go of it), else 500.
    void view_failed(const request& req, std::error_code e, std::uint64_t max, const std::string& id,
                     std::string_view hint = {}) {
        if (e == errc::too_large) return fail(req, 413, "message over " + std::to_string(max) + " octets" + std::string(hint));
        if (e == errc::not_found) {
            gone(id);
            return fail(req, 404, "no such message");
        }
        fail(req, 500, "cannot read the message: " + e.message());
    }
    void send_list(const request& req, int code, message_query q, std::optional<std::size_t> total = std::nullopt);
    void broadcast(const mail_index::change& c);
    restinio::request_handling_status_t handle(const request& req);
    void list(const request& req, const query_params& params);
    void detail(const request& req, const message_summary& s);
    void raw(const request& req, const message_summary& s);
    void part(const request& req, const message_summary& s, std::string part);
    void html(const request& req, const message_summary& s);
    void page(const request& req);
    void delete_one(const request& req, const message_summary& s);
    void delete_all(const request& req, const query_params& params);
    void mailboxes(const request& req);
    void wait(const request& req, const query_params& params);
    void events(const request& req);
    void faults(const request& req);
};

namespace {

// RESTinio tells of closed connections here (on the I/O thread); the work is posted, so it
// never runs inside RESTinio's own call that closes.
class connection_listener {
public:
    explicit connection_listener(std::weak_ptr<http_server::impl> owner) : owner_(std::move(owner)) {}
    void state_changed(const restinio::connection_state::notice_t& notice) noexcept {
        if (!restinio::holds_alternative<restinio::connection_state::closed_t>(notice.cause())) return;
        auto owner = owner_.lock();
        if (!owner) return;
        try {
            asio::post(owner->io, [owner, id = notice.connection_id()] { owner->closed(id); });
        } catch (...) {
        }
    }

private:
    std::weak_ptr<http_server::impl> owner_;
};

}  // namespace

restinio::request_handling_status_t http_server::impl::handle(const request& req) {
    const auto& h = req->header();
    const target_parts target = split_target(h.path());
    // A wait or an events stream before this request on its connection ends now (a wait as at
    // its timeout, 408): the connection's answers then flow, and it stays read.
    supersede(req->connection_id());
    // HEAD is not served (every answer here has a body, some stream without end): a 405 naming
    // the methods the path takes, or a 404 for no endpoint, with no body at all (RFC 9110
    // 9.3.2: a pipelining client would read one as its next answer's start), whatever else is
    // wrong with the request.
    if (h.method() == restinio::http_method_head()) {
        const char* allow = allowed_methods(segments(target.path));
        auto r = req->create_response(status(allow ? 405 : 404));
        if (allow) r.append_header("Allow", allow);
        r.append_header("Cache-Control", "no-store");
        r.append_header("X-Content-Type-Options", "nosniff");
        r.done();
        return restinio::request_accepted();
    }
    // DESIGN.md: headers 16 KiB, bodies 64 KiB, 413 beyond (RESTinio's own limits, set higher,
    // close the connection of a request that is far over).
    std::size_t header_octets = h.request_target().size() + 16;
    h.for_each_field([&](const restinio::http_header_field_t& f) { header_octets += f.name().size() + f.value().size() + 4; });
    if (header_octets > cfg.limits.max_header_octets) {
        fail(req, 413, "request headers over " + std::to_string(cfg.limits.max_header_octets) + " octets");
        return restinio::request_accepted();
    }
    if (req->body().size() > cfg.limits.max_body_octets) {
        fail(req, 413, "request body over " + std::to_string(cfg.limits.max_body_octets) + " octets");
        return restinio::request_accepted();
    }
    const auto method = h.method();
    // RFC 7230 5.4: an HTTP/1.1 request without Host, or any with two, is a 400 (the loopback
    // check below must not read a first Host when a second names another site). NOTE: RESTinio
    // does not tell the request's HTTP version (its header says 1.1 whatever was sent), so an
    // HTTP/1.0 request without Host is refused too, and HTTP/1.0 clients get HTTP/1.1 answers
    // (chunked lists): docs/mailnetd.md says HTTP/1.1.
    std::size_t hosts = 0;
    h.for_each_value_of(restinio::http_field::host, [&](auto) {
        ++hosts;
        return restinio::http_header_fields_t::continue_enumeration();
    });
    if (hosts != 1) {
        fail(req, 400, hosts > 1 ? "more than one Host header" : "no Host header");
        return restinio::request_accepted();
    }
    if (!cfg.any_host) {
        // Loopback only (DESIGN.md): also by name, or a rebinding page could read every mail.
        // An absolute-form target's authority stands for the Host (RFC 9112 3.2.2); both are checked.
        if (!loopback_host(h.get_field_or(restinio::http_field::host, "")) ||
            (target.authority && !loopback_host(*target.authority))) {
            fail(req, 403, "the Host is not this machine's loopback (see --allow-open-network)");
            return restinio::request_accepted();
        }
        // Two Origin headers: as foreign as the worse of them (a check of the first alone let
        // a second one name another site).
        std::size_t origins = 0;
        h.for_each_value_of(restinio::http_field::origin, [&](auto) {
            ++origins;
            return restinio::http_header_fields_t::continue_enumeration();
        });
        if (method != restinio::http_method_get() &&
            (origins > 1 || foreign_origin(h.get_field_or(restinio::http_field::origin, "")))) {
            fail(req, 403, "a request from another site's page");
            return restinio::request_accepted();
        }
    }
    // HEAD is not served (405): every answer here has a body, some stream without end.
    const bool get = method == restinio::http_method_get();
    const bool del = method == restinio::http_method_delete();
    auto parsed = parse_query_string(h.query());
    if (auto* e = std::get_if<api_error>(&parsed)) {
        fail(req, e->status, e->message);
        return restinio::request_accepted();
    }
    const query_params& params = std::get<query_params>(parsed);
    const auto seg = segments(target.path);
    // RFC 7231 6.5.5: a 405 names the methods the path takes.
    const auto not_allowed = [&] {
        const char* allow = allowed_methods(seg);
        auto r = req->create_response(status(405));
        r.append_header(restinio::http_field::content_type, "application/json");
        r.append_header("Allow", allow);
        r.append_header("Cache-Control", "no-store");
        r.append_header("X-Content-Type-Options", "nosniff");
        r.set_body(error_json("method not allowed here"));
        r.done();
        return restinio::request_accepted();
    };
    const auto no_params = [&] {
        if (params.empty()) return true;
        fail(req, 400, "unknown query parameter: " + params.front().first);
        return false;
    };

    if (seg.empty()) {
        if (!get) return not_allowed();
        if (no_params()) page(req);
        return restinio::request_accepted();
    }
    if (seg.size() == 1 && seg[0] == "healthz") {
        if (!get) return not_allowed();
        // Not ready (503) until the index holds what the store had at start: a test that
        // waits for healthz and then lists finds every message.
        if (no_params())
            index.complete() ? answer(req, 200, R"({"status":"ok"})") : answer(req, 503, R"({"status":"starting"})");
        return restinio::request_accepted();
    }
    if (seg.size() < 3 || seg[0] != "api" || seg[1] != "v1") {
        fail(req, 404, "no such endpoint");
        return restinio::request_accepted();
    }
    const std::string_view what = seg[2];
    // A request that asks to upgrade (Connection: upgrade, Upgrade: ...) is one RESTinio stops
    // reading the connection for until it is answered: a wait or an events stream would not see
    // its client go, and 1,500 such waits held every waiter's place for up to 600 s. None is
    // upgraded here (RFC 7230 6.7: a server may ignore Upgrade); these two refuse it.
    // (http_parser marks an upgrade when both Upgrade and a Connection naming it are sent.)
    // Every Connection field, not only the first: http_parser reads them all.
    std::string connection;
    h.for_each_field([&](const auto& f) {
        if (equals_nocase(f.name(), "Connection")) {
            connection += f.value();
            connection += ',';
        }
    });
    for (char& c : connection) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const bool upgrade = h.has_field(restinio::http_field::upgrade) && connection.find("upgrade") != std::string::npos;
    if (seg.size() == 3 && (what == "wait" || what == "events") && upgrade && get) {
        fail(req, 400, "this endpoint answers only requests without Upgrade");
        return restinio::request_accepted();
    }
    if (what == "messages" && seg.size() == 3) {
        if (get)
            list(req, params);
        else if (del)
            delete_all(req, params);
        else
            return not_allowed();
        return restinio::request_accepted();
    }
    if (what == "messages" && seg.size() >= 4 && seg.size() <= 6) {
        const message_summary* s = index.find(seg[3]);
        const bool known_shape = seg.size() == 4 || (seg.size() == 5 && (seg[4] == "raw" || seg[4] == "html")) ||
                                 (seg.size() == 6 && seg[4] == "parts");
        if (!known_shape) {
            fail(req, 404, "no such endpoint");
            return restinio::request_accepted();
        }
        if (!(get || (del && seg.size() == 4))) return not_allowed();
        if (!no_params()) return restinio::request_accepted();
        if (!s) {
            fail(req, 404, "no such message");
            return restinio::request_accepted();
        }
        if (seg.size() == 4 && del)
            delete_one(req, *s);
        else if (seg.size() == 4)
            detail(req, *s);
        else if (seg.size() == 5 && seg[4] == "html")
            html(req, *s);
        else if (seg.size() == 5)
            raw(req, *s);
        else
            part(req, *s, std::string(seg[5]));
        return restinio::request_accepted();
    }
    if (seg.size() == 3 && what == "mailboxes") {
        if (!get) return not_allowed();
        if (no_params()) mailboxes(req);
        return restinio::request_accepted();
    }
    if (seg.size() == 3 && what == "wait") {
        if (!get) return not_allowed();
        wait(req, params);
        return restinio::request_accepted();
    }
    if (seg.size() == 3 && what == "events") {
        if (!get) return not_allowed();
        if (no_params()) events(req);
        return restinio::request_accepted();
    }
    if (seg.size() == 3 && what == "faults") {
        if (!(get || del || method == restinio::http_method_put())) return not_allowed();
        if (no_params()) faults(req);
        return restinio::request_accepted();
    }
    fail(req, 404, "no such endpoint");
    return restinio::request_accepted();
}

// A list or wait answer (api.hpp list_writer), in chunks of about list_piece_octets: the next
// piece is made once the last one is written, so a slow reader holds one piece, not the list.
struct list_stream : std::enable_shared_from_this<list_stream> {
    std::shared_ptr<http_server::impl> self;
    list_writer writer;
    restinio::response_builder_t<restinio::chunked_output_t> out;
    http_server::impl::long_answer mark;
    list_stream(std::shared_ptr<http_server::impl> s, message_query q, std::optional<std::size_t> total,
                restinio::response_builder_t<restinio::chunked_output_t> o, std::uint64_t conn,
                asio::ip::tcp::endpoint peer)
        : self(std::move(s)), writer(self->index, std::move(q), total), out(std::move(o)), mark(self, conn, std::move(peer)) {}
    void step() {
        std::string piece = writer.next(self->index, self->cfg.limits.list_piece_octets);
        if (piece.empty()) {
            out.done();
            return;
        }
        out.append_chunk(std::move(piece));
        out.flush([me = shared_from_this()](const asio::error_code& ec) {
            if (!ec) me->step();
        });
    }
};

void http_server::impl::send_list(const request& req, int code, message_query q, std::optional<std::size_t> total) {
    auto out = req->create_response<restinio::chunked_output_t>(status(code));
    out.append_header(restinio::http_field::content_type, "application/json");
    out.append_header("Cache-Control", "no-store");
    out.append_header("X-Content-Type-Options", "nosniff");
    std::make_shared<list_stream>(shared_from_this(), std::move(q), total, std::move(out), req->connection_id(),
                                  req->remote_endpoint())
        ->step();
}

void http_server::impl::list(const request& req, const query_params& params) {
    auto q = parse_list_request(params, cfg.limits);
    if (auto* e = std::get_if<api_error>(&q)) return fail(req, e->status, e->message);
    send_list(req, 200, std::move(std::get<message_query>(q)));
}

void http_server::impl::detail(const request& req, const message_summary& s) {
    const std::uint64_t max = cfg.limits.max_view_octets;
    auto slot = begin_view(req);
    if (!slot) return;
    off_thread(
        [st = st, s, max]() -> result<std::string> {
            auto octets = load(*st, s, max);
            if (!octets) return unexpected(octets.error());
            return message_json(s, read_message(*octets));
        },
        [self = shared_from_this(), req, max, id = s.id, slot = std::move(slot)](result<std::string> r) mutable {
            if (r) return answer(req, 200, std::move(*r), "application/json", std::move(slot));
            self->view_failed(req, r.error(), max, id, ": see /raw");
        });
}

// The raw stream: a piece read and encoded on the pool, written here, and only then the next,
// so a huge message is never held whole. The pool's work holds only the reading side; the
// response (which holds RESTinio's connection) is held on the I/O thread only, so it is
// destroyed there (off_thread.hpp).
// As RETR reads it: never past the size the store opened it with, and a file that ends before
// that size is an error (DESIGN.md), never a shorter message.
struct raw_reader {
    message msg;
    crlf_encoder enc;
    std::uint64_t read = 0;
    result<std::string> next() {
        const std::uint64_t left = msg.stored_octets() - read;
        if (left == 0) return std::string();
        std::vector<char> buf(static_cast<std::size_t>(std::min<std::uint64_t>(raw_chunk_octets, left)));
        auto n = msg.read(buf);
        if (!n) return unexpected(n.error());
        if (*n == 0) return unexpected(make_error_code(errc::io_error));  // shorter than its size
        read += *n;
        std::string piece;
        enc.encode(std::string_view(buf.data(), *n), piece);
        return piece;
    }
};

struct raw_stream : std::enable_shared_from_this<raw_stream> {
    std::shared_ptr<http_server::impl> self;
    std::shared_ptr<raw_reader> reader;
    restinio::response_builder_t<restinio::chunked_output_t> out;
    http_server::impl::long_answer mark;
    connection_token cut_token;  // the connection cut_connection may cut
    raw_stream(std::shared_ptr<http_server::impl> s, message m, restinio::response_builder_t<restinio::chunked_output_t> o,
               std::uint64_t conn, const asio::ip::tcp::endpoint& peer)
        : self(std::move(s)), reader(std::make_shared<raw_reader>(raw_reader{std::move(m), {}})), out(std::move(o)),
          mark(self, conn, peer), cut_token(connection_of(self->io, peer)) {}
    ~raw_stream() { assert(self->io.get_executor().running_in_this_thread() || self->stopped); }
    void step() {
        self->off_thread([reader = reader]() { return reader->next(); },
                         [me = shared_from_this()](result<std::string> piece) {
                             if (!piece) {
                                 // After the headers an error can only cut the stream: the
                                 // connection is shut down before the last chunk could go, so
                                 // the client sees a broken answer, never a shorter message.
                                 // Not known (never the case while it is open): no last chunk.
                                 if (cut_connection(me->self->io, me->cut_token)) me->out.done();
                                 return;
                             }
                             if (piece->empty()) {
                                 me->out.done();
                                 return;
                             }
                             me->out.append_chunk(std::move(*piece));
                             me->out.flush([me](const asio::error_code& ec) {
                                 if (!ec) me->step();
                             });
                         });
    }
};

void http_server::impl::raw(const request& req, const message_summary& s) {
    off_thread([st = st, s]() { return st->open(s.mailbox, s.store_id); },
               [self = shared_from_this(), req, id = s.id](result<message> m) {
                   if (!m) {
                       if (m.error() == errc::not_found) {
                           self->gone(id);
                           return fail(req, 404, "no such message");
                       }
                       return fail(req, 500, "cannot read the message: " + m.error().message());
                   }
                   auto out = req->create_response<restinio::chunked_output_t>(status(200));
                   out.append_header(restinio::http_field::content_type, "message/rfc822");
                   out.append_header("Cache-Control", "no-store");
                   out.append_header("X-Content-Type-Options", "nosniff");
                   out.append_header("Content-Security-Policy", "sandbox");
                   std::make_shared<raw_stream>(self, std::move(*m), std::move(out), req->connection_id(),
                                                req->remote_endpoint())
                       ->step();
               });
}

void http_server::impl::part(const request& req, const message_summary& s, std::string number) {
    if (!valid_part_number(number)) return fail(req, 400, "part: want a MIME part number such as 1 or 1.2");
    const std::uint64_t max = cfg.limits.max_view_octets;
    auto slot = begin_view(req);
    if (!slot) return;
    off_thread(
        [st = st, s, max, number]() -> result<std::optional<part_content>> {
            auto octets = load(*st, s, max);
            if (!octets) return unexpected(octets.error());
            return read_part(*octets, number);
        },
        [self = shared_from_this(), req, max, id = s.id, slot = std::move(slot)](result<std::optional<part_content>> r) mutable {
            if (!r) return self->view_failed(req, r.error(), max, id);
            if (!*r) return fail(req, 404, "no such part");
            const part_content& p = **r;
            auto resp = req->create_response(status(200));
            // The part's own type, when it is plain printable ASCII: nothing from the mail
            // reaches a header otherwise.
            const bool printable = !p.content_type.empty() &&
                                   std::all_of(p.content_type.begin(), p.content_type.end(),
                                               [](char c) { return c >= 0x20 && c <= 0x7E; });
            resp.append_header(restinio::http_field::content_type,
                               printable ? p.content_type : std::string("application/octet-stream"));
            resp.append_header("Content-Disposition", disposition(p.filename));
            // An HTML part opened directly runs nothing and loads nothing (DESIGN.md).
            resp.append_header("Content-Security-Policy", "sandbox");
            resp.append_header("X-Content-Type-Options", "nosniff");
            resp.append_header("Cache-Control", "no-store");
            resp.set_body(p.octets);
            resp.done([slot = std::move(slot)](const restinio::asio_ns::error_code&) {});
        });
}

// The message's HTML body for the web view's sandboxed iframe: decoded to UTF-8 (as "html" in
// the detail), under a CSP that runs nothing and loads nothing remote (web_view.hpp).
void http_server::impl::html(const request& req, const message_summary& s) {
    const std::uint64_t max = cfg.limits.max_view_octets;
    auto slot = begin_view(req);
    if (!slot) return;
    off_thread(
        [st = st, s, max]() -> result<std::string> {
            auto octets = load(*st, s, max);
            if (!octets) return unexpected(octets.error());
            return read_message(*octets).html;
        },
        [self = shared_from_this(), req, max, id = s.id, slot = std::move(slot)](result<std::string> r) mutable {
            if (!r) return self->view_failed(req, r.error(), max, id);
            if (r->empty()) return fail(req, 404, "no HTML part");
            auto resp = req->create_response(status(200));
            resp.append_header(restinio::http_field::content_type, "text/html; charset=utf-8");
            resp.append_header("Content-Security-Policy", std::string(mail_html_csp));
            resp.append_header("X-Content-Type-Options", "nosniff");
            resp.append_header("Referrer-Policy", "no-referrer");
            resp.append_header("Cache-Control", "no-store");
            resp.set_body(std::move(*r));
            resp.done([slot = std::move(slot)](const restinio::asio_ns::error_code&) {});
        });
}

// The web view (web_view.hpp): the page under its own CSP, never framed by another page.
void http_server::impl::page(const request& req) {
    auto resp = req->create_response(status(200));
    resp.append_header(restinio::http_field::content_type, "text/html; charset=utf-8");
    resp.append_header("Content-Security-Policy", web_view_csp());
    resp.append_header("X-Content-Type-Options", "nosniff");
    resp.append_header("X-Frame-Options", "DENY");
    resp.append_header("Referrer-Policy", "no-referrer");
    resp.append_header("Cache-Control", "no-store");
    resp.set_body(web_view_page());
    resp.done();
}

void http_server::impl::delete_one(const request& req, const message_summary& s) {
    off_thread(
        [st = st, s]() {
            auto r = st->commit(s.mailbox, std::vector<std::string>{s.store_id}, {});
            return r.empty() ? std::error_code{} : r[0];
        },
        [self = shared_from_this(), req, id = s.id](std::error_code ec) {
            if (ec) return fail(req, 500, "cannot delete: " + ec.message());
            self->index.remove(id);  // now, not when the store's event arrives: the next GET agrees
            answer(req, 204, {});
        });
}

void http_server::impl::delete_all(const request& req, const query_params& params) {
    auto mailbox = parse_delete_request(params);
    if (auto* e = std::get_if<api_error>(&mailbox)) return fail(req, e->status, e->message);
    // The store's own list, so messages the index has not read yet go too.
    std::vector<std::string> known;
    for (const auto* s : index.in_mailbox(std::get<std::string>(mailbox))) known.push_back(s->mailbox);
    off_thread(
        [st = st, want = std::get<std::string>(mailbox), known]() {
            std::vector<std::string> boxes;
            if (auto all = st->mailboxes()) {
                for (auto& b : *all)
                    if (want.empty() || equals_nocase(b, want)) boxes.push_back(std::move(b));
            } else {
                boxes = known;
            }
            std::sort(boxes.begin(), boxes.end());
            boxes.erase(std::unique(boxes.begin(), boxes.end()), boxes.end());
            std::vector<std::pair<std::string, std::string>> gone;  // mailbox, store id
            std::error_code failed;
            for (const auto& b : boxes) {
                auto snap = st->contents(b);
                if (!snap) {
                    failed = snap.error();
                    continue;
                }
                std::vector<std::string> ids;
                for (const auto& m : *snap) ids.push_back(m.id);
                auto r = st->commit(b, ids, {});
                for (std::size_t i = 0; i < r.size(); ++i) {
                    if (r[i])
                        failed = r[i];
                    else
                        gone.emplace_back(b, ids[i]);
                }
            }
            return std::make_pair(std::move(gone), failed);
        },
        [self = shared_from_this(), req](std::pair<std::vector<std::pair<std::string, std::string>>, std::error_code> r) {
            for (const auto& [box, id] : r.first) self->index.remove(box, id);
            if (r.second) return fail(req, 500, "cannot delete every message: " + r.second.message());
            answer(req, 204, {});
        });
}

void http_server::impl::mailboxes(const request& req) {
    off_thread([st = st]() { return st->mailboxes(); },
               [self = shared_from_this(), req](result<std::vector<std::string>> names) {
                   std::vector<std::string> list;
                   if (names) {
                       list = std::move(*names);
                   } else {
                       // A store that cannot list: the mailboxes the index has seen.
                       for (const auto* s : self->index.in_mailbox("")) list.push_back(s->mailbox);
                       std::sort(list.begin(), list.end());
                       list.erase(std::unique(list.begin(), list.end()), list.end());
                   }
                   answer(req, 200, mailboxes_json(list, self->index));
               });
}

void http_server::impl::wait(const request& req, const query_params& params) {
    auto parsed = parse_wait_request(params, index, cfg.limits);
    if (auto* e = std::get_if<api_error>(&parsed)) return fail(req, e->status, e->message);
    const wait_request w = std::get<wait_request>(parsed);
    if (index.waiters() >= cfg.limits.max_waiters) {
        // Full: only a wait that is answered at once is served.
        message_query all = w.q;
        all.limit = 0;
        if (index.query(all).total >= w.count) return send_list(req, 200, w.q);
        return busy(req, "too many waiting requests (at most " + std::to_string(cfg.limits.max_waiters) + "): try again");
    }
    // One waiter: the index calls done() at the insertion that reaches the count; the timer
    // answers 408; a closed connection cancels both. Whichever comes first ends the others.
    struct pending {
        mail_index::waiter_id id = 0;
        std::uint64_t token = 0;
        std::uint64_t behind = 0;  // its when_superseded token
        bool over = false;
        std::optional<asio::steady_timer> timer;
        std::optional<long_answer> mark;  // until the wait is over (then its list's own)
    };
    auto p = std::make_shared<pending>();
    p->mark.emplace(shared_from_this(), req->connection_id(), req->remote_endpoint());
    auto self = shared_from_this();
    const auto conn = req->connection_id();
    // The waiter's total (woken: no search of the whole index per waiter; 1000 may wake at once).
    const auto finish = [self, p, req, conn, q = w.q](int code, std::optional<std::size_t> total) {
        if (p->over) return;
        p->over = true;
        p->mark.reset();
        if (p->timer) p->timer->cancel();
        self->forget(conn, p->token);
        self->forget_superseded(conn, p->behind);
        if (code) self->send_list(req, code, q, total);
    };
    p->id = index.wait(w.q, w.count, [finish](std::size_t total) { finish(200, total); });
    if (p->id == 0) return;  // already answered
    p->timer.emplace(io, w.timeout);
    p->timer->async_wait([self, p, finish](const asio::error_code& ec) {
        if (ec || p->over) return;
        self->index.cancel(p->id);
        finish(408, std::nullopt);
    });
    p->token = when_closed(conn, [self, p, conn] {
        if (p->over) return;
        p->over = true;
        p->mark.reset();
        self->index.cancel(p->id);
        if (p->timer) p->timer->cancel();
        self->forget_superseded(conn, p->behind);
    });
    p->behind = when_superseded(conn, [self, p, finish] {
        if (p->over) return;
        self->index.cancel(p->id);
        finish(408, std::nullopt);
    });
}

// One Server-Sent Events client: held by impl::streams (which broadcast() writes to) and the
// keep-alive timer; end() lets go of both.
struct event_stream : std::enable_shared_from_this<event_stream> {
    std::shared_ptr<http_server::impl> self;
    // Let go of in end(): the response holds RESTinio's connection, whose write in flight holds
    // this stream; kept past the end, the two would keep each other alive once the loop stops.
    std::optional<restinio::response_builder_t<restinio::chunked_output_t>> out;
    std::uint64_t conn = 0;
    std::uint64_t number = 0;
    std::uint64_t token = 0;
    std::uint64_t behind = 0;  // its when_superseded token
    std::size_t backlog = 0;  // octets handed to RESTinio and not yet written
    bool over = false;
    asio::steady_timer keepalive;
    std::optional<http_server::impl::long_answer> mark;  // until end()
    event_stream(std::shared_ptr<http_server::impl> s, restinio::response_builder_t<restinio::chunked_output_t> o,
                 std::uint64_t c, std::uint64_t n, const asio::ip::tcp::endpoint& peer)
        : self(std::move(s)), out(std::move(o)), conn(c), number(n), keepalive(self->io) {
        mark.emplace(self, conn, peer);
    }

    void start() {
        // The headers at once and a first comment: the client knows the stream is open.
        send(std::make_shared<std::string>(": mailnetd events\n\n"));
        token = self->when_closed(conn, [me = shared_from_this()] { me->end(false); });
        behind = self->when_superseded(conn, [me = shared_from_this()] { me->end(true); });
        tick();
    }
    // A comment now and then keeps RESTinio's request timer (and proxies) from closing an idle stream.
    void tick() {
        keepalive.expires_after(event_keepalive);
        keepalive.async_wait([me = shared_from_this()](const asio::error_code& ec) {
            if (ec || me->over) return;
            me->send(std::make_shared<std::string>(": keep-alive\n\n"));
            me->tick();
        });
    }
    // `text` is shared by every stream (one copy per change, not one per stream).
    void send(std::shared_ptr<std::string> text) {
        if (over) return;
        if (backlog > max_event_backlog_octets) {
            // NOTE: a client that reads nothing is dropped rather than buffered without bound;
            // it reconnects and lists what it missed.
            end(true);
            return;
        }
        const std::size_t n = text->size();
        backlog += n;
        out->append_chunk(restinio::writable_item_t(std::move(text)));
        out->flush([me = shared_from_this(), n](const asio::error_code& ec) {
            me->backlog = me->backlog >= n ? me->backlog - n : 0;
            if (ec) me->end(false);
        });
    }
    void end(bool close) {
        if (over) return;
        over = true;
        const auto keep = shared_from_this();  // streams may hold the last reference
        self->streams.erase(number);
        self->forget(conn, token);
        self->forget_superseded(conn, behind);
        keepalive.cancel();
        if (close) out->done();
        out.reset();
        mark.reset();
    }
};

// One change, written once, to every open stream.
void http_server::impl::broadcast(const mail_index::change& c) {
    if (streams.empty()) return;
    auto text = std::make_shared<std::string>(c.added ? "event: new\ndata: " + summary_json(*c.summary) + "\n\n"
                                                      : "event: deleted\ndata: " + id_json(c.id) + "\n\n");
    // A copy of the list: a stream that ends while being written to leaves it.
    std::vector<std::shared_ptr<event_stream>> now;
    now.reserve(streams.size());
    for (const auto& [n, es] : streams) now.push_back(es);
    for (const auto& es : now) es->send(text);
}

void http_server::impl::events(const request& req) {
    if (streams.size() >= cfg.limits.max_event_streams)
        return busy(req, "too many event streams (at most " + std::to_string(cfg.limits.max_event_streams) +
                             "): try again");
    if (watcher == 0) {
        std::weak_ptr<impl> weak = shared_from_this();
        watcher = index.watch([weak](const mail_index::change& c) {
            if (auto me = weak.lock()) me->broadcast(c);
        });
    }
    auto out = req->create_response<restinio::chunked_output_t>(status(200));
    out.append_header(restinio::http_field::content_type, "text/event-stream; charset=utf-8");
    out.append_header("Cache-Control", "no-store");
    out.append_header("X-Content-Type-Options", "nosniff");
    const auto number = next_stream++;
    auto es = std::make_shared<event_stream>(shared_from_this(), std::move(out), req->connection_id(), number,
                                             req->remote_endpoint());
    streams.emplace(number, es);
    es->start();
}

// GET/PUT/DELETE /api/v1/faults through the slots main() gives (http_server.hpp, fault_endpoint).
void http_server::impl::faults(const request& req) {
    if (!cfg.faults) return fail(req, 404, "fault injection is not available in this build");
    const auto& f = *cfg.faults;
    const auto method = req->header().method();
    if (method == restinio::http_method_delete()) {
        f.clear();
        return answer(req, 204, {});
    }
    if (method == restinio::http_method_put()) {
        auto r = f.replace(req->body());
        if (auto* e = std::get_if<api_error>(&r)) return fail(req, e->status, e->message);
        return answer(req, 200, std::move(std::get<std::string>(r)));
    }
    answer(req, 200, f.list());
}

http_server::http_server(asio::io_context& io, http_config cfg, std::shared_ptr<store> st, mail_index& index)
    : pool_(std::make_unique<asio::thread_pool>(2)),
      impl_(std::make_shared<impl>(io, std::move(cfg), std::move(st), index, *pool_)) {}

http_server::~http_server() {
    stop();
    pool_->join();
    impl_->pool = nullptr;
}

result<asio::ip::tcp::endpoint> http_server::start() {
    auto& m = *impl_;
    asio::error_code ec;
    const auto address = asio::ip::make_address(m.cfg.address, ec);
    if (ec) return unexpected(make_error_code(errc::bad_config));
    std::weak_ptr<impl> weak = impl_;
    restinio::incoming_http_msg_limits_t limits;
    // Ours: the parser refuses a longer field, URL or body, and api_socket answers 413 (a body
    // by its Content-Length, before it is read); handle() checks the headers' total.
    limits.max_url_size(m.cfg.limits.max_header_octets)
        .max_field_name_size(m.cfg.limits.max_header_octets)
        .max_field_value_size(m.cfg.limits.max_header_octets + 1)
        .max_field_count(1000)
        .max_body_size(m.cfg.limits.max_body_octets);
    auto settings = restinio::server_settings_t<traits>{}
                        .logger(&m.io, m.cfg.limits)
                        .address(address)
                        .port(m.cfg.port)
                        // A pending request (a wait, an events stream) keeps its connection read, so a
                        // client that goes away is seen at once (its waiter freed). NOTE: RESTinio
                        // (0.6.x) answers only 3 requests and closes when more than this + 1 come in
                        // one write: 16 rather than 4 lets a client pipeline up to 17.
                        .max_pipelined_requests(16)
                        .max_parallel_connections(m.cfg.limits.max_connections)
                        .handle_request_timeout(m.cfg.limits.max_wait + std::chrono::seconds(60))
                        .read_next_http_message_timelimit(std::chrono::seconds(60))
                        // One write may take a minute: RESTinio's 5 s cut /raw off for a client
                        // reading below about 250 KB/s (the kernel wakes a writer only once a third
                        // of a big send buffer has drained). A client that reads nothing for a
                        // minute is dropped (a view's place is held until then).
                        .write_http_response_timelimit(std::chrono::seconds(60))
                        .incoming_http_msg_limits(limits)
                        .connection_state_listener(std::make_shared<connection_listener>(weak))
                        // RESTinio writes a chunked answer's last chunk ("0\r\n\r\n") on its own:
                        // with Nagle on it waits for the ACK of what went before, which a keep-alive
                        // client delays (40 ms on Linux), so every list answer took 40 ms more.
                        .socket_options_setter([](restinio::socket_options_t& o) {
                            asio::error_code ec;  // a socket that cannot take it works, only slower
                            o.set_option(asio::ip::tcp::no_delay{true}, ec);
                        })
                        .acceptor_post_bind_hook([weak](asio::ip::tcp::acceptor& a) {
                            if (auto i = weak.lock()) i->bound = a.local_endpoint();
                        })
                        .request_handler([weak](const request& req) {
                            auto i = weak.lock();
                            if (!i || i->stopped) return restinio::request_rejected();
                            try {
                                return i->handle(req);
                            } catch (const std::exception& e) {
                                if (i->cfg.log) i->cfg.log(log_level::error, std::string("mailnetd: http: ") + e.what());
                                return restinio::request_rejected();
                            }
                        });
    try {
        m.server = std::make_unique<server_t>(restinio::external_io_context(m.io), std::move(settings));
        m.server->open_sync();
    } catch (const std::exception& e) {
        if (m.cfg.log) m.cfg.log(log_level::error, std::string("mailnetd: http: cannot listen: ") + e.what());
        m.server.reset();
        return unexpected(make_error_code(std::errc::address_not_available));
    }
    return m.bound;
}

void http_server::stop() {
    if (!impl_ || impl_->stopped) return;
    impl_->stopped = true;
    if (impl_->server) {
        try {
            impl_->server->close_sync();
        } catch (...) {
        }
    }
    // Waiters and event streams let go now: once the loop has stopped their connections never
    // tell of closing, and an events stream and the server would keep each other alive.
    impl_->on_close.run_all();
    impl_->superseded.clear();
    if (impl_->watcher) impl_->index.unwatch(impl_->watcher);
    impl_->watcher = 0;
}

}  // namespace mailnet::mailnetd
