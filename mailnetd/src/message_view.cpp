// message_view.cpp: a stored message as mailnetd's HTTP API shows it: header fields (RFC 5322
// 2.2, 3.6), MIME structure and transfer encodings (RFC 2045, 2046), RFC 2047 words, RFC 2231
// parameters, charsets to UTF-8 (iconv), part numbers (RFC 3501 6.4.5) and links.
#include "mailnet/mailnetd/message_view.hpp"

#include "mailnet/transfer_encoding.hpp"

#include <iconv.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <string>
#include <unordered_set>

// NOTE: mimetic (0.9.8) is not used here, though libmailnet links it: each step it could do is
// wrong or unsafe on untrusted input, and each is short to do right. Its MimeEntity parser grows
// header name and value buffers 128 octets at a time with a full copy (quadratic in a long
// header line), recurses once per message/rfc822 level with no bound (a stack overflow needs no
// "multipart" token), allocates an entity per part (millions from one message of "--b" lines)
// and, over random-access iterators, matches a boundary anywhere in a line. Its Base64::Decoder
// reads one entry past its 124-entry table, so '|' decodes as 'A'. Its QP::Decoder takes blanks
// at a line's end plus the line break for a soft line break, joining the line to the next.
// Structure is therefore split here over string_views, with bounds, and both transfer
// encodings are decoded by libmailnet (mailnet/transfer_encoding.hpp), which mime()'s users share.

namespace mailnet::mailnetd {
namespace {

constexpr int max_depth = 32;                  // multipart levels; deeper is one leaf
constexpr std::size_t max_entities = 1000;     // entities visited per message
constexpr std::size_t max_links = 1000;
constexpr std::size_t max_url_octets = 8192;   // longer URLs are skipped
constexpr std::size_t max_charset_octets = 40; // longer names are unknown charsets
constexpr std::size_t max_word_octets = 4096;  // one RFC 2047 encoded word (75 by the RFC)
constexpr unsigned max_param_sections = 64;    // RFC 2231 continuations of one parameter
constexpr std::size_t max_fields = 1000;       // header fields kept per entity; more are skipped
constexpr std::size_t max_addresses = 1000;    // To and Cc addresses kept

// ---- characters and strings

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_wsp(char c) { return c == ' ' || c == '\t'; }

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool is_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out) c = lower(c);
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// ---- UTF-8

void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

constexpr std::string_view replacement = "\xEF\xBF\xBD";  // U+FFFD

// The length of the valid UTF-8 sequence at s[i], or 0 and in `bad` the octets of its maximal
// ill-formed prefix (each such prefix becomes one U+FFFD, as Unicode 3.9 recommends).
std::size_t utf8_sequence(std::string_view s, std::size_t i, std::size_t& bad) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) return 1;
    std::size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) n = 2;
    else if (b == 0xE0) n = 3, lo = 0xA0;
    else if (b >= 0xE1 && b <= 0xEC) n = 3;
    else if (b == 0xED) n = 3, hi = 0x9F;
    else if (b >= 0xEE && b <= 0xEF) n = 3;
    else if (b == 0xF0) n = 4, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3) n = 4;
    else if (b == 0xF4) n = 4, hi = 0x8F;
    else {
        bad = 1;
        return 0;
    }
    for (std::size_t k = 1; k < n; ++k) {
        if (i + k >= s.size()) {
            bad = k;
            return 0;
        }
        const auto c = static_cast<unsigned char>(s[i + k]);
        if (c < lo || c > hi) {
            bad = k;
            return 0;
        }
        lo = 0x80, hi = 0xBF;
    }
    return n;
}

void append_valid_utf8(std::string& out, std::string_view s) {
    std::size_t run = 0;  // start of the valid octets not yet appended
    for (std::size_t i = 0; i < s.size();) {
        std::size_t bad = 0;
        if (const auto n = utf8_sequence(s, i, bad)) {
            i += n;
        } else {
            out.append(s.data() + run, i - run);
            out += replacement;
            i += bad;
            run = i;
        }
    }
    out.append(s.data() + run, s.size() - run);
}

bool is_valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        std::size_t bad = 0;
        const auto n = utf8_sequence(s, i, bad);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

void append_latin1(std::string& out, std::string_view s) {
    for (char c : s) append_utf8(out, static_cast<unsigned char>(c));
}

// ---- charsets

// The charset label in a form iconv may see: lowercase, no quotes; "" when it is not a plain
// label (iconv_open reads "//" suffixes and more: a name from a message is never passed as is).
std::string charset_key(std::string_view name) {
    name = trim(name);
    if (name.size() >= 2 && name.front() == '"' && name.back() == '"') name = trim(name.substr(1, name.size() - 2));
    if (name.empty() || name.size() > max_charset_octets) return {};
    for (char c : name)
        if (!is_alnum(c) && c != '-' && c != '_' && c != '.' && c != ':' && c != '+') return {};
    return to_lower(name);
}

