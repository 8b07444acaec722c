// maildir_rate.cpp: durable Maildir deliveries per second of 4 KiB messages (DESIGN.md "On disk",
// Delivery), raw system calls beside the Maildir store, with 1 and 20 delivering threads (or
// THREADS: a comma-separated list of thread counts), and the store's ways of making the data
// durable (MODES: file, syncfs, adaptive, or none: fsync off, what the rest costs; default: the
// store's default only).
// Usage: mailnet-maildir-rate DIR [MAX_MESSAGES=2000] [MAX_SECONDS=10] [THREADS=1,20] [MODES]   (exit 0, 64, 74)
// DIR must exist. Each case runs in a fresh directory under DIR, removed afterwards, and stops
// at MAX_MESSAGES or MAX_SECONDS, whichever comes first. One line per case: "raw 1 thread: N/s
// (COUNT in SECS s; CPU USER+SYS µs a file)", the process's CPU (getrusage) over the case; with
// MODES the store's cases are named "store-<mode>".
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "mailnet/store/store.hpp"

namespace {

namespace fs = std::filesystem;
using bench_clock = std::chrono::steady_clock;

const std::string message = [] {
    std::string m = "From: bench@example.org\nSubject: rate\n\n";
    while (m.size() < 4096) m += "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef\n";
    m.resize(4095);
    return m + "\n";
}();

struct limits {
    long max_messages = 2000;
    std::chrono::seconds max_time{10};
};

// Runs `deliver(thread, n)` on `threads` threads until the limits; false if any call failed.
// Prints "<name>: N/s" from the deliveries that completed.
bool run_case(const std::string& name, int threads, const limits& lim, const std::function<bool(int, long)>& deliver) {
    std::atomic<long> claimed{0}, done{0};
    std::atomic<bool> failed{false};
    const auto cpu = [] {
        rusage u{};
        ::getrusage(RUSAGE_SELF, &u);
        const auto us = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec); };
        return std::pair{us(u.ru_utime), us(u.ru_stime)};
    };
    const auto cpu_before = cpu();
    const auto start = bench_clock::now();
    const auto deadline = start + lim.max_time;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            for (long n = claimed++; n < lim.max_messages && !failed && bench_clock::now() < deadline; n = claimed++) {
                if (!deliver(t, n)) {
                    failed = true;
                    return;
                }
                ++done;
            }
        });
    for (auto& th : pool) th.join();
    const double secs = std::chrono::duration<double>(bench_clock::now() - start).count();
    const auto cpu_after = cpu();
    const double n = done > 0 ? static_cast<double>(done) : 1.0;
    std::printf("%s: %.0f/s (%ld in %.2f s; CPU %.0f+%.0f µs a file)\n", name.c_str(), static_cast<double>(done) / secs,
                done.load(), secs, (cpu_after.first - cpu_before.first) / n, (cpu_after.second - cpu_before.second) / n);
    std::fflush(stdout);
    return !failed;
}

// Says why a raw delivery failed (errno), for run_case's "false".
bool failed(const std::string& what) {
    std::perror(what.c_str());
    return false;
}

