// server_test.cpp: the SMTP server object over real sockets: delivery into a Maildir with trace
// headers, the callbacks (throwing ones too), AUTH, users mode, a client that leaves mid-DATA,
// a store that fails. The protocol rules themselves are in the transcripts.
#include "mailnet/smtpd/server.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <future>
#include <regex>
#include <sstream>
#include <thread>

#include "mailnet/net/stream.hpp"
#include "mailnet/net/tls.hpp"
#include "support/fixtures.hpp"
#include "support/test_client.hpp"
#include "test_certs.hpp"

namespace {

namespace fs = std::filesystem;
namespace smtp = mailnet::smtp;
using namespace std::chrono_literals;
using mailnet::testing::log_capture;
using mailnet::testing::temp_dir;
using mailnet::testing::test_client;

// 2026-01-02 03:04:05 UTC: Received: headers are exact in tests.
std::chrono::system_clock::time_point fixed_time() {
    return std::chrono::system_clock::from_time_t(1767323045);
}
constexpr const char* fixed_date = "Fri, 02 Jan 2026 03:04:05 +0000";

std::shared_ptr<mailnet::store> maildir(const fs::path& root) {
    mailnet::maildir_options o;
    o.root = root;
    o.fsync = false;
    o.log = mailnet::null_log();
    auto s = mailnet::open_maildir_store(o);
    EXPECT_TRUE(s);
    return std::move(*s);
}

smtp::server_config config(std::shared_ptr<mailnet::store> store, mailnet::log_sink log = mailnet::null_log()) {
    smtp::server_config c;
    c.listen = {{"smtp", "127.0.0.1", 0, false}};
    c.storage = std::move(store);
    c.hostname = "mx.test";
    c.clock = fixed_time;
    c.session_limits.auth_failure_delay = 0ms;
    c.log = std::move(log);
    return c;
}

using fixture = mailnet::testing::server_thread<smtp::server>;

std::vector<std::string> files_in(const fs::path& dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        std::ifstream in(e.path(), std::ios::binary);
        std::ostringstream s;
        s << in.rdbuf();
        out.push_back(s.str());
    }
    return out;
}

// Greeting and EHLO consumed.
std::unique_ptr<test_client> greeted(std::uint16_t port) {
    auto c = std::make_unique<test_client>(port);
    c->read_until("\r\n");
    c->send("EHLO client.example\r\n");
    c->read_until("250 SMTPUTF8\r\n");
    c->clear();
    return c;
}

// The queue id of the last "250 2.0.0 Ok: queued as ID" read.
std::string queued_id(const std::string& got) {
    const auto p = got.rfind("queued as ");
    if (p == std::string::npos) return {};
    return got.substr(p + 10, got.find("\r\n", p) - p - 10);
}

bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds limit = 5000ms) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() > end) return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

TEST(smtp_server, a_message_reaches_each_recipient_mailbox_once_with_its_trace_headers) {
    temp_dir dir("mailnet-smtpd");
    fixture f(config(maildir(dir.path)));
    auto c = greeted(f.port());
    // Pipelined (RFC 2920): the whole transaction in one write.
    c->send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nRCPT TO:<Carol@Example.NET>\r\n"
            "RCPT TO:<bob@EXAMPLE.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->send("Subject: hi\r\n\r\n..a dot line\r\nlast\r\n.\r\n");
    const auto got = c->read_until("queued as");
    c->read_until("\r\n");
    EXPECT_NE(got.find("250 2.1.5 Ok (duplicate recipient)"), std::string::npos) << got;
    const auto id = queued_id(c->read_until("\r\n"));
    ASSERT_FALSE(id.empty()) << got;
    const std::string expected = std::string("Return-Path: <alice@example.org>\n") +
                                 "Received: from client.example ([127.0.0.1])\n\tby mx.test (mailnet) with ESMTP id " +
                                 id + ";\n\t" + fixed_date + "\nSubject: hi\n\n.a dot line\nlast\n";
    const auto bob = files_in(dir.path / "bob@example.net" / "new");
    const auto carol = files_in(dir.path / "carol@example.net" / "new");
    ASSERT_EQ(bob.size(), 1u) << "the same address twice is one copy";
    ASSERT_EQ(carol.size(), 1u) << "the mailbox is the address lowercased";
    EXPECT_EQ(bob[0], expected);
    EXPECT_EQ(carol[0], expected) << "no 'for' with two recipients: a copy shows no other address";
}

