// mailnet/auth/throttle.hpp: failed logins counted per peer address, so a guesser that opens a new
// connection for every try still slows down (DESIGN.md "Limits": failed logins; RFC 1939 13).
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace mailnet {

/// Failed logins per peer address, counted while each comes within a window of the one before
/// (a fixed window from the first would give a guesser a fresh allowance every window).
/// Thread-safe; the table is bounded.
class login_throttle {
public:
    using clock = std::chrono::steady_clock;

    /// A peer's failures are forgotten once `window` passes without one; at most `max_peers`
    /// keys are kept (past
    /// that, those whose last failure is oldest go first: a key under constant attack stays).
    explicit login_throttle(std::chrono::seconds window = std::chrono::seconds(60), std::size_t max_peers = 10000);

    /// Records a failed login of `peer` at `now`; returns the extra delay that its earlier
    /// failures (not yet forgotten) earn: `step` for each, at most `cap`.
    std::chrono::milliseconds failed(std::string_view peer, clock::time_point now,
                                     std::chrono::milliseconds step = std::chrono::seconds(1),
                                     std::chrono::milliseconds cap = std::chrono::seconds(15));

    /// The failures of `peer` not forgotten at `now`.
    std::size_t failures(std::string_view peer, clock::time_point now) const;

    /// Addresses in the table (for tests of the bound).
    std::size_t peers() const;

private:
    struct entry {
        std::size_t count = 0;
        clock::time_point last{};  // the latest failure: the count is forgotten a window after it
    };
    void prune(clock::time_point now);

    std::chrono::seconds window_;
    std::size_t max_peers_;
    mutable std::mutex mutex_;  // guards table_
    std::map<std::string, entry, std::less<>> table_;
};

}  // namespace mailnet
