// session.cpp: the POP3 server protocol core (RFC 1939 3-9, RFC 2449 5-8 CAPA and response
// codes, RFC 2595 4 STLS, RFC 5034 4 AUTH PLAIN, RFC 3206 AUTH and SYS/TEMP, SYS/PERM).
#include "mailnet/pop3d/session.hpp"

#include <algorithm>
#include <cctype>
#include <limits>

#include "mailnet/auth/sasl.hpp"

namespace mailnet::pop3 {
namespace {

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
           });
}

// A run of decimal digits, nothing else (RFC 1939 3: numbers are decimal); a value past
// what fits saturates (a message number that large names no message; a TOP count that
// large means "all lines", RFC 1939 7).
std::optional<std::size_t> parse_number(std::string_view s) {
    if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    std::size_t v = 0;
    for (char c : s) {
        if (v > (std::numeric_limits<std::size_t>::max() - 9) / 10) return std::numeric_limits<std::size_t>::max();
        v = v * 10 + static_cast<std::size_t>(c - '0');
    }
    return v;
}

std::pair<std::string_view, std::string_view> split_first(std::string_view s) {
    const auto sp = s.find(' ');
    if (sp == std::string_view::npos) return {s, {}};
    return {s.substr(0, sp), s.substr(sp + 1)};
}

}  // namespace

std::string_view state_name(state s) noexcept {
    switch (s) {
        case state::authorization: return "AUTHORIZATION";
        case state::transaction: return "TRANSACTION";
        case state::update: return "UPDATE";
        case state::closed: return "CLOSED";
    }
    return "?";
}

// name, handler, valid in AUTHORIZATION, valid in TRANSACTION
const session::command session::commands_[] = {
    {"USER", &session::cmd_user, true, false}, {"PASS", &session::cmd_pass, true, false},
    {"APOP", &session::cmd_apop, true, false}, {"AUTH", &session::cmd_auth, true, false},
    {"STLS", &session::cmd_stls, true, false}, {"CAPA", &session::cmd_capa, true, true},
    {"QUIT", &session::cmd_quit, true, true},  {"NOOP", &session::cmd_noop, false, true},
    {"STAT", &session::cmd_stat, false, true}, {"LIST", &session::cmd_list, false, true},
    {"UIDL", &session::cmd_uidl, false, true}, {"RETR", &session::cmd_retr, false, true},
    {"TOP", &session::cmd_top, false, true},   {"DELE", &session::cmd_dele, false, true},
    {"RSET", &session::cmd_rset, false, true}, {"LAST", &session::cmd_last, false, true},
};

session::session(session_config config, limits lim)
    : config_(std::move(config)), limits_(lim), reader_(lim.max_command_octets) {}

void session::start() {
    // A fault's reply is said instead of the greeting and the session ends: after an -ERR
    // greeting a POP3 client can do nothing but leave (RFC 1939 4 knows only +OK there).
    if (faulted(fault_phase::connect)) {
        if (state_ != state::closed) {
            emit(act::close{});
            state_ = state::closed;
        }
        return;
    }
    std::string greeting = "mailnet POP3 server ready";
    // DESIGN.md "Rules": APOP is under the plaintext rule, so a remote cleartext client is not
    // even offered the timestamp (RFC 1939 7: no timestamp, no APOP).
    apop_offered_ = config_.apop && !config_.apop_timestamp.empty() && plaintext_allowed();
    if (apop_offered_) greeting += " " + config_.apop_timestamp;
    ok(greeting);
}

void session::feed(std::string_view octets) {
    if (state_ == state::closed) return;
    reader_.feed(octets);
}

action session::next() {
    while (!output_.has_actions() && waiting_ == wait::none && state_ != state::closed) {
        // A long listing goes out piece by piece, and no input line is taken while output is
        // pending past the bound: the runner writes it first (DESIGN.md "Layers" 1).
        if (listing_) {
            continue_listing();
            if (output_.pending() >= max_pending_output_octets / 4) break;
            continue;
        }
        if (output_.pending() >= max_pending_output_octets) break;
        const auto s = reader_.next();
        if (s == line_reader::status::need_more) break;
        if (s == line_reader::status::too_long) {
            if (sasl_pending_) {
                sasl_pending_ = false;
                reader_.set_limit(limits_.max_command_octets);
                login_failed({}, "SASL response too long", "SASL response too long");
            } else {
                bad_command("line too long");
            }
            continue;
        }
        handle_line(reader_.text());
    }
    return output_.take();
}

