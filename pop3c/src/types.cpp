// types.cpp: the client's error category, failure text, capabilities and the seed's index words.
#include "mailnet/pop3c/types.hpp"

#include <charconv>

namespace mailnet::pop3c {
namespace {

class pop3c_category final : public std::error_category {
public:
    const char* name() const noexcept override { return "pop3c"; }
    std::string message(int e) const override {
        switch (static_cast<errc>(e)) {
        case errc::server_error: return "the server refused";
        case errc::protocol_error: return "the server broke the POP3 protocol";
        case errc::closed: return "the server closed the connection";
        case errc::no_such_message: return "no such message";
        case errc::bad_index: return "not a message number or message_index word";
        case errc::tls_unavailable: return "the server cannot secure the connection (STLS)";
        case errc::plaintext_refused: return "a cleartext password over an unencrypted connection is not allowed";
        case errc::no_mechanism: return "no login method that both sides allow";
        case errc::stopped: return "stopped by the handler";
        case errc::not_connected: return "not connected";
        case errc::mailbox_refused: return "the server would not open the mailbox after the login";
        }
        return "unknown pop3c error";
    }
};

}  // namespace

const std::error_category& category() noexcept {
    static const pop3c_category c;
    return c;
}

namespace {

// The server's words for a terminal: a control octet (an escape sequence, a bell) as \xNN;
// 8-bit octets stay (UTF-8 text).
void append_printable(std::string& out, std::string_view text) {
    static constexpr char hex[] = "0123456789abcdef";
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7f) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += ch;
        }
    }
}

}  // namespace

std::string failure::message() const {
    std::string m = error == make_error_code(errc::server_error) || error == make_error_code(errc::mailbox_refused)
                        ? std::string("server")
                        : error.message();
    if (!code.empty() || !text.empty()) m += ":";
    if (!code.empty()) {
        m += " [";
        append_printable(m, code);
        m += "]";
    }
    if (!text.empty()) {
        m += " ";
        append_printable(m, text);
    }
    return m;
}

const std::vector<std::string>& capabilities::args(std::string_view name) const {
    static const std::vector<std::string> none;
    const auto it = items.find(name);
    return it == items.end() ? none : it->second;
}

outcome<message_index> message_index::parse(std::string_view text) {
    if (text == "start") return message_index(word::start);
    if (text == "next") return message_index(word::next);
    if (text == "end") return message_index(word::end);
    if (text == "last") return message_index(word::last);
    std::uint32_t n = 0;
    const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (text.empty() || ec != std::errc() || p != text.data() + text.size() || n == 0)
        return failure{make_error_code(errc::bad_index), "not a message number or start|next|end|last: " + std::string(text.substr(0, 40)), {}};
    return message_index(n);
}

outcome<range> resolve(message_index start, std::optional<message_index> end, std::uint32_t count,
                       const std::function<outcome<std::uint32_t>()>& last_read) {
    std::optional<std::uint32_t> last_cache;
    auto last = [&]() -> outcome<std::uint32_t> {
        if (!last_cache) {
            auto l = last_read();
            if (!l) return l;
            last_cache = std::min(*l, count);
        }
        return *last_cache;
    };
    auto out_of_range = [&](std::uint32_t n) {
        return failure{make_error_code(errc::no_such_message),
                       "message " + std::to_string(n) + " does not exist (the mailbox has " + std::to_string(count) +
                           ")",
                       {}};
    };
    range r;
    switch (start.w) {
    case message_index::word::number:
        if (start.n < 1 || start.n > count) return out_of_range(start.n);
        r.first = start.n;
        break;
    case message_index::word::start: r.first = 1; break;
    case message_index::word::end: r.first = count; break;
    case message_index::word::next: {
        auto l = last();
        if (!l) return l.why();
        r.first = *l + 1;
        break;
    }
    case message_index::word::last:
        return failure{make_error_code(errc::bad_index), "last is an end message_index (start takes a number, start, next or end)", {}};
    }
    if (!end) {
        // start alone: one message, or none when `next` is past the end.
        r.last = start.w == message_index::word::next ? std::min(r.first, count) : r.first;
        if (count == 0) r = range{1, 0};
        return r;
    }
    switch (end->w) {
    case message_index::word::number:
        if (end->n < 1 || end->n > count) return out_of_range(end->n);
        r.last = end->n;
        break;
    case message_index::word::end: r.last = count; break;
    case message_index::word::last: {
        auto l = last();
        if (!l) return l.why();
        r.last = *l;
        break;
    }
    case message_index::word::start: r.last = 1; break;
    case message_index::word::next:
        return failure{make_error_code(errc::bad_index), "next is a start message_index (end takes a number, end or last)", {}};
    }
    if (count == 0) r = range{1, 0};
    return r;
}

}  // namespace mailnet::pop3c
