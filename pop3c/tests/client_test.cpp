// client_test.cpp: the blocking client (and through it the async one) against our pop3d
// (every call, pipelining, APOP, SASL PLAIN, implicit TLS and STLS with verification) and
// against scripted servers (retrieval modes and their fallbacks, lying sizes, bare-LF
// servers, servers that stall, hang up, refuse STLS or send garbage).
#include "mailnet/pop3c/client.hpp"

#include <gtest/gtest.h>

#include "mailnet/net/tls.hpp"
#include "mailnet/pop3d/server.hpp"
#include "scripted_server.hpp"
#include "support/fixtures.hpp"
#include "test_certs.hpp"

namespace {

using namespace std::chrono_literals;
using namespace mailnet::pop3c;
using pop3c_test::scripted_server;
using pop3c_test::step;
namespace pop3 = mailnet::pop3;

// ---- against our pop3d ----

std::shared_ptr<mailnet::auth_functions> users() {
    auto a = std::make_shared<mailnet::auth_functions>();
    a->on_authenticate = [](const mailnet::credentials& c) {
        return c.user == "alice" && c.password == "secret" ? mailnet::auth_result::ok(c.user, c.user)
                                                            : mailnet::auth_result::fail();
    };
    a->on_exists = [](std::string_view u) { return u == "alice"; };
    a->on_lookup = [](std::string_view u) -> std::optional<std::string> {
        if (u == "alice") return std::string("secret");
        return std::nullopt;
    };
    return a;
}

const std::string msg1 = "Subject: one\n\n.leading dot\nbody\n";
const std::string msg2 = "Subject: two\n\nline 1\nline 2\nline 3\n";
const std::string msg3 = "Subject: three\n\nthird\n";

// The CRLF wire form of a stored message (what RETR hands over by default).
std::string crlf(const std::string& s) {
    std::string out;
    for (const char c : s) {
        if (c == '\n') out += '\r';
        out += c;
    }
    return out;
}

struct pop3d_fixture {
    mailnet::test_support::test_pki pki = mailnet::test_support::test_pki::create();
    std::shared_ptr<mailnet::store> store = mailnet::make_memory_store();
    std::unique_ptr<mailnet::testing::server_thread<pop3::server>> srv;

