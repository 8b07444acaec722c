// mailnet/net/tls.hpp: OpenSSL 3 contexts for servers (cert/key PEM) and clients (CA file,
// host name verification, SHA-256 fingerprint pinning). TLS 1.2 minimum (RFC 8996),
// renegotiation refused (DESIGN.md "Rules").
#pragma once

#include <filesystem>
#include <memory>
#include <string>

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
