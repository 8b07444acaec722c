// api.cpp: query strings, the parameters of the list, wait and delete requests (400 for an
// unknown name or a bad value), and the API's JSON through nlohmann-json.
#include "mailnet/mailnetd/api.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <set>

namespace mailnet::mailnetd {
namespace {

using json = nlohmann::json;

int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space = true) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '+' && plus_is_space) {
            out += ' ';
        } else if (s[i] == '%') {
            if (i + 2 >= s.size()) return std::nullopt;
            const int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        } else {
            out += s[i];
        }
    }
    return out;
}

std::optional<std::uint64_t> number(std::string_view s) {
    std::uint64_t v = 0;
    if (s.empty() || s.size() > 12) return std::nullopt;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
    return v;
}

// The parameters by name, each allowed once and only if `allowed` names it.
std::variant<std::map<std::string, std::string>, api_error> by_name(const query_params& params,
                                                                    std::initializer_list<std::string_view> allowed) {
    std::map<std::string, std::string> out;
    for (const auto& [k, v] : params) {
        if (std::find(allowed.begin(), allowed.end(), k) == allowed.end())
            return api_error{400, "unknown query parameter: " + k};
        out[k] = v;
    }
    return out;
}

// Strings from mail are not always UTF-8 (a stand-in view, a broken header): nlohmann-json
// would throw on them; `replace` writes U+FFFD instead.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json summary(const message_summary& s) {
    return json{{"id", s.id},           {"mailbox", s.mailbox}, {"from", s.from},
                {"to", s.to},           {"subject", s.subject}, {"received", format_rfc3339(s.received)},
                {"size", s.size}};
}

}  // namespace

std::variant<query_params, api_error> parse_query_string(std::string_view query) {
    query_params out;
    std::set<std::string> seen;
    while (!query.empty()) {
        const auto amp = query.find('&');
        const std::string_view item = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (item.empty()) continue;
        const auto eq = item.find('=');
        auto k = percent_decode(item.substr(0, eq));
        // An address holds no space, and often a '+' (user+tag@example.org), as does an RFC 3339
        // time's offset (+00:00) while an id holds neither: in these a '+' is itself; elsewhere a
        // space, as HTML forms send it (%2B is '+' anywhere).
        const bool literal_plus = k && (*k == "mailbox" || *k == "to" || *k == "from" || *k == "since");
        auto v = percent_decode(eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1), !literal_plus);
        if (!k || !v) return api_error{400, "bad %-escape in the query string"};
        if (!seen.insert(*k).second) return api_error{400, "query parameter given twice: " + *k};
        out.emplace_back(std::move(*k), std::move(*v));
    }
    return out;
}

namespace {

// The filters are searched in every summary (and again at each delivery for a waiter): bounded.
constexpr std::size_t max_filter_octets = 256;

std::optional<api_error> filter_too_long(const message_query& q) {
    for (const auto& [name, value] : {std::pair<const char*, const std::string*>{"mailbox", &q.mailbox},
                                      {"to", &q.to}, {"from", &q.from}, {"subject", &q.subject}})
        if (value->size() > max_filter_octets)
            return api_error{400, std::string(name) + ": at most " + std::to_string(max_filter_octets) + " octets"};
    return std::nullopt;
}

}  // namespace

std::variant<message_query, api_error> parse_list_request(const query_params& params, const api_limits& lim) {
    auto named = by_name(params, {"mailbox", "to", "from", "subject", "limit"});
    if (auto* e = std::get_if<api_error>(&named)) return *e;
    auto& p = std::get<0>(named);
    message_query q;
    q.mailbox = p["mailbox"];
    q.to = p["to"];
    q.from = p["from"];
    q.subject = p["subject"];
    if (auto e = filter_too_long(q)) return *e;
    if (auto it = p.find("limit"); it != p.end()) {
        auto n = number(it->second);
        if (!n || *n < 1 || *n > lim.max_list)
            return api_error{400, "limit: want a number from 1 to " + std::to_string(lim.max_list)};
        q.limit = static_cast<std::size_t>(*n);
    }
    return q;
}

std::variant<wait_request, api_error> parse_wait_request(const query_params& params, const mail_index& index,
                                                         const api_limits& lim) {
    auto named = by_name(params, {"mailbox", "to", "from", "subject", "since", "count", "timeout", "limit"});
    if (auto* e = std::get_if<api_error>(&named)) return *e;
    auto& p = std::get<0>(named);
    wait_request w;
    w.q.mailbox = p["mailbox"];
    w.q.to = p["to"];
    w.q.from = p["from"];
    w.q.subject = p["subject"];
    if (auto e = filter_too_long(w.q)) return *e;
    if (auto it = p.find("since"); it != p.end()) {
        if (auto t = parse_rfc3339(it->second)) {
            // After the time: every message received later, whatever its insertion order.
            w.q.after_us = std::chrono::duration_cast<std::chrono::microseconds>(t->time_since_epoch()).count();
        } else if (auto k = index.key_of(it->second)) {
            // After the message: whatever the index took in later (mail_index.hpp says why).
            w.q.after_seq = k->seq;
        } else {
            return api_error{400, "since: want a message id or an RFC 3339 time"};
        }
    }
    if (auto it = p.find("count"); it != p.end()) {
        auto n = number(it->second);
        if (!n || *n < 1 || *n > lim.max_list)
            return api_error{400, "count: want a number from 1 to " + std::to_string(lim.max_list)};
        w.count = static_cast<std::size_t>(*n);
    }
    if (auto it = p.find("timeout"); it != p.end()) {
        auto n = number(it->second);
        if (!n || *n > static_cast<std::uint64_t>(lim.max_wait.count()))
            return api_error{400, "timeout: want seconds from 0 to " + std::to_string(lim.max_wait.count())};
        w.timeout = std::chrono::seconds(*n);
    }
    w.q.limit = std::max<std::size_t>(50, w.count);
    if (auto it = p.find("limit"); it != p.end()) {
        auto n = number(it->second);
        if (!n || *n < 1 || *n > lim.max_list)
            return api_error{400, "limit: want a number from 1 to " + std::to_string(lim.max_list)};
        w.q.limit = static_cast<std::size_t>(*n);
    }
    return w;
}

