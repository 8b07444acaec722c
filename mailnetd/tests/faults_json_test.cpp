// faults_json_test.cpp: the fault rules' JSON (DESIGN.md "mailnetd's HTTP API"): defaults,
// every field, refusals with their reasons (unknown fields, wrong types, ranges, replies that do
// not fit the phase), and exact round trips.
#include "mailnet/mailnetd/faults_json.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using namespace mailnet;
using namespace mailnet::mailnetd;
using namespace std::chrono_literals;

std::vector<fault_rule> parsed(std::string_view text) {
    auto r = parse_fault_rules(text);
    if (auto* bad = std::get_if<faults_refusal>(&r)) {
        ADD_FAILURE() << text << ": " << bad->message;
        return {};
    }
    return std::get<std::vector<fault_rule>>(r);
}

std::string refusal(std::string_view text) {
    auto r = parse_fault_rules(text);
    if (auto* bad = std::get_if<faults_refusal>(&r)) return bad->message;
    ADD_FAILURE() << text << " was accepted";
    return {};
}

TEST(faults_json, defaults_as_design_md) {
    const auto rules = parsed(R"([{"phase": "ehlo"}])");
    ASSERT_EQ(rules.size(), 1u);
    fault_rule expected;
    expected.phase = fault_phase::ehlo;
    EXPECT_EQ(rules[0], expected);
    EXPECT_EQ(rules[0].reply, "");
    EXPECT_EQ(rules[0].delay, 0ms);
    EXPECT_FALSE(rules[0].disconnect);
    EXPECT_EQ(rules[0].probability, 1.0);
    EXPECT_EQ(rules[0].nth, 0u);
    EXPECT_EQ(rules[0].match, fault_match{});
    EXPECT_TRUE(parsed("[]").empty());
}

TEST(faults_json, every_field) {
    const auto rules = parsed(R"([
        {"phase": "rcpt", "reply": "452 4.2.2 mailbox busy", "delay_ms": 2000, "disconnect": true,
         "probability": 0.25, "nth": 3, "match": {"rcpt": "bob@", "from": "alice"}},
        {"phase": "pop3-login", "reply": "-ERR [AUTH] no", "probability": 1},
        {"phase": "retr", "match": {}},
        {"phase": "connect", "reply": "-ERR busy", "probability": 0}
    ])");
    ASSERT_EQ(rules.size(), 4u);
    EXPECT_EQ(rules[0].phase, fault_phase::rcpt);
    EXPECT_EQ(rules[0].reply, "452 4.2.2 mailbox busy");
    EXPECT_EQ(rules[0].delay, 2000ms);
    EXPECT_TRUE(rules[0].disconnect);
    EXPECT_EQ(rules[0].probability, 0.25);
    EXPECT_EQ(rules[0].nth, 3u);
    EXPECT_EQ(rules[0].match.rcpt, "bob@");
    EXPECT_EQ(rules[0].match.from, "alice");
    EXPECT_EQ(rules[1].phase, fault_phase::pop3_login);
    EXPECT_EQ(rules[1].probability, 1.0);
    EXPECT_EQ(rules[2].phase, fault_phase::retr);
    EXPECT_EQ(rules[3].probability, 0.0);
}

TEST(faults_json, unknown_fields_are_refused_with_their_name) {
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "replay": "452 x"}])"),
              R"(rules[0]: unknown field "replay" (phase, reply, delay_ms, disconnect, probability, nth, match))");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt"}, {"phase": "data", "match": {"to": "bob"}}])"),
              R"(rules[1].match: unknown field "to" (rcpt, from))");
}

TEST(faults_json, wrong_types_are_refused) {
    EXPECT_EQ(refusal(R"([{"phase": 3}])"), "rules[0].phase: must be a string");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "reply": 452}])"), "rules[0].reply: must be a string");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "reply": null}])"), "rules[0].reply: must be a string");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "delay_ms": "100"}])"),
              "rules[0].delay_ms: must be an integer from 0 to 60000");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "delay_ms": 1.5}])"), "rules[0].delay_ms: must be an integer from 0 to 60000");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "disconnect": 1}])"), "rules[0].disconnect: must be true or false");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "disconnect": "true"}])"), "rules[0].disconnect: must be true or false");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "probability": "0.5"}])"), "rules[0].probability: must be a number from 0 to 1");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "nth": -1}])"), "rules[0].nth: must be an integer, 0 or more");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "nth": 2.0}])"), "rules[0].nth: must be an integer, 0 or more");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "match": "bob"}])"), "rules[0].match: must be an object");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "match": {"rcpt": ["bob"]}}])"), "rules[0].match.rcpt: must be a string");
    EXPECT_EQ(refusal(R"(["rcpt"])"), "rules[0]: must be an object");
    EXPECT_EQ(refusal(R"({"phase": "rcpt"})"), "want a JSON array of fault rules");
}

