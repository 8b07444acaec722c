// state_file.cpp: the UIDL state file of `pop3c fetch --new-only --state FILE` (RFC 1939 7 for
// what a UIDL may be); saved by write-to-temporary, fsync, rename, fsync of the directory.
#include "state_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <string>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "mailnet/posix_io.hpp"

namespace mailnet::pop3c {

namespace {
constexpr std::string_view account_prefix = "# account ";

// A size as written: 1-20 digits, at most 2^64 - 2; "-" is unknown_size.
std::optional<std::uint64_t> parse_size(std::string_view s) {
    if (s == "-") return state_file::unknown_size;
    if (s.empty() || s.size() > 20) return std::nullopt;
    std::uint64_t v = 0;
    for (const char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        const auto d = static_cast<std::uint64_t>(c - '0');
        if (v > (state_file::unknown_size - 1 - d) / 10) return std::nullopt;
        v = v * 10 + d;
    }
    return v;
}

bool printable(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u >= 0x21 && u <= 0x7E;
    });
}
}  // namespace

std::string state_file::account_of(std::string_view user, std::string_view host, std::uint16_t port) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    auto put = [&](std::string_view part, bool lower) {
        for (const char c : part) {
            const auto u = static_cast<unsigned char>(c);
            if (u < 0x21 || u > 0x7E || c == '%') {
                out += '%';
                out += hex[u >> 4];
                out += hex[u & 0x0F];
            } else {
                out += lower ? static_cast<char>(std::tolower(u)) : c;
            }
        }
    };
    put(user, false);
    out += '@';
    put(host, true);
    out += ':';
    out += std::to_string(port);
    return out;
}

bool is_valid_uidl(std::string_view uid) noexcept {
    // RFC 1939 7: "1 to 70 characters in the range 0x21 to 0x7E".
    if (uid.empty() || uid.size() > 70) return false;
    return std::all_of(uid.begin(), uid.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u >= 0x21 && u <= 0x7E;
    });
}

