// faults_json.cpp: mailnetd's fault rules to and from JSON (RFC 8259) with nlohmann-json: strict
// reading (unknown fields and wrong types are refused with the field's name), complete writing.
#include "mailnet/mailnetd/faults_json.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <vector>

namespace mailnet::mailnetd {
namespace {

using json = nlohmann::json;

// A non-negative integer (not 1.0: a float is refused, as the type would be lost on the way back).
std::optional<std::uint64_t> unsigned_integer(const json& v) {
    if (v.is_number_unsigned()) return v.get<std::uint64_t>();
    if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return static_cast<std::uint64_t>(v.get<std::int64_t>());
    return std::nullopt;
}

// Reads one rule; "" or the problem, prefixed with the field's name.
std::string read_rule(const json& j, fault_rule& r) {
    if (!j.is_object()) return ": must be an object";
    bool has_phase = false;
    for (const auto& [key, v] : j.items()) {
        if (key == "phase") {
            if (!v.is_string()) return ".phase: must be a string";
            const auto p = parse_fault_phase(v.get_ref<const std::string&>());
            if (!p) return ".phase: unknown phase \"" + v.get<std::string>() +
                           "\" (connect, ehlo, mail, rcpt, data, auth, pop3-login, retr)";
            r.phase = *p;
            has_phase = true;
        } else if (key == "reply") {
            if (!v.is_string()) return ".reply: must be a string";
            r.reply = v.get<std::string>();
        } else if (key == "delay_ms") {
            const auto n = unsigned_integer(v);
            if (!n || *n > static_cast<std::uint64_t>(max_fault_delay.count()))
                return ".delay_ms: must be an integer from 0 to " + std::to_string(max_fault_delay.count());
            r.delay = std::chrono::milliseconds(static_cast<std::int64_t>(*n));
        } else if (key == "disconnect") {
            if (!v.is_boolean()) return ".disconnect: must be true or false";
            r.disconnect = v.get<bool>();
        } else if (key == "probability") {
            if (!v.is_number()) return ".probability: must be a number from 0 to 1";
            r.probability = v.get<double>();
            if (!(r.probability >= 0.0 && r.probability <= 1.0)) return ".probability: must be a number from 0 to 1";
        } else if (key == "nth") {
            const auto n = unsigned_integer(v);
            if (!n) return ".nth: must be an integer, 0 or more";
            r.nth = *n;
        } else if (key == "match") {
            if (!v.is_object()) return ".match: must be an object";
            for (const auto& [mkey, mv] : v.items()) {
                if (mkey != "rcpt" && mkey != "from") return ".match: unknown field \"" + mkey + "\" (rcpt, from)";
                if (!mv.is_string()) return ".match." + mkey + ": must be a string";
                (mkey == "rcpt" ? r.match.rcpt : r.match.from) = mv.get<std::string>();
            }
        } else {
            return ": unknown field \"" + key + "\" (phase, reply, delay_ms, disconnect, probability, nth, match)";
        }
    }
    if (!has_phase) return ".phase: required";
    if (auto why = fault_rule_problem(r); !why.empty()) return ": " + why;
    return {};
}

}  // namespace

std::variant<std::vector<fault_rule>, faults_refusal> parse_fault_rules(std::string_view text) {
    json j;
    // A key given twice in one object is refused, not resolved silently to one of its values
    // ({"phase": "rcpt", "phase": "pop3-login"} is no rule anyone meant).
    std::vector<std::set<std::string>> keys;  // per open object
    std::string twice;
    const json::parser_callback_t check = [&](int, json::parse_event_t event, json& parsed) {
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        if (event == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
        if (event == json::parse_event_t::key && !keys.empty() && !keys.back().insert(parsed.get<std::string>()).second &&
            twice.empty())
            twice = parsed.get<std::string>();
        return true;
    };
    try {
        j = json::parse(text, check);
    } catch (const json::exception& e) {
        return faults_refusal{std::string("bad JSON: ") + e.what()};
    }
    if (!twice.empty()) return faults_refusal{"bad JSON: the field \"" + twice + "\" given twice in one object"};
    if (!j.is_array()) return faults_refusal{"want a JSON array of fault rules"};
    if (j.size() > max_fault_rules)
        return faults_refusal{"at most " + std::to_string(max_fault_rules) + " fault rules"};
    std::vector<fault_rule> rules;
    rules.reserve(j.size());
    for (std::size_t i = 0; i < j.size(); ++i) {
        fault_rule r;
        if (auto why = read_rule(j[i], r); !why.empty())
            return faults_refusal{"rules[" + std::to_string(i) + "]" + why};
        rules.push_back(std::move(r));
    }
    return rules;
}

std::string fault_rules_json(const std::vector<fault_rule>& rules) {
    // ordered_json: the fields in the order of DESIGN.md, not sorted.
    auto out = nlohmann::ordered_json::array();
    for (const auto& r : rules) {
        nlohmann::ordered_json o;
        o["phase"] = std::string(fault_phase_name(r.phase));
        o["reply"] = r.reply;
        o["delay_ms"] = r.delay.count();
        o["disconnect"] = r.disconnect;
        o["probability"] = r.probability;
        o["nth"] = r.nth;
        o["match"]["rcpt"] = r.match.rcpt;
        o["match"]["from"] = r.match.from;
        out.push_back(std::move(o));
    }
    // Invalid UTF-8 in a filter is replaced, never an exception (a rule set through the library
    // need not come from JSON).
    return out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace mailnet::mailnetd
