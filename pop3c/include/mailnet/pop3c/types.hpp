// mailnet/pop3c/types.hpp: what the POP3 client's calls take and give (shared by the blocking
// and the async client): options, typed results, typed errors, the seed's index words.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mailnet/dot_stuffing.hpp"
#include "mailnet/log.hpp"

namespace mailnet::pop3c {

/// Failures of the client (besides mailnet::errc::timed_out, tls_error, io_error, not_found).
enum class errc {
    server_error = 1,   ///< the server answered -ERR (failure::text and failure::code say why)
    protocol_error,     ///< the server broke the protocol (garbage, an over-long line, octets after STLS)
    closed,             ///< the server closed the connection
    no_such_message,    ///< a message number outside 1..count
    bad_index,          ///< an index word that is not a number, start, next, end or last
    tls_unavailable,    ///< STLS was asked for and the server refused or does not offer it
    plaintext_refused,  ///< the password would cross an unencrypted connection to a non-loopback host
    no_mechanism,       ///< no login method both sides allow
    stopped,            ///< a retrieval handler asked to stop (the connection is closed, nothing deleted)
    not_connected,      ///< the client was closed or never opened
    /// open(): the login was accepted, but the server answered -ERR to the STAT that follows
    /// (it cannot open the mailbox); failure::text and failure::code are the server's
    mailbox_refused,
};

/// The category of pop3c::errc.
const std::error_category& category() noexcept;
/// Makes an error_code from a pop3c::errc.
inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), category()}; }

/// Why a call failed.
struct failure {
    std::error_code error;  ///< what kind of failure
    std::string text;       ///< the server's -ERR text, or what went wrong
    std::string code;       ///< the RFC 2449 / RFC 3206 response code of a -ERR ("IN-USE", "AUTH", "SYS/TEMP")
    /// One line for a person: "server: [IN-USE] mailbox locked" or "timed out: reading"; the
    /// server's control octets (escape sequences) as \xNN.
    std::string message() const;
};

/// The exception form of a failure: outcome::value() throws it.
class error : public std::runtime_error {
public:
    explicit error(failure f) : std::runtime_error(f.message()), failure_(std::move(f)) {}
    const failure& why() const noexcept { return failure_; }
    std::error_code code() const noexcept { return failure_.error; }

private:
    failure failure_;
};

/// A call's result: a value or a failure. value() throws pop3c::error on a failure, so a caller
/// picks exceptions (`c.status().value()`) or checks (`if (auto s = c.status()) ...`).
template <class T>
class [[nodiscard]] outcome {
public:
    outcome() : v_(std::in_place_index<1>, failure{make_error_code(errc::not_connected), "no result", {}}) {}
    outcome(T v) : v_(std::in_place_index<0>, std::move(v)) {}         // NOLINT: implicit by design
    outcome(failure f) : v_(std::in_place_index<1>, std::move(f)) {}   // NOLINT
    bool has_value() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }
    T& value() & { check(); return std::get<0>(v_); }
    const T& value() const& { check(); return std::get<0>(v_); }
    T&& value() && { check(); return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    T& operator*() & { return value(); }
    const failure& why() const { return std::get<1>(v_); }
    std::error_code error() const noexcept { return has_value() ? std::error_code{} : std::get<1>(v_).error; }

private:
    void check() const { if (!has_value()) throw pop3c::error(std::get<1>(v_)); }
    std::variant<T, failure> v_;
};

/// outcome<void>.
template <>
class [[nodiscard]] outcome<void> {
public:
    outcome() = default;
    outcome(failure f) : f_(std::move(f)) {}  // NOLINT
    bool has_value() const noexcept { return !f_; }
    explicit operator bool() const noexcept { return has_value(); }
    void value() const { if (f_) throw pop3c::error(*f_); }
    const failure& why() const { return *f_; }
    std::error_code error() const noexcept { return f_ ? f_->error : std::error_code{}; }

private:
    std::optional<failure> f_;
};

/// How a message's size is learnt before its data (the seed's -retr-mode). The size is a hint:
/// a message always ends at its terminating dot, whatever any size said.
enum class retr_mode {
    retr,  ///< from RETR's "+OK n octets"; a server that gives none makes the client use list
    list,  ///< from one LIST of the whole mailbox; a LIST that fails makes the client use slow
    slow,  ///< no size: read to the terminator
};

/// Transport security.
enum class tls_mode {
    none,      ///< plain TCP (port 110)
    implicit,  ///< TLS from the first octet (RFC 8314, port 995; the seed's -socketcmd tls::socket)
    stls,      ///< plain, then STLS (RFC 2595); a server that cannot do it is an error, never plain
};

/// How to log in.
enum class login_method {
    automatic,  ///< with TLS: SASL PLAIN if offered, else USER/PASS; without: APOP if offered,
                ///< else PLAIN or USER/PASS where a cleartext password is allowed
    user,       ///< USER/PASS (RFC 1939 7)
    apop,       ///< APOP (RFC 1939 7): needs the greeting's timestamp
    plain,      ///< AUTH PLAIN (RFC 5034, RFC 4616)
};

/// The server's certificate as the verification callback sees it.
struct peer_certificate {
    std::string subject;             ///< RFC 2253 form
    std::string issuer;              ///< RFC 2253 form
    std::string fingerprint_sha256;  ///< lowercase hex of the leaf's DER
    std::string tls;                 ///< protocol and cipher, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"
};