TEST(faults_json, bad_json_and_missing_phase) {
    EXPECT_EQ(refusal(R"([{"phase": "rcpt",}])").rfind("bad JSON: ", 0), 0u);
    EXPECT_EQ(refusal("").rfind("bad JSON: ", 0), 0u);
    EXPECT_EQ(refusal(R"([{"phase": "rcpt"}] [])").rfind("bad JSON: ", 0), 0u);
    EXPECT_EQ(refusal(R"([{"reply": "452 x"}])"), "rules[0].phase: required");
    EXPECT_EQ(refusal(R"([{"phase": "RCPT"}])"),
              R"(rules[0].phase: unknown phase "RCPT" (connect, ehlo, mail, rcpt, data, auth, pop3-login, retr))");
    EXPECT_EQ(refusal(R"([{"phase": "quit"}])").rfind("rules[0].phase: unknown phase \"quit\"", 0), 0u);
}

TEST(faults_json, a_field_given_twice_is_refused) {
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "phase": "pop3-login"}])"),
              R"(bad JSON: the field "phase" given twice in one object)");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "match": {"rcpt": "a", "rcpt": "b"}}])"),
              R"(bad JSON: the field "rcpt" given twice in one object)");
    // The same field in two rules, or in a rule and its match, is no repetition.
    EXPECT_EQ(parsed(R"([{"phase": "rcpt", "match": {"rcpt": "a"}}, {"phase": "rcpt", "reply": "452 x"}])").size(), 2u);
}

TEST(faults_json, ranges_and_replies_are_refused_with_a_reason) {
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "delay_ms": 60001}])"), "rules[0].delay_ms: must be an integer from 0 to 60000");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "delay_ms": -5}])"), "rules[0].delay_ms: must be an integer from 0 to 60000");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "probability": 1.5}])"), "rules[0].probability: must be a number from 0 to 1");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "probability": -0.1}])"), "rules[0].probability: must be a number from 0 to 1");
    EXPECT_EQ(refusal(R"([{"phase": "rcpt", "reply": "250 ok"}])"),
              "rules[0]: reply must start with an SMTP error code, 4xx or 5xx (RFC 5321 4.2)");
    EXPECT_EQ(refusal(R"([{"phase": "retr", "reply": "451 4.3.0 x"}])"),
              "rules[0]: reply must be a POP3 error: -ERR, then a space and text (RFC 1939 3)");
    EXPECT_EQ(refusal(R"([{"phase": "data", "reply": "451 4.3.0 a\r\n250 ok"}])"),
              "rules[0]: reply must be one line of printable ASCII (no CR, LF or other control characters)");
    EXPECT_EQ(refusal(R"([{"phase": "connect", "match": {"from": "x"}}])"),
              "rules[0]: match.from does not apply to phase connect (only mail, rcpt, data)");
    std::string many = "[";
    for (std::size_t i = 0; i <= max_fault_rules; ++i) many += std::string(i ? "," : "") + R"({"phase":"rcpt"})";
    EXPECT_EQ(refusal(many + "]"), "at most 100 fault rules");
}

TEST(faults_json, round_trip_exact) {
    const std::string text =
        R"([{"phase":"rcpt","reply":"452 4.2.2 mailbox busy","delay_ms":2000,"disconnect":true,"probability":0.1,)"
        R"("nth":3,"match":{"rcpt":"bob@","from":"alice"}},)"
        R"({"phase":"pop3-login","reply":"","delay_ms":0,"disconnect":false,"probability":1.0,"nth":0,)"
        R"("match":{"rcpt":"","from":""}}])";
    const auto rules = parsed(text);
    EXPECT_EQ(fault_rules_json(rules), text);  // every field, in DESIGN.md's order
    EXPECT_EQ(parsed(fault_rules_json(rules)), rules);
    EXPECT_EQ(fault_rules_json({}), "[]");
    // Defaults written out in full.
    EXPECT_EQ(fault_rules_json(parsed(R"([{"phase":"data"}])")),
              R"([{"phase":"data","reply":"","delay_ms":0,"disconnect":false,"probability":1.0,"nth":0,)"
              R"("match":{"rcpt":"","from":""}}])");
    // Every phase, and a probability that needs all its digits.
    std::vector<fault_rule> all;
    for (auto p : all_fault_phases) {
        fault_rule r;
        r.phase = p;
        r.probability = 1.0 / 3.0;
        r.nth = 18446744073709551615ull;
        all.push_back(r);
    }
    EXPECT_EQ(parsed(fault_rules_json(all)), all);
}

TEST(faults_json, list_feeds_the_rules_object) {
    fault_rules f;
    const auto rules = parsed(R"([{"phase": "rcpt", "reply": "452 4.2.2 busy", "match": {"rcpt": "bob"}}])");
    ASSERT_EQ(f.replace(rules), "");
    EXPECT_EQ(fault_rules_json(f.rules()), fault_rules_json(rules));
}

}  // namespace