result<state_file> state_file::load(std::filesystem::path path, log_sink log) {
    if (!log) log = null_log();
    const std::string name = path.string();
    // One run at a time per state: FILE.lock, flock'd for as long as this state lives (FILE
    // itself is replaced at each save, so it cannot hold a lock). Two runs that both loaded the
    // state before either saved would each fetch what the other fetched.
    const std::string lock_name = name + ".lock";
    posix::unique_fd lock(::open(lock_name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (lock.get() < 0) {
        const auto ec = last_system_error();
        log(log_level::error, "state file " + name + ": cannot open " + lock_name + ": " + ec.message());
        return unexpected(ec);
    }
    while (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR) continue;
        if (errno == EWOULDBLOCK) {
            log(log_level::error, "state file " + name + ": in use by another run (" + lock_name + " is locked)");
            return unexpected(errc::mailbox_in_use);
        }
        const auto ec = last_system_error();
        log(log_level::error, "state file " + name + ": cannot lock " + lock_name + ": " + ec.message());
        return unexpected(ec);
    }
    posix::unique_fd fd(::open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (fd.get() < 0) {
        if (errno == ENOENT) {  // first run
            state_file first(std::move(path), std::move(log));
            first.lock_ = std::move(lock);
            return first;
        }
        const auto ec = last_system_error();
        log(log_level::error, "state file " + name + ": " + ec.message());
        return unexpected(ec);
    }
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
        // A FIFO or a device would block or never end: not a state file we wrote.
        log(log_level::error, "state file " + name + ": not a regular file");
        return unexpected(errc::bad_config);
    }
    std::string text;
    text.reserve(static_cast<std::size_t>(st.st_size));
    std::array<char, 64 * 1024> buf{};
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            const auto ec = last_system_error();
            log(log_level::error, "state file " + name + ": " + ec.message());
            return unexpected(ec);
        }
        if (n == 0) break;
        text.append(buf.data(), static_cast<std::size_t>(n));
    }

    state_file state(std::move(path), std::move(log));
    state.lock_ = std::move(lock);
    std::string_view rest = text;
    bool sized = false;  // version 3: sizes after the UIDLs
    for (std::size_t line_no = 1; !rest.empty(); ++line_no) {
        const std::size_t nl = rest.find('\n');
        const std::string_view line = rest.substr(0, nl);
        rest.remove_prefix(nl == rest.npos ? rest.size() : nl + 1);
        // A pending record: "? UIDL LOCATOR SIZE" (version 3) or "? UIDL LOCATOR"; the locator
        // may be empty and has no space.
        if (line_no > 1 && line.size() > 2 && line.substr(0, 2) == "? ") {
            const std::string_view rec = line.substr(2);
            const std::size_t sp = rec.find(' ');
            const std::string_view uid = rec.substr(0, sp);
            std::string_view loc = sp == rec.npos ? std::string_view() : rec.substr(sp + 1);
            std::optional<std::uint64_t> size = unknown_size;
            if (sized) {
                const std::size_t last = loc.rfind(' ');
                size = last == loc.npos ? std::nullopt : parse_size(loc.substr(last + 1));
                loc = last == loc.npos ? loc : loc.substr(0, last);
            }
            if (is_valid_uidl(uid) && size && loc.find(' ') == loc.npos) {
                state.pending_.push_back({std::string(uid), std::string(loc), *size});
                continue;
            }
        }
        auto bad = [&](const char* why) -> result<state_file> {
            // FILE:LINE only: the line itself could be anything (DESIGN.md, the users file).
            state.log_(log_level::error, name + ":" + std::to_string(line_no) + ": " + why);
            return unexpected(errc::bad_config);
        };
        if (line_no == 1) {
            if (line != header && line != header_v2 && line != header_v1)
                return bad("not a mailnet pop3c state file (version 1, 2 or 3)");
            sized = line == header;
            continue;
        }
        // The account line, before the UIDLs (a hand edit may move it or leave blanks at its
        // end); no UIDL has a space, so none is taken for it.
        if (line.starts_with(account_prefix)) {
            std::string_view value = line.substr(account_prefix.size());
            while (!value.empty() && (value.back() == ' ' || value.back() == '\t' || value.back() == '\r'))
                value.remove_suffix(1);
            while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
            if (!state.account_.empty()) return bad("a second account line");
            if (state.size() > 0 || state.pending() > 0) return bad("the account line comes after the UIDLs");
            if (!printable(value)) return bad("not an account (1 or more octets in 0x21-0x7E)");
            state.account_ = value;
            continue;
        }
        std::string_view uid = line;
        std::uint64_t size = unknown_size;
        if (sized) {
            const std::size_t sp = line.find(' ');
            if (sp == line.npos) return bad("not a UIDL and a size");
            const auto parsed = parse_size(line.substr(sp + 1));
            if (!parsed) return bad("not a size (1-20 digits, or -)");
            uid = line.substr(0, sp);
            size = *parsed;
        }
        if (!is_valid_uidl(uid)) return bad("not a UIDL (1-70 octets in 0x21-0x7E)");
        state.insert(uid, size);
    }
    return state;
}

result<void> state_file::bind(std::string_view account) {
    if (!printable(account)) return unexpected(errc::bad_input);
    if (account_.empty()) {
        account_ = account;
        return {};
    }
    if (account_ == account) return {};
    return unexpected(errc::bad_config);
}

bool state_file::contains(std::string_view uid) const { return set_.contains(uid); }

bool state_file::holds(std::string_view uid, std::uint64_t size) const {
    const auto it = set_.find(uid);
    return it != set_.end() && (it->second == unknown_size || it->second == size);
}

result<void> state_file::add_pending(std::string_view uid, std::string_view locator, std::uint64_t size) {
    if (!is_valid_uidl(uid) || locator.find_first_of(" \r\n") != locator.npos) return unexpected(errc::bad_input);
    pending_.push_back({std::string(uid), std::string(locator), size});
    return {};
}

std::vector<state_file::pending_record> state_file::take_pending() { return std::exchange(pending_, {}); }

void state_file::insert(std::string_view uid, std::uint64_t size) {
    if (auto it = set_.find(uid); it != set_.end()) {
        it->second = size;
        return;
    }
    set_.emplace(order_.emplace_back(uid), size);
}

result<void> state_file::add(std::string_view uid, std::uint64_t size) {
    if (!is_valid_uidl(uid)) return unexpected(errc::bad_input);
    insert(uid, size);
    return {};
}

