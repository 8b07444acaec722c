// mailnet/mailnetd/message_view.hpp: what mailnetd's HTTP API and web view show of a stored
// message (DESIGN.md "mailnetd's HTTP API and web view"): the summary fields, the headers, the
// text and HTML parts decoded to UTF-8, the attachments and the links, and one decoded MIME part.
// Pure functions over octets: no store, no socket. The input is untrusted: every entry point is
// fuzzed (fuzz/message_view_fuzz.cpp) and bounded; MIME is split and decoded here, not by
// mimetic (message_view.cpp says why; docs/mailnetd.md says what is decoded how).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailnet::mailnetd {

/// The fields of a summary that come from the message itself (the index adds id, mailbox,
/// received time and size). Read from the header block only: cheap enough for every delivery.
struct message_head {
    std::string return_path;          ///< the envelope sender from the Return-Path: smtpd prepends ("" for <>)
    std::string from;                 ///< the From header's address(es) as text, RFC 2047 decoded to UTF-8
    std::vector<std::string> to;      ///< the To and Cc addresses (addr-spec only, in order, no repeats)
    std::string subject;              ///< RFC 2047 decoded to UTF-8; invalid bytes replaced by U+FFFD
};

/// One attachment: a leaf part that is not the message's text or HTML body.
struct attachment_info {
    std::string part;          ///< MIME part number, "1.2" style (RFC 3501 section numbering)
    std::string filename;      ///< from Content-Disposition or Content-Type name (RFC 2231/2047 decoded); may be ""
    std::string content_type;  ///< "type/subtype", lowercase
    std::uint64_t size = 0;    ///< decoded octets
};

/// Everything GET /api/v1/messages/{id} shows beyond the summary.
struct message_view {
    message_head head;
    std::vector<std::pair<std::string, std::string>> headers;  ///< in order; values unfolded, RFC 2047 decoded
    std::string text;    ///< the first text/plain body part, decoded (transfer encoding, charset) to UTF-8, LF line ends
    std::string html;    ///< the first text/html body part, likewise
    std::vector<attachment_info> attachments;
    std::vector<std::string> links;  ///< http(s) URLs in text then HTML, in order, without repeats
};

/// One decoded MIME part (GET /api/v1/messages/{id}/parts/{part}).
struct part_content {
    std::string content_type;  ///< "type/subtype" as the part declares it (lowercase), charset kept as a parameter
    std::string filename;
    std::string octets;        ///< transfer encoding removed; charset untouched
};

/// The summary fields from a header block (or a whole message: reading stops at the empty line).
message_head read_head(std::string_view octets);

/// The whole view of a message held in memory (LF or CRLF line ends).
message_view read_message(std::string_view octets);

/// One part by its number ("1", "1.2"; "" or "0" is not a part); nullopt if there is none.
std::optional<part_content> read_part(std::string_view octets, std::string_view part);

}  // namespace mailnet::mailnetd
