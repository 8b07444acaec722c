// main.cpp: the mailnetd program: a test mail server for developers and CI: SMTP in (RFC 5321,
// STARTTLS RFC 3207, implicit TLS RFC 8314) and POP3 out (RFC 1939, STLS RFC 2595) in one
// process, on one I/O thread and over one store. Command line: DESIGN.md; manual: docs/mailnetd.md.
#include <CLI/CLI.hpp>

#include <asio/awaitable.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "mailnet/auth/auth.hpp"
#include "mailnet/faults.hpp"
#include "mailnet/mailnetd/faults_json.hpp"
#include "mailnet/mailnetd/http_server.hpp"
#include "mailnet/mailnetd/index_sync.hpp"
#include "mailnet/mailnetd/mail_index.hpp"
#include "mailnet/net/cli.hpp"
#include "mailnet/net/program.hpp"
#include "mailnet/pop3d/server.hpp"
#include "mailnet/smtpd/cli.hpp"
#include "mailnet/smtpd/server.hpp"
#include "mailnet/store/postgresql.hpp"
#include "mailnet/store/store.hpp"
#include "mailnet/version.hpp"

namespace {

namespace net = mailnet::net;
namespace exit_code = mailnet::net::exit_code;

// After --exit-after's last message: how long open sessions get to end by themselves (the
// sender's QUIT after its 250) before the shutdown a first SIGTERM makes.
constexpr std::chrono::seconds exit_after_patience{3};

// "ADDR:PORT" of `ep` as a client on this machine reaches it (an unspecified address, 0.0.0.0
// or ::, through loopback).
std::string reachable(const asio::ip::tcp::endpoint& ep) {
    auto a = ep.address();
    if (a.is_unspecified()) a = a.is_v4() ? asio::ip::address(asio::ip::address_v4::loopback())
                                          : asio::ip::address(asio::ip::address_v6::loopback());
    const std::string host = a.is_v6() ? "[" + a.to_string() + "]" : a.to_string();
    return host + ":" + std::to_string(ep.port());
}

// The first plain listener of `service`, reachable(); empty if there is none.
std::string reachable(const net::service& s, const std::string& service) {
    for (const auto& l : s.listeners())
        if (l.service == service) return reachable(l.endpoint);
    return {};
}

// `text` as one word for sh: as it is when it holds only safe characters, else single-quoted.
std::string shell_word(const std::string& text) {
    const bool safe = !text.empty() && text.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                             "0123456789_./@%+=:,-") == std::string::npos;
    if (safe) return text;
    std::string out = "'";
    for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

// How to run pop3c from any directory: the one beside this program in a build tree
// (build/mailnetd/mailnetd, build/pop3c/pop3c) by its absolute path; otherwise the installed
// one on PATH.
std::string pop3c_command() {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return "pop3c";
    for (const fs::path& p : {self.parent_path().parent_path() / "pop3c" / "pop3c", self.parent_path() / "pop3c"}) {
        if (p.filename() != "pop3c" || !fs::is_regular_file(p, ec) || p == self) continue;
        return shell_word(p.lexically_normal().string());
    }
    return "pop3c";
}

// Open mode's first words for a person at a terminal (stderr, unless --quiet): commands that
// send a message and fetch it again, exactly as they work against this process.
void print_try_this(const net::service& smtp, const net::service& pop3, const std::string& store_dir,
                    const std::optional<net::bound_listener>& http) {
    const std::string s = reachable(smtp, "smtp"), p = reachable(pop3, "pop3");
    const std::string from = "me@example.org", to = "you@example.org";
    std::string out = "mailnetd: open mode: every recipient is accepted; a mailbox's POP3 login and password are "
                      "its address. Try:\n";
    if (!s.empty()) {
        out += "  swaks --server " + s + " --from " + from + " --to " + to + "\n";
        out += "  printf 'Subject: hello\\r\\n\\r\\nHello from curl.\\r\\n' | curl -sS smtp://" + s +
               " --mail-from " + from + " --mail-rcpt " + to + " -T -\n";
    }
    if (!p.empty()) {
        const auto colon = p.rfind(':');
        std::string host = p.substr(0, colon);  // "[::1]" as pop3c --host takes it too
        out += "  curl -sS -u " + to + ":" + to + " pop3://" + p + "/1\n";
        out += "  PW=" + to + " " + pop3c_command() + " fetch --stdout --keep --host " + host +
               " --port " + p.substr(colon + 1) + " --user " + to + " --password-env PW\n";
    }
    if (http) {
        const std::string api = "http://" + reachable(http->endpoint) + "/api/v1";
        out += "  curl -sS " + shell_word(api + "/wait?to=" + to + "&timeout=30") + "\n";
        out += "  curl -sS " + shell_word(api + "/messages") + "\n";
    }
    if (mailnet::is_postgresql_uri(store_dir)) {
        std::cerr << out << std::flush;
        return;
    }
    // new/ holds what no session has retrieved yet; a RETR moves a message to cur/ at QUIT.
    std::error_code ec;
    const auto root = std::filesystem::absolute(store_dir, ec);
    const auto box = (ec ? std::filesystem::path(store_dir) : root.lexically_normal()) / to;
    out += "  ls " + shell_word((box / "new").string()) + " " + shell_word((box / "cur").string()) + "\n";
    std::cerr << out << std::flush;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"mailnetd: a test mail server for developers and CI: SMTP in, POP3 and an HTTP API out, one\n"
                 "store (a Maildir, or PostgreSQL: docs/stores.md). The API (docs/mailnetd.md) lists, shows,\n"
                 "deletes and waits for mail.\n"
                 "Without --users every recipient is accepted and each mailbox's POP3 login and password\n"
                 "are its address (open mode, loopback only).",
                 "mailnetd"};
    app.set_version_flag("--version", "mailnetd (mailnet) " + std::string(mailnet::version()));
    net::listener_cli smtp_listen{{"smtp", "smtps", "SMTP", "STARTTLS", "127.0.0.1:2525"}, "--smtp", "--smtps"};
    net::listener_cli pop3_listen{{"pop3", "pop3s", "POP3", "STLS", "127.0.0.1:1100"}, "--pop3", "--pop3s"};
    // One --idle-timeout for both protocols: checked against POP3's minimum, the higher one.
    net::service_cli common{"mailnetd", 600, "RFC 1939 3; SMTP: 300 unless given", true};
    std::string store_dir = "./var/mail", users_file, http = "127.0.0.1:8025";
    bool no_http = false, open_network = false, quiet = false;
    std::uint64_t exit_after = 0;
    mailnet::smtp::limits lim;
    smtp_listen.add_to(app);
    pop3_listen.add_to(app);
    auto* http_opt = app.add_option("--http", http,
                                    "ADDR:PORT of the HTTP API (JSON under /api/v1, docs/mailnetd.md); port 0: any free\n"
                                    "port; loopback only unless --allow-open-network")
                         ->capture_default_str();
    app.add_flag("--no-http", no_http, "no HTTP API")->excludes(http_opt);
    app.add_option("--store", store_dir, "Maildir root: DIR/<mailbox>/{tmp,new,cur}; or postgresql://USER@HOST/DB (password in PGPASSWORD or ~/.pgpass; docs/stores.md)")->capture_default_str();
    app.add_option("--users", users_file,
                   "Dovecot passwd-file of full addresses: only they receive mail (others 550 5.1.1);\n"
                   "SMTP AUTH and POP3 logins are checked against it");
    common.add_to(app, "STARTTLS and STLS", "allow AUTH, USER/PASS and AUTH PLAIN without TLS from non-loopback peers");
    app.add_flag("--allow-open-network", open_network,
                 "without --users, listen on non-loopback addresses too; the HTTP API (no login) likewise,\n"
                 "and it then answers any Host and Origin (else loopback names only: 403)");
    app.add_option("--exit-after", exit_after, "exit 0 once N messages were accepted by SMTP (for CI)")
        ->check(CLI::PositiveNumber);
    app.add_flag("--quiet", quiet, "log errors and warnings only (no line per delivery and per POP3 session)");
    mailnet::smtp::add_limit_options(app, lim);
    app.footer("Prints 'tls-fingerprint sha256 HEX' (with --tls-self-signed), then 'listening smtp|smtps|pop3|pop3s|http\n"
               "ADDR:PORT' per listener once bound (stdout, flushed). SIGTERM/SIGINT: stop accepting, let\n"
               "the exchange in progress finish, close idle sessions, exit; a second signal closes every\n"
               "session at once.\n"
               "Exit codes: 0 ok (a signal, or --exit-after reached), 64 usage or configuration (a users\n"
               "file that does not parse too), 69 cannot listen (or a PostgreSQL schema newer than this\n"
               "program), 74 store or users file I/O, 75 the PostgreSQL store cannot be reached (try again).");
    if (auto done = net::parse_command_line(app, argc, argv)) return *done;
    auto log = mailnet::stderr_log(quiet ? mailnet::log_level::warning : mailnet::log_level::info);
    std::optional<net::listen_spec> http_listen;
    if (!no_http) {
        auto l = mailnet::net::parse_listen(http, "http", false);
        if (!l) {
            std::cerr << "mailnetd: bad --http " << http << ": want ADDR:PORT\n";
            return exit_code::usage;
        }
        http_listen = *l;
        // The API has no login and shows every mailbox: to this machine only, whatever the mode.
        if (!open_network) {
            if (int e = net::loopback_only("mailnetd", {*http_listen}, "the HTTP API has no login, so even with --users");
                e != exit_code::ok)
                return e;
        }
    }

