// mailnet/base64.hpp: base64 (RFC 4648 4) for SASL exchanges (RFC 4422, RFC 5034, RFC 4954).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace mailnet {

/// Encodes with padding, no line breaks.
std::string base64_encode(std::string_view octets);

/// Decodes strict base64 (padding required, no white space); nullopt if malformed.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace mailnet
