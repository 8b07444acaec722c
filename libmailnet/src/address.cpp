// address.cpp: SMTP paths (RFC 5321 4.1.2 Path, Mailbox, Local-part, Domain, address-literal
// 4.1.3, esmtp-param; 4.1.1.3 source routes; 4.5.3.1 sizes; RFC 6531 3.3 SMTPUTF8), parsed by
// hand as a recursive descent over the octets: data in, data out.
#include "mailnet/address.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace mailnet {
namespace {

constexpr std::size_t npos = std::string_view::npos;
constexpr std::size_t max_local_octets = 64;    // RFC 5321 4.5.3.1.1
constexpr std::size_t max_domain_octets = 255;  // RFC 5321 4.5.3.1.2
constexpr std::size_t max_path_octets = 256;    // RFC 5321 4.5.3.1.3

bool alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool high(unsigned char c) { return c >= 0x80; }

// RFC 5322 atext; RFC 6531 adds UTF8-non-ascii.
bool atext(unsigned char c, bool utf8) {
    return alpha(c) || digit(c) || std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr || (utf8 && high(c));
}

// Well-formed UTF-8 (RFC 3629 4): no overlong forms, no surrogates, at most U+10FFFF.
bool valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        std::size_t n = 0;
        unsigned min = 0;
        if (c < 0x80) { ++i; continue; }
        if (c >= 0xC2 && c <= 0xDF) { n = 1; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { n = 2; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { n = 3; min = 0x10000; }
        else return false;
        if (i + n >= s.size()) return false;
        unsigned cp = c & (0x3F >> n);
        for (std::size_t k = 1; k <= n; ++k) {
            const auto d = static_cast<unsigned char>(s[i + k]);
            if ((d & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (d & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n + 1;
    }
    return true;
}

// Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str] (RFC 6531: or a U-label,
// here any UTF-8 where a letter may stand). Returns the end, or npos.
std::size_t parse_domain(std::string_view s, std::size_t i, bool utf8) {
    for (;;) {
        const std::size_t start = i;
        while (i < s.size()) {
            const auto c = static_cast<unsigned char>(s[i]);
            if (alpha(c) || digit(c) || c == '-' || (utf8 && high(c))) ++i;
            else break;
        }
        if (i == start || s[start] == '-' || s[i - 1] == '-') return npos;  // Let-dig at both ends
        if (i - start > 63) return npos;  // RFC 1035 2.3.4: a label is at most 63 octets
        if (i < s.size() && s[i] == '.') {
            ++i;
            continue;
        }
        return i;
    }
}

// address-literal = "[" ( IPv4 / "IPv6:" IPv6 / Standardized-tag ":" 1*dcontent ) "]" (4.1.3).
std::size_t parse_address_literal(std::string_view s, std::size_t i) {
    if (i >= s.size() || s[i] != '[') return npos;
    const std::size_t close = s.find(']', i);
    if (close == npos) return npos;
    const std::string inner(s.substr(i + 1, close - i - 1));
    unsigned char buf[16];
    // Only what an IP address can hold reaches inet_pton (a NUL would end its string early).
    const auto ip_chars = [](std::string_view x) {
        return std::all_of(x.begin(), x.end(), [](char c) {
            return digit(static_cast<unsigned char>(c)) || c == '.' || c == ':' || (c >= 'a' && c <= 'f') ||
                   (c >= 'A' && c <= 'F');
        });
    };
    if (inner.find(':') == std::string::npos) {
        // inet_pton accepts exactly four decimal parts of 0-255 (no leading-zero octal).
        return ip_chars(inner) && ::inet_pton(AF_INET, inner.c_str(), buf) == 1 ? close + 1 : npos;
    }
    const auto colon = inner.find(':');
    const std::string tag = inner.substr(0, colon), rest = inner.substr(colon + 1);
    // The tag in any case (RFC 5234 2.3: "IPv6:" is a case-insensitive string).
    if (tag.size() == 4 && (tag[0] == 'I' || tag[0] == 'i') && (tag[1] == 'P' || tag[1] == 'p') &&
        (tag[2] == 'v' || tag[2] == 'V') && tag[3] == '6')
        return ip_chars(rest) && ::inet_pton(AF_INET6, rest.c_str(), buf) == 1 ? close + 1 : npos;
    // General-address-literal: a tag (Ldh-str) and dcontent (%d33-90 / %d94-126).
    if (tag.empty() || parse_domain(tag, 0, false) != tag.size() || tag.find('.') != std::string::npos) return npos;
    if (rest.empty()) return npos;
    for (unsigned char c : rest)
        if (c < 33 || c > 126 || c == '[' || c == '\\' || c == ']') return npos;
    return close + 1;
}

// Dot-string = Atom *("." Atom); Atom = 1*atext.
std::size_t parse_dot_string(std::string_view s, std::size_t i, bool utf8, std::string& local) {
    const std::size_t start = i;
    for (;;) {
        const std::size_t atom = i;
        while (i < s.size() && atext(static_cast<unsigned char>(s[i]), utf8)) ++i;
        if (i == atom) return npos;
        if (i < s.size() && s[i] == '.') {
            ++i;
            continue;
        }
        local.assign(s.substr(start, i - start));
        return i;
    }
}

// Quoted-string = DQUOTE *(qtextSMTP / quoted-pairSMTP) DQUOTE; the value keeps no quotes or
// backslashes.
std::size_t parse_quoted(std::string_view s, std::size_t i, bool utf8, std::string& local) {
    if (i >= s.size() || s[i] != '"') return npos;
    ++i;
    local.clear();
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c == '"') return i + 1;
        if (c == '\\') {
            if (i + 1 >= s.size()) return npos;
            const auto q = static_cast<unsigned char>(s[i + 1]);
            if (q < 32 || q > 126) return npos;  // quoted-pairSMTP = %d92 %d32-126
            local += static_cast<char>(q);
            i += 2;
            continue;
        }
        if ((c >= 32 && c <= 126) || (utf8 && high(c))) {  // qtextSMTP: %d32-33 / %d35-91 / %d93-126
            local += static_cast<char>(c);
            ++i;
            continue;
        }
        return npos;
    }
    return npos;
}

result<smtp_path> fail(std::string* why, const char* reason) {
    if (why) *why = reason;
    return unexpected(errc::bad_input);
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

}  // namespace

std::string mailbox_address::address() const {
    if (is_null()) return {};
    std::string out;
    std::string dot;
    const bool plain = !local.empty() && parse_dot_string(local, 0, true, dot) == local.size();
    if (plain) {
        out = local;
    } else {
        out = "\"";
        for (char c : local) {
            if (c == '"' || c == '\\') out += '\\';
            out += c;
        }
        out += '"';
    }
    if (!domain.empty()) (out += '@') += domain;
    return out;
}

result<smtp_path> parse_path(std::string_view s, const path_options& options, std::string* why) {
    // Control octets (NUL, CR, LF, ...) are in no production: refused before anything else.
    if (std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 32 || c == 127; }))
        return fail(why, "control octets in an address");
    const bool eight_bit = std::any_of(s.begin(), s.end(), [](char c) { return high(static_cast<unsigned char>(c)); });
    if (eight_bit && !options.allow_utf8) return fail(why, "8-bit octets in an address need SMTPUTF8 (RFC 6531)");
    if (eight_bit && !valid_utf8(s)) return fail(why, "the address is not valid UTF-8");
    std::size_t i = 0;
    while (i < s.size() && s[i] == ' ') ++i;  // "MAIL FROM: <a@b>": a common client's extra space
    smtp_path out;
    if (s.compare(i, 2, "<>") == 0) {
        if (!options.allow_null) return fail(why, "the null path <> is a sender only");
        i += 2;
    } else {
        if (i >= s.size() || s[i] != '<') return fail(why, "the address must be in angle brackets");
        const std::size_t open = ++i;
        // A-d-l ":" (a source route): parsed, then ignored (RFC 5321 4.1.1.3).
        if (i < s.size() && s[i] == '@') {
            for (;;) {
                if (i >= s.size() || s[i] != '@') return fail(why, "malformed source route");
                const std::size_t end = parse_domain(s, i + 1, options.allow_utf8);
                if (end == npos) return fail(why, "malformed source route");
                i = end;
                if (i < s.size() && s[i] == ',') {
                    ++i;
                    continue;
                }
                if (i < s.size() && s[i] == ':') {
                    ++i;
                    break;
                }
                return fail(why, "malformed source route");
            }
        }
        const std::size_t mailbox_start = i;
        auto& m = out.mailbox;
        const bool utf8 = options.allow_utf8;
        std::size_t end = npos;
        if (i < s.size() && s[i] == '"') {
            end = parse_quoted(s, i, utf8, m.local);
            m.quoted_local = true;
        } else {
            end = parse_dot_string(s, i, utf8, m.local);
        }
        if (end != npos && end < s.size() && s[end] == '>' && options.allow_postmaster && !m.quoted_local &&
            iequals(m.local, "postmaster")) {
            i = end;  // RCPT TO:<Postmaster>, no domain (RFC 5321 4.1.1.3)
        } else {
            if (end == npos || end >= s.size() || s[end] != '@') return fail(why, "malformed local part");
            i = end + 1;
            const std::size_t domain_start = i;
            end = i < s.size() && s[i] == '[' ? parse_address_literal(s, i) : parse_domain(s, i, utf8);
            if (end == npos) return fail(why, "malformed domain");
            m.domain.assign(s.substr(domain_start, end - domain_start));
            i = end;
        }
        if (i >= s.size() || s[i] != '>') return fail(why, "the address must end with >");
        m.original.assign(s.substr(mailbox_start, i - mailbox_start));
        ++i;
        // Sizes as written (quotes and brackets count: RFC 5321 4.5.3.1).
        const std::size_t at = m.domain.empty() ? m.original.size() : m.original.size() - m.domain.size() - 1;
        if (at > max_local_octets) return fail(why, "local part longer than 64 octets");
        if (m.domain.size() > max_domain_octets) return fail(why, "domain longer than 255 octets");
        if (i - open + 1 > max_path_octets) return fail(why, "path longer than 256 octets");
        m.utf8 = std::any_of(m.original.begin(), m.original.end(), [](char c) { return high(static_cast<unsigned char>(c)); });
        if (m.utf8 && !valid_utf8(m.original)) return fail(why, "the address is not valid UTF-8");
    }
    // *(SP esmtp-param); esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"),
    // esmtp-value = 1*(%d33-60 / %d62-126) (RFC 6531: and UTF-8).
    while (i < s.size()) {
        if (s[i] != ' ') return fail(why, "garbage after the address");
        while (i < s.size() && s[i] == ' ') ++i;
        if (i >= s.size()) break;
        const std::size_t key = i;
        if (!alpha(static_cast<unsigned char>(s[i])) && !digit(static_cast<unsigned char>(s[i])))
            return fail(why, "malformed parameter");
        while (i < s.size() && (alpha(static_cast<unsigned char>(s[i])) || digit(static_cast<unsigned char>(s[i])) || s[i] == '-'))
            ++i;
        path_parameter p;
        p.keyword.assign(s.substr(key, i - key));
        for (auto& c : p.keyword) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (i < s.size() && s[i] == '=') {
            const std::size_t value = ++i;
            while (i < s.size()) {
                const auto c = static_cast<unsigned char>(s[i]);
                if ((c >= 33 && c <= 126 && c != '=') || (options.allow_utf8 && high(c))) ++i;
                else break;
            }
            if (i == value) return fail(why, "malformed parameter");
            p.value.assign(s.substr(value, i - value));
            p.has_value = true;
            if (!valid_utf8(p.value)) return fail(why, "a parameter is not valid UTF-8");
        }
        if (i < s.size() && s[i] != ' ') return fail(why, "malformed parameter");
        if (std::any_of(out.parameters.begin(), out.parameters.end(),
                        [&](const path_parameter& q) { return q.keyword == p.keyword; }))
            return fail(why, "a parameter given twice");
        out.parameters.push_back(std::move(p));
    }
    return out;
}

std::string canonical_address(std::string_view name) {
    // Only quotes and escapes change: a source route, parameters or anything after the
    // address leave the name as it is (none of them is a spelling of the same address).
    auto path = parse_path("<" + std::string(name) + ">", path_options{false, true, false});
    if (!path || path->mailbox.is_null() || !path->parameters.empty() || path->mailbox.original != name)
        return std::string(name);
    return path->mailbox.address();
}

}  // namespace mailnet
