// test_certs.hpp: a throw-away PKI for tests, made with libmailnet's make_certificate (no openssl CLI):
// a CA, a server certificate it signs for "localhost" and 127.0.0.1 (RFC 5280 4.2.1.6 SAN),
// and a self-signed certificate for another name. Reused by other components' tests.
#pragma once

#include <filesystem>
#include <string>

namespace mailnet::test_support {

/// PEM files in a fresh temporary directory, removed with the object.
struct test_pki {
    std::filesystem::path dir;          ///< the temporary directory holding every file below
    std::filesystem::path ca_cert;      ///< the CA certificate (trust anchor for server_cert)
    std::filesystem::path server_cert;  ///< leaf for DNS:localhost and IP:127.0.0.1, signed by the CA
    std::filesystem::path server_key;   ///< its private key
    std::filesystem::path other_cert;   ///< self-signed leaf for DNS:other.example (unknown to any CA)
    std::filesystem::path other_key;    ///< its private key
    std::string server_fingerprint;     ///< SHA-256 of server_cert's DER, lowercase hex (for pinning)
    std::string other_fingerprint;      ///< SHA-256 of other_cert's DER, lowercase hex

    /// Generates all of it (P-256 keys, valid from an hour ago for a day); throws
    /// std::runtime_error with OpenSSL's reason on failure.
    static test_pki create();

    /// An empty object owning nothing.
    test_pki() = default;
    test_pki(const test_pki&) = delete;
    test_pki& operator=(const test_pki&) = delete;
    /// Takes over `other`'s directory.
    test_pki(test_pki&& other) noexcept;
    /// Removes this directory, then takes over `other`'s.
    test_pki& operator=(test_pki&& other) noexcept;
    /// Removes `dir` and everything in it.
    ~test_pki();
};

}  // namespace mailnet::test_support
