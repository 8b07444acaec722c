// faults_test.cpp: fault rules: validation of each field (RFC 5321 4.2 and RFC 3463 replies,
// RFC 1939 -ERR), matching, nth counts, seeded probability, replace/clear and thread safety.
#include "mailnet/faults.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <thread>

namespace {

using namespace mailnet;
using namespace std::chrono_literals;

fault_rule rule(fault_phase p, std::string reply = {}) {
    fault_rule r;
    r.phase = p;
    r.reply = std::move(reply);
    return r;
}

fault_event smtp_event(std::vector<std::string>* rcpt = nullptr, std::optional<std::string_view> from = {}) {
    fault_event e;
    e.protocol = fault_protocol::smtp;
    if (rcpt) e.rcpt = *rcpt;
    e.from = from;
    return e;
}

TEST(fault_phases, names_round_trip) {
    for (auto p : all_fault_phases) EXPECT_EQ(parse_fault_phase(fault_phase_name(p)), p);
    EXPECT_EQ(fault_phase_name(fault_phase::pop3_login), "pop3-login");
    EXPECT_EQ(parse_fault_phase("pop3_login"), std::nullopt);
    EXPECT_EQ(parse_fault_phase("RCPT"), std::nullopt);
    EXPECT_EQ(parse_fault_phase(""), std::nullopt);
}

TEST(fault_rule_problem, accepts_good_rules) {
    EXPECT_EQ(fault_rule_problem(rule(fault_phase::rcpt, "452 4.5.3 try later")), "");
    EXPECT_EQ(fault_rule_problem(rule(fault_phase::data, "554")), "");
    EXPECT_EQ(fault_rule_problem(rule(fault_phase::mail, "550 no enhanced code here")), "");
    EXPECT_EQ(fault_rule_problem(rule(fault_phase::connect, "421 4.3.2 go away")), "");
    EXPECT_EQ(fault_rule_problem(rule(fault_phase::connect, "-ERR [SYS/TEMP] busy")), "");
    EXPECT_EQ(fault_rule_problem(rule(fault_phase::pop3_login, "-ERR [AUTH] no")), "");
    EXPECT_EQ(fault_rule_problem(rule(fault_phase::retr, "-ERR")), "");
    EXPECT_EQ(fault_rule_problem(rule(fault_phase::ehlo)), "");  // delay or disconnect only
    auto r = rule(fault_phase::rcpt, "452 4.2.2 full");
    r.delay = max_fault_delay;
    r.probability = 0.0;
    r.match = {"bob@", "alice"};
    EXPECT_EQ(fault_rule_problem(r), "");
}

TEST(fault_rule_problem, refuses_replies_that_do_not_fit_the_protocol) {
    for (const char* bad : {"250 ok", "221 bye", "45", "4x1 text", "461 bad second digit", "451-multi line",
                            "451\ttab", "-ERR wrong protocol", "451 4.3.0 text\r\n", "451 a\nb", "451 5.3.0 class"})
        EXPECT_NE(fault_rule_problem(rule(fault_phase::rcpt, bad)), "") << bad;
    for (const char* bad : {"+OK fine", "-ERRno space", "451 4.3.0 smtp", "-ERR a\r\n", "ERR x"})
        EXPECT_NE(fault_rule_problem(rule(fault_phase::pop3_login, bad)), "") << bad;
    EXPECT_NE(fault_rule_problem(rule(fault_phase::connect, "220 fine")), "");
    EXPECT_NE(fault_rule_problem(rule(fault_phase::connect, "-ERR\x01")), "");
    EXPECT_NE(fault_rule_problem(rule(fault_phase::data, "451 " + std::string(600, 'x'))), "");
    EXPECT_EQ(fault_rule_problem(rule(fault_phase::data, "451 " + std::string(max_fault_reply_octets - 4, 'x'))), "");
    // Something shaped like an enhanced code only in part is text.
    EXPECT_EQ(fault_rule_problem(rule(fault_phase::data, "451 5.x later")), "");
    EXPECT_EQ(fault_rule_problem(rule(fault_phase::data, "451 4.3.0")), "");
}

TEST(fault_rule_problem, refuses_out_of_range_fields) {
    auto r = rule(fault_phase::rcpt);
    r.delay = max_fault_delay + 1ms;
    EXPECT_NE(fault_rule_problem(r), "");
    r.delay = -1ms;
    EXPECT_NE(fault_rule_problem(r), "");
    r.delay = 0ms;
    for (double p : {-0.01, 1.01, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
        r.probability = p;
        EXPECT_NE(fault_rule_problem(r), "") << p;
    }
    r.probability = 1.0;
    r.phase = static_cast<fault_phase>(99);
    EXPECT_NE(fault_rule_problem(r), "");
}

TEST(fault_rule_problem, refuses_filters_a_phase_does_not_have) {
    auto r = rule(fault_phase::connect);
    r.match.rcpt = "bob";
    EXPECT_NE(fault_rule_problem(r), "");
    r = rule(fault_phase::mail);
    r.match.rcpt = "bob";
    EXPECT_NE(fault_rule_problem(r), "");
    r.match = {"", "alice"};
    EXPECT_EQ(fault_rule_problem(r), "");
    r.phase = fault_phase::pop3_login;
    EXPECT_NE(fault_rule_problem(r), "");
}

TEST(fault_rules, empty_does_nothing) {
    fault_rules f;
    EXPECT_TRUE(f.empty());
    EXPECT_EQ(f.check(fault_phase::connect, smtp_event()), std::nullopt);
}

TEST(fault_rules, replace_read_clear) {
    fault_rules f;
    std::vector<fault_rule> list{rule(fault_phase::rcpt, "452 4.5.3 later"), rule(fault_phase::retr, "-ERR no")};
    EXPECT_EQ(f.replace(list), "");
    EXPECT_FALSE(f.empty());
    EXPECT_EQ(f.rules(), list);
    f.clear();
    EXPECT_TRUE(f.empty());
    EXPECT_TRUE(f.rules().empty());
}

TEST(fault_rules, refused_replace_keeps_the_old_list_and_names_the_rule) {
    fault_rules f;
    std::vector<fault_rule> list{rule(fault_phase::rcpt, "452 4.5.3 later")};
    ASSERT_EQ(f.replace(list), "");
    auto bad = rule(fault_phase::data);
    bad.probability = 2;
    const auto why = f.replace({rule(fault_phase::ehlo), bad});
    EXPECT_EQ(why.rfind("rules[1]: probability", 0), 0u) << why;
    EXPECT_EQ(f.rules(), list);
}

TEST(fault_rules, acts_on_its_phase_only) {
    fault_rules f;
    auto r = rule(fault_phase::mail, "451 4.3.0 not now");
    r.delay = 2s;
    ASSERT_EQ(f.replace({r}), "");
    EXPECT_EQ(f.check(fault_phase::rcpt, smtp_event()), std::nullopt);
    const auto a = f.check(fault_phase::mail, smtp_event(nullptr, "a@b"));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->reply, "451 4.3.0 not now");
    EXPECT_EQ(a->delay, 2s);
    EXPECT_FALSE(a->disconnect);
}

TEST(fault_rules, matches_case_insensitive_substrings) {
    fault_rules f;
    auto r = rule(fault_phase::rcpt, "452 4.2.2 full");
    r.match = {"BOB@Example", "alice"};
    ASSERT_EQ(f.replace({r}), "");
    std::vector<std::string> bob{"bob@example.org"}, carol{"carol@example.org"};
    EXPECT_TRUE(f.check(fault_phase::rcpt, smtp_event(&bob, "Alice@example.org")));
    EXPECT_FALSE(f.check(fault_phase::rcpt, smtp_event(&carol, "alice@example.org")));
    EXPECT_FALSE(f.check(fault_phase::rcpt, smtp_event(&bob, "mallory@example.org")));
    EXPECT_FALSE(f.check(fault_phase::rcpt, smtp_event(&bob)));  // no sender known: no match
    // data: any of the recipients.
    r.phase = fault_phase::data;
    r.match.from.clear();
    ASSERT_EQ(f.replace({r}), "");
    std::vector<std::string> both{"carol@example.org", "bob@EXAMPLE.org"};
    EXPECT_TRUE(f.check(fault_phase::data, smtp_event(&both, "")));
    EXPECT_FALSE(f.check(fault_phase::data, smtp_event(&carol, "")));
}

TEST(fault_rules, connect_rule_acts_on_the_protocol_its_reply_is_for) {
    fault_rules f;
    ASSERT_EQ(f.replace({rule(fault_phase::connect, "-ERR busy")}), "");
    EXPECT_FALSE(f.check(fault_phase::connect, smtp_event()));
    EXPECT_TRUE(f.check(fault_phase::connect, fault_event{fault_protocol::pop3, {}, {}}));
    ASSERT_EQ(f.replace({rule(fault_phase::connect, "554 5.3.2 no")}), "");
    EXPECT_TRUE(f.check(fault_phase::connect, smtp_event()));
    EXPECT_FALSE(f.check(fault_phase::connect, fault_event{fault_protocol::pop3, {}, {}}));
    auto hang_up = rule(fault_phase::connect);
    hang_up.disconnect = true;
    ASSERT_EQ(f.replace({hang_up}), "");
    EXPECT_TRUE(f.check(fault_phase::connect, smtp_event()));
    EXPECT_TRUE(f.check(fault_phase::connect, fault_event{fault_protocol::pop3, {}, {}}));
}

TEST(fault_rules, nth_counts_matching_events_since_the_list_was_set) {
    fault_rules f;
    auto r = rule(fault_phase::data);
    r.disconnect = true;
    r.nth = 3;
    r.match.rcpt = "bob";
    ASSERT_EQ(f.replace({r}), "");
    std::vector<std::string> bob{"bob@x"}, carol{"carol@x"};
    EXPECT_FALSE(f.check(fault_phase::data, smtp_event(&bob, "")));
    EXPECT_FALSE(f.check(fault_phase::data, smtp_event(&carol, "")));  // not counted
    EXPECT_FALSE(f.check(fault_phase::data, smtp_event(&bob, "")));
    const auto third = f.check(fault_phase::data, smtp_event(&bob, ""));
    ASSERT_TRUE(third);
    EXPECT_TRUE(third->disconnect);
    EXPECT_EQ(third->reply, "");
    EXPECT_FALSE(f.check(fault_phase::data, smtp_event(&bob, "")));  // only the third
    // Setting the list again starts the count again.
    ASSERT_EQ(f.replace({r}), "");
    EXPECT_FALSE(f.check(fault_phase::data, smtp_event(&bob, "")));
    EXPECT_FALSE(f.check(fault_phase::data, smtp_event(&bob, "")));
    EXPECT_TRUE(f.check(fault_phase::data, smtp_event(&bob, "")));
}

TEST(fault_rules, first_acting_rule_wins_and_every_rule_counts) {
    fault_rules f;
    auto first = rule(fault_phase::rcpt, "451 4.3.0 first");
    first.nth = 1;
    auto second = rule(fault_phase::rcpt, "452 4.3.0 second");
    second.nth = 2;
    ASSERT_EQ(f.replace({first, second}), "");
    EXPECT_EQ(f.check(fault_phase::rcpt, smtp_event())->reply, "451 4.3.0 first");
    EXPECT_EQ(f.check(fault_phase::rcpt, smtp_event())->reply, "452 4.3.0 second");
    EXPECT_FALSE(f.check(fault_phase::rcpt, smtp_event()));
}

TEST(fault_rules, probability_is_deterministic_for_a_seed) {
    auto r = rule(fault_phase::ehlo, "421 4.3.0 flaky");
    r.probability = 0.5;
    const auto run = [&](std::uint64_t seed) {
        fault_rules f(seed);
        EXPECT_EQ(f.replace({r}), "");
        std::string hits;
        for (int i = 0; i < 400; ++i) hits += f.check(fault_phase::ehlo, smtp_event()) ? '1' : '0';
        return hits;
    };
    const auto a = run(42), b = run(42), c = run(43);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
    const auto ones = std::count(a.begin(), a.end(), '1');
    EXPECT_GT(ones, 150);  // about half
    EXPECT_LT(ones, 250);
    r.probability = 0.0;
    fault_rules never(1);
    ASSERT_EQ(never.replace({r}), "");
    for (int i = 0; i < 100; ++i) EXPECT_FALSE(never.check(fault_phase::ehlo, smtp_event()));
}

TEST(fault_rules, concurrent_checks_and_replaces) {
    fault_rules f(7);
    auto r = rule(fault_phase::rcpt, "452 4.5.3 later");
    r.probability = 0.5;
    std::atomic<bool> stop{false};
    std::atomic<long> acted{0};
    std::vector<std::thread> checkers;
    for (int t = 0; t < 3; ++t)
        checkers.emplace_back([&] {
            std::vector<std::string> rcpt{"bob@x"};
            while (!stop)
                if (f.check(fault_phase::rcpt, smtp_event(&rcpt, "a@b"))) ++acted;
        });
    for (int i = 0; i < 2000; ++i) {
        if (i % 2) f.clear();
        else EXPECT_EQ(f.replace({r}), "");
        (void)f.rules();
    }
    stop = true;
    for (auto& t : checkers) t.join();
    SUCCEED() << acted.load() << " faults";
}

}  // namespace