bool is_utf8_label(std::string_view key) { return key == "utf-8" || key == "utf8"; }

bool is_latin1_label(std::string_view key) {
    return key == "iso-8859-1" || key == "iso8859-1" || key == "iso_8859-1" || key == "latin1" ||
           key == "l1" || key == "iso-ir-100" || key == "cp819" || key == "ibm819";
}

// Unknown, absent or us-ascii: UTF-8 when the octets are valid UTF-8 (8-bit mail sent without a
// label is mostly UTF-8 today), otherwise ISO-8859-1 (every octet is a character there).
void append_unlabelled(std::string& out, std::string_view bytes) {
    if (is_valid_utf8(bytes)) out.append(bytes);
    else append_latin1(out, bytes);
}

// iconv from `key` to UTF-8; false if iconv does not know the charset. An invalid sequence
// becomes U+FFFD and conversion resumes at the next octet; an incomplete one at the end, one
// U+FFFD. Output is at most a few octets per input octet.
bool append_iconv(std::string& out, std::string_view bytes, const std::string& key) {
    iconv_t cd = ::iconv_open("UTF-8", key.c_str());
    if (cd == reinterpret_cast<iconv_t>(-1)) return false;
    std::string converted;
    char buf[4096];
    char* in = const_cast<char*>(bytes.data());  // iconv's signature; it does not write input
    std::size_t in_left = bytes.size();
    while (in_left > 0) {
        char* o = buf;
        std::size_t o_left = sizeof buf;
        const std::size_t r = ::iconv(cd, &in, &in_left, &o, &o_left);
        const int err = errno;
        converted.append(buf, static_cast<std::size_t>(o - buf));
        if (r != static_cast<std::size_t>(-1)) continue;
        if (err == E2BIG && o != buf) continue;
        converted += replacement;
        if (err == EILSEQ) {
            ++in;
            --in_left;
            ::iconv(cd, nullptr, nullptr, nullptr, nullptr);  // a stateful charset starts over
            continue;
        }
        break;  // EINVAL: incomplete at the end; anything else: stop
    }
    char* o = buf;
    std::size_t o_left = sizeof buf;
    if (::iconv(cd, nullptr, nullptr, &o, &o_left) != static_cast<std::size_t>(-1))
        converted.append(buf, static_cast<std::size_t>(o - buf));
    ::iconv_close(cd);
    append_valid_utf8(out, converted);  // iconv's output is UTF-8; checked, not trusted
    return true;
}

void append_charset(std::string& out, std::string_view bytes, std::string_view charset) {
    const std::string key = charset_key(charset);
    if (key.empty() || key == "us-ascii" || key == "ascii") return append_unlabelled(out, bytes);
    if (is_utf8_label(key)) return append_valid_utf8(out, bytes);
    if (is_latin1_label(key)) return append_latin1(out, bytes);
    if (!append_iconv(out, bytes, key)) append_unlabelled(out, bytes);
}

// CRLF and a lone CR become LF.
std::string lf_line_ends(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\r') {
            out += '\n';
            if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
        } else {
            out += s[i];
        }
    }
    return out;
}

// ---- transfer encodings (RFC 2045 6): libmailnet's mailnet/transfer_encoding.hpp

// ---- RFC 2047 encoded words

// Decodes an encoded word's text to octets; false if the encoding is not B or Q.
bool decode_word_text(char enc, std::string_view text, std::string& out) {
    if (enc == 'b' || enc == 'B') {
        base64_body_decode(text, out);
        return true;
    }
    if (enc != 'q' && enc != 'Q') return false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '_') {
            out += ' ';  // RFC 2047 4.2 (2)
        } else if (c == '=' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 && hex_value(text[i + 2]) >= 0) {
            out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
            i += 2;
        } else {
            out += c;
        }
    }
    return true;
}

struct encoded_word {
    std::string_view charset;  // without an RFC 2231 "*language" suffix
    char encoding = 0;
    std::string_view text;
    std::size_t length = 0;  // octets of "=?...?=" in the input
};

