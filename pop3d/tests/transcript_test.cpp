// transcript_test.cpp: runs every pop3d/tests/transcripts/*.txt against the POP3 core,
// line by line and again with all client input pipelined and split at every byte offset.
//
// Transcript syntax:
//   # comment               ! option (see apply_option)
//   C: client line          (CRLF added; "\r", "\n", "\0" and "\xHH" escapes allowed)
//   S: expected server line (without CRLF)
//   A: expected action => answer
#include "mailnet/pop3d/session.hpp"

#include <gtest/gtest.h>

#include "support/transcript.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace {

namespace fs = std::filesystem;
using namespace mailnet;
using namespace mailnet::pop3;
namespace act = mailnet::pop3::act;
using mailnet::testing::load_transcript;
using mailnet::testing::play_line_by_line;
using mailnet::testing::play_pipelined;
using mailnet::testing::split_words;
using mailnet::testing::transcript_names;
using mailnet::testing::transcript_test_name;

struct transcript {
    std::string name;
    session_config config;
    limits lim;
    bool sequential = false;  // STLS or close mid-way: no whole-input pipelining
    bool unsplittable = false;  // the arrival time of bytes matters (pipelined after STLS)
    bool lazy_retrieve = false;  // answer stream_message only when the session needs input, as the runner may
    std::vector<fault_rule> faults;  // "! fault ...": fresh rules (counts at 0) per player
    std::vector<std::pair<char, std::string>> lines;  // 'C', 'S', 'A'
};

void apply_option(transcript& t, const std::vector<std::string>& w) {
    if (w.empty()) return;
    if (w[0] == "remote") t.config.peer_is_loopback = false;
    else if (w[0] == "loopback") t.config.peer_is_loopback = true;
    else if (w[0] == "allow-plaintext") t.config.allow_plaintext_auth = true;
    else if (w[0] == "tls-available") t.config.tls_available = true;
    else if (w[0] == "tls-active") t.config.tls_active = true;
    else if (w[0] == "apop") { t.config.apop = true; t.config.apop_timestamp = w.at(1); }
    else if (w[0] == "sequential") t.sequential = true;
    else if (w[0] == "unsplittable") t.unsplittable = true;
    else if (w[0] == "lazy-retrieve") t.lazy_retrieve = true;
    else if (w[0] == "max-command-octets") t.lim.max_command_octets = std::stoul(w.at(1));
    else if (w[0] == "max-sasl-octets") t.lim.max_sasl_octets = std::stoul(w.at(1));
    else if (w[0] == "max-bad-commands") t.lim.max_bad_commands = std::stoul(w.at(1));
    else if (w[0] == "max-failed-logins") t.lim.max_failed_logins = std::stoul(w.at(1));
    else if (w[0] == "fault") t.faults.push_back(mailnet::testing::fault_option(w));
    else if (w[0] == "auth-failure-delay") t.lim.auth_failure_delay = std::chrono::milliseconds(std::stoul(w.at(1)));
    else throw std::runtime_error("unknown option " + w[0]);
}

transcript load(const fs::path& p) {
    transcript t;
    t.config.peer_is_loopback = true;
    t.lim.auth_failure_delay = std::chrono::milliseconds(0);
    auto file = load_transcript(p);
    t.name = file.name;
    for (const auto& words : file.options) apply_option(t, words);
    t.lines = std::move(file.lines);
    return t;
}

// Describes an action as a transcript A: line (without the answer).
std::string describe(const action& a) {
    return std::visit([](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, act::authenticate>) return "authenticate " + x.creds.user + " " + x.creds.password;
        else if constexpr (std::is_same_v<T, act::authenticate_apop>) return "apop " + x.user + " " + x.timestamp + " " + x.digest;
        else if constexpr (std::is_same_v<T, act::open_mailbox>) return "open_mailbox " + x.mailbox;
        else if constexpr (std::is_same_v<T, act::stream_message>)
            return "retrieve " + x.id + (x.top_lines ? " top " + std::to_string(*x.top_lines) : "");
        else if constexpr (std::is_same_v<T, act::commit>) {
            std::string s = "commit deleted=";
            for (std::size_t i = 0; i < x.deleted.size(); ++i) s += (i ? "," : "") + x.deleted[i];
            s += " seen=";
            for (std::size_t i = 0; i < x.seen.size(); ++i) s += (i ? "," : "") + x.seen[i];
            return s;
        }
        else if constexpr (std::is_same_v<T, act::start_tls>) return "start_tls";
        else if constexpr (std::is_same_v<T, act::login_failed>)
            return "login_failed " + (x.user.empty() ? std::string("-") : x.user) + ": " + x.reason +
                   (x.delay.count() ? " (delay " + std::to_string(x.delay.count()) + ")" : "");
        else if constexpr (std::is_same_v<T, act::close>) return "close";
        else if constexpr (std::is_same_v<T, act::delay>) return "delay " + std::to_string(x.duration.count());
        else return "?";
    }, a);
}

