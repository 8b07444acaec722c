// io_loop_test.cpp: the I/O thread's loop with busy polling (net/io_loop.hpp): when it spins,
// when it stops spinning, and that it runs every handler run() would, from any thread.
#include "mailnet/net/io_loop.hpp"

#include <gtest/gtest.h>

#include <sched.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

namespace {

namespace net = mailnet::net;
using std::chrono::microseconds;
using std::chrono::milliseconds;

TEST(busy_poll_policy, spins_while_a_quarter_of_the_spins_find_work) {
    net::busy_poll_policy p(microseconds{50});
    for (unsigned round = 0; round < 3; ++round)
        for (unsigned i = 0; i < net::busy_poll_policy::window; ++i) {
            ASSERT_EQ(p.spin_for(), microseconds{50});
            p.spun(i % 4 == 0);  // exactly a quarter
        }
    EXPECT_EQ(p.spin_for(), microseconds{50});
}

TEST(busy_poll_policy, rests_after_a_window_of_spins_that_seldom_paid_then_tries_again) {
    net::busy_poll_policy p(microseconds{50});
    for (unsigned i = 0; i < net::busy_poll_policy::window; ++i) {
        ASSERT_EQ(p.spin_for(), microseconds{50});
        p.spun(i < net::busy_poll_policy::window / 4 - 1);  // one short of a quarter
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

TEST(usable_busy_poll, none_on_one_cpu_as_asked_on_more) {
    EXPECT_EQ(usable_on(1, microseconds{50}), microseconds{0});
    if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "one CPU";
    EXPECT_EQ(usable_on(2, microseconds{50}), microseconds{50});
    EXPECT_EQ(usable_on(2, microseconds{0}), microseconds{0});
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
        net::run_io(io, spin);
        other.join();
        EXPECT_EQ(ran.load(), 20) << spin.count();
    }
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
