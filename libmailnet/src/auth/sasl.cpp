// sasl.cpp: SASL PLAIN (RFC 4616 2) decoding, and the client's encoding, for POP3 AUTH (RFC 5034 4) and SMTP AUTH (RFC 4954 4).
#include "mailnet/auth/sasl.hpp"

#include "mailnet/address.hpp"
#include "mailnet/base64.hpp"

#include <cctype>

namespace mailnet {

namespace {

// Two spellings of one login: quotes and escapes RFC 5321 does not need, and ASCII case, count
// for nothing (as the passwd-file and the login throttle see names).
bool same_login(std::string_view a, std::string_view b) {
    const std::string ca = canonical_address(a), cb = canonical_address(b);
    if (ca.size() != cb.size()) return false;
    for (std::size_t i = 0; i < ca.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(ca[i])) != std::tolower(static_cast<unsigned char>(cb[i]))) return false;
    return true;
}

}  // namespace

std::variant<credentials, sasl_refusal> decode_sasl_plain(std::string_view base64) {
    const auto decoded = base64_decode(base64 == "=" ? std::string_view{} : base64);
    if (!decoded) return sasl_refusal{{}, "invalid base64 in SASL response", true};
    // RFC 4616 2: [authzid] NUL authcid NUL passwd, with no NUL inside the three.
    const auto first = decoded->find('\0');
    const auto second = first == std::string::npos ? first : decoded->find('\0', first + 1);
    if (second == std::string::npos || decoded->find('\0', second + 1) != std::string::npos)
        return sasl_refusal{{}, "malformed SASL PLAIN response"};
    std::string authzid = decoded->substr(0, first);
    std::string authcid = decoded->substr(first + 1, second - first - 1);
    // The login is authcid's; an authzid that names the same account (in another case) is no proxy.
    if (!authzid.empty() && authzid != authcid && !same_login(authzid, authcid))
        return sasl_refusal{std::move(authcid), "SASL authorization identity differs from the login (no proxy logins)"};
    return credentials{std::move(authcid), decoded->substr(second + 1)};
}

std::string encode_sasl_plain(std::string_view user, std::string_view password) {
    std::string raw;
    raw.reserve(user.size() + password.size() + 2);
    raw.push_back('\0');
    raw.append(user);
    raw.push_back('\0');
    raw.append(password);
    return base64_encode(raw);
}

}  // namespace mailnet