    explicit pop3d_fixture(bool apop = false) {
        for (const auto* m : {&msg1, &msg2, &msg3}) {
            const std::string box = "alice";
            EXPECT_TRUE(store->deliver(std::span<const std::string>(&box, 1), *m));
        }
        pop3::server_config cfg;
        cfg.auth = users();
        cfg.storage = store;
        cfg.enable_apop = apop;
        cfg.listen = {{"pop3", "127.0.0.1", 0, false}, {"pop3s", "127.0.0.1", 0, true}};
        auto tls = mailnet::net::make_server_tls({pki.server_cert, pki.server_key});
        EXPECT_TRUE(tls);
        cfg.tls = *tls;
        cfg.log = mailnet::null_log();
        cfg.session_limits.auth_failure_delay = 0ms;
        srv = std::make_unique<mailnet::testing::server_thread<pop3::server>>(std::move(cfg));
    }
    std::uint16_t port() const { return srv->port(0); }
    std::uint16_t tls_port() const { return srv->port(1); }
    options verified() const {
        options o;
        o.ca_file = pki.ca_cert;
        return o;
    }
};

TEST(pop3c_client, every_call_against_pop3d) {
    pop3d_fixture f;
    auto c = client::open("127.0.0.1", "alice", "secret", f.port()).value();
    EXPECT_EQ(c.count(), 3u);
    EXPECT_TRUE(c.server_capabilities().has("PIPELINING"));
    EXPECT_TRUE(c.server_capabilities().has("UIDL"));
    const auto st = c.status().value();
    EXPECT_EQ(st.count, 3u);
    EXPECT_EQ(st.octets, crlf(msg1).size() + crlf(msg2).size() + crlf(msg3).size());
    const auto l = c.list().value();
    ASSERT_EQ(l.size(), 3u);
    EXPECT_EQ(l[1].number, 2u);
    EXPECT_EQ(l[1].octets, crlf(msg2).size());
    EXPECT_EQ(c.list(3).value().octets, crlf(msg3).size());
    const auto u = c.uidl().value();
    ASSERT_EQ(u.size(), 3u);
    EXPECT_EQ(c.uidl(2).value().uid, u[1].uid);
    EXPECT_TRUE(c.capa().value().has("TOP"));
    EXPECT_EQ(c.top(2, 1).value(), "Subject: two\r\n\r\nline 1\r\n");
    EXPECT_EQ(c.last().value(), 0u);
    // The seed's index words: next after LAST 0 is 1; start..end is all.
    EXPECT_EQ(c.retrieve(message_index::word::next).value(), std::vector<std::string>{crlf(msg1)});
    const auto all = c.retrieve(message_index::word::start, message_index::word::end).value();
    EXPECT_EQ(all, (std::vector<std::string>{crlf(msg1), crlf(msg2), crlf(msg3)}));
    // Out of range: an error, and the session goes on.
    EXPECT_EQ(c.retrieve(4).error(), make_error_code(errc::no_such_message));
    EXPECT_EQ(c.remove(0).error(), make_error_code(errc::no_such_message));
    c.noop().value();
    c.remove(1, 2).value();
    c.reset().value();
    c.remove(2).value();
    c.close().value();
    EXPECT_EQ(c.status().error(), make_error_code(errc::not_connected));

    auto again = client::open("127.0.0.1", "alice", "secret", f.port()).value();
    EXPECT_EQ(again.count(), 2u);
    EXPECT_EQ(again.retrieve(2).value().front(), crlf(msg3));
    // Dropped without close(): nothing is deleted.
    again.remove(1).value();
}

TEST(pop3c_client, a_dropped_session_deletes_nothing) {
    pop3d_fixture f;
    {
        auto c = client::open("127.0.0.1", "alice", "secret", f.port()).value();
        c.remove(message_index::word::start, message_index::word::end).value();
    }
    // The server notices the hang-up and unlocks; a new login sees all three.
    outcome<client> again;
    for (int i = 0; i < 50; ++i) {
        again = client::open("127.0.0.1", "alice", "secret", f.port());
        if (again || again.why().code != "IN-USE") break;
        std::this_thread::sleep_for(20ms);
    }
    EXPECT_EQ(again.value().count(), 3u);
}

TEST(pop3c_client, wrong_password_is_a_typed_server_error) {
    pop3d_fixture f;
    auto c = client::open("127.0.0.1", "alice", "wrong", f.port());
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error(), make_error_code(errc::server_error));
    EXPECT_EQ(c.why().code, "AUTH");
    EXPECT_THROW((void)c.value(), error);
}

TEST(pop3c_client, apop_when_the_greeting_offers_it) {
    pop3d_fixture f(true);
    auto c = client::open("127.0.0.1", "alice", "secret", f.port()).value();
    EXPECT_EQ(c.login_used(), "APOP");
    EXPECT_EQ(c.count(), 3u);
    c.close().value();
    options o;
    o.login = login_method::user;
    auto u = client::open("127.0.0.1", "alice", "secret", f.port(), o);
    EXPECT_EQ(u.value().login_used(), "USER");
}

TEST(pop3c_client, implicit_tls_verified_uses_sasl_plain) {
    pop3d_fixture f;
    auto o = f.verified();
    o.tls = tls_mode::implicit;
    std::string seen_fp;
    o.tls_callback = [&](const peer_certificate& pc) {
        seen_fp = pc.fingerprint_sha256;
        return true;
    };
    auto c = client::open("localhost", "alice", "secret", f.tls_port(), o).value();
    EXPECT_TRUE(c.secure());
    EXPECT_EQ(c.login_used(), "PLAIN");
    EXPECT_EQ(seen_fp, f.pki.server_fingerprint);
    EXPECT_EQ(c.retrieve(3).value().front(), crlf(msg3));
    c.close().value();
}

TEST(pop3c_client, stls_then_capa_again) {
    pop3d_fixture f;
    auto o = f.verified();
    o.tls = tls_mode::stls;
    auto c = client::open("127.0.0.1", "alice", "secret", f.port(), o).value();
    EXPECT_TRUE(c.secure());
    // After STLS the capabilities are read again: STLS is no longer offered.
    EXPECT_FALSE(c.server_capabilities().has("STLS"));
    EXPECT_EQ(c.count(), 3u);
}

