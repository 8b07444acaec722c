// test_certs.cpp: the test PKI, made with libmailnet's make_certificate (OpenSSL 3's C API: EC
// keys, X.509 v3 with the RFC 5280 4.2.1 extensions a verifier checks) and written to files.
#include "test_certs.hpp"

#include <stdlib.h>  // mkdtemp

#include <fstream>
#include <stdexcept>
#include <system_error>
#include <utility>
#include <vector>

#include "mailnet/net/tls.hpp"

namespace mailnet::test_support {
namespace {

net::certificate_pem make(const std::string& cn, std::vector<std::string> alt_names, bool ca,
                          const net::certificate_pem* issuer) {
    net::certificate_spec spec;
    spec.common_name = cn;
    spec.alt_names = std::move(alt_names);
    spec.ca = ca;
    spec.organisation = "mailnet tests";
    std::string why;
    auto made = net::make_certificate(spec, issuer, &why);
    if (!made) throw std::runtime_error("test_pki: " + why);
    return std::move(*made);
}

void write_file(const std::filesystem::path& p, const std::string& text) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << text;
    if (!f.flush()) throw std::runtime_error("test_pki: cannot write " + p.string());
}

}  // namespace

test_pki test_pki::create() {
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

    const auto ca = make("mailnet test CA", {}, true, nullptr);
    const auto server = make("localhost", {"localhost", "127.0.0.1"}, false, &ca);
    const auto other = make("other.example", {"other.example"}, false, nullptr);
    write_file(pki.ca_cert, ca.cert);
    write_file(pki.server_cert, server.cert);
    write_file(pki.server_key, server.key);
    write_file(pki.other_cert, other.cert);
    write_file(pki.other_key, other.key);
    pki.server_fingerprint = server.fingerprint_sha256;
    pki.other_fingerprint = other.fingerprint_sha256;
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
