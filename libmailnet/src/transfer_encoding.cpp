// transfer_encoding.cpp: base64 (RFC 2045 6.8) and quoted-printable (RFC 2045 6.7) body
// decoding, lenient as readers must be, over string_views (never past their end).
#include "mailnet/transfer_encoding.hpp"

namespace mailnet {
namespace {

bool is_wsp(char c) { return c == ' ' || c == '\t'; }

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

template <class Put>
void base64_each(std::string_view in, Put&& put) {
    unsigned acc = 0;
    int n = 0;
    auto flush = [&] {
        if (n == 2) put(static_cast<char>(acc >> 4));
        if (n == 3) {
            put(static_cast<char>(acc >> 10));
            put(static_cast<char>((acc >> 2) & 0xFF));
        }
        acc = 0;
        n = 0;
    };
    for (char ch : in) {
        int v;
        if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
        else if (ch == '+') v = 62;
        else if (ch == '/') v = 63;
        else {
            if (ch == '=') flush();
            continue;
        }
        acc = (acc << 6) | static_cast<unsigned>(v);
        if (++n == 4) {
            put(static_cast<char>(acc >> 16));
            put(static_cast<char>((acc >> 8) & 0xFF));
            put(static_cast<char>(acc & 0xFF));
            acc = 0;
            n = 0;
        }
    }
    flush();
}

template <class Put>
void qp_each(std::string_view in, Put&& put) {
    std::size_t pos = 0;
    while (pos < in.size()) {
        const auto eol = in.find('\n', pos);
        const bool has_eol = eol != std::string_view::npos;
        auto line = in.substr(pos, (has_eol ? eol : in.size()) - pos);
        pos = has_eol ? eol + 1 : in.size();
        while (!line.empty() && (is_wsp(line.back()) || line.back() == '\r')) line.remove_suffix(1);
        const bool soft = !line.empty() && line.back() == '=';
        if (soft) line.remove_suffix(1);
        for (std::size_t i = 0; i < line.size(); ++i) {
            if (line[i] == '=' && i + 2 < line.size() && hex_value(line[i + 1]) >= 0 && hex_value(line[i + 2]) >= 0) {
                put(static_cast<char>(hex_value(line[i + 1]) * 16 + hex_value(line[i + 2])));
                i += 2;
            } else {
                put(line[i]);
            }
        }
        if (has_eol && !soft) put('\n');
    }
}

bool iequals(std::string_view a, std::string_view lower) {
    if (a.size() != lower.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const char c = (a[i] >= 'A' && a[i] <= 'Z') ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
        if (c != lower[i]) return false;
    }
    return true;
}

// The mechanism named by a Content-Transfer-Encoding value (RFC 2045 6.1, with RFC 5322's
// CFWS around it): white space, line breaks and comments (nested, with quoted pairs) skipped, a
// quoted form read without its quotes, and whatever follows the token (";", a comment) left
// out. A bare token, as mailnetd passes it, comes back as is.
std::string_view mechanism_token(std::string_view v) {
    std::size_t i = 0;
    const auto skip_cfws = [&] {
        while (i < v.size()) {
            const char c = v[i];
            if (is_wsp(c) || c == '\r' || c == '\n') {
                ++i;
            } else if (c == '(') {
                int depth = 0;
                for (; i < v.size(); ++i) {
                    if (v[i] == '\\') ++i;
                    else if (v[i] == '(') ++depth;
                    else if (v[i] == ')' && --depth == 0) break;
                }
                if (i < v.size()) ++i;
            } else {
                return;
            }
        }
    };
    skip_cfws();
    if (i < v.size() && v[i] == '"') {
        const std::size_t start = ++i;
        while (i < v.size() && v[i] != '"') ++i;
        std::string_view q = v.substr(start, i - start);
        while (!q.empty() && is_wsp(q.front())) q.remove_prefix(1);
        while (!q.empty() && is_wsp(q.back())) q.remove_suffix(1);
        return q;
    }
    const std::size_t start = i;
    while (i < v.size() && !is_wsp(v[i]) && v[i] != '\r' && v[i] != '\n' && v[i] != '(' && v[i] != ';' && v[i] != '"') ++i;
    return v.substr(start, i - start);
}

}  // namespace

// NOTE: no reserve() in the appending functions: callers append many short words to one string,
// and an exact reserve each time would make that quadratic.
void base64_body_decode(std::string_view text, std::string& out) {
    base64_each(text, [&](char c) { out += c; });
}

void quoted_printable_decode(std::string_view text, std::string& out) {
    qp_each(text, [&](char c) { out += c; });
}

std::string transfer_decode(std::string_view body, std::string_view mechanism) {
    const auto m = mechanism_token(mechanism);
    std::string out;
    if (iequals(m, "base64")) {
        out.reserve(body.size() / 4 * 3);
        base64_body_decode(body, out);
    } else if (iequals(m, "quoted-printable")) {
        out.reserve(body.size());
        quoted_printable_decode(body, out);
    } else {
        out.assign(body);  // 7bit, 8bit, binary, or unknown: as is (RFC 2045 6.4)
    }
    return out;
}

std::uint64_t transfer_decoded_size(std::string_view body, std::string_view mechanism) {
    const auto m = mechanism_token(mechanism);
    std::uint64_t n = 0;
    if (iequals(m, "base64")) base64_each(body, [&](char) { ++n; });
    else if (iequals(m, "quoted-printable")) qp_each(body, [&](char) { ++n; });
    else n = body.size();
    return n;
}

}  // namespace mailnet