// Parses "=?charset?e?text?=" at s[0]. Each part stops at the next '?', so trying at every
// "=?" in a header stays linear.
bool parse_encoded_word(std::string_view s, encoded_word& w) {
    if (!s.starts_with("=?")) return false;
    const std::size_t limit = std::min(s.size(), max_word_octets);
    std::size_t q1 = 2;
    while (q1 < limit && s[q1] != '?' && !is_space(s[q1])) ++q1;
    if (q1 >= limit || s[q1] != '?' || q1 == 2) return false;
    if (q1 + 2 >= limit || s[q1 + 2] != '?') return false;
    const std::size_t text_start = q1 + 3;
    std::size_t q3 = text_start;
    while (q3 < limit && s[q3] != '?' && !is_space(s[q3])) ++q3;
    if (q3 + 1 >= limit || s[q3] != '?' || s[q3 + 1] != '=') return false;
    w.charset = s.substr(2, q1 - 2);
    if (const auto star = w.charset.find('*'); star != std::string_view::npos) w.charset = w.charset.substr(0, star);
    w.encoding = s[q1 + 1];
    w.text = s.substr(text_start, q3 - text_start);
    w.length = q3 + 2;
    return w.encoding == 'b' || w.encoding == 'B' || w.encoding == 'q' || w.encoding == 'Q';
}

// Header text (unfolded) to UTF-8: encoded words decoded (RFC 2047 6.2), the white space
// between two adjacent ones dropped, adjacent words of one charset converted together (a
// character may be split between them); other octets as UTF-8, invalid ones U+FFFD. Control
// characters a word may decode to (CR, LF, NUL...) become spaces.
std::string decode_header_text(std::string_view s) {
    std::string out;
    std::string pending_charset, pending;
    auto flush = [&] {
        if (!pending.empty()) append_charset(out, pending, pending_charset);
        pending.clear();
        pending_charset.clear();
    };
    bool after_word = false;
    std::size_t literal_start = 0, i = 0;
    while (i < s.size()) {
        const auto p = s.find("=?", i);
        if (p == std::string_view::npos) break;
        encoded_word w;
        if (!parse_encoded_word(s.substr(p), w)) {
            i = p + 2;
            continue;
        }
        const auto literal = s.substr(literal_start, p - literal_start);
        const bool only_space = std::all_of(literal.begin(), literal.end(), is_space);
        if (!(after_word && only_space)) {
            flush();
            append_valid_utf8(out, literal);
        }
        const std::string key = charset_key(w.charset);
        if (key != pending_charset) flush();
        pending_charset = key;
        decode_word_text(w.encoding, w.text, pending);
        after_word = true;
        i = literal_start = p + w.length;
    }
    flush();
    append_valid_utf8(out, s.substr(literal_start));
    for (auto& c : out)
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t') c = ' ';
    return out;
}

// ---- header fields (RFC 5322 2.2)

struct field {
    std::string_view name;
    std::string value;  // unfolded (CRLF removed, RFC 5322 2.2.3), trimmed, not decoded
};

struct header_block {
    std::vector<field> fields;
    std::string_view body;
};

// A field name is printable US-ASCII except ':' (RFC 5322 2.2); white space before the colon
// is tolerated (obsolete syntax, RFC 5322 4.5).
bool field_name(std::string_view line, std::string_view& name, std::string_view& value) {
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return false;
    auto n = line.substr(0, colon);
    while (!n.empty() && is_wsp(n.back())) n.remove_suffix(1);
    if (n.empty()) return false;
    for (char c : n)
        if (static_cast<unsigned char>(c) < 33 || static_cast<unsigned char>(c) > 126) return false;
    name = n;
    value = line.substr(colon + 1);
    return true;
}

// Splits at the first empty line (LF or CRLF line ends). A line that is neither a field nor a
// continuation is skipped (with its continuations), as are fields past max_fields. If a body
// part's first line is no field at all, the part has no header and all of it is body (a MIME
// part without its empty line); at the top such a line (an mbox "From " line) is skipped.
header_block parse_header_lines(std::string_view s, bool top) {
    header_block h;
    std::size_t pos = 0;
    bool first = true, skipping = false;
    while (pos < s.size()) {
        auto eol = s.find('\n', pos);
        const std::size_t next = eol == std::string_view::npos ? s.size() : eol + 1;
        auto line = s.substr(pos, (eol == std::string_view::npos ? s.size() : eol) - pos);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) {
            h.body = s.substr(next);
            return h;
        }
        std::string_view name, value;
        if (is_wsp(line.front())) {
            if (!h.fields.empty() && !skipping) h.fields.back().value.append(line);
        } else if (field_name(line, name, value) && h.fields.size() < max_fields) {
            h.fields.push_back(field{name, std::string(value)});
            skipping = false;
        } else if (first && !top) {
            h.body = s;
            return h;
        } else {
            skipping = true;
        }
        first = false;
        pos = next;
    }
    h.body = s.substr(s.size());
    return h;
}

header_block parse_header_block(std::string_view s, bool top) {
    header_block h = parse_header_lines(s, top);
    for (auto& f : h.fields) f.value = std::string(trim(f.value));
    return h;
}

const field* find_field(const std::vector<field>& fields, std::string_view name) {
    for (const auto& f : fields)
        if (iequals(f.name, name)) return &f;
    return nullptr;
}

