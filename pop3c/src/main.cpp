// main.cpp: the pop3c program: a POP3 fetcher (fetch into a Maildir, an mbox or stdout, deleting
// on the server only what is durable locally) and one command per client call. Command line:
// DESIGN.md "Command lines"; manual: docs/pop3c.md.
#include <CLI/CLI.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "mailnet/log.hpp"
#include "mailnet/net/program.hpp"
#include "mailnet/net/server.hpp"
#include "mailnet/posix_io.hpp"
#include "mailnet/pop3c/client.hpp"
#include "mailnet/version.hpp"
#include "arguments.hpp"
#include "sinks.hpp"
#include "state_file.hpp"

namespace {

namespace exit_code = mailnet::net::exit_code;
using namespace mailnet::pop3c;

// sysexits code for a failure (DESIGN.md "Command lines").
int exit_for(const failure& f) {
    const auto& e = f.error;
    if (e == make_error_code(errc::server_error) || e == make_error_code(errc::mailbox_refused)) {
        if (f.code == "IN-USE" || f.code == "SYS/TEMP" || f.code == "LOGIN-DELAY") return exit_code::temporary;
        if (e == make_error_code(errc::mailbox_refused)) return f.code == "AUTH" ? exit_code::denied : exit_code::unavailable;
        if (f.code == "AUTH") return exit_code::denied;
        return exit_code::protocol;
    }
    if (e == make_error_code(errc::no_such_message) || e == make_error_code(errc::bad_index)) return exit_code::usage;
    if (e == make_error_code(errc::stopped)) return exit_code::io_error;  // our own output failed
    if (e == make_error_code(errc::plaintext_refused) || e == make_error_code(mailnet::errc::tls_error)) return exit_code::denied;
    if (e == make_error_code(errc::tls_unavailable) || e == make_error_code(errc::no_mechanism)) return exit_code::unavailable;
    if (e == make_error_code(errc::protocol_error) || e == make_error_code(errc::closed)) return exit_code::protocol;
    // A message past twice options::max_message_octets (one past it alone is refused, skipped).
    if (e == make_error_code(mailnet::errc::timed_out) || e == make_error_code(mailnet::errc::too_large))
        return exit_code::temporary;
    if (e == make_error_code(mailnet::errc::bad_config)) return exit_code::usage;
    return exit_code::unavailable;  // resolving, connecting
}

// "HOST:PORT" once the session is open: failures from then on name the server.
std::string session_server;

int fail(const failure& f, std::string_view what) {
    std::cerr << "pop3c: " << what << (session_server.empty() ? "" : " on " + session_server) << ": " << f.message() << "\n";
    return exit_for(f);
}

// The first line of a password file, without its LF: at most max_password_line octets, within
// `timeout` (a pipe, `<(pass show mail)`, or a FIFO whose writer never writes; /dev/zero), so a
// bad file is a clear error, never a hang or unbounded memory.
constexpr std::size_t max_password_line = 4096;
// On failure: nullopt and `why` (and `timed_out` when nothing came within the timeout).
std::optional<std::string> first_line_of(const std::string& file, std::chrono::seconds timeout, std::string& why,
                                         bool& timed_out) {
    const auto unexpected = [&](std::string text) -> std::optional<std::string> {
        why = std::move(text);
        return std::nullopt;
    };
    const int fd = ::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return unexpected("cannot read " + file + ": " + std::strerror(errno));
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } guard{fd};
    const auto too_long = [&] {
        return unexpected("the first line of " + file + " is longer than " + std::to_string(max_password_line) + " octets");
    };
    const auto end = std::chrono::steady_clock::now() + timeout;
    std::string line;
    char buf[512];
    for (;;) {
        // poll before each read: a FIFO no writer has opened yet reads as EOF, while poll waits
        // for its writer (and says POLLHUP once one has come and gone); a file is always ready.
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            timed_out = true;
            return unexpected("nothing to read from " + file + " within " + std::to_string(timeout.count()) + " s (--timeout)");
        }
        pollfd p{fd, POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
        if (ready < 0 && errno != EINTR) return unexpected("cannot read " + file + ": " + std::strerror(errno));
        if (ready <= 0) continue;
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            const std::string_view got(buf, static_cast<std::size_t>(n));
            const auto lf = got.find('\n');
            line.append(got.substr(0, lf));
            if (line.size() > max_password_line + 1) return too_long();  // one more: a CR the caller removes
            if (lf != std::string_view::npos) return line.size() - (line.back() == '\r' ? 1 : 0) > max_password_line ? too_long() : line;
        } else if (n == 0) {
            if (line.empty()) return unexpected("cannot read " + file + ": it is empty");
            if (line.size() - (line.back() == '\r' ? 1 : 0) > max_password_line) return too_long();
            return line;  // a last line without LF
        } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
            return unexpected("cannot read " + file + ": " + std::strerror(errno));
        }
    }
}

// The password: from an environment variable, a file's first line, or a prompt on the terminal.
// None: `code` says why (usage; temporary for a password file that gave nothing in time).
std::optional<std::string> read_password(const std::string& env, const std::string& file, const std::string& user,
                                         const std::string& host, std::chrono::seconds timeout, int& code) {
    code = exit_code::usage;
    if (!env.empty()) {
        const char* v = std::getenv(env.c_str());
        if (v == nullptr) {
            std::cerr << "pop3c: --password-env: " << env << " is not set\n";
            return std::nullopt;
        }
        return std::string(v);
    }
    if (!file.empty()) {
        std::string why;
        bool timed_out = false;
        auto first = first_line_of(file, timeout, why, timed_out);
        if (!first) {
            std::cerr << "pop3c: --password-file: " << why << "\n";
            if (timed_out) code = exit_code::temporary;
            return std::nullopt;
        }
        std::string line = std::move(*first);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) {
            std::cerr << "pop3c: --password-file: the first line of " << file << " is empty\n";
            return std::nullopt;
        }
        return line;
    }
    FILE* tty = std::fopen("/dev/tty", "r+");
    if (tty == nullptr) {
        std::cerr << "pop3c: no terminal to ask for the password: use --password-env or --password-file\n";
        return std::nullopt;
    }
    std::fprintf(tty, "Password for %s@%s: ", user.c_str(), host.c_str());
    std::fflush(tty);
    termios old{};
    const bool echo_off = tcgetattr(fileno(tty), &old) == 0;
    if (echo_off) {
        termios quiet = old;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
    }
    char buf[1024];
    const bool got = std::fgets(buf, sizeof buf, tty) != nullptr;
    if (echo_off) tcsetattr(fileno(tty), TCSAFLUSH, &old);
    std::fprintf(tty, "\n");
    std::fclose(tty);
    if (!got) return std::nullopt;
    std::string p(buf);
    while (!p.empty() && (p.back() == '\n' || p.back() == '\r')) p.pop_back();
    return p;
}

