// mailnet/net/tls.hpp: OpenSSL 3 contexts for servers (cert/key PEM) and clients (CA file,
// host name verification, SHA-256 fingerprint pinning). TLS 1.2 minimum (RFC 8996),
// renegotiation refused (DESIGN.md "Rules").
#pragma once

#include <filesystem>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <asio/ssl/context.hpp>

#include "mailnet/error.hpp"

namespace mailnet::net {

/// Server side: a certificate chain and its private key, both PEM files.
struct tls_server_options {
    std::filesystem::path cert_file;  ///< PEM: leaf first, then intermediates
    std::filesystem::path key_file;   ///< PEM private key matching the leaf
};

/// Builds a server context; errc::tls_error with a logged reason if the files are unusable
/// (missing, unreadable, not PEM, key does not match).
result<std::shared_ptr<asio::ssl::context>> make_server_tls(const tls_server_options& options,
                                                              std::string* why = nullptr);

/// What make_certificate() makes.
struct certificate_spec {
    std::string common_name;             ///< the subject's CN
    std::vector<std::string> alt_names;  ///< subjectAltName: an IP literal as IP, anything else as DNS
    bool ca = false;                     ///< a CA (keyCertSign) rather than a server leaf (serverAuth)
    std::chrono::hours validity{24};     ///< from an hour ago (clock skew) for this long
    std::string organisation = "mailnet";
};

/// A certificate and its key, PEM, with the certificate's pin.
struct certificate_pem {
    std::string cert;                ///< "-----BEGIN CERTIFICATE-----..."
    std::string key;                 ///< PKCS#8 "-----BEGIN PRIVATE KEY-----...", not encrypted
    std::string fingerprint_sha256;  ///< SHA-256 of the certificate's DER, lowercase hex
};

/// A new P-256 key and an X.509 v3 certificate for it (RFC 5280 4.2.1: basicConstraints,
/// keyUsage, extKeyUsage for a leaf, key identifiers, subjectAltName), signed by `issuer` (a CA
/// made here) or self-signed when null. Nothing touches the disk. errc::tls_error with OpenSSL's
/// reason on failure.
result<certificate_pem> make_certificate(const certificate_spec& spec, const certificate_pem* issuer = nullptr,
                                         std::string* why = nullptr);

/// A server context (as make_server_tls) from PEM texts instead of files.
result<std::shared_ptr<asio::ssl::context>> make_server_tls_from_pem(const certificate_pem& pem,
                                                                       std::string* why = nullptr);

/// A server context and the fingerprint a client pins.
struct self_signed_tls {
    std::shared_ptr<asio::ssl::context> context;
    std::string fingerprint_sha256;  ///< lowercase hex, as `tls-fingerprint sha256 HEX` prints it
};

/// A self-signed server certificate for `names` (the first is the CN; all go into the
/// subjectAltName), valid from an hour ago for a day, in a server context: mailnetd's
/// --tls-self-signed. errc::tls_error with the reason if OpenSSL fails.
result<self_signed_tls> make_self_signed_server_tls(const std::vector<std::string>& names, std::string* why = nullptr);

/// Client side verification policy.
struct tls_client_options {
    std::filesystem::path ca_file;   ///< PEM bundle; empty: the system's default paths
    std::string fingerprint_sha256;  ///< hex (colons allowed): pin the leaf; chain not checked then
    bool insecure = false;           ///< no verification at all (--insecure)
};

/// Builds a client context (verify peer unless insecure or pinned).
result<std::shared_ptr<asio::ssl::context>> make_client_tls(const tls_client_options& options,
                                                              std::string* why = nullptr);

/// SHA-256 of a DER certificate as lowercase hex without colons.
std::string sha256_hex_of_der(const unsigned char* der, std::size_t len);

}  // namespace mailnet::net
