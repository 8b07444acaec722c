// transcript_test.cpp: runs every smtpd/tests/transcripts/*.txt against the SMTP core, line by
// line and again with all client input pipelined and split at every byte offset (RFC 2920:
// replies in order whatever the client's batching). Syntax: libmailnet/tests/support/transcript.hpp.
// Actions: "A: host PEER", "A: sender ADDRESS", "A: recipient ADDRESS" (answered "ok" or
// "refuse CODE ENHANCED TEXT"), "A: deliver from=ADDRESS to=A,B data=OCTETS" (answered "ok
// CODE ENHANCED TEXT" or "refuse ..."; message_data is collected into data=, \r and \n
// escaped), "A: discard", "A: close", "A: start_tls" (answered "ok" for a finished handshake),
// "A: authenticate USER PASSWORD" (answered "ok ACCOUNT", "fail" or "tempfail"),
// "A: login_failed USER: REASON", "A: delay MS" (a fault rule's; options "! fault PHASE ...":
// mailnet::testing::fault_option).
#include "mailnet/smtpd/session.hpp"

#include <gtest/gtest.h>

#include "support/transcript.hpp"

namespace {

namespace fs = std::filesystem;
using namespace mailnet::smtp;
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
    bool sequential = false;  // STARTTLS or a close mid-way: no whole-input pipelining
    bool unsplittable = false;  // the arrival time of bytes matters (pipelined after STARTTLS)
    std::vector<mailnet::fault_rule> faults;  // "! fault ...": fresh rules (counts at 0) per player
    std::vector<std::pair<char, std::string>> lines;
};

transcript load(const fs::path& p) {
    transcript t;
    t.lim.auth_failure_delay = std::chrono::milliseconds(0);
    t.config.hostname = "mx.example";
    t.config.peer_address = "192.0.2.7";
    auto file = load_transcript(p);
    t.name = file.name;
    for (const auto& w : file.options) {
        if (w.empty()) continue;
        if (w[0] == "max-recipients") t.lim.max_recipients = std::stoul(w.at(1));
        else if (w[0] == "max-message-octets") t.lim.max_message_octets = std::stoull(w.at(1));
        else if (w[0] == "max-bad-commands") t.lim.max_bad_commands = std::stoul(w.at(1));
        else if (w[0] == "max-refused-recipients") t.lim.max_refused_recipients = std::stoul(w.at(1));
        else if (w[0] == "max-junk-commands") t.lim.max_junk_commands = std::stoul(w.at(1));
        else if (w[0] == "max-recipient-overshoot") t.lim.max_recipient_overshoot = std::stoul(w.at(1));
        else if (w[0] == "max-command-octets") t.lim.max_command_octets = std::stoul(w.at(1));
        else if (w[0] == "max-text-line-octets") t.lim.max_text_line_octets = std::stoul(w.at(1));
        else if (w[0] == "normalise") t.config.normalise_bare_line_ends = true;
        else if (w[0] == "tls-available") t.config.tls_available = true;
        else if (w[0] == "tls-active") t.config.tls_active = true;
        else if (w[0] == "auth") t.config.auth_available = true;
        else if (w[0] == "loopback") t.config.peer_is_loopback = true;
        else if (w[0] == "allow-plaintext") t.config.allow_plaintext_auth = true;
        else if (w[0] == "require-auth") t.config.require_auth = true;
        else if (w[0] == "sequential") t.sequential = true;
        else if (w[0] == "unsplittable") t.unsplittable = true;
        else if (w[0] == "max-sasl-octets") t.lim.max_sasl_octets = std::stoul(w.at(1));
        else if (w[0] == "max-failed-logins") t.lim.max_failed_logins = std::stoul(w.at(1));
        else if (w[0] == "fault") t.faults.push_back(mailnet::testing::fault_option(w));
        else throw std::runtime_error("unknown option " + w[0]);
    }
    t.lines = std::move(file.lines);
    return t;
}

