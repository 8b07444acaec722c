// passwd_file.cpp: the Dovecot passwd-file authenticator (DESIGN.md "On disk", users file):
// `name:{SCHEME}secret[:...]`, PLAIN and crypt(3) schemes via libxcrypt's crypt_rn, reloaded on change;
// SMTP recipients resolved to their entry, ASCII case aside (DESIGN.md "The pluggable interfaces").
#include "mailnet/address.hpp"
#include "mailnet/auth/auth.hpp"

#include <crypt.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mailnet {
namespace {

// Run for unknown users, disabled and PLAIN entries when the file holds no crypt entry, so
// that those cost a hash as a real crypt entry does. Made with
// `openssl passwd -6 -salt mailnetdummy0000`; no password matches it on purpose.
constexpr const char* fixed_dummy_hash =
    "$6$mailnetdummy0000$/dMX8rITzvAFQGUIR5zVfh6EPPs4Kfvook63NpdzA0PHjr.cPhNdHVO1w/xNy5ilWN6lKmg3WEnSKM19F1i3j.";

// NOTE: a users file larger than this is refused (kept: the previous table); it guards
// against a path pointing at something huge, not against a real users file.
constexpr std::size_t max_file_octets = 64u << 20;

// How recent a modification time must be for the read to count as "racy": file times
// move in clock ticks, so a rewrite within the same tick and of the same size leaves the
// stat unchanged. A racy read is repeated on the next call until the time is old enough.
constexpr std::int64_t racy_window_ns = 2'000'000'000;

enum class entry_kind { plain, crypt, disabled };

using digest = std::array<unsigned char, 32>;

struct entry {
    entry_kind kind = entry_kind::disabled;
    std::string secret;  // the plain password or the crypt(3) string; empty when disabled
    digest plain_digest{};  // SHA-256 of a PLAIN secret: each login compares 32 octets
    std::size_t line = 0;
};

struct name_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

struct table {
    std::unordered_map<std::string, entry, name_hash, std::equal_to<>> entries;
    // ascii_fold(name) -> name, for find_entry(): the first line of names that differ
    // only in ASCII case. Built with the table, so each RCPT is a hash lookup, never a scan.
    std::unordered_map<std::string, std::string, name_hash, std::equal_to<>> folded;
    // The first line whose name is postmaster@ some domain: the bare RFC 5321 recipient
    // <Postmaster> reaches it when no entry is named "postmaster" itself.
    std::string postmaster;
    bool any_plain = false;
    bool any_crypt = false;                // without crypt entries no login ever hashes
    std::string dummy = fixed_dummy_hash;  // crypt setting for the timing-only hash
};

digest sha256(std::string_view text) {
    digest d{};
    unsigned int n = 0;
    if (EVP_Digest(text.data(), text.size(), d.data(), &n, EVP_sha256(), nullptr) != 1) d.fill(0);
    return d;
}

// What a stat says about the file; two equal stamps mean "unchanged" (inode, size, times).
struct stamp {
    int error = 0;  // errno of a failed stat, 0 otherwise
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    std::int64_t mtime_ns = 0;
    std::int64_t ctime_ns = 0;

    bool operator==(const stamp&) const = default;
};

std::int64_t to_ns(const timespec& t) { return std::int64_t(t.tv_sec) * 1'000'000'000 + t.tv_nsec; }

stamp stamp_of(const struct stat& st) {
    return {0, st.st_dev, st.st_ino, st.st_size, to_ns(st.st_mtim), to_ns(st.st_ctim)};
}

bool is_racy(const stamp& s) {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    const std::int64_t horizon = to_ns(now) - racy_window_ns;
    return s.mtime_ns >= horizon || s.ctime_ns >= horizon;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'a' && x <= 'z') x = char(x - 'a' + 'A');
        if (y >= 'a' && y <= 'z') y = char(y - 'a' + 'A');
        if (x != y) return false;
    }
    return true;
}

// ASCII letters lowercased, every other octet (UTF-8 included) untouched: how addresses
// match entry names. RFC 5321 2.4: domains are case-insensitive, and a local part's case is
// the host's to decide (relying on it is discouraged); Postfix and Dovecot users expect none.
std::string ascii_fold(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return out;
}

