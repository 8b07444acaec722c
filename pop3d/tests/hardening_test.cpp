// hardening_test.cpp: pop3d against what a code review and a hostile client found (issue 11):
// output bounded under pipelining, every backend call off the I/O thread, APOP through the
// backend, slow and vanishing clients, failed logins logged and throttled per account.
#include <openssl/evp.h>

#include <asio/post.hpp>
#include <gtest/gtest.h>

#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include "mailnet/dot_stuffing.hpp"
#include "server_fixture.hpp"
#include "support/heap.hpp"

namespace {

using namespace pop3_test;
using mailnet::testing::heap_in_use;

// The process's peak resident set since the last reset_peak_rss(), in KiB (0 if unknown).
std::size_t peak_rss_kib() {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("VmHWM:", 0) == 0) return std::stoul(line.substr(6));
    return 0;
}
bool reset_peak_rss() {
    std::ofstream out("/proc/self/clear_refs");
    out << "5";
    return static_cast<bool>(out.flush());
}

// A mailbox of `n` messages with short UIDs, served through the storage slots.
std::shared_ptr<mailnet::store_functions> mailbox_of(std::size_t n) {
    auto slots = std::make_shared<mailnet::store_functions>();
    slots->on_snapshot = [n](std::string_view) -> mailnet::result<std::vector<mailnet::message_info>> {
        std::vector<mailnet::message_info> v;
        for (std::size_t i = 1; i <= n; ++i) v.push_back({"m" + std::to_string(i), 100 + i, "u" + std::to_string(i), false});
        return v;
    };
    return slots;
}

TEST(pop3_hardening, pipelined_listings_are_produced_as_the_client_reads_them) {
    // 64 KiB of pipelined UIDL/LIST against 1,000 messages asks for about 110 MB of replies;
    // the server must not build them before the client reads (it built one 43 MB string).
    constexpr std::size_t messages = 1000;
    pop3::server_config cfg;
    cfg.auth = users();
    cfg.storage = mailbox_of(messages);
    fixture f(cfg);
    auto c = login(f.port());
    std::string uidl = "+OK unique-id listing follows\r\n", list = "+OK scan listing follows\r\n";
    for (std::size_t i = 1; i <= messages; ++i) {
        uidl += std::to_string(i) + " u" + std::to_string(i) + "\r\n";
        list += std::to_string(i) + " " + std::to_string(100 + i) + "\r\n";
    }
    uidl += ".\r\n";
    list += ".\r\n";
    std::string flood;
    std::size_t commands = 0;
    while (flood.size() + 6 <= 64 * 1024) flood += (commands++ % 2 ? "LIST\r\n" : "UIDL\r\n");
    const bool measurable = reset_peak_rss();
    const auto before = peak_rss_kib();
    const auto heap_before = heap_in_use();
    c->send(flood);
    std::this_thread::sleep_for(1s);  // the server does what it can without a reader
    const auto heap_grown = heap_in_use() - std::min(heap_in_use(), heap_before);
    EXPECT_LT(heap_grown, 4u << 20) << "the server holds replies nobody read yet";
#if !defined(__SANITIZE_ADDRESS__)
    const auto grown_kib = peak_rss_kib() - before;
    if (measurable && before > 0) {
        EXPECT_LT(grown_kib, 8u * 1024) << "the server built replies nobody read yet";
    } else {
        ADD_FAILURE() << "cannot measure the peak RSS here (/proc/self/status, clear_refs)";
    }
#else
    (void)measurable;
    (void)before;
#endif
    // Then every reply arrives, complete and in order.
    std::size_t ok = 0;
    std::size_t pos = 0;
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (ok < commands && std::chrono::steady_clock::now() < deadline) {
        c->read_until(".\r\n", 2s);
        got += c->received();
        c->clear();
        for (;;) {
            const auto& want = ok % 2 ? list : uidl;
            if (got.size() - pos < want.size()) break;
            ASSERT_EQ(got.compare(pos, want.size(), want), 0) << "reply " << ok << " differs";
            pos += want.size();
            ++ok;
        }
        if (pos > (1u << 20)) {
            got.erase(0, pos);
            pos = 0;
        }
    }
    EXPECT_EQ(ok, commands);
}