// ---- structured values: content type, disposition, parameters (RFC 2045 5.1, RFC 2231)

struct parameter {
    std::string name;  // lowercase, with any RFC 2231 "*n" / "*" suffix
    std::string value; // quotes and escapes removed
};

struct media_type {
    std::string type, subtype;  // lowercase
    std::vector<parameter> params;
};

// Skips white space and RFC 5322 comments (nested, with quoted pairs) from s[i].
void skip_cfws(std::string_view s, std::size_t& i) {
    while (i < s.size()) {
        if (is_space(s[i])) {
            ++i;
        } else if (s[i] == '(') {
            int depth = 0;
            for (; i < s.size(); ++i) {
                if (s[i] == '\\') ++i;
                else if (s[i] == '(') ++depth;
                else if (s[i] == ')' && --depth == 0) break;
            }
            i = std::min(i + 1, s.size());
        } else {
            break;
        }
    }
}

// A token or quoted string at s[i] (RFC 2045 5.1); stops at `stops`, white space or a comment.
std::string read_value(std::string_view s, std::size_t& i, std::string_view stops) {
    std::string out;
    if (i < s.size() && s[i] == '"') {
        for (++i; i < s.size() && s[i] != '"'; ++i) {
            if (s[i] == '\\' && i + 1 < s.size()) ++i;
            out += s[i];
        }
        if (i < s.size()) ++i;
        return out;
    }
    while (i < s.size() && !is_space(s[i]) && s[i] != '(' && stops.find(s[i]) == std::string_view::npos) out += s[i++];
    return out;
}

std::vector<parameter> parse_params(std::string_view s, std::size_t i) {
    std::vector<parameter> out;
    while (i < s.size()) {
        if (s[i] != ';') {  // junk between parameters: skip to the next ';'
            const auto semi = s.find(';', i);
            if (semi == std::string_view::npos) break;
            i = semi;
        }
        ++i;
        skip_cfws(s, i);
        std::string name = to_lower(read_value(s, i, ";="));
        skip_cfws(s, i);
        if (i >= s.size() || s[i] != '=') continue;
        ++i;
        skip_cfws(s, i);
        std::string value = read_value(s, i, ";");
        skip_cfws(s, i);
        if (!name.empty()) out.push_back(parameter{std::move(name), std::move(value)});
    }
    return out;
}

const parameter* find_param(const std::vector<parameter>& ps, std::string_view name) {
    for (const auto& p : ps)
        if (p.name == name) return &p;
    return nullptr;
}

std::string percent_decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
            out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            i += 2;
        } else {
            out += s[i];
        }
    }
    return out;
}

// A parameter's value in UTF-8: RFC 2231 (name*=charset'lang'%XX, name*0*=, name*1=...) first,
// else the plain one with RFC 2047 words decoded (as many mailers write file names).
std::string param_value(const std::vector<parameter>& ps, std::string_view name) {
    const std::string base(name);
    std::string charset, octets;
    bool found = false;
    auto extended = [&](std::string_view v, bool first) {
        if (first) {
            const auto q1 = v.find('\'');
            const auto q2 = q1 == std::string_view::npos ? q1 : v.find('\'', q1 + 1);
            if (q2 != std::string_view::npos) {
                charset = std::string(v.substr(0, q1));
                v = v.substr(q2 + 1);
            }
        }
        octets += percent_decode(v);
    };
    if (const auto* p = find_param(ps, base + "*")) {
        extended(p->value, true);
        found = true;
    } else {
        for (unsigned n = 0; n < max_param_sections; ++n) {
            const std::string section = base + "*" + std::to_string(n);
            if (const auto* e = find_param(ps, section + "*")) {
                extended(e->value, n == 0);
            } else if (const auto* p = find_param(ps, section)) {
                octets += p->value;
            } else {
                break;
            }
            found = true;
        }
    }
    if (found) {
        std::string out;
        append_charset(out, octets, charset);
        return out;
    }
    if (const auto* p = find_param(ps, base)) return decode_header_text(p->value);
    return {};
}

// "type/subtype; params"; an invalid or absent type gives the default (RFC 2045 5.2).
media_type parse_media_type(const field* f, std::string_view default_type) {
    media_type m;
    if (f) {
        const std::string_view s = f->value;
        std::size_t i = 0;
        skip_cfws(s, i);
        std::string type = to_lower(read_value(s, i, ";/"));
        skip_cfws(s, i);
        if (i < s.size() && s[i] == '/') {
            ++i;
            skip_cfws(s, i);
            std::string subtype = to_lower(read_value(s, i, ";"));
            if (!type.empty() && !subtype.empty()) {
                m.type = std::move(type);
                m.subtype = std::move(subtype);
                m.params = parse_params(s, i);
            }
        }
    }
    if (m.type.empty()) {
        const auto slash = default_type.find('/');
        m.type = default_type.substr(0, slash);
        m.subtype = default_type.substr(slash + 1);
        m.params.clear();
    }
    return m;
}

