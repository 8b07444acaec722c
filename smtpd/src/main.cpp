// main.cpp: the smtpd program: an ESMTP server (RFC 5321, 1870, 2920, 3030, 3207, 4954, 6152,
// 6531, 8314) delivering durably into the Maildirs under --store. It never relays: every
// accepted recipient is a local mailbox. Command line: DESIGN.md.
#include <CLI/CLI.hpp>

#include <asio/io_context.hpp>

#include <iostream>

#include "mailnet/auth/auth.hpp"
#include "mailnet/net/program.hpp"
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
    std::vector<std::string> listen, tls_listen;
    std::string store_dir, users_file, tls_cert, tls_key, hostname = net::host_name();
    bool require_auth = false, allow_plaintext = false, open_network = false, short_idle = false, normalise = false;
    mailnet::smtp::limits lim;
    std::size_t max_connections = 1024;
    unsigned idle_timeout = 300;
    app.add_option("--listen", listen,
                   "ADDR:PORT for SMTP with STARTTLS (repeatable; port 0: any free port); default 127.0.0.1:25,\n"
                   "unless only --tls-listen is given");
    app.add_option("--tls-listen", tls_listen, "ADDR:PORT for SMTP over implicit TLS, smtps (repeatable)");
    app.add_option("--store", store_dir, "Maildir root: mail goes to DIR/<mailbox>/new")->required();
    app.add_option("--users", users_file,
                   "Dovecot passwd-file of full addresses: only they receive mail (others 550 5.1.1),\n"
                   "and AUTH checks it. Without it every recipient is accepted (open mode, loopback only)");
    app.add_option("--hostname", hostname, "name in the greeting and Received: headers")->capture_default_str();
    app.add_option("--max-message-size", lim.max_message_octets, "octets, announced in SIZE (larger: 552)")
        ->capture_default_str()->check(CLI::PositiveNumber);
    app.add_option("--max-recipients", lim.max_recipients, "per message (more: 452 4.5.3)")
        ->capture_default_str()->check(CLI::PositiveNumber);
    auto* cert = app.add_option("--tls-cert", tls_cert, "PEM certificate chain (enables STARTTLS)");
    auto* key = app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
    cert->needs(key);
    key->needs(cert);
    app.add_flag("--require-auth", require_auth, "accept MAIL only after AUTH (a submission server; needs --users)");
    app.add_flag("--allow-plaintext-auth", allow_plaintext, "offer AUTH without TLS to non-loopback peers");
    app.add_flag("--allow-open-network", open_network, "without --users, listen on non-loopback addresses too");
    app.add_flag("--normalise-bare-line-ends", normalise,
                 "turn a bare CR or LF in DATA into a line end instead of refusing the message (550 5.6.0)");
    app.add_option("--max-connections", max_connections, "open connections at most")
        ->capture_default_str()->check(CLI::PositiveNumber);
    app.add_option("--idle-timeout", idle_timeout, "seconds a client may stay silent (RFC 5321: at least 300)")
        ->capture_default_str()->check(CLI::PositiveNumber);
    app.add_flag("--allow-short-idle-timeout", short_idle, "accept an --idle-timeout below 300 (for tests)");
    app.footer("Prints 'listening smtp|smtps ADDR:PORT' per listener once bound. SIGTERM/SIGINT: stop\n"
               "accepting, close idle sessions, give a message being received up to 10 s to finish\n"
               "and get its reply, exit; a second signal closes every session at once.\n"
               "Exit codes: 0 ok, 64 usage or configuration (a users file that does not parse too),\n"
               "69 cannot listen, 74 store or users file I/O.");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? exit_code::ok : exit_code::usage;
    }
    auto log = mailnet::stderr_log();
    if (listen.empty() && tls_listen.empty()) listen.emplace_back("127.0.0.1:25");
    if (idle_timeout < 300 && !short_idle) {
        std::cerr << "smtpd: --idle-timeout below 300 s breaks RFC 5321 4.5.3.2.7; add --allow-short-idle-timeout\n";
        return exit_code::usage;
    }
    if (!tls_listen.empty() && tls_cert.empty()) {
        std::cerr << "smtpd: --tls-listen needs --tls-cert and --tls-key\n";
        return exit_code::usage;
    }
    if (require_auth && users_file.empty()) {
        std::cerr << "smtpd: --require-auth needs --users\n";
        return exit_code::usage;
    }
    if (store_dir.starts_with("postgresql:") || store_dir.starts_with("postgres:")) {
        std::cerr << "smtpd: a PostgreSQL store is not supported yet; give a directory\n";
        return exit_code::usage;
    }
    mailnet::smtp::server_config cfg;
    auto plain = net::listen_specs("smtpd", "--listen", listen, "smtp", false);
    auto implicit = net::listen_specs("smtpd", "--tls-listen", tls_listen, "smtps", true);
    if (!plain || !implicit) return exit_code::usage;
    cfg.listen = std::move(*plain);
    cfg.listen.insert(cfg.listen.end(), implicit->begin(), implicit->end());
    // DESIGN.md "Rules": open mode takes mail for any address, so only from this machine.
    if (users_file.empty() && !open_network)
        for (const auto& l : cfg.listen)
            if (!net::is_loopback(l)) {
                std::cerr << "smtpd: without --users only loopback addresses may listen (" << l.address
                          << "); add --allow-open-network\n";
                return exit_code::usage;
            }
    // AUTH goes only over TLS, from loopback, or with --allow-plaintext-auth: a submission server
    // that can offer none of them to its remote clients refuses everyone.
    if (require_auth && tls_cert.empty() && !allow_plaintext)
        for (const auto& l : cfg.listen)
            if (!net::is_loopback(l)) {
                std::cerr << "smtpd: --require-auth on " << l.address
                          << " needs --tls-cert/--tls-key (or --allow-plaintext-auth): remote clients could never log in\n";
                return exit_code::usage;
            }
    if (!tls_cert.empty()) {
        auto ctx = net::server_tls_from_files("smtpd", tls_cert, tls_key);
        if (!ctx) return exit_code::usage;
        cfg.tls = *ctx;
    }
    int failed = exit_code::ok;
    if (!users_file.empty()) {
        auto users = net::users_from_file("smtpd", users_file, log, failed);
        if (!users) return failed;
        cfg.auth = std::move(users);
        cfg.recipients_from_auth = true;
    }
    auto store = net::maildir_store_at("smtpd", store_dir, log, failed);
    if (!store) return failed;
    cfg.storage = std::move(store);
    cfg.hostname = hostname;
    cfg.require_auth = require_auth;
    cfg.allow_plaintext_auth = allow_plaintext;
    cfg.normalise_bare_line_ends = normalise;
    cfg.session_limits = lim;
    cfg.max_connections = max_connections;
    cfg.idle_timeout = std::chrono::seconds(idle_timeout);
    cfg.allow_short_idle_timeout = short_idle;
    cfg.log = log;

    asio::io_context io;
    mailnet::smtp::server server(io, cfg);
    if (int e = net::start_servers("smtpd", {&server}); e != exit_code::ok) return e;
    return net::run_until_signalled(io, {server.base()});
}