// The entry a login or recipient names: the one named exactly so, else the first one that
// differs only in ASCII case: any case gets in, as with Dovecot's default auth_username_format
// %Lu (which lowercases the name first; here an entry written in capitals stays reachable too).
auto find_entry(const table& t, std::string_view name) -> decltype(t.entries.end()) {
    if (auto it = t.entries.find(name); it != t.entries.end()) return it;
    if (const auto f = t.folded.find(ascii_fold(name)); f != t.folded.end()) return t.entries.find(f->second);
    // Written with quotes or escapes RFC 5321 does not need ("bob"@example.org): as smtpd
    // names that recipient (entries are indexed so too).
    if (const std::string canonical = canonical_address(name); canonical != name)
        if (const auto f = t.folded.find(ascii_fold(canonical)); f != t.folded.end()) return t.entries.find(f->second);
    return t.entries.end();
}


// The account and mailbox an entry answers, to a login (auth_result) and to RCPT
// (recipient_result) alike: one code path, so both reach the same mailbox.
template <class Result>
Result granted(std::string_view name) {
    return Result::ok(std::string(name), std::string(name));
}

enum class crypt_family { none, sha512, sha256, bcrypt, yescrypt };

// The crypt(3) method a hash names by its prefix. Only these are accepted: libxcrypt would
// also take DES ("ab..."), MD5 ("$1$") and others, and any string at all is a valid DES
// setting, so a bare word would otherwise become a (weak) hash instead of being refused.
crypt_family family_of(std::string_view h) {
    if (h.starts_with("$6$")) return crypt_family::sha512;
    if (h.starts_with("$5$")) return crypt_family::sha256;
    if (h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$")) return crypt_family::bcrypt;
    if (h.starts_with("$y$")) return crypt_family::yescrypt;
    return crypt_family::none;
}

// What parse() makes of a file's text: a table, or the first line that is not a users-file
// line at all (DESIGN.md: a reload that fails to parse keeps the previous table).
struct parsed {
    std::shared_ptr<const table> users;  // null when the text does not parse
    std::vector<std::string> warnings;   // about single entries (disabled, duplicate), for the log
    std::size_t bad_line = 0;            // when !users: the first malformed line
    std::string why;                     // when !users; never shows the line itself
};

// Parses the file's text. A line that is not blank, not a '#' comment and not
// `name:secret[:...]` with a name and a secret field fails the whole text; an entry that
// only cannot be used (unknown scheme, wrong prefix, empty password after {SCHEME},
// duplicate name) is disabled or skipped with a warning, as Dovecot does.
parsed parse(std::string_view text, const std::string& where) {
    parsed out;
    auto t = std::make_shared<table>();
    bool dummy_set = false;
    std::size_t lineno = 0;
    struct alias {
        std::string canonical, name;
        std::size_t line = 0;
    };
    std::vector<alias> aliases;  // entries whose canonical_address differs from their name
    auto warn = [&](const std::string& what) {
        out.warnings.push_back("users file " + where + " line " + std::to_string(lineno) + ": " + what);
    };
    auto malformed = [&](std::string why) {
        out.bad_line = lineno;
        out.why = std::move(why);
        return std::move(out);
    };
    while (!text.empty()) {
        const std::size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        ++lineno;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // files edited on Windows
        if (line.find_first_not_of(" \t") == std::string_view::npos || line.front() == '#') continue;

        // The line itself is never logged: a stray line may well be a password.
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) return malformed("not name:secret (no ':' after a user name)");
        const std::string_view name = line.substr(0, colon);
        if (name.empty()) return malformed("empty user name");
        std::string_view secret = line.substr(colon + 1);
        secret = secret.substr(0, secret.find(':'));  // uid, gid, gecos, home, shell, extra: unused
        // As Dovecot: the first line for a name wins.
        if (auto it = t->entries.find(name); it != t->entries.end()) {
            warn("user " + log_text(name) + " already defined on line " + std::to_string(it->second.line) +
                 ", which wins; line skipped");
            continue;
        }
        const std::string who = "user " + log_text(name) + ": ";

        entry e;
        e.line = lineno;
        std::string_view scheme;
        bool has_scheme = false;
        if (secret.starts_with('{')) {
            if (const std::size_t close = secret.find('}'); close != std::string_view::npos) {
                scheme = secret.substr(1, close - 1);
                secret.remove_prefix(close + 1);
                has_scheme = true;
            }
        }
        const crypt_family family = family_of(secret);
        if (secret.empty()) {
            warn(who + "empty password; entry disabled");
        } else if (has_scheme && iequals(scheme, "PLAIN")) {
            e.kind = entry_kind::plain;
        } else if (!has_scheme || iequals(scheme, "CRYPT")) {
            // Dovecot's default scheme, CRYPT: the method is read from the hash prefix.
            if (family != crypt_family::none)
                e.kind = entry_kind::crypt;
            else
                warn(who + "password without {SCHEME} is not a $6$, $5$, $2a$/$2b$/$2y$ or $y$ crypt(3) hash "
                           "(a bare secret is never taken as PLAIN); entry disabled");
        } else if (iequals(scheme, "SHA512-CRYPT") || iequals(scheme, "SHA256-CRYPT") ||
                   iequals(scheme, "BLF-CRYPT")) {
            const crypt_family want = iequals(scheme, "SHA512-CRYPT")   ? crypt_family::sha512
                                      : iequals(scheme, "SHA256-CRYPT") ? crypt_family::sha256
                                                                        : crypt_family::bcrypt;
            if (family == want)
                e.kind = entry_kind::crypt;
            else
                warn(who + "{" + log_text(scheme) + "} password does not have that scheme's hash prefix; "
                     "entry disabled");
        } else {
            warn(who + "unknown password scheme {" + log_text(scheme) + "}; entry disabled");
        }
        if (e.kind == entry_kind::crypt) {
            // A hash libxcrypt cannot use (a bcrypt cost out of range, a broken salt) never
            // matches any password: disable it now, so that it can never be the timing dummy.
            const std::string setting(secret);
            if (const int ok = crypt_checksalt(setting.c_str()); ok == CRYPT_SALT_INVALID) {
                warn(who + "crypt(3) hash that libxcrypt cannot use; entry disabled");
                e.kind = entry_kind::disabled;
            }
        }
        if (e.kind != entry_kind::disabled) e.secret = std::string(secret);
        if (e.kind == entry_kind::plain) e.plain_digest = sha256(e.secret);

        if (e.kind == entry_kind::plain) t->any_plain = true;
        if (e.kind == entry_kind::crypt && !dummy_set) {
            // NOTE: the timing-only hash takes the first crypt entry's method and cost, so an
            // unknown user costs what a real one does (bcrypt at cost 12 is ~50x SHA512-CRYPT).
            // Files mixing methods still differ per user; that is the administrator's choice.
            t->dummy = e.secret;
            dummy_set = true;
            t->any_crypt = true;
        }
        if (t->postmaster.empty() && ascii_fold(name).starts_with("postmaster@")) t->postmaster = std::string(name);
        t->entries.emplace(std::string(name), std::move(e));
        if (auto [it, fresh] = t->folded.try_emplace(ascii_fold(name), name); !fresh)
            warn("user " + log_text(name) + " differs only in case from line " +
                 std::to_string(t->entries.find(it->second)->second.line) +
                 "'s; mail to an address matching neither exactly goes to that line's");
        // An entry written as "quoted"@example.org is the recipient quoted@example.org too: smtpd
        // asks for an address in that form (canonical_address). Indexed after every entry's own
        // name, which it never displaces.
        if (std::string canonical = canonical_address(name); canonical != name)
            aliases.push_back({std::move(canonical), std::string(name), lineno});
    }
    for (const auto& a : aliases) {
        lineno = a.line;
        if (auto [it, fresh] = t->folded.try_emplace(ascii_fold(a.canonical), a.name); !fresh && it->second != a.name)
            warn("user " + log_text(a.name) + " names the address of line " +
                 std::to_string(t->entries.find(it->second)->second.line) + " (less its quotes): mail to it goes there");
    }
    out.users = std::move(t);
    return out;
}