// Messages, octets and rate on a terminal (at most ten redraws a second).
class progress {
public:
    progress(bool show, std::size_t total) : show_(show), total_(total) {}
    void add(std::uint64_t octets) {
        ++messages_;
        octets_ += octets;
        const auto now = clock::now();
        if (show_ && (now - drawn_ > std::chrono::milliseconds(100) || messages_ == total_)) {
            drawn_ = now;
            std::fprintf(stderr, "\r%zu/%zu messages, %.1f MiB, %.0f msg/s   ", messages_, total_,
                         static_cast<double>(octets_) / (1 << 20), rate());
            std::fflush(stderr);
        }
    }
    void done() const {
        if (show_ && messages_ > 0) std::fprintf(stderr, "\n");
    }
    double seconds() const { return std::chrono::duration<double>(clock::now() - start_).count(); }
    double rate() const { return seconds() > 0 ? static_cast<double>(messages_) / seconds() : 0; }
    std::size_t messages() const { return messages_; }
    std::uint64_t octets() const { return octets_; }

private:
    using clock = std::chrono::steady_clock;
    bool show_;
    std::size_t total_;
    std::size_t messages_ = 0;
    std::uint64_t octets_ = 0;
    clock::time_point start_ = clock::now();
    clock::time_point drawn_{};
};

// Streams retrieved messages into a sink; remembers which completed (if `remember`: for the
// state file and DELE).
class sink_handler final : public retrieval_handler {
public:
    sink_handler(message_sink& sink, progress& meter, bool remember) : sink_(sink), meter_(meter), remember_(remember) {}
    std::vector<std::uint32_t> completed;
    std::vector<std::string> locators;  // completed[i]'s sink locator
    std::optional<std::string> local_error;
    std::size_t refused_count = 0;

    bool begin(std::uint32_t, std::optional<std::uint64_t> hint) override {
        auto m = sink_.begin(hint.value_or(0));
        if (!m) return stop("cannot start a local message: " + m.error().message());
        msg_ = std::move(*m);
        return true;
    }
    bool data(std::uint32_t, std::string_view octets) override {
        if (auto r = msg_->write(octets); !r) return stop("writing a message: " + r.error().message());
        return true;
    }
    bool end(std::uint32_t n, std::uint64_t octets) override {
        if (auto r = msg_->complete(); !r) return stop("storing a message: " + r.error().message());
        if (remember_) {
            locators.push_back(msg_->locator());
            completed.push_back(n);
        }
        msg_.reset();
        meter_.add(octets);
        return true;
    }
    // The message being written when retrieval stopped (a dropped connection) is dropped:
    // flushed are only the completed ones.
    void drop_open() {
        if (msg_) msg_->abort();
        msg_.reset();
    }
    void refused(std::uint32_t n, const failure& why) override {
        if (msg_) {
            msg_->abort();  // too large: what was written of it goes
        } else {
            sink_.expect_fewer(1);  // never begun: no file is wanted for it
        }
        msg_.reset();
        ++refused_count;
        std::cerr << "pop3c: message " << n << " not retrieved: " << why.message() << "\n";
    }

private:
    bool stop(std::string why) {
        if (msg_) msg_->abort();
        msg_.reset();
        local_error = std::move(why);
        return false;
    }
    message_sink& sink_;
    progress& meter_;
    bool remember_;
    std::unique_ptr<sink_message> msg_;
};

// Whether two paths name one file: the same device and inode where both exist, else the same
// path once made absolute and normal with every link that exists resolved.
// A link whose target does not exist yet counts as that target.
std::filesystem::path link_target(std::filesystem::path p) {
    std::error_code ec;
    for (int hops = 0; hops < 40 && std::filesystem::is_symlink(p, ec); ++hops) {
        const auto t = std::filesystem::read_symlink(p, ec);
        if (ec) break;
        p = t.is_absolute() ? t : p.parent_path() / t;
    }
    return p;
}

bool same_file(const std::filesystem::path& a, const std::filesystem::path& b) {
    std::error_code ec;
    if (std::filesystem::equivalent(a, b, ec) && !ec) return true;
    const auto ca = std::filesystem::weakly_canonical(link_target(a), ec);
    if (ec) return false;
    const auto cb = std::filesystem::weakly_canonical(link_target(b), ec);
    return !ec && ca == cb;
}

// Where the UIDL state lives when deleting without --state: one file per account.
std::filesystem::path default_state_path(const std::string& user, const std::string& host, std::uint16_t port) {
    std::filesystem::path base;
    if (const char* x = std::getenv("XDG_STATE_HOME"); x != nullptr && *x != '\0')
        base = x;
    else if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0')
        base = std::filesystem::path(h) / ".local" / "state";
    else
        base = ".";
    std::string name = user + "@" + host + "_" + std::to_string(port);
    for (char& c : name)
        if (c == '/' || c == '\0') c = '_';
    return base / "mailnet-pop3c" / (name + ".state");
}

struct fetch_options {
    std::string maildir, mbox;
    bool to_stdout = false, keep = false, new_only = false, quiet = false;
    std::string state;
    std::size_t batch_messages = 256;
    std::uint64_t batch_octets = 64ull << 20;
    std::size_t open_ahead = 64;  // Maildir files opened ahead at most (the descriptors left for them)
};

// The UIDL state: asked for (--new-only, --state), or needed so that a run cut between storing
// and deleting never fetches a message twice (deleting without --keep).
bool use_state_for(const fetch_options& f) { return f.new_only || !f.keep || !f.state.empty(); }