TEST(smtp_server, a_single_recipient_is_named_in_received_and_protocols_follow_rfc_3848) {
    temp_dir dir("mailnet-smtpd");
    fixture f(config(maildir(dir.path)));
    auto c = std::make_unique<test_client>(f.port());
    c->read_until("\r\n");
    c->send("HELO old.example\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->send("x\r\n.\r\n");
    const auto id = queued_id(c->read_until("queued as") + c->read_until("\r\n"));
    const auto bob = files_in(dir.path / "bob@example.net" / "new");
    ASSERT_EQ(bob.size(), 1u);
    EXPECT_EQ(bob[0], "Return-Path: <>\nReceived: from old.example ([127.0.0.1])\n\tby mx.test (mailnet) with SMTP id " +
                          id + "\n\tfor <bob@example.net>; " + fixed_date + "\nx\n");
}

TEST(smtp_server, received_writes_an_ehlo_name_a_parser_could_misread_with_underscores) {
    smtp::transaction_info t;
    t.mail.sender = mailnet::parse_path("<a@example.org>", {})->mailbox;
    t.id = "ID";
    t.peer_address = "192.0.2.1";
    t.protocol = "ESMTP";
    t.hostname = "mx.test";
    t.received = fixed_time();
    t.helo = "a;b(c)\"d\\e<f>,g@h";
    EXPECT_EQ(smtp::trace_headers(t), std::string("Return-Path: <a@example.org>\nReceived: from a_b_c__d_e_f__g_h "
                                                  "([192.0.2.1])\n\tby mx.test (mailnet) with ESMTP id ID;\n\t") +
                                          fixed_date + "\n");
    t.helo = "[IPv6:2001:db8::1]";
    EXPECT_NE(smtp::trace_headers(t).find("from [IPv6:2001:db8::1] ("), std::string::npos) << "literals unchanged";
    t.helo = "my_pc.example-1";
    EXPECT_NE(smtp::trace_headers(t).find("from my_pc.example-1 ("), std::string::npos);
}

TEST(smtp_server, before_reply_is_awaited_after_the_message_is_stored_and_before_its_250) {
    temp_dir dir("mailnet-smtpd");
    auto cfg = config(maildir(dir.path));
    std::atomic<int> stored_when_called{-1};
    std::atomic<bool> finished{false};
    cfg.before_reply = [&](const smtp::transaction_info&) -> asio::awaitable<void> {
        stored_when_called = static_cast<int>(files_in(dir.path / "bob@example.net" / "new").size());
        asio::steady_timer t(co_await asio::this_coro::executor, 300ms);
        co_await t.async_wait(asio::use_awaitable);
        finished = true;
    };
    fixture f(std::move(cfg));
    auto c = greeted(f.port());
    c->send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->send("Subject: hi\r\n\r\nbody\r\n.\r\n");
    const auto got = c->read_until("queued as");
    EXPECT_TRUE(finished) << "the 250 went out before before_reply was done";
    EXPECT_EQ(stored_when_called.load(), 1) << "before_reply ran before the message was stored";
}

TEST(smtp_server, a_client_that_leaves_mid_data_delivers_nothing_and_leaves_no_file) {
    temp_dir dir("mailnet-smtpd");
    fixture f(config(maildir(dir.path)));
    {
        auto c = greeted(f.port());
        // A first message makes bob's mailbox, so the next one is written into its tmp/ as it
        // comes (a new mailbox's message is spooled until its end: see the test below).
        c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
        c->read_until("354 ");
        c->send("first\r\n.\r\n");
        c->read_until("queued as");
        c->read_until("\r\n");
        c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
        c->read_until("354 ");
        // More than one write-out piece, so a tmp/ file exists when the client goes.
        const std::string line(998, 'x');
        for (int i = 0; i < 600; ++i) c->send(line + "\r\n");
        // Every piece written so far has been handed to the store before the client leaves.
        ASSERT_TRUE(wait_for([&] { return !files_in(dir.path / "bob@example.net" / "tmp").empty(); }))
            << "the message was being written out";
    }
    ASSERT_TRUE(wait_for([&] { return f.srv->connections().empty(); }));
    ASSERT_TRUE(wait_for([&] { return files_in(dir.path / "bob@example.net" / "tmp").empty(); }));
    EXPECT_EQ(files_in(dir.path / "bob@example.net" / "new").size(), 1u) << "the first message only";
}

TEST(smtp_server, a_long_message_to_a_new_mailbox_makes_the_mailbox_only_once_it_is_accepted) {
    // Past 64 KiB a message is written out before its end. For a mailbox the store does not
    // know, that would make DIR/<mailbox>/ for a message that may still be refused (its size, a
    // bare line end) or abandoned: its octets are spooled instead, and copied into the
    // delivery once the message is whole.
    temp_dir dir("mailnet-smtpd");
    auto cfg = config(maildir(dir.path));
    cfg.session_limits.max_message_octets = 400 * 1024;
    fixture f(cfg);
    const std::string line(998, 'x');
    auto c = greeted(f.port());
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bare@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    for (int i = 0; i < 200; ++i) c->send(line + "\r\n");
    c->send("a bare\nline end\r\n.\r\n");
    EXPECT_NE(c->read_until("550 5.6.0").find("550 5.6.0"), std::string::npos);
    c->clear();
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<big@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    for (int i = 0; i < 500; ++i) c->send(line + "\r\n");
    c->send(".\r\n");
    EXPECT_NE(c->read_until("552 5.3.4").find("552 5.3.4"), std::string::npos);
    c->clear();
    {
        auto gone = greeted(f.port());
        gone->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<gone@example.net>\r\nDATA\r\n");
        gone->read_until("354 ");
        for (int i = 0; i < 200; ++i) gone->send(line + "\r\n");
    }
    ASSERT_TRUE(wait_for([&] { return f.srv->connections().size() == 1; }));
    // An accepted one, to a new mailbox and to one that exists, arrives whole (spool, then the rest).
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    std::string body;
    for (int i = 0; i < 200; ++i) body += std::to_string(i) + line.substr(0, 500) + "\r\n";
    c->send(body + ".\r\n");
    EXPECT_NE(c->read_until("queued as").find("250 2.0.0 Ok: queued as"), std::string::npos);
    for (const char* box : {"bare@example.net", "big@example.net", "gone@example.net"})
        EXPECT_FALSE(fs::exists(dir.path / box)) << box << ": no mailbox for a message never accepted";
    const auto carol = files_in(dir.path / "carol@example.net" / "new");
    ASSERT_EQ(carol.size(), 1u);
    std::string stored = body;
    for (std::size_t at; (at = stored.find("\r\n")) != std::string::npos;) stored.replace(at, 2, "\n");
    ASSERT_GT(carol[0].size(), stored.size());
    EXPECT_EQ(carol[0].substr(carol[0].size() - stored.size()), stored) << "the spooled part and the rest, in order";
    EXPECT_EQ(carol[0].rfind("Return-Path: <a@example.org>\nReceived: from client.example", 0), 0u);
}

TEST(smtp_server, a_spooled_message_whose_mailbox_is_made_meanwhile_arrives_whole) {
    // The spool began while dave's mailbox was new; another session makes it before the end.
    // The spooled part must still go into the delivery (the committer alone would take only
    // the octets after it).
    temp_dir dir("mailnet-smtpd");
    fixture f(config(maildir(dir.path)));
    const std::string line(998, 'y');
    auto a = greeted(f.port());
    a->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<dave@example.net>\r\nDATA\r\n");
    a->read_until("354 ");
    std::string body;
    for (int i = 0; i < 100; ++i) body += std::to_string(i) + line.substr(0, 900) + "\r\n";
    a->send(body);
    std::this_thread::sleep_for(100ms);  // the first 64 KiB spooled
    EXPECT_FALSE(fs::exists(dir.path / "dave@example.net"));
    auto b = greeted(f.port());
    b->send("MAIL FROM:<b@example.org>\r\nRCPT TO:<dave@example.net>\r\nDATA\r\n");
    b->read_until("354 ");
    b->send("short\r\n.\r\n");
    ASSERT_NE(b->read_until("queued as").find("250 2.0.0 Ok: queued as"), std::string::npos);
    const std::string tail = "the end of the long one\r\n";
    a->send(tail + ".\r\n");
    ASSERT_NE(a->read_until("queued as").find("250 2.0.0 Ok: queued as"), std::string::npos);
    std::string stored = body + tail;
    for (std::size_t at; (at = stored.find("\r\n")) != std::string::npos;) stored.replace(at, 2, "\n");
    const auto dave = files_in(dir.path / "dave@example.net" / "new");
    ASSERT_EQ(dave.size(), 2u);
    const auto& longer = dave[0].size() > dave[1].size() ? dave[0] : dave[1];
    ASSERT_GT(longer.size(), stored.size());
    EXPECT_EQ(longer.substr(longer.size() - stored.size()), stored);
}

TEST(smtp_server, a_client_sending_without_a_pause_does_not_hold_up_another_clients_greeting) {
    // No store and no handler (the null deliver): no message octet goes to the blocking pool, so
    // only the connection's own reads give the other connections their turn. Plain reads that
    // find input waiting complete at once, without the reactor; after a few in a row one goes
    // through it all the same, or a peer whose input never runs dry would hold the I/O thread.
    fixture f(config(nullptr));
    auto flood = greeted(f.port());
    flood->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    flood->read_until("354 ");
    std::atomic<bool> stop{false};
    std::thread writer([&] {
        // Short lines: each costs the server more than the client, so the input never runs dry.
        std::string lines;
        for (int i = 0; i < 64 * 1024; ++i) lines += "x\r\n";
        while (!stop) flood->send(lines);  // past the size limit too: the core reads to the final dot
    });
    std::this_thread::sleep_for(200ms);  // the flood is under way
    const auto t0 = std::chrono::steady_clock::now();
    test_client other(f.port());
    const std::string got = other.read_until("\r\n", 5000ms);
    const auto waited = std::chrono::steady_clock::now() - t0;
    stop = true;
    writer.join();
    flood->clear();
    flood->send("\r\n.\r\n");
    const std::string reply = flood->read_until("\r\n");  // 250, or 552 if it passed the size limit
    EXPECT_TRUE(reply.starts_with("250 ") || reply.starts_with("552 ")) << "the flood is still served: " << reply;
    EXPECT_EQ(got.rfind("220 mx.test ESMTP", 0), 0u) << got;
    // Without the bound it waited 86-5001 ms; 2 s leaves room for ASan on a loaded CI.
    EXPECT_LT(waited, 2000ms) << "the greeting waited for the flood";
}

TEST(smtp_server, a_shutdown_lets_a_message_being_sent_finish_and_closes_idle_sessions_at_once) {
    temp_dir dir("mailnet-smtpd");
    fixture f(config(maildir(dir.path)));
    auto idle = greeted(f.port());
    auto sending = greeted(f.port());
    auto chunked = greeted(f.port());
    sending->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    sending->read_until("354 ");
    sending->send("Subject: half\r\n");
    chunked->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<carol@example.net>\r\nBDAT 7\r\nfirst\r\n");
    chunked->read_until("7 octets received");
    ASSERT_TRUE(wait_for([&] { return f.srv->connections().size() == 3; }));
    std::this_thread::sleep_for(50ms);  // every session back waiting for input
    f.srv->destroy(mailnet::net::server::destroy_mode::defer);
    EXPECT_TRUE(idle->closed_within(2000ms)) << "an idle session closes at once";
    EXPECT_TRUE(chunked->closed_within(2000ms)) << "between chunks the client is at a command boundary";
    sending->send("\r\nthe rest\r\n.\r\n");
    EXPECT_NE(sending->read_until("queued as").find("250 2.0.0 Ok: queued as"), std::string::npos);
    EXPECT_TRUE(sending->closed_within(2000ms)) << "and closes once the exchange is done";
    EXPECT_EQ(files_in(dir.path / "bob@example.net" / "new").size(), 1u);
    EXPECT_TRUE(files_in(dir.path / "carol@example.net" / "new").empty());
    EXPECT_TRUE(wait_for([&] { return files_in(dir.path / "carol@example.net" / "tmp").empty(); }));
}

TEST(smtp_server, a_shutdown_says_421_to_sessions_waiting_for_a_command_and_after_a_message_being_sent) {
    // RFC 5321 3.8: a server that shuts down sends 421 before it closes. A session waiting for a
    // command (half of one too, or between BDAT chunks) reads exactly that line, then EOF; a
    // message being sent finishes and gets its 250 first.
    temp_dir dir("mailnet-smtpd");
    fixture f(config(maildir(dir.path)));
    auto idle = greeted(f.port());
    auto partial = greeted(f.port());
    auto chunked = greeted(f.port());
    auto sending = greeted(f.port());
    partial->send("NOO");
    chunked->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<carol@example.net>\r\nBDAT 7\r\nfirst\r\n");
    chunked->read_until("7 octets received\r\n");
    chunked->clear();
    sending->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    sending->read_until("354 ");
    sending->read_until("\r\n");
    sending->clear();
    sending->send("Subject: half\r\n");
    ASSERT_TRUE(wait_for([&] { return f.srv->connections().size() == 4; }));
    std::this_thread::sleep_for(50ms);  // every session back waiting for input
    f.srv->destroy(mailnet::net::server::destroy_mode::defer);
    const std::string notice = "421 4.3.2 mx.test Service shutting down\r\n";
    for (auto* c : {idle.get(), partial.get(), chunked.get()}) {
        EXPECT_TRUE(c->closed_within(2000ms)) << "closed at once";
        EXPECT_EQ(c->received(), notice);
    }
    sending->send("\r\nthe rest\r\n.\r\n");
    EXPECT_TRUE(sending->closed_within(3000ms)) << "closed once the exchange is done";
    EXPECT_TRUE(std::regex_match(sending->received(), std::regex("250 2\\.0\\.0 Ok: queued as \\S+\r\n" + notice)))
        << sending->received();
    EXPECT_EQ(files_in(dir.path / "bob@example.net" / "new").size(), 1u);
    EXPECT_TRUE(files_in(dir.path / "carol@example.net" / "new").empty());
}

// An implicit-TLS (smtps) client on a thread of its own: `greeting` is set once the first line
// is read, `rest` with everything read after it, once the server closes ("" and a failure if
// not within 10 s); `clean` (set before `rest`) whether that close was a TLS close_notify.
struct smtps_client {
    std::promise<std::string> greeting, rest;
    bool clean = false;
    std::thread thread;

    smtps_client(std::uint16_t port, const fs::path& ca) {
        thread = std::thread([this, port, ca] {
            const mailnet::net::tls_client_options verify{ca, {}, false};
            auto ctx = mailnet::net::make_client_tls(verify);
            asio::io_context io;
            bool greeted = false, done = false;
            asio::co_spawn(
                io,
                [&]() -> asio::awaitable<void> {
                    constexpr auto tuple = asio::experimental::as_tuple(asio::use_awaitable);
                    asio::ip::tcp::socket sock(io);
                    auto [ec] = co_await sock.async_connect({asio::ip::make_address("127.0.0.1"), port}, tuple);
                    if (ec || !ctx) co_return;
                    mailnet::net::stream s(std::move(sock));
                    const auto failed = co_await s.client_handshake(**ctx, "localhost", verify, std::chrono::seconds(5));
                    if (failed) co_return;
                    std::string got;
                    std::array<char, 4096> buf{};
                    for (;;) {
                        const auto n = co_await s.read_some(asio::buffer(buf), ec);
                        if (ec) break;
                        got.append(buf.data(), n);
                        if (const auto end = got.find("\r\n"); !greeted && end != std::string::npos) {
                            greeted = true;
                            greeting.set_value(got.substr(0, end + 2));
                            got.erase(0, end + 2);
                        }
                    }
                    clean = ec == asio::error::eof;
                    co_await s.shutdown(std::chrono::seconds(1));
                    done = true;
                    rest.set_value(got);
                },
                asio::detached);
            io.run_for(std::chrono::seconds(10));
            if (!greeted) greeting.set_value("");
            if (!done) rest.set_value("");
        });
    }
    ~smtps_client() { thread.join(); }

    // The greeting, or "" if none came within 10 s.
    std::string first_line() {
        auto f = greeting.get_future();
        return f.wait_for(10s) == std::future_status::ready ? f.get() : std::string();
    }
    // Everything after the greeting once the server closed, or "" if it did not within 10 s.
    std::string rest_at_close() {
        auto f = rest.get_future();
        return f.wait_for(10s) == std::future_status::ready ? f.get() : std::string();
    }
};

// An smtps server over a Maildir in `dir`, with `pki`'s certificate.
smtp::server_config smtps_config(const fs::path& dir, const mailnet::test_support::test_pki& pki) {
    auto cfg = config(maildir(dir));
    cfg.listen = {{"smtps", "127.0.0.1", 0, true}};
    auto tls = mailnet::net::make_server_tls({pki.server_cert, pki.server_key});
    EXPECT_TRUE(tls);
    if (tls) cfg.tls = *tls;
    return cfg;
}

TEST(smtp_server, a_shutdown_says_421_over_tls_too_and_closes_with_close_notify) {
    // The session's read is cut to say it: over TLS the stream must still write and shut down.
    auto pki = mailnet::test_support::test_pki::create();
    temp_dir dir("mailnet-smtpd");
    fixture f(smtps_config(dir.path, pki));
    smtps_client c(f.port(), pki.ca_cert);
    EXPECT_EQ(c.first_line(), "220 mx.test ESMTP mailnet\r\n");
    ASSERT_TRUE(wait_for([&] { return f.srv->connections().size() == 1; }));
    std::this_thread::sleep_for(50ms);  // the session waits for a command
    f.srv->destroy(mailnet::net::server::destroy_mode::defer);
    EXPECT_EQ(c.rest_at_close(), "421 4.3.2 mx.test Service shutting down\r\n");
    EXPECT_TRUE(c.clean) << "the TLS stream was not closed with close_notify";
}

TEST(smtp_server, a_client_that_sends_nothing_in_time_reads_421_then_the_close) {
    // RFC 5321 3.8 / 4.5.3.2: a server that times a client out says 421 where it can (Postfix:
    // "421 4.4.2 ... timeout exceeded"). Waiting for a command, and halfway through a message,
    // which is then not delivered; a client that keeps talking is never cut.
    temp_dir dir("mailnet-smtpd");
    auto cfg = config(maildir(dir.path));
    cfg.idle_timeout = 1s;
    cfg.allow_short_idle_timeout = true;
    fixture f(cfg);
    const std::string notice = "421 4.4.2 mx.test Timeout waiting for the client, closing\r\n";
    auto idle = greeted(f.port());
    auto sending = greeted(f.port());
    auto talking = greeted(f.port());
    sending->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    sending->read_until("354 ");
    sending->read_until("\r\n");
    sending->clear();
    sending->send("Subject: half\r\nand a part");
    for (int i = 0; i < 6; ++i) {  // 2.4 s, one command every 0.4 s
        std::this_thread::sleep_for(400ms);
        talking->send("NOOP\r\n");
    }
    EXPECT_TRUE(idle->closed_within(3000ms));
    EXPECT_EQ(idle->received(), notice);
    EXPECT_TRUE(sending->closed_within(3000ms));
    EXPECT_EQ(sending->received(), notice);
    EXPECT_TRUE(files_in(dir.path / "bob@example.net" / "new").empty());
    EXPECT_EQ(talking->read_until("250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"),
              "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n")
        << "never cut while it talks";
    talking->clear();
    EXPECT_TRUE(talking->closed_within(3000ms)) << "then idle like the others";
    EXPECT_EQ(talking->received(), notice);
}

TEST(smtp_server, a_client_trickling_a_message_below_the_minimum_rate_reads_421_and_one_above_it_never_does) {
    // Each keeps sending (a line every 0.2 s: never idle), so only the rate tells them apart:
    // 50 octets/s against the default minimum of 500 is timed out about the idle timeout after
    // its DATA (1 s, and 0.02 s per 10 octets: 1.1 s; not delivered); 50 against 20 goes on
    // past it (its deadline moves 2.5 s a second) and its message is delivered. The rate counts
    // over a whole BDAT message too, not chunk by chunk: 19 octets (a 10-octet chunk and its
    // command) every 0.2 s is timed out as well, though no chunk takes long.
    temp_dir dir("mailnet-smtpd");
    const std::string notice = "421 4.4.2 mx.test Timeout waiting for the client, closing\r\n";
    struct trickle {
        const char* to;
        std::uint32_t rate;
        bool bdat;
    };
    for (const trickle t : {trickle{"slow@example.net", 500, false}, trickle{"fast@example.net", 20, false},
                            trickle{"chunks@example.net", 500, true}}) {
        SCOPED_TRACE(t.to);
        auto cfg = config(maildir(dir.path));
        cfg.idle_timeout = 1s;
        cfg.allow_short_idle_timeout = true;
        EXPECT_EQ(cfg.min_data_rate, 500u) << "Postfix's smtpd_min_data_rate";
        cfg.min_data_rate = t.rate;
        fixture f(cfg);
        auto c = greeted(f.port());
        c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<" + std::string(t.to) + ">\r\n");
        c->read_until("250 2.1.5 Ok\r\n");
        if (!t.bdat) {
            c->send("DATA\r\n");
            c->read_until("354 ");
            c->read_until("\r\n");
        }
        c->clear();
        const auto start = std::chrono::steady_clock::now();
        bool cut = false;
        for (int i = 0; i < 12 && !cut; ++i) {  // 2.4 s: a line every 0.2 s
            c->send(t.bdat ? "BDAT 10\r\ntrickle.\r\n" : "trickle.\r\n");
            cut = c->closed_within(200ms);
        }
        if (t.rate == 500) {
            EXPECT_TRUE(cut);
            const auto took = std::chrono::steady_clock::now() - start;
            EXPECT_GE(took, 700ms) << "not before about the idle timeout";
            EXPECT_LT(took, 1800ms) << "about the idle timeout: 1 s, and 0.02 s per 10 octets";
            const auto& got = c->received();
            if (t.bdat)  // each chunk's 250 first
                EXPECT_TRUE(got.size() >= notice.size() && got.compare(got.size() - notice.size(), notice.size(), notice) == 0) << got;
            else
                EXPECT_EQ(got, notice);
            EXPECT_TRUE(files_in(dir.path / t.to / "new").empty());
        } else {
            EXPECT_FALSE(cut) << "50 octets/s is above the minimum: never cut";
            c->send(".\r\n");
            EXPECT_EQ(c->read_until("\r\n").substr(0, 10), "250 2.0.0 ");
            EXPECT_EQ(files_in(dir.path / t.to / "new").size(), 1u);
        }
    }
}

TEST(smtp_server, a_message_sent_in_time_gets_its_250_however_long_its_delivery) {
    // The peer's limits bound the wait for its input, never the server's work on it: a message
    // ended 1.2 s into a 2 s idle timeout (its rate deadline then 0.8 s away) whose delivery
    // takes 1.2 s, and one sent at once whose delivery takes 2.5 s, past the idle timeout, each
    // get their 250 (once, a cut after the message was stored made the client retry it:
    // delivered twice).
    struct slow_delivery {
        std::chrono::milliseconds pause, hook;
        const char* to;
    };
    for (const slow_delivery d : {slow_delivery{1200ms, 1200ms, "paused@example.net"}, slow_delivery{0ms, 2500ms, "slow@example.net"}}) {
        SCOPED_TRACE(d.to);
        temp_dir dir("mailnet-smtpd");
        auto cfg = config(maildir(dir.path));
        cfg.idle_timeout = 2s;
        cfg.allow_short_idle_timeout = true;
        cfg.before_reply = [hook = d.hook](const smtp::transaction_info&) -> asio::awaitable<void> {
            asio::steady_timer t(co_await asio::this_coro::executor, hook);
            co_await t.async_wait(asio::use_awaitable);
        };
        fixture f(cfg);
        auto c = greeted(f.port());
        c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<" + std::string(d.to) + ">\r\nDATA\r\n");
        c->read_until("354 ");
        c->read_until("\r\n");
        c->clear();
        std::this_thread::sleep_for(d.pause);
        c->send("x\r\n.\r\n");
        EXPECT_EQ(c->read_until("\r\n", 5000ms).substr(0, 24), "250 2.0.0 Ok: queued as ");
        EXPECT_EQ(files_in(dir.path / d.to / "new").size(), 1u);
    }
}

TEST(smtp_server, a_refused_bdat_chunk_trickled_below_the_minimum_rate_reads_421) {
    // A refused chunk is read to its end all the same (RFC 3030 2), so its octets count too: a
    // huge one sent a line every 0.2 s (50 octets/s) must not hold the connection.
    temp_dir dir("mailnet-smtpd");
    auto cfg = config(maildir(dir.path));
    cfg.idle_timeout = 1s;
    cfg.allow_short_idle_timeout = true;
    fixture f(cfg);
    auto c = greeted(f.port());
    const auto start = std::chrono::steady_clock::now();
    c->send("BDAT 18446744073709551615\r\n");  // refused (no MAIL), consumed all the same
    bool cut = false;
    for (int i = 0; i < 15 && !cut; ++i) {
        c->send("trickle.\r\n");
        cut = c->closed_within(200ms);
    }
    EXPECT_TRUE(cut);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 700ms) << "not before about the idle timeout";
    EXPECT_EQ(c->received(), "421 4.4.2 mx.test Timeout waiting for the client, closing\r\n");
}

