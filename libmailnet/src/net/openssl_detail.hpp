// openssl_detail.hpp: what libmailnet's OpenSSL code shares inside the library (not installed).
#pragma once

#include <string>

namespace mailnet::net::detail {

/// Drains OpenSSL's (thread-local) error queue into one readable string.
std::string openssl_errors();

}  // namespace mailnet::net::detail
