// message_view_fuzz.cpp: untrusted octets through mailnetd's message view: read_head,
// read_message and read_part (RFC 5322 fields, RFC 2045/2046 MIME, RFC 2047, RFC 2231), with the
// promises of message_view.hpp checked: UTF-8 out, LF line ends, bounded lists, parts that exist.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mailnet/mailnetd/message_view.hpp"

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

bool valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        const auto b = static_cast<unsigned char>(s[i]);
        std::size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        if (n == 0 || i + n > s.size()) return false;
        char32_t cp = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
        for (std::size_t k = 1; k < n; ++k) {
            const auto c = static_cast<unsigned char>(s[i + k]);
            if ((c >> 6) != 2) return false;
            cp = (cp << 6) | (c & 0x3F);
        }
        constexpr char32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n;
    }
    return true;
}

bool is_http(std::string_view s) {
    auto lower = [](std::string_view t) {
        std::string o(t);
        for (auto& c : o) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
        return o;
    };
    return lower(s.substr(0, 7)) == "http://" || lower(s.substr(0, 8)) == "https://";
}

void check_head(const mailnet::mailnetd::message_head& h) {
    check(valid_utf8(h.return_path) && valid_utf8(h.from) && valid_utf8(h.subject));
    check(h.to.size() <= 1000);
    for (const auto& a : h.to) check(!a.empty() && valid_utf8(a));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace mailnet::mailnetd;
    const std::string_view in(reinterpret_cast<const char*>(data), size);

    const auto v = read_message(in);
    check_head(v.head);
    const auto h = read_head(in);
    check(h.return_path == v.head.return_path && h.from == v.head.from && h.to == v.head.to &&
          h.subject == v.head.subject);
    check(v.headers.size() <= 1000);
    for (const auto& [name, value] : v.headers) check(!name.empty() && valid_utf8(name) && valid_utf8(value));
    check(valid_utf8(v.text) && valid_utf8(v.html));
    check(v.text.find('\r') == std::string::npos && v.html.find('\r') == std::string::npos);
    check(v.attachments.size() <= 1000 && v.links.size() <= 1000);
    for (const auto& l : v.links) check(is_http(l) && valid_utf8(l) && l.size() <= 8192);
    for (const auto& a : v.attachments) {
        check(valid_utf8(a.filename) && a.content_type.find('/') != std::string::npos);
        const auto p = read_part(in, a.part);
        check(p.has_value());  // every listed part can be fetched, decoded to the size listed
        check(p->octets.size() == a.size && p->filename == a.filename);
        check(p->content_type.starts_with(a.content_type));
    }
    for (std::string_view part : {"", "0", "1", "2", "1.1", "1.2.1", "3.1", "1000", "1001", "1.", "x"}) {
        const auto p = read_part(in, part);
        if (p) check(valid_utf8(p->filename) && !p->content_type.empty());
    }

    // The same message with CRLF line ends has the same head, header fields and parts.
    if (in.find('\r') == std::string_view::npos && size < 2048) {
        std::string wire;
        for (char c : in) {
            if (c == '\n') wire += '\r';
            wire += c;
        }
        const auto w = read_message(wire);
        check(w.head.to == v.head.to && w.head.subject == v.head.subject && w.head.from == v.head.from);
        check(w.headers == v.headers);
        check(w.attachments.size() == v.attachments.size());
        for (std::size_t i = 0; i < w.attachments.size(); ++i)
            check(w.attachments[i].part == v.attachments[i].part &&
                  w.attachments[i].content_type == v.attachments[i].content_type);
    }
    return 0;
}
