// session.cpp: the SMTP server protocol core (RFC 5321 3.3 mail transactions, 4.1.1 commands,
// 4.1.4 sequencing, 4.2 replies, 4.5.2 dot-stuffing, 4.5.3.1 limits; RFC 1870 SIZE; RFC 6152
// 8BITMIME; RFC 2920 PIPELINING; RFC 3463 and RFC 2034 enhanced codes; RFC 6531 SMTPUTF8;
// RFC 3030 CHUNKING; RFC 3207 STARTTLS; RFC 4954 AUTH with RFC 4616 PLAIN and LOGIN).
#include "mailnet/smtpd/session.hpp"

#include "mailnet/auth/sasl.hpp"
#include "mailnet/base64.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace mailnet::smtp {
namespace {

// RFC 3461 4: xtext is printable ASCII but "+" and "=", with "+" and two hex digits for any octet.
bool valid_xtext(std::string_view v) {
    const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
    for (std::size_t i = 0; i < v.size(); ++i) {
        const char c = v[i];
        if (c == '+') {
            if (i + 2 >= v.size() || !hex(v[i + 1]) || !hex(v[i + 2])) return false;
            i += 2;
        } else if (c < '!' || c > '~' || c == '=') {
            return false;
        }
    }
    return !v.empty();
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
           });
}

bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::pair<std::string_view, std::string_view> split_first(std::string_view s) {
    const auto sp = s.find(' ');
    if (sp == std::string_view::npos) return {s, {}};
    return {s.substr(0, sp), s.substr(sp + 1)};
}

}  // namespace

session::session(session_config config, limits lim)
    : config_(std::move(config)),
      limits_(lim),
      shutdown_notice_("421 4.3.2 " + config_.hostname + " Service shutting down\r\n"),
      timeout_notice_("421 4.4.2 " + config_.hostname + " Timeout waiting for the client, closing\r\n"),
      reader_(lim.max_command_octets) {}

std::string_view session::shutdown_notice() const noexcept {
    // Inside a message the client is sending, not reading: a stopping server lets a message
    // finish (in_exchange), and a refused chunk is cut without a word, as before.
    if (closed_ || in_data_) return {};
    return shutdown_notice_;
}

std::string_view session::timeout_notice() const noexcept {
    if (closed_) return {};
    return timeout_notice_;
}

std::string_view session::state_text() const noexcept {
    if (closed_) return "CLOSED";
    if (in_data_) return chunk_ ? "BDAT" : "DATA";
    if (sasl_ != sasl::none || waiting_ == wait::auth) return "AUTH";
    if (has_sender_) return "MAIL";
    if (!greeted_.empty()) return "READY";
    return "GREETING";
}

void session::start() {
    if (auto f = fault(fault_phase::connect)) {
        // Said instead of the greeting, with the host refusal's rules (RFC 5321 3.1): a 421
        // closes, another code leaves a session that serves only QUIT.
        apply_fault(*f);
        if (closed_) return;
        if (f->reply.starts_with("421")) {
            emit(act::close{});
            closed_ = true;
        } else {
            refused_ = true;
        }
        return;
    }
    // The seed's validate_host: the client's address is judged before anything is said.
    emit(act::validate_host{config_.peer_address});
    waiting_ = wait::host;
}

void session::feed(std::string_view octets) {
    if (closed_) return;
    if (in_data_)
        data_in_.append(octets);
    else
        reader_.feed(octets);
}

session::action session::next() {
    while (!output_.has_actions() && waiting_ == wait::none && !closed_) {
        if (in_data_) {
            if (chunk_)
                take_chunk();
            else
                take_data();
            if (in_data_) break;  // more of the message is needed
            continue;
        }
        // No input line is taken while the replies pile up (DESIGN.md "Layers" 1).
        if (output_.pending() >= max_pending_output_octets) break;
        const auto s = reader_.next();
        if (s == line_reader::status::need_more) break;
        if (s == line_reader::status::too_long) {
            if (sasl_ != sasl::none) {
                sasl_ = sasl::none;
                reader_.set_limit(limits_.max_command_octets);
                login_failed(sasl_user_, "SASL response too long", "Error: SASL response too long");
            } else if (istarts_with(reader_.too_long_head(), "BDAT")) {
                lose_framing();  // its chunk follows: never read it as commands
            } else {
                bad_command(500, "5.5.2", "Error: line too long");
            }
            continue;
        }
        if (sasl_ != sasl::none)
            sasl_response(reader_.text());
        else
            handle_line(reader_.text());
    }
    return output_.take();
}

void session::emit(action a) { output_.emit(std::move(a)); }