    mailnet::smtp::server_config smtp_cfg;
    mailnet::pop3::server_config pop3_cfg;
    if (int e = common.prepare(); e != exit_code::ok) return e;
    if (int e = common.apply(smtp_cfg, smtp_listen); e != exit_code::ok) return e;
    if (int e = common.apply(pop3_cfg, pop3_listen); e != exit_code::ok) return e;
    // DESIGN.md "Rules": open mode takes mail for any address and shows any mailbox, so only
    // to this machine; both protocols' listeners are checked, with the command line's words.
    const bool open_mode = users_file.empty();
    if (open_mode && !open_network) {
        std::vector<net::listen_spec> all = smtp_cfg.listen;
        all.insert(all.end(), pop3_cfg.listen.begin(), pop3_cfg.listen.end());
        if (int e = net::loopback_only("mailnetd", all); e != exit_code::ok) return e;
    }

    int failed = exit_code::ok;
    std::shared_ptr<mailnet::authenticator> auth;
    if (open_mode) {
        auth = mailnet::make_open_authenticator();
    } else {
        auth = net::users_from_file("mailnetd", users_file, log, failed);
        if (!auth) return failed;
    }
    // One store object for both servers: its in-process lock table and group commit are shared.
    std::shared_ptr<mailnet::store> store = net::store_at("mailnetd", store_dir, log, failed);
    if (!store) return failed;
    const std::string hostname = net::host_name();
    // Fault injection (#15): one rule list for both servers, empty until set; the HTTP API's
    // GET/PUT/DELETE /api/v1/faults take this same object.
    const auto faults = std::make_shared<mailnet::fault_rules>(std::random_device{}());