// The file's bytes and the stamp of what was read, or why it could not be read.
struct read_outcome {
    bool ok = false;
    std::string text;
    stamp st;
    std::error_code error;  // when !ok
    std::string why;        // when !ok
};

read_outcome read_users(const std::filesystem::path& path) {
    read_outcome r;
    auto fail = [&](int err, std::string why) {
        r.error = {err, std::system_category()};
        r.why = std::move(why);
        return std::move(r);
    };
    // O_NONBLOCK: a FIFO in the file's place must not hang the caller.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return fail(errno, std::system_category().message(errno));
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } guard{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) return fail(errno, std::system_category().message(errno));
    if (!S_ISREG(st.st_mode)) return fail(EINVAL, "not a regular file");
    if (std::uint64_t(st.st_size) > max_file_octets) return fail(EFBIG, "larger than 64 MiB");
    r.text.reserve(std::size_t(st.st_size));
    char buf[16384];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(errno, std::system_category().message(errno));
        if (n == 0) break;
        r.text.append(buf, std::size_t(n));
        if (r.text.size() > max_file_octets) return fail(EFBIG, "larger than 64 MiB");
    }
    // The stamp is taken after reading: a write that lands later changes it.
    if (::fstat(fd, &st) != 0) return fail(errno, std::system_category().message(errno));
    r.st = stamp_of(st);
    r.ok = true;
    return r;
}