TEST(smtp_server, a_client_silent_after_a_failed_login_delay_reads_421_too) {
    // The failed login's delay reads ahead (a client that leaves frees its slot at once); the
    // wait for a command after it goes on with that read, which must end the same way.
    temp_dir dir("mailnet-smtpd");
    auto users = std::make_shared<mailnet::auth_functions>();
    users->on_authenticate = [](const mailnet::credentials&) { return mailnet::auth_result::fail(); };
    auto cfg = config(maildir(dir.path));
    cfg.auth = users;
    cfg.session_limits.auth_failure_delay = 300ms;
    cfg.idle_timeout = 1s;
    cfg.allow_short_idle_timeout = true;
    fixture f(cfg);
    auto c = greeted(f.port());
    c->send("AUTH PLAIN AGFsaWNlAHdyb25n\r\n");
    EXPECT_EQ(c->read_until("\r\n"), "535 5.7.8 Error: authentication failed\r\n");
    c->clear();
    EXPECT_TRUE(c->closed_within(3000ms));
    EXPECT_EQ(c->received(), "421 4.4.2 mx.test Timeout waiting for the client, closing\r\n");
}

TEST(smtp_server, a_limit_that_passes_during_a_failed_login_delay_ends_with_421_too) {
    // The delay is the server's: it does not count against the client's idle limit (the 535
    // comes, then the idle limit runs), but the login limit goes on during it and, passing
    // there, ends the delay: the 535 the client is owed, then the notice, not a silent close.
    temp_dir dir("mailnet-smtpd");
    auto users = std::make_shared<mailnet::auth_functions>();
    users->on_authenticate = [](const mailnet::credentials&) { return mailnet::auth_result::fail(); };
    const std::string notice = "421 4.4.2 mx.test Timeout waiting for the client, closing\r\n";
    for (const bool login_limit : {false, true}) {
        SCOPED_TRACE(login_limit);
        auto cfg = config(maildir(dir.path));
        cfg.auth = users;
        cfg.session_limits.auth_failure_delay = 1500ms;
        cfg.idle_timeout = 1s;
        cfg.allow_short_idle_timeout = true;
        if (login_limit) {
            cfg.require_auth = true;
            cfg.idle_timeout = 5s;
            cfg.login_timeout = 1s;
        }
        fixture f(cfg);
        auto c = greeted(f.port());
        c->send("AUTH PLAIN AGFsaWNlAHdyb25n\r\n");
        EXPECT_TRUE(c->closed_within(5000ms));
        EXPECT_EQ(c->received(), "535 5.7.8 Error: authentication failed\r\n" + notice);
    }
}

