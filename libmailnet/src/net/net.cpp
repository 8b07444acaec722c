// net.cpp: TLS contexts (OpenSSL 3; TLS 1.2 minimum per RFC 8996, no renegotiation) and the
// plain-or-TLS stream with its deadline watchdog (STLS RFC 2595 4, STARTTLS RFC 3207 4, RFC 8314).
#include "mailnet/net/stream.hpp"
#include "mailnet/net/tls.hpp"

#include "openssl_detail.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/address.hpp>
#include <asio/ssl/error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <tuple>
#include <vector>

namespace mailnet::net {
namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// Plain TCP writes, and reads while input keeps coming (the last read filled its buffer), are
// first tried at once (non-blocking): one that completes needs no reactor round (a posted
// completion, an epoll_wait, a coroutine suspension and resumption). Other reads go to Asio's
// call at once: a peer that answers our reply has seldom answered yet, and a read tried here
// first would only add an EAGAIN to Asio's own attempt (measured: 20 sessions on one
// connection each, 7.4 recvfrom per message on main, 13.0 when every read was tried here
// first). After this many in a row the next call takes the reactor's way, which lets the
// other connections run: a peer whose input never runs dry cannot hold the I/O thread.
constexpr int max_inline_ops = 16;

// TLS 1.2 suites: forward secrecy and AEAD only (the "intermediate" profile); TLS 1.3 keeps
// OpenSSL's defaults, which are all AEAD.
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

using detail::openssl_errors;

result<std::shared_ptr<asio::ssl::context>> fail(errc e, std::string* why, std::string reason) {
    if (why) *why = std::move(reason);
    ERR_clear_error();
    return unexpected(e);
}

// Options both sides share: TLS 1.2 minimum, no compression (CRIME), no renegotiation.
bool set_common(SSL_CTX* ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    return SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1;
}

// Strips colons and lowercases; empty if the result is not 64 hex digits.
std::string normalise_fingerprint(const std::string& in) {
    std::string out;
    for (char c : in) {
        if (c == ':') continue;
        if (!std::isxdigit(static_cast<unsigned char>(c))) return {};
        out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return out.size() == 64 ? out : std::string();
}

}  // namespace

// ---- contexts ---------------------------------------------------------------------------

namespace {

// A server context with the settings every one has: TLS 1.2 minimum, our cipher list.
result<std::shared_ptr<asio::ssl::context>> new_server_context(std::string* why) {
    ERR_clear_error();
    SSL_CTX* raw = SSL_CTX_new(TLS_server_method());
    if (!raw) return fail(errc::tls_error, why, "cannot create TLS context: " + openssl_errors());
    // The context owns `raw` from here on and frees it on every return below.
    auto ctx = std::make_shared<asio::ssl::context>(raw);
    if (!set_common(raw)) return fail(errc::tls_error, why, "cannot set TLS 1.2 minimum: " + openssl_errors());
    SSL_CTX_set_options(raw, SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_set_cipher_list(raw, tls12_ciphers) != 1)
        return fail(errc::tls_error, why, "cannot set cipher list: " + openssl_errors());
    return ctx;
}

// Puts `pkey` (consumed) into the context and checks it against the certificate.
bool use_key(SSL_CTX* raw, EVP_PKEY* pkey) {
    const int used = SSL_CTX_use_PrivateKey(raw, pkey);  // takes its own reference
    EVP_PKEY_free(pkey);
    return used == 1 && SSL_CTX_check_private_key(raw) == 1;
}

// No passphrase: an encrypted key fails instead of prompting on a terminal.
int no_passphrase(char*, int, int, void*) { return 0; }

}  // namespace

result<std::shared_ptr<asio::ssl::context>> make_server_tls(const tls_server_options& options, std::string* why) {
    auto ctx = new_server_context(why);
    if (!ctx) return ctx;
    SSL_CTX* raw = (*ctx)->native_handle();
    const std::string cert = options.cert_file.string();
    const std::string key = options.key_file.string();
    if (cert.empty()) return fail(errc::tls_error, why, "no certificate file given");
    if (key.empty()) return fail(errc::tls_error, why, "no private key file given");
    if (SSL_CTX_use_certificate_chain_file(raw, cert.c_str()) != 1)
        return fail(errc::tls_error, why, "cannot read certificate file " + cert + ": " + openssl_errors());
    // Read, then use: OpenSSL's use_PrivateKey_file reports a mismatch as a read failure.
    EVP_PKEY* pkey = nullptr;
    if (BIO* bio = BIO_new_file(key.c_str(), "r")) {
        pkey = PEM_read_bio_PrivateKey(bio, nullptr, no_passphrase, nullptr);
        BIO_free(bio);
    }
    if (!pkey) return fail(errc::tls_error, why, "cannot read private key file " + key + ": " + openssl_errors());
    if (!use_key(raw, pkey))
        return fail(errc::tls_error, why,
                    "private key " + key + " does not match certificate " + cert + ": " + openssl_errors());
    return ctx;
}

result<std::shared_ptr<asio::ssl::context>> make_server_tls_from_pem(const certificate_pem& pem, std::string* why) {
    auto ctx = new_server_context(why);
    if (!ctx) return ctx;
    SSL_CTX* raw = (*ctx)->native_handle();
    X509* cert = nullptr;
    if (BIO* bio = BIO_new_mem_buf(pem.cert.data(), static_cast<int>(pem.cert.size()))) {
        cert = PEM_read_bio_X509(bio, nullptr, no_passphrase, nullptr);
        BIO_free(bio);
    }
    const int used = cert ? SSL_CTX_use_certificate(raw, cert) : 0;  // takes its own reference
    X509_free(cert);
    if (used != 1) return fail(errc::tls_error, why, "cannot use the certificate: " + openssl_errors());
    EVP_PKEY* pkey = nullptr;
    if (BIO* bio = BIO_new_mem_buf(pem.key.data(), static_cast<int>(pem.key.size()))) {
        pkey = PEM_read_bio_PrivateKey(bio, nullptr, no_passphrase, nullptr);
        BIO_free(bio);
    }
    if (!pkey || !use_key(raw, pkey))
        return fail(errc::tls_error, why, "cannot use the private key: " + openssl_errors());
    return ctx;
}

result<std::shared_ptr<asio::ssl::context>> make_client_tls(const tls_client_options& options, std::string* why) {
    const bool pinned = !options.fingerprint_sha256.empty();
    if (pinned && normalise_fingerprint(options.fingerprint_sha256).empty())
        return fail(errc::bad_config, why, "fingerprint must be a SHA-256 digest: 64 hex digits, colons allowed");
    ERR_clear_error();
    SSL_CTX* raw = SSL_CTX_new(TLS_client_method());
    if (!raw) return fail(errc::tls_error, why, "cannot create TLS context: " + openssl_errors());
    auto ctx = std::make_shared<asio::ssl::context>(raw);
    if (!set_common(raw)) return fail(errc::tls_error, why, "cannot set TLS 1.2 minimum: " + openssl_errors());

    if (options.insecure || pinned) {
        // A pin replaces the chain check: the leaf is compared after the handshake.
        SSL_CTX_set_verify(raw, SSL_VERIFY_NONE, nullptr);
        return ctx;
    }
    SSL_CTX_set_verify(raw, SSL_VERIFY_PEER, nullptr);
    if (!options.ca_file.empty()) {
        const std::string ca = options.ca_file.string();
        if (SSL_CTX_load_verify_locations(raw, ca.c_str(), nullptr) != 1)
            return fail(errc::tls_error, why, "cannot read CA file " + ca + ": " + openssl_errors());
    } else if (SSL_CTX_set_default_verify_paths(raw) != 1) {
        return fail(errc::tls_error, why, "cannot load the system CA paths: " + openssl_errors());
    }
    return ctx;
}

std::string sha256_hex_of_der(const unsigned char* der, std::size_t len) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int md_len = 0;
    if (EVP_Digest(der, len, md.data(), &md_len, EVP_sha256(), nullptr) != 1) return {};
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * md_len);
    for (unsigned int i = 0; i < md_len; ++i) {
        out += digits[md[i] >> 4];
        out += digits[md[i] & 0x0f];
    }
    return out;
}