// Records on which threads the backends were called.
struct thread_log {
    std::mutex m;
    std::set<std::string> on_io, calls;
    std::thread::id io;
    void note(const char* what) {
        std::lock_guard l(m);
        calls.insert(what);
        if (std::this_thread::get_id() == io) on_io.insert(what);
    }
};

std::string md5_hex(const std::string& s) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(s.data(), s.size(), d, &n, EVP_md5(), nullptr);
    std::string out;
    for (unsigned i = 0; i < n; ++i) {
        static constexpr char hex[] = "0123456789abcdef";
        out += hex[d[i] >> 4];
        out += hex[d[i] & 15];
    }
    return out;
}

std::string apop_timestamp(const std::string& greeting) {
    const auto a = greeting.find('<'), b = greeting.find('>');
    return a == std::string::npos || b == std::string::npos ? "" : greeting.substr(a, b - a + 1);
}

TEST(pop3_hardening, every_backend_call_runs_off_the_io_thread_and_apop_reaches_the_backends_mailbox) {
    auto log = std::make_shared<thread_log>();
    auto auth = std::make_shared<mailnet::auth_functions>();
    // The account "alice" keeps her mail in the mailbox "box-of-alice": every way in must end there.
    auth->on_authenticate = [log](const mailnet::credentials& c) {
        log->note("authenticate");
        return c.user == "alice" && c.password == "secret" ? mailnet::auth_result::ok("alice", "box-of-alice")
                                                           : mailnet::auth_result::fail();
    };
    auth->on_lookup = [log](std::string_view u) -> std::optional<std::string> {
        log->note("lookup");
        if (u == "alice") return "secret";
        return std::nullopt;
    };
    auto slots = std::make_shared<mailnet::store_functions>();
    auto opened = std::make_shared<std::string>();
    slots->on_lock = [log](std::string_view) -> mailnet::result<void> {
        log->note("lock");
        return {};
    };
    slots->on_unlock = [log](std::string_view) { log->note("unlock"); };
    slots->on_snapshot = [log, opened](std::string_view box) -> mailnet::result<std::vector<mailnet::message_info>> {
        log->note("snapshot");
        *opened = box;
        return std::vector<mailnet::message_info>{{"a", 5, "uid-a", false}};
    };
    slots->on_open = [log](std::string_view, std::string_view) -> mailnet::result<mailnet::message> {
        log->note("open");
        return mailnet::message(mailnet::string_source(std::make_shared<const std::string>("abc\n")), 4);
    };
    pop3::server_config cfg;
    cfg.auth = auth;
    cfg.storage = slots;
    cfg.enable_apop = true;
    fixture f(cfg);
    std::promise<std::thread::id> io_id;
    asio::post(f.io, [&] { io_id.set_value(std::this_thread::get_id()); });
    log->io = io_id.get_future().get();

    test_client c(f.port());
    const auto ts = apop_timestamp(c.read_until("\r\n"));
    ASSERT_FALSE(ts.empty()) << "APOP is offered to a loopback peer when enabled";
    c.clear();
    c.send("APOP alice " + md5_hex(ts + "secret") + "\r\nRETR 1\r\nQUIT\r\n");
    EXPECT_NE(c.read_until("+OK bye\r\n").find("+OK 5 octets\r\nabc\r\n.\r\n"), std::string::npos) << c.received();
    EXPECT_EQ(*opened, "box-of-alice") << "APOP used the login name as the mailbox";
    // A second session that just drops: its unlock must run off the I/O thread too.
    {
        test_client d(f.port());
        d.read_until("\r\n");
        d.send("USER alice\r\nPASS secret\r\n");
        d.read_until("logged in");
    }
    std::this_thread::sleep_for(200ms);
    std::lock_guard l(log->m);
    for (const char* call : {"lookup", "authenticate", "lock", "snapshot", "open", "unlock"})
        EXPECT_TRUE(log->calls.count(call)) << call << " was never called";
    EXPECT_TRUE(log->on_io.empty()) << "called on the I/O thread: " << *log->on_io.begin();
}