    for (net::service_config* c : std::initializer_list<net::service_config*>{&smtp_cfg, &pop3_cfg}) {
        c->faults = faults;
        c->auth = auth;
        c->storage = store;
        c->hostname = hostname;
        c->log = log;
    }
    // Users mode: RCPT only for accounts, into the account's mailbox (resolve_recipient). Open
    // mode: every address into mailbox_for_address(address), which is also where the open
    // authenticator's POP3 login of that address leads.
    smtp_cfg.recipients_from_auth = !open_mode;
    smtp_cfg.allow_open_network = open_network;
    smtp_cfg.session_limits = lim;

    asio::io_context io;
    net::shutdown_on_signals* stopper = nullptr;  // set before io runs; used on io's thread only
    std::atomic<std::uint64_t> accepted{0};
    if (exit_after > 0) {
        smtp_cfg.on_delivered = [&](const mailnet::smtp::transaction_info&) {
            if (accepted.fetch_add(1) + 1 != exit_after) return;
            log(mailnet::log_level::info,
                "mailnetd: " + std::to_string(exit_after) + " messages accepted (--exit-after); stopping");
            asio::post(io, [&] {
                if (stopper) stopper->stop(exit_after_patience);
            });
        };
    }

    // The HTTP API: an index of the store kept by its events, served on the same io_context.
    mailnet::mailnetd::mail_index index;
    std::optional<mailnet::mailnetd::index_sync> sync;
    // A message is in the index (listed, its waits woken, its event sent) before its 250 goes
    // out: a test that got its 250 finds it through the API at once. Not while the index is
    // catching up (the start-up scan, a resync, a backlog of other front-ends' events), and at
    // most 2 s: the index is fed by one thread, and a slow one must not hold every sender.
    std::chrono::steady_clock::time_point slow_index_told{};  // on io's thread
    smtp_cfg.before_reply = [&](const mailnet::smtp::transaction_info&) -> asio::awaitable<void> {
        if (!sync || sync->behind()) co_return;
        struct gate {
            explicit gate(asio::io_context& io) : timer(io, std::chrono::seconds(2)) {}
            asio::steady_timer timer;
            bool done = false;  // both on io's one thread
        };
        auto g = std::make_shared<gate>(io);
        sync->after_pending([g] {
            g->done = true;
            g->timer.cancel();
        });
        if (!g->done) co_await g->timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
        if (!g->done && std::chrono::steady_clock::now() - slow_index_told > std::chrono::minutes(1)) {
            slow_index_told = std::chrono::steady_clock::now();
            log(mailnet::log_level::warning,
                "mailnetd: http: the index took over 2 s to take in a message; its 250 went out before it was listed");
        }
    };