// ---- the watchdog -----------------------------------------------------------------------

// One per stream, owned by it alone. Timer handlers hold a weak_ptr, so a stream destroyed
// with a wait pending is safe: the timer dies with this state, its handler runs with
// operation_aborted and finds nothing to lock. The timer is armed for the earliest deadline
// asked; a deadline moved later is only recorded, and the wait re-arms itself when it fires
// early, so renewing the deadline per write chunk costs no timer syscall.
struct stream_watchdog {
    using clock = stream::clock;
    stream_watchdog(const asio::any_io_executor& ex, asio::ip::tcp::socket& s) : timer(ex), socket(&s) {}

    asio::steady_timer timer;
    asio::ip::tcp::socket* socket;
    clock::time_point deadline = clock::time_point::max();  // what the user asked
    clock::time_point armed_for = clock::time_point::max(); // the pending wait's expiry; max: none
    std::uint64_t generation = 0;                           // bumped per arm/disarm: stale waits ignore themselves
    bool expired = false;                                   // the deadline passed and closed the socket
    bool cancel_only = false;                               // on expiry: cancel, not close (the latest set_deadline's)
};

namespace {

void disarm(stream_watchdog& w) noexcept {
    ++w.generation;
    w.armed_for = stream_watchdog::clock::time_point::max();
    try {
        w.timer.cancel();
    } catch (...) {  // NOTE: cancelling a timer reports no error in practice; nothing to do if it did
    }
}

void arm(const std::shared_ptr<stream_watchdog>& w, stream_watchdog::clock::time_point at) {
    const auto gen = ++w->generation;
    w->armed_for = at;
    w->timer.expires_at(at);  // cancels any previous wait, whose handler then sees a stale generation
    w->timer.async_wait([weak = std::weak_ptr<stream_watchdog>(w), gen](std::error_code) {
        auto w = weak.lock();
        if (!w || gen != w->generation) return;  // stream gone, or re-armed / disarmed since
        w->armed_for = stream_watchdog::clock::time_point::max();
        if (w->expired || w->deadline == stream_watchdog::clock::time_point::max()) return;
        if (stream_watchdog::clock::now() < w->deadline) {
            arm(w, w->deadline);  // moved later meanwhile
            return;
        }
        w->expired = true;
        std::error_code ignored;
        if (w->cancel_only)
            w->socket->cancel(ignored);  // the pending operations end; the owner may still say why
        else
            w->socket->close(ignored);  // completes every pending read, write or handshake with an error
    });
}

}  // namespace

