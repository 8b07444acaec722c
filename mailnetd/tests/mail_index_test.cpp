// mail_index_test.cpp: mailnetd's index without HTTP: filters as DESIGN.md's table says them,
// newest first, total and limit, waiters woken by insertion, watchers, ids, RFC 3339.
#include "mailnet/mailnetd/mail_index.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using namespace mailnet::mailnetd;
using clock_type = std::chrono::system_clock;

message_summary make(std::string box, std::string store_id, std::string from, std::vector<std::string> to,
                     std::string subject, int secs) {
    message_summary s;
    s.id = make_message_id(box, store_id);
    s.mailbox = std::move(box);
    s.store_id = std::move(store_id);
    s.from = std::move(from);
    s.from_header = "Sender Name <header@example.org>";
    s.to = std::move(to);
    s.subject = std::move(subject);
    s.received = clock_type::time_point(std::chrono::seconds(1700000000 + secs));
    s.size = 100;
    return s;
}

std::vector<std::string> subjects(const query_result& r) {
    std::vector<std::string> out;
    for (const auto* s : r.messages) out.push_back(s->subject);
    return out;
}

struct index_test : ::testing::Test {
    mail_index index;
    void SetUp() override {
        index.insert(make("bob@x.org", "1", "alice@a.org", {"bob@x.org", "carol@y.org"}, "Hello Bob", 1));
        index.insert(make("carol@y.org", "1", "alice@a.org", {"bob@x.org", "carol@y.org"}, "Hello Bob", 1));
        index.insert(make("bob@x.org", "2", "", {"list@x.org"}, "Password RESET", 3));
        index.insert(make("dave@z.org", "3", "noreply@shop.com", {}, "Your order", 2));
    }
};

TEST_F(index_test, newest_first_with_total_and_limit) {
    auto r = index.query({});
    EXPECT_EQ(r.total, 4u);
    EXPECT_EQ(subjects(r), (std::vector<std::string>{"Password RESET", "Your order", "Hello Bob", "Hello Bob"}));
    message_query q;
    q.limit = 2;
    r = index.query(q);
    EXPECT_EQ(r.total, 4u);
    EXPECT_EQ(r.messages.size(), 2u);
}

TEST_F(index_test, filters) {
    message_query q;
    q.mailbox = "BOB@x.org";  // exact, case-insensitive
    EXPECT_EQ(index.query(q).total, 2u);
    q.mailbox = "bob@x";
    EXPECT_EQ(index.query(q).total, 0u);
    q = {};
    q.to = "CAROL";  // mailbox or To/Cc
    EXPECT_EQ(index.query(q).total, 2u);
    q.to = "list@";
    EXPECT_EQ(index.query(q).total, 1u);
    q = {};
    q.from = "alice";  // envelope sender
    EXPECT_EQ(index.query(q).total, 2u);
    q.from = "HEADER@example";  // or the From header
    EXPECT_EQ(index.query(q).total, 4u);
    q = {};
    q.subject = "reset";
    auto r = index.query(q);
    ASSERT_EQ(r.total, 1u);
    EXPECT_EQ(r.messages[0]->mailbox, "bob@x.org");
    q.mailbox = "dave@z.org";
    EXPECT_EQ(index.query(q).total, 0u);
}

TEST_F(index_test, since_an_id_or_a_time) {
    message_query q;
    // dave's was inserted last (received 2, before bob's 3): nothing came in after it.
    q.after_seq = index.key_of(make_message_id("dave@z.org", "3"))->seq;
    EXPECT_EQ(index.query(q).total, 0u);
    q.after_seq = index.key_of(make_message_id("carol@y.org", "1"))->seq;
    EXPECT_EQ(subjects(index.query(q)), (std::vector<std::string>{"Password RESET", "Your order"}));
    q.after_seq.reset();
    auto t = parse_rfc3339("2023-11-14T22:13:21Z");  // 1700000001
    ASSERT_TRUE(t);
    q.after_us = std::chrono::duration_cast<std::chrono::microseconds>(t->time_since_epoch()).count();
    EXPECT_EQ(index.query(q).total, 2u);
}

