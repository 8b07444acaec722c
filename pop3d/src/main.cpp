// main.cpp: the pop3d program: a POP3 server (RFC 1939, 2449, 2595, 5034, 8314) serving the
// Maildirs under --store to the users of a Dovecot passwd-file. Command line: DESIGN.md.
#include <CLI/CLI.hpp>

#include <asio/io_context.hpp>

#include <cstdio>
#include <iostream>

#include "mailnet/auth/auth.hpp"
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
    std::vector<std::string> listen;
    std::vector<std::string> tls_listen;
    std::string store_dir, users_file, tls_cert, tls_key;
    bool allow_plaintext = false, enable_apop = false, short_idle = false;
    std::size_t max_connections = 1024;
    unsigned idle_timeout = 600;
    app.add_option("--listen", listen,
                   "ADDR:PORT for POP3 with STLS (repeatable; port 0: any free port); default 127.0.0.1:110,\n"
                   "unless only --tls-listen is given");
    app.add_option("--tls-listen", tls_listen, "ADDR:PORT for POP3 over implicit TLS, pop3s (repeatable)");
    app.add_option("--store", store_dir, "Maildir root: DIR/<mailbox>/{tmp,new,cur}")->required();
    app.add_option("--users", users_file, "Dovecot passwd-file: name:{SCHEME}secret")->required();
    auto* cert = app.add_option("--tls-cert", tls_cert, "PEM certificate chain (enables STLS)");
    auto* key = app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
    cert->needs(key);
    key->needs(cert);
    app.add_flag("--allow-plaintext-auth", allow_plaintext,
                 "allow USER/PASS and AUTH PLAIN without TLS from non-loopback peers");
    app.add_flag("--enable-apop", enable_apop, "offer APOP (only for {PLAIN} entries; same TLS rule)");
    app.add_option("--max-connections", max_connections, "open connections at most")
        ->capture_default_str()->check(CLI::PositiveNumber);
    app.add_option("--idle-timeout", idle_timeout, "seconds a client may stay silent (RFC 1939: at least 600)")
        ->capture_default_str()->check(CLI::PositiveNumber);
    app.add_flag("--allow-short-idle-timeout", short_idle, "accept an --idle-timeout below 600 (for tests)");
    app.footer("Prints 'listening pop3|pop3s ADDR:PORT' per listener once bound. SIGTERM/SIGINT: stop\n"
               "accepting, close idle sessions, let the exchange in progress finish, exit; a second\n"
               "signal closes every session at once.\n"
               "Exit codes: 0 ok, 64 usage or configuration (a users file that does not parse too),\n"
               "69 cannot listen, 74 store or users file I/O.");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? exit_code::ok : exit_code::usage;
    }
    auto log = mailnet::stderr_log();
    if (listen.empty() && tls_listen.empty()) listen.emplace_back("127.0.0.1:110");
    if (idle_timeout < 600 && !short_idle) {
        std::cerr << "pop3d: --idle-timeout below 600 s breaks RFC 1939 3; add --allow-short-idle-timeout\n";
        return exit_code::usage;
    }
    if (!tls_listen.empty() && tls_cert.empty()) {
        std::cerr << "pop3d: --tls-listen needs --tls-cert and --tls-key\n";
        return exit_code::usage;
    }
    mailnet::pop3::server_config cfg;
    auto plain = net::listen_specs("pop3d", "--listen", listen, "pop3", false);
    auto implicit = net::listen_specs("pop3d", "--tls-listen", tls_listen, "pop3s", true);
    if (!plain || !implicit) return exit_code::usage;
    cfg.listen = std::move(*plain);
    cfg.listen.insert(cfg.listen.end(), implicit->begin(), implicit->end());
    if (!tls_cert.empty()) {
        auto ctx = net::server_tls_from_files("pop3d", tls_cert, tls_key);
        if (!ctx) return exit_code::usage;
        cfg.tls = *ctx;
    }
    int failed = exit_code::ok;
    auto users = net::users_from_file("pop3d", users_file, log, failed);
    if (!users) return failed;
    auto store = net::maildir_store_at("pop3d", store_dir, log, failed);
    if (!store) return failed;
    cfg.auth = std::move(users);
    cfg.storage = std::move(store);
    cfg.allow_plaintext_auth = allow_plaintext;
    cfg.enable_apop = enable_apop;
    cfg.hostname = net::host_name();
    cfg.max_connections = max_connections;
    cfg.idle_timeout = std::chrono::seconds(idle_timeout);
    cfg.allow_short_idle_timeout = short_idle;
    cfg.log = log;

    asio::io_context io;
    mailnet::pop3::server server(io, cfg);
    if (int e = net::start_servers("pop3d", {&server}); e != exit_code::ok) return e;
    return net::run_until_signalled(io, {server.base()});
}