// What the store does for one mailbox, in plain system calls: write to tmp/, fsync, link into
// new/, drop the tmp/ name, fsync new/.
bool raw_delivery(const std::string& box, int thread, long n) {
    const std::string base = std::to_string(n) + "." + std::to_string(thread) + ".bench";
    const std::string tmp = box + "/tmp/" + base;
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return failed(tmp);
    const bool written = ::write(fd, message.data(), message.size()) == static_cast<ssize_t>(message.size()) &&
                         ::fsync(fd) == 0;
    if (::close(fd) != 0 || !written) return failed(tmp);
    const std::string final_name = box + "/new/" + base;
    if (::link(tmp.c_str(), final_name.c_str()) != 0 || ::unlink(tmp.c_str()) != 0)
        return failed(final_name);
    const int dir = ::open((box + "/new").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return failed(box);
    const bool synced = ::fsync(dir) == 0;
    ::close(dir);
    return synced || failed(box);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || argc > 6) {
        std::cerr << "usage: mailnet-maildir-rate DIR [MAX_MESSAGES=2000] [MAX_SECONDS=10] [THREADS=1,20] [MODES]\n";
        return 64;
    }
    limits lim;
    if (argc > 2) lim.max_messages = std::atol(argv[2]);
    if (argc > 3) lim.max_time = std::chrono::seconds(std::atol(argv[3]));
    std::vector<int> thread_counts{1, 20};
    if (argc > 4) {
        thread_counts.clear();
        for (const char* p = argv[4]; *p != '\0';) {
            char* end = nullptr;
            const long n = std::strtol(p, &end, 10);
            if (end == p || n <= 0 || n > 256 || (*end != ',' && *end != '\0')) {
                std::cerr << "mailnet-maildir-rate: THREADS is a list of counts from 1 to 256, such as 1,8,20\n";
                return 64;
            }
            thread_counts.push_back(static_cast<int>(n));
            p = *end == ',' ? end + 1 : end;
        }
    }
    // The store's modes: none given, its default under the name "store".
    // nullopt: the default; none: fsync off (a maildir_data_sync value that is no mode).
    const auto none = static_cast<mailnet::maildir_data_sync>(-1);
    std::vector<std::pair<std::string, std::optional<mailnet::maildir_data_sync>>> modes{{"store", std::nullopt}};
    if (argc > 5) {
        modes.clear();
        std::string list = argv[5];
        for (std::size_t at = 0; at <= list.size();) {
            const std::size_t end = std::min(list.find(',', at), list.size());
            const std::string m = list.substr(at, end - at);
            if (m == "file") modes.emplace_back("store-file", mailnet::maildir_data_sync::file);
            else if (m == "syncfs") modes.emplace_back("store-syncfs", mailnet::maildir_data_sync::syncfs);
            else if (m == "adaptive") modes.emplace_back("store-adaptive", mailnet::maildir_data_sync::adaptive);
            else if (m == "none") modes.emplace_back("store-none", none);
            else {
                std::cerr << "mailnet-maildir-rate: MODES is a list of file, syncfs, adaptive, none\n";
                return 64;
            }
            at = end + 1;
        }
    }
    if (lim.max_messages <= 0 || lim.max_time.count() <= 0 || thread_counts.empty()) {
        std::cerr << "mailnet-maildir-rate: MAX_MESSAGES, MAX_SECONDS and THREADS must be positive\n";
        return 64;
    }
    const fs::path dir = argv[1];
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {  // made by no one but the caller: a typo creates nothing
        std::cerr << "mailnet-maildir-rate: " << dir << " is not a directory\n";
        return 74;
    }
    bool ok = true;
    int case_no = 0;
    // MAILNET_RATE_KEEP=1: the cases' files stay (the caller removes DIR's contents later): on
    // ext4 without a journal, files made soon after many were removed cost the kernel a scan
    // of the freed inodes (recently_deleted()), which would tax each case with the one before.
    const char* keep_env = std::getenv("MAILNET_RATE_KEEP");
    const bool keep = keep_env != nullptr && std::string_view(keep_env) == "1";
    // A fresh directory per case, so no case lists or syncs another's files.
    auto fresh = [&] {
        const fs::path p = dir / ("mailnet-maildir-rate." + std::to_string(::getpid()) + "." + std::to_string(case_no++));
        fs::remove_all(p, ec);
        fs::create_directories(p, ec);
        return p;
    };

    for (const int threads : thread_counts) {
        const fs::path root = fresh();
        const std::string box = (root / "bench").string();
        for (const char* sub : {"/tmp", "/new", "/cur"}) fs::create_directories(box + sub, ec);
        if (ec) {
            std::cerr << "mailnet-maildir-rate: cannot use " << dir << ": " << ec.message() << "\n";
            return 74;
        }
        ok = run_case("raw " + std::to_string(threads) + (threads == 1 ? " thread" : " threads"), threads, lim,
                      [&](int t, long n) { return raw_delivery(box, t, n); }) && ok;
        if (!keep) fs::remove_all(root, ec);
    }

    for (const auto& [mode_name, mode] : modes) {
        for (const int threads : thread_counts) {
            const fs::path root = fresh();
            mailnet::maildir_options o;
            o.root = root / "store";
            o.hostname = "bench";
            o.log = mailnet::stderr_log();
            if (mode == none)
                o.fsync = false;
            else if (mode)
                o.data_sync = *mode;
            auto store = mailnet::open_maildir_store(o);
            const std::vector<std::string> to{"bench"};
            // The mailbox is made before the clock starts.
            if (!store || !(*store)->deliver(to, message)) {
                fs::remove_all(root, ec);
                return 74;
            }
            ok = run_case(mode_name + " " + std::to_string(threads) + (threads == 1 ? " thread" : " threads"), threads, lim,
                          [&](int, long) { return static_cast<bool>((*store)->deliver(to, message)); }) && ok;
            store->reset();
            if (!keep) fs::remove_all(root, ec);
        }
    }
    return ok ? 0 : 74;
}
