// mailnet/auth/sasl.hpp: SASL PLAIN responses (RFC 4616 2) as POP3 AUTH (RFC 5034) and SMTP
// AUTH (RFC 4954) carry them, decoded once for every server. No Asio here.
#pragma once

#include <string>
#include <string_view>
#include <variant>

#include "mailnet/auth/auth.hpp"

namespace mailnet {

/// Why a SASL PLAIN response was refused: the text goes into the failed-login log line.
struct sasl_refusal {
    std::string user;    ///< the authentication identity, when the response got that far
    std::string reason;  ///< "invalid base64 in SASL response", ...
    /// The response is not base64 at all: SMTP answers 501 5.5.2 (RFC 4954 4), no failed login.
    bool undecodable = false;
};

/// Decodes a base64 SASL PLAIN response ("=" or empty: no octets): [authzid] NUL authcid NUL
/// passwd. An authzid other than the authcid is refused (no proxy authorization).
std::variant<credentials, sasl_refusal> decode_sasl_plain(std::string_view base64);

/// A client's SASL PLAIN response (RFC 4616 2), base64: NUL authcid NUL passwd (no authzid).
std::string encode_sasl_plain(std::string_view user, std::string_view password);

/// APOP's digest (RFC 1939 7): lowercase hex MD5 of the greeting's timestamp and the secret.
std::string apop_digest(std::string_view timestamp, std::string_view secret);

}  // namespace mailnet