    mailnet::smtp::server smtp(io, smtp_cfg);
    mailnet::pop3::server pop3(io, pop3_cfg);
    if (int e = net::start_servers("mailnetd", {&smtp, &pop3}); e != exit_code::ok) return e;
    std::optional<mailnet::mailnetd::http_server> api;
    std::optional<net::bound_listener> http_bound;
    if (http_listen) {
        sync.emplace(io, store, index, log);
        mailnet::mailnetd::http_config hc;
        hc.address = http_listen->address;
        hc.port = http_listen->port;
        hc.log = log;
        hc.any_host = open_network;
        // GET/PUT/DELETE /api/v1/faults: the servers' own rule list, through its JSON.
        hc.faults = mailnet::mailnetd::fault_endpoint{
            [faults] { return mailnet::mailnetd::fault_rules_json(faults->rules()); },
            [faults](std::string_view body) -> std::variant<std::string, mailnet::mailnetd::api_error> {
                auto parsed = mailnet::mailnetd::parse_fault_rules(body);
                if (auto* no = std::get_if<mailnet::mailnetd::faults_refusal>(&parsed))
                    return mailnet::mailnetd::api_error{400, no->message};
                if (auto problem = faults->replace(std::get<std::vector<mailnet::fault_rule>>(std::move(parsed)));
                    !problem.empty())
                    return mailnet::mailnetd::api_error{400, problem};
                return mailnet::mailnetd::fault_rules_json(faults->rules());
            },
            [faults] { faults->clear(); }};
        api.emplace(io, hc, store, index);
        auto ep = api->start();
        if (!ep) {
            std::cerr << "mailnetd: cannot listen on http " << http << "\n";
            return exit_code::unavailable;
        }
        http_bound = net::bound_listener{"http", *ep};
        sync->start();
    }
    if (!common.tls_fingerprint.empty()) std::printf("tls-fingerprint sha256 %s\n", common.tls_fingerprint.c_str());
    if (http_bound) std::printf("%s\n", net::listening_line(*http_bound).c_str());
    return net::run_until_signalled(io, {smtp.base(), pop3.base()}, [&](net::shutdown_on_signals& s) {
        stopper = &s;
        if (open_mode && !quiet) print_try_this(smtp, pop3, store_dir, http_bound);
    }, common.busy_poll());
}