TEST(smtp_server, commands_pipelined_behind_a_login_whose_delay_outlasts_the_login_limit_are_not_served) {
    // The limit ends the session: a second guess, or a good login and a message sent with it,
    // never reaches the authenticator or the store after the limit passed.
    temp_dir dir("mailnet-smtpd");
    auto users = std::make_shared<mailnet::auth_functions>();
    std::atomic<int> asked{0};
    users->on_authenticate = [&](const mailnet::credentials& c) {
        ++asked;
        return c.password == "right" ? mailnet::auth_result::ok(c.user, c.user) : mailnet::auth_result::fail();
    };
    auto cfg = config(maildir(dir.path));
    cfg.auth = users;
    cfg.require_auth = true;
    cfg.session_limits.auth_failure_delay = 1500ms;
    cfg.idle_timeout = 5s;
    cfg.allow_short_idle_timeout = true;
    cfg.login_timeout = 1s;
    fixture f(cfg);
    auto c = greeted(f.port());
    // alice/wrong, then alice/right and a message, in one write.
    c->send("AUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AGFsaWNlAHJpZ2h0\r\n"
            "MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\nSubject: late\r\n\r\nx\r\n.\r\n");
    EXPECT_TRUE(c->closed_within(5000ms));
    EXPECT_EQ(c->received(), "535 5.7.8 Error: authentication failed\r\n"
                             "421 4.4.2 mx.test Timeout waiting for the client, closing\r\n");
    EXPECT_EQ(asked.load(), 1);
    EXPECT_TRUE(files_in(dir.path / "bob@example.net" / "new").empty());
}

