// mailnet/smtpd/cli.hpp: the SMTP options of the programs that run an SMTP server (smtpd,
// mailnetd; DESIGN.md "Command lines" and "Limits"), on CLI11. Header-only, needs CLI11.
#pragma once

#include <CLI/CLI.hpp>

#include "mailnet/smtpd/session.hpp"

namespace mailnet::smtp {

/// Adds --max-message-size (RFC 1870 SIZE) and --max-recipients (RFC 5321 4.5.3.1.8) to `app`,
/// parsed into `lim`.
inline void add_limit_options(CLI::App& app, limits& lim) {
    app.add_option("--max-message-size", lim.max_message_octets, "octets, announced in SIZE (larger: 552)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--max-recipients", lim.max_recipients, "per message (more: 452 4.5.3)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
}

}  // namespace mailnet::smtp
