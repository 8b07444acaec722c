// smtpsink.cpp: "our smtpd with a null deliver" for bench/run smtp: mailnet_smtpd's server with no
// store and the default callbacks (accept every host, sender and recipient; deliver accepts and
// drops the message), the counterpart of Postfix's smtp-sink. Not a program anyone installs.
//   smtpsink [ADDR:PORT [BUSY_POLL_US]]   (default 127.0.0.1:0, and smtpd's --busy-poll default):
//   prints "listening smtp ADDR:PORT"; SIGTERM ends it
#include <asio/io_context.hpp>

#include <iostream>
#include <string>
#include <vector>

#include "mailnet/net/io_loop.hpp"
#include "mailnet/net/program.hpp"
#include "mailnet/smtpd/server.hpp"

int main(int argc, char** argv) {
    namespace net = mailnet::net;
    const std::string listen = argc > 1 ? argv[1] : "127.0.0.1:0";
    auto specs = net::listen_specs("smtpsink", "ADDR:PORT", {listen}, "smtp", false);
    if (!specs) return net::exit_code::usage;
    mailnet::smtp::server_config cfg;
    cfg.listen = std::move(*specs);
    cfg.storage = nullptr;  // no store: handler->deliver gets each message
    cfg.handler = nullptr;  // default callbacks: accept all, deliver drops
    cfg.hostname = "bench.example";
    cfg.log = mailnet::stderr_log();
    asio::io_context io;
    mailnet::smtp::server server(io, cfg);
    if (int e = net::start_servers("smtpsink", {&server}); e != net::exit_code::ok) return e;
    unsigned busy_poll = net::default_busy_poll_us;
    if (argc > 2) {
        const std::string given = argv[2];
        if (given.empty() || given.size() > 4 || given.find_first_not_of("0123456789") != std::string::npos ||
            std::stoul(given) > 1000) {
            std::cerr << "smtpsink: BUSY_POLL_US must be 0 to 1000\n";
            return net::exit_code::usage;
        }
        busy_poll = static_cast<unsigned>(std::stoul(given));
    }
    return net::run_until_signalled(io, {server.base()}, {}, std::chrono::microseconds{busy_poll});
}
