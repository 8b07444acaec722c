// mailnet/net/cli.hpp: the command-line options every server program shares (DESIGN.md
// "Command lines"), on CLI11, and what they become in a net::service_config. For programs:
// including it needs CLI11 (Debian libcli11-dev), header-only.
#pragma once

#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "mailnet/net/program.hpp"
#include "mailnet/net/service.hpp"

namespace mailnet::net {

/// How one program names its listeners in options and help.
struct listener_names {
    std::string service;        ///< "pop3", "smtp": the plain listener (with STLS/STARTTLS)
    std::string tls_service;    ///< "pop3s", "smtps": implicit TLS
    std::string protocol;       ///< "POP3", "SMTP" (help text)
    std::string upgrade;        ///< "STLS", "STARTTLS" (help text)
    std::string default_listen; ///< used when neither --listen nor --tls-listen is given
};

/// --listen, --tls-listen, --tls-cert/--tls-key, --allow-plaintext-auth, --max-connections,
/// --idle-timeout and --allow-short-idle-timeout: added to an app, then applied to a config.
struct server_cli {
    server_cli(std::string program_name, listener_names listeners, unsigned min_idle, std::string rfc)
        : program(std::move(program_name)), names(std::move(listeners)), min_idle_seconds(min_idle),
          idle_rfc(std::move(rfc)), idle_timeout(min_idle) {}

    std::string program;  ///< in messages: "pop3d: ..."
    listener_names names;
    unsigned min_idle_seconds = 600;  ///< the protocol's RFC minimum
    std::string idle_rfc;             ///< "RFC 1939 3" (help and messages)
    std::vector<std::string> listen, tls_listen;
    std::string tls_cert, tls_key;
    bool allow_plaintext = false, short_idle = false;
    std::size_t max_connections = 1024;
    unsigned idle_timeout;  ///< default: min_idle_seconds

    /// Adds the options to `app`; `plaintext_help` says what --allow-plaintext-auth allows.
    void add_to(CLI::App& app, const std::string& plaintext_help) {
        app.add_option("--listen", listen,
                       "ADDR:PORT for " + names.protocol + " with " + names.upgrade +
                           " (repeatable; port 0: any free port); default " + names.default_listen +
                           ",\nunless only --tls-listen is given");
        app.add_option("--tls-listen", tls_listen,
                       "ADDR:PORT for " + names.protocol + " over implicit TLS, " + names.tls_service + " (repeatable)");
        auto* cert = app.add_option("--tls-cert", tls_cert, "PEM certificate chain (enables " + names.upgrade + ")");
        auto* key = app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
        cert->needs(key);
        key->needs(cert);
        app.add_flag("--allow-plaintext-auth", allow_plaintext, plaintext_help);
        app.add_option("--max-connections", max_connections, "open connections at most")
            ->capture_default_str()
            ->check(CLI::PositiveNumber);
        app.add_option("--idle-timeout", idle_timeout,
                       "seconds a client may stay silent (" + idle_rfc + ": at least " +
                           std::to_string(min_idle_seconds) + ")")
            ->capture_default_str()
            ->check(CLI::PositiveNumber);
        app.add_flag("--allow-short-idle-timeout", short_idle,
                     "accept an --idle-timeout below " + std::to_string(min_idle_seconds) + " (for tests)");
    }

    /// After parsing: the listeners (the default when none was given), TLS from the files, the
    /// limits; exit_code::ok, or the code to exit with once the reason is printed on stderr.
    int apply(service_config& cfg) {
        if (listen.empty() && tls_listen.empty()) listen.push_back(names.default_listen);
        if (idle_timeout < min_idle_seconds && !short_idle) {
            std::cerr << program << ": --idle-timeout below " << min_idle_seconds << " s breaks " << idle_rfc
                      << "; add --allow-short-idle-timeout\n";
            return exit_code::usage;
        }
        if (!tls_listen.empty() && tls_cert.empty()) {
            std::cerr << program << ": --tls-listen needs --tls-cert and --tls-key\n";
            return exit_code::usage;
        }
        auto plain = listen_specs(program, "--listen", listen, names.service, false);
        auto implicit = listen_specs(program, "--tls-listen", tls_listen, names.tls_service, true);
        if (!plain || !implicit) return exit_code::usage;
        cfg.listen = std::move(*plain);
        cfg.listen.insert(cfg.listen.end(), implicit->begin(), implicit->end());
        if (!tls_cert.empty()) {
            auto ctx = server_tls_from_files(program, tls_cert, tls_key);
            if (!ctx) return exit_code::usage;
            cfg.tls = *ctx;
        }
        cfg.allow_plaintext_auth = allow_plaintext;
        cfg.max_connections = max_connections;
        cfg.idle_timeout = std::chrono::seconds(idle_timeout);
        cfg.allow_short_idle_timeout = short_idle;
        return exit_code::ok;
    }
};

}  // namespace mailnet::net
