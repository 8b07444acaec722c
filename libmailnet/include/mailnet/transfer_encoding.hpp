// mailnet/transfer_encoding.hpp: MIME body decoding for untrusted mail, base64 (RFC 2045 6.8)
// and quoted-printable (RFC 2045 6.7); use these, not mimetic's codecs, on a mime() tree.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mailnet {

/// Appends the octets of base64 text to `out`: octets outside the alphabet are skipped (RFC 2045
/// 6.8), '=' ends a quantum (so concatenated encodings decode), a lone sextet at the end is
/// dropped. Linear; appends at most 3/4 of `text.size()` octets.
void base64_body_decode(std::string_view text, std::string& out);

/// Appends the octets of quoted-printable text to `out`: "=XX" (either case) is an octet, '=' at a
/// line's end a soft line break, blanks at a line's end are deleted (RFC 2045 6.7 rule 3), other
/// line breaks (LF or CRLF) become LF; an '=' that starts no escape stays as written. Linear;
/// appends at most `text.size()` octets.
void quoted_printable_decode(std::string_view text, std::string& out);

/// `body` decoded by its Content-Transfer-Encoding mechanism (RFC 2045 6.1, case-insensitive):
/// base64 and quoted-printable as above, anything else (7bit, 8bit, binary, unknown) as is.
/// `mechanism` may be the field's whole value: comments and white space around the token, a
/// quoted form and anything after a ';' are allowed (`base64 (comment)`, `"base64"`).
std::string transfer_decode(std::string_view body, std::string_view mechanism);

/// The size transfer_decode() would return, without building it.
std::uint64_t transfer_decoded_size(std::string_view body, std::string_view mechanism);

}  // namespace mailnet