void session::emit(action a) { output_.emit(std::move(a)); }

void session::reply(std::string_view line) {
    output_.text() += line;
    output_.text() += "\r\n";
}

void session::ok(std::string_view text) {
    output_.text() += text.empty() ? "+OK" : "+OK ";
    reply(text);
}

void session::err(std::string_view text) {
    output_.text() += "-ERR ";
    reply(text);
}

void session::bad_command(std::string_view text) {
    err(text);
    if (++bad_commands_ >= limits_.max_bad_commands) {
        // NOTE: RFC 1939 does not limit bad commands; like Dovecot we close, so a client
        // stuck in a loop or a scanner cannot hold the connection forever.
        err("too many bad commands, closing");
        emit(act::close{});
        state_ = state::closed;
    }
}

bool session::plaintext_allowed() const noexcept {
    // DESIGN.md "Rules": no plaintext password over cleartext from a non-loopback peer.
    return config_.tls_active || config_.peer_is_loopback || config_.allow_plaintext_auth;
}

void session::handle_line(std::string_view line) {
    if (sasl_pending_) {
        finish_sasl(line);
        return;
    }
    const auto [name, arg] = split_first(line);
    const command* cmd = nullptr;
    for (const auto& c : commands_)
        if (iequals(c.name, name)) cmd = &c;
    if (!cmd) {
        bad_command("unknown command");
        return;
    }
    const bool allowed = state_ == state::authorization ? cmd->in_authorization : cmd->in_transaction;
    if (!allowed) {
        bad_command("command not valid in this state");
        return;
    }
    // These read the retrieved marks: wait until every outstanding RETR has been answered.
    const bool reads_marks = cmd->handler == &session::cmd_rset || cmd->handler == &session::cmd_last ||
                             cmd->handler == &session::cmd_quit;
    if (reads_marks && !retrievals_.empty()) {
        deferred_line_ = line;
        waiting_ = wait::retrievals;
        return;
    }
    (this->*cmd->handler)(arg);
}

std::string session::capabilities() const {
    // RFC 2449 6: the list may differ between AUTHORIZATION and TRANSACTION.
    std::string c = "+OK capability list follows\r\n";
    c += "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n";
    if (state_ == state::authorization) {
        if (plaintext_allowed()) c += "USER\r\nSASL PLAIN\r\n";
        if (config_.tls_available && !config_.tls_active) c += "STLS\r\n";
    }
    c += "EXPIRE NEVER\r\nLOGIN-DELAY 0\r\nIMPLEMENTATION " + config_.implementation + "\r\n.\r\n";
    return c;
}

std::optional<std::size_t> session::message_arg(std::string_view arg, bool allow_deleted) {
    const auto n = parse_number(arg);
    if (!n) {
        bad_command("invalid message number");
        return std::nullopt;
    }
    if (*n == 0 || *n > messages_.size()) {
        err("no such message");
        return std::nullopt;
    }
    const std::size_t index = *n - 1;
    if (marks_[index].deleted && !allow_deleted) {
        err("message " + std::to_string(*n) + " already deleted");
        return std::nullopt;
    }
    return index;
}

void session::login_failed(std::string_view user, std::string_view reason, std::string_view reply) {
    ++failed_logins_;
    // RFC 1939 4 / 13: a delay after a failed login slows down password guessing; the runner
    // logs every failure, whatever its way in (fail2ban-style monitoring sees them all).
    emit(act::login_failed{std::string(user), std::string(reason), limits_.auth_failure_delay});
    err("[AUTH] " + std::string(reply));
    if (failed_logins_ >= limits_.max_failed_logins) {
        err("too many failed logins, closing");
        emit(act::close{});
        state_ = state::closed;
    }
}

// A fault rule for this event (mailnet/faults.hpp): its delay is queued, then its reply is said
// in place of the command's and its disconnect closes; true when it took the command over (a
// reply or a disconnect). Checked once a command passed its syntax and state checks, so a fault
// never hides the client's own error. `user`: what match.rcpt is held against.
bool session::faulted(fault_phase phase, std::string_view user) {
    if (!config_.faults || config_.faults->empty()) return false;
    const std::string who[] = {std::string(user)};
    fault_event e{fault_protocol::pop3, {}, std::nullopt};
    if (!user.empty()) e.rcpt = who;
    const auto f = config_.faults->check(phase, e);
    if (!f) return false;
    if (f->delay.count() > 0) emit(act::delay{f->delay});
    if (!f->reply.empty()) reply(f->reply);
    if (f->disconnect) {
        emit(act::close{});
        state_ = state::closed;
    }
    return !f->reply.empty() || f->disconnect;
}

