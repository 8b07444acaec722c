// mailnet/smtpd/session.hpp: the SMTP server protocol core, a sans-I/O state machine (RFC 5321
// 4.1 commands and 4.3 sequencing, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 2920 PIPELINING,
// RFC 3463/2034 enhanced status codes, RFC 6531 SMTPUTF8). First part of issue 12: the
// envelope, DATA and the reply rules; STARTTLS, AUTH and BDAT come next.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "mailnet/actions.hpp"
#include "mailnet/address.hpp"
#include "mailnet/dot_stuffing.hpp"
#include "mailnet/line_reader.hpp"

namespace mailnet::smtp {

/// The SMTP limits (DESIGN.md "Limits"); every one has a test that crosses it.
struct limits {
    std::size_t max_command_octets = 2048;         ///< RFC 5321 4.5.3.1.4: 512 + extension parameters
    std::size_t max_text_line_octets = 1000;       ///< RFC 5321 4.5.3.1.6 (a longer DATA line: 500 5.5.6 at the end)
    std::uint64_t max_message_octets = 35ull << 20;  ///< announced in SIZE (RFC 1870)
    std::size_t max_recipients = 100;              ///< RFC 5321 4.5.3.1.8
    std::size_t max_bad_commands = 10;             ///< then 421 and close
};

/// What a session knows of its connection when it starts.
struct session_config {
    std::string hostname = "localhost";  ///< in the greeting, EHLO and Received:
    std::string peer_address;            ///< the client's address, for validate_host
    bool normalise_bare_line_ends = false;  ///< a bare CR or LF in DATA becomes a line end instead of 550 5.6.0
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
using mailnet::act::need_input;
using mailnet::act::send;
/// Decide on the client's address before the greeting (the seed's validate_host); answer
/// resume(verdict). A refusal is sent instead of the greeting, then the session closes.
struct validate_host { std::string peer; };
/// Decide on MAIL FROM; answer resume(verdict).
struct validate_sender { mailbox_address sender; };
/// Decide on one RCPT TO; answer resume(verdict).
struct validate_recipient { mailbox_address recipient; };
/// Message octets in order (LF line ends, as stored: DESIGN.md "On disk"); nothing to answer.
struct message_data { std::string octets; };
/// The message ended (CRLF.CRLF) and is acceptable: make it durable for the envelope's
/// recipients; answer resume(verdict) (250 only once it is durable).
struct deliver { envelope mail; };
/// The message ended but is refused (size, bare line ends) or the client left: drop what
/// message_data gave; nothing to answer.
struct discard {};
}  // namespace act

/// One step the outside world performs for the session; output in action order.
using action = std::variant<act::need_input, act::send, act::validate_host, act::validate_sender,
                            act::validate_recipient, act::message_data, act::deliver, act::discard, act::close>;

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

    /// Input octets buffered and not yet used.
    std::size_t buffered() const noexcept { return reader_.buffered() + data_in_.size(); }
    /// Octets of the command line in progress (0 inside DATA: the idle limit applies there).
    std::size_t partial_line_octets() const noexcept { return in_data_ ? 0 : reader_.line_octets(); }
    /// Output not yet handed out.
    std::size_t pending_output() const noexcept { return output_.pending(); }
    /// For connection listings.
    std::string_view state_text() const noexcept;
    /// The transaction being built (for tests and logs).
    const envelope& transaction() const noexcept { return mail_; }

private:
    enum class wait { none, host, sender, recipient, deliver };
    void handle_line(std::string_view line);
    void take_data();
    void say(int code, std::string_view enhanced, std::string_view text);
    void say(const reply& r);
    void bad_command(int code, std::string_view enhanced, std::string_view text);
    void emit(action a);
    void reset_transaction();

    void cmd_ehlo(std::string_view arg, bool extended);
    void cmd_mail(std::string_view arg);
    void cmd_rcpt(std::string_view arg);
    void cmd_data(std::string_view arg);

    session_config config_;
    limits limits_;
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
    bool in_data_ = false;
    std::string data_in_;      // raw octets of DATA not yet decoded
    std::optional<dot_decoder> decoder_;
};

}  // namespace mailnet::smtp
