// mailnet/mailnetd/faults_json.hpp: the JSON of mailnetd's fault rules (DESIGN.md "mailnetd's
// HTTP API and web view": GET/PUT/DELETE /api/v1/faults), read and written with nlohmann-json.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "mailnet/faults.hpp"

namespace mailnet::mailnetd {

/// Why a rule list was refused: the text of a 400's {"error": ...}, naming the rule and field
/// ("rules[1].delay_ms: must be an integer from 0 to 60000").
struct faults_refusal {
    std::string message;
};

/// A PUT /api/v1/faults body: a JSON array of rules, each
/// {"phase", "reply", "delay_ms", "disconnect", "probability", "nth", "match": {"rcpt", "from"}}
/// with only "phase" required (defaults: "", 0, false, 1.0, 0, no filters). Refused: bad JSON,
/// anything but an array of objects, an unknown field, a wrong type, and whatever
/// fault_rule_problem refuses (a reply that does not fit the phase's protocol, a delay over
/// 60 s, a probability outside [0, 1], a filter the phase does not have).
std::variant<std::vector<fault_rule>, faults_refusal> parse_fault_rules(std::string_view json);

/// The list in force as a JSON array (GET and PUT answers): every field of every rule, defaults
/// included, so parse_fault_rules(fault_rules_json(r)) == r.
std::string fault_rules_json(const std::vector<fault_rule>& rules);

}  // namespace mailnet::mailnetd
