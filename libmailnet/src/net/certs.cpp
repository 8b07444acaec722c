// certs.cpp: certificates made in memory with OpenSSL 3's C API: EC P-256 keys, X.509 v3 with
// the RFC 5280 4.2.1 extensions a verifier checks (basicConstraints, keyUsage, SAN, EKU), for
// mailnetd's --tls-self-signed and the tests' throw-away PKI.
#include "mailnet/net/tls.hpp"

#include "openssl_detail.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <vector>

#include <asio/ip/address.hpp>

namespace mailnet::net {

std::string detail::openssl_errors() {
    std::string out;
    while (unsigned long e = ERR_get_error()) {
        std::array<char, 256> buf{};
        ERR_error_string_n(e, buf.data(), buf.size());
        if (!out.empty()) out += "; ";
        out += buf.data();
    }
    return out.empty() ? std::string("unknown OpenSSL error") : out;
}

namespace {

struct pkey_free { void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); } };
struct x509_free { void operator()(X509* x) const { X509_free(x); } };
struct ext_free { void operator()(X509_EXTENSION* e) const { X509_EXTENSION_free(e); } };
struct bio_free { void operator()(BIO* b) const { BIO_free(b); } };
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;
using x509_ptr = std::unique_ptr<X509, x509_free>;
using bio_ptr = std::unique_ptr<BIO, bio_free>;

// Inside make_certificate only: unwound into errc::tls_error with the reason.
struct openssl_failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& what) { throw openssl_failure(what + ": " + detail::openssl_errors()); }

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    std::unique_ptr<X509_EXTENSION, ext_free> ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value.c_str()));
    if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) fail("cannot add extension " + value);
}

// "DNS:localhost,IP:127.0.0.1" (RFC 5280 4.2.1.6): an IP literal as IP, anything else as DNS.
std::string alt_names_text(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) {
        std::error_code ec;
        (void)asio::ip::make_address(n, ec);
        if (!out.empty()) out += ",";
        out += (ec ? "DNS:" : "IP:") + n;
    }
    return out;
}

std::string to_pem(const std::function<int(BIO*)>& write) {
    bio_ptr bio(BIO_new(BIO_s_mem()));
    if (!bio || write(bio.get()) != 1) fail("cannot write PEM");
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

template <class T, class Read>
T from_pem(const std::string& text, Read read, const char* what) {
    bio_ptr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
    T out(bio ? read(bio.get(), nullptr, nullptr, nullptr) : nullptr);
    if (!out) fail(std::string("cannot read the issuer's ") + what);
    return out;
}

std::string fingerprint(X509* cert) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int len = 0;
    if (X509_digest(cert, EVP_sha256(), md.data(), &len) != 1) fail("X509_digest");
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < len; ++i) {
        out += digits[md[i] >> 4];
        out += digits[md[i] & 0x0f];
    }
    return out;
}

certificate_pem make(const certificate_spec& spec, const certificate_pem* issuer_pem) {
    pkey_ptr key(EVP_EC_gen("P-256"));
    if (!key) fail("cannot generate a P-256 key");
    x509_ptr issuer;
    pkey_ptr issuer_key;
    if (issuer_pem) {
        issuer = from_pem<x509_ptr>(issuer_pem->cert, PEM_read_bio_X509, "certificate");
        issuer_key = from_pem<pkey_ptr>(issuer_pem->key, PEM_read_bio_PrivateKey, "key");
    }

    x509_ptr cert(X509_new());
    if (!cert) fail("X509_new");
    X509* c = cert.get();
    if (X509_set_version(c, X509_VERSION_3) != 1) fail("X509_set_version");
    std::array<unsigned char, 16> serial{};
    if (RAND_bytes(serial.data(), static_cast<int>(serial.size())) != 1) fail("RAND_bytes");
    serial[0] &= 0x7f;  // positive (RFC 5280 4.1.2.2)
    std::unique_ptr<BIGNUM, decltype(&BN_free)> bn(BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr),
                                                   BN_free);
    if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(c))) fail("serial number");

    const long valid = static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(spec.validity).count());
    if (!X509_gmtime_adj(X509_getm_notBefore(c), -3600) || !X509_gmtime_adj(X509_getm_notAfter(c), valid))
        fail("validity");
    X509_NAME* name = X509_get_subject_name(c);
    auto text = [](const std::string& s) { return reinterpret_cast<const unsigned char*>(s.c_str()); };
    if ((!spec.organisation.empty() &&
         X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, text(spec.organisation), -1, -1, 0) != 1) ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, text(spec.common_name), -1, -1, 0) != 1)
        fail("subject name");
    if (X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer.get()) : name) != 1) fail("issuer name");
    if (X509_set_pubkey(c, key.get()) != 1) fail("X509_set_pubkey");

    X509* signer = issuer ? issuer.get() : c;
    if (spec.ca) {
        add_ext(c, signer, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(c, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(c, signer, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(c, signer, NID_key_usage, "critical,digitalSignature");
        add_ext(c, signer, NID_ext_key_usage, "serverAuth");
    }
    add_ext(c, signer, NID_subject_key_identifier, "hash");
    if (issuer) add_ext(c, signer, NID_authority_key_identifier, "keyid:always");
    if (!spec.alt_names.empty()) add_ext(c, signer, NID_subject_alt_name, alt_names_text(spec.alt_names));
    if (X509_sign(c, issuer_key ? issuer_key.get() : key.get(), EVP_sha256()) <= 0)
        fail("cannot sign " + spec.common_name);

    certificate_pem out;
    out.cert = to_pem([&](BIO* b) { return PEM_write_bio_X509(b, c); });
    out.key = to_pem([&](BIO* b) { return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr); });
    out.fingerprint_sha256 = fingerprint(c);
    return out;
}

}  // namespace

result<certificate_pem> make_certificate(const certificate_spec& spec, const certificate_pem* issuer, std::string* why) {
    ERR_clear_error();
    try {
        return make(spec, issuer);
    } catch (const openssl_failure& e) {
        if (why) *why = e.what();
        ERR_clear_error();
        return unexpected(errc::tls_error);
    }
}

result<self_signed_tls> make_self_signed_server_tls(const std::vector<std::string>& names, std::string* why) {
    if (names.empty()) {
        if (why) *why = "no name for the certificate";
        return unexpected(errc::bad_config);
    }
    certificate_spec spec;
    spec.common_name = names.front();
    spec.alt_names = names;
    auto pem = make_certificate(spec, nullptr, why);
    if (!pem) return unexpected(pem.error());
    auto ctx = make_server_tls_from_pem(*pem, why);
    if (!ctx) return unexpected(ctx.error());
    return self_signed_tls{std::move(*ctx), std::move(pem->fingerprint_sha256)};
}

}  // namespace mailnet::net