// #15: a Maildir name's time is taken when DATA starts; a long message started before another
// but delivered after it is still news to a client waiting since= the other one.
TEST_F(index_test, since_an_id_counts_a_later_delivery_with_an_earlier_name_time) {
    index.insert(make("bob@x.org", "quick", "", {}, "quick", 100));
    const auto since = index.key_of(make_message_id("bob@x.org", "quick"))->seq;
    message_query q;
    q.mailbox = "bob@x.org";
    q.after_seq = since;
    int fired = 0;
    ASSERT_NE(index.wait(q, 1, [&] { ++fired; }), 0u);
    index.insert(make("bob@x.org", "slow", "", {}, "slow, started first", 90));  // delivered now, named earlier
    EXPECT_EQ(fired, 1);
    EXPECT_EQ(subjects(index.query(q)), std::vector<std::string>{"slow, started first"});
    order_key at;
    const message_summary* s = index.next_match(q, std::nullopt, at);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->subject, "slow, started first");
}

TEST_F(index_test, insert_is_idempotent_and_remove_by_either_key) {
    EXPECT_FALSE(index.insert(make("bob@x.org", "1", "", {}, "again", 9)));
    EXPECT_EQ(index.size(), 4u);
    EXPECT_TRUE(index.remove("bob@x.org", "1"));
    EXPECT_FALSE(index.remove("bob@x.org", "1"));
    EXPECT_TRUE(index.remove(make_message_id("carol@y.org", "1")));
    EXPECT_EQ(index.size(), 2u);
    EXPECT_EQ(index.find(make_message_id("carol@y.org", "1")), nullptr);
    ASSERT_NE(index.find(make_message_id("dave@z.org", "3")), nullptr);
}

TEST_F(index_test, count_in_follows_insertions_and_removals_of_the_mailbox_named_exactly) {
    EXPECT_EQ(index.count_in("bob@x.org"), 2u);
    EXPECT_EQ(index.count_in("BOB@X.org"), 0u) << "a Maildir mailbox named in other letters is another";
    EXPECT_EQ(index.count_in("nobody@x.org"), 0u);
    EXPECT_FALSE(index.insert(make("bob@x.org", "1", "", {}, "again", 9)));
    EXPECT_EQ(index.count_in("bob@x.org"), 2u) << "a refused insertion counts nothing";
    EXPECT_TRUE(index.remove("bob@x.org", "1"));
    EXPECT_FALSE(index.remove("bob@x.org", "1"));
    EXPECT_EQ(index.count_in("bob@x.org"), 1u);
    EXPECT_TRUE(index.remove("bob@x.org", "2"));
    EXPECT_EQ(index.count_in("bob@x.org"), 0u);
    EXPECT_EQ(index.count_in("dave@z.org"), 1u);
}

// A test that fetched and deleted a message waits for the next one with since=<its id>.
TEST_F(index_test, since_a_removed_id_still_counts_from_where_it_stood_for_a_while) {
    const auto id = make_message_id("dave@z.org", "3");
    const auto before = index.key_of(id);
    ASSERT_TRUE(before);
    ASSERT_TRUE(index.remove(id));
    EXPECT_EQ(index.find(id), nullptr);
    ASSERT_EQ(index.key_of(id), before);
    index.insert(make("bob@x.org", "4", "", {}, "after", 0));
    message_query q;
    q.after_seq = index.key_of(id)->seq;
    EXPECT_EQ(subjects(index.query(q)), (std::vector<std::string>{"after"}));
    // Bounded: the oldest removed ids are forgotten.
    for (std::size_t i = 0; i < mail_index::removed_keys_kept; ++i) {
        index.insert(make("eve@e.org", std::to_string(i), "", {}, "x", 5));
        index.remove("eve@e.org", std::to_string(i));
    }
    EXPECT_FALSE(index.key_of(id));
    EXPECT_TRUE(index.key_of(make_message_id("eve@e.org", std::to_string(mail_index::removed_keys_kept - 1))));
}