// ---- entities and MIME structure (RFC 2046 5.1)

struct entity {
    media_type type;
    std::string cte;          // lowercase mechanism, "" for none
    std::string disposition;  // lowercase, "" for none
    std::vector<parameter> disposition_params;
    std::string_view body;
    std::string boundary;     // non-empty only for a usable multipart
};

entity make_entity(const header_block& h, std::string_view default_type) {
    entity e;
    e.type = parse_media_type(find_field(h.fields, "Content-Type"), default_type);
    if (const auto* f = find_field(h.fields, "Content-Transfer-Encoding")) {
        std::size_t i = 0;
        skip_cfws(f->value, i);
        e.cte = to_lower(read_value(f->value, i, ";"));
    }
    if (const auto* f = find_field(h.fields, "Content-Disposition")) {
        std::size_t i = 0;
        skip_cfws(f->value, i);
        e.disposition = to_lower(read_value(f->value, i, ";"));
        e.disposition_params = parse_params(f->value, i);
    }
    e.body = h.body;
    if (e.type.type == "multipart") {
        const auto* b = find_param(e.type.params, "boundary");
        // RFC 2046 5.1.1: 1 to 70 characters. A multipart without one cannot be split: as an
        // invalid Content-Type it is text/plain (RFC 2045 5.2), so its text is still shown.
        if (b && !b->value.empty() && b->value.size() <= 200) e.boundary = b->value;
        else e.type = media_type{"text", "plain", {}};
    }
    return e;
}

bool is_multipart(const entity& e) { return !e.boundary.empty(); }

// The body parts of a multipart, at most `max` of them. A delimiter line is "--boundary" (or
// "--boundary--" to close) followed only by white space (RFC 2046 5.1.1); the line break before
// it belongs to it. An unterminated multipart's last part runs to the end. One pass.
std::vector<std::string_view> split_multipart(std::string_view body, std::string_view boundary, std::size_t max) {
    std::vector<std::string_view> parts;
    const std::string delimiter = "--" + std::string(boundary);
    bool in_part = false;
    std::size_t part_start = 0, pos = 0;
    while (pos < body.size() && parts.size() < max) {
        const auto eol = body.find('\n', pos);
        const std::size_t line_end = eol == std::string_view::npos ? body.size() : eol;
        const std::size_t next = eol == std::string_view::npos ? body.size() : eol + 1;
        const auto line = body.substr(pos, line_end - pos);
        if (line.starts_with(delimiter)) {
            auto rest = line.substr(delimiter.size());
            const bool closing = rest.starts_with("--");
            if (closing) rest.remove_prefix(2);
            if (std::all_of(rest.begin(), rest.end(), is_space)) {
                if (in_part) {
                    std::size_t end = pos;
                    if (end > part_start && body[end - 1] == '\n') --end;
                    if (end > part_start && body[end - 1] == '\r') --end;
                    parts.push_back(body.substr(part_start, end - part_start));
                }
                if (closing) return parts;
                in_part = true;
                part_start = next;
            }
        }
        pos = next;
    }
    if (in_part && parts.size() < max) parts.push_back(body.substr(part_start));
    return parts;
}

entity child_entity(const entity& parent, std::string_view octets) {
    // RFC 2046 5.1.5: in a digest, a part without Content-Type is message/rfc822.
    const std::string_view def = parent.type.subtype == "digest" ? "message/rfc822" : "text/plain";
    return make_entity(parse_header_block(octets, false), def);
}

// Calls leaf(entity, part number) for each leaf in order; multiparts deeper than max_depth are
// leaves, and the walk stops after max_entities entities.
template <class Leaf>
void walk(const entity& e, const std::string& number, int depth, std::size_t& budget, Leaf& leaf) {
    if (budget == 0) return;
    --budget;
    if (!is_multipart(e) || depth >= max_depth) {
        leaf(e, number.empty() ? std::string("1") : number);
        return;
    }
    const auto parts = split_multipart(e.body, e.boundary, budget);
    for (std::size_t i = 0; i < parts.size() && budget > 0; ++i) {
        const std::string n = (number.empty() ? "" : number + ".") + std::to_string(i + 1);
        walk(child_entity(e, parts[i]), n, depth + 1, budget, leaf);
    }
}

// ---- addresses (RFC 5322 3.4)

