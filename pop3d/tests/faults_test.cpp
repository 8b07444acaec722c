// faults_test.cpp: fault rules on a running POP3 server (the runner's act::delay, a reply in
// place of the login's, a hang-up) and what a client sees once they are cleared. Each phase's
// rules are in the transcripts (faults_*.txt).
#include <gtest/gtest.h>

#include <thread>

#include "mailnet/faults.hpp"
#include "server_fixture.hpp"

namespace {

using namespace pop3_test;

mailnet::fault_rule rule(mailnet::fault_phase p, std::string reply = {}) {
    mailnet::fault_rule r;
    r.phase = p;
    r.reply = std::move(reply);
    return r;
}

TEST(pop3_faults, act_through_the_runner_and_clear) {
    auto faults = std::make_shared<mailnet::fault_rules>(1);
    auto late = rule(mailnet::fault_phase::connect);
    late.delay = 400ms;
    late.nth = 1;
    auto broken = rule(mailnet::fault_phase::pop3_login, "-ERR [AUTH] logins are broken today");
    auto hang_up = rule(mailnet::fault_phase::connect);
    hang_up.nth = 2;
    hang_up.disconnect = true;
    ASSERT_EQ(faults->replace({late, broken, hang_up}), "");
    pop3::server_config cfg;
    cfg.auth = users();
    cfg.faults = faults;
    fixture f(cfg);
    {
        // The first greeting comes late (a timer, not a blocked thread: the hang-up below is
        // served meanwhile), then every login fails with the rule's reply.
        const auto start = std::chrono::steady_clock::now();
        test_client c(f.port());
        std::this_thread::sleep_for(50ms);  // accepted first: the first connect event
        test_client second(f.port());
        EXPECT_TRUE(second.closed_within(2000ms)) << "the second connection is closed before its greeting";
        EXPECT_EQ(second.read_until("\r\n"), "");
        EXPECT_NE(c.read_until("\r\n").find("+OK"), std::string::npos);
        EXPECT_GE(std::chrono::steady_clock::now() - start, 400ms);
        c.send("USER alice\r\nPASS secret\r\n");
        EXPECT_NE(c.read_until("broken today\r\n").find("+OK\r\n-ERR [AUTH] logins are broken today\r\n"),
                  std::string::npos)
            << c.read_until("");
    }
    faults->clear();
    auto c = login(f.port());
    c->send("QUIT\r\n");
    EXPECT_NE(c->read_until("\r\n").find("+OK"), std::string::npos);
}

}  // namespace