// ---- AUTHORIZATION ----------------------------------------------------------------------

void session::cmd_user(std::string_view arg) {
    if (!plaintext_allowed()) {
        err("[AUTH] plaintext authentication disallowed on non-secure connections");
        return;
    }
    if (arg.empty()) {
        bad_command("syntax: USER name");
        return;
    }
    // USER always answers +OK: whether the name exists is never told (no user enumeration).
    pending_user_ = arg;
    ok("");
}

void session::cmd_pass(std::string_view arg) {
    if (!plaintext_allowed()) {
        err("[AUTH] plaintext authentication disallowed on non-secure connections");
        return;
    }
    if (pending_user_.empty()) {
        bad_command("USER first");
        return;
    }
    // A faulted login is not a failed one: neither counted nor delayed.
    if (faulted(fault_phase::pop3_login, pending_user_)) {
        pending_user_.clear();
        return;
    }
    // RFC 1939 7: the password is the rest of the line and may contain spaces.
    last_user_ = pending_user_;
    emit(act::authenticate{credentials{std::exchange(pending_user_, {}), std::string(arg)}});
    waiting_ = wait::auth;
}

void session::cmd_apop(std::string_view arg) {
    if (!config_.apop) {
        bad_command("APOP not available");
        return;
    }
    if (!plaintext_allowed()) {
        err("[AUTH] APOP disallowed on non-secure connections");
        return;
    }
    if (!apop_offered_) {
        // After STLS: the cleartext greeting carried no timestamp to digest.
        err("[AUTH] APOP not offered on this connection; use AUTH PLAIN or USER/PASS");
        return;
    }
    const auto [name, digest] = split_first(arg);
    const bool hex = digest.size() == 32 && std::all_of(digest.begin(), digest.end(), [](char c) {
                         return std::isxdigit(static_cast<unsigned char>(c));
                     });
    if (name.empty() || !hex) {
        bad_command("syntax: APOP name digest");
        return;
    }
    std::string lower(digest);
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (faulted(fault_phase::pop3_login, name)) return;
    last_user_ = name;
    emit(act::authenticate_apop{std::string(name), config_.apop_timestamp, std::move(lower)});
    waiting_ = wait::auth;
}

void session::cmd_auth(std::string_view arg) {
    const auto [mech, initial] = split_first(arg);
    if (mech.empty()) {
        // RFC 5034 4 (and the older AUTH without argument): list the mechanisms.
        output_.text() += plaintext_allowed() ? "+OK\r\nPLAIN\r\n.\r\n" : "+OK\r\n.\r\n";
        return;
    }
    if (!iequals(mech, "PLAIN")) {
        err("unrecognized authentication type");
        return;
    }
    if (!plaintext_allowed()) {
        err("[AUTH] plaintext authentication disallowed on non-secure connections");
        return;
    }
    if (initial.empty()) {
        output_.text() += "+ \r\n";
        sasl_pending_ = true;
        reader_.set_limit(limits_.max_sasl_octets);
        return;
    }
    finish_sasl(initial);
}

void session::finish_sasl(std::string_view response) {
    if (sasl_pending_) {
        sasl_pending_ = false;
        reader_.set_limit(limits_.max_command_octets);
    }
    if (response == "*") {
        // RFC 5034 4; counted, so a client cannot loop on AUTH PLAIN / "*" for ever.
        bad_command("authentication cancelled");
        return;
    }
    // A malformed response is a failed login (as in Dovecot): delayed, counted and logged.
    auto decoded = decode_sasl_plain(response);
    if (auto* refused = std::get_if<sasl_refusal>(&decoded)) {
        // The reply names a syntax problem, never whether a name or password was right.
        login_failed(refused->user, refused->reason, refused->user.empty() ? refused->reason : "authentication failed");
        return;
    }
    if (faulted(fault_phase::pop3_login, std::get<credentials>(decoded).user)) return;
    last_user_ = std::get<credentials>(decoded).user;
    emit(act::authenticate{std::move(std::get<credentials>(decoded))});
    waiting_ = wait::auth;
}

