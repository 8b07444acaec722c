// core.cpp: the POP3 client's sans-I/O core (see core.hpp).
#include "mailnet/pop3c/core.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

namespace mailnet::pop3c {
namespace {

bool iequals_prefix(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        char c = s[i];
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
        if (c != prefix[i]) return false;
    }
    return true;
}

// RFC 2449 8: resp-code = "[" resp-level *("/" resp-level) "]", resp-level = 1*rchar,
// rchar = %x21-2E / %x30-5C / %x5E-7F.
bool valid_code(std::string_view code) {
    if (code.empty() || code.front() == '/' || code.back() == '/') return false;
    for (std::size_t i = 0; i < code.size(); ++i) {
        const auto c = static_cast<unsigned char>(code[i]);
        if (c < 0x21 || c > 0x7E || c == ']') return false;
        if (c == '/' && code[i - 1] == '/') return false;
    }
    return true;
}

// RFC 1939 7: the greeting's timestamp is a msg-id, "<" ... "@" ... ">".
std::string apop_timestamp(std::string_view text) {
    const auto open = text.find('<');
    if (open == std::string_view::npos) return {};
    const auto close = text.find('>', open);
    if (close == std::string_view::npos || close - open > 256) return {};
    const auto ts = text.substr(open, close - open + 1);
    if (ts.find('@') == std::string_view::npos) return {};
    for (const char ch : ts) {
        const auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c >= 0x7F) return {};
    }
    return std::string(ts);
}

}  // namespace

bool parse_response(std::string_view line, response& r) {
    std::size_t skip = 0;
    if (iequals_prefix(line, "+OK")) {
        r.ok = true;
        skip = 3;
    } else if (iequals_prefix(line, "-ERR")) {
        r.ok = false;
        skip = 4;
    } else {
        return false;
    }
    // "+OKAY" is not "+OK": the indicator ends the line or is followed by a space.
    if (line.size() > skip && line[skip] != ' ') return false;
    std::string_view text = line.substr(std::min(line.size(), skip + 1));
    r.code.clear();
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close != std::string_view::npos && valid_code(text.substr(1, close - 1))) {
            r.code.assign(text.substr(1, close - 1));
            text.remove_prefix(close + 1);
            if (!text.empty() && text.front() == ' ') text.remove_prefix(1);
        }
    }
    r.text.assign(text);
    return true;
}

core::core(core_options options) : options_(options) {
    options_.window = std::clamp<std::size_t>(options_.window, 1, max_window);
    if (options_.max_line_octets < 3) options_.max_line_octets = 3;
}

std::uint64_t core::submit(command c) {
    const std::uint64_t seq = next_seq_++;
    queued_.push_back(pending{seq, std::move(c)});
    return seq;
}

void core::respond(std::string_view line) {
    out_.append(line);
    out_.append(options_.send_bare_lf ? "\n" : "\r\n");
}

std::string core::take_output() {
    // Octets that arrived while nothing was asked are no answer to what is sent now: taking
    // them for one would shift every later reply (an extra +OK becoming QUIT's answer).
    if (drained_ && !broken() && in_flight_.empty() && !queued_.empty() && pos_ < in_.size())
        fail("the server sent octets no command asked for: " + describe(std::string_view(in_).substr(pos_)));
    // Nothing before the greeting; nothing after STLS or AUTH until they are answered (the
    // connection changes, or the SASL exchange owns it); STLS and AUTH themselves go alone.
    // NOTE: with commands in flight, the window is refilled only once half of it is answered:
    // one write (one system call, one segment) for many commands instead of one per answer,
    // while half a window still keeps the server busy (1,000 pipelined RETRs: 63 writes, not 970).
    if (!in_flight_.empty() && options_.window > 1 && in_flight_.size() > options_.window / 2) return std::exchange(out_, {});
    while (greeted_ && !broken() && !queued_.empty() && in_flight_.size() < options_.window) {
        const pending& next = queued_.front();
        const bool exclusive = next.cmd.starts_tls || next.cmd.kind == answer::sasl;
        if (!in_flight_.empty()) {
            const pending& last = in_flight_.back();
            if (exclusive || last.cmd.starts_tls || last.cmd.kind == answer::sasl) break;
        }
        out_.append(next.cmd.line);
        out_.append(options_.send_bare_lf ? "\n" : "\r\n");
        drained_ = false;
        in_flight_.push_back(std::move(queued_.front()));
        in_flight_.back().cmd.line.clear();
        in_flight_.back().cmd.line.shrink_to_fit();
        queued_.pop_front();
    }
    return std::exchange(out_, {});
}

void core::feed(std::string_view octets) {
    // Views handed out before are invalid now: drop what was parsed.
    if (pos_ > 0) {
        in_.erase(0, pos_);
        scan_ -= std::min(scan_, pos_);
        pos_ = 0;
    }
    in_.append(octets);
}

void core::tls_started() {
    in_.clear();
    pos_ = 0;
    scan_ = 0;
}

std::string core::describe(std::string_view octets) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (const char ch : octets.substr(0, 60)) {
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 0x20 && c < 0x7F && c != '\\') {
            out.push_back(ch);
        } else {
            out += "\\x";
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    if (octets.size() > 60) out += "...";
    return out;
}

