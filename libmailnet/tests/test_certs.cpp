// test_certs.cpp: builds the test PKI with OpenSSL 3's C API: EC keys, X.509 v3 certificates
// with the RFC 5280 4.2.1 extensions a verifier checks (basicConstraints, keyUsage, SAN, EKU).
#include "test_certs.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdlib.h>  // mkdtemp

#include <array>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <utility>
#include <vector>

namespace mailnet::test_support {
namespace {

struct pkey_free { void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); } };
struct x509_free { void operator()(X509* x) const { X509_free(x); } };
struct ext_free { void operator()(X509_EXTENSION* e) const { X509_EXTENSION_free(e); } };
struct bio_free { void operator()(BIO* b) const { BIO_free(b); } };
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;
using x509_ptr = std::unique_ptr<X509, x509_free>;

[[noreturn]] void fail(const std::string& what) {
    std::string reason = what;
    while (unsigned long e = ERR_get_error()) {
        std::array<char, 256> buf{};
        ERR_error_string_n(e, buf.data(), buf.size());
        reason += ": ";
        reason += buf.data();
    }
    throw std::runtime_error("test_pki: " + reason);
}

pkey_ptr make_key() {
    pkey_ptr key(EVP_EC_gen("P-256"));
    if (!key) fail("cannot generate a P-256 key");
    return key;
}

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    std::unique_ptr<X509_EXTENSION, ext_free> ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
    if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) fail(std::string("cannot add extension ") + value);
}

// A v3 certificate for `cn`, signed by `issuer_key` (self-signed when issuer is null).
x509_ptr make_cert(const char* cn, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key, bool is_ca, const char* san) {
    x509_ptr cert(X509_new());
    if (!cert) fail("X509_new");
    X509* c = cert.get();
    if (X509_set_version(c, X509_VERSION_3) != 1) fail("X509_set_version");

    std::array<unsigned char, 16> serial{};
    if (RAND_bytes(serial.data(), static_cast<int>(serial.size())) != 1) fail("RAND_bytes");
    serial[0] &= 0x7f;  // positive (RFC 5280 4.1.2.2)
    BIGNUM* bn = BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c))) {
        BN_free(bn);
        fail("serial number");
    }
    BN_free(bn);

    if (!X509_gmtime_adj(X509_getm_notBefore(c), -3600) || !X509_gmtime_adj(X509_getm_notAfter(c), 24 * 3600))
        fail("validity");
    X509_NAME* name = X509_get_subject_name(c);
    if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("mailnet tests"),
                                   -1, -1, 0) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn), -1, -1,
                                   0) != 1)
        fail("subject name");
    if (X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : name) != 1) fail("issuer name");
    if (X509_set_pubkey(c, key) != 1) fail("X509_set_pubkey");

    X509* signer = issuer ? issuer : c;
    if (is_ca) {
        add_ext(c, signer, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(c, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(c, signer, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(c, signer, NID_key_usage, "critical,digitalSignature");
        add_ext(c, signer, NID_ext_key_usage, "serverAuth");
    }
    add_ext(c, signer, NID_subject_key_identifier, "hash");
    if (issuer) add_ext(c, signer, NID_authority_key_identifier, "keyid:always");
    if (san) add_ext(c, signer, NID_subject_alt_name, san);

    if (X509_sign(c, issuer_key ? issuer_key : key, EVP_sha256()) <= 0) fail(std::string("cannot sign ") + cn);
    return cert;
}

std::unique_ptr<BIO, bio_free> open_for_writing(const std::filesystem::path& p) {
    std::unique_ptr<BIO, bio_free> bio(BIO_new_file(p.c_str(), "w"));
    if (!bio) fail("cannot create " + p.string());
    return bio;
}

void write_cert(const std::filesystem::path& p, X509* cert) {
    auto bio = open_for_writing(p);
    if (PEM_write_bio_X509(bio.get(), cert) != 1) fail("cannot write " + p.string());
}

void write_key(const std::filesystem::path& p, EVP_PKEY* key) {
    auto bio = open_for_writing(p);
    if (PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
        fail("cannot write " + p.string());
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

}  // namespace

test_pki test_pki::create() {
    ERR_clear_error();
    std::string tmpl = (std::filesystem::temp_directory_path() / "mailnet-pki-XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) throw std::system_error(errno, std::generic_category(), "test_pki: mkdtemp");

    test_pki pki;  // from here on, its destructor removes the directory if anything throws
    pki.dir = buf.data();
    pki.ca_cert = pki.dir / "ca.pem";
    pki.server_cert = pki.dir / "server.pem";
    pki.server_key = pki.dir / "server-key.pem";
    pki.other_cert = pki.dir / "other.pem";
    pki.other_key = pki.dir / "other-key.pem";

    auto ca_key = make_key();
    auto ca = make_cert("mailnet test CA", ca_key.get(), nullptr, nullptr, true, nullptr);
    auto server_key = make_key();
    auto server = make_cert("localhost", server_key.get(), ca.get(), ca_key.get(), false,
                            "DNS:localhost,IP:127.0.0.1");
    auto other_key = make_key();
    auto other = make_cert("other.example", other_key.get(), nullptr, nullptr, false, "DNS:other.example");

    write_cert(pki.ca_cert, ca.get());
    write_cert(pki.server_cert, server.get());
    write_key(pki.server_key, server_key.get());
    write_cert(pki.other_cert, other.get());
    write_key(pki.other_key, other_key.get());
    pki.server_fingerprint = fingerprint(server.get());
    pki.other_fingerprint = fingerprint(other.get());
    return pki;
}

test_pki::test_pki(test_pki&& other) noexcept
    : dir(std::exchange(other.dir, {})),
      ca_cert(std::move(other.ca_cert)),
      server_cert(std::move(other.server_cert)),
      server_key(std::move(other.server_key)),
      other_cert(std::move(other.other_cert)),
      other_key(std::move(other.other_key)),
      server_fingerprint(std::move(other.server_fingerprint)),
      other_fingerprint(std::move(other.other_fingerprint)) {}

test_pki& test_pki::operator=(test_pki&& other) noexcept {
    if (this != &other) {
        test_pki gone(std::move(*this));
        dir = std::exchange(other.dir, {});
        ca_cert = std::move(other.ca_cert);
        server_cert = std::move(other.server_cert);
        server_key = std::move(other.server_key);
        other_cert = std::move(other.other_cert);
        other_key = std::move(other.other_key);
        server_fingerprint = std::move(other.server_fingerprint);
        other_fingerprint = std::move(other.other_fingerprint);
    }
    return *this;
}

test_pki::~test_pki() {
    if (dir.empty()) return;
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
}

}  // namespace mailnet::test_support
