// mailnet/pop3c/core.hpp: the POP3 client's sans-I/O core (RFC 1939, RFC 2449, RFC 2595,
// RFC 5034): it turns commands into octets to send and received octets into events (the
// greeting, each command's status line, listing lines, message data, SASL challenges), in
// order, with RFC 2449 pipelining. No socket, clock or file: the blocking and the async
// client drive it, and tests and the fuzz target feed it transcripts.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <variant>

#include "mailnet/dot_stuffing.hpp"

namespace mailnet::pop3c {

/// A server's one-line answer.
struct response {
    bool ok = false;   ///< +OK (true) or -ERR (false)
    std::string code;  ///< RFC 2449 8 / RFC 3206 response code without brackets ("SYS/TEMP"); empty if none
    std::string text;  ///< what follows the status indicator and the code
};

/// How the answer to a command is framed.
enum class answer : std::uint8_t {
    single,   ///< one status line (USER, PASS, STAT, DELE, QUIT, LIST n, ...)
    lines,    ///< status line, then (if +OK) a listing: one line event each (LIST, UIDL, CAPA)
    message,  ///< status line, then (if +OK) message data: data events (RETR, TOP)
    sasl,     ///< "+ " challenges (answered with respond()), then a status line (AUTH, RFC 5034)
};

/// One command to send.
struct command {
    std::string line;               ///< without its line end; never holds CR or LF
    answer kind = answer::single;
    bool starts_tls = false;        ///< STLS: octets after its +OK fail the connection (RFC 2595 4)
};

/// Settings of a core.
struct core_options {
    /// Longest status or listing line, line end included (RFC 2449 4 asks for 512 at least).
    std::size_t max_line_octets = 8192;
    /// Commands written before their answers come (RFC 2449 6.6); 1: no pipelining.
    std::size_t window = 1;
    /// A bare LF is a line end in status lines and message data (msex: MS Exchange, and any
    /// server that sends bare LF). Turned on by itself when a status line ends in a bare LF.
    bool lf_line_ends = false;
    /// Commands end in LF instead of CRLF (only when asked for explicitly; RFC 1939 says CRLF).
    bool send_bare_lf = false;
    /// Line ends of the message data handed out: CRLF as on the wire, or LF as stored.
    output_line_ends data_line_ends = output_line_ends::crlf;
};

/// What next() found.
namespace ev {
/// Nothing more until feed().
struct need_input {};
/// The server's first line (RFC 1939 4), with the APOP timestamp if it offers one (RFC 1939 7).
struct greeting { response r; std::string apop_timestamp; };
/// The status line answering command `seq`; for lines/message answers with ok, line or data
/// events follow, then end.
struct reply { std::uint64_t seq; response r; };
/// One line of a listing, the stuffing dot removed; valid until the next call.
struct line { std::uint64_t seq; std::string_view text; };
/// Decoded message octets; valid until the next call.
struct data { std::uint64_t seq; std::string_view octets; };
/// The listing or message of command `seq` ended at its terminating dot; `octets` is the
/// message's size as RFC 1939 counts it (CRLF line ends, before stuffing), 0 for a listing.
struct end { std::uint64_t seq; std::uint64_t octets; };
/// A SASL challenge ("+ " and its base64 text) for command `seq`; answer with respond().
struct challenge { std::uint64_t seq; std::string_view text; };
/// The server broke the protocol: the connection cannot be used any more.
struct failed { std::string what; };
}  // namespace ev

/// One event.
using event = std::variant<ev::need_input, ev::greeting, ev::reply, ev::line, ev::data, ev::end, ev::challenge,
                           ev::failed>;

/// The client side of one POP3 connection, without I/O.
class core {
public:
    explicit core(core_options options = {});

    /// Queues a command; returns its sequence number (1, 2, ...), which its events carry.
    /// It is written by take_output() once the window allows.
    std::uint64_t submit(command c);

    /// Answers the challenge of the SASL command in progress (written at once, ahead of
    /// queued commands: RFC 5034 4 allows nothing else meanwhile).
    void respond(std::string_view line);

    /// Octets to write now (commands the window allows, SASL answers); empties the buffer.
    std::string take_output();

    /// Received octets. Feed only after next() returned need_input.
    void feed(std::string_view octets);

    /// The next event. After ev::failed every call returns ev::failed again.
    event next();

    /// The connection became TLS (after STLS's +OK): input starts afresh.
    void tls_started();

    /// Commands written and not yet answered in full.
    std::size_t in_flight() const noexcept { return in_flight_.size(); }
    /// Commands submitted and not yet written.
    std::size_t queued() const noexcept { return queued_.size(); }
    /// Octets fed and not yet part of an answer.
    std::string_view unread() const noexcept { return std::string_view(in_).substr(pos_); }
    /// True once the greeting was read.
    bool greeted() const noexcept { return greeted_; }
    /// True when nothing is awaited: greeted, no command in flight or queued.
    bool idle() const noexcept { return greeted_ && in_flight_.empty() && queued_.empty(); }
    /// True after ev::failed.
    bool broken() const noexcept { return !failure_.empty(); }
    /// The pipelining window (RFC 2449 6.6): set once CAPA offered PIPELINING.
    void set_window(std::size_t commands) noexcept { options_.window = std::clamp<std::size_t>(commands, 1, max_window); }
    /// The most commands ever in flight: a window's commands must fit in the socket buffers,
    /// or writing them could block while the server blocks writing its answers.
    static constexpr std::size_t max_window = 128;
    /// Whether bare LF counts as a line end (set by msex, or by the server's own bare LF).
    bool lf_line_ends() const noexcept { return options_.lf_line_ends; }
    /// What a server's unusable input is described as: at most 60 octets, controls escaped.
    static std::string describe(std::string_view octets);

private:
    struct pending {
        std::uint64_t seq;
        command cmd;
    };
    enum class phase : std::uint8_t { status, lines, message };

    // Finds the next line in the input; returns false when none is complete (or on failure).
    bool next_line(std::string_view& line);
    event fail(std::string what);
    event on_status_line(std::string_view line);

    core_options options_;
    std::string in_;          // received octets
    std::size_t pos_ = 0;     // first octet not yet parsed
    std::size_t scan_ = 0;    // where the line-end search resumes
    std::string out_;         // octets to write
    std::string chunk_;       // decoded message data handed out by ev::data
    std::deque<pending> queued_;
    std::deque<pending> in_flight_;  // cmd.line is dropped once written
    std::uint64_t next_seq_ = 1;
    phase phase_ = phase::status;
    dot_decoder decoder_;
    bool greeted_ = false;
    bool drained_ = false;  // every command was answered and none waited: octets now are unsolicited
    std::string failure_;
};

/// Parses a status line ("+OK ...", "-ERR ...", case-insensitive, then end or a space), with an
/// RFC 2449 response code; false if the line is neither.
bool parse_response(std::string_view line, response& r);

}  // namespace mailnet::pop3c