// Plays the session: replies and actions become S:/A: events, answers come from `expected`.
class player {
public:
    explicit player(const transcript& t) : t_(t), s_(with_faults(t), t.lim), m_(t.lines) { s_.start(); }

    void feed(std::string_view octets) {
        s_.feed(octets);
        drain();
    }

    // "" when every line matched, else the first mismatch.
    std::string finish() {
        drain();
        return m_.finish();
    }

private:
    static session_config with_faults(const transcript& t) {
        auto c = t.config;
        c.faults = mailnet::testing::make_faults(t.faults);
        return c;
    }
    // The runner writes a message's ok line and octets (or the error reply in its place) in
    // action order, like every other output; only when it answers streamed() may vary.
    void stream(const act::stream_message& r, const std::vector<std::string>& w) {
        std::error_code ec;
        if (w.empty() || w[0] != "ok")
            ec = w.empty() || w[0] == "not_found" ? make_error_code(errc::not_found) : make_error_code(errc::io_error);
        if (!ec) m_.sent(r.ok_line + "<" + r.id + ">\r\n.\r\n");
        else m_.sent(r.error_reply(r.tag, ec));
        if (t_.lazy_retrieve) unanswered_.push_back(ec);
        else s_.streamed(ec);
    }

    void drain() {
        for (int guard = 0; guard < 100000; ++guard) {
            action a = s_.next();
            if (std::holds_alternative<act::need_input>(a)) {
                if (unanswered_.empty()) return;
                for (const auto& ec : std::exchange(unanswered_, {})) s_.streamed(ec);
                continue;
            }
            if (auto* s = std::get_if<act::send>(&a)) {
                m_.sent(s->octets);
                continue;
            }
            const auto desc = describe(a);
            const auto answer = m_.answer_for(desc);
            const auto w = split_words(answer);
            if (std::holds_alternative<act::authenticate>(a) || std::holds_alternative<act::authenticate_apop>(a)) {
                if (w.size() >= 2 && w[0] == "ok") s_.resume(auth_result::ok(w[1], w.size() > 2 ? w[2] : w[1]));
                else if (!w.empty() && w[0] == "tempfail") s_.resume(auth_result::tempfail());
                else s_.resume(auth_result::fail());
            } else if (std::holds_alternative<act::open_mailbox>(a)) {
                mailbox_result r;
                if (!w.empty() && w[0] == "in_use") r.error = errc::mailbox_in_use;
                else if (!w.empty() && w[0] == "error") r.error = errc::io_error;
                else {
                    // ok id:octets:uidl[:seen] ...
                    for (std::size_t i = 1; i < w.size(); ++i) {
                        std::istringstream f(w[i]);
                        std::string id, octets, uidl, seen;
                        std::getline(f, id, ':');
                        std::getline(f, octets, ':');
                        std::getline(f, uidl, ':');
                        std::getline(f, seen, ':');
                        r.messages.push_back({id, std::stoull(octets), uidl, seen == "seen"});
                    }
                }
                s_.resume(std::move(r));
            } else if (auto* r = std::get_if<act::stream_message>(&a)) {
                stream(*r, w);
            } else if (auto* c = std::get_if<act::commit>(&a)) {
                commit_result cr;
                for (const auto& id : c->deleted)
                    cr.errors.push_back(std::find(w.begin(), w.end(), "fail:" + id) != w.end()
                                            ? make_error_code(errc::io_error) : std::error_code{});
                s_.resume(cr);
            } else if (std::holds_alternative<act::start_tls>(a)) {
                if (!w.empty() && w[0] == "ok") s_.tls_started();
            }
        }
        m_.fail("session produced actions without end");
    }

    const transcript& t_;
    session s_;
    mailnet::testing::transcript_matcher m_;
    std::vector<std::error_code> unanswered_;  // lazy: streamed messages not yet answered
};

fs::path transcript_dir() { return fs::path(MAILNET_POP3D_TRANSCRIPTS); }

class pop3_transcript : public ::testing::TestWithParam<std::string> {};

TEST_P(pop3_transcript, line_by_line) {
    const auto t = load(transcript_dir() / GetParam());
    player p(t);
    EXPECT_EQ(play_line_by_line(t.lines, p), "");
}

TEST_P(pop3_transcript, split_at_every_offset) {
    const auto t = load(transcript_dir() / GetParam());
    if (t.unsplittable) GTEST_SKIP() << "input must arrive as written";
    EXPECT_EQ(play_pipelined(t.lines, t.sequential, [&] { return player(t); }), "");
}

INSTANTIATE_TEST_SUITE_P(pop3d, pop3_transcript, ::testing::ValuesIn(transcript_names(transcript_dir())),
                         [](const auto& info) { return transcript_test_name(info.param); });

}  // namespace
