// mailnet/faults.hpp: fault injection for the servers (DESIGN.md "mailnetd's HTTP API": the
// fault rules): rules, their validation (RFC 5321 4.2 replies, RFC 1939 3 -ERR) and matching.
#pragma once

// No Asio here: the protocol cores consult the rules themselves (a lock and a few compares), so
// fuzz targets link this file with the cores.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet {

/// Where a rule acts: the rule format's "phase" (see fault_phase_name).
enum class fault_phase { connect, ehlo, mail, rcpt, data, auth, pop3_login, retr };

/// Every phase, in the rule format's order.
inline constexpr fault_phase all_fault_phases[] = {fault_phase::connect, fault_phase::ehlo,  fault_phase::mail,
                                                   fault_phase::rcpt,    fault_phase::data,  fault_phase::auth,
                                                   fault_phase::pop3_login, fault_phase::retr};

/// The phase's name in the rule format: "connect", "ehlo", ..., "pop3-login", "retr".
std::string_view fault_phase_name(fault_phase p) noexcept;
/// The phase a name stands for (exact, lower case), or none.
std::optional<fault_phase> parse_fault_phase(std::string_view name) noexcept;

/// The protocol of a server consulting the rules (a connect rule may act on either).
enum class fault_protocol { smtp, pop3 };

/// A rule's filters: case-insensitive substrings; an empty one filters nothing.
struct fault_match {
    std::string rcpt;  ///< rcpt: the address; data: any recipient; auth, pop3-login, retr: the login name
    std::string from;  ///< mail, rcpt, data: the envelope sender ("" for <>)
    bool operator==(const fault_match&) const = default;
};

/// The most rules a list may hold (each event walks them all under a lock).
inline constexpr std::size_t max_fault_rules = 100;
/// The longest delay a rule may ask for.
inline constexpr std::chrono::milliseconds max_fault_delay{60'000};
/// The longest reply a rule may give, without CRLF (RFC 5321 4.5.3.1.5 and RFC 2449 4: 512 with it).
inline constexpr std::size_t max_fault_reply_octets = 510;

/// One fault rule (the rule format of DESIGN.md, field by field).
struct fault_rule {
    fault_phase phase = fault_phase::connect;
    /// Sent instead of the normal reply: "451 4.3.0 text" (SMTP phases: 4xx or 5xx), "-ERR text"
    /// (pop3-login, retr), either for connect (it then acts on that protocol only); one line,
    /// no CRLF. Empty: the normal reply (after the delay), or none at all with `disconnect`.
    std::string reply;
    std::chrono::milliseconds delay{0};  ///< before the reply (at most max_fault_delay)
    bool disconnect = false;             ///< close the connection after the reply (if any)
    double probability = 1.0;            ///< of acting on a counted event, in [0, 1]
    std::uint64_t nth = 0;               ///< 0: every matching event; n: only the n-th one since the list was set
    fault_match match;
    bool operator==(const fault_rule&) const = default;
};

/// Why `rule` cannot be used (naming the rule format's field), or "" if it can.
std::string fault_rule_problem(const fault_rule& rule);

/// What a server knows of the event it asks about.
struct fault_event {
    fault_protocol protocol = fault_protocol::smtp;
    std::span<const std::string> rcpt;  ///< what match.rcpt is held against (see fault_match); empty: nothing
    std::optional<std::string_view> from;  ///< the envelope sender; none outside a transaction
};

/// What a rule makes the server do.
struct fault_action {
    std::chrono::milliseconds delay{0};  ///< wait this long first
    std::string reply;                   ///< then say this (without CRLF) instead of the normal reply; empty: see disconnect
    bool disconnect = false;             ///< then close; without it and without a reply, carry on normally
};

/// The rules in force, shared by the servers of a process and whoever sets them (mailnetd's
/// HTTP API): thread-safe. Each rule counts the events it matches since the list was set, for
/// `nth`; `probability` draws from a generator seeded at construction, so tests can fix it.
class fault_rules {
public:
    /// Empty; `seed` starts the generator `probability` draws from.
    explicit fault_rules(std::uint64_t seed = 0);

    /// Replaces the whole list at once, every count starting again at 0; returns "" on success,
    /// else the first problem ("rules[2]: delay_ms ...") and the old list stays in force.
    std::string replace(std::vector<fault_rule> rules);
    /// The list in force.
    std::vector<fault_rule> rules() const;
    /// Empties the list.
    void clear();
    /// Whether the list is empty (no lock taken).
    bool empty() const noexcept;
    /// Consulted by a server at `phase`: counts the event for every rule it matches, and returns
    /// what the first rule that acts on it asks for (its nth reached, and its probability drawn);
    /// none when no rule acts.
    std::optional<fault_action> check(fault_phase phase, const fault_event& event);

private:
    struct entry {
        fault_rule rule;
        std::uint64_t seen = 0;  // matching events since the list was set
    };
    mutable std::mutex mutex_;
    std::vector<entry> entries_;
    std::mt19937_64 random_;
    std::atomic<std::size_t> count_{0};  // entries_.size(), for empty() without the lock
};

}  // namespace mailnet
