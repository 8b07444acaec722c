// io_loop.cpp: the I/O thread's loop with busy polling (net/io_loop.hpp).
#include "mailnet/net/io_loop.hpp"

#include <sched.h>

namespace mailnet::net {

std::chrono::microseconds usable_busy_poll(std::chrono::microseconds requested) noexcept {
    if (requested.count() <= 0) return std::chrono::microseconds{0};
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) < 2) return std::chrono::microseconds{0};
    return requested;
}

void run_io(asio::io_context& io, std::chrono::microseconds busy_poll) {
    if (busy_poll.count() <= 0) {
        io.run();
        return;
    }
    using clock = std::chrono::steady_clock;
    busy_poll_policy policy(busy_poll);
    // poll() runs every ready handler and asks the reactor once without waiting (epoll_wait with
    // a zero timeout); run_one() sleeps until one handler has run. Both return 0 once `io` is
    // stopped or out of work.
    while (!io.stopped()) {
        if (io.poll() > 0) continue;
        if (io.stopped()) break;
        const auto spin = policy.spin_for();
        if (spin.count() > 0) {
            const auto until = clock::now() + spin;
            bool found = false;
            while (!found && !io.stopped() && clock::now() < until) {
                found = io.poll() > 0;
                if (!found) ::sched_yield();
            }
            policy.spun(found);
            if (found) continue;
        }
        if (io.run_one() == 0) break;
    }
}

}  // namespace mailnet::net
