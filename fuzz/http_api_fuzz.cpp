// http_api_fuzz.cpp: untrusted octets through the parts of mailnetd's HTTP API that need no socket
// (api.hpp, faults_json.hpp): a query string with the list, wait and delete parameters, and a PUT
// /api/v1/faults body. The first octet picks which; the rest is the input. Checked:
//  - a query string that parses names each parameter once, and encoding what it gave back with
//    %XX everywhere parses to the same; the list/wait/delete answers keep their limits (and run
//    against an index of one message, whose id since= may name); a delete empties every
//    mailbox only without `mailbox`; every refusal is a 400 whose text makes valid JSON through
//    error_json;
//  - a fault-rule list that parses is written by fault_rules_json so that reading that again gives
//    the same rules and writing them again the same text; a refusal names the field in valid JSON.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <variant>

#include "mailnet/mailnetd/api.hpp"
#include "mailnet/mailnetd/faults_json.hpp"
#include "mailnet/mailnetd/mail_index.hpp"

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

// What error_json makes of `message` is one JSON object {"error": "..."}: it begins and ends so
// and holds no raw control octet (nlohmann escapes them; invalid UTF-8 is replaced).
void check_error_json(std::string_view message) {
    const std::string j = mailnet::mailnetd::error_json(message);
    check(j.starts_with("{\"error\":\"") && j.ends_with("\"}"));
    for (const char c : j) check(static_cast<unsigned char>(c) >= 0x20);
}

std::string encode_all(const mailnet::mailnetd::query_params& params) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    auto put = [&](std::string_view s) {
        for (const char ch : s) {
            const auto b = static_cast<unsigned char>(ch);
            out += '%';
            out += hex[b >> 4];
            out += hex[b & 15];
        }
    };
    for (const auto& [name, value] : params) {
        if (!out.empty()) out += '&';
        put(name);
        out += '=';
        put(value);
    }
    return out;
}

// An index holding one message, whose id the seeds name in since=, so that the id lookup and
// the filters run.
const mailnet::mailnetd::mail_index& one_message_index() {
    static const mailnet::mailnetd::mail_index index = [] {
        mailnet::mailnetd::mail_index i;
        mailnet::mailnetd::message_summary s;
        s.mailbox = "bob@example.org";
        s.store_id = "1700000000.M1P1Q1.host";
        s.id = mailnet::mailnetd::make_message_id(s.mailbox, s.store_id);
        s.from = "alice@example.org";
        s.from_header = "Alice <alice@example.org>";
        s.to = {"bob@example.org", "carol@example.net"};
        s.subject = "Hello \xE2\x9C\x93";
        s.received = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
        s.size = 1234;
        i.insert(std::move(s));
        return i;
    }();
    return index;
}

void query(std::string_view input) {
    namespace m = mailnet::mailnetd;
    auto parsed = m::parse_query_string(input);
    if (auto* e = std::get_if<m::api_error>(&parsed)) {
        check(e->status == 400);
        return check_error_json(e->message);
    }
    const auto& params = std::get<m::query_params>(parsed);
    std::set<std::string_view> names;
    for (const auto& p : params) check(names.insert(p.first).second);
    // Encoded again (every octet as %XX) it reads back the same.
    auto again = m::parse_query_string(encode_all(params));
    check(std::holds_alternative<m::query_params>(again) && std::get<m::query_params>(again) == params);

    auto refused = [](const m::api_error& e) {
        check(e.status == 400);
        check_error_json(e.message);
    };
    const m::api_limits lim;
    const m::mail_index& index = one_message_index();
    auto list = m::parse_list_request(params, lim);
    if (auto* e = std::get_if<m::api_error>(&list)) {
        refused(*e);
    } else {
        const auto& q = std::get<m::message_query>(list);
        check(q.limit >= 1 && q.limit <= lim.max_list);
        const auto r = index.query(q);  // the filters as the index runs them
        check(r.messages.size() <= r.total && r.total <= index.size());
    }
    auto wait = m::parse_wait_request(params, index, lim);
    if (auto* e = std::get_if<m::api_error>(&wait)) {
        refused(*e);
    } else {
        const auto& w = std::get<m::wait_request>(wait);
        check(w.count >= 1 && w.timeout.count() >= 0 && w.timeout <= lim.max_wait);
        check(w.q.limit >= 1 && w.q.limit <= lim.max_list);
        const auto r = index.query(w.q);
        check(r.messages.size() <= r.total && r.total <= index.size());
    }
    auto del = m::parse_delete_request(params);
    if (auto* e = std::get_if<m::api_error>(&del)) {
        refused(*e);
    } else {
        // "" (every mailbox) only without the parameter: `mailbox=` with no name is refused.
        const auto& box = std::get<std::string>(del);
        const bool given = std::any_of(params.begin(), params.end(), [](const auto& p) { return p.first == "mailbox"; });
        check(box.empty() != given);
    }
}

void faults(std::string_view input) {
    namespace m = mailnet::mailnetd;
    auto parsed = m::parse_fault_rules(input);
    if (auto* r = std::get_if<m::faults_refusal>(&parsed)) {
        check(!r->message.empty());
        return check_error_json(r->message);
    }
    const auto& rules = std::get<std::vector<mailnet::fault_rule>>(parsed);
    check(rules.size() <= mailnet::max_fault_rules);
    for (const auto& rule : rules) check(mailnet::fault_rule_problem(rule).empty());
    const std::string written = m::fault_rules_json(rules);
    auto again = m::parse_fault_rules(written);
    check(std::holds_alternative<std::vector<mailnet::fault_rule>>(again));
    check(std::get<std::vector<mailnet::fault_rule>>(again) == rules);
    check(m::fault_rules_json(std::get<std::vector<mailnet::fault_rule>>(again)) == written);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (data[0] & 1)
        faults(input);
    else
        query(input);
    return 0;
}
