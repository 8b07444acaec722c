// mailnet/smtpd/session.hpp: the SMTP server protocol core, a sans-I/O state machine (RFC 5321
// 4.1 commands and 4.3 sequencing, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 2920 PIPELINING,
// RFC 3463/2034 enhanced status codes, RFC 6531 SMTPUTF8, RFC 3030 CHUNKING, RFC 3207 STARTTLS,
// RFC 4954 AUTH PLAIN and LOGIN).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <variant>
#include <vector>

#include "mailnet/actions.hpp"
#include "mailnet/address.hpp"
#include "mailnet/auth/auth.hpp"
#include "mailnet/dot_stuffing.hpp"
#include "mailnet/faults.hpp"
#include "mailnet/line_reader.hpp"

namespace mailnet::smtp {

/// The SMTP limits (DESIGN.md "Limits"); every one has a test that crosses it.
struct limits {
    std::size_t max_command_octets = 2048;         ///< RFC 5321 4.5.3.1.4: 512 + extension parameters
    std::size_t max_text_line_octets = 1000;       ///< RFC 5321 4.5.3.1.6 (a longer DATA or BDAT line, CRLF counted: 554 5.6.0 at the end)
    std::uint64_t max_message_octets = 35ull << 20;  ///< announced in SIZE (RFC 1870)
    std::size_t max_recipients = 100;              ///< RFC 5321 4.5.3.1.8
    /// Then 421 and close. A 503 (bad sequence) is counted apart: a pipelining client gets
    /// one for each RCPT and its DATA after a refused MAIL (RFC 2920 3.1), so up to
    /// max_recipients + max_bad_commands of them are allowed since the last MAIL accepted.
    std::size_t max_bad_commands = 10;
    /// Recipients refused for good (a 5xx from validate_recipient or the users file) in a
    /// session, then 421 and close, so addresses cannot be probed for free (Postfix's
    /// smtpd_hard_error_limit is 20 too). A temporary refusal (4xx) is not counted.
    std::size_t max_refused_recipients = 20;
    /// Commands that do no work (NOOP, VRFY, HELP, RSET, EHLO, HELO, a MAIL refused by
    /// validate_sender) since the last message accepted: each past this many still gets its
    /// reply and also counts as a bad command, so a client cannot hold a session (and its
    /// connection slot) for ever with them (Postfix's smtpd_junk_command_limit is 100 too).
    std::size_t max_junk_commands = 100;
    /// Recipients past max_recipients in one transaction (each 452 4.5.3): each past this many
    /// also counts as a bad command (Postfix's smtpd_recipient_overshoot_limit is 1000 too).
    std::size_t max_recipient_overshoot = 1000;
    std::size_t max_sasl_octets = 12288;           ///< an AUTH response line (RFC 4954 4)
    std::size_t max_failed_logins = 3;             ///< then 421 and close
    std::chrono::milliseconds auth_failure_delay{2000};  ///< before each failed-login reply
};

/// What a session knows of its connection when it starts.
struct session_config {
    std::string hostname = "localhost";  ///< in the greeting, EHLO and Received:
    std::string peer_address;            ///< the client's address, for validate_host
    bool normalise_bare_line_ends = false;  ///< a bare CR or LF in DATA becomes a line end instead of 550 5.6.0
    bool tls_available = false;          ///< STARTTLS can be offered (a certificate is set)
    bool tls_active = false;             ///< implicit TLS (smtps, RFC 8314)
    bool auth_available = false;         ///< an authenticator is set: AUTH PLAIN and LOGIN
    bool peer_is_loopback = false;       ///< loopback peers may send passwords without TLS
    bool allow_plaintext_auth = false;   ///< passwords without TLS from any peer
    bool require_auth = false;           ///< MAIL only after AUTH (a submission server)
    /// Fault rules consulted at each phase (connect, ehlo, mail, rcpt, data, auth): a rule's
    /// delay becomes act::delay, its reply replaces the normal one, its disconnect act::close.
    /// Null: none.
    std::shared_ptr<fault_rules> faults;
};

/// A reply the outside world decided (a callback's rejection): code, enhanced code, text.
struct reply {
    int code = 250;
    std::string enhanced = "2.0.0";  ///< RFC 3463 class.subject.detail
    std::string text = "Ok";
};

/// A callback's decision: accept, or refuse with the reply it carries.
struct verdict {
    bool accepted = true;
    reply answer;  ///< a refusal's reply; for an accepted delivery, its 250 ("Ok: queued as ID")
    static verdict accept(reply r = {}) { return {true, std::move(r)}; }
    static verdict refuse(int code, std::string enhanced, std::string text) {
        return {false, reply{code, std::move(enhanced), std::move(text)}};
    }
};

/// The mail transaction of one message (RFC 5321 3.3), reset after DATA and by RSET.
struct envelope {
    mailbox_address sender;
    std::vector<mailbox_address> recipients;
    std::optional<std::uint64_t> announced_size;  ///< MAIL ... SIZE=
    bool eight_bit = false;                       ///< BODY=8BITMIME
    bool smtputf8 = false;                        ///< SMTPUTF8
};

namespace act {
using mailnet::act::close;
using mailnet::act::delay;
using mailnet::act::login_failed;
using mailnet::act::need_input;
using mailnet::act::send;
using mailnet::act::start_tls;
/// Decide on the client's address before the greeting (the seed's validate_host); answer
/// resume(verdict). A refusal is sent instead of the greeting, then the session closes.
struct validate_host { std::string peer; };
/// Decide on MAIL FROM; answer resume(verdict).
struct validate_sender { mailbox_address sender; };
/// Decide on one RCPT TO; answer resume(verdict).
struct validate_recipient { mailbox_address recipient; };
/// Check AUTH credentials (RFC 4954); answer resume(auth_result).
struct authenticate { credentials creds; };
/// Message octets in order (LF line ends, as stored: DESIGN.md "On disk"); nothing to answer.
struct message_data { std::string octets; };
/// The message ended (CRLF.CRLF, or BDAT LAST) and is acceptable: make it durable for the envelope's
/// recipients; answer resume(verdict) (250 only once it is durable).
struct deliver { envelope mail; };
/// The message ended but is refused (size, bare line ends) or the client left: drop what
/// message_data gave; nothing to answer.
struct discard {};
}  // namespace act

/// One step the outside world performs for the session; output in action order.
using action = std::variant<act::need_input, act::send, act::validate_host, act::validate_sender,
                            act::validate_recipient, act::message_data, act::deliver, act::discard, act::close,
                            act::start_tls, act::authenticate, act::login_failed, act::delay>;

/// An SMTP server session: feed it bytes, take actions until need_input, resume it with the
/// verdicts the actions ask for.
class session {
public:
    using action = smtp::action;