// The addr-spec of each mailbox in an address list, groups included: a display name (quoted
// or not, with commas inside quotes) and comments are dropped, an angle-addr's source route
// too; a bare word without '@' outside angle brackets is not taken for an address.
void append_addresses(std::string_view s, std::vector<std::string>& out) {
    std::string plain, angle;
    bool have_angle = false, broken = false;
    auto finish = [&] {
        if (out.size() >= max_addresses) return;
        if (broken) return;  // an unterminated quoted string: nothing here is an address
        std::string a = have_angle ? angle : plain;
        if (have_angle && !a.empty() && a.front() == '@') {  // obs-route "@a,@b:"
            const auto colon = a.find(':');
            a = colon == std::string::npos ? std::string() : a.substr(colon + 1);
        }
        std::string compact;
        for (char c : a)
            if (!is_space(c)) compact += c;
        if (!compact.empty() && (have_angle || compact.find('@') != std::string::npos)) out.push_back(std::move(compact));
        plain.clear();
        angle.clear();
        have_angle = false;
    };
    for (std::size_t i = 0; i < s.size();) {
        const char c = s[i];
        if (c == '"') {
            const std::size_t start = i;
            for (++i; i < s.size() && s[i] != '"'; ++i)
                if (s[i] == '\\') ++i;
            if (i >= s.size()) broken = true;
            i = std::min(i + 1, s.size());
            plain.append(s.substr(start, i - start));
        } else if (c == '(') {
            skip_cfws(s, i);
        } else if (c == '<') {
            const std::size_t start = ++i;
            while (i < s.size() && s[i] != '>') {
                if (s[i] == '"') {
                    for (++i; i < s.size() && s[i] != '"'; ++i)
                        if (s[i] == '\\') ++i;
                }
                if (i < s.size()) ++i;
            }
            if (!have_angle) angle = std::string(s.substr(start, std::min(i, s.size()) - start));
            have_angle = true;
            i = std::min(i + 1, s.size());
        } else if (c == ':') {  // a group's display name ends (RFC 5322 3.4 group)
            plain.clear();
            ++i;
        } else if (c == ',' || c == ';') {
            finish();
            ++i;
        } else {
            plain += c;
            ++i;
        }
    }
    finish();
}

// ---- links

struct link_list {
    std::vector<std::string>& links;
    std::unordered_set<std::string> seen;

    void add(std::string url) {
        if (links.size() >= max_links || url.size() > max_url_octets) return;
        if (seen.insert(url).second) links.push_back(std::move(url));
    }
};

// "http://x" or "https://x" with something after the scheme's "//".
bool is_http_url(std::string_view s) {
    std::size_t n = istarts_with(s, "http://") ? 7 : istarts_with(s, "https://") ? 8 : 0;
    return n != 0 && s.size() > n && s[n] != '/';
}

bool url_char(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u != 0x7F && c != '<' && c != '>' && c != '"' && c != '`' && c != '{' && c != '}' &&
           c != '|' && c != '\\' && c != '^';
}

// Drops what ends a sentence rather than the URL: . , ; : ! ? ' * and a ')' or ']' with no
// opening one inside the URL.
// Linear: the brackets are counted once, then as they are dropped.
std::string_view trim_url(std::string_view u) {
    auto paren_open = std::count(u.begin(), u.end(), '('), paren_close = std::count(u.begin(), u.end(), ')');
    auto square_open = std::count(u.begin(), u.end(), '['), square_close = std::count(u.begin(), u.end(), ']');
    for (;;) {
        if (u.empty()) return u;
        const char c = u.back();
        if (std::string_view(".,;:!?'*").find(c) != std::string_view::npos) {
            u.remove_suffix(1);
            continue;
        }
        if (c == ')' && paren_open < paren_close) {
            --paren_close;
            u.remove_suffix(1);
            continue;
        }
        if (c == ']' && square_open < square_close) {
            --square_close;
            u.remove_suffix(1);
            continue;
        }
        return u;
    }
}

// Bare http(s) URLs in text, in order.
void text_links(std::string_view s, link_list& out) {
    for (std::size_t i = 0; i + 7 < s.size();) {
        const char c = s[i];
        if ((c != 'h' && c != 'H') || (i > 0 && is_alnum(s[i - 1])) || !is_http_url(s.substr(i, 9))) {
            ++i;
            continue;
        }
        std::size_t end = i;
        while (end < s.size() && url_char(s[end])) ++end;
        if (end - i > max_url_octets) {  // skipped, and trim_url stays linear
            i = end;
            continue;
        }
        const auto url = trim_url(s.substr(i, end - i));
        if (is_http_url(url)) out.add(std::string(url));
        i = end;
    }
}