TEST(smtp_server, a_stopping_server_still_says_why_to_a_client_idle_in_data_before_the_grace_ends) {
    // The stop's grace only replaces a read's deadline when it ends first: the client's own idle
    // limit, earlier, still ends with its 421 4.4.2 (the message is not delivered).
    temp_dir dir("mailnet-smtpd");
    auto cfg = config(maildir(dir.path));
    cfg.idle_timeout = 1s;
    cfg.allow_short_idle_timeout = true;
    cfg.shutdown_grace = 10s;
    fixture f(cfg);
    auto c = greeted(f.port());
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->read_until("\r\n");
    c->clear();
    c->send("Subject: half\r\n");
    std::this_thread::sleep_for(100ms);
    f.srv->destroy(mailnet::net::server::destroy_mode::defer);
    EXPECT_TRUE(c->closed_within(3000ms));
    EXPECT_EQ(c->received(), "421 4.4.2 mx.test Timeout waiting for the client, closing\r\n");
    EXPECT_TRUE(files_in(dir.path / "bob@example.net" / "new").empty());
}

TEST(smtp_server, a_timed_out_tls_client_reads_421_and_a_close_notify) {
    // The read is ended without closing the socket, so the notice can go over TLS too.
    auto pki = mailnet::test_support::test_pki::create();
    temp_dir dir("mailnet-smtpd");
    auto cfg = smtps_config(dir.path, pki);
    cfg.idle_timeout = 1s;
    cfg.allow_short_idle_timeout = true;
    fixture f(cfg);
    smtps_client c(f.port(), pki.ca_cert);
    EXPECT_EQ(c.first_line(), "220 mx.test ESMTP mailnet\r\n");
    EXPECT_EQ(c.rest_at_close(), "421 4.4.2 mx.test Timeout waiting for the client, closing\r\n");
    EXPECT_TRUE(c.clean) << "the TLS stream was not closed with close_notify";
}

TEST(smtp_server, a_client_trickling_data_holds_a_stopping_server_no_longer_than_its_grace) {
    temp_dir dir("mailnet-smtpd");
    auto cfg = config(maildir(dir.path));
    cfg.shutdown_grace = 1s;
    fixture f(cfg);
    auto c = greeted(f.port());
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    std::promise<void> gone;
    const auto stopped = std::chrono::steady_clock::now();
    f.srv->destroy(mailnet::net::server::destroy_mode::defer, [&] { gone.set_value(); });
    auto done = gone.get_future();
    bool closed = false;
    for (int i = 0; i < 40 && !closed; ++i) {  // one octet every 100 ms: never idle, never done
        c->send("x");
        closed = done.wait_for(100ms) == std::future_status::ready;
    }
    EXPECT_TRUE(closed) << "still open 4 s after the stop";
    EXPECT_LT(std::chrono::steady_clock::now() - stopped, 3s);
    EXPECT_TRUE(files_in(dir.path / "bob@example.net" / "new").empty());
}

TEST(smtp_server, the_shutdown_grace_never_cuts_a_delivery_from_its_reply) {
    // A deliver that takes longer than the grace: the message was accepted, so its 250 goes out.
    std::atomic<int> delivering{0};
    auto cb = std::make_shared<smtp::callback_functions>();
    cb->on_deliver = [&](const smtp::transaction_info&, mailnet::message&) {
        ++delivering;
        std::this_thread::sleep_for(1500ms);
        return smtp::verdict::accept();
    };
    auto cfg = config(nullptr);
    cfg.handler = cb;
    cfg.shutdown_grace = 1s;
    fixture f(cfg);
    auto c = greeted(f.port());
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->send("hello\r\n.\r\n");
    ASSERT_TRUE(wait_for([&] { return delivering.load() == 1; }));
    f.srv->destroy(mailnet::net::server::destroy_mode::defer);
    EXPECT_NE(c->read_until("queued as", 5000ms).find("250 2.0.0 Ok: queued as"), std::string::npos);
    EXPECT_TRUE(c->closed_within(3000ms));
    EXPECT_EQ(delivering.load(), 1);
}

