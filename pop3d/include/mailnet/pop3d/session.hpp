// mailnet/pop3d/session.hpp: the POP3 server protocol core, a sans-I/O state machine
// (RFC 1939, RFC 2449 CAPA/RESP-CODES/PIPELINING, RFC 2595 STLS, RFC 5034 AUTH, RFC 3206).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <variant>
#include <vector>

#include "mailnet/actions.hpp"
#include "mailnet/auth/auth.hpp"
#include "mailnet/faults.hpp"
#include "mailnet/line_reader.hpp"
#include "mailnet/store/store.hpp"

namespace mailnet::pop3 {

/// The POP3 limits (DESIGN.md "Limits"); every one has a test that crosses it.
struct limits {
    std::size_t max_command_octets = 512;      ///< RFC 2449 4 asks for at least 255 (CRLF included)
    std::size_t max_sasl_octets = 12288;       ///< an AUTH continuation line
    std::size_t max_failed_logins = 3;         ///< then the session is closed
    std::size_t max_bad_commands = 10;         ///< unknown/invalid commands, then close
    std::chrono::milliseconds auth_failure_delay{2000};  ///< before each failed-login reply
};

/// What a session knows of its connection when it starts.
struct session_config {
    std::string implementation = "mailnet";    ///< CAPA IMPLEMENTATION
    bool peer_is_loopback = false;             ///< loopback peers may send plaintext passwords
    bool allow_plaintext_auth = false;         ///< --allow-plaintext-auth
    bool tls_active = false;                   ///< implicit TLS (RFC 8314)
    bool tls_available = false;                ///< STLS can be offered
    bool apop = false;                         ///< --enable-apop and the backend can give secrets
    std::string apop_timestamp;                ///< "<unique@host>" for the greeting (RFC 1939 7)
    /// Fault rules consulted at connect, pop3-login and retr: a rule's delay becomes act::delay,
    /// its reply replaces the normal one, its disconnect act::close. Null: none.
    std::shared_ptr<fault_rules> faults;
};

/// The session's state (RFC 1939 3).
enum class state { authorization, transaction, update, closed };

/// Name of a state, for connection listings.
std::string_view state_name(state s) noexcept;

namespace act {
using mailnet::act::close;
using mailnet::act::delay;
using mailnet::act::login_failed;
using mailnet::act::need_input;
using mailnet::act::send;
using mailnet::act::start_tls;
using mailnet::act::stream_message;
/// Verify USER/PASS or SASL PLAIN credentials; answer with resume(auth_result).
struct authenticate { credentials creds; };
/// Verify APOP (the backend's authenticate_apop); answer with resume(auth_result).
struct authenticate_apop { std::string user, timestamp, digest; };
/// Lock the mailbox and take its snapshot; answer with resume(mailbox_result). From then on,
/// stream_message reads from this mailbox.
struct open_mailbox { std::string mailbox; };
/// Delete and mark seen at QUIT (UPDATE state); answer with resume(commit_result).
struct commit { std::vector<std::string> deleted, seen; };
}  // namespace act

/// One step the outside world performs for the session. The output of send and
/// stream_message goes out in the order of the actions (RETR/TOP are stream_message: several
/// may be outstanding in a pipelined batch, each answered with streamed()).
using action = std::variant<act::need_input, act::send, act::stream_message, act::authenticate,
                            act::authenticate_apop, act::open_mailbox, act::commit, act::start_tls,
                            act::login_failed, act::close, act::delay>;

/// The answer to open_mailbox.
struct mailbox_result {
    std::error_code error;                 ///< errc::mailbox_in_use, or a store failure
    std::vector<message_info> messages;    ///< the snapshot, on success
};

/// The answer to commit: one error_code per deleted id.
struct commit_result { std::vector<std::error_code> errors; };

/// A POP3 server session: feed it bytes, take actions until need_input, resume it with
/// the answers the actions ask for.
class session {
public:
    using action = pop3::action;
    session(session_config config, limits lim = {});

    /// Queues the greeting; call once before the first next().
    void start();
    /// Appends received octets.
    void feed(std::string_view octets);
    /// The next action; act::need_input when it waits for the peer.
    action next();
    /// Answers act::authenticate and act::authenticate_apop.
    void resume(const auth_result& r);
    /// Answers act::open_mailbox.
    void resume(mailbox_result r);
    /// Answers the oldest outstanding act::stream_message (RETR marks the message seen at QUIT
    /// only when it was sent whole).
    void streamed(std::error_code error);
    /// The reply written in place of a message that could not be read (RFC 3206 4).
    static std::string retrieve_error(std::size_t msn, std::error_code error);
    /// Answers act::commit.
    void resume(const commit_result& r);
    /// The TLS handshake that act::start_tls asked for succeeded (RFC 2595 4: back to a
    /// fresh AUTHORIZATION state; the client asks CAPA again).
    void tls_started();