// Loads the UIDL state a fetch uses (use_state_for) and binds it to the account, before any
// password prompt, connection or local change: a file kept for another account stops the run
// here (exit 64), as does one that cannot be read (74). 0 when `out` holds the state or none
// is used.
int open_state(const fetch_options& f, const std::string& user, const std::string& host, std::uint16_t port,
               std::optional<state_file>& out) {
    if (!use_state_for(f)) return exit_code::ok;
    std::filesystem::path path = f.state.empty() ? default_state_path(user, host, port) : std::filesystem::path(f.state);
    // A link is followed: its target is the file replaced at each save, the link stays.
    if (std::error_code ec; std::filesystem::is_symlink(path, ec)) path = link_target(path);
    if (f.state.empty() && path.has_parent_path()) {
        // Made durably (each new directory fsync'd in its parent): the state file's own save
        // fsyncs only the directory it is in, and a power cut that took a directory above it
        // after a first run deleted mail would fetch it all again.
        if (auto made = mailnet::posix::make_dirs(path.parent_path(), true); !made)
            return std::cerr << "pop3c: state directory " << path.parent_path() << ": " << made.error().message() << "\n",
                   exit_code::io_error;
    }
    auto s = state_file::load(path, mailnet::stderr_log());
    if (!s && s.error() == make_error_code(mailnet::errc::mailbox_in_use))
        return std::cerr << "pop3c: state " << path << ": another pop3c run is using it; try again when it ends\n",
               exit_code::temporary;
    if (!s) return std::cerr << "pop3c: state " << path << ": " << s.error().message() << "\n", exit_code::io_error;
    // Its UIDLs are one server's: another account's file would make --new-only skip mail
    // never fetched here, and retain_only() forget that account's records.
    const std::string account = state_file::account_of(user, host, port);
    if (auto b = s->bind(account); !b) {
        std::cerr << "pop3c: state " << path << ": kept for " << s->account() << ", not for " << account
                  << ". If both name the same mailbox (another host name, port or spelling), edit its '# account' "
                     "line; else give each account its own --state file\n";
        return exit_code::usage;
    }
    out.emplace(std::move(*s));
    return exit_code::ok;
}

// The mbox sink's spool for a fetch that keeps `state` (docs/pop3c.md).
std::filesystem::path spool_of(const state_file& state) { return state.path().string() + ".spool"; }

// The files a state keeps beside itself: FILE.tmp (written, then renamed over FILE, at each
// save), FILE.lock (held for the run) and the mbox sink's FILE.spool. Mail written to one of
// them would be truncated, renamed away or cut by the state's own work.
std::vector<std::filesystem::path> state_companions(const state_file& state) {
    const std::string name = state.path().string();
    return {name + ".tmp", name + ".lock", spool_of(state)};
}

