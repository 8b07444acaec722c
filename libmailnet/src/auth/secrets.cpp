// secrets.cpp: constant-time comparison of secrets (DESIGN.md "Rules": secrets are compared
// in constant time by comparing digests), used for PLAIN passwords and crypt(3) outputs; and
// APOP digests (RFC 1939 7); the open-mode authenticator of a test mail server (DESIGN.md "On disk", mailnetd).
#include "mailnet/address.hpp"
#include "mailnet/auth/auth.hpp"
#include "mailnet/auth/sasl.hpp"
#include "mailnet/store/store.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

namespace mailnet {

bool secrets_equal(std::string_view a, std::string_view b) noexcept {
    // Hashing both sides first makes the comparison independent of the lengths and of where
    // the first difference lies: CRYPTO_memcmp then always compares 32 octets.
    unsigned char da[EVP_MAX_MD_SIZE];
    unsigned char db[EVP_MAX_MD_SIZE];
    unsigned int la = 0;
    unsigned int lb = 0;
    const EVP_MD* sha256 = EVP_sha256();
    if (EVP_Digest(a.data(), a.size(), da, &la, sha256, nullptr) != 1) return false;
    if (EVP_Digest(b.data(), b.size(), db, &lb, sha256, nullptr) != 1) return false;
    return la == lb && la == 32 && CRYPTO_memcmp(da, db, la) == 0;
}

std::string apop_digest(std::string_view timestamp, std::string_view secret) {
    std::string data;
    data.reserve(timestamp.size() + secret.size());
    data.append(timestamp).append(secret);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), digest, &len, EVP_md5(), nullptr);
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
        out += hex[digest[i] >> 4];
        out += hex[digest[i] & 15];
    }
    return out;
}

auth_result authenticator::authenticate_apop(const std::string& user, const std::string& timestamp,
                                             const std::string& digest_hex) {
    const auto secret = lookup(user);
    // An unknown user costs the same digest and comparison (no user enumeration).
    const std::string expected = apop_digest(timestamp, secret ? std::string_view(*secret) : std::string_view("\x01 no such user"));
    if (!secrets_equal(expected, digest_hex) || !secret) return auth_result::fail();
    // The backend names the account and its mailbox, as for a password login.
    return authenticate(credentials{user, *secret});
}

namespace {

class open_authenticator final : public authenticator {
public:
    // The password is the address, in any case as the login is (BOB@example.org with
    // bob@example.org): the mailbox is the same whatever the case.
    auth_result authenticate(const credentials& c) override {
        const auto fold = [](std::string s) {
            for (char& ch : s)
                if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
            return s;
        };
        if (c.user.empty() || !secrets_equal(fold(c.user), fold(c.password))) return auth_result::fail();
        // A login written as RCPT TO may write the address ("bob"@example.org) reaches the
        // mailbox that delivery went to.
        return auth_result::ok(c.user, mailbox_for_address(canonical_address(c.user)));
    }
    std::optional<std::string> lookup(std::string_view user) override {
        if (user.empty()) return std::nullopt;
        return std::string(user);
    }
    bool can_lookup() const override { return true; }
    bool exists(std::string_view user) override { return !user.empty(); }
    // Every address is an account whose mailbox is the one its login reaches.
    recipient_result resolve_recipient(std::string_view address) override {
        if (address.empty()) return recipient_result::unknown();
        return recipient_result::ok(std::string(address), mailbox_for_address(address));
    }
};

}  // namespace

std::unique_ptr<authenticator> make_open_authenticator() { return std::make_unique<open_authenticator>(); }

}  // namespace mailnet
