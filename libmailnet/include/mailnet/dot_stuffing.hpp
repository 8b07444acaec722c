// mailnet/dot_stuffing.hpp: sans-I/O streaming dot-stuffing encoder and decoder of multiline
// data (RFC 5321 4.5.2, 4.1.1.4, 4.5.3.1.6; RFC 1939 3, 7 TOP; RFC 1870 3 for sizes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace mailnet {

/// Wire size of stored octets: CRLF line ends, before dot-stuffing (RFC 1939 LIST, Maildir ,W=).
/// Each LF not preceded by CR counts 2; nothing is added for a missing final line end.
std::uint64_t wire_octets(std::string_view stored) noexcept;

/// Streaming form of wire_octets(): feed a stored message in chunks split anywhere.
class wire_size_counter {
public:
    /// Counts one more chunk of stored octets.
    void add(std::string_view stored) noexcept;

    /// The wire size of everything added so far.
    std::uint64_t octets() const noexcept { return octets_; }

private:
    std::uint64_t octets_ = 0;
    bool prev_cr_ = false;  // the last octet added was CR: a LF now is part of a CRLF
};

/// Turns a stored message (LF or CRLF line ends) into its dot-stuffed wire form, ".\r\n" included,
/// for RETR/TOP (RFC 1939 3, 7) and DATA (RFC 5321 4.5.2). Output is appended, never cleared.
class dot_encoder {
public:
    /// Whole message; with top_body_lines, the header block and at most that many body lines
    /// (RFC 1939 7 TOP). A message without an empty line is all header.
    explicit dot_encoder(std::optional<std::size_t> top_body_lines = std::nullopt) noexcept;

    /// Encodes one chunk of the stored message, split anywhere; returns the octets consumed,
    /// which is all of them unless TOP's last line ended inside the chunk.
    std::size_t encode(std::string_view chunk, std::string& out);

    /// Ends the message: CRLF if it did not end with a line end, then ".\r\n". Only once.
    void finish(std::string& out);

    /// The most octets encode_to() writes for `n` input octets (finish_to(): finish_octets).
    static constexpr std::size_t max_encoded(std::size_t n) noexcept { return 2 * n; }
    /// The most octets finish_to() writes.
    static constexpr std::size_t finish_octets = 5;

    /// As encode(), for a caller with its own output buffer (no zero-filled growth of a
    /// std::string): writes to `dest`, which has room for max_encoded(chunk.size()) octets.
    /// Returns {input octets consumed, octets written}.
    std::pair<std::size_t, std::size_t> encode_to(std::string_view chunk, char* dest) noexcept;

    /// As finish(): writes at most finish_octets to `dest`; returns how many (0 if finished).
    std::size_t finish_to(char* dest) noexcept;

    /// True when no more input is wanted (TOP has its lines, or finish() was called);
    /// finish() must still be called once.
    bool done() const noexcept { return top_done_ || finished_; }

    /// The wire size of the input consumed so far, as wire_octets() counts it (CRLF line ends,
    /// before dot-stuffing; the line end finish() may add is not counted): what a server
    /// compares with the size it announced, at no extra pass over the octets.
    std::uint64_t wire_octets() const noexcept { return wire_; }

private:

    std::optional<std::size_t> top_;  // body lines still to send, when TOP
    bool in_header_ = true;           // TOP: the empty line has not been seen yet
    bool at_line_start_ = true;       // the next input octet starts a line
    bool prev_cr_ = false;            // the last input octet was CR
    bool top_done_ = false;
    bool finished_ = false;
    std::size_t line_octets_ = 0;     // TOP: input octets of the current line so far
    std::uint64_t wire_ = 0;          // wire_octets()
};

/// What a dot_decoder does with a CR not followed by LF, or a LF not preceded by CR
/// (RFC 5321 2.3.8, 4.1.1.4: never a line end on the wire; SMTP smuggling).
enum class bare_line_end_policy {
    reject,     ///< keep it as data and flag the message (rejected()) so the server answers 5xx
    normalise,  ///< make it a line end (never an end of data)
    keep,       ///< keep it as data (a lenient client)
    /// a bare LF is a line end like CRLF, so "." LF after one ends the data; a bare CR is
    /// data (a client of a server that sends bare LF, the MS Exchange quirk; never a server)
    lf_line_end,
};

/// Line ends of a dot_decoder's output.
enum class output_line_ends {
    crlf,  ///< as on the wire
    lf,    ///< as stored (DESIGN "On disk"): CRLF becomes LF
};

