// mailnet/store/postgresql.hpp: the PostgreSQL store (DESIGN.md "On disk"): the storage and
// delivery interfaces of store.hpp over one database shared by many front-ends (pop3d, smtpd,
// mailnetd processes on any hosts). docs/stores.md tells how to set it up.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "mailnet/error.hpp"
#include "mailnet/log.hpp"
#include "mailnet/store/store.hpp"

namespace mailnet {

/// Options of the PostgreSQL store.
struct postgresql_options {
    /// libpq's URI (`postgresql://user@host:port/db?sslmode=...`) or key=value string. The
    /// password comes from PGPASSWORD or ~/.pgpass (libpq), never from a command line.
    std::string uri;
    /// The schema the tables live in, created or migrated at open: a lower-case SQL identifier
    /// ([a-z_][a-z0-9_]*, at most 40 octets; not a word SQL reserves, such as "user", nor
    /// beginning with "pg_": errc::bad_config). Tests give each run its own.
    std::string schema = "mailnet";
    /// Connections for snapshots, reads, commits and deliveries (the lock connection and the
    /// event listener have one each besides); a call waits for a free one up to `wait`.
    std::size_t pool_size = 8;
    /// How long a call waits for a pooled connection, and a connection attempt takes at most.
    std::chrono::milliseconds wait{10000};
    /// A call to the server (a statement, a batch of deliveries) that has not come back in this
    /// long has its connection cut and fails temporarily: a stopped server or a stuck proxy
    /// keeps TCP alive and would hold the front-end without end. Above the sessions'
    /// statement_timeout (60 s); 0: no limit.
    std::chrono::milliseconds call_timeout{75000};
    /// Where problems are reported (a lost connection, a failed reconnect).
    log_sink log = stderr_log();
};

/// Opens the store: connects, creates or migrates the schema (under an advisory lock, so
/// front-ends starting together do it once), and starts the event listener. errc::bad_config
/// for a bad schema name or a schema newer than this program; errc::bad_input when the URI's
/// `options=` make synchronous_commit weaker than on or the isolation other than read
/// committed (the reason is logged); errc::temporary_failure when
/// the database cannot be reached; errc::unsupported when the store's module
/// (libmailnet_postgresql.so.0, beside libmailnet's own file; it alone links libpq) cannot be
/// loaded (the reason is logged and given by postgresql_unavailable_reason()).
result<std::unique_ptr<store>> open_postgresql_store(postgresql_options options);

/// Why the PostgreSQL store's module cannot be loaded (the dynamic linker's message); empty
/// when it can. Loads it on the first call.
std::string postgresql_unavailable_reason();

/// Whether a --store argument names a PostgreSQL database (postgresql:// or postgres://).
bool is_postgresql_uri(std::string_view store_argument) noexcept;

/// The schema version this program creates and understands.
inline constexpr int postgresql_schema_version = 3;

}  // namespace mailnet
