// message_view_stub.cpp: NOTE: a stand-in for message_view.cpp (branch mime) until it is
// merged: the raw header fields, no RFC 2047 decoding, no MIME. Deleted at that merge.
#include "mailnet/mailnetd/message_view.hpp"

#include <algorithm>

namespace mailnet::mailnetd {
namespace {

std::vector<std::pair<std::string, std::string>> header_fields(std::string_view m) {
    std::vector<std::pair<std::string, std::string>> out;
    std::size_t at = 0;
    while (at < m.size()) {
        std::size_t end = m.find('\n', at);
        if (end == std::string_view::npos) end = m.size();
        std::string_view line = m.substr(at, end - at);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        at = end + 1;
        if (line.empty()) break;
        if ((line[0] == ' ' || line[0] == '\t') && !out.empty()) {
            out.back().second += " ";
            out.back().second += line.substr(line.find_first_not_of(" \t"));
            continue;
        }
        const auto colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        std::string_view v = line.substr(colon + 1);
        while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
        out.emplace_back(std::string(line.substr(0, colon)), std::string(v));
    }
    return out;
}

bool is(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return (x | 0x20) == (y | 0x20);
           });
}

// The addr-specs of an address list: what is inside <>, or the bare words with an '@'.
void addresses(std::string_view v, std::vector<std::string>& out) {
    std::size_t at = 0;
    while (at < v.size()) {
        std::size_t comma = v.find(',', at);
        if (comma == std::string_view::npos) comma = v.size();
        std::string_view part = v.substr(at, comma - at);
        at = comma + 1;
        const auto lt = part.find('<'), gt = part.rfind('>');
        if (lt != std::string_view::npos && gt != std::string_view::npos && gt > lt) part = part.substr(lt + 1, gt - lt - 1);
        while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
        while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
        if (!part.empty() && std::find(out.begin(), out.end(), part) == out.end()) out.emplace_back(part);
    }
}

}  // namespace

message_head read_head(std::string_view octets) {
    message_head h;
    for (const auto& [name, value] : header_fields(octets)) {
        if (is(name, "Return-Path") && h.return_path.empty()) {
            std::string_view v = value;
            const auto lt = v.find('<'), gt = v.rfind('>');
            if (lt != std::string_view::npos && gt != std::string_view::npos && gt > lt) v = v.substr(lt + 1, gt - lt - 1);
            h.return_path = std::string(v);
        } else if (is(name, "From") && h.from.empty()) {
            h.from = value;
        } else if (is(name, "To") || is(name, "Cc")) {
            addresses(value, h.to);
        } else if (is(name, "Subject") && h.subject.empty()) {
            h.subject = value;
        }
    }
    return h;
}

message_view read_message(std::string_view octets) {
    message_view v;
    v.head = read_head(octets);
    v.headers = header_fields(octets);
    const auto body = octets.find("\n\n");
    if (body != std::string_view::npos) v.text = std::string(octets.substr(body + 2));
    return v;
}

std::optional<part_content> read_part(std::string_view, std::string_view) { return std::nullopt; }

}  // namespace mailnet::mailnetd