TEST(pop3c_client, tls_verification_failures_refuse_the_server) {
    pop3d_fixture f;
    // No CA given: the system's store does not know the test CA.
    options o;
    o.tls = tls_mode::implicit;
    auto c = client::open("127.0.0.1", "alice", "secret", f.tls_port(), o);
    EXPECT_EQ(c.error(), make_error_code(mailnet::errc::tls_error)) << (c ? "" : c.why().message());
    // A wrong pin.
    o.fingerprint_sha256 = f.pki.other_fingerprint;
    c = client::open("127.0.0.1", "alice", "secret", f.tls_port(), o);
    EXPECT_EQ(c.error(), make_error_code(mailnet::errc::tls_error));
    // The right pin.
    o.fingerprint_sha256 = f.pki.server_fingerprint;
    EXPECT_TRUE(client::open("127.0.0.1", "alice", "secret", f.tls_port(), o));
    // A callback that refuses.
    o.tls_callback = [](const peer_certificate&) { return false; };
    c = client::open("127.0.0.1", "alice", "secret", f.tls_port(), o);
    EXPECT_EQ(c.error(), make_error_code(mailnet::errc::tls_error));
    // (A host name the certificate does not name: interop_pop3c, whose test CA can issue a
    // certificate for localhost alone.)
}

// A handler that keeps chunk sizes and the message.
struct chunk_recorder final : retrieval_handler {
    std::string message;
    std::size_t chunks = 0;
    std::size_t largest = 0;
    std::optional<std::uint64_t> hint;
    std::uint64_t end_octets = 0;
    std::vector<std::uint32_t> refused_numbers;
    bool begin(std::uint32_t, std::optional<std::uint64_t> h) override {
        hint = h;
        return true;
    }
    bool data(std::uint32_t, std::string_view octets) override {
        message.append(octets);
        ++chunks;
        largest = std::max(largest, octets.size());
        return true;
    }
    bool end(std::uint32_t, std::uint64_t octets) override {
        end_octets = octets;
        return true;
    }
    void refused(std::uint32_t n, const failure&) override { refused_numbers.push_back(n); }
};

TEST(pop3c_client, a_big_message_is_streamed_in_bounded_chunks) {
    pop3d_fixture f;
    std::string big;
    for (int i = 0; big.size() < (4u << 20); ++i) big += "line " + std::to_string(i) + " of a big message\n";
    const std::string box = "alice";
    ASSERT_TRUE(f.store->deliver(std::span<const std::string>(&box, 1), big));
    options o;
    o.line_ends = mailnet::output_line_ends::lf;
    auto c = client::open("127.0.0.1", "alice", "secret", f.port(), o).value();
    chunk_recorder h;
    c.retrieve_each({4}, h).value();
    EXPECT_EQ(h.message, big);  // LF line ends, as stored
    EXPECT_EQ(h.end_octets, crlf(big).size());
    EXPECT_EQ(h.hint, crlf(big).size());
    EXPECT_GT(h.chunks, 10u);
    EXPECT_LE(h.largest, 128u * 1024);
}

// ---- against scripted servers ----

// Greeting, CAPA refused (an RFC 1939 server), USER, PASS, STAT with `count` messages.
std::vector<step> login_script(int count) {
    return {{"", "+OK ready\r\n"},
            {"CAPA", "-ERR unknown command\r\n"},
            {"USER alice", "+OK\r\n"},
            {"PASS secret", "+OK logged in\r\n"},
            {"STAT", "+OK " + std::to_string(count) + " 300\r\n"}};
}