// ---- the stream -------------------------------------------------------------------------

stream::stream(asio::ip::tcp::socket socket, const asio::ip::tcp::endpoint& remote)
    : socket_(std::move(socket)), remote_(remote),
      watchdog_(std::make_shared<stream_watchdog>(socket_.get_executor(), socket_)) {}

stream::stream(asio::ip::tcp::socket socket) : stream(std::move(socket), asio::ip::tcp::endpoint{}) {
    std::error_code ignored;
    remote_ = socket_.remote_endpoint(ignored);
}

stream::~stream() {
    // Members go in reverse order: the watchdog (and its timer) first, then TLS, then the socket.
    disarm(*watchdog_);
}

bool stream::is_open() const noexcept { return socket_.is_open(); }

bool stream::timed_out() const noexcept { return watchdog_->expired; }

stream::clock::time_point stream::deadline() const noexcept { return watchdog_->deadline; }

void stream::set_deadline_cap(clock::time_point cap) {
    cap_ = cap;
    if (watchdog_->deadline > cap) set_deadline(cap);
}

void stream::set_deadline(clock::time_point when, on_expiry then) {
    when = std::min(when, cap_);
    auto& w = *watchdog_;
    w.deadline = when;
    w.cancel_only = then == on_expiry::cancel;
    if (w.expired || !socket_.is_open()) return;
    if (when == clock::time_point::max()) {
        if (w.armed_for != clock::time_point::max()) disarm(w);  // lets io_context::run() return
        return;
    }
    if (when < w.armed_for) arm(watchdog_, when);
}

void stream::clear_timeout() noexcept {
    if (!socket_.is_open()) return;
    watchdog_->expired = false;
    watchdog_->deadline = clock::time_point::max();
    watchdog_->cancel_only = false;
}