std::string escaped(std::string_view s) {
    std::string out;
    for (char c : s) {
        if (c == '\r') out += "\\r";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

// "ok [CODE ENHANCED TEXT...]" or "refuse CODE ENHANCED TEXT..."
verdict parse_verdict(const std::string& answer) {
    const auto w = split_words(answer);
    verdict v;
    v.accepted = !w.empty() && w[0] == "ok";
    if (w.size() >= 3) {
        v.answer.code = std::stoi(w[1]);
        v.answer.enhanced = w[2];
        const auto text = answer.find(w[2]) + w[2].size();
        // Escapes as in C: lines, so a callback's text can carry a CR or LF to the core.
        v.answer.text = text < answer.size() ? mailnet::testing::unescape(answer.substr(text + 1)) : "";
    } else if (!v.accepted) {
        v.answer = reply{550, "5.0.0", "refused"};
    }
    return v;
}

class player {
public:
    explicit player(const transcript& t) : s_(with_faults(t), t.lim), m_(t.lines) {
        s_.start();
        drain();
    }
    void feed(std::string_view octets) {
        s_.feed(octets);
        drain();
    }
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
    void answer(const std::string& desc) { s_.resume(parse_verdict(m_.answer_for(desc))); }
    void drain() {
        for (int guard = 0; guard < 100000; ++guard) {
            action a = s_.next();
            if (std::holds_alternative<act::need_input>(a)) return;
            if (auto* out = std::get_if<act::send>(&a)) {
                m_.sent(out->octets);
            } else if (auto* d = std::get_if<act::message_data>(&a)) {
                data_ += d->octets;
            } else if (auto* h = std::get_if<act::validate_host>(&a)) {
                answer("host " + h->peer);
            } else if (auto* m = std::get_if<act::validate_sender>(&a)) {
                answer("sender " + (m->sender.is_null() ? "<>" : m->sender.address()));
            } else if (auto* r = std::get_if<act::validate_recipient>(&a)) {
                answer("recipient " + r->recipient.address());
            } else if (auto* dl = std::get_if<act::deliver>(&a)) {
                std::string to;
                for (const auto& r : dl->mail.recipients) to += (to.empty() ? "" : ",") + r.address();
                const auto from = dl->mail.sender.is_null() ? std::string("<>") : dl->mail.sender.address();
                answer("deliver from=" + from + " to=" + to + " data=" + escaped(std::exchange(data_, {})));
            } else if (std::holds_alternative<act::discard>(a)) {
                data_.clear();
                m_.answer_for("discard");
            } else if (std::holds_alternative<act::close>(a)) {
                m_.answer_for("close");
            } else if (std::holds_alternative<act::start_tls>(a)) {
                if (m_.answer_for("start_tls") == "ok") s_.tls_started();
            } else if (auto* au = std::get_if<act::authenticate>(&a)) {
                const auto w = split_words(m_.answer_for("authenticate " + au->creds.user + " " + au->creds.password));
                if (w.size() >= 2 && w[0] == "ok") s_.resume(mailnet::auth_result::ok(w[1], w[1]));
                else if (!w.empty() && w[0] == "tempfail") s_.resume(mailnet::auth_result::tempfail());
                else s_.resume(mailnet::auth_result::fail());
            } else if (auto* lf = std::get_if<act::login_failed>(&a)) {
                m_.answer_for("login_failed " + (lf->user.empty() ? std::string("-") : lf->user) + ": " + lf->reason);
            } else if (auto* dl = std::get_if<act::delay>(&a)) {
                m_.answer_for("delay " + std::to_string(dl->duration.count()));
            } else {
                m_.fail("an action the player does not know");
            }
        }
        m_.fail("session produced actions without end");
    }

    session s_;
    mailnet::testing::transcript_matcher m_;
    std::string data_;
};

fs::path transcript_dir() { return fs::path(MAILNET_SMTPD_TRANSCRIPTS); }

class smtp_transcript : public ::testing::TestWithParam<std::string> {};

TEST_P(smtp_transcript, line_by_line) {
    const auto t = load(transcript_dir() / GetParam());
    player p(t);
    EXPECT_EQ(play_line_by_line(t.lines, p), "");
}

TEST_P(smtp_transcript, pipelined_and_split_at_every_offset) {
    const auto t = load(transcript_dir() / GetParam());
    if (t.unsplittable) GTEST_SKIP() << "input must arrive as written";
    EXPECT_EQ(play_pipelined(t.lines, t.sequential, [&] { return player(t); }), "");
}

INSTANTIATE_TEST_SUITE_P(smtpd, smtp_transcript, ::testing::ValuesIn(transcript_names(transcript_dir())),
                         [](const auto& info) { return transcript_test_name(info.param); });

}  // namespace