/// Options of a dot_decoder.
struct dot_decoder_options {
    /// Bare CR / bare LF handling.
    bare_line_end_policy bare = bare_line_end_policy::reject;
    /// CRLF or LF line ends in the output.
    output_line_ends line_ends = output_line_ends::crlf;
    /// Output stops once message_octets() would pass this; decoding goes on to the final dot.
    /// (BDAT: the line end end_of_chunks() adds to a message that fitted is written past it.)
    std::uint64_t max_message_octets = std::numeric_limits<std::uint64_t>::max();
    /// false: the octets are not dot-stuffed and no "." line ends them (SMTP BDAT, RFC 3030 2):
    /// a leading dot is data, decode() consumes everything, and end_of_chunks() ends the message.
    bool dot_stuffed = true;
};

/// Decodes the multiline data after DATA's 354 (RFC 5321 4.1.1.4) or RETR/TOP's +OK (RFC 1939 3):
/// removes the leading dot of a line that has more after it (RFC 5321 4.5.2) and stops right
/// after the end of data, exactly CRLF "." CRLF; data starting with ".\r\n" is empty.
class dot_decoder {
public:
    /// A decoder for one message.
    explicit dot_decoder(dot_decoder_options options = {}) noexcept : options_(options) {}

    /// Decodes wire octets split anywhere, appending the message to out. Returns the octets
    /// consumed: all of in, or up to and including the final ".\r\n" (what follows it, such as
    /// pipelined commands, is the caller's). Consumes nothing once finished().
    std::size_t decode(std::string_view in, std::string& out);

    /// The end of data has been consumed (or end_of_chunks() was called).
    bool finished() const noexcept { return state_ == state::done; }

    /// BDAT ... LAST (RFC 3030 2, with dot_stuffed false): the message ends here. A CR left
    /// at the very end is a bare CR (policy applies); a last line without CRLF gets its line
    /// end (RFC 5322 2.1: a message ends with one, as DATA's always does), counted in
    /// message_octets() and in that line's length (RFC 5321 4.5.3.1.6: 1000 with the CRLF).
    void end_of_chunks(std::string& out);

    /// A bare CR was seen (whatever the policy).
    bool saw_bare_cr() const noexcept { return bare_cr_; }

    /// A bare LF was seen (whatever the policy).
    bool saw_bare_lf() const noexcept { return bare_lf_; }

    /// The policy is reject and a bare CR or bare LF was seen: answer 5xx (DESIGN "Rules").
    bool rejected() const noexcept {
        return options_.bare == bare_line_end_policy::reject && (bare_cr_ || bare_lf_);
    }

    /// Message size as RFC 1870 3 counts it: CRLF line ends, after removing stuffing dots,
    /// without the final ".\r\n"; counted on past max_message_octets. With LF output and no
    /// bare octet kept, this equals wire_octets() of what is stored.
    std::uint64_t message_octets() const noexcept { return message_octets_; }

    /// The message passed max_message_octets: output was cut there (refuse with 552). The line
    /// end end_of_chunks() adds is the server's, not the client's (RFC 1870 counts what was
    /// sent): it never makes a message that fitted too large.
    bool over_limit() const noexcept { return message_octets_ - added_octets_ > options_.max_message_octets; }

    /// Raw octets consumed so far, stuffing dots and the final ".\r\n" included.
    std::uint64_t consumed_octets() const noexcept { return consumed_octets_; }

    /// Longest line so far, CRLF included, the stuffing dot not (RFC 5321 4.5.3.1.6);
    /// an unfinished line counts what was decoded of it.
    std::size_t longest_line_octets() const noexcept {
        return longest_line_ > line_octets_ ? longest_line_ : line_octets_;
    }

    /// Starts a new message with the same options.
    void reset() noexcept { *this = dot_decoder(options_); }

    /// The options given at construction.
    const dot_decoder_options& options() const noexcept { return options_; }

private:
    enum class state : std::uint8_t {
        line_start,  // at the start of a line
        dot,         // a '.' started the line; the next octet decides
        dot_cr,      // ".\r" started the line; LF ends the data (if after a real CRLF)
        text,        // inside a line
        cr,          // a CR inside a line; LF makes it a line end
        done,        // the final ".\r\n" was consumed
    };

    void emit(const char* p, std::size_t n, std::string& out);
    void line_end(bool real_crlf, std::string& out, bool added = false);
    void bare_cr(std::string& out);
    void bare_lf(std::string& out);

    dot_decoder_options options_;
    state state_ = state::line_start;
    bool after_crlf_ = true;  // the current line start follows a real CRLF (or the 354 / +OK line)
    bool bare_cr_ = false;
    bool bare_lf_ = false;
    std::uint64_t message_octets_ = 0;
    std::uint64_t added_octets_ = 0;  // the line end end_of_chunks() added: in message_octets_, not in the limit
    std::uint64_t consumed_octets_ = 0;
    std::size_t line_octets_ = 0;
    std::size_t longest_line_ = 0;
};

}  // namespace mailnet
