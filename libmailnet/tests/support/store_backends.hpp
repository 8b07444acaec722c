// store_backends.hpp: the store conformance suite's backends (DESIGN.md "every backend passes
// the same conformance suite"): memory, Maildir in a temporary directory, and PostgreSQL in a
// schema of its own in the private server ctest starts (tests/tools/pg_private.sh, fixture
// `postgresql`). Without that server the PostgreSQL cases are skipped, never passed.
#pragma once

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include "mailnet/store/postgresql.hpp"
#include "mailnet/store/store.hpp"
#include "fixtures.hpp"

namespace mailnet::testing {

enum class backend { memory, maildir, postgresql };

inline std::string backend_name(const ::testing::TestParamInfo<backend>& info) {
    switch (info.param) {
        case backend::memory: return "memory";
        case backend::maildir: return "maildir";
        case backend::postgresql: return "postgresql";
    }
    return "unknown";
}

inline const auto all_backends = ::testing::Values(backend::memory, backend::maildir, backend::postgresql);

/// The private server's URI (MAILNET_TEST_PG: the state directory pg_private.sh wrote), or
/// the reason there is none.
struct pg_server {
    std::optional<std::string> uri;
    std::string why_not;
};

inline pg_server private_postgresql() {
    const char* dir = std::getenv("MAILNET_TEST_PG");
    if (!dir || !*dir) return {std::nullopt, "MAILNET_TEST_PG is not set (run the tests through ctest)"};
    std::ifstream u(std::string(dir) + "/uri");
    std::string uri;
    if (u && std::getline(u, uri) && !uri.empty()) return {uri, {}};
    std::ifstream n(std::string(dir) + "/unavailable");
    std::string why;
    std::getline(n, why);
    return {std::nullopt, why.empty() ? "no private PostgreSQL server" : why};
}

/// A schema name no other test (or test process) uses.
inline std::string fresh_schema() {
    static std::atomic<int> n{0};
    return "t" + std::to_string(::getpid()) + "_" + std::to_string(n.fetch_add(1));
}

/// Drops a test's schema (and everything in it) on destruction.
struct pg_schema_guard {
    std::string uri, schema;
    ~pg_schema_guard() {
        if (uri.empty()) return;
        PGconn* c = PQconnectdb(uri.c_str());
        if (c && PQstatus(c) == CONNECTION_OK) {
            PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);
            PQclear(PQexec(c, ("DROP SCHEMA IF EXISTS " + schema + " CASCADE").c_str()));
        }
        PQfinish(c);
    }
};

/// Makes the stores of one test: the same backend, one underlying store (so two store objects
/// are two front-ends where the backend has them: Maildir and PostgreSQL).
class store_maker {
public:
    explicit store_maker(backend b) : b_(b) {}

    /// Skips the test (GTEST_SKIP in the caller) when this is false.
    bool available(std::string& why) {
        if (b_ != backend::postgresql) return true;
        auto pg = private_postgresql();
        if (!pg.uri) {
            why = pg.why_not;
            return false;
        }
        guard_.uri = *pg.uri;
        guard_.schema = fresh_schema();
        return true;
    }

    /// Another store object over the same data (memory: the same object, shared).
    std::shared_ptr<store> make(log_sink log = null_log()) {
        switch (b_) {
            case backend::memory:
                if (!memory_) memory_ = std::shared_ptr<store>(make_memory_store());
                return memory_;
            case backend::maildir: {
                maildir_options o;
                o.root = dir_.path / "store";
                o.hostname = "test";
                o.fsync = false;
                o.log = std::move(log);
                auto s = open_maildir_store(std::move(o));
                if (!s) return nullptr;
                return std::shared_ptr<store>(std::move(*s));
            }
            case backend::postgresql: {
                postgresql_options o;
                o.uri = guard_.uri;
                o.schema = guard_.schema;
                o.pool_size = 4;
                o.log = std::move(log);
                auto s = open_postgresql_store(std::move(o));
                if (!s) return nullptr;
                return std::shared_ptr<store>(std::move(*s));
            }
        }
        return nullptr;
    }

    backend kind() const noexcept { return b_; }

private:
    backend b_;
    temp_dir dir_{"mailnet-conformance"};
    pg_schema_guard guard_;
    std::shared_ptr<store> memory_;
};

}  // namespace mailnet::testing

/// In a TEST_P's SetUp: makes `maker` ready or skips the test with the reason.
#define MAILNET_STORE_BACKEND_OR_SKIP(maker)                      \
    do {                                                          \
        std::string why_;                                         \
        if (!(maker).available(why_)) GTEST_SKIP() << why_;       \
    } while (0)