TEST(smtp_server, a_login_does_not_lift_the_shutdown_grace) {
    auto users = std::make_shared<mailnet::auth_functions>();
    users->on_authenticate = [](const mailnet::credentials&) { return mailnet::auth_result::ok("alice", "alice"); };
    temp_dir dir("mailnet-smtpd");
    auto cfg = config(maildir(dir.path));
    cfg.auth = users;
    cfg.shutdown_grace = 1s;
    fixture f(cfg);
    auto c = greeted(f.port());
    c->send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    std::promise<void> gone;
    f.srv->destroy(mailnet::net::server::destroy_mode::defer, [&] { gone.set_value(); });
    auto done = gone.get_future();
    bool closed = false;
    for (int i = 0; i < 40 && !closed; ++i) {
        c->send("x");
        closed = done.wait_for(100ms) == std::future_status::ready;
    }
    EXPECT_TRUE(closed) << "still open 4 s after the stop";
}

TEST(smtp_server, a_shutdown_during_a_failed_login_delay_says_421_at_once) {
    // DESIGN.md "Command lines": a pending failed-login delay does not hold shutdown; the session
    // gets the notice a session waiting for a command gets (RFC 5321 3.8), not a bare close.
    auto users = std::make_shared<mailnet::auth_functions>();
    users->on_authenticate = [](const mailnet::credentials&) { return mailnet::auth_result::fail(); };
    temp_dir dir("mailnet-smtpd");
    auto cfg = config(maildir(dir.path));
    cfg.auth = users;
    cfg.session_limits.auth_failure_delay = 20s;
    fixture f(cfg);
    auto c = greeted(f.port());
    c->send("AUTH PLAIN AGFsaWNlAHdyb25n\r\n");
    ASSERT_TRUE(wait_for([&] { return f.srv->connections().size() == 1; }));
    std::this_thread::sleep_for(100ms);  // the session waits out its delay
    const auto stopped = std::chrono::steady_clock::now();
    f.srv->destroy(mailnet::net::server::destroy_mode::defer);
    EXPECT_TRUE(c->closed_within(3000ms)) << "the 20 s delay held the shutdown";
    EXPECT_LT(std::chrono::steady_clock::now() - stopped, 5s);
    EXPECT_EQ(c->received(), "421 4.3.2 mx.test Service shutting down\r\n");
}

TEST(smtp_server, a_large_message_in_bdat_chunks_is_stored_whole) {
    temp_dir dir("mailnet-smtpd");
    fixture f(config(maildir(dir.path)));
    auto c = greeted(f.port());
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\n");
    std::string body, stored;
    for (int i = 0; i < 20000; ++i) {
        const auto line = "line " + std::to_string(i) + (i % 7 ? "" : " .") + std::string(60, 'a' + i % 26);
        body += line + "\r\n";
        stored += line + "\n";
    }
    // Chunks of odd sizes: CRLFs fall across their edges.
    for (std::size_t at = 0; at < body.size();) {
        const auto n = std::min<std::size_t>(70001, body.size() - at);
        c->send("BDAT " + std::to_string(n) + (at + n == body.size() ? " LAST" : "") + "\r\n");
        c->send(std::string_view(body).substr(at, n));
        at += n;
    }
    c->read_until("queued as");
    const auto bob = files_in(dir.path / "bob@example.net" / "new");
    ASSERT_EQ(bob.size(), 1u);
    const auto start = bob[0].find("+0000\n") + 6;  // after the trace headers
    EXPECT_EQ(bob[0].size() - start, stored.size());
    EXPECT_TRUE(bob[0].compare(start, std::string::npos, stored) == 0) << "the stored octets differ";
}

TEST(smtp_server, callbacks_that_throw_answer_a_temporary_error_and_log_why) {
    log_capture log;
    auto cb = std::make_shared<smtp::callback_functions>();
    cb->on_validate_sender = [](const mailnet::mailbox_address& a) -> smtp::verdict {
        if (a.local == "boom") throw std::runtime_error("database password is hunter2");
        return smtp::verdict::accept();
    };
    cb->on_validate_recipient = [](const mailnet::mailbox_address& a) -> smtp::verdict {
        if (a.local == "boom") throw 42;
        if (a.local == "nobody") return smtp::verdict::refuse(550, "5.1.1", "no such user\r\n250 injected");
        return smtp::verdict::accept();
    };
    auto cfg = config(nullptr, log.sink());
    cfg.handler = cb;
    fixture f(cfg);
    auto c = greeted(f.port());
    c->send("MAIL FROM:<boom@example.org>\r\n");
    auto got = c->read_until("\r\n");
    EXPECT_EQ(got, "451 4.3.0 Error: temporary failure, try again later\r\n");
    EXPECT_TRUE(log.contains("hunter2")) << log.all();
    c->clear();
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<boom@example.net>\r\nRCPT TO:<nobody@example.net>\r\nQUIT\r\n");
    got = c->read_until("221 ");
    EXPECT_NE(got.find("250 2.1.0"), std::string::npos) << got;
    EXPECT_NE(got.find("451 4.3.0"), std::string::npos) << got;
    EXPECT_NE(got.find("550 5.1.1 no such user  250 injected\r\n"), std::string::npos) << "one line: " << got;
    EXPECT_TRUE(log.contains("unknown exception")) << log.all();
}

TEST(smtp_server, a_host_callback_that_throws_closes_with_421) {
    auto cb = std::make_shared<smtp::callback_functions>();
    cb->on_validate_host = [](std::string_view) -> smtp::verdict { throw std::runtime_error("dns down"); };
    auto cfg = config(nullptr);
    cfg.handler = cb;
    fixture f(cfg);
    test_client c(f.port());
    EXPECT_EQ(c.read_until("\r\n"), "421 4.3.0 Error: temporary failure, try again later\r\n");
    EXPECT_TRUE(c.closed_within(2000ms));
}