std::variant<std::string, api_error> parse_delete_request(const query_params& params) {
    auto named = by_name(params, {"mailbox"});
    if (auto* e = std::get_if<api_error>(&named)) return *e;
    // `mailbox=` with no name is a mistake (curl -X DELETE "...?mailbox=$UNSET"), never "all":
    // only a request without the parameter empties every mailbox.
    auto& p = std::get<0>(named);
    if (const auto it = p.find("mailbox"); it != p.end() && it->second.empty())
        return api_error{400, "mailbox: want a mailbox name (leave the parameter out to empty every mailbox)"};
    return p["mailbox"];
}

bool valid_part_number(std::string_view part) {
    if (part.empty() || part.size() > 64) return false;
    bool start = true;
    for (std::size_t i = 0; i < part.size(); ++i) {
        const char c = part[i];
        if (c == '.') {
            if (start) return false;
            start = true;
        } else if (c >= '0' && c <= '9') {
            if (start && c == '0') return false;
            start = false;
        } else {
            return false;
        }
    }
    return !start;
}

std::string error_json(std::string_view message) { return dump(json{{"error", message}}); }

std::string summary_json(const message_summary& s) { return s.json_text.empty() ? dump(summary(s)) : s.json_text; }

std::string id_json(std::string_view id) { return dump(json{{"id", id}}); }

std::string list_json(const query_result& r) {
    json list = json::array();
    for (const auto* s : r.messages) list.push_back(summary(*s));
    return dump(json{{"total", r.total}, {"messages", std::move(list)}});
}

list_writer::list_writer(const mail_index& index, message_query q, std::optional<std::size_t> total)
    : q_(std::move(q)) {
    if (total) {
        total_ = *total;
    } else {
        const std::size_t limit = q_.limit;
        q_.limit = 0;
        total_ = index.query(q_).total;
        q_.limit = limit;
    }
    // The frame by nlohmann-json too: {"messages":[],"total":N} split at its "[]".
    const std::string frame = dump(json{{"total", total_}, {"messages", json::array()}});
    const auto at = frame.find("[]");
    head_ = frame.substr(0, at + 1);
    tail_ = frame.substr(at + 1);
}

std::string list_writer::next(const mail_index& index, std::size_t max_octets) {
    std::string out;
    if (finished_) return out;
    if (!started_) {
        started_ = true;
        out = head_;
    }
    // Not past `total`: once every match counted at the start is out, the rest of the index
    // need not be searched (a wait's answer is often one new message among many).
    while (out.size() < max_octets && written_ < std::min(q_.limit, total_)) {
        order_key at;
        const message_summary* s = index.next_match(q_, cursor_, at);
        if (!s) break;
        cursor_ = at;
        if (written_++ > 0) out += ',';
        if (s->json_text.empty())
            out += summary_json(*s);
        else
            out += s->json_text;  // made at insertion (mail_index.hpp): no copy
    }
    if (out.size() < max_octets) {
        out += tail_;
        finished_ = true;
    }
    return out;
}

std::string message_json(const message_summary& s, const message_view& v) {
    json j = summary(s);
    json headers = json::array();
    for (const auto& [name, value] : v.headers) headers.push_back(json::array({name, value}));
    j["headers"] = std::move(headers);
    j["text"] = v.text;
    j["html"] = v.html;
    json atts = json::array();
    for (const auto& a : v.attachments)
        atts.push_back(json{{"part", a.part}, {"filename", a.filename}, {"content_type", a.content_type}, {"size", a.size}});
    j["attachments"] = std::move(atts);
    j["links"] = v.links;
    return dump(j);
}

std::string mailboxes_json(const std::vector<std::string>& names, const mail_index& index) {
    std::map<std::string_view, std::pair<std::uint64_t, std::uint64_t>> counts;  // mailbox -> messages, octets
    for (const auto* s : index.in_mailbox("")) {
        auto& c = counts[s->mailbox];
        ++c.first;
        c.second += s->size;
    }
    json out = json::array();
    for (const auto& n : names) {
        const auto it = counts.find(n);
        const auto c = it == counts.end() ? std::pair<std::uint64_t, std::uint64_t>{} : it->second;
        out.push_back(json{{"name", n}, {"messages", c.first}, {"size", c.second}});
    }
    return dump(out);
}

}  // namespace mailnet::mailnetd
