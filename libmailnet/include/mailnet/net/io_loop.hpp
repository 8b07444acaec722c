// mailnet/net/io_loop.hpp: how a server program's I/O thread runs its io_context. With busy
// polling, after the last ready handler the thread keeps polling for a few microseconds before
// it sleeps in epoll_wait: a client that answers within that time (the next SMTP command after
// a reply, the next RETR) is served without the thread being put to sleep and woken again,
// which on a virtual machine costs tens of microseconds per round trip. The price is CPU: each
// spin that finds nothing costs its whole length, and under steady traffic the thread may not
// sleep at all (up to a core, where it would otherwise have slept between round trips).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <asio/io_context.hpp>

namespace mailnet::net {

/// The servers' --busy-poll default, in microseconds: about the round trip of a client on the
/// same machine, so the next command of a client that answers at once is caught.
inline constexpr unsigned default_busy_poll_us = 50;

/// When to spin (sans-I/O, so the decision is tested apart from any clock). Each time the
/// loop runs out of ready work it asks spin_for(); after a spin it tells spun() whether work
/// came within it. A spin that does not pay at least every other time (of the last `window`:
/// sparse traffic, or peers slower than the spin) is not tried again for the next `rest` idle
/// moments, so a lightly used server sleeps at once.
class busy_poll_policy {
public:
    static constexpr unsigned window = 32, rest = 256;

    explicit busy_poll_policy(std::chrono::microseconds spin) noexcept : spin_(spin) {}

    /// How long to poll before sleeping this time (zero: sleep at once).
    std::chrono::microseconds spin_for() noexcept {
        if (spin_.count() <= 0) return std::chrono::microseconds{0};
        if (resting_ > 0) {
            --resting_;
            return std::chrono::microseconds{0};
        }
        return spin_;
    }

    /// The spin just asked for ended: `found_work` if work came before it ran out.
    void spun(bool found_work) noexcept {
        ++tries_;
        if (found_work) ++hits_;
        if (tries_ < window) return;
        if (hits_ * 2 < tries_) resting_ = rest;
        tries_ = hits_ = 0;
    }

private:
    std::chrono::microseconds spin_;
    unsigned tries_ = 0, hits_ = 0, resting_ = 0;
};

/// The CPUs a cgroup's CPU controller lets the process use, from the text of
/// /proc/self/cgroup and a reader of files under /sys/fs/cgroup (the path relative to it):
/// the smallest quota / period of the process's cgroup and its ancestors (v2 `cpu.max`, v1
/// `cpu.cfs_quota_us` and `cpu.cfs_period_us`); nullopt when none is set or none can be read.
std::optional<double> cgroup_cpu_limit(std::string_view proc_self_cgroup,
                                       const std::function<std::optional<std::string>(const std::string&)>& read);

/// The spin a --busy-poll of `requested` microseconds gives on this machine: none when the
/// process may use less than two CPUs (its affinity mask, or its cgroup's CPU quota): the
/// spinning thread would hold the CPU its peer needs, or spend the quota and be throttled.
std::chrono::microseconds usable_busy_poll(std::chrono::microseconds requested) noexcept;

/// What run_io did (for tests and benchmarks).
struct io_loop_counts {
    std::size_t spins = 0;   ///< spins begun
    std::size_t hits = 0;    ///< spins that found work
    std::size_t sleeps = 0;  ///< waits in run_one()
};

/// Runs `io` until it is stopped or out of work, as io_context::run() does (a handler's
/// exception propagates the same way); with a `busy_poll` above zero, polls up to that long
/// (busy_poll_policy) each time it runs out of ready handlers before it sleeps. Handlers run on
/// the calling thread only. `counts`, if given, is kept up to date.
void run_io(asio::io_context& io, std::chrono::microseconds busy_poll, io_loop_counts* counts = nullptr);

}  // namespace mailnet::net