void session::say(int code, std::string_view enhanced, std::string_view text) {
    const std::size_t start = output_.text().size();
    output_.text() += std::to_string(code);
    output_.text() += ' ';
    if (!enhanced.empty()) {
        output_.text() += enhanced;
        output_.text() += ' ';
    }
    // RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF. Replies that echo
    // the client's words (an option's name) or a callback's text are cut to fit, with "...".
    constexpr std::size_t max_reply_line = 512 - 2;
    const std::size_t used = output_.text().size() - start;
    const std::size_t room = used < max_reply_line ? max_reply_line - used : 0;
    if (text.size() > room) {
        output_.text() += text.substr(0, room > 3 ? room - 3 : 0);
        output_.text() += "...";
    } else {
        output_.text() += text;
    }
    output_.text() += "\r\n";
}

void session::say(const reply& r) {
    // A callback's reply goes out as one line: no CR, LF or NUL of its text can add another.
    std::string text = r.text;
    for (auto& c : text)
        if (c == '\r' || c == '\n' || c == '\0') c = ' ';
    // Its enhanced code is "class.subject.detail" (RFC 3463), each at most 3 digits; anything
    // else is left out rather than sent.
    const std::string_view e = r.enhanced;
    const bool code_ok = e.size() <= 11 && std::count(e.begin(), e.end(), '.') == 2 &&
                         std::all_of(e.begin(), e.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
    say(r.code, code_ok ? e : std::string_view{}, text);
}

// A verdict's reply with a code that fits it: a refusal is 4xx/5xx, an acceptance 2xx.
static reply fitting(const verdict& v) {
    reply r = v.answer;
    if (!v.accepted && (r.code < 400 || r.code > 599)) r = reply{554, "5.0.0", "Error: refused"};
    if (v.accepted && (r.code < 200 || r.code > 299)) r = reply{250, "2.0.0", "Ok"};
    return r;
}

void session::bad_command(int code, std::string_view enhanced, std::string_view text) {
    say(code, enhanced, text);
    count_error(code == 503);
}

// A command that did no work, answered as usual (limits::max_junk_commands): past the
// allowance since the last message accepted, each one is an error too.
void session::junk_command() {
    if (++junk_commands_ > limits_.max_junk_commands) count_error(false);
}

// A MAIL refused (by validate_sender, or for its size or its 8-bit address): its reply, and a
// command that did no work.
void session::refused_mail(int code, std::string_view enhanced, std::string_view text) {
    say(code, enhanced, text);
    junk_command();
}

// A recipient refused after its reply `code` went out: a 5xx counts toward
// limits::max_refused_recipients (no free probing for addresses), a 4xx (a greylisting policy, a
// store that cannot answer) is a command that did no work.
void session::refused_recipient(int code) {
    if (code < 500) return junk_command();
    if (++refused_recipients_ >= limits_.max_refused_recipients) {
        say(421, "4.7.0", config_.hostname + " Error: too many refused recipients");
        emit(act::close{});
        closed_ = true;
    }
}

void session::count_error(bool sequence_error) {
    // A 503 is what a pipelining client gets for every command after a refused MAIL or RCPT
    // (RFC 2920 3.1): not a sign of a broken client, so counted apart, with an allowance of a
    // whole transaction's commands since the last MAIL accepted (20,000 RCPTs without a MAIL
    // would otherwise keep a session busy for ever).
    const bool too_many = sequence_error ? ++sequence_errors_ > limits_.max_recipients + limits_.max_bad_commands
                                      : ++bad_commands_ >= limits_.max_bad_commands;
    if (too_many) {
        // A protection limit closes (STYLE.md "Limits"): a client stuck in a loop, or a scanner.
        say(421, "4.7.0", config_.hostname + " Error: too many errors");
        emit(act::close{});
        closed_ = true;
    }
}

void session::reset_transaction() {
    // A BDAT transaction ended without LAST (RSET, EHLO, STARTTLS): drop what it gave.
    if (decoder_ && !in_data_) {
        decoder_.reset();
        emit(act::discard{});
    }
    mail_ = envelope{};
    has_sender_ = false;
    pending_rcpt_.reset();
    overshoot_recipients_ = 0;
}

// A fault rule for this event (mailnet/faults.hpp): its delay is queued at once; returned only
// when it takes the command over (a reply or a disconnect), for the caller to undo what the
// command began and then apply_fault(). Checked once a command passed its syntax and sequence
// checks, so a fault never hides the client's own error, and before any policy or callback.
std::optional<fault_action> session::fault(fault_phase phase, std::span<const std::string> rcpt,
                                           const mailbox_address* from) {
    if (!config_.faults || config_.faults->empty()) return std::nullopt;
    std::string sender;
    fault_event e{fault_protocol::smtp, rcpt, std::nullopt};
    if (from) {
        sender = from->is_null() ? std::string() : from->address();
        e.from = sender;
    }
    auto f = config_.faults->check(phase, e);
    if (!f) return std::nullopt;
    if (f->delay.count() > 0) emit(act::delay{f->delay});
    if (f->reply.empty() && !f->disconnect) return std::nullopt;  // only late: the normal reply follows
    return f;
}

// The rule's reply (validated: one line, 4xx/5xx), then its close.
void session::apply_fault(const fault_action& f) {
    if (!f.reply.empty()) {
        output_.text() += f.reply;
        output_.text() += "\r\n";
    }
    if (f.disconnect) {
        emit(act::close{});
        closed_ = true;
    } else if (!f.reply.empty()) {
        junk_command();  // a refusal in place of the command's work, counted as the real ones are
    }
}

bool session::auth_allowed() const noexcept {
    // DESIGN.md "Rules": no plaintext password from a non-loopback peer without TLS.
    return config_.auth_available && (config_.tls_active || config_.peer_is_loopback || config_.allow_plaintext_auth);
}

std::string session::with_protocol() const {
    // RFC 3848 2 and RFC 6531 4.3: S for TLS, A for AUTH; HELO is plain SMTP.
    std::string w = mail_.smtputf8 ? "UTF8SMTP" : extended_ ? "ESMTP" : "SMTP";
    if (w == "SMTP") return w;
    if (config_.tls_active) w += 'S';
    if (authenticated_) w += 'A';
    return w;
}

void session::handle_line(std::string_view line) {
    if (std::any_of(line.begin(), line.end(), [](char c) { return c == '\0' || c == '\r' || c == '\n'; })) {
        // A BDAT line we cannot read still announced a chunk: its octets must not become
        // commands (a relay that read the line differently would see a smuggled message).
        if (istarts_with(line, "BDAT")) return lose_framing();
        if (line.find_first_of("\r\n") != std::string_view::npos) {
            // A bare CR or LF: a relay that took it for a line end read other commands here
            // ("RSET\nBDAT 38 LAST" is a chunk announced to it, commands to us): whatever we
            // answered, the two readings part (SMTP smuggling), so the session ends (as
            // Postfix's smtpd_forbid_bare_newline does).
            say(500, "5.5.2", "Error: bare CR or LF in a command line");
            say(421, "4.5.2", config_.hostname + " Error: command framing lost, closing");
            emit(act::close{});
            closed_ = true;
            return;
        }
        return bad_command(500, "5.5.2", "Error: NUL inside a command line");
    }
    const auto [verb, arg] = split_first(line);
    if (refused_ && !iequals(verb, "QUIT"))
        return bad_command(503, "5.5.1", "Error: no SMTP service here");  // RFC 5321 3.1: wait for QUIT
    if (iequals(verb, "EHLO") || iequals(verb, "HELO")) return cmd_ehlo(arg, iequals(verb, "EHLO"));
    if (iequals(verb, "MAIL")) return cmd_mail(arg);
    if (iequals(verb, "RCPT")) return cmd_rcpt(arg);
    if (iequals(verb, "DATA")) return cmd_data(arg);
    if (iequals(verb, "BDAT")) return cmd_bdat(arg);
    if (iequals(verb, "STARTTLS")) return cmd_starttls(arg);
    if (iequals(verb, "AUTH")) return cmd_auth(arg);
    if (iequals(verb, "RSET")) {
        if (!arg.empty()) return bad_command(501, "5.5.4", "Syntax: RSET");
        reset_transaction();
        say(250, "2.0.0", "Ok");
        return junk_command();
    }
    if (iequals(verb, "NOOP")) {
        say(250, "2.0.0", "Ok");  // RFC 5321 4.1.1.9: an argument is allowed
        return junk_command();
    }
    if (iequals(verb, "QUIT")) {
        say(221, "2.0.0", "Bye");
        emit(act::close{});
        closed_ = true;
        return;
    }
    if (iequals(verb, "VRFY")) {
        if (arg.empty()) return bad_command(501, "5.5.4", "Syntax: VRFY address");
        // RFC 5321 3.5.3: 252 neither confirms nor denies (no user enumeration).
        say(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery");
        return junk_command();
    }
    if (iequals(verb, "HELP")) {
        // The commands this session can take (STARTTLS and AUTH only where EHLO offers them).
        std::string cmds = "EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP";
        if (config_.tls_available && !config_.tls_active) cmds += " STARTTLS";
        if (auth_allowed() && !authenticated_) cmds += " AUTH";
        say(214, "2.0.0", "See RFC 5321: " + cmds);
        return junk_command();
    }
    if (iequals(verb, "EXPN")) return bad_command(502, "5.5.1", "Error: EXPN not supported");
    bad_command(502, "5.5.2", "Error: command not recognized");
}

void session::cmd_ehlo(std::string_view arg, bool extended) {
    // RFC 5321 4.1.1.1: a domain or an address literal; whatever is sent is kept as data.
    if (arg.empty() || arg.find(' ') != std::string_view::npos)
        return bad_command(501, "5.5.4", extended ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
    // Kept for the Received: header: printable ASCII only. NOTE: not held to RFC 5321's
    // Domain syntax, as Postfix does not (names like "my_pc" are common and harmless), but to
    // its length: a domain is at most 255 octets (RFC 5321 4.5.3.1.2), and a longer name
    // would make a header line over RFC 5322's 998.
    if (!std::all_of(arg.begin(), arg.end(), [](char c) { return c > 32 && c < 127; }))
        return bad_command(501, "5.5.2", "Error: invalid hostname");
    if (arg.size() > 255) return bad_command(501, "5.5.2", "Error: hostname longer than 255 octets");
    if (auto f = fault(fault_phase::ehlo)) return apply_fault(*f);  // nothing changes: no greeting
    // RFC 5321 4.1.4: EHLO/HELO also resets the transaction.
    reset_transaction();
    greeted_ = arg;
    extended_ = extended;
    // RFC 2034 4: no enhanced code on the EHLO/HELO reply.
    if (!extended) {
        output_.text() += "250 " + config_.hostname + "\r\n";
        return junk_command();
    }
    output_.text() += "250-" + config_.hostname + "\r\n";
    output_.text() += "250-PIPELINING\r\n";
    output_.text() += "250-SIZE " + std::to_string(limits_.max_message_octets) + "\r\n";
    output_.text() += "250-8BITMIME\r\n";
    output_.text() += "250-ENHANCEDSTATUSCODES\r\n";
    output_.text() += "250-CHUNKING\r\n";
    if (config_.tls_available && !config_.tls_active) output_.text() += "250-STARTTLS\r\n";
    if (auth_allowed() && !authenticated_) output_.text() += "250-AUTH PLAIN LOGIN\r\n";
    output_.text() += "250 SMTPUTF8\r\n";
    junk_command();
}

void session::cmd_mail(std::string_view arg) {
    if (greeted_.empty()) return bad_command(503, "5.5.1", "Error: send HELO/EHLO first");
    if (has_sender_) return bad_command(503, "5.5.1", "Error: nested MAIL command");
    // RFC 4954 6: a submission server takes mail only from an authenticated client.
    if (config_.require_auth && !authenticated_) return bad_command(530, "5.7.0", "Authentication required");
    if (!istarts_with(arg, "FROM:")) return bad_command(501, "5.5.4", "Syntax: MAIL FROM:<address>");
    std::string why;
    auto path = parse_path(arg.substr(5), path_options{true, extended_, false}, &why);
    // A parameter's syntax is 5.5.4 (RFC 3463), the address's 5.1.7.
    if (!path && why.find("parameter") != std::string::npos) return bad_command(501, "5.5.4", "Bad parameter: " + why);
    if (!path) return bad_command(501, "5.1.7", "Bad sender address syntax: " + why);
    const bool eight_bit = std::any_of(arg.begin(), arg.end(), [](char c) { return static_cast<unsigned char>(c) > 0x7F; });
    envelope next;
    for (const auto& p : path->parameters) {
        if (!extended_) return bad_command(555, "5.5.4", "Unsupported option: " + p.keyword + " (send EHLO first)");
        if (p.keyword == "SIZE") {
            std::uint64_t n = 0;
            const auto [end, ec] = std::from_chars(p.value.data(), p.value.data() + p.value.size(), n);
            const bool digits = p.has_value && end == p.value.data() + p.value.size();
            if (digits && ec == std::errc::result_out_of_range)  // RFC 1870: 20 digits are valid
                return refused_mail(552, "5.3.4", "Error: message size exceeds fixed limit");
            if (!digits || ec != std::errc()) return bad_command(501, "5.5.4", "Bad SIZE parameter");
            // RFC 1870 6: refused at once when the announced size is over the limit.
            if (n > limits_.max_message_octets)
                return refused_mail(552, "5.3.4", "Error: message size exceeds fixed limit");
            next.announced_size = n;
        } else if (p.keyword == "BODY") {
            if (iequals(p.value, "8BITMIME"))
                next.eight_bit = true;
            else if (!iequals(p.value, "7BIT"))
                return bad_command(501, "5.5.4", "Bad BODY parameter");
        } else if (p.keyword == "SMTPUTF8") {
            if (p.has_value) return bad_command(501, "5.5.4", "SMTPUTF8 takes no value");
            next.smtputf8 = true;
        } else if (p.keyword == "AUTH") {
            // RFC 4954 5: the submitter's identity, xtext or <>; accepted and not used (nothing
            // is relayed). Only where AUTH is offered (RFC 5321 4.1.1.11: a parameter of an
            // extension not advertised is 555).
            if (!auth_allowed()) return bad_command(555, "5.5.4", "Unsupported option: AUTH");
            if (!p.has_value || (p.value != "<>" && !valid_xtext(p.value)))
                return bad_command(501, "5.5.4", "Bad AUTH parameter");
        } else {
            return bad_command(555, "5.5.4", "Unsupported option: " + p.keyword);
        }
    }
    if (eight_bit && !next.smtputf8)
        return refused_mail(553, "5.6.7", "Error: an internationalized address needs SMTPUTF8 (RFC 6531)");
    if (auto f = fault(fault_phase::mail, {}, &path->mailbox)) return apply_fault(*f);  // no transaction begins
    next.sender = std::move(path->mailbox);
    mail_ = std::move(next);
    emit(act::validate_sender{mail_.sender});
    waiting_ = wait::sender;
}

void session::cmd_rcpt(std::string_view arg) {
    if (!has_sender_) return bad_command(503, "5.5.1", "Error: need MAIL command");
    // RFC 3030 2: the recipients come before the chunks; one added now would miss the message
    // already being written for the others.
    if (decoder_) return bad_command(503, "5.5.1", "Error: RCPT after BDAT");
    if (!istarts_with(arg, "TO:")) return bad_command(501, "5.5.4", "Syntax: RCPT TO:<address>");
    if (!mail_.smtputf8 && std::any_of(arg.begin(), arg.end(), [](char c) { return static_cast<unsigned char>(c) > 0x7F; })) {
        say(553, "5.6.7", "Error: an internationalized address needs SMTPUTF8 (RFC 6531)");
        return refused_recipient(553);
    }
    std::string why;
    auto path = parse_path(arg.substr(3), path_options{false, mail_.smtputf8, true}, &why);
    if (!path && why.find("parameter") != std::string::npos) return bad_command(501, "5.5.4", "Bad parameter: " + why);
    if (!path) return bad_command(501, "5.1.3", "Bad recipient address syntax: " + why);
    if (!path->parameters.empty())
        return bad_command(555, "5.5.4", "Unsupported option: " + path->parameters.front().keyword);
    if (config_.faults && !config_.faults->empty()) {
        const std::string address[] = {path->mailbox.address()};
        if (auto f = fault(fault_phase::rcpt, address, &mail_.sender)) return apply_fault(*f);  // not added
    }
    // RFC 5321 4.5.3.1.10: past the limit, 452; the client sends the rest in another transaction.
    if (mail_.recipients.size() >= limits_.max_recipients) {
        say(452, "4.5.3", "Error: too many recipients");
        if (++overshoot_recipients_ > limits_.max_recipient_overshoot) count_error(false);
        return;
    }
    // The same recipient twice gets one copy (as Postfix merges them); the domain's case does
    // not matter (RFC 5321 2.4), the local part's does.
    const auto same = [&](const mailbox_address& r) {
        return r.local == path->mailbox.local && iequals(r.domain, path->mailbox.domain);
    };
    if (std::any_of(mail_.recipients.begin(), mail_.recipients.end(), same)) {
        say(250, "2.1.5", "Ok (duplicate recipient)");
        return junk_command();
    }
    pending_rcpt_ = std::move(path->mailbox);
    emit(act::validate_recipient{*pending_rcpt_});
    waiting_ = wait::recipient;
}

void session::cmd_data(std::string_view arg) {
    if (!arg.empty()) return bad_command(501, "5.5.4", "Syntax: DATA");
    if (!has_sender_) return bad_command(503, "5.5.1", "Error: need MAIL command");
    if (mail_.recipients.empty()) {
        // What a pipelining client's DATA gets after its RCPTs were refused (RFC 2920 3.1): its
        // refusals are counted already, so this counts with the 503s, not as a bad command.
        say(554, "5.5.1", "Error: no valid recipients");
        return count_error(true);
    }
    if (decoder_) return bad_command(503, "5.5.1", "Error: DATA after BDAT");  // RFC 3030 2
    say(354, "", "End data with <CR><LF>.<CR><LF>");
    dot_decoder_options o;
    o.bare = config_.normalise_bare_line_ends ? bare_line_end_policy::normalise : bare_line_end_policy::reject;
    o.line_ends = output_line_ends::lf;  // stored as Dovecot and mutt store it (DESIGN.md "On disk")
    o.max_message_octets = limits_.max_message_octets;
    decoder_.emplace(o);
    in_data_ = true;
    ++transfers_;
    // Octets the client sent after DATA are the message's (RFC 2920 3.1 asks it to wait for
    // the 354, but what arrived there is data, never commands).
    data_in_ = reader_.take_buffered();
}

void session::take_data() {
    std::string chunk;
    const std::size_t used = decoder_->decode(data_in_, chunk);
    data_in_.erase(0, used);
    // What is refused anyway is not handed out; the decoder stops its output past the size limit.
    if (!chunk.empty() && !decoder_->rejected()) emit(act::message_data{std::move(chunk)});
    if (!decoder_->finished()) return;
    // The message ended at CRLF.CRLF exactly (RFC 5321 4.1.1.4): no bare CR or LF ends it.
    in_data_ = false;
    reader_.feed(data_in_);  // what follows the final dot is commands again
    data_in_.clear();
    std::string none;
    end_message(none);
}

// The message is complete: `tail` is its last octets not yet handed out (BDAT LAST's pending CR).
void session::end_message(std::string& tail) {
    const dot_decoder d = *decoder_;
    decoder_.reset();
    if (!tail.empty() && !d.rejected() && !d.over_limit()) emit(act::message_data{std::move(tail)});
    const auto refuse = [&](int code, const char* enhanced, const char* text) {
        emit(act::discard{});
        reset_transaction();
        say(code, enhanced, text);
        junk_command();  // a transaction that delivered nothing
    };
    if (d.over_limit()) return refuse(552, "5.3.4", "Error: message size exceeds fixed limit");
    // RFC 5321 2.3.8: a bare CR or LF is no line end; a message holding one is not taken (it is
    // how SMTP smuggling hides a second message inside the first).
    if (d.rejected()) return refuse(550, "5.6.0", "Error: bare CR or LF in the message");
    if (d.longest_line_octets() > limits_.max_text_line_octets)
        return refuse(554, "5.6.0", "Error: a line of the message is longer than 1000 octets");
    // The data phase: the message is complete and would be delivered; a fault answers it instead
    // (RFC 5321 4.1.1.4: the transaction ends whatever the reply) and nothing is stored.
    if (config_.faults && !config_.faults->empty()) {
        std::vector<std::string> to;
        to.reserve(mail_.recipients.size());
        for (const auto& r : mail_.recipients) to.push_back(r.address());
        if (auto f = fault(fault_phase::data, to, &mail_.sender)) {
            emit(act::discard{});
            reset_transaction();
            return apply_fault(*f);
        }
    }
    emit(act::deliver{mail_});
    waiting_ = wait::deliver;
}

void session::cmd_bdat(std::string_view arg) {
    // RFC 3030 2: BDAT <size> [LAST]. Without a size the chunk cannot be skipped: a syntax error,
    // and whatever follows is read as commands (a broken client soon meets the bad-command limit).
    const auto [size_text, rest] = split_first(arg);
    std::uint64_t size = 0;
    const auto [end, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
    const bool last = iequals(rest, "LAST");
    if (size_text.empty() || ec != std::errc() || end != size_text.data() + size_text.size() || (!rest.empty() && !last)) {
        // Without a size the chunk's end is unknown: its octets would be read as commands (a
        // smuggling path). The framing is lost, so the session ends (RFC 5321 3.8).
        return lose_framing();
    }
    chunk c{size, size, last, std::nullopt};
    if (!decoder_) ++transfers_;  // a message's first chunk, or a refused one: a new transfer
    // A refused chunk is read all the same (RFC 3030 2: "MUST still consume"), then answered.
    if (greeted_.empty())
        c.refusal = reply{503, "5.5.1", "Error: send HELO/EHLO first"};
    else if (!has_sender_)
        c.refusal = reply{503, "5.5.1", "Error: need MAIL command"};
    else if (mail_.recipients.empty())
        c.refusal = reply{554, "5.5.1", "Error: no valid recipients"};
    if (!c.refusal && !decoder_) {
        dot_decoder_options o;
        o.bare = config_.normalise_bare_line_ends ? bare_line_end_policy::normalise : bare_line_end_policy::reject;
        o.line_ends = output_line_ends::lf;
        o.max_message_octets = limits_.max_message_octets;
        o.dot_stuffed = false;
        decoder_.emplace(o);
        line_open_ = false;
    }
    chunk_ = c;
    in_data_ = true;
    data_in_ = reader_.take_buffered();
}

void session::lose_framing() {
    say(501, "5.5.4", "Syntax: BDAT size [LAST]");
    say(421, "4.5.4", config_.hostname + " Error: BDAT framing lost, closing");
    emit(act::close{});
    closed_ = true;
}

void session::take_chunk() {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_->remaining, data_in_.size()));
    if (!chunk_->refusal && n > 0) {
        std::string out;
        decoder_->decode(std::string_view(data_in_).substr(0, n), out);
        if (!out.empty()) line_open_ = out.back() != '\n';
        if (!out.empty() && !decoder_->rejected() && !decoder_->over_limit()) emit(act::message_data{std::move(out)});
    }
    data_in_.erase(0, n);
    chunk_->remaining -= n;
    if (chunk_->remaining > 0) return;
    const chunk c = *std::exchange(chunk_, std::nullopt);
    in_data_ = false;
    reader_.feed(data_in_);  // what follows the chunk is commands again
    data_in_.clear();
    if (c.refusal) {
        // A 503, or a 554 for want of recipients (as DATA's): counted with the 503s.
        say(c.refusal->code, c.refusal->enhanced, c.refusal->text);
        return count_error(true);
    }
    if (c.last) {
        std::string tail;
        decoder_->end_of_chunks(tail);
        if (!tail.empty()) line_open_ = tail.back() != '\n';
        // A message ends with a line end (RFC 5322 2.1; DATA's CRLF.CRLF always gives one): the
        // stored size then matches what POP3 RETR sends.
        if (line_open_) tail += '\n';
        return end_message(tail);
    }
    // Refused as soon as it is over the limit (RFC 3030 2: the client then gives up the
    // transaction); what it sends after is 503 until a new MAIL.
    if (decoder_->over_limit()) {
        decoder_.reset();
        emit(act::discard{});
        reset_transaction();
        say(552, "5.3.4", "Error: message size exceeds fixed limit");
        return junk_command();  // a transaction that delivered nothing
    }
    say(250, "2.0.0", std::to_string(c.size) + " octets received");
    if (c.size == 0) junk_command();  // an empty chunk adds nothing
}

void session::cmd_starttls(std::string_view arg) {
    if (!arg.empty()) return bad_command(501, "5.5.4", "Syntax: STARTTLS");
    if (config_.tls_active) return bad_command(503, "5.5.1", "Error: TLS already active");
    if (!config_.tls_available) return bad_command(502, "5.5.1", "Error: STARTTLS not available");
    if (greeted_.empty()) return bad_command(503, "5.5.1", "Error: send EHLO first");
    // DESIGN.md "Rules": STARTTLS before MAIL.
    if (has_sender_ || decoder_) return bad_command(503, "5.5.1", "Error: MAIL transaction in progress");
    say(220, "2.0.0", "Ready to start TLS");
    emit(act::start_tls{});
    waiting_ = wait::tls;
}

void session::tls_started() {
    if (waiting_ != wait::tls) return;
    waiting_ = wait::none;
    // RFC 3207 4.2: what was pipelined in cleartext is dropped, and everything learnt before
    // the handshake is forgotten: the client starts again with EHLO.
    reader_.clear();
    config_.tls_active = true;
    reset_transaction();
    greeted_.clear();
    extended_ = false;
    authenticated_ = false;
    account_.clear();
}

void session::cmd_auth(std::string_view arg) {
    if (greeted_.empty() || !extended_) return bad_command(503, "5.5.1", "Error: send EHLO first");
    if (!config_.auth_available) return bad_command(502, "5.5.1", "Error: authentication not enabled");
    if (authenticated_) return bad_command(503, "5.5.1", "Error: already authenticated");  // RFC 4954 4
    if (has_sender_ || decoder_) return bad_command(503, "5.5.1", "Error: MAIL transaction in progress");
    // RFC 4954 4 and DESIGN.md "Rules": 538 when only TLS would make the mechanism acceptable.
    if (!auth_allowed()) return bad_command(538, "5.7.11", "Encryption required for requested authentication mechanism");
    const auto [mech, initial] = split_first(arg);
    if (initial.find(' ') != std::string_view::npos) return bad_command(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
    if (iequals(mech, "PLAIN")) {
        if (!initial.empty()) return sasl_response_plain(initial);
        output_.text() += "334 \r\n";  // RFC 4954 4: an empty challenge
        sasl_ = sasl::plain;
    } else if (iequals(mech, "LOGIN")) {
        sasl_ = sasl::login_user;
        if (!initial.empty()) return sasl_response(initial);  // the user name, as some clients send it
        output_.text() += "334 VXNlcm5hbWU6\r\n";  // "Username:"
    } else {
        return bad_command(504, "5.5.4", "Error: unrecognized authentication type");
    }
    reader_.set_limit(limits_.max_sasl_octets);
}

void session::sasl_response(std::string_view line) {
    const sasl step = std::exchange(sasl_, sasl::none);
    reader_.set_limit(limits_.max_command_octets);
    if (line == "*") {
        // RFC 4954 4; counted, so a client cannot loop on AUTH / "*" for ever.
        sasl_user_.clear();
        return bad_command(501, "5.7.0", "Authentication cancelled");
    }
    if (step == sasl::plain) return sasl_response_plain(line);
    // LOGIN (draft-murchison-sasl-login): the user name, then the password, each in base64
    // ("=": none, as an initial response says it, RFC 4954 4).
    auto decoded = base64_decode(line == "=" ? std::string_view{} : line);
    if (!decoded) {
        sasl_user_.clear();
        return undecodable_response();
    }
    const bool usable = decoded->find('\0') == std::string::npos;
    if (step == sasl::login_user) {
        if (!usable) return login_failed({}, "NUL in the SASL LOGIN user name", "Error: malformed SASL response");
        sasl_user_ = std::move(*decoded);
        sasl_ = sasl::login_password;
        reader_.set_limit(limits_.max_sasl_octets);
        output_.text() += "334 UGFzc3dvcmQ6\r\n";  // "Password:"
        return;
    }
    std::string user = std::exchange(sasl_user_, {});
    if (!usable) return login_failed(user, "NUL in the SASL LOGIN password", "Error: authentication failed");
    if (config_.faults && !config_.faults->empty()) {
        const std::string who[] = {user};
        if (auto f = fault(fault_phase::auth, who)) return apply_fault(*f);  // not checked, not counted
    }
    sasl_user_ = user;  // for the failure log line
    emit(act::authenticate{credentials{std::move(user), std::move(*decoded)}});
    waiting_ = wait::auth;
}

void session::sasl_response_plain(std::string_view response) {
    auto decoded = decode_sasl_plain(response);
    if (auto* refused = std::get_if<sasl_refusal>(&decoded)) {
        if (refused->undecodable) return undecodable_response();
        // A malformed response is a failed login (delayed, counted, logged); the reply names a
        // syntax problem, never whether a name or password was right.
        return login_failed(refused->user, refused->reason,
                            refused->user.empty() ? "Error: " + refused->reason : "Error: authentication failed");
    }
    if (config_.faults && !config_.faults->empty()) {
        const std::string who[] = {std::get<credentials>(decoded).user};
        if (auto f = fault(fault_phase::auth, who)) return apply_fault(*f);  // not checked, not counted
    }
    sasl_user_ = std::get<credentials>(decoded).user;
    emit(act::authenticate{std::move(std::get<credentials>(decoded))});
    waiting_ = wait::auth;
}

// RFC 4954 4: a response the server cannot base64-decode rejects the AUTH with 501. No name or
// password was tried, so no failed login: a bad command (counted toward max_bad_commands).
void session::undecodable_response() {
    bad_command(501, "5.5.2", "Error: invalid base64 in SASL response");
}

void session::login_failed(std::string_view user, std::string_view reason, std::string_view reply_text) {
    sasl_user_.clear();
    // The runner logs it (fail2ban reads these lines), counts it per peer and delays the reply.
    emit(act::login_failed{std::string(user), std::string(reason), limits_.auth_failure_delay});
    say(535, "5.7.8", reply_text);
    if (++failed_logins_ >= limits_.max_failed_logins) {
        say(421, "4.7.0", config_.hostname + " Error: too many failed logins");
        emit(act::close{});
        closed_ = true;
    }
}

void session::resume(const auth_result& r) {
    if (waiting_ != wait::auth) return;
    waiting_ = wait::none;
    switch (r.outcome) {
        case auth_result::status::fail:
            return login_failed(std::exchange(sasl_user_, {}), "wrong name or password",
                                "Error: authentication failed");
        case auth_result::status::tempfail:
            sasl_user_.clear();
            say(454, "4.7.0", "Temporary authentication failure, try later");
            return junk_command();
        case auth_result::status::ok: break;
    }
    sasl_user_.clear();
    authenticated_ = true;
    account_ = r.account;
    say(235, "2.7.0", "Authentication successful");
}

void session::resume(const verdict& v) {
    const wait w = std::exchange(waiting_, wait::none);
    switch (w) {
        case wait::none:
        case wait::auth:  // answered by resume(auth_result)
        case wait::tls:   // answered by tls_started()
            waiting_ = w;
            return;
        case wait::host:
            if (v.accepted) return say(220, "", config_.hostname + " ESMTP mailnet");
            say(fitting(v));
            // RFC 5321 3.1: after a 554 the server waits for QUIT (503 to the rest); a 421 closes.
            if (fitting(v).code == 421) {
                emit(act::close{});
                closed_ = true;
            } else {
                refused_ = true;
            }
            return;
        case wait::sender:
            if (!v.accepted) {
                mail_ = envelope{};
                say(fitting(v));  // its text made one line, its code fitting
                return junk_command();
            }
            has_sender_ = true;
            overshoot_recipients_ = 0;
            sequence_errors_ = 0;  // a transaction begins: its own allowance of 503s (a refused MAIL is none)
            return say(250, "2.1.0", "Ok");
        case wait::recipient:
            if (!v.accepted) {
                pending_rcpt_.reset();
                const reply r = fitting(v);
                say(r);
                return refused_recipient(r.code);
            }
            mail_.recipients.push_back(std::move(*pending_rcpt_));
            pending_rcpt_.reset();
            return say(250, "2.1.5", "Ok");
        case wait::deliver:
            // RFC 5321 4.1.1.4: the transaction is over, whatever the answer.
            reset_transaction();
            // A client that delivers is no prober: its refused recipients and bad commands
            // count again from none (as Postfix's limits on errors "without delivering mail"),
            // so a relay sending many messages over one connection, each with a stale
            // address, is not cut off.
            if (v.accepted) refused_recipients_ = bad_commands_ = junk_commands_ = 0;
            say(fitting(v));
            if (!v.accepted) junk_command();  // a transaction that delivered nothing
            return;
    }
}

}  // namespace mailnet::smtp
