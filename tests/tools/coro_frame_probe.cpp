// coro_frame_probe.cpp: tells whether this compiler lays out a coroutine frame the way
// std::coroutine_handle::from_promise expects when the coroutine begins with a co_await in an
// `if` condition. GCC 12 does not (GCC PR106188: the condition's temporary goes before the
// frame's resume pointer, so every handle made from the promise is off by its size, and a
// resume through it runs on garbage). tests/tools/coroutine_frames.py runs it, then checks
// that its DWARF audit flags this probe's frame exactly when the layout is wrong, so the audit
// of the real binaries is known to see the bug. Exit 0: the layout is right; 3: it is wrong.
#include <coroutine>
#include <cstdio>

namespace {

bool layout_ok = true;
std::coroutine_handle<> started;  // the probe, suspended at its start (the real frame's handle)

struct task {
    struct promise_type {
        void* handle_address = nullptr;  // what from_promise() makes of this promise
        task get_return_object() {
            handle_address = std::coroutine_handle<promise_type>::from_promise(*this).address();
            return {};
        }
        // The real frame's address is what the coroutine's own suspension hands over.
        auto initial_suspend() noexcept {
            struct check {
                promise_type* p;
                bool await_ready() noexcept { return false; }
                void await_suspend(std::coroutine_handle<> real) noexcept {
                    layout_ok = real.address() == p->handle_address;
                    started = real;
                }
                void await_resume() noexcept {}
            };
            return check{this};
        }
        std::suspend_always final_suspend() noexcept { return {}; }
        void return_value(bool) {}
        void unhandled_exception() {}
    };
    bool await_ready() { return true; }
    void await_suspend(std::coroutine_handle<>) {}
    bool await_resume() { return true; }
};

task leaf() { co_return true; }

// The pattern: a co_await in an `if` condition before any other local.
task probe() {
    if (!co_await leaf()) co_return false;  // await-in-condition: intended
    co_return true;
}

}  // namespace

int main() {
    probe();
    if (layout_ok) {
        started.resume();  // to its end
        started.destroy();
    }  // else neither: both would read the resume and destroy pointers where they are not
    std::printf("coroutine frame layout: %s\n", layout_ok ? "as from_promise expects" : "wrong (GCC PR106188)");
    return layout_ok ? 0 : 3;
}