// crypt_rn into a zeroed crypt_data; nullopt on failure. crypt() is never used: it returns
// a static buffer and is not thread-safe.
std::optional<std::string> run_crypt(const std::string& phrase, const std::string& setting) {
    // ~32 KiB: on the heap, not on a worker's stack.
    auto data = std::make_unique<crypt_data>();  // value-initialised: all zero, as crypt_rn wants
    const char* out = crypt_rn(phrase.c_str(), setting.c_str(), data.get(), int(sizeof(crypt_data)));
    std::optional<std::string> r;
    // crypt_rn returns null on failure; a '*' token (as crypt_r gives) is treated alike.
    if (out != nullptr && out[0] != '*' && out[0] != '\0') r.emplace(out);
    OPENSSL_cleanse(data.get(), sizeof(crypt_data));  // it holds a copy of the password
    return r;
}

class passwd_file final : public authenticator {
public:
    explicit passwd_file(passwd_file_options o) : opt_(std::move(o)), where_(opt_.path.string()) {
        if (!opt_.log) opt_.log = null_log();
    }

    // The first read; its failure is a configuration error.
    result<void> load() {
        std::lock_guard lock(mutex_);
        read_outcome r = read_users(opt_.path);
        if (!r.ok) {
            opt_.log(log_level::error, "cannot read users file " + where_ + ": " + r.why);
            return unexpected(errc::io_error);
        }
        if (!install(r)) return unexpected(errc::bad_config);  // logged by install
        return {};
    }

    auth_result authenticate(const credentials& c) override {
        // Refused before any lookup, so at the same speed for every user (no enumeration).
        // NOTE: libxcrypt refuses passphrases of CRYPT_MAX_PASSPHRASE_SIZE (512) octets or more;
        // PLAIN entries get the same limit so that no scheme accepts what another cannot.
        if (c.user.empty() || c.password.empty() || c.password.size() >= CRYPT_MAX_PASSPHRASE_SIZE ||
            c.user.find('\0') != std::string::npos || c.password.find('\0') != std::string::npos)
            return auth_result::fail();

        const std::shared_ptr<const table> t = current();  // no lock is held while hashing
        const auto it = find_entry(*t, c.user);
        const entry* e = it == t->entries.end() ? nullptr : &it->second;

        if (e != nullptr && e->kind == entry_kind::crypt) {
            const auto out = run_crypt(c.password, e->secret);
            if (!out) {
                opt_.log(log_level::error, "users file " + where_ + " line " + std::to_string(e->line) + ": user " +
                                               log_text(c.user) + ": crypt(3) refused the stored hash");
                return auth_result::fail();
            }
            return secrets_equal(*out, e->secret) ? granted<auth_result>(it->first) : auth_result::fail();
        }
        // Unknown user, disabled entry or PLAIN entry: as slow as a crypt entry would be, so
        // that the time taken does not tell which (DESIGN.md: no user enumeration). A file
        // with no crypt entry has no slow login to match: every login is one comparison.
        // The comparison is of 32-octet digests, the stored one made at parse time, so its
        // cost depends on neither the stored secret's length nor whether there is one.
        // A dummy libxcrypt refuses fails at once: hash with the fixed one instead.
        if (t->any_crypt && !run_crypt(c.password, t->dummy)) (void)run_crypt(c.password, fixed_dummy_hash);
        const bool plain = e != nullptr && e->kind == entry_kind::plain;
        static constexpr digest no_secret{};  // SHA-256 of nothing is never all zeros
        const digest given = sha256(c.password);
        const digest& stored = plain ? e->plain_digest : no_secret;
        // An all-zero digest is sha256()'s failure value: never a match (fail closed).
        const bool match = given != digest{} && CRYPTO_memcmp(given.data(), stored.data(), given.size()) == 0;
        if (plain && match) return granted<auth_result>(it->first);
        return auth_result::fail();
    }

    // The whole address, local part and domain, with ASCII letters in any case; an entry
    // named exactly so wins over one that differs only in case. A disabled entry receives
    // mail (only its password is unusable), as Dovecot delivers to a user whose password
    // it cannot check. Never tempfail: an unreadable file keeps the previous table.
    recipient_result resolve_recipient(std::string_view address) override {
        if (address.empty() || address.find('\0') != std::string_view::npos) return recipient_result::unknown();
        const std::shared_ptr<const table> t = current();
        auto it = find_entry(*t, address);
        // <Postmaster> with no domain (RFC 5321 4.1.1.3, smtpd asks after postmaster@ its own
        // host name): the first postmaster@ line, whatever its domain.
        if (it == t->entries.end() && !t->postmaster.empty() && ascii_fold(address) == "postmaster")
            it = t->entries.find(t->postmaster);
        if (it == t->entries.end()) return recipient_result::unknown();
        return granted<recipient_result>(it->first);
    }