int fetch(client& c, const fetch_options& f, std::optional<state_file> state) {
    auto log = mailnet::stderr_log();
    std::unique_ptr<message_sink> sink;
    if (!f.maildir.empty()) {
        maildir_sink_options mo;
        // Nothing of a batch reaches new/ before its locators are in the state file as
        // pending: a run killed at any moment neither loses nor duplicates a message.
        mo.defer_commits = use_state_for(f);
        mo.max_outstanding = f.batch_messages;  // open descriptors: as many as a batch may hold (see --batch)
        mo.open_ahead = f.open_ahead;
        // (with defer_commits the batches bound them: two at once, one flushing, one retrieved)
        auto s = open_maildir_sink(f.maildir, log, mo);
        if (!s) return std::cerr << "pop3c: --maildir " << f.maildir << ": " << s.error().message() << "\n", exit_code::io_error;
        sink = std::move(*s);
    } else if (!f.mbox.empty()) {
        mbox_sink_options mo;
        // With a state file nothing of a batch reaches the mbox before its locators are in it
        // as pending (as with the Maildir); without one nothing is recorded to wait for.
        mo.hold_batches = state.has_value();
        // Beside the state file (which this run writes): what a killed run left in it tells
        // the part of a batch it was appending from other mail (docs/pop3c.md).
        if (state) mo.spool = spool_of(*state);
        auto s = open_mbox_sink(f.mbox, log, mo);
        if (!s) {
            std::cerr << "pop3c: --mbox " << f.mbox << ": " << s.error().message() << "\n";
            return s.error() == make_error_code(mailnet::errc::mailbox_in_use) ? exit_code::temporary : exit_code::io_error;
        }
        sink = std::move(*s);
    } else {
        sink = make_stream_sink(stdout);
    }
    std::vector<unique_id> uids;
    if (state) {
        const std::filesystem::path& path = state->path();
        // A run cut off between a flush and its state save left pending records: what the
        // sink holds counts as stored (deleted below, never fetched again); the rest is
        // fetched again.
        // What a run cut off while it appended left in the sink (the mbox's part of a batch,
        // even one of messages without a record) is dealt with first.
        auto pending = state->take_pending();
        std::vector<std::string> locators;
        for (const auto& p : pending) locators.push_back(p.locator);
        if (auto rc = sink->recover(locators); !rc)
            return std::cerr << "pop3c: looking for what an interrupted run left: " << rc.error().message() << "\n",
                   exit_code::io_error;
        std::size_t held = 0;
        for (auto& p : pending) {
            if (!sink->holds(p.locator)) continue;
            (void)state->add(p.uid, p.size);
            ++held;
        }
        // Written once before anything is fetched: a state file that cannot be written fails
        // now, not after a batch was stored (which the next run would store again).
        if (auto sv = state->save(); !sv)
            return std::cerr << "pop3c: state " << path << ": " << sv.error().message() << "\n", exit_code::io_error;
        if (!pending.empty() && !f.quiet)
            std::cerr << "pop3c: " << held << " messages of an interrupted run were already stored\n";
        auto u = c.uidl();
        if (!u) {
            // A refusal that says it is for now ([SYS/TEMP], [IN-USE], [LOGIN-DELAY]) is a
            // temporary failure (75), to be tried again; any other -ERR: no UIDL (69).
            if (u.error() != make_error_code(errc::server_error) || exit_for(u.why()) == exit_code::temporary)
                return fail(u.why(), "UIDL");
            std::cerr << "pop3c: the server has no UIDL, which --new-only and deleting need (use --keep): "
                      << u.why().message() << "\n";
            return exit_code::unavailable;
        }
        uids = std::move(*u);
    }
    std::unordered_map<std::uint32_t, std::string> uid_of;
    for (auto& u : uids) uid_of.emplace(u.number, std::move(u.uid));
    if (!f.keep) {
        // A UIDL given to two messages (RFC 1939 allows it for identical copies) is no proof
        // that the second is stored because the first is: those messages are fetched and
        // deleted in this run without a record, as messages without a UIDL are.
        std::unordered_map<std::string, std::size_t> uses;  // owned keys: uid_of's are erased below
        for (const auto& [n, uid] : uid_of) ++uses[uid];
        std::size_t shared = 0;
        std::erase_if(uid_of, [&](const auto& e) { return uses.at(e.second) > 1 && ++shared; });
        if (shared > 0 && !f.quiet)
            std::cerr << "pop3c: the server gives " << shared << " messages a UIDL another message has too: "
                      << "they are fetched and deleted without a record\n";
    }
    // What to fetch, and what is already here (stored by an earlier run that was cut off
    // before it could delete): the latter is deleted (unless --keep), never fetched again.
    std::vector<std::pair<std::uint32_t, std::uint64_t>> todo;
    std::vector<std::uint32_t> already;
    // NOTE: the list is LIST's, not 1 to STAT's count: a count the server does not back with
    // lines (4,000,000,000) must not size anything here.
    auto sizes = c.list();
    if (!sizes) return fail(sizes.why(), "LIST");
    {
        // Each number once, within STAT's count: a LIST that names one twice would have it
        // stored twice (RFC 1939: one line per message).
        std::unordered_set<std::uint32_t> seen;
        for (const auto& l : *sizes)
            if (l.number < 1 || l.number > c.count() || !seen.insert(l.number).second)
                return fail(failure{make_error_code(errc::protocol_error),
                                    "LIST names message " + std::to_string(l.number) +
                                        (l.number < 1 || l.number > c.count() ? " of " + std::to_string(c.count()) : " twice"),
                                    {}},
                            "LIST");
    }
    // RFC 1939 7: UIDL names every message. With --keep one left out would have no record:
    // fetched again on every --new-only run. (Without it, such a message is fetched and deleted
    // without a record, as one whose UIDL another message shares.) With --keep, uid_of still
    // holds every number the listing named (shared UIDLs are dropped only without it).
    if (state && f.keep)
        for (const auto& l : *sizes)
            if (!uid_of.contains(l.number))
                return fail(failure{make_error_code(errc::protocol_error),
                                    "the UIDL listing leaves out message " + std::to_string(l.number) + ", which LIST names",
                                    {}},
                            "UIDL");
    std::unordered_map<std::uint32_t, std::uint64_t> size_of;  // LIST's, recorded with each UIDL
    std::size_t reused = 0;
    for (const auto& l : *sizes) {
        const auto it = uid_of.find(l.number);
        size_of.emplace(l.number, l.octets);
        // Deleting unread on a record's word (without --keep) also asks for the size recorded:
        // a UIDL recorded for a message of another size may be the server's giving an old UIDL
        // to new mail (RFC 1939 7: it never should), so that message is fetched first (a
        // duplicate at worst: a server whose LIST sizes change, as Dovecot's fast size lookups
        // do, has it stored twice). With --keep the skip asks for the UIDL alone: there a
        // changing size would fetch everything again, run after run.
        const bool recorded = state && it != uid_of.end() && state->contains(it->second);
        const bool stored = recorded && (f.keep || state->holds(it->second, l.octets));
        if (recorded && !stored) ++reused;
        if (stored && (f.new_only || !f.keep)) {
            already.push_back(l.number);
            continue;
        }
        todo.emplace_back(l.number, l.octets);
    }
    if (reused > 0 && !f.quiet)
        std::cerr << "pop3c: " << reused << (reused == 1 ? " message has" : " messages have")
                  << " the UIDL of a stored message of another size: fetched before being deleted\n";
    // Without a state file (so --keep) nothing is recorded or deleted: the whole list is one
    // batch, pipelined throughout, and one flush at the end (the Maildir sink commits in
    // groups meanwhile, within its own bound). Its size is LIST's, what the server sent.
    const std::size_t batch_messages = state ? f.batch_messages : todo.size();
    const std::uint64_t batch_octets = state ? f.batch_octets : ~std::uint64_t{0};
    progress meter(!f.quiet && isatty(STDERR_FILENO) && f.maildir.size() + f.mbox.size() > 0, todo.size());
    sink->expect(todo.size());
    std::size_t deleted = 0, refused = 0;
    std::size_t dele_refused = 0;
    std::vector<std::string> still_on_server;  // records kept at the end: DELEs the server refused
    if (!f.keep && !already.empty()) {
        // Stored by an earlier run; a server that refuses to delete one does not stop the fetch.
        if (auto r = c.remove_each(already); !r) {
            if (r.error() != make_error_code(errc::server_error)) return fail(r.why(), "DELE");
            std::cerr << "pop3c: deleting messages stored by an earlier run: " << r.why().message() << "\n";
            ++dele_refused;
            // Which DELE was refused is not told apart: every record of them stays, so the
            // next run deletes what is still there rather than fetching it again.
            for (const auto n : already)
                if (const auto it = uid_of.find(n); it != uid_of.end()) still_on_server.push_back(it->second);
        } else {
            deleted += already.size();
        }
    }
    // Batch after batch: retrieved (pipelined), recorded as pending, made durable, recorded as
    // stored, deleted. A batch's flush runs while the next batch is retrieved (the Maildir
    // sink's committer makes it durable meanwhile); once both are done, one state save records
    // the flushed batch as stored and the new one as pending, and only then is the flushed one
    // deleted and the new one's flush started. So at every moment a message is recorded as
    // pending before it can reach new/, and as stored (then deleted) only after its flush.
    // A sink that flushes in start_flush() (mbox, stdout) has its batch settled (stored,
    // deleted) before the next one is retrieved: a cut run then repeats at most one batch.
    std::size_t at = 0;
    std::optional<std::vector<std::uint32_t>> flushing;  // the batch whose flush runs: what it completed
    // A server that broke the protocol (octets no command asked for, a reply where none was
    // due) may have had one reply taken for another's: a message stored under the wrong UIDL,
    // a forged one. Nothing this run recorded is trusted then: it is forgotten, so the next run
    // fetches it again (a copy may be stored twice) and deletes nothing on its strength; no
    // QUIT is sent, so nothing is deleted now either.
    std::vector<std::string> recorded;  // the UIDLs this run recorded, pending or stored
    auto distrust = [&](const failure& why) {
        if (!state || why.error != make_error_code(errc::protocol_error) || recorded.empty()) return true;
        state->forget(recorded);
        if (auto sv = state->save(); !sv) {
            std::cerr << "pop3c: saving the state " << state->path() << ": " << sv.error().message()
                      << ": its records of this run must not be trusted: remove them by hand\n";
            return false;
        }
        std::cerr << "pop3c: the server broke the protocol: the " << recorded.size()
                  << " messages of this run are fetched again next run, none is deleted on its strength\n";
        return true;
    };
    bool settle_first = false;  // the flush is done already: settle it before the next retrieval
    for (;;) {
        std::optional<sink_handler> h;
        outcome<void> r;
        if (!settle_first && at < todo.size()) {
            // A batch: bounded in messages and octets.
            std::vector<std::uint32_t> batch;
            std::uint64_t octets = 0;
            while (at < todo.size() && batch.size() < batch_messages && (batch.empty() || octets < batch_octets)) {
                batch.push_back(todo[at].first);
                octets += todo[at].second;
                ++at;
            }
            h.emplace(*sink, meter, state.has_value() || !f.keep);
            r = c.retrieve_each(batch, *h);
            refused += h->refused_count;
        }
        // The batch before: its flush ends now. A failure keeps it on the server (its records
        // stay pending: the next run looks for them in the sink).
        // QUIT only after the flush, whatever is kept: a server may expire what was retrieved
        // at QUIT (RFC 2449 EXPIRE).
        bool stored_before = false;
        if (flushing) {
            if (const auto flushed = sink->finish_flush(); !flushed) {
                meter.done();
                std::cerr << "pop3c: making messages durable: " << flushed.error().message()
                          << " (nothing of this batch is deleted)\n";
                return exit_code::io_error;
            }
            if (state && !flushing->empty()) {
                for (auto& p : state->take_pending()) (void)state->add(p.uid, p.size);
                stored_before = true;
            }
        }
        // A batch during which the server broke the protocol is not recorded at all (below).
        const bool broken = h && !r && r.error() == make_error_code(errc::protocol_error);
        // What was written of this batch is recorded as pending before its flush, so that a
        // run cut off after the flush finds it again (sink->holds) instead of fetching it twice.
        bool pending_now = false;
        if (h && state && !h->completed.empty() && !broken) {
            for (std::size_t i = 0; i < h->completed.size(); ++i) {
                const auto it = uid_of.find(h->completed[i]);
                if (it != uid_of.end()) {
                    const auto sz = size_of.find(h->completed[i]);
                    (void)state->add_pending(it->second, h->locators[i],
                                             sz == size_of.end() ? state_file::unknown_size : sz->second);
                    recorded.push_back(it->second);
                }
            }
            pending_now = true;
        }
        if (stored_before || pending_now) {
            if (auto sv = state->save(); !sv) {
                meter.done();
                std::cerr << "pop3c: saving the state " << state->path() << ": " << sv.error().message()
                          << " (nothing of this batch is deleted)\n";
                return exit_code::io_error;
            }
        }
        if (broken) {
            // Not flushed: the Maildir sink drops the batch's files (never linked), the mbox
            // sink its spool (never appended; with no state file nothing waits in one).
            meter.done();
            if (!distrust(r.why())) return exit_code::io_error;
            return fail(r.why(), "RETR");
        }
        if (h && (h->local_error || !r)) {
            // What this batch completed before the failure is still stored (never deleted).
            h->drop_open();
            sink->start_flush();
            if (const auto flushed = sink->finish_flush(); !flushed) {
                meter.done();
                if (h->local_error) std::cerr << "pop3c: " << *h->local_error << "\n";
                if (!r) std::cerr << "pop3c: RETR: " << r.why().message() << "\n";
                std::cerr << "pop3c: making messages durable: " << flushed.error().message()
                          << " (nothing of this batch is deleted)\n";
                return exit_code::io_error;
            } else if (pending_now) {
                for (auto& p : state->take_pending()) (void)state->add(p.uid, p.size);
                if (auto sv = state->save(); !sv) {
                    // The records stay pending (the next run finds the messages in the sink):
                    // nothing lost, but a state that could not be written is a local I/O failure.
                    meter.done();
                    if (h->local_error) std::cerr << "pop3c: " << *h->local_error << "\n";
                    if (!r) std::cerr << "pop3c: RETR: " << r.why().message() << "\n";
                    std::cerr << "pop3c: saving the state " << state->path() << ": " << sv.error().message()
                              << " (nothing of this batch is deleted)\n";
                    return exit_code::io_error;
                }
            }
        }
        if (h && h->local_error) {
            meter.done();
            std::cerr << "pop3c: " << *h->local_error << " (nothing of this batch is deleted on the server)\n";
            return exit_code::io_error;
        }
        if (h && !r) {
            meter.done();
            return fail(r.why(), "RETR");
        }
        // This batch's flush starts (its records are saved as pending), then the batch before
        // is deleted while it runs.
        std::optional<std::vector<std::uint32_t>> flushed = std::exchange(flushing, std::nullopt);
        if (h) {
            sink->start_flush();
            flushing = std::move(h->completed);
        }
        if (stored_before && !f.keep) {
            if (auto d = c.remove_each(*flushed); !d) {
                meter.done();
                if (!distrust(d.why())) return exit_code::io_error;
                return fail(d.why(), "DELE");
            }
            deleted += flushed->size();
        }
        if (!h) {
            if (settle_first && at < todo.size()) {
                settle_first = false;
                continue;
            }
            break;
        }
        settle_first = !sink->flushes_in_background();
    }
    meter.done();
    if (auto q = c.close(); !q) {
        if (!distrust(q.why())) return exit_code::io_error;
        return fail(q.why(), deleted > 0 ? "QUIT (the deletions may not have been carried out: the next run deletes what is still there)" : "QUIT");
    }
    bool saved = true;
    if (state) {
        // Forget what the server no longer has, so the file does not grow forever: without
        // --keep every stored message was deleted now; with it, the server keeps them all.
        std::vector<std::string> on_server = std::move(still_on_server);
        if (f.keep)
            for (const auto& [n, uid] : uid_of) on_server.push_back(uid);
        (void)state->retain_only(on_server);
        if (auto s = state->save(); !s) {
            // The records of this run are in the saves before; this one only forgets what the
            // server no longer has. Still a failure to say: the file is not what it should be.
            std::cerr << "pop3c: saving the state " << state->path() << ": " << s.error().message() << "\n";
            saved = false;
        }
    }
    if (!f.quiet)
        std::fprintf(stderr, "pop3c: %zu messages (%.1f MiB) fetched in %.2f s%s%s\n", meter.messages(),
                     static_cast<double>(meter.octets()) / (1 << 20), meter.seconds(),
                     deleted > 0 ? (", " + std::to_string(deleted) + " deleted").c_str() : "",
                     refused > 0 ? (", " + std::to_string(refused) + " refused by the server").c_str() : "");
    if (!saved) return exit_code::io_error;
    return refused > 0 || dele_refused > 0 ? exit_code::temporary : exit_code::ok;
}

