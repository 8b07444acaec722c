// mailnet_store.cpp: the mailnet-store program: `mailnet-store copy FROM TO` copies every
// mailbox of one store into another (a Maildir root, a postgresql:// URI) with identical bytes,
// UIDLs and seen flags kept where the target allows (docs/stores.md, "Copying a store").
#include <CLI/CLI.hpp>

#include <iostream>
#include <string>

#include "mailnet/net/cli.hpp"
#include "mailnet/net/program.hpp"
#include "mailnet/store/copy.hpp"
#include "mailnet/version.hpp"

namespace {

namespace net = mailnet::net;
namespace exit_code = mailnet::net::exit_code;

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"mailnet-store: tools for mailnet's stores (docs/stores.md).", "mailnet-store"};
    app.set_version_flag("--version", "mailnet-store (mailnet) " + std::string(mailnet::version()));
    app.require_subcommand(1);
    std::string from, to;
    bool quiet = false;
    auto* copy = app.add_subcommand(
        "copy",
        "copy every mailbox of FROM into TO: identical bytes; UIDLs and seen flags kept where TO's format allows;\n"
        "messages TO has already (same mailbox and UIDL) are skipped, so a cut copy is finished by running it again.\n"
        "FROM and TO: a Maildir root directory or a postgresql://USER@HOST/DB URI (password in PGPASSWORD or\n"
        "~/.pgpass). Each mailbox is copied under the POP3 lock of both stores.");
    copy->add_option("FROM", from, "the store to copy from")->required();
    copy->add_option("TO", to, "the store to copy into (created if missing)")->required();
    copy->add_flag("-q,--quiet", quiet, "print only errors (no line per mailbox)");
    if (auto done = net::parse_command_line(app, argc, argv)) return *done;
    auto log = mailnet::stderr_log(quiet ? mailnet::log_level::warning : mailnet::log_level::info);
    int failed = exit_code::ok;
    auto source = net::store_at("mailnet-store", from, log, failed);
    if (!source) return failed;
    auto target = net::store_at("mailnet-store", to, log, failed);
    if (!target) return failed;
    mailnet::copy_options options;
    options.log = log;
    auto r = mailnet::copy_store(*source, *target, options);
    if (!r) {
        std::cerr << "mailnet-store: copy stopped: " << r.error().message()
                  << " (what was copied stays; run the same command again to finish)\n";
        return r.error() == mailnet::make_error_code(mailnet::errc::mailbox_in_use) ||
                       r.error() == mailnet::make_error_code(mailnet::errc::temporary_failure)
                   ? exit_code::temporary
                   : exit_code::io_error;
    }
    std::cout << "copied " << r->copied << " messages (" << r->octets << " octets) in " << r->mailboxes << " mailboxes; "
              << r->already << " were there already; " << r->new_uidls << " got a UIDL of the target's own\n";
    return exit_code::ok;
}