    std::optional<std::string> lookup(std::string_view user) override {
        const auto t = current();
        const auto it = find_entry(*t, user);
        if (it == t->entries.end() || it->second.kind != entry_kind::plain) return std::nullopt;
        return it->second.secret;
    }

    bool can_lookup() const override { return current()->any_plain; }

    // A disabled entry still exists: the account is there, only its password is unusable.
    bool exists(std::string_view user) override {
        const auto t = current();
        return find_entry(*t, user) != t->entries.end();
    }

private:
    // The table, re-read first if the file changed. The stat and the swap happen under one
    // mutex, so two callers never re-read at once and never see the table go backwards.
    std::shared_ptr<const table> current() const {
        std::lock_guard lock(mutex_);
        refresh();
        return table_;
    }

    void refresh() const {
        struct stat st {};
        const stamp now = ::stat(opt_.path.c_str(), &st) == 0 ? stamp_of(st) : stamp{errno};
        if (now.error == 0 && now == seen_ && !racy_) return;

        read_outcome r;
        if (now.error != 0) {
            r.error = {now.error, std::system_category()};
            r.why = r.error.message();
        } else {
            r = read_users(opt_.path);
        }
        if (!r.ok) {
            // Logged once per change of the file or of the error; retried on every call, so
            // a passing failure (EMFILE, say) heals without the file having to change.
            const std::pair<stamp, std::error_code> key{now, r.error};
            if (!failing_ || key != last_failure_)
                opt_.log(log_level::warning, "cannot re-read users file " + where_ + ": " + r.why +
                                                 "; keeping the previous " + std::to_string(table_->entries.size()) +
                                                 " entries");
            failing_ = true;
            last_failure_ = key;
            return;
        }
        if (failing_) opt_.log(log_level::info, "users file " + where_ + " is readable again");
        failing_ = false;
        install(r);
    }

    // Takes a successful read: a new table unless the bytes are the same as before. A text
    // that does not parse keeps the table (false). Either way the stamp is remembered, so a
    // bad version is read again only when the file changes (or while its stamp is racy),
    // not on every call, and it is logged once per version (stamp and bytes).
    bool install(const read_outcome& r) const {
        seen_ = r.st;
        racy_ = is_racy(r.st);
        const digest d = sha256(r.text);
        if (table_ && d == digest_) {
            if (bad_) opt_.log(log_level::info, "users file " + where_ + " parses again: the previous " +
                                                    std::to_string(table_->entries.size()) + " entries stay");
            bad_.reset();
            return true;
        }
        const bool first = !table_;
        parsed p = parse(r.text, where_);
        if (!p.users) {
            const std::pair<stamp, digest> version{r.st, d};
            // PATH:LINE: reason, as compilers say it; the line itself may be a password.
            const std::string at = where_ + ":" + std::to_string(p.bad_line) + ": " + p.why;
            if (first)
                opt_.log(log_level::error, at + "; users file not loaded");
            else if (bad_ != version)
                opt_.log(log_level::warning, at + "; users file not reloaded, keeping the previous " +
                                                 std::to_string(table_->entries.size()) + " entries");
            bad_ = version;
            return false;
        }
        for (const auto& w : p.warnings) opt_.log(log_level::warning, w);
        table_ = std::move(p.users);
        digest_ = d;
        bad_.reset();
        opt_.log(log_level::info, std::string(first ? "read" : "reloaded") + " users file " + where_ + ": " +
                                      std::to_string(table_->entries.size()) + " entries");
        return true;
    }

    passwd_file_options opt_;
    std::string where_;  // the path, for log lines

    mutable std::mutex mutex_;  // guards everything below
    mutable std::shared_ptr<const table> table_;
    mutable stamp seen_{-1};  // the file behind table_
    mutable bool racy_ = false;
    mutable digest digest_{};  // SHA-256 of the bytes behind table_
    mutable bool failing_ = false;
    mutable std::pair<stamp, std::error_code> last_failure_;
    mutable std::optional<std::pair<stamp, digest>> bad_;  // the last version that did not parse
};

}  // namespace

result<std::unique_ptr<authenticator>> open_passwd_file(passwd_file_options options) {
    auto a = std::make_unique<passwd_file>(std::move(options));
    if (auto r = a->load(); !r) return unexpected(r.error());
    return std::unique_ptr<authenticator>(std::move(a));
}

}  // namespace mailnet