TEST(pop3_hardening, a_client_that_hangs_up_during_the_failed_login_delay_frees_its_slot) {
    pop3::server_config cfg;
    cfg.auth = users();
    cfg.max_connections = 3;
    fixture f(cfg, 3000ms);
    for (int i = 0; i < 3; ++i) {
        test_client c(f.port());
        c.read_until("\r\n");
        c.send("USER alice\r\nPASS wrong\r\n");
        std::this_thread::sleep_for(100ms);  // the delay has begun
    }  // each hangs up
    std::this_thread::sleep_for(300ms);
    test_client real(f.port());
    EXPECT_NE(real.read_until("\r\n", 2s).find("+OK mailnet POP3 server ready"), std::string::npos)
        << "a slot is still held by a client that left: " << real.received();
}

TEST(pop3_hardening, failed_logins_against_one_account_slow_down_every_address) {
    pop3::server_config cfg;
    cfg.auth = users();
    fixture f(cfg, 1ms);
    const auto attempt = [&](const char* from) {
        test_client c(f.port(), from);
        c.read_until("\r\n");
        c.clear();
        const auto start = std::chrono::steady_clock::now();
        c.send("USER alice\r\nPASS guess\r\n");
        c.read_until("-ERR [AUTH]", 10s);
        return std::chrono::steady_clock::now() - start;
    };
    attempt("127.0.0.2");
    attempt("127.0.0.3");
    EXPECT_GE(attempt("127.0.0.4"), 1900ms) << "a third address guessing alice's password is not slowed";
}

TEST(pop3_hardening, a_command_line_must_complete_within_its_limit) {
    pop3::server_config cfg;
    cfg.auth = users();
    cfg.line_timeout = 1s;
    fixture f(cfg);
    auto c = login(f.port());
    const auto start = std::chrono::steady_clock::now();
    bool closed = false;
    for (int i = 0; i < 20 && !closed; ++i) {  // one octet every 200 ms, never a line end
        c->send("N");
        closed = c->closed_within(200ms);
    }
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_TRUE(closed) << "a line trickling in holds the connection";
    EXPECT_GE(took, 800ms);
    EXPECT_LT(took, 2500ms);
    // An over-long line is dropped as it arrives, but its octets still count as one line.
    auto longer = login(f.port());
    longer->send(std::string(600, 'A'));
    const auto long_start = std::chrono::steady_clock::now();
    bool long_closed = false;
    for (int i = 0; i < 20 && !long_closed; ++i) {
        longer->send("A");
        long_closed = longer->closed_within(200ms);
    }
    EXPECT_TRUE(long_closed) << "an over-long line trickling in holds the connection";
    EXPECT_LT(std::chrono::steady_clock::now() - long_start, 2500ms);
    // Whole lines that arrive split across segments are not a trickle: each partial line
    // has its own limit, so a client pipelining for longer than the limit goes on.
    auto busy = login(f.port());
    busy->send("NOOP\r\nN");
    for (int i = 0; i < 8; ++i) {
        std::this_thread::sleep_for(250ms);
        busy->send("OOP\r\nN");
    }
    busy->send("OOP\r\n");
    std::size_t oks = 0;
    for (std::size_t at = 0; (at = busy->read_until("+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n", 3s).find("+OK\r\n", at)) != std::string::npos; at += 5)
        ++oks;
    EXPECT_EQ(oks, 10u) << busy->received();
}

