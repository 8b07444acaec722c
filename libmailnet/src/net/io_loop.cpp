// io_loop.cpp: the I/O thread's loop with busy polling (net/io_loop.hpp).
#include "mailnet/net/io_loop.hpp"

#include <sched.h>

#include <cerrno>
#include <fstream>
#include <sstream>

namespace mailnet::net {

namespace {

std::optional<double> parse_number(std::string_view s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
    if (s.empty()) return std::nullopt;
    double v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + (c - '0');
    }
    return v;
}

// A quota / period, or nullopt for none ("max", -1) or text that does not parse.
std::optional<double> ratio(std::optional<double> quota, std::optional<double> period) {
    if (!quota || !period || *period <= 0) return std::nullopt;
    return *quota / *period;
}

std::optional<std::string> read_sys_fs_cgroup(const std::string& relative) {
    std::ifstream in("/sys/fs/cgroup/" + relative);
    if (!in) return std::nullopt;
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace

std::optional<double> cgroup_cpu_limit(std::string_view proc_self_cgroup,
                                       const std::function<std::optional<std::string>(const std::string&)>& read) {
    std::optional<double> least;
    auto take = [&](std::optional<double> r) {
        if (r && (!least || *r < *least)) least = r;
    };
    // Each line: "ID:CONTROLLERS:PATH"; v2 is "0::PATH", v1's CPU controller lists "cpu".
    std::size_t at = 0;
    while (at < proc_self_cgroup.size()) {
        std::size_t end = proc_self_cgroup.find('\n', at);
        if (end == std::string_view::npos) end = proc_self_cgroup.size();
        const std::string_view line = proc_self_cgroup.substr(at, end - at);
        at = end + 1;
        const std::size_t c1 = line.find(':'), c2 = c1 == std::string_view::npos ? c1 : line.find(':', c1 + 1);
        if (c2 == std::string_view::npos) continue;
        const std::string_view controllers = line.substr(c1 + 1, c2 - c1 - 1);
        std::string path(line.substr(c2 + 1));
        if (path.empty() || path[0] != '/' || path.find("..") != std::string::npos) continue;
        std::string mount;  // under /sys/fs/cgroup
        bool v2 = controllers.empty();
        if (!v2) {
            bool cpu = false;
            for (std::size_t p = 0; p <= controllers.size();) {
                std::size_t q = controllers.find(',', p);
                if (q == std::string_view::npos) q = controllers.size();
                if (controllers.substr(p, q - p) == "cpu") cpu = true;
                p = q + 1;
            }
            if (!cpu) continue;
            mount = std::string(controllers) + "/";
        }
        // The cgroup and each ancestor up to the mount's root.
        for (;;) {
            const std::string dir = mount + (path == "/" ? "" : path.substr(1) + "/");
            if (v2) {
                if (auto max = read(dir + "cpu.max")) {
                    const std::size_t sp = max->find(' ');
                    if (sp != std::string::npos)
                        take(ratio(parse_number(std::string_view(*max).substr(0, sp)),
                                   parse_number(std::string_view(*max).substr(sp + 1))));
                }
            } else {
                auto quota = read(dir + "cpu.cfs_quota_us"), period = read(dir + "cpu.cfs_period_us");
                if (quota && period) take(ratio(parse_number(*quota), parse_number(*period)));  // -1: none
            }
            if (path == "/") break;
            const std::size_t slash = path.rfind('/');
            path = slash == 0 ? "/" : path.substr(0, slash);
        }
    }
    return least;
}

std::chrono::microseconds usable_busy_poll(std::chrono::microseconds requested) noexcept {
    constexpr std::chrono::microseconds none{0};
    if (requested.count() <= 0) return none;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
        if (CPU_COUNT(&set) < 2) return none;
    } else if (errno != EINVAL) {  // EINVAL: more CPUs than a cpu_set_t holds, so more than one
        return none;
    }
    try {
        std::ifstream in("/proc/self/cgroup");
        std::ostringstream text;
        if (in) text << in.rdbuf();
        if (auto cpus = cgroup_cpu_limit(text.str(), read_sys_fs_cgroup); cpus && *cpus < 2) return none;
    } catch (...) {
        return none;
    }
    return requested;
}

void run_io(asio::io_context& io, std::chrono::microseconds busy_poll, io_loop_counts* counts) {
    io_loop_counts ignored;
    io_loop_counts& n = counts ? *counts : ignored;
    if (busy_poll.count() <= 0) {
        // run() sleeps as run_one() would; counted as one wait.
        ++n.sleeps;
        io.run();
        return;
    }
    using clock = std::chrono::steady_clock;
    busy_poll_policy policy(busy_poll);
    // poll() runs every ready handler and asks the reactor once without waiting (epoll_wait with
    // a zero timeout); run_one() sleeps until one handler has run. Both return 0 once `io` is
    // stopped or out of work (poll() stops it then, as run() would).
    while (!io.stopped()) {
        if (io.poll() > 0) continue;
        if (io.stopped()) break;
        const auto spin = policy.spin_for();
        if (spin.count() > 0) {
            ++n.spins;
            const auto until = clock::now() + spin;
            bool found = false;
            // Poll, then check the time, then yield (a thread woken on this CPU, the committer's,
            // runs): the last thing before giving up is always a poll.
            for (;;) {
                found = io.poll() > 0;
                if (found || io.stopped() || clock::now() >= until) break;
                ::sched_yield();
            }
            policy.spun(found);
            if (found) {
                ++n.hits;
                continue;
            }
            if (io.stopped()) break;
        }
        ++n.sleeps;
        if (io.run_one() == 0) break;
    }
}

}  // namespace mailnet::net
