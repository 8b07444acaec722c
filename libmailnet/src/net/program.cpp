// program.cpp: the parts of a server program's main() every component shares (DESIGN.md
// "Command lines": listening lines, sysexits codes, signals).
#include "mailnet/net/program.hpp"

#include "mailnet/store/postgresql.hpp"


#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "mailnet/net/io_loop.hpp"
#include "mailnet/net/tls.hpp"

namespace mailnet::net {

std::optional<std::vector<listen_spec>> listen_specs(std::string_view program, std::string_view option,
                                                     const std::vector<std::string>& texts, const std::string& service,
                                                     bool implicit_tls) {
    std::vector<listen_spec> out;
    for (const auto& text : texts) {
        auto spec = parse_listen(text, service, implicit_tls);
        if (!spec) {
            std::cerr << program << ": bad " << option << " " << text << ": want ADDR:PORT\n";
            return std::nullopt;
        }
        out.push_back(std::move(*spec));
    }
    return out;
}

std::optional<std::shared_ptr<asio::ssl::context>> server_tls_from_files(std::string_view program,
                                                                         const std::filesystem::path& cert,
                                                                         const std::filesystem::path& key) {
    std::string why;
    auto ctx = make_server_tls({cert, key}, &why);
    if (!ctx) {
        std::cerr << program << ": TLS: " << why << "\n";
        return std::nullopt;
    }
    return *ctx;
}

std::unique_ptr<authenticator> users_from_file(std::string_view program, const std::filesystem::path& file,
                                               const log_sink& log, int& exit) {
    auto users = open_passwd_file({file, log});
    if (users) return std::move(*users);
    // The reason (and the line number, for a file that does not parse) is logged already.
    if (users.error() == errc::bad_config) {
        std::cerr << program << ": users file " << file.string() << " does not parse\n";
        exit = exit_code::usage;
    } else {
        std::cerr << program << ": cannot read users file " << file.string() << ": " << users.error().message() << "\n";
        exit = exit_code::io_error;
    }
    return nullptr;
}

std::shared_ptr<store> store_at(std::string_view program, const std::string& spec, const log_sink& log, int& exit) {
    if (is_postgresql_uri(spec)) {
        if (const auto why = postgresql_unavailable_reason(); !why.empty()) {
            // Without libpq's parser the URI may hold a password: only its scheme and host part.
            std::string shown = spec.substr(0, spec.find("://") + 3);
            std::string rest = spec.substr(shown.size());
            rest = rest.substr(0, rest.find_first_of("/?"));
            if (const auto at = rest.rfind('@'); at != std::string::npos) rest = rest.substr(at + 1);
            std::cerr << program << ": cannot use store " << shown << rest << "/...: PostgreSQL support cannot be loaded ("
                      << why << ")\n";
            exit = exit_code::unavailable;
            return nullptr;
        }
        if (uri_has_password(spec)) {
            std::cerr << program << ": --store: a password does not belong on the command line (other users see it); "
                                    "give it in PGPASSWORD or ~/.pgpass\n";
            exit = exit_code::usage;
            return nullptr;
        }
        postgresql_options o;
        o.uri = spec;
        o.log = log;
        auto s = open_postgresql_store(std::move(o));
        if (s) return std::move(*s);
        const bool newer = s.error() == make_error_code(errc::bad_config);
        const bool refused = s.error() == make_error_code(errc::bad_input);
        std::cerr << program << ": cannot use store " << spec << ": "
                  << (newer     ? "its schema is newer than this program (see the log above)"
                      : refused ? "the URI's options weaken what the store needs (see the log above)"
                                : "the database cannot be reached or refused the store's set-up (see the log above)")
                  << "\n";
        exit = newer ? exit_code::unavailable : refused ? exit_code::usage : exit_code::temporary;
        return nullptr;
    }
    maildir_options o;
    o.root = spec;
    o.log = log;
    auto s = open_maildir_store(o);
    if (s) return std::move(*s);
    std::cerr << program << ": cannot use store " << spec << ": " << s.error().message() << "\n";
    exit = exit_code::io_error;
    return nullptr;
}

int loopback_only(std::string_view program, const std::vector<listen_spec>& listeners, std::string_view why) {
    for (const auto& l : listeners)
        if (!is_loopback(l)) {
            std::cerr << program << ": " << why << " only loopback addresses may listen (" << l.address
                      << "); add --allow-open-network\n";
            return exit_code::usage;
        }
    return exit_code::ok;
}

std::string host_name() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
    return buf;
}

int start_servers(std::string_view program, const std::vector<service*>& servers) {
    raise_fd_limit();
    for (auto* s : servers) {
        if (auto r = s->up(); !r) {
            if (r.error() == errc::bad_config) return exit_code::usage;  // the reason is logged
            // server::up() logged the address and the system's reason ("Address already in use").
            std::cerr << program << ": cannot listen (the line above says why)\n";
            return exit_code::unavailable;
        }
    }
    return exit_code::ok;
}

int run_until_signalled(asio::io_context& io, const std::vector<std::shared_ptr<server>>& servers,
                        const std::function<void(shutdown_on_signals&)>& on_running,
                        std::chrono::microseconds busy_poll) {
    for (const auto& s : servers)
        for (const auto& l : s->listeners()) std::printf("%s\n", listening_line(l).c_str());
    std::fflush(stdout);
    shutdown_on_signals signals(io, servers, [&io] { io.stop(); });
    if (on_running) on_running(signals);
    run_io(io, usable_busy_poll(busy_poll));
    return exit_code::ok;
}

}  // namespace mailnet::net