// HTML character references (the few a URL or its text uses; unknown ones stay as written).
std::string decode_entities(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '&') {
            out += s[i];
            continue;
        }
        // Looked for in the next 10 octets only (the longest reference here): linear in s.
        const auto near = s.substr(i, 11).find(';');
        const auto semi = near == std::string_view::npos ? near : i + near;
        if (semi == std::string_view::npos || semi - i > 10) {
            out += '&';
            continue;
        }
        const auto name = s.substr(i + 1, semi - i - 1);
        static constexpr std::pair<std::string_view, char> named[] = {
            {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
        bool done = false;
        for (const auto& [n, ch] : named)
            if (iequals(name, n)) {
                out += ch;
                done = true;
            }
        if (!done && name.size() >= 2 && name[0] == '#') {
            const bool hex = name[1] == 'x' || name[1] == 'X';
            const auto digits = name.substr(hex ? 2 : 1);
            char32_t cp = 0;
            bool ok = !digits.empty() && digits.size() <= 7;
            for (char d : digits) {
                const int v = hex ? hex_value(d) : (d >= '0' && d <= '9' ? d - '0' : -1);
                if (v < 0) ok = false;
                else cp = cp * (hex ? 16 : 10) + static_cast<char32_t>(v);
            }
            if (ok) {
                if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) out += replacement;
                else append_utf8(out, cp);
                done = true;
            }
        }
        if (done) i = semi;
        else out += '&';
    }
    return out;
}

// Finds `lower_needle` case-insensitively from s[from].
std::size_t ifind(std::string_view s, std::string_view lower_needle, std::size_t from) {
    const auto it = std::search(s.begin() + static_cast<std::ptrdiff_t>(std::min(from, s.size())), s.end(),
                                lower_needle.begin(), lower_needle.end(),
                                [](char a, char b) { return lower(a) == b; });
    return it == s.end() ? std::string_view::npos : static_cast<std::size_t>(it - s.begin());
}

// URLs in HTML in document order: href and src attribute values (character references
// decoded) and bare URLs in the text between tags; comments, script and style are skipped.
void html_links(std::string_view s, link_list& out) {
    std::size_t i = 0;
    while (i < s.size()) {
        auto lt = s.find('<', i);
        while (lt != std::string_view::npos && lt + 1 < s.size() && !is_alnum(s[lt + 1]) && s[lt + 1] != '/' &&
               s[lt + 1] != '!')
            lt = s.find('<', lt + 1);
        text_links(decode_entities(s.substr(i, (lt == std::string_view::npos ? s.size() : lt) - i)), out);
        if (lt == std::string_view::npos || lt + 1 >= s.size()) return;
        if (s.substr(lt).starts_with("<!--")) {
            const auto end = s.find("-->", lt + 4);
            i = end == std::string_view::npos ? s.size() : end + 3;
            continue;
        }
        std::size_t j = lt + 1;
        const std::size_t name_start = j;
        while (j < s.size() && !is_space(s[j]) && s[j] != '>' && (s[j] != '/' || j == name_start)) ++j;
        const auto tag = s.substr(name_start, j - name_start);
        while (j < s.size() && s[j] != '>') {
            if (is_space(s[j]) || s[j] == '/') {
                ++j;
                continue;
            }
            const std::size_t attr_start = j;
            while (j < s.size() && !is_space(s[j]) && s[j] != '=' && s[j] != '>') ++j;
            const auto attr = s.substr(attr_start, j - attr_start);
            std::size_t k = j;
            while (k < s.size() && is_space(s[k])) ++k;
            if (k >= s.size() || s[k] != '=') continue;
            j = k + 1;
            while (j < s.size() && is_space(s[j])) ++j;
            std::string_view value;
            if (j < s.size() && (s[j] == '"' || s[j] == '\'')) {
                const auto close = s.find(s[j], j + 1);
                const std::size_t end = close == std::string_view::npos ? s.size() : close;
                value = s.substr(j + 1, end - j - 1);
                j = std::min(end + 1, s.size());
            } else {
                const std::size_t start = j;
                while (j < s.size() && !is_space(s[j]) && s[j] != '>') ++j;
                value = s.substr(start, j - start);
            }
            if ((iequals(attr, "href") || iequals(attr, "src")) && value.size() <= max_url_octets) {
                const std::string url(trim(decode_entities(value)));
                if (is_http_url(url)) out.add(url);
            }
        }
        i = std::min(j + 1, s.size());
        if (iequals(tag, "script") || iequals(tag, "style")) {
            const auto end = ifind(s, iequals(tag, "script") ? "</script" : "</style", i);
            i = end == std::string_view::npos ? s.size() : end;
        }
    }
}

// ---- the pieces of a view

std::string filename_of(const entity& e) {
    std::string name = param_value(e.disposition_params, "filename");
    if (name.empty()) name = param_value(e.type.params, "name");
    for (auto& c : name)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = ' ';
    return name;
}

