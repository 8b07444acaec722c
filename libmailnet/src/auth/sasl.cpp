// sasl.cpp: SASL PLAIN (RFC 4616 2) decoding, and the client's encoding, for POP3 AUTH (RFC 5034 4) and SMTP AUTH (RFC 4954 4).
#include "mailnet/auth/sasl.hpp"

#include "mailnet/base64.hpp"

namespace mailnet {

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
    if (!authzid.empty() && authzid != authcid)
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