std::vector<step> operator+(std::vector<step> a, const std::vector<step>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

outcome<client> open_scripted(scripted_server& s, options o = {}) {
    o.timeout = 3s;
    o.connect_timeout = 3s;
    return client::open("127.0.0.1", "alice", "secret", s.port(), o);
}

TEST(pop3c_client, retr_mode_falls_back_to_list_then_to_slow) {
    // RETR's +OK has no size: the next retrieval asks LIST; LIST fails: slow from then on.
    scripted_server s(login_script(3) + std::vector<step>{
        {"RETR 1", "+OK here it comes\r\none\r\n.\r\n"},
        {"LIST", "-ERR LIST is broken\r\n"},
        {"RETR 2", "+OK\r\ntwo\r\n.\r\n"},
        {"RETR 3", "+OK\r\nthree\r\n.\r\n"},
        {"QUIT", "+OK bye\r\n"}});
    auto c = open_scripted(s).value();
    EXPECT_EQ(c.mode(), retr_mode::retr);
    EXPECT_EQ(c.retrieve(1).value().front(), "one\r\n");
    EXPECT_EQ(c.mode(), retr_mode::list);
    EXPECT_EQ(c.retrieve(2, 3).value(), (std::vector<std::string>{"two\r\n", "three\r\n"}));
    EXPECT_EQ(c.mode(), retr_mode::slow);
    c.close().value();
    EXPECT_TRUE(s.mismatches().empty()) << s.mismatches().front();
}

TEST(pop3c_client, list_mode_asks_list_once_for_every_size) {
    scripted_server s(login_script(2) + std::vector<step>{
        {"LIST", "+OK\r\n1 5\r\n2 7\r\n.\r\n"},
        {"RETR 1", "+OK\r\none\r\n.\r\n"},
        {"RETR 2", "+OK\r\ntwo!!\r\n.\r\n"},
        {"QUIT", "+OK\r\n"}});
    options o;
    o.mode = retr_mode::list;
    auto c = open_scripted(s, o).value();
    chunk_recorder h;
    c.retrieve(message_index::word::start, message_index::word::end, h).value();
    EXPECT_EQ(h.hint, 7u);
    EXPECT_EQ(h.message, "one\r\ntwo!!\r\n");
    c.close().value();
    EXPECT_TRUE(s.mismatches().empty()) << s.mismatches().front();
}

TEST(pop3c_client, sizes_are_hints_never_trusted) {
    // Overstated and understated sizes: each message still ends at its terminator.
    scripted_server s(login_script(2) + std::vector<step>{
        {"RETR 1", "+OK 100000 octets\r\nshort\r\n.\r\n"},
        {"RETR 2", "+OK 2 octets\r\nmuch longer than two octets\r\n.\r\n"},
        {"QUIT", "+OK\r\n"}});
    auto c = open_scripted(s).value();
    EXPECT_EQ(c.retrieve(1, 2).value(), (std::vector<std::string>{"short\r\n", "much longer than two octets\r\n"}));
    c.close().value();
}

TEST(pop3c_client, an_exchange_style_bare_lf_server) {
    scripted_server s(std::vector<step>{{"", "+OK Microsoft Exchange POP3 ready\n"},
                                        {"CAPA", "-ERR\n"},
                                        {"USER alice", "+OK\n"},
                                        {"PASS secret", "+OK\n"},
                                        {"STAT", "+OK 1 10\n"},
                                        {"RETR 1", "+OK 10 octets\nSubject: x\n\n..dot\n.\n"},
                                        {"QUIT", "+OK\n"}});
    options o;
    o.msex = true;
    auto c = open_scripted(s, o).value();
    EXPECT_EQ(c.retrieve(1).value().front(), "Subject: x\r\n\r\n.dot\r\n");
    c.close().value();
    EXPECT_TRUE(s.mismatches().empty()) << s.mismatches().front();
    // Commands still end in CRLF (the seed's msex sent bare LF).
    EXPECT_EQ(s.received().front(), "CAPA");
}

TEST(pop3c_client, an_err_for_one_message_leaves_the_others) {
    scripted_server s(login_script(3) + std::vector<step>{
        {"RETR 1", "+OK 4\r\none\r\n.\r\n"},
        {"RETR 2", "-ERR [SYS/TEMP] cannot read it\r\n"},
        {"RETR 3", "+OK 6\r\nthree\r\n.\r\n"},
        {"QUIT", "+OK\r\n"}});
    auto c = open_scripted(s).value();
    chunk_recorder h;
    c.retrieve_each({1, 2, 3}, h).value();
    EXPECT_EQ(h.message, "one\r\nthree\r\n");
    EXPECT_EQ(h.refused_numbers, std::vector<std::uint32_t>{2});
    c.close().value();
}

TEST(pop3c_client, a_retr_answered_twice_fails_the_retrieval_that_took_the_extra_answer) {
    // Both answers come in one write after RETR 2: the second copy of message 1 is taken for
    // RETR 2's answer, and message 2's own answer is left over. retrieve_each says so itself,
    // before its caller makes the batch durable under shifted numbers.
    const std::string one = "+OK 4\r\none\r\n.\r\n";
    scripted_server s(std::vector<step>{{"", "+OK ready\r\n"},
                                        {"CAPA", "+OK\r\nPIPELINING\r\nUSER\r\n.\r\n"},
                                        {"USER", ""},
                                        {"PASS", "+OK\r\n+OK\r\n"},
                                        {"STAT", "+OK 2 8\r\n"},
                                        {"RETR 1", ""},
                                        {"RETR 2", one + one + "+OK 4\r\ntwo\r\n.\r\n"}});
    auto c = open_scripted(s).value();
    chunk_recorder h;
    auto r = c.retrieve_each({1, 2}, h);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), make_error_code(errc::protocol_error));
    EXPECT_NE(r.why().text.find("octets no command asked for"), std::string::npos) << r.why().text;
    EXPECT_EQ(c.noop().error(), make_error_code(errc::protocol_error));  // unusable from then on
}