void stream::close() noexcept {
    std::error_code ignored;
    socket_.close(ignored);
    watchdog_->deadline = clock::time_point::max();
    disarm(*watchdog_);
}

void stream::cancel() noexcept {
    std::error_code ignored;
    socket_.cancel(ignored);  // a TLS operation's read or write on the socket ends, and with it the operation
}

bool stream::inline_io() {
    if (tls_ || !socket_.is_open()) return false;
    if (inline_ops_ >= max_inline_ops) {
        inline_ops_ = 0;  // this one goes through the reactor: a turn for the others
        return false;
    }
    if (!socket_.non_blocking()) {
        std::error_code ec;
        socket_.non_blocking(true, ec);  // one ioctl per socket (Asio's own async ops need it too)
        if (ec) return false;
    }
    return true;
}

asio::awaitable<std::size_t> stream::read_some(asio::mutable_buffer buf, std::error_code& ec) {
    std::size_t n = 0;
    if (tls_) {
        std::tie(ec, n) = co_await tls_->async_read_some(buf, use_tuple);
    } else {
        ec = asio::error::would_block;
        if (read_filled_ && inline_io()) {
            n = socket_.read_some(buf, ec);  // never waits: the socket is non-blocking
            if (ec != asio::error::would_block) ++inline_ops_;
        }
        if (ec == asio::error::would_block) {
            inline_ops_ = 0;  // it may wait: the others run meanwhile
            std::tie(ec, n) = co_await socket_.async_read_some(buf, use_tuple);
        }
        read_filled_ = !ec && n == buf.size();
    }
    if (ec && watchdog_->expired) ec = make_error_code(errc::timed_out);
    co_return n;
}

asio::awaitable<std::error_code> stream::write_all(asio::const_buffer buf) {
    constexpr std::size_t chunk_octets = 64 * 1024;
    const auto* p = static_cast<const unsigned char*>(buf.data());
    std::size_t left = buf.size();
    if (progress_timeout_.count() > 0) set_deadline(clock::now() + progress_timeout_);
    while (left > 0) {
        const auto chunk = asio::buffer(p, std::min(left, chunk_octets));
        std::error_code ec;
        std::size_t n = 0;
        if (tls_) {
            std::tie(ec, n) = co_await asio::async_write(*tls_, chunk, use_tuple);
        } else {
            ec = asio::error::would_block;
            if (inline_io()) {
                n = socket_.write_some(chunk, ec);  // what the socket buffer takes now, never waiting
                if (ec != asio::error::would_block) ++inline_ops_;
            }
            if (ec == asio::error::would_block) {
                // The rest waits for the peer to read.
                inline_ops_ = 0;
                std::tie(ec, n) = co_await asio::async_write(socket_, chunk, use_tuple);
            }
        }
        if (ec) co_return watchdog_->expired ? make_error_code(errc::timed_out) : ec;
        p += n;
        left -= n;
        if (progress_timeout_.count() > 0) set_deadline(clock::now() + progress_timeout_);
    }
    co_return std::error_code{};
}

std::error_code stream::handshake_failed(std::error_code ec, std::string* why) {
    std::string reason;
    errc code = errc::tls_error;
    if (watchdog_->expired) {
        code = errc::timed_out;
        reason = "TLS handshake timed out";
    } else if (const long vr = tls_ ? SSL_get_verify_result(tls_->native_handle()) : X509_V_OK; vr != X509_V_OK) {
        reason = std::string("certificate verification failed: ") + X509_verify_cert_error_string(vr);
    } else if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
        reason = "the peer closed the connection during the TLS handshake";
    } else {
        reason = "TLS handshake failed: " + ec.message();
    }
    if (why) *why = std::move(reason);
    ERR_clear_error();
    close();  // NOTE: a failed handshake leaves the TLS state unusable; nothing may follow it
    return make_error_code(code);
}

asio::awaitable<std::error_code> stream::handshake(asio::ssl::stream_base::handshake_type type,
                                                   std::chrono::seconds timeout, std::string* why) {
    const auto saved = watchdog_->deadline;
    if (timeout.count() > 0) set_deadline(clock::now() + timeout);
    auto [ec] = co_await tls_->async_handshake(type, use_tuple);
    if (ec || watchdog_->expired) co_return handshake_failed(ec, why);
    set_deadline(saved);
    co_return std::error_code{};
}