event core::fail(std::string what) {
    if (failure_.empty()) failure_ = std::move(what);
    return ev::failed{failure_};
}

bool core::next_line(std::string_view& line) {
    const char* base = in_.data();
    const std::size_t size = in_.size();
    if (scan_ < pos_) scan_ = pos_;
    const void* lf = scan_ < size ? std::memchr(base + scan_, '\n', size - scan_) : nullptr;
    if (lf == nullptr) {
        scan_ = size;
        if (size - pos_ >= options_.max_line_octets)
            fail("a line from the server is longer than " + std::to_string(options_.max_line_octets) + " octets");
        return false;
    }
    const auto at = static_cast<std::size_t>(static_cast<const char*>(lf) - base);
    std::size_t stop = at;
    if (stop > pos_ && base[stop - 1] == '\r') {
        --stop;
    } else if (!greeted_) {
        // A greeting that ends in a bare LF comes from a server that uses bare LF: its message
        // data is read with bare LF line ends too (the MS Exchange quirk; the seed hung on
        // it). A later status line with a bare LF ends there, but changes nothing else: a body
        // holding "\n.\n" from a CRLF server must not end early.
        options_.lf_line_ends = true;
    }
    if (at + 1 - pos_ > options_.max_line_octets) {
        fail("a line from the server is longer than " + std::to_string(options_.max_line_octets) + " octets");
        return false;
    }
    line = std::string_view(base + pos_, stop - pos_);
    pos_ = at + 1;
    scan_ = pos_;
    return true;
}

event core::on_status_line(std::string_view line) {
    response r;
    if (!greeted_) {
        if (!parse_response(line, r)) return fail("the server's greeting is not a POP3 greeting: " + describe(line));
        greeted_ = true;
        std::string ts = r.ok ? apop_timestamp(r.text) : std::string();
        return ev::greeting{std::move(r), std::move(ts)};
    }
    if (in_flight_.empty()) return fail("the server sent a line no command asked for: " + describe(line));
    pending& p = in_flight_.front();
    if (p.cmd.kind == answer::sasl && (line == "+" || (line.size() >= 2 && line[0] == '+' && line[1] == ' '))) {
        // RFC 5034 4: "+" SP base64 (an empty challenge may come as "+" alone).
        return ev::challenge{p.seq, line.size() > 2 ? line.substr(2) : std::string_view()};
    }
    if (!parse_response(line, r)) return fail("the server's answer is neither +OK nor -ERR: " + describe(line));
    const std::uint64_t seq = p.seq;
    if (r.ok && p.cmd.kind == answer::lines) {
        phase_ = phase::lines;
    } else if (r.ok && p.cmd.kind == answer::message) {
        phase_ = phase::message;
        dot_decoder_options o;
        o.bare = options_.lf_line_ends ? bare_line_end_policy::lf_line_end : bare_line_end_policy::keep;
        o.line_ends = options_.data_line_ends;
        decoder_ = dot_decoder(o);
    } else {
        const bool tls = p.cmd.starts_tls && r.ok;
        in_flight_.pop_front();
        drained_ = in_flight_.empty() && queued_.empty();
        // RFC 2595 4 / DESIGN "Rules": octets after STLS's +OK would be read as if protected
        // by TLS (response injection); the connection is failed instead.
        if (tls && pos_ < in_.size())
            return fail("the server sent octets after its STLS +OK: " + describe(std::string_view(in_).substr(pos_)));
    }
    return ev::reply{seq, std::move(r)};
}

event core::next() {
    if (broken()) return ev::failed{failure_};
    switch (phase_) {
    case phase::status: {
        std::string_view line;
        if (!next_line(line)) return broken() ? event(ev::failed{failure_}) : event(ev::need_input{});
        return on_status_line(line);
    }
    case phase::lines: {
        std::string_view line;
        if (!next_line(line)) return broken() ? event(ev::failed{failure_}) : event(ev::need_input{});
        const std::uint64_t seq = in_flight_.front().seq;
        if (line == ".") {
            in_flight_.pop_front();
            drained_ = in_flight_.empty() && queued_.empty();
            phase_ = phase::status;
            return ev::end{seq, 0};
        }
        if (!line.empty() && line.front() == '.') line.remove_prefix(1);  // RFC 1939 3: byte-stuffed
        return ev::line{seq, line};
    }
    case phase::message: {
        chunk_.clear();
        const std::uint64_t seq = in_flight_.front().seq;
        if (!decoder_.finished()) {
            if (pos_ == in_.size()) return ev::need_input{};
            pos_ += decoder_.decode(std::string_view(in_).substr(pos_), chunk_);
            scan_ = pos_;
            if (!chunk_.empty()) return ev::data{seq, chunk_};
            if (!decoder_.finished()) return ev::need_input{};
        }
        in_flight_.pop_front();
        drained_ = in_flight_.empty() && queued_.empty();
        phase_ = phase::status;
        return ev::end{seq, decoder_.message_octets()};
    }
    }
    return fail("unreachable");
}

}  // namespace mailnet::pop3c