    session(session_config config, limits lim = {});

    /// Queues the greeting (RFC 5321 4.2: 220); call once before the first next().
    void start();
    /// Appends received octets.
    void feed(std::string_view octets);
    /// The next action; act::need_input when it waits for the peer.
    action next();
    /// Answers validate_host, validate_sender, validate_recipient and deliver.
    void resume(const verdict& v);
    /// Answers authenticate.
    void resume(const auth_result& r);
    /// The TLS handshake start_tls asked for is done: a fresh session (RFC 3207 4.2).
    void tls_started();
    /// SMTP streams no stored message (the runner's protocol_core asks for it).
    void streamed(std::error_code) noexcept {}

    /// Input octets buffered and not yet used.
    std::size_t buffered() const noexcept { return reader_.buffered() + data_in_.size(); }
    /// Octets of the command line in progress (0 inside DATA: the idle limit applies there).
    std::size_t partial_line_octets() const noexcept { return in_data_ ? 0 : reader_.line_octets(); }
    /// Output not yet handed out.
    std::size_t pending_output() const noexcept { return output_.pending(); }
    /// For connection listings.
    std::string_view state_text() const noexcept;
    /// A message is being received (DATA, or an accepted BDAT chunk): a shutdown lets it
    /// finish. Between chunks the client is at a command boundary, and a refused chunk is no
    /// exchange: neither holds a stopping server.
    bool in_exchange() const noexcept { return in_data_ && !(chunk_ && chunk_->refusal); }
    /// The message being received, 0 if none: DATA, or BDAT from its first chunk until LAST
    /// (between chunks too), or a refused chunk's octets, each a new number: the runner's
    /// minimum data rate counts over it.
    std::uint64_t transfer() const noexcept { return in_data_ || decoder_ ? transfers_ : 0; }
    /// What a stopping server tells the client waiting for a command before it closes
    /// (RFC 5321 3.8, 4.2.2: 421, with RFC 3463's 4.3.2 "system not accepting network
    /// messages"); empty while a refused BDAT chunk is still arriving, and once closed.
    std::string_view shutdown_notice() const noexcept;
    /// What the server tells a client that sent nothing within the idle, command-line or login
    /// limit, before it closes (421 4.4.2, as Postfix does; RFC 5321 4.5.3.2 lets a server
    /// time out, 3.8 asks for a 421 where it can); in any state, empty once closed.
    std::string_view timeout_notice() const noexcept;
    /// The transaction being built (for tests and logs).
    const envelope& transaction() const noexcept { return mail_; }
    /// The client's address, as configured.
    const std::string& peer_address() const noexcept { return config_.peer_address; }
    /// The EHLO/HELO name (Received: from); empty before one.
    const std::string& helo_name() const noexcept { return greeted_; }
    /// Whether AUTH succeeded.
    bool authenticated() const noexcept { return authenticated_; }
    /// The account AUTH logged in as (the backend's name for it).
    const std::string& account() const noexcept { return account_; }
    /// Whether TLS is on (STARTTLS done or implicit TLS).
    bool tls_active() const noexcept { return config_.tls_active; }
    /// The Received: header's "with" (RFC 3848, RFC 6531 4.3): SMTP, ESMTP, ESMTPS, ESMTPA,
    /// ESMTPSA, or UTF8SMTP... for an SMTPUTF8 transaction.
    std::string with_protocol() const;

private:
    enum class wait { none, host, sender, recipient, deliver, auth, tls };
    enum class sasl { none, plain, login_user, login_password };  // the AUTH response awaited
    void handle_line(std::string_view line);
    void take_data();
    void take_chunk();
    void lose_framing();
    void end_message(std::string& tail);
    void say(int code, std::string_view enhanced, std::string_view text);
    void say(const reply& r);
    void bad_command(int code, std::string_view enhanced, std::string_view text);
    void junk_command();
    void refused_mail(int code, std::string_view enhanced, std::string_view text);
    void refused_recipient(int code);
    void count_error(bool sequence_error);
    void emit(action a);
    void reset_transaction();
    std::optional<fault_action> fault(fault_phase phase, std::span<const std::string> rcpt = {},
                                      const mailbox_address* from = nullptr);
    void apply_fault(const fault_action& f);

