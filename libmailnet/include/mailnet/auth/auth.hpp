// mailnet/auth/auth.hpp: the authentication interface (DESIGN.md) and the Dovecot passwd-file
// backend (schemes PLAIN, SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT via libxcrypt crypt_rn).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mailnet/error.hpp"
#include "mailnet/log.hpp"

namespace mailnet {

/// What a client proved it knows.
struct credentials {
    std::string user;      ///< the login name as sent
    std::string password;  ///< the plain password (USER/PASS, SASL PLAIN)
};

/// The answer of authenticate().
struct auth_result {
    enum class status { ok, fail, tempfail };
    status outcome = status::fail;
    std::string account;  ///< on ok: the canonical account name
    std::string mailbox;  ///< on ok: the storage reference (the mailbox name for the store)

    static auth_result ok(std::string account, std::string mailbox) {
        return {status::ok, std::move(account), std::move(mailbox)};
    }
    static auth_result fail() { return {status::fail, {}, {}}; }
    static auth_result tempfail() { return {status::tempfail, {}, {}}; }
};

/// The answer of resolve_recipient(): whose mailbox an SMTP recipient address reaches.
struct recipient_result {
    enum class status { ok, unknown, tempfail };
    status outcome = status::unknown;
    std::string account;  ///< on ok: the canonical account name, as a login of it answers
    std::string mailbox;  ///< on ok: the storage reference, the same a login of it answers

    static recipient_result ok(std::string account, std::string mailbox) {
        return {status::ok, std::move(account), std::move(mailbox)};
    }
    static recipient_result unknown() { return {status::unknown, {}, {}}; }
    static recipient_result tempfail() { return {status::tempfail, {}, {}}; }
};

/// An authentication backend. Calls may block (hashing, network): servers run them on a
/// small worker pool. Implementations are thread-safe.
class authenticator {
public:
    virtual ~authenticator() = default;
    /// Verifies credentials. An unknown user costs as much time as a wrong password.
    virtual auth_result authenticate(const credentials& c) = 0;
    /// The plain secret, for APOP and CRAM-style mechanisms; nullopt when the backend
    /// cannot give it (hashed entry, verify-only backend such as PAM or LDAP).
    virtual std::optional<std::string> lookup(std::string_view /*user*/) { return std::nullopt; }
    /// Whether any entry could give plain secrets (APOP is offered only then). May read the
    /// backend's files: servers ask once when they start, never per connection.
    virtual bool can_lookup() const { return false; }
    /// APOP (RFC 1939 7): whether `digest_hex` (lowercase) is MD5(timestamp + secret), compared
    /// in constant time. Default: lookup() the secret, compare, then authenticate() with it, so
    /// the answer carries the backend's own account and mailbox like every other login; an
    /// unknown user or an entry without a plain secret costs the same digest and fails.
    virtual auth_result authenticate_apop(const std::string& user, const std::string& timestamp,
                                          const std::string& digest_hex);
    /// Whether the user exists; never decides a reply (no user enumeration).
    virtual bool exists(std::string_view user) = 0;
    /// The account an SMTP recipient address (the full address) belongs to, and its mailbox:
    /// the same {account, mailbox} a login of that account answers, so RCPT and POP3 reach
    /// one mailbox. unknown: RCPT gets 550 5.1.1; tempfail: a 4xx, try later.
    /// Default: unknown, so a backend that does not know recipients accepts none.
    virtual recipient_result resolve_recipient(std::string_view /*address*/) { return recipient_result::unknown(); }
};

/// The same hooks as std::function slots; an empty slot means the default.
struct auth_functions : authenticator {
    std::function<auth_result(const credentials&)> on_authenticate;   ///< default: fail
    std::function<std::optional<std::string>(std::string_view)> on_lookup;  ///< default: none
    std::function<bool(std::string_view)> on_exists;                 ///< default: false
    std::function<recipient_result(std::string_view)> on_resolve_recipient;  ///< default: unknown

    auth_result authenticate(const credentials& c) override {
        return on_authenticate ? on_authenticate(c) : auth_result::fail();
    }
    std::optional<std::string> lookup(std::string_view u) override {
        return on_lookup ? on_lookup(u) : std::nullopt;
    }
    bool can_lookup() const override { return static_cast<bool>(on_lookup); }
    bool exists(std::string_view u) override { return on_exists ? on_exists(u) : false; }
    recipient_result resolve_recipient(std::string_view address) override {
        return on_resolve_recipient ? on_resolve_recipient(address) : recipient_result::unknown();
    }
};

/// Options of the passwd-file backend.
struct passwd_file_options {
    std::filesystem::path path;  ///< Dovecot passwd-file: name:{SCHEME}secret[:...]
    log_sink log = stderr_log();
};

/// Opens a passwd-file; it is re-read when it changes (mtime, size or inode), and a
/// re-read that fails (unreadable, or a line that is not name:secret[:...]) keeps the
/// previous table. The first read fails with errc::io_error (unreadable) or errc::bad_config
/// (does not parse; the line is logged). A login (authenticate, lookup) and a recipient
/// (resolve_recipient, disabled entries too) find the entry named so with ASCII letters in any
/// case, an exact-case entry first (as Dovecot's default auth_username_format %Lu).
result<std::unique_ptr<authenticator>> open_passwd_file(passwd_file_options options);

/// Open mode (DESIGN.md: mailnetd without --users): every login whose password equals its
/// name succeeds, the account is the name and the mailbox is mailbox_for_address(name);
/// lookup() gives the name itself (APOP); resolve_recipient() takes every address, to
/// mailbox_for_address(address). For test mail servers only: anyone may read any
/// mailbox whose address they know.
std::unique_ptr<authenticator> make_open_authenticator();

/// Constant-time equality of two secrets (compares SHA-256 digests with CRYPTO_memcmp).
bool secrets_equal(std::string_view a, std::string_view b) noexcept;

}  // namespace mailnet
