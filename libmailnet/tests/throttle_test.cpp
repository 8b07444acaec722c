// throttle_test.cpp: failed logins per peer address: delays grow within the window, are
// capped, are forgotten after it, and the table stays bounded under a flood of addresses.
#include "mailnet/auth/throttle.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using namespace std::chrono_literals;
using mailnet::login_throttle;

TEST(login_throttle, each_earlier_failure_in_the_window_adds_a_step_up_to_the_cap) {
    login_throttle t(60s);
    const auto t0 = login_throttle::clock::time_point{} + 1000s;
    EXPECT_EQ(t.failed("10.0.0.1", t0), 0ms);
    EXPECT_EQ(t.failed("10.0.0.1", t0 + 1s), 1000ms);
    EXPECT_EQ(t.failed("10.0.0.1", t0 + 2s), 2000ms);
    EXPECT_EQ(t.failures("10.0.0.1", t0 + 2s), 3u);
    EXPECT_EQ(t.failed("10.0.0.2", t0 + 2s), 0ms) << "another address has its own count";
    for (int i = 0; i < 30; ++i) t.failed("10.0.0.1", t0 + 3s);
    EXPECT_EQ(t.failed("10.0.0.1", t0 + 4s), 15000ms) << "capped";
    EXPECT_EQ(t.failed("10.0.0.3", t0, 100ms, 250ms), 0ms);
    EXPECT_EQ(t.failed("10.0.0.3", t0, 100ms, 250ms), 100ms);
    t.failed("10.0.0.3", t0, 100ms, 250ms);
    EXPECT_EQ(t.failed("10.0.0.3", t0, 100ms, 250ms), 250ms);
}

TEST(login_throttle, failures_are_forgotten_once_a_window_passes_without_one) {
    login_throttle t(60s);
    const auto t0 = login_throttle::clock::time_point{} + 1000s;
    t.failed("10.0.0.1", t0);
    t.failed("10.0.0.1", t0 + 10s);
    EXPECT_EQ(t.failures("10.0.0.1", t0 + 69s), 2u);
    EXPECT_EQ(t.failures("10.0.0.1", t0 + 71s), 0u);
    EXPECT_EQ(t.failed("10.0.0.1", t0 + 71s), 0ms) << "forgotten";
    EXPECT_EQ(t.failed("10.0.0.1", t0 + 72s), 1000ms);
}

TEST(login_throttle, a_guesser_pacing_its_failures_gets_no_fresh_allowance_each_window) {
    // Failures at 0, 56, 59 and 63 s: the one at 63 s follows three within a minute of each
    // other (a window counted from the first failure was over at 60 s and counted one).
    login_throttle t(60s);
    const auto t0 = login_throttle::clock::time_point{} + 1000s;
    t.failed("10.0.0.1", t0);
    t.failed("10.0.0.1", t0 + 56s);
    t.failed("10.0.0.1", t0 + 59s);
    EXPECT_EQ(t.failed("10.0.0.1", t0 + 63s), 3000ms);
    EXPECT_EQ(t.failed("10.0.0.1", t0 + 120s), 4000ms) << "57 s after the last";
}

TEST(login_throttle, the_table_stays_bounded_under_a_flood_of_addresses) {
    login_throttle t(60s, 100);
    const auto t0 = login_throttle::clock::time_point{} + 1000s;
    for (int i = 0; i < 5000; ++i) t.failed("10.1." + std::to_string(i), t0 + std::chrono::milliseconds(i));
    EXPECT_LE(t.peers(), 100u);
    // The newest addresses are the ones kept.
    EXPECT_EQ(t.failures("10.1.4999", t0 + 5s), 1u);
    EXPECT_EQ(t.failures("10.1.0", t0 + 5s), 0u);
}

TEST(login_throttle, a_key_under_constant_attack_survives_a_flood_of_junk_keys) {
    // A guesser mixes thousands of junk names with guesses at one account: the account's count
    // must not be evicted with the junk (its window started first, but it keeps failing).
    login_throttle t(60s, 100);
    const auto t0 = login_throttle::clock::time_point{} + 1000s;
    for (int i = 0; i < 5000; ++i) {
        const auto now = t0 + std::chrono::milliseconds(i);
        t.failed("junk " + std::to_string(i), now);
        if (i % 10 == 0) t.failed("account alice", now);
    }
    EXPECT_LE(t.peers(), 100u);
    EXPECT_EQ(t.failures("account alice", t0 + 5s), 500u);
}

}  // namespace
