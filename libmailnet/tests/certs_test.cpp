// certs_test.cpp: certificates made in memory (make_certificate, make_self_signed_server_tls):
// what a verifier checks (RFC 5280 4.2.1: SAN, basicConstraints, EKU, validity) and the pin.
#include "mailnet/net/tls.hpp"

#include <gtest/gtest.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <memory>
#include <string>

namespace {

using x509_ptr = std::unique_ptr<X509, decltype(&X509_free)>;

x509_ptr parse(const std::string& pem) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
    return x509_ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
}

// The pin a client computes: SHA-256 of the DER it received (as pop3c --fingerprint does).
std::string digest_hex(X509* cert) {
    unsigned char* der = nullptr;
    const int n = i2d_X509(cert, &der);
    std::string pin = mailnet::net::sha256_hex_of_der(der, static_cast<std::size_t>(n));
    OPENSSL_free(der);
    return pin;
}

TEST(certs, self_signed_server_context_is_for_localhost_and_loopback_and_pinned_by_its_fingerprint) {
    std::string why;
    auto made = mailnet::net::make_self_signed_server_tls({"localhost", "127.0.0.1", "::1"}, &why);
    ASSERT_TRUE(made) << why;
    ASSERT_TRUE(made->context);
    X509* cert = SSL_CTX_get0_certificate(made->context->native_handle());
    ASSERT_NE(cert, nullptr);
    EXPECT_EQ(made->fingerprint_sha256.size(), 64u);
    EXPECT_EQ(made->fingerprint_sha256, digest_hex(cert));  // what `tls-fingerprint sha256` prints
    EXPECT_EQ(X509_check_host(cert, "localhost", 0, 0, nullptr), 1);
    EXPECT_EQ(X509_check_ip_asc(cert, "127.0.0.1", 0), 1);
    EXPECT_EQ(X509_check_ip_asc(cert, "::1", 0), 1);
    EXPECT_NE(X509_check_ip_asc(cert, "127.0.0.2", 0), 1);
    EXPECT_NE(X509_check_host(cert, "example.org", 0, 0, nullptr), 1);
    EXPECT_EQ(X509_check_purpose(cert, X509_PURPOSE_SSL_SERVER, 0), 1);
    EXPECT_EQ(X509_check_ca(cert), 0);
    EXPECT_EQ(EVP_PKEY_get_base_id(X509_get0_pubkey(cert)), EVP_PKEY_EC);
    // Valid now, for about a day, not much longer.
    std::time_t now = std::time(nullptr);
    EXPECT_LT(X509_cmp_time(X509_get0_notBefore(cert), &now), 0);
    EXPECT_GT(X509_cmp_time(X509_get0_notAfter(cert), &now), 0);
    std::time_t in_two_days = now + 2 * 24 * 3600;
    EXPECT_LT(X509_cmp_time(X509_get0_notAfter(cert), &in_two_days), 0);
    // Two calls, two keys: nothing is cached or written.
    auto again = mailnet::net::make_self_signed_server_tls({"localhost"});
    ASSERT_TRUE(again);
    EXPECT_NE(again->fingerprint_sha256, made->fingerprint_sha256);
    EXPECT_FALSE(mailnet::net::make_self_signed_server_tls({}));
}

TEST(certs, a_leaf_signed_by_a_ca_made_here_verifies_against_it) {
    mailnet::net::certificate_spec ca_spec;
    ca_spec.common_name = "test CA";
    ca_spec.ca = true;
    auto ca = mailnet::net::make_certificate(ca_spec);
    ASSERT_TRUE(ca);
    mailnet::net::certificate_spec leaf_spec;
    leaf_spec.common_name = "mail.example.org";
    leaf_spec.alt_names = {"mail.example.org", "::1"};
    auto leaf = mailnet::net::make_certificate(leaf_spec, &*ca);
    ASSERT_TRUE(leaf);
    auto ca_cert = parse(ca->cert), leaf_cert = parse(leaf->cert);
    ASSERT_TRUE(ca_cert && leaf_cert);
    EXPECT_EQ(leaf->fingerprint_sha256, digest_hex(leaf_cert.get()));
    EXPECT_EQ(X509_check_ca(ca_cert.get()), 1);
    EXPECT_EQ(X509_check_ip_asc(leaf_cert.get(), "::1", 0), 1);
    EXPECT_EQ(X509_check_host(leaf_cert.get(), "mail.example.org", 0, 0, nullptr), 1);

    std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> trust(X509_STORE_new(), X509_STORE_free);
    X509_STORE_add_cert(trust.get(), ca_cert.get());
    std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(), X509_STORE_CTX_free);
    ASSERT_EQ(X509_STORE_CTX_init(ctx.get(), trust.get(), leaf_cert.get(), nullptr), 1);
    EXPECT_EQ(X509_verify_cert(ctx.get()), 1) << X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));

    // The PEM pair makes a server context; a key of another certificate does not.
    EXPECT_TRUE(mailnet::net::make_server_tls_from_pem(*leaf));
    auto mixed = *leaf;
    mixed.key = ca->key;
    std::string why;
    EXPECT_FALSE(mailnet::net::make_server_tls_from_pem(mixed, &why));
    EXPECT_FALSE(why.empty());
}

}  // namespace
