// mailnet/store/message.hpp: the message handle. Octets as a stream (no whole copy for RETR, TOP
// or DATA), the header block on demand, and a lazily parsed mimetic::MimeEntity.
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "mailnet/error.hpp"

namespace mimetic { class MimeEntity; }

namespace mailnet {

/// Where a message's stored octets come from (a file, a string, a remote backend).
class message_source {
public:
    virtual ~message_source() = default;
    /// Reads up to buf.size() octets; 0 means the end.
    virtual result<std::size_t> read(std::span<char> buf) = 0;
    /// Starts reading again from the first octet.
    virtual result<void> rewind() = 0;
};

/// A source over a file descriptor it owns (closed on destruction); read with pread.
std::unique_ptr<message_source> file_source(int fd);

/// A source over shared immutable bytes (memory store, tests).
std::unique_ptr<message_source> string_source(std::shared_ptr<const std::string> bytes);

/// What message::mime() hands to mimetic at most. A linear pre-scan that follows mimetic's own
/// parse refuses a message over any of them (errc::too_large) before mimetic sees it: mimetic's
/// cost is quadratic in a header field's length, it recurses once per nesting level, and it
/// allocates about 840 octets per entity, 110 per header field and 270 per address item.
struct mime_limits {
    std::uint64_t max_octets = 64ull << 20;      ///< the whole message, as stored
    std::size_t max_field_octets = 64 * 1024;    ///< one header field, name and value, folded lines joined
    std::size_t max_header_octets = 4u << 20;    ///< the header blocks of the message and all its parts
    std::size_t max_fields = 10000;              ///< header fields of the message and all its parts
    std::size_t max_depth = 32;                  ///< nesting of multipart and message/rfc822 (the message is 0)
    std::size_t max_entities = 1000;             ///< the message and all its parts, nested ones included
    std::size_t max_address_items = 10000;       ///< comma-separated items of all address fields
};

/// One stored message: LF or CRLF line ends as stored, never dot-stuffed.
class message {
public:
    /// Wraps a source; `stored_octets` is its length as stored.
    message(std::unique_ptr<message_source> source, std::uint64_t stored_octets);
    message(message&&) noexcept;
    message& operator=(message&&) noexcept;
    ~message();

    /// Octets as stored.
    std::uint64_t stored_octets() const noexcept { return stored_octets_; }

    /// When the store took the message in, where it keeps that apart from the id (PostgreSQL:
    /// the body's `received`); none otherwise (a Maildir name carries its own time).
    std::optional<std::chrono::system_clock::time_point> received() const noexcept { return received_; }
    /// For stores: sets what received() answers.
    void set_received(std::chrono::system_clock::time_point t) noexcept { received_ = t; }

    /// Reads the next octets as stored; 0 at the end.
    result<std::size_t> read(std::span<char> buf);

    /// Starts reading again from the first octet.
    result<void> rewind();

    /// The header block up to and including the empty line that ends it (or the whole
    /// message if it has none), at most `max_octets`; errc::too_large beyond. Rewinds.
    result<std::string> headers(std::size_t max_octets = 256 * 1024);

    /// The message parsed by mimetic, on first call; errc::too_large over any of `limits` (checked
    /// by a linear pre-scan before mimetic runs), errc::bad_input if mimetic throws.
    /// Not for the RETR/TOP/DATA path: mimetic parses untrusted input and is slow.
    result<const mimetic::MimeEntity*> mime(const mime_limits& limits = {});
    /// mime() with the default limits but `max_octets`. A template, so that `mime({})` is the
    /// default limits (an integer parameter would take `{}` as a limit of 0 octets).
    template <std::integral T>
    result<const mimetic::MimeEntity*> mime(T max_octets) {
        mime_limits limits;
        limits.max_octets = static_cast<std::uint64_t>(max_octets);
        return mime(limits);
    }

private:
    std::unique_ptr<message_source> source_;
    std::uint64_t stored_octets_;
    std::optional<std::chrono::system_clock::time_point> received_;
    std::unique_ptr<mimetic::MimeEntity> mime_;
};

}  // namespace mailnet
