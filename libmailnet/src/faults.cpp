// faults.cpp: fault rules for the servers: validation (RFC 5321 4.2 reply codes, RFC 3463
// enhanced codes, RFC 1939 3 -ERR, the 512-octet reply lines of RFC 5321 4.5.3.1.5 and RFC 2449 4)
// and matching with per-rule counts.
#include "mailnet/faults.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <iterator>

namespace mailnet {
namespace {

constexpr std::string_view phase_names[] = {"connect", "ehlo", "mail", "rcpt", "data", "auth", "pop3-login", "retr"};

char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

// Whether `needle` occurs in `hay`, ASCII case folded.
bool icontains(std::string_view hay, std::string_view needle) {
    if (needle.empty()) return true;
    return std::search(hay.begin(), hay.end(), needle.begin(), needle.end(),
                       [](char a, char b) { return lower(a) == lower(b); }) != hay.end();
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Printable ASCII only: no CR, LF or NUL can split the reply or end it early.
bool printable(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c <= 0x7E; });
}

// Length of a run of 1 to 3 digits at the start of `s`, 0 if there is none or a fourth follows.
std::size_t digits_1_to_3(std::string_view s) {
    std::size_t n = 0;
    while (n < s.size() && is_digit(s[n])) ++n;
    return n <= 3 ? n : 0;
}

// RFC 5321 4.2: "4yz" or "5yz" (y 0-5), then nothing or a space and text; RFC 3463 2: an
// enhanced code opening the text has the reply's class.
std::string smtp_reply_problem(std::string_view r) {
    if (r.size() < 3 || (r[0] != '4' && r[0] != '5') || r[1] < '0' || r[1] > '5' || !is_digit(r[2]))
        return "reply must start with an SMTP error code, 4xx or 5xx (RFC 5321 4.2)";
    if (r.size() > 3 && r[3] != ' ') return "reply must be the code, then a space and text, on one line";
    if (r.size() <= 4) return {};
    std::string_view t = r.substr(4);
    // class.subject.detail: 2, 4 or 5, then 1-3 digits twice (RFC 3463 2).
    if (t.size() >= 2 && is_digit(t[0]) && t[1] == '.') {
        std::size_t n = 2;
        const std::size_t subject = digits_1_to_3(t.substr(n));
        if (subject > 0 && n + subject < t.size() && t[n + subject] == '.') {
            n += subject + 1;
            const std::size_t detail = digits_1_to_3(t.substr(n));
            if (detail > 0 && (n + detail == t.size() || t[n + detail] == ' ') && t[0] != r[0])
                return "reply's enhanced code must have the class of its code (RFC 3463 2)";
        }
    }
    return {};
}

// RFC 1939 3: "-ERR", then nothing or a space and text.
std::string pop3_reply_problem(std::string_view r) {
    if (r.substr(0, 4) != "-ERR" || (r.size() > 4 && r[4] != ' '))
        return "reply must be a POP3 error: -ERR, then a space and text (RFC 1939 3)";
    return {};
}

bool phase_has_rcpt(fault_phase p) {
    return p == fault_phase::rcpt || p == fault_phase::data || p == fault_phase::auth ||
           p == fault_phase::pop3_login || p == fault_phase::retr;
}

bool phase_has_from(fault_phase p) {
    return p == fault_phase::mail || p == fault_phase::rcpt || p == fault_phase::data;
}

bool pop3_phase(fault_phase p) { return p == fault_phase::pop3_login || p == fault_phase::retr; }

// Whether `rule` is about this event (its phase, protocol and filters), before nth and probability.
bool matches(const fault_rule& rule, fault_phase phase, const fault_event& e) {
    if (rule.phase != phase) return false;
    if (phase == fault_phase::connect && !rule.reply.empty()) {
        const auto wants = rule.reply.front() == '-' ? fault_protocol::pop3 : fault_protocol::smtp;
        if (wants != e.protocol) return false;
    }
    if (!rule.match.rcpt.empty() &&
        std::none_of(e.rcpt.begin(), e.rcpt.end(), [&](const std::string& r) { return icontains(r, rule.match.rcpt); }))
        return false;
    if (!rule.match.from.empty() && (!e.from || !icontains(*e.from, rule.match.from))) return false;
    return true;
}

}  // namespace