TEST(smtp_server, without_a_store_deliver_gets_the_envelope_and_the_message_streamed) {
    struct seen {
        std::mutex m;
        smtp::transaction_info info;
        std::string octets, headers;
        std::uint64_t size = 0;
    };
    auto s = std::make_shared<seen>();
    auto cb = std::make_shared<smtp::callback_functions>();
    cb->on_deliver = [s](const smtp::transaction_info& t, mailnet::message& m) {
        std::lock_guard g(s->m);
        s->info = t;
        s->size = m.stored_octets();
        s->headers = m.headers().value_or("?");
        char buf[4096];
        for (;;) {
            auto n = m.read(buf);
            if (!n || *n == 0) break;
            s->octets.append(buf, *n);
        }
        if (t.mail.recipients.front().local == "refuse") return smtp::verdict::refuse(554, "5.7.1", "not wanted");
        if (t.mail.recipients.front().local == "throw") throw std::runtime_error("disk gone");
        return smtp::verdict::accept();
    };
    auto cfg = config(nullptr);
    cfg.handler = cb;
    fixture f(cfg);
    auto c = greeted(f.port());
    // Over one write-out piece: the message goes through the spool file.
    std::string body = "Subject: big\r\n\r\n", stored = "Subject: big\n\n";
    for (int i = 0; i < 5000; ++i) {
        body += std::string(99, 'b') + "\r\n";
        stored += std::string(99, 'b') + "\n";
    }
    c->send("MAIL FROM:<alice@example.org> BODY=8BITMIME\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->send(body + ".\r\n");
    const auto id = queued_id(c->read_until("queued as") + c->read_until("\r\n"));
    {
        std::lock_guard g(s->m);
        EXPECT_EQ(s->octets, stored);
        EXPECT_EQ(s->size, stored.size());
        EXPECT_EQ(s->headers, "Subject: big\n\n");
        EXPECT_EQ(s->info.id, id);
        EXPECT_EQ(s->info.mail.sender.address(), "alice@example.org");
        EXPECT_TRUE(s->info.mail.eight_bit);
        EXPECT_EQ(s->info.helo, "client.example");
        EXPECT_EQ(s->info.protocol, "ESMTP");
        EXPECT_EQ(s->info.peer_address, "127.0.0.1");
        EXPECT_EQ(s->info.received, fixed_time());
        EXPECT_EQ(smtp::trace_headers(s->info).substr(0, 33), "Return-Path: <alice@example.org>\n");
    }
    c->clear();
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<refuse@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->send("small\r\n.\r\n");
    EXPECT_NE(c->read_until("554 ").find("554 5.7.1 not wanted"), std::string::npos);
    c->clear();
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<throw@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->send("small\r\n.\r\n");
    EXPECT_NE(c->read_until("451 ").find("451 4.3.0"), std::string::npos);
}

TEST(smtp_server, with_users_only_their_addresses_are_accepted_in_any_case) {
    temp_dir dir("mailnet-smtpd");
    auto users = std::make_shared<mailnet::auth_functions>();
    users->on_resolve_recipient = [](std::string_view address) {
        std::string lower(address);
        for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (lower == "bob@example.net") return mailnet::recipient_result::ok("bob@example.net", "bob");
        if (lower == "temp@example.net") return mailnet::recipient_result::tempfail();
        return mailnet::recipient_result::unknown();
    };
    auto cfg = config(maildir(dir.path));
    cfg.auth = users;
    cfg.recipients_from_auth = true;
    fixture f(cfg);
    auto c = greeted(f.port());
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<nobody@example.net>\r\nRCPT TO:<temp@example.net>\r\n"
            "RCPT TO:<Bob@Example.net>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    const auto got = c->read_until("354 ");
    EXPECT_NE(got.find("550 5.1.1 Error: no such user here"), std::string::npos) << got;
    EXPECT_NE(got.find("451 4.3.0"), std::string::npos) << got;
    c->send("hi\r\n.\r\n");
    c->read_until("queued as");
    EXPECT_EQ(files_in(dir.path / "bob" / "new").size(), 1u) << "two spellings of one account: one copy";
    EXPECT_FALSE(fs::exists(dir.path / "nobody@example.net"));
}

// One message to <Postmaster> and to `unknown`, pipelined: the first taken, the second 550
// 5.1.1 (`why` says why it must be), the message accepted.
void mail_postmaster_and(std::uint16_t port, std::string_view unknown, std::string_view why) {
    auto c = greeted(port);
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<Postmaster>\r\nRCPT TO:<" + std::string(unknown) + ">\r\nDATA\r\n");
    const auto got = c->read_until("354 ");
    EXPECT_NE(got.find("250 2.1.5"), std::string::npos) << got;
    EXPECT_NE(got.find("550 5.1.1"), std::string::npos) << got << "(" << why << ")";
    c->send("hi\r\n.\r\n");
    c->read_until("queued as");
}

// RFC 5321 4.1.1.3 and 4.5.1: RCPT TO:<Postmaster> with no domain must be taken; with users it
// is postmaster@<hostname>.
TEST(smtp_server, with_users_a_postmaster_without_a_domain_is_the_hostnames_postmaster) {
    temp_dir dir("mailnet-smtpd");
    auto users = std::make_shared<mailnet::auth_functions>();
    users->on_resolve_recipient = [](std::string_view address) {
        if (address == "postmaster@mx.test") return mailnet::recipient_result::ok("postmaster@mx.test", "postmaster");
        return mailnet::recipient_result::unknown();
    };
    auto cfg = config(maildir(dir.path));
    ASSERT_EQ(cfg.hostname, "mx.test");
    cfg.auth = users;
    cfg.recipients_from_auth = true;
    fixture f(cfg);
    mail_postmaster_and(f.port(), "postmaster@example.org", "a domain that is not ours stays unknown");
    EXPECT_EQ(files_in(dir.path / "postmaster" / "new").size(), 1u);
}

// ...and when postmaster@<hostname> is no account (a users file written for another host
// name), the users file's own postmaster@ line takes it: the postmaster is always reachable.
TEST(smtp_server, with_users_a_postmaster_without_a_domain_falls_back_to_the_files_postmaster) {
    temp_dir dir("mailnet-smtpd");
    const auto users_path = dir.path / "users";
    std::ofstream(users_path) << "alice@example.org:{PLAIN}pw\npostmaster@example.org:{PLAIN}pw\n";
    auto users = mailnet::open_passwd_file({users_path, mailnet::null_log()});
    ASSERT_TRUE(users) << users.error().message();
    const auto store = dir.path / "store";
    fs::create_directories(store);
    auto cfg = config(maildir(store));
    ASSERT_EQ(cfg.hostname, "mx.test");
    cfg.auth = std::shared_ptr<mailnet::authenticator>(std::move(*users));
    cfg.recipients_from_auth = true;
    fixture f(cfg);
    mail_postmaster_and(f.port(), "postmaster@mx.test", "postmaster@mx.test with its domain is no account");
    EXPECT_EQ(files_in(store / "postmaster@example.org" / "new").size(), 1u);
}

TEST(smtp_server, a_store_that_fails_gives_451_and_the_session_goes_on) {
    auto store = std::make_shared<mailnet::store_functions>();
    store->on_begin_delivery = [](std::span<const std::string>) -> mailnet::result<std::unique_ptr<mailnet::delivery>> {
        return mailnet::unexpected(mailnet::errc::io_error);
    };
    log_capture log;
    fixture f(config(store, log.sink()));
    auto c = greeted(f.port());
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->send("hi\r\n.\r\nNOOP\r\n");
    const auto got = c->read_until("250 2.0.0 Ok\r\n");
    EXPECT_NE(got.find("451 4.3.0"), std::string::npos) << got;
    EXPECT_TRUE(log.contains("not delivered")) << log.all();
}

// A store whose deliveries record what they were given; the first `writes_to_fail` writes fail.
struct recording_store {
    struct delivered {
        std::vector<std::string> targets;
        std::string octets;
    };
    struct state {
        std::mutex m;
        std::vector<delivered> committed;
        int writes_to_fail = 0;
        int aborted = 0;
    };
    struct recording_delivery : mailnet::delivery {
        std::shared_ptr<state> st;
        delivered d;
        mailnet::result<void> write(std::string_view o) override {
            std::lock_guard l(st->m);
            if (st->writes_to_fail > 0) {
                --st->writes_to_fail;
                return mailnet::unexpected(mailnet::errc::io_error);
            }
            d.octets += o;
            return {};
        }
        mailnet::result<void> commit() override {
            std::lock_guard l(st->m);
            st->committed.push_back(d);
            return {};
        }
        void abort() noexcept override {
            std::lock_guard l(st->m);
            ++st->aborted;
        }
    };
    std::shared_ptr<state> st = std::make_shared<state>();
    std::shared_ptr<mailnet::store_functions> store() const {
        auto s = std::make_shared<mailnet::store_functions>();
        s->on_begin_delivery = [st = st](std::span<const std::string> m)
            -> mailnet::result<std::unique_ptr<mailnet::delivery>> {
            auto d = std::make_unique<recording_delivery>();
            d->st = st;
            d->d.targets.assign(m.begin(), m.end());
            return std::unique_ptr<mailnet::delivery>(std::move(d));
        };
        return s;
    }
};

TEST(smtp_server, a_failed_write_refuses_its_own_message_only) {
    recording_store rec;
    rec.st->writes_to_fail = 1;
    fixture f(config(rec.store()));
    auto c = greeted(f.port());
    c->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<first@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->send("Subject: first\r\n\r\nsecret of the first\r\n.\r\n");
    EXPECT_NE(c->read_until("451 ").find("451 4.3.0"), std::string::npos);
    c->clear();
    c->send("MAIL FROM:<b@example.org>\r\nRCPT TO:<second@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->send("Subject: second\r\n\r\nhello\r\n.\r\n");
    ASSERT_NE(c->read_until("queued as").find("250 2.0.0 Ok: queued as"), std::string::npos);
    std::lock_guard l(rec.st->m);
    EXPECT_EQ(rec.st->aborted, 1) << "the refused message's delivery was aborted (its tmp/ file goes)";
    ASSERT_EQ(rec.st->committed.size(), 1u);
    EXPECT_EQ(rec.st->committed[0].targets, std::vector<std::string>{"second@example.net"});
    EXPECT_EQ(rec.st->committed[0].octets.rfind("Return-Path: <b@example.org>\n", 0), 0u);
    EXPECT_EQ(rec.st->committed[0].octets.find("secret"), std::string::npos);
}

TEST(smtp_server, a_backend_that_throws_gives_a_temporary_error_not_a_dropped_connection) {
    struct throwing_auth : mailnet::authenticator {
        mailnet::auth_result authenticate(const mailnet::credentials&) override { throw std::runtime_error("ldap down"); }
        bool exists(std::string_view) override { return true; }
        mailnet::recipient_result resolve_recipient(std::string_view) override { throw std::runtime_error("ldap down"); }
    };
    struct throwing_store : mailnet::store_functions {
        mailnet::result<std::unique_ptr<mailnet::delivery>> begin_delivery(std::span<const std::string>) override {
            throw std::runtime_error("disk on fire");
        }
    };
    log_capture log;
    auto cfg = config(std::make_shared<throwing_store>(), log.sink());
    cfg.auth = std::make_shared<throwing_auth>();
    cfg.recipients_from_auth = true;
    fixture f(cfg);
    auto c = greeted(f.port());
    c->send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nQUIT\r\n");
    const auto got = c->read_until("221 ");
    EXPECT_NE(got.find("454 4.7.0"), std::string::npos) << got;
    EXPECT_NE(got.find("451 4.3.0"), std::string::npos) << got;
    EXPECT_TRUE(log.contains("ldap down")) << log.all();
    // A store that throws: 451, and the session goes on.
    auto open = config(std::make_shared<throwing_store>(), log.sink());
    fixture g(open);
    auto d = greeted(g.port());
    d->send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    d->read_until("354 ");
    d->send("hi\r\n.\r\nNOOP\r\n");
    const auto after = d->read_until("250 2.0.0 Ok\r\n");
    EXPECT_NE(after.find("451 4.3.0"), std::string::npos) << after;
    EXPECT_TRUE(log.contains("disk on fire")) << log.all();
}

TEST(smtp_server, auth_plain_logs_in_and_marks_received_esmtpa) {
    temp_dir dir("mailnet-smtpd");
    auto users = std::make_shared<mailnet::auth_functions>();
    users->on_authenticate = [](const mailnet::credentials& c) {
        return c.user == "alice" && c.password == "secret" ? mailnet::auth_result::ok("alice", "alice")
                                                           : mailnet::auth_result::fail();
    };
    auto cfg = config(maildir(dir.path));
    cfg.auth = users;
    cfg.require_auth = true;
    fixture f(cfg);
    auto c = greeted(f.port());
    c->send("MAIL FROM:<alice@example.org>\r\n");
    EXPECT_EQ(c->read_until("\r\n"), "530 5.7.0 Authentication required\r\n");
    c->clear();
    c->send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    EXPECT_EQ(c->read_until("\r\n"), "235 2.7.0 Authentication successful\r\n");
    EXPECT_TRUE(wait_for([&] {
        auto list = f.srv->connections();
        return list.size() == 1 && list[0].user == "alice";
    })) << "the connection list shows the account";
    c->send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    c->read_until("354 ");
    c->send("hi\r\n.\r\n");
    c->read_until("queued as");
    const auto bob = files_in(dir.path / "bob@example.net" / "new");
    ASSERT_EQ(bob.size(), 1u);
    EXPECT_NE(bob[0].find("with ESMTPA id"), std::string::npos) << bob[0];
}

TEST(smtp_server, an_unusable_configuration_is_refused_and_the_old_one_kept) {
    auto cfg = config(nullptr);
    cfg.idle_timeout = 10s;
    asio::io_context io;
    smtp::server s(io, cfg);
    EXPECT_EQ(s.up().error(), mailnet::errc::bad_config) << "below RFC 5321's 5 minutes";
    cfg.allow_short_idle_timeout = true;
    EXPECT_TRUE(s.configure(cfg));
    auto bad = cfg;
    bad.session_limits.max_command_octets = 100;
    EXPECT_EQ(s.configure(bad).error(), mailnet::errc::bad_config);
    EXPECT_EQ(s.config().session_limits.max_command_octets, 2048u);
    for (auto limit : {&smtp::limits::max_junk_commands, &smtp::limits::max_recipient_overshoot}) {
        bad = cfg;
        bad.session_limits.*limit = 0;  // every EHLO (or 452) would be a bad command
        EXPECT_EQ(s.configure(bad).error(), mailnet::errc::bad_config);
    }
    EXPECT_TRUE(s.up());
    EXPECT_EQ(s.configure(cfg).error(), mailnet::errc::bad_config) << "not while up";
    s.destroy(mailnet::net::server::destroy_mode::kill);
}

TEST(smtp_server, an_empty_listen_list_is_the_seeds_all_interfaces_port_25_refused_in_open_mode) {
    // The seed's smtpd::start listens on all interfaces, port 25. Nothing below binds 0.0.0.0:
    // those configurations are only checked (configure() while down binds nothing).
    const auto seed = smtp::listeners_of(smtp::server_config{});
    ASSERT_EQ(seed.size(), 1u);
    EXPECT_EQ(seed[0].service, "smtp");
    EXPECT_EQ(seed[0].address, "0.0.0.0");
    EXPECT_EQ(seed[0].port, 25);
    EXPECT_FALSE(seed[0].implicit_tls);

    temp_dir dir("mailnet-smtpd");
    log_capture log;
    auto open = config(maildir(dir.path), log.sink());
    open.listen.clear();
    asio::io_context io;
    smtp::server s(io, open);
    // DESIGN.md "Rules": open mode (a store, any recipient) listens on loopback only.
    EXPECT_EQ(s.up().error(), mailnet::errc::bad_config) << "open mode on all interfaces";
    EXPECT_TRUE(log.contains("listens on loopback addresses only, not 0.0.0.0 (the default when listen is empty"))
        << log.all();
    auto explicit_any = open;
    explicit_any.listen = {{"smtp", "0.0.0.0", 0, false}};
    EXPECT_EQ(s.configure(explicit_any).error(), mailnet::errc::bad_config) << "an explicit one neither";
    auto allowed = open;
    allowed.allow_open_network = true;
    EXPECT_TRUE(s.configure(allowed));
    EXPECT_TRUE(s.config().listen.empty()) << "cget shows the configuration as given";
    auto users_mode = open;
    users_mode.recipients_from_auth = true;
    EXPECT_TRUE(s.configure(users_mode)) << "only known accounts receive mail";
    auto submission = open;
    submission.require_auth = true;
    EXPECT_TRUE(s.configure(submission)) << "only logged-in clients send";
    auto no_store = open;
    no_store.storage = nullptr;
    EXPECT_TRUE(s.configure(no_store)) << "the handler decides what is kept";
    // Loopback in open mode runs as before.
    EXPECT_TRUE(s.configure(config(maildir(dir.path))));
    ASSERT_TRUE(s.up());
    EXPECT_NE(s.listeners().at(0).endpoint.port(), 0);
    s.destroy(mailnet::net::server::destroy_mode::kill);
}

}  // namespace