TEST(pop3_hardening, authorization_ends_within_the_login_deadline) {
    pop3::server_config cfg;
    cfg.auth = users();
    cfg.login_timeout = 1s;
    fixture f(cfg);
    const auto start = std::chrono::steady_clock::now();  // the limit runs from the accept
    test_client c(f.port());
    c.read_until("\r\n");
    bool closed = false;
    for (int i = 0; i < 20 && !closed; ++i) {  // busy with valid commands, but never logging in
        c.send("CAPA\r\n");
        closed = c.closed_within(200ms);
    }
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_TRUE(closed);
    EXPECT_GE(took, 900ms);
    EXPECT_LT(took, 2500ms);
    EXPECT_EQ(c.received().find("-ERR"), std::string::npos) << "closed by another limit: " << c.received();
    // Nor does a client that reads our replies slowly (here: not at all) outlast it: 64 KiB of
    // pipelined CAPA owe it 1.6 MB of replies, whose writes must not renew the deadline.
    {
        test_client slow(f.port());
        std::string capas;
        while (capas.size() + 6 <= 64 * 1024) capas += "CAPA\r\n";
        slow.send(capas);
        std::this_thread::sleep_for(1800ms);
        EXPECT_TRUE(f.srv->connections().empty()) << "a client that reads nothing holds its slot past the login limit";
    }
    // A session that logged in is not held to it.
    auto in = login(f.port());
    std::this_thread::sleep_for(1200ms);
    in->send("NOOP\r\n");
    EXPECT_NE(in->read_until("+OK\r\n", 2s).find("+OK\r\n"), std::string::npos);
}

TEST(pop3_hardening, a_session_closed_by_its_core_streams_what_it_owes_before_giving_up_its_mailbox) {
    // RETR, then ten bad commands: the core closes the session. The message still goes out
    // whole, read while the session holds its lock; the lock is released after.
    auto locked = std::make_shared<std::atomic<bool>>(false);
    auto unlocked_read = std::make_shared<std::atomic<bool>>(false);
    auto slots = std::make_shared<mailnet::store_functions>();
    slots->on_lock = [locked](std::string_view) -> mailnet::result<void> {
        locked->store(true);
        return {};
    };
    slots->on_unlock = [locked](std::string_view) { locked->store(false); };
    slots->on_snapshot = [](std::string_view) -> mailnet::result<std::vector<mailnet::message_info>> {
        return std::vector<mailnet::message_info>{{"a", 5, "uid-a", false}};
    };
    slots->on_open = [locked, unlocked_read](std::string_view, std::string_view) -> mailnet::result<mailnet::message> {
        if (!locked->load()) unlocked_read->store(true);
        return mailnet::message(mailnet::string_source(std::make_shared<const std::string>("abc\n")), 4);
    };
    pop3::server_config cfg;
    cfg.auth = users();
    cfg.storage = slots;
    fixture f(cfg);
    auto c = login(f.port());
    std::string flood = "RETR 1\r\n";
    for (int i = 0; i < 10; ++i) flood += "BOGUS\r\n";
    c->send(flood);
    EXPECT_TRUE(c->closed_within(3s));
    EXPECT_EQ(c->received().rfind("+OK 5 octets\r\nabc\r\n.\r\n", 0), 0u) << c->received();
    EXPECT_FALSE(unlocked_read->load()) << "the message was read after the mailbox was unlocked";
    EXPECT_FALSE(locked->load()) << "the lock was never released";
}

