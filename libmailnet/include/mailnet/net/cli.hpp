// mailnet/net/cli.hpp: the command-line options every server program shares (DESIGN.md
// "Command lines"), on CLI11, and what they become in a net::service_config. For programs:
// including it needs CLI11 (Debian libcli11-dev), header-only.
#pragma once

#include <chrono>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "mailnet/net/io_loop.hpp"
#include "mailnet/net/program.hpp"
#include "mailnet/net/service.hpp"
#include "mailnet/net/tls.hpp"

namespace mailnet::net {

/// Parses the command line: nullopt to go on, or the code to exit with at once (0 after
/// --help or --version, exit_code::usage after CLI11's message for a bad command line).
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? exit_code::ok : exit_code::usage;
    }
    return std::nullopt;
}

/// How one program names its listeners in options and help.
struct listener_names {
    std::string service;        ///< "pop3", "smtp": the plain listener (with STLS/STARTTLS)
    std::string tls_service;    ///< "pop3s", "smtps": implicit TLS
    std::string protocol;       ///< "POP3", "SMTP" (help text)
    std::string upgrade;        ///< "STLS", "STARTTLS" (help text)
    std::string default_listen; ///< used when neither listener option is given
};

/// One protocol's listener options: ADDR:PORT values for the plain listener (with
/// STLS/STARTTLS) and for implicit TLS. pop3d and smtpd call them --listen and --tls-listen;
/// mailnetd, which runs two protocols, --pop3/--pop3s and --smtp/--smtps.
struct listener_cli {
    explicit listener_cli(listener_names listeners, std::string plain_name = "--listen",
                          std::string tls_name = "--tls-listen")
        : names(std::move(listeners)), plain_option(std::move(plain_name)), tls_option(std::move(tls_name)) {}

    listener_names names;
    std::string plain_option = "--listen";    ///< the plain listener's option
    std::string tls_option = "--tls-listen";  ///< the implicit-TLS listener's option
    std::vector<std::string> plain, tls;      ///< as given

    /// Adds both options (repeatable) to `app`.
    void add_to(CLI::App& app) {
        app.add_option(plain_option, plain,
                       "ADDR:PORT for " + names.protocol + " with " + names.upgrade +
                           " (repeatable; port 0: any free port); default " + names.default_listen +
                           ",\nunless only " + tls_option + " is given");
        app.add_option(tls_option, tls,
                       "ADDR:PORT for " + names.protocol + " over implicit TLS, " + names.tls_service + " (repeatable)");
    }

    /// The listeners after parsing: the given ones, and the default plain one when neither
    /// option was given (so a TLS listener alone on port 0 binds no fixed port). nullopt after "PROGRAM: bad OPTION TEXT" on stderr (exit_code::usage).
    std::optional<std::vector<listen_spec>> specs(std::string_view program) {
        if (plain.empty() && tls.empty()) plain.push_back(names.default_listen);
        auto p = listen_specs(program, plain_option, plain, names.service, false);
        auto t = listen_specs(program, tls_option, tls, names.tls_service, true);
        if (!p || !t) return std::nullopt;
        p->insert(p->end(), t->begin(), t->end());
        return p;
    }
};

/// The options every server program shares apart from its listeners: --tls-cert/--tls-key (and
/// --tls-self-signed where offered), --allow-plaintext-auth, --max-connections, --max-per-peer, --idle-timeout,
/// --allow-short-idle-timeout and --busy-poll (the I/O thread's, net/io_loop.hpp). One set serves all of a program's servers (mailnetd: SMTP
/// and POP3 share one TLS context and one set of limits).
struct service_cli {
    service_cli(std::string program_name, unsigned min_idle, std::string rfc, bool offer_self_signed = false)
        : program(std::move(program_name)), min_idle_seconds(min_idle), idle_rfc(std::move(rfc)),
          self_signed_offered(offer_self_signed) {}

    std::string program;              ///< in messages: "pop3d: ..."
    unsigned min_idle_seconds = 600;  ///< the strictest RFC minimum of the program's protocols
    std::string idle_rfc;             ///< "RFC 1939 3" (help and messages)
    bool self_signed_offered = false; ///< add --tls-self-signed (mailnetd)
    std::string tls_cert, tls_key;
    bool self_signed = false, allow_plaintext = false, short_idle = false;
    std::size_t max_connections = 1024;
    std::size_t max_per_peer = 32;
    unsigned idle_timeout = 0;  ///< 0: not given, each server keeps its protocol's minimum
    unsigned busy_poll_us = default_busy_poll_us;  ///< --busy-poll: microseconds; 0 off

    std::shared_ptr<asio::ssl::context> tls;  ///< after prepare(): the context, or null
    std::string tls_fingerprint;              ///< after prepare() with --tls-self-signed: SHA-256 hex