TEST_F(index_test, a_waiter_is_answered_at_once_or_by_the_insertion_that_reaches_its_count) {
    int fired = 0;
    message_query q;
    q.mailbox = "bob@x.org";
    EXPECT_EQ(index.wait(q, 2, [&] { ++fired; }), 0u);  // two are there already
    EXPECT_EQ(fired, 1);
    auto id = index.wait(q, 4, [&] { ++fired; });
    EXPECT_NE(id, 0u);
    EXPECT_EQ(index.waiters(), 1u);
    index.insert(make("eve@q.org", "9", "", {}, "not for bob", 5));
    EXPECT_EQ(fired, 1);
    index.insert(make("bob@x.org", "10", "", {}, "third", 5));
    EXPECT_EQ(fired, 1);
    index.remove("bob@x.org", "10");  // counts down again
    index.insert(make("bob@x.org", "11", "", {}, "third again", 6));
    EXPECT_EQ(fired, 1);
    index.insert(make("bob@x.org", "12", "", {}, "fourth", 7));
    EXPECT_EQ(fired, 2);
    EXPECT_EQ(index.waiters(), 0u);
}

TEST_F(index_test, a_waiter_is_told_how_many_match) {
    std::size_t told = 0;
    message_query q;
    q.mailbox = "bob@x.org";
    ASSERT_NE(index.wait(q, 3, [&](std::size_t total) { told = total; }), 0u);
    index.insert(make("bob@x.org", "50", "", {}, "third", 30));
    EXPECT_EQ(told, 3u);
    EXPECT_EQ(index.wait(q, 1, [&](std::size_t total) { told = total + 100; }), 0u);  // at once
    EXPECT_EQ(told, 103u);
}

TEST_F(index_test, a_waiter_with_since_counts_only_later_messages_and_can_be_cancelled) {
    int fired = 0;
    message_query q;
    q.after_seq = index.key_of(make_message_id("dave@z.org", "3"))->seq;  // the last in
    auto id = index.wait(q, 1, [&] { ++fired; });
    ASSERT_NE(id, 0u);
    index.cancel(id);
    index.insert(make("bob@x.org", "20", "", {}, "later", 10));
    EXPECT_EQ(fired, 0);
    id = index.wait(q, 2, [&] { ++fired; });
    EXPECT_NE(id, 0u);
    index.insert(make("bob@x.org", "21", "", {}, "later 2", 11));
    EXPECT_EQ(fired, 1);
}

TEST_F(index_test, many_waiters_are_cheap) {
    int fired = 0;
    for (int i = 0; i < 10000; ++i) {
        message_query q;
        q.subject = "[token-" + std::to_string(i) + "]";
        index.wait(q, 1, [&] { ++fired; });
    }
    EXPECT_EQ(index.waiters(), 10000u);
    index.insert(make("bob@x.org", "30", "", {}, "your [token-77] here", 12));
    EXPECT_EQ(fired, 1);
    EXPECT_EQ(index.waiters(), 9999u);
}

TEST_F(index_test, watchers_see_changes_in_order_and_may_unwatch_themselves) {
    std::vector<std::string> seen;
    std::uint64_t w = 0;
    w = index.watch([&](const mail_index::change& c) {
        seen.push_back((c.added ? "new " : "deleted ") + c.id);
        if (seen.size() == 2) index.unwatch(w);
    });
    index.insert(make("bob@x.org", "40", "", {}, "x", 20));
    index.remove("bob@x.org", "40");
    index.insert(make("bob@x.org", "41", "", {}, "x", 21));
    EXPECT_EQ(seen, (std::vector<std::string>{"new " + make_message_id("bob@x.org", "40"),
                                              "deleted " + make_message_id("bob@x.org", "40")}));
}

TEST(message_id, short_url_safe_stable_and_distinct) {
    const auto a = make_message_id("bob@x.org", "1700000000.M1P2Q3.host,S=10,W=12");
    EXPECT_EQ(a.size(), 16u);
    EXPECT_EQ(a.find_first_not_of("abcdefghijklmnopqrstuvwxyz234567"), std::string::npos);
    EXPECT_EQ(a, make_message_id("bob@x.org", "1700000000.M1P2Q3.host,S=10,W=12"));
    EXPECT_NE(a, make_message_id("carol@x.org", "1700000000.M1P2Q3.host,S=10,W=12"));
    EXPECT_NE(make_message_id("ab", "c"), make_message_id("a", "bc"));
}

TEST(received, from_a_maildir_name) {
    auto t = received_from_store_id("1700000000.M123456P99Q1.host,S=1,W=2");
    ASSERT_TRUE(t);
    EXPECT_EQ(format_rfc3339(*t), "2023-11-14T22:13:20.123456Z");
    EXPECT_FALSE(received_from_store_id("m17"));
    EXPECT_FALSE(received_from_store_id("x.M1P2"));
}