/// Everything open() takes besides host, user, password and port.
struct options {
    retr_mode mode = retr_mode::retr;
    /// MS Exchange: read every message to its terminator whatever sizes say, accept bare-LF
    /// replies (and bare LF in messages as line ends). Commands still end in CRLF.
    bool msex = false;
    /// Commands end in a bare LF (the seed's msex did this; only for a server that needs it).
    bool bare_lf_commands = false;
    tls_mode tls = tls_mode::none;
    std::filesystem::path ca_file;       ///< PEM bundle to verify with; empty: the system's
    std::string fingerprint_sha256;      ///< pin the server's leaf certificate (hex, colons allowed)
    bool insecure = false;               ///< no certificate or host name check (tests only)
    /// Called after every handshake that passed verification; false refuses the server (the
    /// seed's -tls-callback). It cannot accept what verification refused: pin a fingerprint.
    std::function<bool(const peer_certificate&)> tls_callback;
    login_method login = login_method::automatic;
    /// Send a cleartext password (USER/PASS, PLAIN) to a non-loopback host without TLS.
    bool allow_plaintext_password = false;
    std::chrono::seconds connect_timeout{30};  ///< resolving, connecting, and the TLS handshake
    std::chrono::seconds timeout{60};          ///< each read or write of a step
    /// Commands in flight with PIPELINING (RFC 2449 6.6); 1 turns pipelining off; at most 128.
    std::size_t window = 32;
    /// A message longer than this (as handed over) is refused with mailnet::errc::too_large
    /// (retrieval_handler::refused) and read past to its terminator, so the others go on; one
    /// that goes on past twice this fails the retrieval with too_large and closes the
    /// connection: a server that sends without end is not followed forever.
    std::uint64_t max_message_octets = 1ull << 30;
    /// Messages a LIST or UIDL listing may name at most (whatever STAT says): each costs the
    /// caller memory, and a hostile STAT must not make that unbounded. More: protocol_error.
    std::size_t max_messages = 1'000'000;
    /// Line ends of the messages handed over: CRLF as on the wire, or LF as stored on disk.
    output_line_ends line_ends = output_line_ends::crlf;
    /// Debug trace of the conversation (passwords and SASL answers replaced by "***"); null: none.
    log_sink trace = nullptr;
};

/// STAT (RFC 1939 5).
struct mailbox_status {
    std::uint32_t count = 0;
    std::uint64_t octets = 0;
};

/// One line of LIST (RFC 1939 5).
struct listing {
    std::uint32_t number = 0;
    std::uint64_t octets = 0;
};

/// One line of UIDL (RFC 1939 7).
struct unique_id {
    std::uint32_t number = 0;
    std::string uid;
};

/// CAPA (RFC 2449 5): capability name (upper case) to its arguments.
struct capabilities {
    std::map<std::string, std::vector<std::string>, std::less<>> items;
    bool has(std::string_view name) const { return items.find(name) != items.end(); }
    /// The arguments of a capability ("SASL" -> {"PLAIN", "LOGIN"}); empty if absent.
    const std::vector<std::string>& args(std::string_view name) const;
};

/// One end of a range: a message number or the seed's words.
struct message_index {
    enum class word : std::uint8_t {
        number,  ///< `n`
        start,   ///< message 1
        next,    ///< the message after LAST (start only)
        end,     ///< the last message of the mailbox
        last,    ///< LAST: the highest message already retrieved (end only)
    };
    word w = word::number;
    std::uint32_t n = 0;

    message_index() = default;
    message_index(std::uint32_t number) : n(number) {}  // NOLINT: a number is an index
    message_index(word wd) : w(wd) {}                   // NOLINT
    /// "12", "start", "next", "end", "last"; errc::bad_index otherwise.
    static outcome<message_index> parse(std::string_view text);
};

/// The messages a range names: first..last, empty when first > last (`next` with nothing new).
struct range {
    std::uint32_t first = 1;
    std::uint32_t last = 0;
    bool empty() const noexcept { return first > last; }
    std::uint32_t size() const noexcept { return empty() ? 0 : last - first + 1; }
};

/// Resolves start[..end] as the seed documents: start is a number, start, next or end; end a
/// number, end or last, and without end the range is start alone. `last_read` is asked only
/// for next or last. A number outside 1..count is errc::no_such_message (the seed gave
/// nothing, silently); `next` past the end is an empty range.
outcome<range> resolve(message_index start, std::optional<message_index> end, std::uint32_t count,
                       const std::function<outcome<std::uint32_t>()>& last_read);

/// Receives retrieved messages in order, chunk by chunk (a 50 MiB message is never whole in
/// memory). A false return stops: the connection is closed at once, without QUIT.
class retrieval_handler {
public:
    virtual ~retrieval_handler() = default;
    /// A message starts; `size_hint` as the retrieval mode learnt it (never trusted).
    virtual bool begin(std::uint32_t number, std::optional<std::uint64_t> size_hint) = 0;
    /// More of the message, decoded (no stuffing dots), line ends as options::line_ends.
    virtual bool data(std::uint32_t number, std::string_view octets) = 0;
    /// The message ended at its terminator; `octets` its size (CRLF line ends, RFC 1939).
    virtual bool end(std::uint32_t number, std::uint64_t octets) = 0;
    /// The server answered -ERR for this message (before any begin()), or the message grew
    /// past options::max_message_octets (after its begin() and some data(): what was handed
    /// over of it is to be dropped; mailnet::errc::too_large); the others go on.
    virtual void refused(std::uint32_t number, const failure& why) = 0;
};

}  // namespace mailnet::pop3c

template <>
struct std::is_error_code_enum<mailnet::pop3c::errc> : std::true_type {};