asio::awaitable<std::error_code> stream::server_handshake(asio::ssl::context& ctx, std::chrono::seconds timeout,
                                                          std::string* why) {
    if (tls_) {
        if (why) *why = "TLS is already on";
        co_return make_error_code(errc::tls_error);
    }
    tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(socket_, ctx);
    co_return co_await handshake(asio::ssl::stream_base::server, timeout, why);
}

asio::awaitable<std::error_code> stream::client_handshake(asio::ssl::context& ctx, const std::string& host,
                                                          const tls_client_options& verify,
                                                          std::chrono::seconds timeout, std::string* why) {
    if (tls_) {
        if (why) *why = "TLS is already on";
        co_return make_error_code(errc::tls_error);
    }
    const bool pinned = !verify.fingerprint_sha256.empty();
    const std::string pin = normalise_fingerprint(verify.fingerprint_sha256);
    if (pinned && pin.empty()) {
        if (why) *why = "fingerprint must be a SHA-256 digest: 64 hex digits, colons allowed";
        co_return make_error_code(errc::bad_config);
    }
    const bool check_name = !verify.insecure && !pinned;
    if (check_name && host.empty()) {
        if (why) *why = "no host name to check the certificate against";
        co_return make_error_code(errc::tls_error);
    }

    tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(socket_, ctx);
    SSL* ssl = tls_->native_handle();
    // An IP literal, possibly in brackets, gets no SNI (RFC 6066 3) and is matched against
    // the certificate's iPAddress names (RFC 6125 6.2).
    std::string literal = host;
    if (literal.size() > 2 && literal.front() == '[' && literal.back() == ']')
        literal = literal.substr(1, literal.size() - 2);
    std::error_code not_ip;
    (void)asio::ip::make_address(literal, not_ip);
    const bool is_ip = !not_ip;

    bool ok = true;
    if (!is_ip && !host.empty()) ok = SSL_set_tlsext_host_name(ssl, host.c_str()) == 1;
    if (check_name) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
        if (is_ip) {
            ok = ok && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), literal.c_str()) == 1;
        } else {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = ok && SSL_set1_host(ssl, host.c_str()) == 1;
        }
    } else {
        SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
    }
    if (!ok) {
        if (why) *why = "cannot set the server name " + host + ": " + openssl_errors();
        close();
        co_return make_error_code(errc::tls_error);
    }

    const auto ec = co_await handshake(asio::ssl::stream_base::client, timeout, why);
    if (ec) {
        const long vr = SSL_get_verify_result(ssl);
        if (why && (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH))
            *why += " (the certificate is not for " + host + ")";
        co_return ec;
    }

    if (pinned) {
        X509* leaf = SSL_get0_peer_certificate(ssl);
        std::string got;
        if (leaf) {
            const int len = i2d_X509(leaf, nullptr);
            if (len > 0) {
                std::vector<unsigned char> der(static_cast<std::size_t>(len));
                unsigned char* out = der.data();
                if (i2d_X509(leaf, &out) == len) got = sha256_hex_of_der(der.data(), der.size());
            }
        }
        if (got != pin) {
            if (why)
                *why = got.empty() ? std::string("fingerprint mismatch: the server sent no certificate")
                                   : "fingerprint mismatch: the server's certificate has SHA-256 " + got;
            close();
            co_return make_error_code(errc::tls_error);
        }
    }
    co_return std::error_code{};
}

asio::awaitable<void> stream::shutdown(std::chrono::seconds timeout) {
    if (tls_ && socket_.is_open() && SSL_is_init_finished(tls_->native_handle())) {
        // close_notify (RFC 8446 6.1); asio then waits for the peer's, hence the bound.
        set_deadline(clock::now() + timeout);
        (void)co_await tls_->async_shutdown(use_tuple);
    }
    std::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    close();
}

std::string stream::tls_description() const {
    if (!tls_) return {};
    SSL* ssl = tls_->native_handle();
    if (!SSL_is_init_finished(ssl)) return {};
    return std::string(SSL_get_version(ssl)) + " " + SSL_get_cipher_name(ssl);
}

