// core_test.cpp: the POP3 client core fed server transcripts (whole, and split at every
// offset): greetings, replies and response codes, listings, message data and its
// terminator, pipelining windows, STLS response injection, bare-LF servers, SASL, bad servers.
#include "mailnet/pop3c/core.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <variant>
#include <vector>

namespace {

using namespace mailnet::pop3c;

// Renders events as text; consecutive data of one message is joined, so a transcript renders
// the same however it was split.
struct recorder {
    std::string out;
    std::string data;
    std::uint64_t data_seq = 0;

    void flush_data() {
        if (!data.empty()) out += "D" + std::to_string(data_seq) + "[" + data + "]\n";
        data.clear();
    }
    // Returns false on need_input.
    bool take(const event& e) {
        if (std::holds_alternative<ev::need_input>(e)) return false;
        if (const auto* d = std::get_if<ev::data>(&e)) {
            if (!data.empty() && d->seq != data_seq) flush_data();
            data_seq = d->seq;
            data.append(d->octets);
            return true;
        }
        flush_data();
        std::visit(
            [&](const auto& x) {
                using T = std::decay_t<decltype(x)>;
                if constexpr (std::is_same_v<T, ev::greeting>)
                    out += std::string("G") + (x.r.ok ? "+" : "-") + x.r.text + (x.apop_timestamp.empty() ? "" : " ts=" + x.apop_timestamp) + "\n";
                else if constexpr (std::is_same_v<T, ev::reply>)
                    out += "R" + std::to_string(x.seq) + (x.r.ok ? "+" : "-") + (x.r.code.empty() ? "" : "[" + x.r.code + "]") + x.r.text + "\n";
                else if constexpr (std::is_same_v<T, ev::line>)
                    out += "L" + std::to_string(x.seq) + " " + std::string(x.text) + "\n";
                else if constexpr (std::is_same_v<T, ev::end>)
                    out += "E" + std::to_string(x.seq) + " " + std::to_string(x.octets) + "\n";
                else if constexpr (std::is_same_v<T, ev::challenge>)
                    out += "C" + std::to_string(x.seq) + " " + std::string(x.text) + "\n";
                else if constexpr (std::is_same_v<T, ev::failed>)
                    out += "F " + x.what + "\n";
            },
            e);
        return !std::holds_alternative<ev::failed>(e);
    }
};

// Feeds `server` in pieces of `piece` octets to a core that has `commands` submitted (and
// written); returns the rendered events.
std::string play(const std::vector<command>& commands, std::string_view server, std::size_t piece,
                 core_options o = {}) {
    // The whole transcript may arrive at once, so every command is written at once (a
    // pipelining window as wide): an answer before its command was written is unsolicited.
    o.window = std::max(o.window, commands.size());
    core c(o);
    for (const auto& cmd : commands) c.submit(cmd);
    recorder r;
    std::size_t at = 0;
    for (;;) {
        (void)c.take_output();
        const event e = c.next();
        if (std::holds_alternative<ev::failed>(e)) {
            r.take(e);
            break;
        }
        if (!r.take(e)) {
            if (at >= server.size()) break;
            c.feed(server.substr(at, piece));
            at += piece;
        }
    }
    r.flush_data();
    return r.out;
}

// Plays the transcript whole and split at every piece size; all must render the same.
std::string play_all(const std::vector<command>& commands, std::string_view server, core_options o = {}) {
    const std::string whole = play(commands, server, server.size() + 1, o);
    for (std::size_t piece = 1; piece <= server.size(); ++piece)
        EXPECT_EQ(play(commands, server, piece, o), whole) << "split in pieces of " << piece;
    return whole;
}

command retr(int n) { return command{"RETR " + std::to_string(n), answer::message}; }

TEST(pop3c_core, greeting_with_an_apop_timestamp) {
    EXPECT_EQ(play_all({}, "+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>\r\n"),
              "G+POP3 ready <1896.697170952@dbc.mtview.ca.us> ts=<1896.697170952@dbc.mtview.ca.us>\n");
    EXPECT_EQ(play_all({}, "+OK no timestamp <here>\r\n"), "G+no timestamp <here>\n");
    EXPECT_EQ(play_all({}, "-ERR [SYS/TEMP] go away\r\n"), "G-go away\n");
}

TEST(pop3c_core, a_greeting_that_is_not_pop3_fails) {
    const auto out = play({}, "220 smtp.example ESMTP\r\n", 100);
    EXPECT_EQ(out.rfind("F the server's greeting is not a POP3 greeting: 220 smtp", 0), 0u) << out;
}

TEST(pop3c_core, replies_with_response_codes_in_order) {
    EXPECT_EQ(play_all({{"USER a"}, {"PASS b"}}, "+OK hi\r\n+OK\r\n-ERR [IN-USE] locked by another session\r\n"),
              "G+hi\nR1+\nR2-[IN-USE]locked by another session\n");
    // A bracket that is no RFC 2449 code stays text.
    EXPECT_EQ(play_all({{"NOOP"}}, "+OK hi\r\n-ERR [not a code] x\r\n"), "G+hi\nR1-[not a code] x\n");
}

TEST(pop3c_core, ok_only_at_the_start_of_a_line) {
    // The seed accepted "+OK" anywhere in a line.
    EXPECT_EQ(play({{"STAT"}}, "+OK hi\r\nnonsense +OK 1 2\r\n", 100).rfind("G+hi\nF the server's answer is neither", 0), 0u);
    EXPECT_EQ(play({{"STAT"}}, "+OK hi\r\n+OKAY 1 2\r\n", 100).rfind("G+hi\nF ", 0), 0u);
    EXPECT_EQ(play_all({{"STAT"}}, "+OK hi\r\n+ok 1 2\r\n"), "G+hi\nR1+1 2\n");
}

TEST(pop3c_core, a_listing_unstuffs_its_lines) {
    EXPECT_EQ(play_all({{"CAPA", answer::lines}, {"UIDL", answer::lines}},
                       "+OK hi\r\n+OK caps\r\nTOP\r\nSASL PLAIN\r\n.\r\n+OK\r\n1 ..odd\r\n..\r\n.\r\n"),
              "G+hi\nR1+caps\nL1 TOP\nL1 SASL PLAIN\nE1 0\nR2+\nL2 1 ..odd\nL2 .\nE2 0\n");
    // -ERR to a listing has no listing.
    EXPECT_EQ(play_all({{"UIDL", answer::lines}, {"NOOP"}}, "+OK hi\r\n-ERR no UIDL\r\n+OK\r\n"),
              "G+hi\nR1-no UIDL\nR2+\n");
}

TEST(pop3c_core, a_message_ends_exactly_at_its_terminator) {
    // First-line "..", a lone CR (data, never a line end), ".\r\n" only after CRLF; the next
    // reply follows at once (pipelined RETRs).
    const std::string server =
        "+OK hi\r\n+OK 22 octets\r\n..first\r\nlone\rCR\r\nx.\r\n\r\n.\r\n+OK\r\nb\r\n.\r\n-ERR no such message\r\n";
    EXPECT_EQ(play_all({retr(1), retr(2), retr(9)}, server),
              "G+hi\nR1+22 octets\nD1[.first\r\nlone\rCR\r\nx.\r\n\r\n]\nE1 23\nR2+\nD2[b\r\n]\nE2 3\nR3-no such message\n");
}

TEST(pop3c_core, message_octets_with_lf_line_ends_as_stored) {
    core_options o;
    o.data_line_ends = mailnet::output_line_ends::lf;
    EXPECT_EQ(play_all({retr(1)}, "+OK hi\r\n+OK\r\na\r\n..b\r\n.\r\n", o), "G+hi\nR1+\nD1[a\n.b\n]\nE1 7\n");
}

TEST(pop3c_core, an_empty_message) {
    EXPECT_EQ(play_all({retr(1)}, "+OK hi\r\n+OK 0\r\n.\r\n"), "G+hi\nR1+0\nE1 0\n");
}

TEST(pop3c_core, a_bare_lf_server_is_read_with_lf_line_ends) {
    // The seed hung on a server that ends lines with LF alone.
    EXPECT_EQ(play_all({retr(1), {"QUIT"}}, "+OK hi\n+OK 9\na\n..b\nc\r\n.\n+OK bye\n"),
              "G+hi\nR1+9\nD1[a\r\n.b\r\nc\r\n]\nE1 10\nR2+bye\n");
}

TEST(pop3c_core, msex_reads_lf_data_after_crlf_status_lines) {
    core_options o;
    o.lf_line_ends = true;
    EXPECT_EQ(play_all({retr(1)}, "+OK hi\r\n+OK\r\na\n.\n", o), "G+hi\nR1+\nD1[a\r\n]\nE1 3\n");
    // Without it, the bare LF is data and ".\n" is no end: the message is still open.
    EXPECT_EQ(play({retr(1)}, "+OK hi\r\n+OK\r\na\n.\nmore", 100), "G+hi\nR1+\nD1[a\n.\nmore]\n");
}

TEST(pop3c_core, octets_after_the_stls_ok_fail_the_connection) {
    const command stls{"STLS", answer::single, true};
    EXPECT_EQ(play({stls}, "+OK hi\r\n+OK begin TLS\r\n+OK injected\r\n", 1000).rfind(
                  "G+hi\nF the server sent octets after its STLS +OK: +OK injected", 0),
              0u);
    EXPECT_EQ(play_all({stls}, "+OK hi\r\n+OK begin TLS\r\n"), "G+hi\nR1+begin TLS\n");
    // A refusal is a reply.
    EXPECT_EQ(play_all({stls}, "+OK hi\r\n-ERR no TLS\r\n"), "G+hi\nR1-no TLS\n");
}

TEST(pop3c_core, nothing_is_written_before_the_greeting_nor_past_the_window) {
    core_options o;
    o.window = 3;
    core c(o);
    for (int n = 1; n <= 5; ++n) c.submit(retr(n));
    EXPECT_EQ(c.take_output(), "");
    c.feed("+OK hi\r\n");
    EXPECT_TRUE(std::holds_alternative<ev::greeting>(c.next()));
    EXPECT_EQ(c.take_output(), "RETR 1\r\nRETR 2\r\nRETR 3\r\n");
    EXPECT_EQ(c.in_flight(), 3u);
    EXPECT_EQ(c.queued(), 2u);
    // Refilled once at most half the window is in flight, in one write.
    c.feed("-ERR gone\r\n");
    EXPECT_TRUE(std::holds_alternative<ev::reply>(c.next()));
    EXPECT_EQ(c.take_output(), "");
    EXPECT_EQ(c.in_flight(), 2u);
    c.feed("-ERR gone too\r\n");
    EXPECT_TRUE(std::holds_alternative<ev::reply>(c.next()));
    EXPECT_EQ(c.take_output(), "RETR 4\r\nRETR 5\r\n");
    EXPECT_EQ(c.in_flight(), 3u);
    EXPECT_EQ(c.take_output(), "");
}

TEST(pop3c_core, stls_and_auth_go_alone) {
    core_options o;
    o.window = 8;
    core c(o);
    c.submit({"CAPA", answer::lines});
    c.submit({"STLS", answer::single, true});
    c.submit({"CAPA", answer::lines});
    c.feed("+OK hi\r\n");
    (void)c.next();
    EXPECT_EQ(c.take_output(), "CAPA\r\n");
    c.feed("+OK\r\n.\r\n");
    while (!std::holds_alternative<ev::need_input>(c.next())) {
    }
    EXPECT_EQ(c.take_output(), "STLS\r\n");
    c.feed("+OK go\r\n");
    EXPECT_TRUE(std::holds_alternative<ev::reply>(c.next()));
    c.tls_started();
    EXPECT_EQ(c.take_output(), "CAPA\r\n");
}

TEST(pop3c_core, sasl_challenges_are_answered_in_place) {
    core c;
    const auto seq = c.submit({"AUTH PLAIN", answer::sasl});
    c.submit({"STAT"});
    c.feed("+OK hi\r\n");
    (void)c.next();
    EXPECT_EQ(c.take_output(), "AUTH PLAIN\r\n");
    c.feed("+ \r\n");
    const auto e = c.next();
    ASSERT_TRUE(std::holds_alternative<ev::challenge>(e));
    EXPECT_EQ(std::get<ev::challenge>(e).seq, seq);
    c.respond("AGJvYgBzZWNyZXQ=");
    EXPECT_EQ(c.take_output(), "AGJvYgBzZWNyZXQ=\r\n");
    c.feed("+OK logged in\r\n");
    EXPECT_TRUE(std::holds_alternative<ev::reply>(c.next()));
    EXPECT_EQ(c.take_output(), "STAT\r\n");
}

TEST(pop3c_core, commands_can_end_in_bare_lf_when_asked) {
    core_options o;
    o.send_bare_lf = true;
    core c(o);
    c.submit({"STAT"});
    c.feed("+OK hi\r\n");
    (void)c.next();
    EXPECT_EQ(c.take_output(), "STAT\n");
}

TEST(pop3c_core, octets_before_a_command_was_written_are_unsolicited) {
    // An extra +OK after DELE's answer must not become the answer of the QUIT sent next.
    core c;
    c.submit({"DELE 1"});
    c.feed("+OK hi\r\n");
    (void)c.next();
    EXPECT_EQ(c.take_output(), "DELE 1\r\n");
    c.feed("+OK deleted\r\n+OK extra\r\n");
    EXPECT_TRUE(std::holds_alternative<ev::reply>(c.next()));
    c.submit({"QUIT"});
    EXPECT_EQ(c.take_output(), "");
    EXPECT_TRUE(std::holds_alternative<ev::failed>(c.next()));
}

TEST(pop3c_core, bad_servers_fail_cleanly_and_bounded) {
    // A line nobody asked for.
    EXPECT_EQ(play({}, "+OK hi\r\n+OK surprise\r\n", 100).rfind("G+hi\nF the server sent a line no command asked for", 0), 0u);
    // An over-long status line fails once the limit is crossed, not at its end.
    core_options o;
    o.max_line_octets = 64;
    const std::string long_line = "+OK hi\r\n+OK " + std::string(10000, 'x');
    const auto out = play({{"NOOP"}}, long_line, 7, o);
    EXPECT_NE(out.find("F a line from the server is longer than 64 octets"), std::string::npos) << out;
    // After a failure, every call fails again.
    core c;
    c.feed("garbage\r\n");
    EXPECT_TRUE(std::holds_alternative<ev::failed>(c.next()));
    EXPECT_TRUE(std::holds_alternative<ev::failed>(c.next()));
    EXPECT_TRUE(c.broken());
}

TEST(pop3c_core, describe_escapes_and_bounds) {
    EXPECT_EQ(core::describe("a\r\nb"), "a\\x0d\\x0ab");
    EXPECT_EQ(core::describe(std::string(100, 'x')), std::string(60, 'x') + "...");
}

}  // namespace