    /// Adds the options to `app`; `upgrade` names the TLS upgrade commands ("STLS"),
    /// `plaintext_help` says what --allow-plaintext-auth allows.
    void add_to(CLI::App& app, const std::string& upgrade, const std::string& plaintext_help) {
        auto* cert = app.add_option("--tls-cert", tls_cert, "PEM certificate chain (enables " + upgrade + ")");
        auto* key = app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
        cert->needs(key);
        key->needs(cert);
        if (self_signed_offered) {
            auto* self = app.add_flag("--tls-self-signed", self_signed,
                                      "make a certificate for localhost and 127.0.0.1 at start (valid a day) and\n"
                                      "print 'tls-fingerprint sha256 HEX' (enables " + upgrade + ")");
            self->excludes(cert);
            self->excludes(key);
        }
        app.add_flag("--allow-plaintext-auth", allow_plaintext, plaintext_help);
        app.add_option("--max-connections", max_connections, "open connections at most, per protocol")
            ->capture_default_str()
            ->check(CLI::PositiveNumber);
        app.add_option("--max-per-peer", max_per_peer,
                       "open connections at most from one client address (loopback exempt); behind a\n"
                       "load balancer, whose address every client then has, raise it to --max-connections")
            ->capture_default_str()
            ->check(CLI::PositiveNumber);
        app.add_option("--idle-timeout", idle_timeout,
                       "seconds a client may stay silent (default and minimum " + std::to_string(min_idle_seconds) +
                           ", " + idle_rfc + ")")
            ->check(CLI::PositiveNumber);
        app.add_flag("--allow-short-idle-timeout", short_idle,
                     "accept an --idle-timeout below " + std::to_string(min_idle_seconds) + " (for tests)");
        app.add_option("--busy-poll", busy_poll_us,
                       "microseconds the I/O thread keeps polling for more work before it sleeps (0: never;\n"
                       "at most 1000; never on a single CPU): lower latency per round trip, a little more CPU")
            ->capture_default_str()
            ->check(CLI::Range(0u, 1000u));
    }

    /// --busy-poll as given.
    std::chrono::microseconds busy_poll() const noexcept { return std::chrono::microseconds{busy_poll_us}; }

    /// After parsing: checks the idle timeout and makes the TLS context (from the files, or a
    /// self-signed certificate). exit_code::ok, or the code to exit with once the reason is
    /// printed on stderr.
    int prepare() {
        if (idle_timeout != 0 && idle_timeout < min_idle_seconds && !short_idle) {
            std::cerr << program << ": --idle-timeout below " << min_idle_seconds << " s breaks " << idle_rfc
                      << "; add --allow-short-idle-timeout\n";
            return exit_code::usage;
        }
        if (!tls_cert.empty()) {
            auto ctx = server_tls_from_files(program, tls_cert, tls_key);
            if (!ctx) return exit_code::usage;
            tls = *ctx;
        } else if (self_signed) {
            std::string why;
            auto made = make_self_signed_server_tls({"localhost", "127.0.0.1", "::1"}, &why);
            if (!made) {
                std::cerr << program << ": TLS: cannot make a self-signed certificate: " << why << "\n";
                return exit_code::unavailable;
            }
            tls = made->context;
            tls_fingerprint = made->fingerprint_sha256;
        }
        return exit_code::ok;
    }

    /// Fills `cfg` (after prepare()): the listeners, the TLS context, the limits.
    /// exit_code::ok, or usage after "PROGRAM: OPTION needs ..." when implicit-TLS listeners
    /// have no certificate or a listener does not parse.
    int apply(service_config& cfg, listener_cli& listeners) {
        if (!listeners.tls.empty() && !tls) {
            std::cerr << program << ": " << listeners.tls_option << " needs --tls-cert and --tls-key"
                      << (self_signed_offered ? " (or --tls-self-signed)" : "") << "\n";
            return exit_code::usage;
        }
        auto specs = listeners.specs(program);
        if (!specs) return exit_code::usage;
        cfg.listen = std::move(*specs);
        cfg.tls = tls;
        cfg.allow_plaintext_auth = allow_plaintext;
        cfg.max_connections = max_connections;
        cfg.max_per_peer = max_per_peer;
        if (idle_timeout != 0) cfg.idle_timeout = std::chrono::seconds(idle_timeout);
        cfg.allow_short_idle_timeout = short_idle;
        return exit_code::ok;
    }
};

/// A one-protocol server program's options (pop3d, smtpd): its listeners (--listen,
/// --tls-listen) and the shared ones (service_cli).
struct server_cli {
    server_cli(std::string program_name, listener_names listeners, unsigned min_idle, std::string rfc)
        : listen{std::move(listeners)}, common(std::move(program_name), min_idle, std::move(rfc)) {}

    listener_cli listen;
    service_cli common;

    /// Adds the options to `app`; `plaintext_help` says what --allow-plaintext-auth allows.
    void add_to(CLI::App& app, const std::string& plaintext_help) {
        listen.add_to(app);
        common.add_to(app, listen.names.upgrade, plaintext_help);
    }

    /// After parsing: the listeners (the default when none was given), TLS from the files, the
    /// limits; exit_code::ok, or the code to exit with once the reason is printed on stderr.
    int apply(service_config& cfg) {
        if (int e = common.prepare(); e != exit_code::ok) return e;
        return common.apply(cfg, listen);
    }
};

}  // namespace mailnet::net