// ---- connecting ---------------------------------------------------------------------------

asio::awaitable<result<asio::ip::tcp::socket>> connect_to(asio::any_io_executor ex, std::string host,
                                                           std::uint16_t port, std::chrono::seconds timeout,
                                                           std::string* why) {
    // Shared with the deadline's handler and with the lookup, both of which may finish after
    // this frame is gone.
    struct attempt {
        explicit attempt(const asio::any_io_executor& e) : resolver(e), socket(e), deadline(e), wake(e) {}
        asio::ip::tcp::resolver resolver;
        asio::ip::tcp::socket socket;
        asio::steady_timer deadline;
        asio::steady_timer wake;  // cancelled when the lookup ends or the deadline passes
        bool expired = false;
        bool resolved = false;
        std::error_code resolve_error;
        asio::ip::tcp::resolver::results_type endpoints;
    };
    auto a = std::make_shared<attempt>(ex);
    if (timeout.count() > 0) {
        a->deadline.expires_after(timeout);
        a->deadline.async_wait([weak = std::weak_ptr<attempt>(a)](std::error_code ec) {
            auto s = weak.lock();
            if (ec || !s) return;
            s->expired = true;
            s->resolver.cancel();
            s->wake.cancel();
            std::error_code ignored;
            s->socket.close(ignored);
        });
    }
    const auto fail = [&](std::error_code ec, std::string reason) -> result<asio::ip::tcp::socket> {
        a->deadline.cancel();
        if (a->expired) {
            ec = make_error_code(errc::timed_out);
            reason = "no connection to " + host + " within " + std::to_string(timeout.count()) + " s";
        }
        if (why) *why = std::move(reason);
        return unexpected(ec);
    };
    std::vector<asio::ip::tcp::endpoint> endpoints;
    // An address literal (IPv4, or IPv6 without brackets as getaddrinfo takes it) needs no
    // lookup: no resolver thread is started for it (asio runs getaddrinfo on a thread of its
    // own, about half a millisecond before the first connect).
    // NOTE: not one with a zone (`fe80::1%eth0`): Asio reads an unknown zone as 0 where
    // getaddrinfo refuses it, so those are looked up as before.
    std::error_code literal_error;
    const auto literal = host.find('%') == std::string::npos ? asio::ip::make_address(host, literal_error)
                                                             : asio::ip::address();
    if (host.find('%') == std::string::npos && !literal_error) {
        endpoints.emplace_back(literal, port);
    } else {
        // NOTE: a lookup already inside getaddrinfo cannot be cancelled (Asio runs it on a
        // thread of its own), so it runs detached and the deadline only stops the waiting for it.
        asio::co_spawn(
            ex,
            [a, host, port]() -> asio::awaitable<void> {
                auto [ec, endpoints] = co_await a->resolver.async_resolve(host, std::to_string(port), use_tuple);
                a->resolve_error = ec;
                a->endpoints = std::move(endpoints);
                a->resolved = true;
                a->wake.cancel();
            },
            asio::detached);
        a->wake.expires_at(asio::steady_timer::time_point::max());
        while (!a->resolved && !a->expired) (void)co_await a->wake.async_wait(use_tuple);
        if (!a->resolved) co_return fail(make_error_code(errc::timed_out), {});
        if (a->resolve_error || a->endpoints.empty())
            co_return fail(make_error_code(errc::not_found),
                           "cannot resolve " + host + ": " +
                               (a->resolve_error ? a->resolve_error.message() : std::string("no address")));
        for (const auto& e : a->endpoints) endpoints.push_back(e.endpoint());
    }
    std::error_code last;
    for (const auto& e : endpoints) {
        if (a->expired) break;
        std::error_code ignored;
        a->socket.close(ignored);
        auto [cec] = co_await a->socket.async_connect(e, use_tuple);
        if (!cec && !a->expired) {
            a->deadline.cancel();
            co_return std::move(a->socket);
        }
        last = cec;
    }
    co_return fail(last ? last : make_error_code(errc::io_error),
                   "cannot connect to " + host + " port " + std::to_string(port) + ": " +
                       (last ? last.message() : std::string("no address answered")));
}

}  // namespace mailnet::net
