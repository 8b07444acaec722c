// main.cpp: the pop3d program: a POP3 server (RFC 1939, 2449, 2595, 5034, 8314) serving the
// Maildirs under --store to the users of a Dovecot passwd-file. Command line: DESIGN.md.
#include <CLI/CLI.hpp>

#include <asio/io_context.hpp>

#include <cstdio>
#include <iostream>

#include "mailnet/auth/auth.hpp"
#include "mailnet/net/cli.hpp"
#include "mailnet/net/program.hpp"
#include "mailnet/pop3d/server.hpp"
#include "mailnet/store/store.hpp"
#include "mailnet/version.hpp"

namespace {

namespace net = mailnet::net;
namespace exit_code = mailnet::net::exit_code;

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"pop3d: a POP3 server for Maildirs, with STLS and implicit TLS.\n"
                 "Users come from a Dovecot passwd-file; mail from DIR/<user>/{new,cur}.",
                 "pop3d"};
    app.set_version_flag("--version", "pop3d (mailnet) " + std::string(mailnet::version()));
    net::server_cli common{"pop3d", {"pop3", "pop3s", "POP3", "STLS", "127.0.0.1:110"}, 600, "RFC 1939 3"};
    std::string store_dir, users_file;
    bool enable_apop = false;
    app.add_option("--store", store_dir, "Maildir root: DIR/<mailbox>/{tmp,new,cur}; or postgresql://USER@HOST/DB (password in PGPASSWORD or ~/.pgpass; docs/stores.md)")->required();
    app.add_option("--users", users_file, "Dovecot passwd-file: name:{SCHEME}secret")->required();
    common.add_to(app, "allow USER/PASS and AUTH PLAIN without TLS from non-loopback peers");
    app.add_flag("--enable-apop", enable_apop, "offer APOP (only for {PLAIN} entries; same TLS rule)");
    app.footer("Prints 'listening pop3|pop3s ADDR:PORT' per listener once bound. SIGTERM/SIGINT: stop\n"
               "accepting, close idle sessions, let the exchange in progress finish, exit; a second\n"
               "signal closes every session at once.\n"
               "Exit codes: 0 ok, 64 usage or configuration (a users file that does not parse too),\n"
               "69 cannot listen (or a PostgreSQL schema newer than this program), 74 store or users\n"
               "file I/O, 75 the PostgreSQL store cannot be reached (try again).");
    if (auto done = net::parse_command_line(app, argc, argv)) return *done;
    auto log = mailnet::stderr_log();
    mailnet::pop3::server_config cfg;
    if (int e = common.apply(cfg); e != exit_code::ok) return e;
    int failed = exit_code::ok;
    auto users = net::users_from_file("pop3d", users_file, log, failed);
    if (!users) return failed;
    auto store = net::store_at("pop3d", store_dir, log, failed);
    if (!store) return failed;
    cfg.auth = std::move(users);
    cfg.storage = std::move(store);
    cfg.enable_apop = enable_apop;
    cfg.hostname = net::host_name();
    cfg.log = log;

    asio::io_context io;
    mailnet::pop3::server server(io, cfg);
    if (int e = net::start_servers("pop3d", {&server}); e != exit_code::ok) return e;
    return net::run_until_signalled(io, {server.base()}, {}, common.common.busy_poll());
}
