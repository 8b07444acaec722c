// main.cpp: the smtpd program: an ESMTP server (RFC 5321, 1870, 2920, 3030, 3207, 4954, 6152,
// 6531, 8314) delivering durably into the Maildirs under --store. It never relays: every
// accepted recipient is a local mailbox. Command line: DESIGN.md.
#include <CLI/CLI.hpp>

#include <asio/io_context.hpp>

#include <iostream>

#include "mailnet/auth/auth.hpp"
#include "mailnet/net/cli.hpp"
#include "mailnet/net/program.hpp"
#include "mailnet/smtpd/cli.hpp"
#include "mailnet/smtpd/server.hpp"
#include "mailnet/store/store.hpp"
#include "mailnet/version.hpp"

namespace {

namespace net = mailnet::net;
namespace exit_code = mailnet::net::exit_code;

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"smtpd: an ESMTP server delivering into Maildirs, with STARTTLS, implicit TLS and AUTH.\n"
                 "Mail for DIR/<mailbox>/new; 250 only once the message is on disk (fsync'd).",
                 "smtpd"};
    app.set_version_flag("--version", "smtpd (mailnet) " + std::string(mailnet::version()));
    net::server_cli common{"smtpd", {"smtp", "smtps", "SMTP", "STARTTLS", "127.0.0.1:25"}, 300, "RFC 5321"};
    std::string store_dir, users_file, hostname = net::host_name();
    bool require_auth = false, open_network = false, normalise = false;
    mailnet::smtp::limits lim;
    app.add_option("--store", store_dir, "Maildir root: mail goes to DIR/<mailbox>/new; or postgresql://USER@HOST/DB (password in PGPASSWORD or ~/.pgpass; docs/stores.md)")->required();
    app.add_option("--users", users_file,
                   "Dovecot passwd-file of full addresses: only they receive mail (others 550 5.1.1),\n"
                   "and AUTH checks it. Without it every recipient is accepted (open mode, loopback only)");
    app.add_option("--hostname", hostname, "name in the greeting and Received: headers")->capture_default_str();
    mailnet::smtp::add_limit_options(app, lim);
    common.add_to(app, "offer AUTH without TLS to non-loopback peers");
    app.add_flag("--require-auth", require_auth, "accept MAIL only after AUTH (a submission server; needs --users)");
    app.add_flag("--allow-open-network", open_network, "without --users, listen on non-loopback addresses too");
    app.add_flag("--normalise-bare-line-ends", normalise,
                 "turn a bare CR or LF in DATA into a line end instead of refusing the message (550 5.6.0)");
    app.footer("Prints 'listening smtp|smtps ADDR:PORT' per listener once bound. SIGTERM/SIGINT: stop\n"
               "accepting, tell idle sessions 421 and close them, give a message being received up to\n"
               "10 s more to arrive (one that arrived is delivered and answered), exit; a second signal\n"
               "closes every session.\n"
               "Exit codes: 0 ok, 64 usage or configuration (a users file that does not parse too),\n"
               "69 cannot listen (or a PostgreSQL schema newer than this program), 74 store or users\n"
               "file I/O, 75 the PostgreSQL store cannot be reached (try again).");
    if (auto done = net::parse_command_line(app, argc, argv)) return *done;
    auto log = mailnet::stderr_log();
    if (require_auth && users_file.empty()) {
        std::cerr << "smtpd: --require-auth needs --users\n";
        return exit_code::usage;
    }
    mailnet::smtp::server_config cfg;
    if (int e = common.apply(cfg); e != exit_code::ok) return e;
    // DESIGN.md "Rules": open mode takes mail for any address, so only from this machine.
    if (users_file.empty() && !open_network)
        if (int e = net::loopback_only("smtpd", cfg.listen); e != exit_code::ok) return e;
    // AUTH goes only over TLS, from loopback, or with --allow-plaintext-auth: a submission server
    // that can offer none of them to its remote clients refuses everyone.
    if (require_auth && !cfg.tls && !cfg.allow_plaintext_auth)
        for (const auto& l : cfg.listen)
            if (!net::is_loopback(l)) {
                std::cerr << "smtpd: --require-auth on " << l.address
                          << " needs --tls-cert/--tls-key (or --allow-plaintext-auth): remote clients could never log in\n";
                return exit_code::usage;
            }
    int failed = exit_code::ok;
    if (!users_file.empty()) {
        auto users = net::users_from_file("smtpd", users_file, log, failed);
        if (!users) return failed;
        cfg.auth = std::move(users);
        cfg.recipients_from_auth = true;
    }
    auto store = net::store_at("smtpd", store_dir, log, failed);
    if (!store) return failed;
    cfg.storage = std::move(store);
    cfg.hostname = hostname;
    cfg.require_auth = require_auth;
    cfg.allow_open_network = open_network;  // checked above too, with the command line's words
    cfg.normalise_bare_line_ends = normalise;
    cfg.session_limits = lim;
    cfg.log = log;

    asio::io_context io;
    mailnet::smtp::server server(io, cfg);
    if (int e = net::start_servers("smtpd", {&server}); e != exit_code::ok) return e;
    return net::run_until_signalled(io, {server.base()}, {}, common.common.busy_poll());
}
