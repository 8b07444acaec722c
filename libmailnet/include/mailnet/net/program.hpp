// mailnet/net/program.hpp: what every server program's main() does the same way (DESIGN.md
// "Command lines"): sysexits codes, --listen parsing, TLS and users-file set-up with their
// error messages, the listening lines, SIGTERM/SIGINT shutdown.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ssl/context.hpp>

#include "mailnet/auth/auth.hpp"
#include "mailnet/log.hpp"
#include "mailnet/net/server.hpp"
#include "mailnet/net/service.hpp"
#include "mailnet/store/store.hpp"

namespace mailnet::net {

/// sysexits.h codes (DESIGN.md "Command lines").
namespace exit_code {
inline constexpr int ok = 0, usage = 64, unavailable = 69, io_error = 74, temporary = 75, protocol = 76,
                     denied = 77;
}

/// Parses every "ADDR:PORT" of `texts` as a listener of `service`. A bad one is reported on
/// stderr as "PROGRAM: bad OPTION TEXT: want ADDR:PORT" and gives nullopt (exit_code::usage).
std::optional<std::vector<listen_spec>> listen_specs(std::string_view program, std::string_view option,
                                                     const std::vector<std::string>& texts, const std::string& service,
                                                     bool implicit_tls);

/// The server TLS context of --tls-cert/--tls-key; nullopt after "PROGRAM: TLS: reason" on stderr.
std::optional<std::shared_ptr<asio::ssl::context>> server_tls_from_files(std::string_view program,
                                                                         const std::filesystem::path& cert,
                                                                         const std::filesystem::path& key);

/// Opens a users file (Dovecot passwd-file); on failure prints why and sets `exit` (usage for a
/// file that does not parse, io_error for one that cannot be read).
std::unique_ptr<authenticator> users_from_file(std::string_view program, const std::filesystem::path& file,
                                               const log_sink& log, int& exit);

/// Opens the store a --store argument names: a postgresql:// (or postgres://) URI is the
/// PostgreSQL store, anything else a Maildir root directory. On failure prints why and sets
/// `exit`: usage for a URI carrying a password (it belongs in PGPASSWORD or ~/.pgpass, never on
/// a command line), temp_failure when the database cannot be reached, unavailable for a schema
/// newer than this program, io_error for a Maildir that cannot be used.
std::shared_ptr<store> store_at(std::string_view program, const std::string& spec, const log_sink& log, int& exit);

/// Whether a postgresql:// URI carries a password (user:password@ or a password= parameter).
bool uri_has_password(std::string_view uri) noexcept;

/// Open mode (DESIGN.md "Rules": no --users, mail for any address) listens on loopback
/// addresses only: exit_code::ok when every listener is one, else usage after "PROGRAM: WHY
/// only loopback addresses may listen (ADDR); add --allow-open-network" on stderr, WHY being
/// `why` ("without --users" by default; mailnetd's HTTP API says its own).
int loopback_only(std::string_view program, const std::vector<listen_spec>& listeners,
                  std::string_view why = "without --users");

/// This machine's name (gethostname), "localhost" if it has none: greetings, Received:.
std::string host_name();

/// Raises the descriptor limit, then brings every server up; on failure prints why and returns
/// the exit code (usage for an unusable configuration, whose reason the server logged;
/// unavailable when an address cannot be bound), else exit_code::ok.
int start_servers(std::string_view program, const std::vector<service*>& servers);

/// Prints "listening SERVICE ADDR:PORT" for every bound listener of `servers` (stdout, flushed),
/// then runs `io` until SIGTERM/SIGINT has ended every server: the first signal lets sessions
/// finish their exchange, a second closes them. `on_running`, if given, is called once the lines
/// are out, before `io` runs, with the signal handler: a program keeps it to stop by itself
/// (shutdown_on_signals::stop, on `io`'s thread; mailnetd --exit-after). `busy_poll`: how long
/// the thread polls before it sleeps (run_io, net/io_loop.hpp; --busy-poll), none on a machine
/// of one CPU. Returns exit_code::ok.
int run_until_signalled(asio::io_context& io, const std::vector<std::shared_ptr<server>>& servers,
                        const std::function<void(shutdown_on_signals&)>& on_running = {},
                        std::chrono::microseconds busy_poll = std::chrono::microseconds{0});

}  // namespace mailnet::net
