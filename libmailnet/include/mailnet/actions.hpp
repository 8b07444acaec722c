// mailnet/actions.hpp: the actions every protocol core shares with the connection runner
// (DESIGN.md "Layers" 1 and 3). No Asio here: cores include this, fuzz targets link them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

namespace mailnet {

/// Output a core holds back at most before it stops taking input lines (DESIGN.md "Layers" 1):
/// TCP back-pressure then slows the peer down.
inline constexpr std::size_t max_pending_output_octets = 64 * 1024;

namespace act {

/// Nothing to do until more input is fed.
struct need_input {};

/// Write these octets (one or more complete replies), after everything asked for before.
struct send { std::string octets; };

/// Write `ok_line`, then the stored message `id` of the runner's mailbox made wire form (LF to
/// CRLF, dot-stuffed, ".\r\n" at the end; with `top_lines`, the header block and that many body
/// lines: RFC 1939 7), after everything asked for before. Several may be outstanding; the
/// runner answers each, in order, with the core's streamed(error). A message that cannot be
/// opened, or no longer matches what was announced, gets `error_reply(tag, error)` in its
/// place; one that fails after `ok_line` closes the connection without the final dot.
struct stream_message {
    std::string id;
    std::optional<std::size_t> top_lines;       ///< TOP's body line count; none: RETR
    std::string ok_line;                        ///< with its CRLF
    std::uint64_t wire_octets = 0;              ///< announced wire size (checked for RETR)
    std::size_t tag = 0;                        ///< handed to error_reply (POP3: the msn)
    std::string (*error_reply)(std::size_t tag, std::error_code error) = nullptr;
};

/// Upgrade to TLS now: drop buffered input, handshake, then call the core's tls_started()
/// (RFC 2595 4, RFC 3207 4). A failed handshake ends the connection.
struct start_tls {};

/// A login failed: the runner logs it (user, peer, reason: fail2ban reads these lines), counts
/// it per peer address and per account, and waits `delay` plus what earlier failures earn
/// before the core's next output; a peer that hangs up meanwhile frees its slot at once.
struct login_failed {
    std::string user;
    std::string reason;
    std::chrono::milliseconds delay{0};
};

/// Write what was asked for, then wait `duration` before the core's next output (a fault rule's
/// delay_ms) on a timer, never blocking the I/O thread; input that arrives meanwhile is fed, a
/// peer that hangs up ends the wait, and so does a stopping server (with the core's notice).
struct delay { std::chrono::milliseconds duration{0}; };

/// Write what was asked for, then close the connection.
struct close {};

}  // namespace act

/// What a core has to say, in order: reply text not yet handed out, and actions. Text written
/// before an action goes out as an act::send before it, so output keeps the order it was made in.
template <class Action>
class core_output {
public:
    /// The reply text being gathered (append to it).
    std::string& text() noexcept { return text_; }
    /// Octets of reply text not yet handed out (a core's back-pressure bound).
    std::size_t pending() const noexcept { return text_.size(); }
    /// Queues an action after the text written so far.
    void emit(Action a) {
        if (!text_.empty()) actions_.emplace_back(act::send{std::exchange(text_, {})});
        actions_.push_back(std::move(a));
    }
    /// Whether an action is queued (a core takes no input until it is handed out).
    bool has_actions() const noexcept { return !actions_.empty(); }
    /// The next action: a queued one, else the text as act::send, else act::need_input.
    Action take() {
        if (!actions_.empty()) {
            Action a = std::move(actions_.front());
            actions_.pop_front();
            return a;
        }
        if (!text_.empty()) return act::send{std::exchange(text_, {})};
        return act::need_input{};
    }

private:
    std::string text_;
    std::deque<Action> actions_;
};
}  // namespace mailnet