TEST(rfc3339, parse_and_format) {
    auto t = parse_rfc3339("2023-11-14T22:13:20Z");
    ASSERT_TRUE(t);
    EXPECT_EQ(format_rfc3339(*t), "2023-11-14T22:13:20.000000Z");
    auto u = parse_rfc3339("2023-11-15t00:13:20.5+02:00");
    ASSERT_TRUE(u);
    EXPECT_EQ(format_rfc3339(*u), "2023-11-14T22:13:20.500000Z");
    EXPECT_EQ(format_rfc3339(*parse_rfc3339("2024-02-29T00:00:00-00:30")), "2024-02-29T00:30:00.000000Z");
    for (const char* bad : {"", "2023-11-14", "2023-11-14T22:13:20", "2023-13-14T22:13:20Z", "2023-11-14T22:13:20Zx",
                            "2023-11-14T22:13:20.Z", "2023-11-14_22:13:20Z", "2023-11-14T22:13:20,Z", "yesterday", "2023-11-14T22:13:20+0200",
                            "2023-02-29T00:00:00Z", "2023-04-31T00:00:00Z", "2100-02-29T00:00:00Z"})
        EXPECT_FALSE(parse_rfc3339(bad)) << bad;
    EXPECT_TRUE(parse_rfc3339("2000-02-29T00:00:00Z"));
    // As date(1) prints them: --rfc-3339=ns (a space for the T), -Ins (a comma before the fraction).
    EXPECT_EQ(format_rfc3339(*parse_rfc3339("2023-11-15 00:13:20.500000000+02:00")), "2023-11-14T22:13:20.500000Z");
    EXPECT_EQ(format_rfc3339(*parse_rfc3339("2023-11-15T00:13:20,500000000+02:00")), "2023-11-14T22:13:20.500000Z");
    // Beyond what the clock holds: its nearest end, in order, never an overflow.
    const auto now = clock_type::now();
    for (const char* later : {"2262-04-12T00:00:00Z", "2300-01-01T00:00:00Z", "5000-01-01T00:00:00Z", "9999-12-31T23:59:59Z"}) {
        auto t = parse_rfc3339(later);
        ASSERT_TRUE(t) << later;
        EXPECT_GT(*t, now) << later;
    }
    for (const char* earlier : {"1677-01-01T00:00:00Z", "1600-01-01T00:00:00Z", "0000-01-01T00:00:00Z"}) {
        auto t = parse_rfc3339(earlier);
        ASSERT_TRUE(t) << earlier;
        EXPECT_LT(*t, clock_type::time_point{}) << earlier;
    }
}

TEST(nocase, ascii_only) {
    EXPECT_TRUE(contains_nocase("Password RESET", "reset"));
    EXPECT_TRUE(contains_nocase("x", ""));
    EXPECT_FALSE(contains_nocase("", "x"));
    // Partial matches that a linear search must back up over (Knuth-Morris-Pratt borders).
    EXPECT_TRUE(contains_nocase("aaaB", "AAB"));
    EXPECT_TRUE(contains_nocase("xabaAbabY", "ABABY"));
    EXPECT_TRUE(contains_nocase("abcabcabd", "abcabd"));
    EXPECT_FALSE(contains_nocase("abcabcab", "abcabd"));
    EXPECT_TRUE(contains_nocase(std::string(1000, 'l') + "Q", std::string(250, 'L') + "q"));
    EXPECT_FALSE(contains_nocase(std::string(1000, 'l') + "x", std::string(250, 'L') + "q"));
    // Every substring of a text is found in it, none of another.
    const std::string text = "aAbaBAabbaAB";
    for (std::size_t i = 0; i < text.size(); ++i)
        for (std::size_t n = 1; i + n <= text.size(); ++n) EXPECT_TRUE(contains_nocase(text, text.substr(i, n)));
    EXPECT_FALSE(contains_nocase(text, "bbb"));
    EXPECT_TRUE(equals_nocase("Bob@X.org", "bob@x.ORG"));
    EXPECT_FALSE(equals_nocase("bob", "bobb"));
}

}  // namespace
