// bench/benchclock.hpp: the wall and CPU clocks the benchmark load tools (smtpload, httpload)
// share: seconds since a steady time point, and this process's own CPU seconds.
#pragma once

#include <sys/resource.h>

#include <chrono>

namespace benchclock {

using clk = std::chrono::steady_clock;

inline double secs_since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }

// User + kernel CPU seconds of this process so far.
inline double cpu_self() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

}  // namespace benchclock