void session::resume(const auth_result& r) {
    if (waiting_ != wait::auth) return;
    waiting_ = wait::none;
    switch (r.outcome) {
        case auth_result::status::fail: login_failed(last_user_, "wrong name or password"); return;
        case auth_result::status::tempfail: err("[SYS/TEMP] authentication backend unavailable, try later"); return;
        case auth_result::status::ok: break;
    }
    account_ = r.account;
    mailbox_ = r.mailbox;
    emit(act::open_mailbox{mailbox_});
    waiting_ = wait::mailbox;
}

void session::resume(mailbox_result r) {
    if (waiting_ != wait::mailbox) return;
    waiting_ = wait::none;
    if (r.error) {
        account_.clear();
        mailbox_.clear();
        if (r.error == errc::mailbox_in_use)
            err("[IN-USE] mailbox is locked by another session");  // RFC 2449 8.1.1
        else
            err("[SYS/TEMP] cannot open mailbox, try later");  // RFC 3206 4
        return;
    }
    messages_ = std::move(r.messages);
    marks_.assign(messages_.size(), {});
    state_ = state::transaction;
    std::uint64_t octets = 0;
    for (const auto& m : messages_) octets += m.octets;
    ok("logged in, " + std::to_string(messages_.size()) + " messages (" + std::to_string(octets) + " octets)");
}

void session::cmd_stls(std::string_view arg) {
    if (!arg.empty()) {
        bad_command("STLS takes no argument");
        return;
    }
    if (config_.tls_active) {
        err("already in TLS");
        return;
    }
    if (!config_.tls_available) {
        bad_command("STLS not available");
        return;
    }
    ok("begin TLS negotiation");
    emit(act::start_tls{});
    waiting_ = wait::tls;
}

void session::tls_started() {
    if (waiting_ != wait::tls) return;
    waiting_ = wait::none;
    // RFC 2595 4: discard what was pipelined in cleartext; a fresh AUTHORIZATION state.
    reader_.clear();
    config_.tls_active = true;
    pending_user_.clear();
}

void session::cmd_capa(std::string_view arg) {
    if (!arg.empty()) {
        bad_command("CAPA takes no argument");
        return;
    }
    output_.text() += capabilities();
}

void session::cmd_quit(std::string_view) {
    if (state_ == state::authorization) {
        ok("bye");
        emit(act::close{});
        state_ = state::closed;
        return;
    }
    // RFC 1939 6: UPDATE state. Retrieved messages become seen, deleted ones go.
    state_ = state::update;
    quit_in_transaction_ = true;
    act::commit c;
    for (std::size_t i = 0; i < messages_.size(); ++i) {
        if (marks_[i].deleted)
            c.deleted.push_back(messages_[i].id);
        else if (marks_[i].retrieved && !messages_[i].seen)
            c.seen.push_back(messages_[i].id);
    }
    if (c.deleted.empty() && c.seen.empty()) {
        ok("bye");
        emit(act::close{});
        state_ = state::closed;
        return;
    }
    emit(std::move(c));
    waiting_ = wait::commit;
}

void session::resume(const commit_result& r) {
    if (waiting_ != wait::commit) return;
    waiting_ = wait::none;
    const bool failed = std::any_of(r.errors.begin(), r.errors.end(), [](const auto& e) { return bool(e); });
    if (failed)
        err("[SYS/TEMP] some deleted messages were not removed");  // RFC 1939 6, RFC 3206 4
    else
        ok("bye");
    emit(act::close{});
    state_ = state::closed;
}

// ---- TRANSACTION ------------------------------------------------------------------------

void session::cmd_stat(std::string_view arg) {
    if (!arg.empty()) {
        bad_command("STAT takes no argument");
        return;
    }
    std::size_t count = 0;
    std::uint64_t octets = 0;
    for (std::size_t i = 0; i < messages_.size(); ++i) {
        if (marks_[i].deleted) continue;
        ++count;
        octets += messages_[i].octets;
    }
    ok(std::to_string(count) + " " + std::to_string(octets));
}

void session::cmd_list(std::string_view arg) {
    if (!arg.empty()) {
        if (const auto i = message_arg(arg))
            ok(std::to_string(*i + 1) + " " + std::to_string(messages_[*i].octets));
        return;
    }
    ok("scan listing follows");
    listing_ = listing{false, 0};
}