TEST(pop3_hardening, a_message_cut_short_is_never_followed_by_what_was_queued_after_it) {
    // RETR 1 (small), RETR 2 (1 MiB announced, the store gives 4 octets less), then ten bad
    // commands: the core closes. Message 2 must end without its final dot and nothing may
    // follow it (no replayed "+OK" and message 1 with a dot that would end it), and no message
    // is opened once the mailbox is unlocked.
    auto locked = std::make_shared<std::atomic<bool>>(false);
    auto unlocked_open = std::make_shared<std::atomic<bool>>(false);
    const auto big = std::make_shared<const std::string>(std::string(1 << 20, 'a') + "\n");
    auto slots = std::make_shared<mailnet::store_functions>();
    slots->on_lock = [locked](std::string_view) -> mailnet::result<void> {
        locked->store(true);
        return {};
    };
    slots->on_unlock = [locked](std::string_view) { locked->store(false); };
    slots->on_snapshot = [big](std::string_view) -> mailnet::result<std::vector<mailnet::message_info>> {
        return std::vector<mailnet::message_info>{{"a", 5, "uid-a", false}, {"b", big->size() + 1, "uid-b", false}};
    };
    slots->on_open = [locked, unlocked_open, big](std::string_view, std::string_view id) -> mailnet::result<mailnet::message> {
        if (!locked->load()) unlocked_open->store(true);
        if (id == "a") return mailnet::message(mailnet::string_source(std::make_shared<const std::string>("abc\n")), 4);
        // Announced whole, but the source ends 4 octets early.
        return mailnet::message(mailnet::string_source(std::make_shared<const std::string>(big->substr(0, big->size() - 4))),
                                big->size());
    };
    pop3::server_config cfg;
    cfg.auth = users();
    cfg.storage = slots;
    fixture f(cfg);
    auto c = login(f.port());
    std::string flood = "RETR 1\r\nRETR 2\r\n";
    for (int i = 0; i < 10; ++i) flood += "BOGUS\r\n";
    c->send(flood);
    EXPECT_TRUE(c->closed_within(5s));
    const std::string& got = c->received();
    const auto second = got.find("+OK " + std::to_string(big->size() + 1) + " octets\r\n");
    ASSERT_NE(second, std::string::npos) << got.substr(0, 200);
    const std::string after = got.substr(second);
    EXPECT_EQ(after.find("\r\n.\r\n"), std::string::npos) << "the cut message was terminated";
    EXPECT_EQ(after.find("+OK"), 0u);
    EXPECT_EQ(after.find("+OK", 1), std::string::npos) << "something followed the cut message";
    EXPECT_FALSE(unlocked_open->load()) << "a message was opened after the unlock";
}

TEST(pop3_hardening, every_failed_login_is_logged_with_user_address_and_reason) {
    auto lines = std::make_shared<std::vector<std::string>>();
    auto m = std::make_shared<std::mutex>();
    pop3::server_config cfg;
    cfg.auth = users();
    fixture f(cfg, 0ms, [lines, m](mailnet::log_level, std::string_view text) {
        std::lock_guard l(*m);
        lines->emplace_back(text);
    });
    test_client c(f.port());
    c.read_until("\r\n");
    // authzid "bob", authcid "alice": no proxy logins; then a malformed response; then a wrong password.
    // Then a name that holds " from ADDR: ": its spaces are escaped, so no pattern reads that
    // address as the peer's.
    c.send("AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\nAUTH PLAIN YWxpY2U=\r\nAUTH PLAIN AHggZnJvbSAyMDMuMC4xMTMuOTogeQBub3Bl\r\n");
    c.read_until("malformed");
    // The third failure's line is logged before its reply, which may take a while: waited for.
    std::string all;
    for (const auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;
         std::this_thread::sleep_for(20ms)) {
        std::lock_guard l(*m);
        all.clear();
        for (const auto& x : *lines) all += x + "\n";
        if (all.find("failed login for x") != std::string::npos) break;
    }
    EXPECT_NE(all.find("pop3 failed login for alice from 127.0.0.1: SASL authorization identity differs"),
              std::string::npos) << all;
    EXPECT_NE(all.find("pop3 failed login for  from 127.0.0.1: malformed SASL PLAIN response"), std::string::npos)
        << all;
    EXPECT_NE(all.find("pop3 failed login for x\\x20from\\x20203.0.113.9:\\x20y from 127.0.0.1: "), std::string::npos)
        << all;
    EXPECT_EQ(all.find(" from 203.0.113.9"), std::string::npos) << all;
}

}  // namespace