    /// The current state.
    state current() const noexcept { return state_; }
    /// The logged-in account (empty before login).
    const std::string& user() const noexcept { return account_; }
    /// The mailbox locked by this session (empty before login): the server unlocks it.
    const std::string& mailbox() const noexcept { return mailbox_; }
    /// Octets of input buffered and not yet processed (the read-ahead limit counts them).
    std::size_t buffered() const noexcept { return reader_.buffered(); }
    /// Octets of the command line in progress, dropped ones of an over-long line included
    /// (the runner's per-line time limit).
    std::size_t partial_line_octets() const noexcept { return reader_.line_octets(); }
    /// Output not yet handed out; no input line is taken while it is over
    /// max_pending_output_octets (DESIGN.md "Layers" 1).
    std::size_t pending_output() const noexcept { return output_.pending(); }
    /// The state's name, for connection listings.
    std::string_view state_text() const noexcept { return state_name(state_); }
    /// Whether an answer is awaited (no input is processed meanwhile).
    bool waiting() const noexcept { return waiting_ != wait::none; }
    /// Whether a logged-in session ended with QUIT (its UPDATE state ran, RFC 1939 6), with or
    /// without anything to delete.
    bool quit_in_transaction() const noexcept { return quit_in_transaction_; }

private:
    enum class wait { none, auth, mailbox, retrievals, commit, tls };
    bool quit_in_transaction_ = false;
    struct message_state { bool deleted = false; bool retrieved = false; };

    void handle_line(std::string_view line);
    void reply(std::string_view line);
    void ok(std::string_view text);
    void err(std::string_view text);
    void bad_command(std::string_view text);
    void emit(action a);
    bool plaintext_allowed() const noexcept;
    std::string capabilities() const;
    // The message a numeric argument names, or nullopt after an -ERR reply.
    std::optional<std::size_t> message_arg(std::string_view arg, bool allow_deleted = false);
    void login_failed(std::string_view user, std::string_view reason,
                      std::string_view reply = "authentication failed");
    void continue_listing();
    void finish_sasl(std::string_view response);
    bool faulted(fault_phase phase, std::string_view user = {});

    void cmd_user(std::string_view arg);
    void cmd_pass(std::string_view arg);
    void cmd_apop(std::string_view arg);
    void cmd_auth(std::string_view arg);
    void cmd_stls(std::string_view arg);
    void cmd_capa(std::string_view arg);
    void cmd_quit(std::string_view arg);
    void cmd_stat(std::string_view arg);
    void cmd_list(std::string_view arg);
    void cmd_uidl(std::string_view arg);
    void cmd_retr(std::string_view arg);
    void cmd_top(std::string_view arg);
    void cmd_dele(std::string_view arg);
    void cmd_noop(std::string_view arg);
    void cmd_rset(std::string_view arg);
    void cmd_last(std::string_view arg);

    struct command {
        std::string_view name;
        void (session::*handler)(std::string_view);
        bool in_authorization;
        bool in_transaction;
    };
    static const command commands_[];

    session_config config_;
    limits limits_;
    line_reader reader_;
    state state_ = state::authorization;
    wait waiting_ = wait::none;
    bool sasl_pending_ = false;     // AUTH PLAIN sent "+ ", the response line is next
    bool apop_offered_ = false;     // the greeting carried the APOP timestamp
    core_output<action> output_;  // replies not yet handed out, and actions, in order
    std::string pending_user_;      // after USER
    std::string last_user_;         // the name of the login being checked, for the failure log
    std::size_t failed_logins_ = 0;
    std::size_t bad_commands_ = 0;
    std::string account_, mailbox_;
    std::vector<message_info> messages_;
    std::vector<message_state> marks_;
    struct retrieval { std::size_t index; bool whole; };  // whole: RETR (marks seen), not TOP
    std::deque<retrieval> retrievals_;  // outstanding, oldest first
    std::string deferred_line_;         // RSET/LAST/QUIT waiting for the retrievals to settle
    struct listing { bool uidl; std::size_t next; };
    std::optional<listing> listing_;    // a LIST/UIDL being produced piece by piece
};

}  // namespace mailnet::pop3
