// faults_test.cpp: fault rules on a running SMTP server: a late reply (the runner's act::delay),
// a refused RCPT that is not added, the second DATA hung up with nothing stored, and the same
// client flow once the rules are cleared. Each phase's rules are in the transcripts (faults_*.txt).
#include "mailnet/smtpd/server.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "mailnet/faults.hpp"
#include "support/fixtures.hpp"
#include "support/test_client.hpp"

namespace {

namespace fs = std::filesystem;
namespace smtp = mailnet::smtp;
using namespace std::chrono_literals;
using mailnet::fault_phase;
using mailnet::testing::temp_dir;
using mailnet::testing::test_client;
using fixture = mailnet::testing::server_thread<smtp::server>;

std::size_t files_in(const fs::path& dir) {
    std::error_code ec;
    std::size_t n = 0;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); ++it) ++n;
    return n;
}

mailnet::fault_rule rule(fault_phase p, std::string reply = {}) {
    mailnet::fault_rule r;
    r.phase = p;
    r.reply = std::move(reply);
    return r;
}

TEST(smtp_faults, act_through_the_runner_and_clear) {
    temp_dir dir("mailnet-smtpd-faults");
    mailnet::maildir_options o;
    o.root = dir.path;
    o.fsync = false;
    o.log = mailnet::null_log();
    auto store = mailnet::open_maildir_store(o);
    ASSERT_TRUE(store);
    auto faults = std::make_shared<mailnet::fault_rules>(1);
    auto late = rule(fault_phase::mail);
    late.delay = 500ms;
    late.nth = 1;
    auto busy = rule(fault_phase::rcpt, "452 4.2.2 mailbox busy");
    busy.match.rcpt = "bob@";
    auto hang_up = rule(fault_phase::data);
    hang_up.nth = 2;
    hang_up.disconnect = true;
    ASSERT_EQ(faults->replace({late, busy, hang_up}), "");

    smtp::server_config cfg;
    cfg.listen = {{"smtp", "127.0.0.1", 0, false}};
    cfg.storage = std::move(*store);
    cfg.hostname = "mx.test";
    cfg.log = mailnet::null_log();
    cfg.faults = faults;
    fixture f(cfg);
    const std::string message = "DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n";
    {
        test_client c(f.port());
        c.read_until("\r\n");
        c.send("HELO c\r\n");
        c.read_until("250 mx.test\r\n");
        c.clear();
        const auto start = std::chrono::steady_clock::now();
        c.send("MAIL FROM:<a@example.org>\r\n");
        EXPECT_EQ(c.read_until("\r\n"), "250 2.1.0 Ok\r\n");
        EXPECT_GE(std::chrono::steady_clock::now() - start, 500ms);
        c.clear();
        c.send("RCPT TO:<bob@example.net>\r\nRCPT TO:<carol@example.net>\r\n" + message);
        const std::string expected = "452 4.2.2 mailbox busy\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                                     "250 2.0.0 Ok: queued as";
        EXPECT_EQ(c.read_until("queued as").rfind(expected, 0), 0u) << c.received();
        c.read_until("\r\n");
        c.clear();
        // The second message: read whole, then the connection closes without a reply.
        c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<carol@example.net>\r\n" + message);
        EXPECT_TRUE(c.closed_within(5000ms));
        EXPECT_EQ(c.received(), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    }
    EXPECT_EQ(files_in(dir.path / "carol@example.net" / "new"), 1u);
    EXPECT_EQ(files_in(dir.path / "bob@example.net" / "new"), 0u);

    faults->clear();
    test_client c(f.port());
    c.read_until("\r\n");
    c.send("HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\n" + message);
    EXPECT_NE(c.read_until("queued as").find("250 2.1.5 Ok\r\n"), std::string::npos) << c.received();
    c.read_until("\r\n");
    c.send("QUIT\r\n");
    EXPECT_TRUE(c.closed_within(5000ms));
    EXPECT_EQ(files_in(dir.path / "bob@example.net" / "new"), 1u);
    EXPECT_EQ(files_in(dir.path / "carol@example.net" / "tmp"), 0u);
}

}  // namespace