std::string text_of(const entity& e) {
    const auto octets = transfer_decode(e.body, e.cte);
    std::string utf8;
    const auto* cs = find_param(e.type.params, "charset");
    append_charset(utf8, octets, cs ? std::string_view(cs->value) : std::string_view());
    return lf_line_ends(utf8);
}

message_head head_of(const std::vector<field>& fields) {
    message_head h;
    if (const auto* f = find_field(fields, "Return-Path")) {
        const std::string_view v = f->value;
        const auto open = v.find('<');
        const auto close = open == std::string_view::npos ? open : v.find('>', open);
        std::string rp(close == std::string_view::npos ? trim(v) : v.substr(open + 1, close - open - 1));
        append_valid_utf8(h.return_path, trim(rp));
    }
    if (const auto* f = find_field(fields, "From")) h.from = decode_header_text(f->value);
    if (const auto* f = find_field(fields, "Subject")) h.subject = decode_header_text(f->value);
    std::vector<std::string> all;
    for (const auto name : {"To", "Cc"})
        for (const auto& f : fields)
            if (iequals(f.name, name)) append_addresses(f.value, all);
    std::unordered_set<std::string> seen;
    for (auto& a : all) {
        std::string utf8;
        append_valid_utf8(utf8, a);
        if (seen.insert(to_lower(utf8)).second) h.to.push_back(std::move(utf8));
    }
    return h;
}

// "1.2.3" to numbers; empty if not a part number (no zero, no leading zero, at most max_depth
// numbers, each at most max_entities).
std::vector<std::size_t> parse_part_number(std::string_view part) {
    std::vector<std::size_t> out;
    if (part.empty()) return out;
    std::size_t i = 0;
    while (true) {
        std::size_t n = 0, digits = 0;
        while (i < part.size() && part[i] >= '0' && part[i] <= '9') {
            if (digits == 0 && part[i] == '0') return {};
            n = n * 10 + static_cast<std::size_t>(part[i] - '0');
            if (++digits > 4 || n > max_entities) return {};
            ++i;
        }
        if (digits == 0 || out.size() >= static_cast<std::size_t>(max_depth)) return {};
        out.push_back(n);
        if (i == part.size()) return out;
        if (part[i] != '.') return {};
        ++i;
    }
}

}  // namespace

message_head read_head(std::string_view octets) { return head_of(parse_header_block(octets, true).fields); }

message_view read_message(std::string_view octets) {
    message_view v;
    const auto h = parse_header_block(octets, true);
    v.head = head_of(h.fields);
    v.headers.reserve(h.fields.size());
    for (const auto& f : h.fields) {
        std::string name;
        append_valid_utf8(name, f.name);
        v.headers.emplace_back(std::move(name), decode_header_text(trim(f.value)));
    }
    bool have_text = false, have_html = false;
    auto leaf = [&](const entity& e, const std::string& number) {
        const bool attachment = e.disposition == "attachment";
        if (!attachment && e.type.type == "text") {
            if (e.type.subtype == "plain" && !have_text) {
                v.text = text_of(e);
                have_text = true;
                return;
            }
            if (e.type.subtype == "html" && !have_html) {
                v.html = text_of(e);
                have_html = true;
                return;
            }
        }
        v.attachments.push_back(attachment_info{number, filename_of(e), e.type.type + "/" + e.type.subtype,
                                                transfer_decoded_size(e.body, e.cte)});
    };
    std::size_t budget = max_entities;
    walk(make_entity(h, "text/plain"), "", 0, budget, leaf);
    link_list links{v.links, {}};
    text_links(v.text, links);
    html_links(v.html, links);
    return v;
}

std::optional<part_content> read_part(std::string_view octets, std::string_view part) {
    const auto path = parse_part_number(part);
    if (path.empty()) return std::nullopt;
    entity e = make_entity(parse_header_block(octets, true), "text/plain");
    if (!is_multipart(e)) {
        // RFC 3501 6.4.5: the body of a non-multipart message is part 1.
        if (path.size() != 1 || path[0] != 1) return std::nullopt;
    } else {
        for (std::size_t level = 0; level < path.size(); ++level) {
            if (!is_multipart(e) || level >= static_cast<std::size_t>(max_depth)) return std::nullopt;
            const auto parts = split_multipart(e.body, e.boundary, path[level]);
            if (parts.size() < path[level]) return std::nullopt;
            e = child_entity(e, parts[path[level] - 1]);
        }
    }
    part_content out;
    out.content_type = e.type.type + "/" + e.type.subtype;
    if (const auto* cs = find_param(e.type.params, "charset"); cs && e.type.type == "text") {
        const std::string key = charset_key(cs->value);
        if (!key.empty()) out.content_type += "; charset=" + key;
    }
    out.filename = filename_of(e);
    out.octets = transfer_decode(e.body, e.cte);
    return out;
}

}  // namespace mailnet::mailnetd
