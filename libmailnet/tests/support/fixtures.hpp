// fixtures.hpp: what server tests of every component share (header-only): a temporary
// directory, a log that keeps its lines, and a server object on its own I/O thread.
#pragma once

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <gtest/gtest.h>

#include "mailnet/log.hpp"
#include "mailnet/net/server.hpp"

namespace mailnet::testing {

/// A fresh directory under /tmp, removed with everything in it.
struct temp_dir {
    std::filesystem::path path;
    explicit temp_dir(std::string_view prefix = "mailnet-test") {
        std::string t = "/tmp/" + std::string(prefix) + "-XXXXXX";
        if (::mkdtemp(t.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path = t;
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

/// Log lines kept for inspection (thread-safe; copies share the lines).
struct log_capture {
    std::shared_ptr<std::mutex> mutex = std::make_shared<std::mutex>();
    std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
    log_sink sink() const {
        return [m = mutex, l = lines](log_level, std::string_view text) {
            std::lock_guard g(*m);
            l->emplace_back(text);
        };
    }
    bool contains(std::string_view part) const {
        std::lock_guard g(*mutex);
        return std::any_of(lines->begin(), lines->end(), [&](const std::string& s) { return s.find(part) != s.npos; });
    }
    std::string all() const {
        std::lock_guard g(*mutex);
        std::string out;
        for (const auto& l : *lines) out += l + "\n";
        return out;
    }
};

/// A server object (pop3::server, smtp::server) running on its own I/O thread; killed and
/// joined on destruction.
template <class Server>
struct server_thread {
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
    std::unique_ptr<Server> srv;
    std::thread thread;

    template <class Config>
    explicit server_thread(Config cfg) {
        srv = std::make_unique<Server>(io, std::move(cfg));
        EXPECT_TRUE(srv->up());
        thread = std::thread([this] { io.run(); });
    }
    server_thread(const server_thread&) = delete;
    server_thread& operator=(const server_thread&) = delete;
    ~server_thread() {
        std::promise<void> gone;
        srv->destroy(net::server::destroy_mode::kill, [&] { gone.set_value(); });
        gone.get_future().wait_for(std::chrono::seconds(5));
        work.reset();
        io.stop();
        thread.join();
    }
    /// The real port of listener `i`.
    std::uint16_t port(std::size_t i = 0) const { return srv->listeners().at(i).endpoint.port(); }
};

}  // namespace mailnet::testing