std::string_view fault_phase_name(fault_phase p) noexcept {
    const auto i = static_cast<std::size_t>(p);
    return i < std::size(phase_names) ? phase_names[i] : std::string_view("?");
}

std::optional<fault_phase> parse_fault_phase(std::string_view name) noexcept {
    for (std::size_t i = 0; i < std::size(phase_names); ++i)
        if (phase_names[i] == name) return static_cast<fault_phase>(i);
    return std::nullopt;
}

std::string fault_rule_problem(const fault_rule& rule) {
    const auto index = static_cast<std::size_t>(rule.phase);
    if (index >= std::size(phase_names)) return "phase is not one of connect, ehlo, mail, rcpt, data, auth, pop3-login, retr";
    const std::string phase(fault_phase_name(rule.phase));
    if (rule.delay.count() < 0 || rule.delay > max_fault_delay)
        return "delay_ms must be from 0 to " + std::to_string(max_fault_delay.count());
    // NaN fails both comparisons: refused too.
    if (!(rule.probability >= 0.0 && rule.probability <= 1.0)) return "probability must be from 0 to 1";
    if (!rule.match.rcpt.empty() && !phase_has_rcpt(rule.phase))
        return "match.rcpt does not apply to phase " + phase + " (only rcpt, data, auth, pop3-login, retr)";
    if (!rule.match.from.empty() && !phase_has_from(rule.phase))
        return "match.from does not apply to phase " + phase + " (only mail, rcpt, data)";
    const auto& r = rule.reply;
    if (r.empty()) return {};
    if (r.size() > max_fault_reply_octets)
        return "reply must be at most " + std::to_string(max_fault_reply_octets) + " octets";
    if (!printable(r)) return "reply must be one line of printable ASCII (no CR, LF or other control characters)";
    if (rule.phase == fault_phase::connect)  // either protocol's greeting
        return r.front() == '-' ? pop3_reply_problem(r) : smtp_reply_problem(r);
    return pop3_phase(rule.phase) ? pop3_reply_problem(r) : smtp_reply_problem(r);
}

fault_rules::fault_rules(std::uint64_t seed) : random_(seed) {}

std::string fault_rules::replace(std::vector<fault_rule> rules) {
    if (rules.size() > max_fault_rules) return "at most " + std::to_string(max_fault_rules) + " rules";
    for (std::size_t i = 0; i < rules.size(); ++i)
        if (auto why = fault_rule_problem(rules[i]); !why.empty()) return "rules[" + std::to_string(i) + "]: " + why;
    std::vector<entry> fresh;
    fresh.reserve(rules.size());
    for (auto& r : rules) fresh.push_back(entry{std::move(r), 0});
    std::lock_guard lock(mutex_);
    entries_ = std::move(fresh);
    count_.store(entries_.size(), std::memory_order_release);
    return {};
}

std::vector<fault_rule> fault_rules::rules() const {
    std::lock_guard lock(mutex_);
    std::vector<fault_rule> out;
    out.reserve(entries_.size());
    for (const auto& e : entries_) out.push_back(e.rule);
    return out;
}

void fault_rules::clear() {
    std::lock_guard lock(mutex_);
    entries_.clear();
    count_.store(0, std::memory_order_release);
}

bool fault_rules::empty() const noexcept { return count_.load(std::memory_order_acquire) == 0; }

std::optional<fault_action> fault_rules::check(fault_phase phase, const fault_event& event) {
    if (empty()) return std::nullopt;  // the common case: no lock
    std::lock_guard lock(mutex_);
    std::optional<fault_action> chosen;
    for (auto& e : entries_) {
        if (!matches(e.rule, phase, event)) continue;
        // Every rule counts what it matches, whether or not an earlier rule acts on it, so a
        // rule's "nth" does not depend on the rules before it.
        ++e.seen;
        if (chosen || (e.rule.nth != 0 && e.seen != e.rule.nth)) continue;
        // Certain rules (0 or 1) draw nothing: adding one does not shift the others' draws.
        const double p = e.rule.probability;
        if (p <= 0.0) continue;
        // 53 random bits as a double in [0, 1): the same sequence on every platform, which
        // std::uniform_real_distribution does not promise.
        if (p < 1.0 && static_cast<double>(random_() >> 11) * 0x1.0p-53 >= p) continue;
        chosen = fault_action{e.rule.delay, e.rule.reply, e.rule.disconnect};
    }
    return chosen;
}

}  // namespace mailnet