    void cmd_ehlo(std::string_view arg, bool extended);
    void cmd_mail(std::string_view arg);
    void cmd_rcpt(std::string_view arg);
    void cmd_data(std::string_view arg);
    void cmd_bdat(std::string_view arg);
    void cmd_starttls(std::string_view arg);
    void cmd_auth(std::string_view arg);
    void sasl_response(std::string_view line);
    void sasl_response_plain(std::string_view response);
    void undecodable_response();
    void login_failed(std::string_view user, std::string_view reason, std::string_view reply_text);
    bool auth_allowed() const noexcept;

    session_config config_;
    limits limits_;
    std::string shutdown_notice_;  // "421 4.3.2 <hostname> Service shutting down\r\n"
    std::string timeout_notice_;   // "421 4.4.2 <hostname> Timeout waiting for the client, closing\r\n"
    line_reader reader_;
    core_output<action> output_;  // replies not yet handed out, and actions, in order
    wait waiting_ = wait::none;
    bool closed_ = false;
    bool refused_ = false;     // validate_host refused: only QUIT is served
    std::string greeted_;      // the EHLO/HELO name; empty before one
    bool extended_ = false;    // EHLO (not HELO)
    bool has_sender_ = false;  // MAIL accepted in this transaction
    envelope mail_;
    std::optional<mailbox_address> pending_rcpt_;
    std::size_t bad_commands_ = 0;
    std::size_t sequence_errors_ = 0;  // 503s since the last MAIL accepted (limits::max_bad_commands)
    std::size_t refused_recipients_ = 0;
    std::size_t junk_commands_ = 0;        // since the last message accepted (limits::max_junk_commands)
    std::size_t overshoot_recipients_ = 0;  // 452s past max_recipients in this transaction
    bool in_data_ = false;     // octets go to the message (DATA, or a BDAT chunk), not to commands
    std::uint64_t transfers_ = 0;  // messages (and refused chunks) begun: transfer()
    std::string data_in_;      // raw octets of DATA or of a chunk not yet decoded
    std::optional<dot_decoder> decoder_;  // the message being received (DATA, or BDAT until LAST)
    // The BDAT chunk being read (RFC 3030 2): octets still to come, whether it is LAST, and the
    // reply it gets once read when it is refused (its octets are consumed all the same).
    struct chunk {
        std::uint64_t size = 0;
        std::uint64_t remaining = 0;
        bool last = false;
        std::optional<reply> refusal;
    };
    std::optional<chunk> chunk_;
    bool line_open_ = false;   // BDAT: the message so far ends inside a line
    sasl sasl_ = sasl::none;
    std::string sasl_user_;    // AUTH LOGIN's user name, while its password is awaited
    bool authenticated_ = false;  // AUTH succeeded
    std::string account_;      // as this account
    std::size_t failed_logins_ = 0;
};

}  // namespace mailnet::smtp