// Writes retrieved messages to stdout as they come.
class stdout_handler final : public retrieval_handler {
public:
    bool begin(std::uint32_t, std::optional<std::uint64_t>) override { return true; }
    bool data(std::uint32_t, std::string_view octets) override {
        return written(std::fwrite(octets.data(), 1, octets.size(), stdout) == octets.size());
    }
    bool end(std::uint32_t, std::uint64_t) override { return written(std::fflush(stdout) == 0); }
    void refused(std::uint32_t n, const failure& why) override {
        std::cerr << "pop3c: message " << n << ": " << why.message() << "\n";
        ok = false;
    }
    bool ok = true;
    std::optional<int> write_error;  // errno of a failed write to stdout (a closed pipe, a full disk)

private:
    bool written(bool done) {
        if (!done && !write_error) write_error = errno;
        return done;
    }
};

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"pop3c: fetch mail from a POP3 server (RFC 1939, 2449, 2595, 5034, 8314) into a Maildir, an mbox\n"
                 "or stdout, or run one POP3 command. TLS certificates and host names are verified.",
                 "pop3c"};
    app.set_version_flag("--version", "pop3c (mailnet) " + std::string(mailnet::version()));
    app.require_subcommand(1);
    std::string host, user, password_env, password_file, ca_file, fingerprint, retr_mode_name = "retr", auth_name = "auto";
    int port = 0;
    bool tls = false, starttls = false, insecure = false, msex = false, allow_plaintext = false, quiet = false;
    int timeout = 60;
    app.add_option("--host", host, "server name or address (an IPv6 address with or without [ ])")->required();
    app.add_option("--port", port, "default 110, or 995 with --tls")->check(CLI::Range(1, 65535));
    app.add_option("--user", user, "login name")->required();
    app.add_option("--password-env", password_env, "take the password from this environment variable");
    app.add_option("--password-file", password_file, "take the password from this file's first line (a pipe or FIFO too, within --timeout)");
    app.add_flag("--tls", tls, "implicit TLS (RFC 8314, port 995)");
    app.add_flag("--starttls", starttls, "STLS (RFC 2595): a server that cannot is an error, never plaintext");
    app.add_option("--ca-file", ca_file, "PEM certificates to verify the server with (default: the system's)");
    app.add_option("--fingerprint", fingerprint, "accept only the server certificate with this SHA-256 (hex)");
    app.add_flag("--insecure", insecure, "do not verify the server's certificate (tests only)");
    app.add_option("--retr-mode", retr_mode_name, "where a message's size is learnt: retr, list or slow")
        ->check(CLI::IsMember({"retr", "list", "slow"}))->capture_default_str();
    app.add_flag("--msex", msex, "MS Exchange: bare LF line ends accepted");
    app.add_option("--auth", auth_name,
                   "how to log in: auto (APOP where offered without TLS and a cleartext password\n"
                   "would be allowed, else AUTH PLAIN if offered, else USER/PASS), user, plain or apop")
        ->check(CLI::IsMember({"auto", "user", "plain", "apop"}))->capture_default_str();
    app.add_flag("--allow-plaintext-password", allow_plaintext,
                 "send the password in clear to a non-loopback server without TLS");
    app.add_option("--timeout", timeout, "seconds for each step (connect, read, write)")->capture_default_str()
        ->check(CLI::Range(1, 3600));
    app.add_flag("-q,--quiet", quiet, "no progress and no summary");

    fetch_options fo;
    auto* fetch_cmd = app.add_subcommand("fetch", "fetch every message (deleted on the server once stored, unless --keep)");
    auto* dest = fetch_cmd->add_option_group("destination");
    dest->add_option("--maildir", fo.maildir, "Maildir DIR (DIR/{tmp,new,cur}, created if missing)");
    dest->add_option("--mbox", fo.mbox, "mboxrd FILE, locked while written");
    dest->add_flag("--stdout", fo.to_stdout, "write the messages to stdout");
    dest->require_option(1);
    fetch_cmd->add_flag("--keep", fo.keep, "leave the messages on the server");
    fetch_cmd->add_flag("--new-only", fo.new_only, "skip messages whose UIDL is in the state file");
    fetch_cmd->add_option("--state", fo.state,
                          "UIDL state file (default without --keep: $XDG_STATE_HOME/mailnet-pop3c/USER@HOST_PORT.state)");
    fetch_cmd->add_option("--batch", fo.batch_messages, "messages per local flush and DELE round when a state file is kept (without one: the whole list is one batch)")
        ->capture_default_str()->check(CLI::Range(1, 4096));
    auto* stat_cmd = app.add_subcommand("stat", "print COUNT OCTETS");
    std::vector<std::string> args;
    auto* list_cmd = app.add_subcommand("list", "print N OCTETS lines (all, or message N)");
    list_cmd->add_option("N", args)->expected(0, 1);
    auto* uidl_cmd = app.add_subcommand("uidl", "print N UID lines (all, or message N)");
    uidl_cmd->add_option("N", args)->expected(0, 1);
    auto* capa_cmd = app.add_subcommand("capa", "print the server's capabilities, one per line");
    auto* top_cmd = app.add_subcommand("top", "print message N's header and first LINES body lines");
    top_cmd->add_option("N LINES", args)->expected(2)->required();
    auto* retr_cmd = app.add_subcommand("retrieve", "print messages START[..END] (numbers, or start|next|end|last)");
    retr_cmd->add_option("START [END]", args, "a message number, or start|next|end|last; END as START, default START")
        ->expected(1, 2)->type_name("")->required();
    auto* dele_cmd = app.add_subcommand("delete", "delete messages START[..END] (numbers, or start|next|end|last)");
    dele_cmd->add_option("START [END]", args, "a message number, or start|next|end|last; END as START, default START")
        ->expected(1, 2)->type_name("")->required();
    for (auto* sc : {fetch_cmd, stat_cmd, list_cmd, uidl_cmd, capa_cmd, top_cmd, retr_cmd, dele_cmd}) sc->fallthrough();
    app.footer("The password never comes from the command line: --password-env, --password-file, or a prompt.\n"
               "Exit codes: 0 ok, 64 usage, 69 unavailable, 74 local I/O error, 75 temporary failure\n"
               "(IN-USE, SYS/TEMP, timeout), 76 protocol error, 77 login or certificate refused.");
    // A closed pipe on stdout (pop3c retrieve 1 end | head) is a write error (exit 74), never a
    // silent death by SIGPIPE (a socket write then fails with EPIPE too, as Asio's do anyway).
    std::signal(SIGPIPE, SIG_IGN);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? exit_code::ok : exit_code::usage;
    }
    if (tls && starttls) {
        std::cerr << "pop3c: --tls and --starttls exclude each other\n";
        return exit_code::usage;
    }
    if (*fetch_cmd && fo.to_stdout && !fo.keep) {
        // A pipe's reader may lose what it was given: only a file can be made durable.
        struct stat st{};
        if (::fstat(STDOUT_FILENO, &st) != 0 || !S_ISREG(st.st_mode)) {
            std::cerr << "pop3c: fetch --stdout deletes on the server only when stdout is a file; add --keep\n";
            return exit_code::usage;
        }
    }
    // The state file replaced under the mbox (or under stdout) would take the messages with it:
    // the same file by any spelling (a link, "./", an absolute path) is refused.
    if (*fetch_cmd && !fo.state.empty()) {
        if (!fo.mbox.empty() && same_file(fo.state, fo.mbox)) {
            std::cerr << "pop3c: --state and --mbox name the same file\n";
            return exit_code::usage;
        }
        struct stat out{}, st{};
        if (fo.to_stdout && ::fstat(STDOUT_FILENO, &out) == 0 && ::stat(fo.state.c_str(), &st) == 0 &&
            out.st_dev == st.st_dev && out.st_ino == st.st_ino) {
            std::cerr << "pop3c: --state names the file that stdout writes to\n";
            return exit_code::usage;
        }
    }
    // A CA file that cannot be read is a mistake of the command line, said before anything is
    // asked for or connected (not a certificate the server failed to present: 77).
    if (!ca_file.empty()) {
        struct stat ca{};
        const char* why = ::stat(ca_file.c_str(), &ca) != 0       ? std::strerror(errno)
                          : S_ISDIR(ca.st_mode)                   ? "a directory"
                          : ::access(ca_file.c_str(), R_OK) != 0 ? std::strerror(errno)
                                                                  : nullptr;
        if (why) {
            std::cerr << "pop3c: --ca-file " << ca_file << ": " << why << "\n";
            return exit_code::usage;
        }
    }
    // An IPv6 address as URLs and listening lines write it: [::1] is ::1.
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    // A Maildir batch keeps one descriptor per message until its flush, and that flush runs
    // while the next batch is retrieved: two batches' worth at once, and 64 for the rest (the
    // connection, the state, stdio). The files the sink opens ahead get what is left, up to 64.
    const std::uint64_t fds = mailnet::net::raise_fd_limit();
    if (fds > 0 && 2 * fo.batch_messages + 64 > fds) fo.batch_messages = fds > 66 ? static_cast<std::size_t>((fds - 64) / 2) : 1;
    if (fds > 0) {
        const std::uint64_t taken = 2 * fo.batch_messages + 64;
        fo.open_ahead = fds > taken ? static_cast<std::size_t>(std::min<std::uint64_t>(fds - taken, 64)) : 0;
    }
    const auto real_port = static_cast<std::uint16_t>(port != 0 ? port : tls ? 995 : 110);
    std::optional<state_file> state;
    if (*fetch_cmd) {
        if (const int code = open_state(fo, user, host, real_port, state); code != exit_code::ok) return code;
        // Nor may the mbox or stdout be one of the files the state keeps beside itself (the
        // state's path, links followed, plus .tmp, .lock or .spool): each save truncates
        // FILE.tmp and renames it over the state, so mail written there would be gone.
        struct stat out{};
        const bool out_known = fo.to_stdout && ::fstat(STDOUT_FILENO, &out) == 0;
        for (const auto& companion : state ? state_companions(*state) : std::vector<std::filesystem::path>{}) {
            struct stat st{};
            if (!fo.mbox.empty() && same_file(companion, fo.mbox)) {
                std::cerr << "pop3c: --mbox names a file the state keeps beside itself: " << companion.string() << "\n";
                return exit_code::usage;
            }
            if (out_known && ::stat(companion.c_str(), &st) == 0 && out.st_dev == st.st_dev && out.st_ino == st.st_ino) {
                std::cerr << "pop3c: stdout writes to a file the state keeps beside itself: " << companion.string() << "\n";
                return exit_code::usage;
            }
        }
    }
    int no_password = exit_code::usage;
    const auto password = read_password(password_env, password_file, user, host, std::chrono::seconds(timeout), no_password);
    if (!password) return no_password;

    options o;
    o.tls = tls ? tls_mode::implicit : starttls ? tls_mode::stls : tls_mode::none;
    o.ca_file = ca_file;
    o.fingerprint_sha256 = fingerprint;
    o.insecure = insecure;
    o.mode = retr_mode_name == "list" ? retr_mode::list : retr_mode_name == "slow" ? retr_mode::slow : retr_mode::retr;
    o.msex = msex;
    o.login = auth_name == "user"    ? login_method::user
              : auth_name == "plain" ? login_method::plain
              : auth_name == "apop"  ? login_method::apop
                                     : login_method::automatic;
    o.allow_plaintext_password = allow_plaintext;
    o.timeout = std::chrono::seconds(timeout);
    o.connect_timeout = std::chrono::seconds(timeout);
    // Local files hold LF line ends (DESIGN.md "On disk"), as mpop and fetchmail write them.
    o.line_ends = mailnet::output_line_ends::lf;
    auto opened = client::open(host, user, *password, real_port, o);
    if (!opened) {
        const auto& f = opened.why();
        // A refusal while logging in is a refused login (77), unless the server says why it
        // is temporary (RFC 2449 8.1.2 IN-USE, LOGIN-DELAY; RFC 3206 SYS/TEMP).
        if (f.error == make_error_code(errc::server_error) && f.code != "IN-USE" && f.code != "SYS/TEMP" &&
            f.code != "LOGIN-DELAY") {
            std::cerr << "pop3c: cannot log in to " << host << ":" << real_port << ": " << f.message() << "\n";
            return exit_code::denied;
        }
        if (f.error == make_error_code(errc::mailbox_refused))
            return fail(f, "cannot open the mailbox on " + host + ":" + std::to_string(real_port));
        // Not a refusal: the connection, TLS, or a broken or closed answer anywhere from the
        // greeting to the STAT after the login (a login the server took is not "refused").
        if (f.error == make_error_code(errc::server_error))
            return fail(f, "cannot log in to " + host + ":" + std::to_string(real_port));
        return fail(f, "cannot open a session with " + host + ":" + std::to_string(real_port));
    }
    client c = std::move(opened.value());
    session_server = host + ":" + std::to_string(real_port);

    auto index_arg = [&](std::size_t i) -> std::optional<message_index> {
        auto ix = message_index::parse(args.at(i));
        if (!ix) {
            std::cerr << "pop3c: " << ix.why().text << "\n";
            return std::nullopt;
        }
        return *ix;
    };
    auto number_arg = [&](std::size_t i) -> std::optional<std::uint32_t> {
        auto ix = index_arg(i);
        if (!ix) return std::nullopt;
        if (ix->w != message_index::word::number) {
            std::cerr << "pop3c: want a message number, got " << args.at(i) << "\n";
            return std::nullopt;
        }
        return ix->n;
    };
    auto finish = [&](int code) {
        if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
            std::cerr << "pop3c: writing to stdout failed\n";
            return exit_code::io_error;  // no QUIT: a delete asked for is not carried out
        }
        if (code == exit_code::ok) {
            if (auto q = c.close(); !q) return fail(q.why(), "QUIT");
        }
        return code;
    };

    fo.quiet = quiet;
    if (*fetch_cmd) return fetch(c, fo, std::move(state));
    if (*stat_cmd) {
        auto s = c.status();
        if (!s) return fail(s.why(), "STAT");
        std::printf("%u %llu\n", s->count, static_cast<unsigned long long>(s->octets));
        return finish(exit_code::ok);
    }
    if (*list_cmd) {
        if (args.empty()) {
            auto l = c.list();
            if (!l) return fail(l.why(), "LIST");
            for (const auto& e : *l) std::printf("%u %llu\n", e.number, static_cast<unsigned long long>(e.octets));
        } else {
            const auto n = number_arg(0);
            if (!n) return exit_code::usage;
            auto l = c.list(*n);
            if (!l) return fail(l.why(), "LIST");
            std::printf("%u %llu\n", l->number, static_cast<unsigned long long>(l->octets));
        }
        return finish(exit_code::ok);
    }
    if (*uidl_cmd) {
        if (args.empty()) {
            auto l = c.uidl();
            if (!l) return fail(l.why(), "UIDL");
            for (const auto& e : *l) std::printf("%u %s\n", e.number, e.uid.c_str());
        } else {
            const auto n = number_arg(0);
            if (!n) return exit_code::usage;
            auto l = c.uidl(*n);
            if (!l) return fail(l.why(), "UIDL");
            std::printf("%u %s\n", l->number, l->uid.c_str());
        }
        return finish(exit_code::ok);
    }
    if (*capa_cmd) {
        for (const auto& [name, a] : c.server_capabilities().items) {
            std::string line = name;
            for (const auto& w : a) line += " " + w;
            // The server's text: its control octets (escape sequences, a NUL) as \xNN.
            std::printf("%s\n", mailnet::log_text(line, 4096).c_str());
        }
        return finish(exit_code::ok);
    }
    if (*top_cmd) {
        const auto n = number_arg(0);
        if (!n) return exit_code::usage;
        // NOTE: a huge LINES saturates (the whole message), never wraps to a small count.
        const auto lines = parse_line_count(args.at(1));
        if (!lines) {
            std::cerr << "pop3c: LINES must be a number (decimal digits), got " << args.at(1).substr(0, 40) << "\n";
            return exit_code::usage;
        }
        auto t = c.top(*n, *lines);
        if (!t) return fail(t.why(), "TOP");
        std::fwrite(t->data(), 1, t->size(), stdout);
        return finish(exit_code::ok);
    }
    if (*retr_cmd || *dele_cmd) {
        const auto start = index_arg(0);
        if (!start) return exit_code::usage;
        std::optional<message_index> end;
        if (args.size() > 1) {
            end = index_arg(1);
            if (!end) return exit_code::usage;
        }
        if (*retr_cmd) {
            stdout_handler h;
            auto r = c.retrieve(*start, end, h);
            if (h.write_error) {
                std::cerr << "pop3c: writing to stdout failed: " << std::strerror(*h.write_error) << "\n";
                return exit_code::io_error;  // no QUIT: nothing asked for is carried out
            }
            if (!r) return fail(r.why(), "RETR");
            return finish(h.ok ? exit_code::ok : exit_code::temporary);
        }
        auto r = c.remove(*start, end);
        if (!r) return fail(r.why(), "DELE");
        return finish(exit_code::ok);
    }
    return exit_code::usage;
}