TEST(pop3c_client, a_message_over_the_limit_is_refused_and_the_others_go_on) {
    const std::string big(150, 'x');  // one line of 150 octets: over the limit of 100 below, under twice it
    scripted_server s(login_script(3) + std::vector<step>{
        {"RETR 1", "+OK 4\r\none\r\n.\r\n"},
        {"RETR 2", "+OK 152\r\n" + big + "\r\n.\r\n"},
        {"RETR 3", "+OK 6\r\nthree\r\n.\r\n"},
        {"QUIT", "+OK\r\n"}});
    options o;
    o.max_message_octets = 100;
    auto c = open_scripted(s, o).value();
    chunk_recorder h;
    c.retrieve_each({1, 2, 3}, h).value();
    EXPECT_EQ(h.refused_numbers, std::vector<std::uint32_t>{2});
    EXPECT_EQ(h.message.find(big), std::string::npos);  // never handed over whole
    EXPECT_NE(h.message.find("three\r\n"), std::string::npos);
    c.close().value();
}

TEST(pop3c_client, a_message_past_twice_the_limit_closes_the_connection) {
    const std::string endless(1000, 'x');
    step cut{"RETR 1", "+OK 4\r\n" + endless + "\r\n"};
    scripted_server s(login_script(1) + std::vector<step>{cut});
    options o;
    o.max_message_octets = 100;
    auto c = open_scripted(s, o).value();
    chunk_recorder h;
    auto r = c.retrieve_each({1}, h);
    EXPECT_EQ(r.error(), make_error_code(mailnet::errc::too_large));
    EXPECT_EQ(h.refused_numbers, std::vector<std::uint32_t>{1});
    EXPECT_EQ(c.noop().error(), make_error_code(mailnet::errc::too_large));  // unusable from then on
}

TEST(pop3c_client, a_server_that_hangs_up_mid_message) {
    step cut{"RETR 1", "+OK 100\r\nhalf a mess"};
    cut.hang_up = true;
    scripted_server s(login_script(1) + std::vector<step>{cut});
    auto c = open_scripted(s).value();
    auto r = c.retrieve(1);
    EXPECT_EQ(r.error(), make_error_code(errc::closed));
    EXPECT_NE(r.why().text.find("middle of an answer"), std::string::npos) << r.why().text;
    // The connection is unusable from then on.
    EXPECT_EQ(c.noop().error(), make_error_code(errc::closed));
}

TEST(pop3c_client, a_server_that_stalls_times_out) {
    step stall{"RETR 1", "+OK 100\r\nsome", false, 3500ms};
    scripted_server s(login_script(1) + std::vector<step>{stall});
    options o;
    auto c = open_scripted(s, o).value();
    const auto t0 = std::chrono::steady_clock::now();
    auto r = c.retrieve(1);
    EXPECT_EQ(r.error(), make_error_code(mailnet::errc::timed_out));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
}

