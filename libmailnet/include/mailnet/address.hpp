// mailnet/address.hpp: SMTP paths as MAIL FROM and RCPT TO carry them (RFC 5321 4.1.2: Path,
// Mailbox, Local-part, Domain, address-literal, esmtp-param; RFC 6531 SMTPUTF8), parsed once
// into data. Nothing of an address is ever evaluated. No Asio here.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "mailnet/error.hpp"

namespace mailnet {

/// One RFC 5321 Mailbox, or the null reverse-path "<>".
struct mailbox_address {
    std::string local;         ///< the local part as it means: a Quoted-string without its quotes and escapes
    std::string domain;        ///< a Domain as written, or an address literal with its brackets ("[192.0.2.1]")
    std::string original;      ///< exactly as sent between the angle brackets, source route left out; empty for "<>"
    bool quoted_local = false; ///< the local part was a Quoted-string
    bool utf8 = false;         ///< it holds octets above 0x7F (only accepted with SMTPUTF8, RFC 6531)

    /// True for the null reverse-path "<>" (bounces; RFC 5321 4.5.5).
    bool is_null() const noexcept { return original.empty(); }
    /// local@domain, the local part quoted again only where RFC 5321 needs it.
    std::string address() const;
};

/// One MAIL/RCPT parameter (RFC 5321 4.1.2 esmtp-param): the keyword upper-cased.
struct path_parameter {
    std::string keyword;  ///< "SIZE", "BODY", "SMTPUTF8", "AUTH", ...
    std::string value;    ///< empty when the parameter has none
    bool has_value = false;
};

/// A parsed MAIL FROM or RCPT TO argument.
struct smtp_path {
    mailbox_address mailbox;
    std::vector<path_parameter> parameters;  ///< in the order sent; keywords unique
};

/// What parse_path() accepts.
struct path_options {
    bool allow_null = false;   ///< "<>": MAIL FROM only
    bool allow_utf8 = false;   ///< UTF-8 in the local part and domain (the client sent SMTPUTF8, RFC 6531 3.3)
    bool allow_postmaster = false;  ///< RCPT TO:<Postmaster> without a domain (RFC 5321 4.1.1.3)
};

/// Parses what follows "MAIL FROM:" or "RCPT TO:": `<path> [SP esmtp-param ...]`. Spaces before
/// the `<` are tolerated (many clients send them); a source route (`<@a,@b:user@c>`) is
/// accepted and dropped (RFC 5321 4.1.1.3, C.). Limits as written: local part 64 octets,
/// domain 255 (labels 63), path 256 with its brackets (RFC 5321 4.5.3.1). Control octets are
/// refused anywhere. errc::bad_input otherwise, with the reason in `why`.
result<smtp_path> parse_path(std::string_view argument, const path_options& options, std::string* why = nullptr);

/// An address as smtpd names its recipient (mailbox_address::address(): quotes and escapes
/// only where RFC 5321 needs them, so `"bob"@example.org` is `bob@example.org`), for a name
/// written by a person (a login, a users file's entry); a name that is no address, as it is.
std::string canonical_address(std::string_view name);

}  // namespace mailnet
