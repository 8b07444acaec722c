// off_thread_test.cpp: off_thread (src/off_thread.hpp): what the pool's work and the I/O
// thread's answer both hold is destroyed on the I/O thread (#15: raw_stream::step could destroy
// a response, and RESTinio's connection with it, on a pool thread).
#include "off_thread.hpp"

#include <gtest/gtest.h>

#include <asio/executor_work_guard.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace {

using namespace std::chrono_literals;

// Records the thread its destructor runs on.
struct tracked {
    std::atomic<std::thread::id>* died_on;
    ~tracked() { died_on->store(std::this_thread::get_id()); }
};

// A flag `then` sets; its holder's destructor waits for it (at most 300 ms), so whatever is
// destroyed after it in the same closure goes only once `then` has run and let go.
struct gate {
    std::mutex m;
    std::condition_variable cv;
    bool set = false;
};
struct gate_holder {
    std::shared_ptr<gate> g;
    ~gate_holder() {
        if (!g) return;
        std::unique_lock l(g->m);
        g->cv.wait_for(l, 300ms, [&] { return g->set; });
    }
};
// Members go in reverse order: the gate waits first, then `obj` is let go.
struct work_state {
    std::shared_ptr<tracked> obj;
    gate_holder wait_for_then;
};

TEST(off_thread, what_work_and_then_share_dies_on_the_io_thread) {
    for (int round = 0; round < 3; ++round) {
        asio::io_context io;
        auto guard = asio::make_work_guard(io);
        asio::thread_pool pool(1);
        std::atomic<std::thread::id> died_on{};
        std::atomic<std::thread::id> io_thread{};
        auto g = std::make_shared<gate>();
        auto obj = std::make_shared<tracked>(tracked{&died_on});
        auto state = std::make_shared<work_state>(work_state{obj, gate_holder{g}});
        std::atomic<bool> answered{false};
        mailnet::mailnetd::off_thread(
            pool, io,
            [state = std::move(state)]() { return 42; },
            [obj, g, &answered](int r) mutable {
                EXPECT_EQ(r, 42);
                obj.reset();  // the answer is done with it
                {
                    std::lock_guard l(g->m);
                    g->set = true;
                }
                g->cv.notify_all();
                answered = true;
            });
        obj.reset();
        std::thread io_runner([&] {
            io_thread = std::this_thread::get_id();
            io.run();
        });
        pool.join();
        for (int i = 0; i < 200 && !answered; ++i) std::this_thread::sleep_for(5ms);
        guard.reset();
        io.stop();
        io_runner.join();
        ASSERT_TRUE(answered);
        EXPECT_EQ(died_on.load(), io_thread.load()) << "destroyed on a pool thread";
    }
}

}  // namespace