std::vector<std::uint64_t> state_file::sizes_in_order() const {
    std::vector<std::uint64_t> out;
    out.reserve(order_.size());
    for (const auto& uid : order_) out.push_back(set_.at(uid));
    return out;
}

std::size_t state_file::retain_only(std::span<const std::string> on_server) {
    std::unordered_set<std::string_view> server(on_server.begin(), on_server.end());
    std::deque<std::string> kept;
    std::unordered_map<std::string_view, std::uint64_t> kept_set;
    kept_set.reserve(std::min(order_.size(), server.size()));
    const std::vector<std::uint64_t> sizes = sizes_in_order();  // before any string moves
    for (std::size_t i = 0; i < order_.size(); ++i)
        if (server.contains(order_[i])) kept_set.emplace(kept.emplace_back(std::move(order_[i])), sizes[i]);
    const std::size_t forgotten = order_.size() - kept.size();
    order_ = std::move(kept);
    set_ = std::move(kept_set);
    return forgotten;
}

std::size_t state_file::forget(std::span<const std::string> uids) {
    const std::unordered_set<std::string_view> gone(uids.begin(), uids.end());
    std::deque<std::string> kept;
    std::unordered_map<std::string_view, std::uint64_t> kept_set;
    const std::vector<std::uint64_t> sizes = sizes_in_order();  // before any string moves
    for (std::size_t i = 0; i < order_.size(); ++i)
        if (!gone.contains(order_[i])) kept_set.emplace(kept.emplace_back(std::move(order_[i])), sizes[i]);
    std::size_t forgotten = order_.size() - kept.size();
    order_ = std::move(kept);
    set_ = std::move(kept_set);
    const auto before = pending_.size();
    std::erase_if(pending_, [&](const auto& p) { return gone.contains(p.uid); });
    forgotten += before - pending_.size();
    return forgotten;
}

result<void> state_file::save() {
    const std::string name = path_.string();
    const std::string tmp = name + ".tmp";
    auto fail = [&](const std::string& what, std::error_code ec) -> result<void> {
        log_(log_level::error, "state file " + name + ": " + what + ": " + ec.message());
        ::unlink(tmp.c_str());
        return unexpected(ec);
    };

    std::string text;
    std::size_t octets = header.size() + 1 + account_prefix.size() + account_.size() + 1;
    for (const auto& uid : order_) octets += uid.size() + 22;
    for (const auto& p : pending_) octets += p.uid.size() + p.locator.size() + 26;
    text.reserve(octets);
    text.append(header).push_back('\n');
    if (!account_.empty()) text.append(account_prefix).append(account_).push_back('\n');
    // A size not known (a record from version 1 or 2, or one promoted from such a pending
    // record) is written as "-": it keeps matching any size.
    for (const auto& uid : order_) {
        text.append(uid).push_back(' ');
        const std::uint64_t size = set_.at(uid);
        if (size == unknown_size) text.push_back('-');
        else text.append(std::to_string(size));
        text.push_back('\n');
    }
    for (const auto& p : pending_) {
        text.append("? ").append(p.uid).append(" ").append(p.locator).push_back(' ');
        if (p.size == unknown_size) text.push_back('-');
        else text.append(std::to_string(p.size));
        text.push_back('\n');
    }

    // O_TRUNC, not O_EXCL: a FILE.tmp left by a crash is ours and stale.
    posix::unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd.get() < 0) return fail("cannot create " + tmp, last_system_error());
    if (auto w = posix::write_all(fd.get(), text); !w) return fail("write " + tmp, w.error());
    if (::fsync(fd.get()) != 0) return fail("fsync " + tmp, last_system_error());
    if (::close(fd.release()) != 0) return fail("close " + tmp, last_system_error());
    // rename() replaces FILE in one step: a reader (or a crash) sees the old file or the new.
    if (::rename(tmp.c_str(), name.c_str()) != 0) return fail("rename " + tmp, last_system_error());
    // The rename itself is durable only once the directory is.
    if (auto s = posix::fsync_dir(path_.parent_path().string()); !s) {
        log_(log_level::error, "state file " + name + ": fsync of its directory: " + s.error().message());
        return s;
    }
    return {};
}

}  // namespace mailnet::pop3c