void session::cmd_uidl(std::string_view arg) {
    if (!arg.empty()) {
        if (const auto i = message_arg(arg)) ok(std::to_string(*i + 1) + " " + messages_[*i].pop3_uidl());
        return;
    }
    ok("unique-id listing follows");
    listing_ = listing{true, 0};
}

void session::continue_listing() {
    // One piece: next() hands it out before the next, so 100,000 lines never sit in one string.
    auto& l = *listing_;
    const std::size_t piece = max_pending_output_octets / 4;
    for (; l.next < messages_.size() && output_.pending() < piece; ++l.next) {
        if (marks_[l.next].deleted) continue;
        output_.text() += std::to_string(l.next + 1);
        output_.text() += ' ';
        output_.text() += l.uidl ? messages_[l.next].pop3_uidl() : std::to_string(messages_[l.next].octets);
        output_.text() += "\r\n";
    }
    if (l.next == messages_.size()) {
        reply(".");
        listing_.reset();
    }
}

void session::cmd_retr(std::string_view arg) {
    const auto i = message_arg(arg);
    if (!i) return;
    if (faulted(fault_phase::retr, account_)) return;  // not sent, so not marked seen
    retrievals_.push_back({*i, true});
    emit(act::stream_message{messages_[*i].id, std::nullopt,
                             "+OK " + std::to_string(messages_[*i].octets) + " octets\r\n", messages_[*i].octets,
                             *i + 1, &session::retrieve_error});
}

void session::cmd_top(std::string_view arg) {
    const auto [msg, lines_text] = split_first(arg);
    const auto lines = parse_number(lines_text);
    if (msg.empty() || !lines) {
        bad_command("syntax: TOP message lines");
        return;
    }
    const auto i = message_arg(msg);
    if (!i) return;
    if (faulted(fault_phase::retr, account_)) return;
    retrievals_.push_back({*i, false});
    emit(act::stream_message{messages_[*i].id, *lines, "+OK top of message follows\r\n", messages_[*i].octets,
                             *i + 1, &session::retrieve_error});
}

std::string session::retrieve_error(std::size_t msn, std::error_code error) {
    if (error == errc::not_found) return "-ERR [SYS/PERM] message " + std::to_string(msn) + " is gone from the mailbox\r\n";
    return "-ERR [SYS/TEMP] cannot read message " + std::to_string(msn) + ", try later\r\n";
}

void session::streamed(std::error_code error) {
    if (retrievals_.empty()) return;
    const auto done = retrievals_.front();
    retrievals_.pop_front();
    // RFC 1939 has no seen flag; like Dovecot, RETR (not TOP) marks a message seen at QUIT.
    if (!error && done.whole) marks_[done.index].retrieved = true;
    if (retrievals_.empty() && waiting_ == wait::retrievals) {
        waiting_ = wait::none;
        handle_line(std::exchange(deferred_line_, {}));
    }
}

void session::cmd_dele(std::string_view arg) {
    const auto i = message_arg(arg);
    if (!i) return;
    marks_[*i].deleted = true;
    ok("message " + std::to_string(*i + 1) + " deleted");
}

void session::cmd_noop(std::string_view arg) {
    if (!arg.empty()) {
        bad_command("NOOP takes no argument");
        return;
    }
    ok("");
}

void session::cmd_rset(std::string_view arg) {
    if (!arg.empty()) {
        bad_command("RSET takes no argument");
        return;
    }
    // RFC 1939 5: unmark deleted messages; this session's seen marks are undone too.
    marks_.assign(messages_.size(), {});
    std::uint64_t octets = 0;
    for (const auto& m : messages_) octets += m.octets;
    ok("maildrop has " + std::to_string(messages_.size()) + " messages (" + std::to_string(octets) + " octets)");
}

void session::cmd_last(std::string_view arg) {
    if (!arg.empty()) {
        bad_command("LAST takes no argument");
        return;
    }
    // RFC 1460 LAST: the highest message number accessed; here the highest seen one, as
    // Dovecot's pop3_enable_last (seen before this session, or retrieved in it).
    std::size_t last = 0;
    for (std::size_t i = 0; i < messages_.size(); ++i)
        if (messages_[i].seen || marks_[i].retrieved) last = i + 1;
    ok(std::to_string(last));
}

}  // namespace mailnet::pop3