TEST(pop3c_client, stls_refused_is_an_error_never_cleartext) {
    // A server without CAPA is asked for STLS all the same.
    scripted_server s(std::vector<step>{{"", "+OK ready\r\n"},
                                        {"CAPA", "-ERR unknown command\r\n"},
                                        {"STLS", "-ERR not here\r\n"}});
    options o;
    o.tls = tls_mode::stls;
    auto c = open_scripted(s, o);
    EXPECT_EQ(c.error(), make_error_code(errc::tls_unavailable));
    // Nothing else was sent: no USER, no PASS.
    EXPECT_EQ(s.received(), (std::vector<std::string>{"CAPA", "STLS"}));
}

TEST(pop3c_client, stls_not_in_capa_is_not_asked_for) {
    // RFC 2595 4: a server whose CAPA lists no STLS does not offer it. Not asking matters with
    // a server that closes on an unknown command: "unavailable", not a protocol error.
    step capa{"CAPA", "+OK\r\nUSER\r\n.\r\n"};
    scripted_server s(std::vector<step>{{"", "+OK ready\r\n"}, capa, {"", "", true}});
    options o;
    o.tls = tls_mode::stls;
    auto c = open_scripted(s, o);
    EXPECT_EQ(c.error(), make_error_code(errc::tls_unavailable));
    EXPECT_EQ(s.received(), std::vector<std::string>{"CAPA"});
}

TEST(pop3c_client, octets_after_stls_ok_fail_the_connection) {
    scripted_server s(std::vector<step>{{"", "+OK ready\r\n"},
                                        {"CAPA", "+OK\r\nSTLS\r\n.\r\n"},
                                        {"STLS", "+OK begin\r\n+OK injected\r\n"}});
    options o;
    o.tls = tls_mode::stls;
    auto c = open_scripted(s, o);
    EXPECT_EQ(c.error(), make_error_code(errc::protocol_error));
    EXPECT_NE(c.why().text.find("after its STLS +OK"), std::string::npos);
}

TEST(pop3c_client, garbage_greeting_and_missing_terminator) {
    {
        scripted_server s(std::vector<step>{{"", "HTTP/1.1 400 Bad Request\r\n"}});
        auto c = open_scripted(s);
        EXPECT_EQ(c.error(), make_error_code(errc::protocol_error));
    }
    {
        step cut{"LIST", "+OK\r\n1 5\r\n"};
        cut.hang_up = true;
        scripted_server s(login_script(1) + std::vector<step>{cut});
        auto c = open_scripted(s).value();
        EXPECT_EQ(c.list().error(), make_error_code(errc::closed));
    }
}

TEST(pop3c_client, a_stat_refused_after_the_login_is_not_a_refused_login) {
    scripted_server s(std::vector<step>{{"", "+OK ready\r\n"},
                                        {"CAPA", "-ERR unknown command\r\n"},
                                        {"USER alice", "+OK\r\n"},
                                        {"PASS secret", "+OK logged in\r\n"},
                                        {"STAT", "-ERR [SYS/PERM] maildrop damaged\r\n"}});
    auto c = open_scripted(s);
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error(), make_error_code(errc::mailbox_refused));
    EXPECT_EQ(c.why().code, "SYS/PERM");
    EXPECT_EQ(c.why().text, "maildrop damaged");
    EXPECT_TRUE(s.mismatches().empty());
}

TEST(pop3c_client, pipelined_retrieval_writes_ahead) {
    // With PIPELINING the client writes RETR 2 and 3 before RETR 1 is answered.
    scripted_server s(std::vector<step>{{"", "+OK ready\r\n"},
                                        {"CAPA", "+OK\r\nPIPELINING\r\nUSER\r\n.\r\n"},
                                        {"USER", ""},
                                        {"PASS", "+OK\r\n+OK\r\n"},
                                        {"STAT", "+OK 3 30\r\n"},
                                        {"RETR 1", ""},
                                        {"RETR 2", ""},
                                        {"RETR 3", "+OK\r\na\r\n.\r\n+OK\r\nb\r\n.\r\n+OK\r\nc\r\n.\r\n"},
                                        {"QUIT", "+OK\r\n"}});
    auto c = open_scripted(s).value();
    EXPECT_EQ(c.retrieve(1, 3).value(), (std::vector<std::string>{"a\r\n", "b\r\n", "c\r\n"}));
    c.close().value();
    EXPECT_TRUE(s.mismatches().empty()) << s.mismatches().front();
}

}  // namespace
