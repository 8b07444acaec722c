// mailnet/line_reader.hpp: sans-I/O splitter of CRLF-terminated lines with a hard length
// limit (RFC 5321 4.5.3.1, RFC 2449 4). Bare CR and bare LF are data, never line ends.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mailnet {

/// Splits fed bytes into CRLF-terminated lines; an over-long line is skipped, never buffered.
class line_reader {
public:
    /// What next() found.
    enum class status {
        line,       ///< a complete line; text() holds it without its CRLF
        too_long,   ///< a line longer than the limit ended; its bytes were dropped
        need_more,  ///< no complete line is buffered
    };

    /// max_line_octets counts the CRLF, as RFC 2449 4 and RFC 5321 4.5.3.1 do.
    explicit line_reader(std::size_t max_line_octets) : max_(max_line_octets < 3 ? 3 : max_line_octets) {}

    /// Appends received bytes. Invalidates the text of the last line.
    void feed(std::string_view bytes);

    /// The next event; for status::line, text() is valid until the next feed().
    status next();

    /// The last line returned by next(), without CRLF.
    std::string_view text() const noexcept { return line_; }

    /// Octets buffered and not yet returned (what the transport's read-ahead limit counts).
    std::size_t buffered() const noexcept { return buf_.size() - pos_; }

    /// Octets of the line in progress: buffered, plus those already dropped from an over-long
    /// one (a transport's per-line time limit counts them, since they were received).
    std::size_t line_octets() const noexcept { return buffered() + dropped_; }

    /// After status::too_long: the first octets (at most head_octets) of the line that was
    /// dropped, so a caller can tell what it was (an SMTP BDAT announces a chunk that follows).
    std::string_view too_long_head() const noexcept { return head_; }
    static constexpr std::size_t head_octets = 16;

    /// Removes and returns the buffered bytes not yet returned (e.g. the start of DATA).
    std::string take_buffered();

    /// Drops everything buffered (after STARTTLS/STLS: RFC 3207 4.2, RFC 2595 4).
    void clear() noexcept;

    /// Changes the limit (SASL responses may be longer than commands).
    void set_limit(std::size_t max_line_octets) noexcept { max_ = max_line_octets < 3 ? 3 : max_line_octets; }

    /// The current limit, CRLF included.
    std::size_t limit() const noexcept { return max_; }

private:
    std::string buf_;
    std::size_t pos_ = 0;       // start of the unreturned bytes
    std::size_t scan_ = 0;      // where the CRLF search resumes
    bool discarding_ = false;   // inside an over-long line
    std::size_t dropped_ = 0;   // octets of it dropped so far
    std::string head_;          // the first octets of the last over-long line
    std::size_t max_;
    std::string_view line_;
};

}  // namespace mailnet
