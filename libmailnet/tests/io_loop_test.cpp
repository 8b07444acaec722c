// io_loop_test.cpp: the I/O thread's loop with busy polling (net/io_loop.hpp): when it spins,
// when it stops spinning, and that it runs every handler run() would, from any thread.
#include "mailnet/net/io_loop.hpp"

#include <gtest/gtest.h>

#include <sched.h>

#include <atomic>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <chrono>
#include <thread>

#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

namespace {

namespace net = mailnet::net;
using std::chrono::microseconds;
using std::chrono::milliseconds;

TEST(busy_poll_policy, spins_while_half_of_the_spins_find_work) {
    net::busy_poll_policy p(microseconds{50});
    for (unsigned round = 0; round < 3; ++round)
        for (unsigned i = 0; i < net::busy_poll_policy::window; ++i) {
            ASSERT_EQ(p.spin_for(), microseconds{50});
            p.spun(i % 2 == 0);  // exactly half
        }
    EXPECT_EQ(p.spin_for(), microseconds{50});
}

TEST(busy_poll_policy, rests_after_a_window_of_spins_that_seldom_paid_then_tries_again) {
    net::busy_poll_policy p(microseconds{50});
    for (unsigned i = 0; i < net::busy_poll_policy::window; ++i) {
        ASSERT_EQ(p.spin_for(), microseconds{50});
        p.spun(i < net::busy_poll_policy::window / 2 - 1);  // one short of half
    }
    for (unsigned i = 0; i < net::busy_poll_policy::rest; ++i) ASSERT_EQ(p.spin_for(), microseconds{0}) << i;
    EXPECT_EQ(p.spin_for(), microseconds{50});
    // A window that pays keeps it spinning.
    p.spun(true);
    for (unsigned i = 1; i < net::busy_poll_policy::window; ++i) {
        ASSERT_EQ(p.spin_for(), microseconds{50});
        p.spun(true);
    }
    EXPECT_EQ(p.spin_for(), microseconds{50});
}

TEST(busy_poll_policy, zero_never_spins) {
    net::busy_poll_policy p(microseconds{0});
    for (int i = 0; i < 100; ++i) EXPECT_EQ(p.spin_for(), microseconds{0});
}

// The CPUs this thread may run on, in a thread pinned to the first `n` of them.
microseconds usable_on(int n, microseconds requested) {
    microseconds out{-1};
    std::thread([&] {
        cpu_set_t all, some;
        CPU_ZERO(&all);
        CPU_ZERO(&some);
        ASSERT_EQ(::sched_getaffinity(0, sizeof all, &all), 0);
        for (int cpu = 0, taken = 0; cpu < CPU_SETSIZE && taken < n; ++cpu)
            if (CPU_ISSET(cpu, &all)) {
                CPU_SET(cpu, &some);
                ++taken;
            }
        ASSERT_EQ(::sched_setaffinity(0, sizeof some, &some), 0);
        out = net::usable_busy_poll(requested);
    }).join();
    return out;
}

int cpus_allowed() {
    cpu_set_t set;
    CPU_ZERO(&set);
    return ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
}

TEST(usable_busy_poll, none_on_one_cpu_as_asked_on_more) {
    EXPECT_EQ(usable_on(1, microseconds{50}), microseconds{0});
    if (cpus_allowed() < 2) GTEST_SKIP() << "this test may run on one CPU only";
    auto limit = [] {
        std::ifstream in("/proc/self/cgroup");
        std::ostringstream text;
        text << in.rdbuf();
        return net::cgroup_cpu_limit(text.str(), [](const std::string& rel) -> std::optional<std::string> {
            std::ifstream f("/sys/fs/cgroup/" + rel);
            if (!f) return std::nullopt;
            std::ostringstream t;
            t << f.rdbuf();
            return t.str();
        });
    }();
    if (limit && *limit < 2) GTEST_SKIP() << "a cgroup CPU quota below two CPUs";
    EXPECT_EQ(usable_on(2, microseconds{50}), microseconds{50});
    EXPECT_EQ(usable_on(2, microseconds{0}), microseconds{0});
}

// A fake /sys/fs/cgroup: relative path -> contents.
std::function<std::optional<std::string>(const std::string&)> files(std::map<std::string, std::string> m) {
    return [m = std::move(m)](const std::string& rel) -> std::optional<std::string> {
        auto it = m.find(rel);
        if (it == m.end()) return std::nullopt;
        return it->second;
    };
}

TEST(cgroup_cpu_limit, the_smallest_quota_of_the_cgroup_and_its_ancestors) {
    // v2: the process's own cgroup sets none, its parent 1.5 CPUs, the grandparent 4.
    const auto v2 = files({{"a/b/c/cpu.max", "max 100000\n"},
                           {"a/b/cpu.max", "150000 100000\n"},
                           {"a/cpu.max", "400000 100000\n"}});
    EXPECT_EQ(net::cgroup_cpu_limit("0::/a/b/c\n", v2), 1.5);
    EXPECT_EQ(net::cgroup_cpu_limit("0::/a\n", v2), 4.0);
    EXPECT_EQ(net::cgroup_cpu_limit("0::/x\n", v2), std::nullopt);
    // A container's own root (cgroup namespace): "/".
    EXPECT_EQ(net::cgroup_cpu_limit("0::/\n", files({{"cpu.max", "50000 100000"}})), 0.5);
    // v1: the line whose controllers include cpu; -1 is none.
    const std::string v1 = "4:memory:/m\n2:cpu,cpuacct:/docker/x\n1:name=systemd:/\n";
    EXPECT_EQ(net::cgroup_cpu_limit(v1, files({{"cpu,cpuacct/docker/x/cpu.cfs_quota_us", "100000\n"},
                                               {"cpu,cpuacct/docker/x/cpu.cfs_period_us", "100000\n"}})),
              1.0);
    EXPECT_EQ(net::cgroup_cpu_limit(v1, files({{"cpu,cpuacct/docker/x/cpu.cfs_quota_us", "-1\n"},
                                               {"cpu,cpuacct/docker/x/cpu.cfs_period_us", "100000\n"}})),
              std::nullopt);
    EXPECT_EQ(net::cgroup_cpu_limit("2:cpuacct:/y\n", files({{"cpuacct/y/cpu.cfs_quota_us", "1"}})), std::nullopt);
    // Nothing that does not parse is taken for a limit.
    EXPECT_EQ(net::cgroup_cpu_limit("0::/\n", files({{"cpu.max", "lots 100000"}})), std::nullopt);
    EXPECT_EQ(net::cgroup_cpu_limit("garbage", files({})), std::nullopt);
    EXPECT_EQ(net::cgroup_cpu_limit("0::/../etc\n", files({{"../etc/cpu.max", "1 100000"}})), std::nullopt);
}

TEST(run_io, runs_every_handler_and_returns_when_out_of_work) {
    asio::io_context io;
    int ran = 0;
    asio::steady_timer t(io, milliseconds{5});
    t.async_wait([&](auto) { ++ran; });
    for (int i = 0; i < 100; ++i) asio::post(io, [&] { ++ran; });
    net::run_io(io, microseconds{50});
    EXPECT_EQ(ran, 101);
    EXPECT_TRUE(io.stopped());
}

TEST(run_io, work_posted_from_another_thread_runs_whether_the_loop_spins_or_sleeps) {
    for (const auto spin : {microseconds{0}, microseconds{50}, microseconds{1000}}) {
        // Every post runs, on every try. What depends on the scheduler is tried up to 5 times:
        // that the loop slept at least once (posts 3 ms apart come after any spin, unless the
        // spinning thread itself waited that long for a core) and, with a 1 ms spin, that a
        // post came within one (posts 10 us apart, more with timer slack).
        const int tries = spin.count() == 0 ? 1 : 5;
        bool slept = false, hit = spin != microseconds{1000};
        for (int attempt = 0; attempt < tries && !(slept && hit); ++attempt) {
            asio::io_context io;
            auto guard = asio::make_work_guard(io);
            std::atomic<int> ran{0};
            std::thread other([&] {
                for (int i = 0; i < 20; ++i) {
                    // Some posts come within a spin, some long after it (the loop sleeps then).
                    std::this_thread::sleep_for(microseconds{i % 2 ? 10 : 3000});
                    asio::post(io, [&] { ++ran; });
                }
                asio::post(io, [&] { guard.reset(); });
            });
            net::io_loop_counts counts;
            net::run_io(io, spin, &counts);
            other.join();
            EXPECT_EQ(ran.load(), 20) << spin.count();
            if (spin.count() == 0) {
                EXPECT_EQ(counts.spins, 0u);
                slept = hit = true;
            } else {
                EXPECT_GE(counts.spins, 1u) << spin.count();
                slept = slept || counts.sleeps >= 1;
                hit = hit || counts.hits >= 1;
            }
        }
        EXPECT_TRUE(slept) << "spin " << spin.count() << " us: the loop never slept in " << tries << " tries";
        EXPECT_TRUE(hit) << "spin " << spin.count() << " us: no post came within a spin in " << tries << " tries";
    }
}

double thread_cpu_ms() {
    timespec t{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) / 1e6;
}

TEST(run_io, an_idle_loop_sleeps_after_its_spin) {
    // A timer 100 ms away and nothing else: the loop spins once (1 ms at most) and sleeps. A
    // loop that never slept would spend the 100 ms on the CPU (less only on a machine too busy
    // to give it a fifth of a core).
    asio::io_context io;
    asio::steady_timer t(io, milliseconds{100});
    bool fired = false;
    t.async_wait([&](auto) { fired = true; });
    net::io_loop_counts counts;
    const double before = thread_cpu_ms();
    net::run_io(io, microseconds{1000}, &counts);
    const double used = thread_cpu_ms() - before;
    EXPECT_TRUE(fired);
    EXPECT_LT(used, 20.0);
    EXPECT_EQ(counts.spins, 1u);
    EXPECT_EQ(counts.hits, 0u);
    EXPECT_EQ(counts.sleeps, 1u);
}

TEST(run_io, stop_ends_it_with_work_left) {
    asio::io_context io;
    auto guard = asio::make_work_guard(io);
    bool after = false;
    asio::post(io, [&] {
        io.stop();
        asio::post(io, [&] { after = true; });
    });
    net::run_io(io, microseconds{50});
    EXPECT_TRUE(io.stopped());
    EXPECT_FALSE(after);
}

}  // namespace
