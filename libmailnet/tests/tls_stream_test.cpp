// tls_stream_test.cpp: TLS contexts and the plain/TLS stream over real loopback sockets:
// STLS-style upgrade (RFC 2595 4), implicit TLS (RFC 8314), verification, pinning, deadlines.
#include "mailnet/net/stream.hpp"
#include "mailnet/net/tls.hpp"
#include "test_certs.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <asio/ssl/error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <openssl/ssl.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <source_location>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using asio::ip::tcp;
using mailnet::errc;
using mailnet::net::stream;
using mailnet::test_support::test_pki;
using clock_type = std::chrono::steady_clock;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
// NOTE: g++ 12 miscompiles a temporary aggregate with non-trivial members (`{{}, {}, true}`,
// `tls_client_options{}`) passed to a co_await'ed call: ASan sees a bad or double free. Name it.
const mailnet::net::tls_client_options insecure_options{{}, {}, true};
const std::string localhost = "localhost";

// Lets one side wait until the other says so (keeps a silent peer's socket open).
class gate {
public:
    explicit gate(const asio::any_io_executor& ex) : timer_(ex, asio::steady_timer::time_point::max()) {}
    void open() {
        opened_ = true;
        timer_.cancel();
    }
    asio::awaitable<void> wait() {
        if (!opened_) (void)co_await timer_.async_wait(use_tuple);
    }

private:
    asio::steady_timer timer_;
    bool opened_ = false;
};

using side = std::function<asio::awaitable<void>(stream&, gate&)>;

// Connects a client to a server over 127.0.0.1, runs both sides, and fails the test if they
// have not both finished within `limit`.
void run_pair(const side& server, const side& client, std::chrono::seconds limit = 10s) {
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    const auto ep = acceptor.local_endpoint();
    gate g(ioc.get_executor());
    int done = 0;
    auto finished = [&](std::exception_ptr e) {
        ++done;
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            ADD_FAILURE() << "exception: " << x.what();
        }
    };
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
            EXPECT_FALSE(ec) << ec.message();
            if (ec) co_return;
            stream s(std::move(sock));
            co_await server(s, g);
        },
        finished);
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            tcp::socket sock(ioc);
            auto [ec] = co_await sock.async_connect(ep, use_tuple);
            EXPECT_FALSE(ec) << ec.message();
            if (ec) co_return;
            stream s(std::move(sock));
            co_await client(s, g);
        },
        finished);
    ioc.run_for(limit);
    EXPECT_EQ(done, 2) << "the exchange did not finish within " << limit.count() << " s";
}

// Reads one CRLF line byte by byte, so nothing after it is consumed (it may be TLS).
asio::awaitable<std::string> read_line(stream& s) {
    std::string out;
    while (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0) {
        char c = 0;
        std::error_code ec;
        const auto n = co_await s.read_some(asio::buffer(&c, 1), ec);
        if (ec || n == 0) co_return out + "<" + ec.message() + ">";
        out += c;
    }
    co_return out;
}

asio::awaitable<std::error_code> write(stream& s, std::string_view text) {
    co_return co_await s.write_all(asio::buffer(text));
}

// What is awaited is held in a named local before a check tests it, here and in every test:
// g++ 12 can lay out a coroutine frame wrongly when a co_await is an if's condition, and each
// EXPECT_ and ASSERT_ expands to one (docs/libmailnet.md, "Coroutines and g++ 12").
// A failure names the caller's line.
asio::awaitable<void> send(stream& s, std::string_view text, std::source_location at = std::source_location::current()) {
    const auto ec = co_await write(s, text);
    if (ec)
        ADD_FAILURE_AT(at.file_name(), at.line())
            << "writing " << testing::PrintToString(std::string(text)) << ": " << ec.message();
}

asio::awaitable<void> expect_line(stream& s, std::string_view expected,
                                  std::source_location at = std::source_location::current()) {
    const auto line = co_await read_line(s);
    if (line != expected)
        ADD_FAILURE_AT(at.file_name(), at.line())
            << "read " << testing::PrintToString(line) << ", expected " << testing::PrintToString(std::string(expected));
}

// Reads until an error; returns it.
asio::awaitable<std::error_code> read_to_end(stream& s) {
    std::array<char, 4096> buf{};
    for (;;) {
        std::error_code ec;
        co_await s.read_some(asio::buffer(buf), ec);
        if (ec) co_return ec;
    }
}

std::shared_ptr<asio::ssl::context> server_ctx(const std::filesystem::path& cert, const std::filesystem::path& key) {
    std::string why;
    auto ctx = mailnet::net::make_server_tls({cert, key}, &why);
    EXPECT_TRUE(ctx) << why;
    return ctx ? *ctx : nullptr;
}

std::shared_ptr<asio::ssl::context> client_ctx(const mailnet::net::tls_client_options& o) {
    std::string why;
    auto ctx = mailnet::net::make_client_tls(o, &why);
    EXPECT_TRUE(ctx) << why;
    return ctx ? *ctx : nullptr;
}

std::string with_colons_upper(const std::string& hex) {
    std::string out;
    for (std::size_t i = 0; i < hex.size(); ++i) {
        if (i > 0 && i % 2 == 0) out += ':';
        out += static_cast<char>(std::toupper(static_cast<unsigned char>(hex[i])));
    }
    return out;
}

// The outcome of a verification attempt from the client's side.
struct client_outcome {
    std::error_code ec;
    std::string why;
    std::string description;
};

// Server: implicit TLS with `cert`/`key`; client: handshake to `host` under `verify`. After a
// successful handshake, one line each way proves the channel works.
client_outcome try_client(const std::filesystem::path& cert, const std::filesystem::path& key,
                          const std::string& host, const mailnet::net::tls_client_options& verify) {
    auto sctx = server_ctx(cert, key);
    auto cctx = client_ctx(verify);
    client_outcome out;
    if (!sctx || !cctx) return out;
    run_pair(
        [&](stream& s, gate&) -> asio::awaitable<void> {
            auto ec = co_await s.server_handshake(*sctx, 5s);
            // A client that rejects the server after the handshake (pin) closes: then no line.
            if (ec) co_return;
            const auto line = co_await read_line(s);
            if (line != "hello\r\n") co_return;
            co_await send(s, "world\r\n");
            co_await s.shutdown(2s);
        },
        [&](stream& s, gate&) -> asio::awaitable<void> {
            out.ec = co_await s.client_handshake(*cctx, host, verify, 5s, &out.why);
            if (out.ec) {
                EXPECT_FALSE(s.is_open());
                co_return;
            }
            out.description = s.tls_description();
            co_await send(s, "hello\r\n");
            co_await expect_line(s, "world\r\n");
            co_await s.shutdown(2s);
        });
    return out;
}

// ---- contexts -----------------------------------------------------------------------------

TEST(tls, server_context_loads_and_sets_policy) {
    auto pki = test_pki::create();
    std::string why;
    auto ctx = mailnet::net::make_server_tls({pki.server_cert, pki.server_key}, &why);
    ASSERT_TRUE(ctx) << why;
    SSL_CTX* raw = (*ctx)->native_handle();
    EXPECT_EQ(SSL_CTX_get_min_proto_version(raw), TLS1_2_VERSION);
    const auto opts = SSL_CTX_get_options(raw);
    EXPECT_TRUE(opts & SSL_OP_NO_RENEGOTIATION);
    EXPECT_TRUE(opts & SSL_OP_NO_COMPRESSION);
    EXPECT_TRUE(opts & SSL_OP_CIPHER_SERVER_PREFERENCE);
}

TEST(tls, client_context_sets_policy) {
    auto pki = test_pki::create();
    std::string why;
    auto ctx = mailnet::net::make_client_tls({pki.ca_cert, {}, false}, &why);
    ASSERT_TRUE(ctx) << why;
    SSL_CTX* raw = (*ctx)->native_handle();
    EXPECT_EQ(SSL_CTX_get_min_proto_version(raw), TLS1_2_VERSION);
    EXPECT_TRUE(SSL_CTX_get_options(raw) & SSL_OP_NO_RENEGOTIATION);
    EXPECT_EQ(SSL_CTX_get_verify_mode(raw), SSL_VERIFY_PEER);
    auto insecure = mailnet::net::make_client_tls({{}, {}, true}, &why);
    ASSERT_TRUE(insecure) << why;
    EXPECT_EQ(SSL_CTX_get_verify_mode((*insecure)->native_handle()), SSL_VERIFY_NONE);
    auto system = mailnet::net::make_client_tls({}, &why);  // the system's default paths
    ASSERT_TRUE(system) << why;
}

TEST(tls, server_context_missing_file_is_tls_error_with_reason) {
    auto pki = test_pki::create();
    std::string why;
    auto ctx = mailnet::net::make_server_tls({pki.dir / "missing.pem", pki.server_key}, &why);
    ASSERT_FALSE(ctx);
    EXPECT_EQ(ctx.error(), errc::tls_error);
    EXPECT_NE(why.find("cannot read certificate file"), std::string::npos) << why;
    EXPECT_NE(why.find("missing.pem"), std::string::npos) << why;

    ctx = mailnet::net::make_server_tls({pki.server_cert, pki.dir / "missing-key.pem"}, &why);
    ASSERT_FALSE(ctx);
    EXPECT_EQ(ctx.error(), errc::tls_error);
    EXPECT_NE(why.find("missing-key.pem"), std::string::npos) << why;

    ctx = mailnet::net::make_server_tls({}, nullptr);  // no reason asked: still an error
    EXPECT_EQ(ctx.error(), errc::tls_error);
}

TEST(tls, server_context_mismatched_key_is_tls_error) {
    auto pki = test_pki::create();
    std::string why;
    auto ctx = mailnet::net::make_server_tls({pki.server_cert, pki.other_key}, &why);
    ASSERT_FALSE(ctx);
    EXPECT_EQ(ctx.error(), errc::tls_error);
    EXPECT_NE(why.find("does not match"), std::string::npos) << why;
}

TEST(tls, server_context_not_pem_is_tls_error) {
    auto pki = test_pki::create();
    const auto junk = pki.dir / "junk.pem";
    std::ofstream(junk) << "this is not PEM\n";
    std::string why;
    auto ctx = mailnet::net::make_server_tls({junk, pki.server_key}, &why);
    ASSERT_FALSE(ctx);
    EXPECT_EQ(ctx.error(), errc::tls_error);
    EXPECT_NE(why.find("junk.pem"), std::string::npos) << why;
    ctx = mailnet::net::make_server_tls({pki.server_cert, pki.ca_cert}, &why);  // a certificate as key
    ASSERT_FALSE(ctx);
    EXPECT_EQ(ctx.error(), errc::tls_error);
}

TEST(tls, client_context_checks_fingerprint_syntax) {
    auto pki = test_pki::create();
    std::string why;
    for (const std::string& bad : {std::string("abc"), std::string(64, 'z'), std::string(65, 'a'), std::string(63, '0') + ":"}) {
        auto ctx = mailnet::net::make_client_tls({{}, bad, false}, &why);
        ASSERT_FALSE(ctx) << bad;
        EXPECT_EQ(ctx.error(), errc::bad_config) << bad;
        EXPECT_NE(why.find("64 hex digits"), std::string::npos) << why;
    }
    EXPECT_TRUE(mailnet::net::make_client_tls({{}, pki.server_fingerprint, false}, &why)) << why;
    EXPECT_TRUE(mailnet::net::make_client_tls({{}, with_colons_upper(pki.server_fingerprint), false}, &why)) << why;
}

TEST(tls, client_context_missing_ca_is_tls_error) {
    auto pki = test_pki::create();
    std::string why;
    auto ctx = mailnet::net::make_client_tls({pki.dir / "no-ca.pem", {}, false}, &why);
    ASSERT_FALSE(ctx);
    EXPECT_EQ(ctx.error(), errc::tls_error);
    EXPECT_NE(why.find("no-ca.pem"), std::string::npos) << why;
}

TEST(tls, sha256_hex_of_der) {
    const unsigned char abc[] = {'a', 'b', 'c'};
    EXPECT_EQ(mailnet::net::sha256_hex_of_der(abc, 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(tls, test_pki_removes_its_directory) {
    std::filesystem::path dir;
    {
        auto pki = test_pki::create();
        dir = pki.dir;
        EXPECT_TRUE(std::filesystem::exists(pki.ca_cert));
        EXPECT_TRUE(std::filesystem::exists(pki.other_key));
        EXPECT_EQ(pki.server_fingerprint.size(), 64u);
        test_pki moved = std::move(pki);
        EXPECT_EQ(moved.dir, dir);
    }
    EXPECT_FALSE(std::filesystem::exists(dir));
}

// ---- plain and upgraded streams -----------------------------------------------------------

TEST(stream, plain_echo) {
    run_pair(
        [](stream& s, gate&) -> asio::awaitable<void> {
            EXPECT_FALSE(s.is_tls());
            EXPECT_TRUE(s.remote_endpoint().address().is_loopback());
            const auto line = co_await read_line(s);
            EXPECT_EQ(line, "ping\r\n");
            co_await send(s, line);
            {
                const auto got = co_await read_to_end(s);
                EXPECT_EQ(got, asio::error::eof);
            }
            co_await s.shutdown();
        },
        [](stream& s, gate&) -> asio::awaitable<void> {
            co_await send(s, "ping\r\n");
            co_await expect_line(s, "ping\r\n");
            EXPECT_EQ(s.tls_description(), "");
            co_await s.shutdown();
            EXPECT_FALSE(s.is_open());
        });
}

TEST(stream, upgrade_in_place) {
    auto pki = test_pki::create();
    auto sctx = server_ctx(pki.server_cert, pki.server_key);
    const mailnet::net::tls_client_options verify{pki.ca_cert, {}, false};
    auto cctx = client_ctx(verify);
    ASSERT_TRUE(sctx && cctx);
    std::string server_desc;
    std::string client_desc;
    run_pair(
        [&](stream& s, gate&) -> asio::awaitable<void> {
            co_await expect_line(s, "STLS\r\n");
            co_await send(s, "+OK begin TLS\r\n");
            std::string why;
            auto ec = co_await s.server_handshake(*sctx, 5s, &why);
            EXPECT_FALSE(ec) << why;
            if (ec) co_return;
            EXPECT_TRUE(s.is_tls());
            server_desc = s.tls_description();
            co_await expect_line(s, "CAPA\r\n");
            co_await send(s, "+OK\r\n");
            {
                const auto got = co_await read_to_end(s);
                EXPECT_EQ(got, asio::error::eof);  // the client's close_notify
            }
            co_await s.shutdown(2s);
        },
        [&](stream& s, gate&) -> asio::awaitable<void> {
            co_await send(s, "STLS\r\n");
            co_await expect_line(s, "+OK begin TLS\r\n");
            std::string why;
            auto ec = co_await s.client_handshake(*cctx, localhost, verify, 5s, &why);
            EXPECT_FALSE(ec) << why;
            if (ec) co_return;
            client_desc = s.tls_description();
            co_await send(s, "CAPA\r\n");
            co_await expect_line(s, "+OK\r\n");
            co_await s.shutdown(2s);
        });
    EXPECT_EQ(server_desc.rfind("TLSv1.", 0), 0u) << server_desc;
    EXPECT_EQ(client_desc, server_desc);
}

TEST(stream, implicit_tls_with_verification) {
    auto pki = test_pki::create();
    auto out = try_client(pki.server_cert, pki.server_key, "localhost", {pki.ca_cert, {}, false});
    EXPECT_FALSE(out.ec) << out.why;
    EXPECT_EQ(out.description.rfind("TLSv1.", 0), 0u) << out.description;
}

TEST(stream, verifies_ip_literal) {
    auto pki = test_pki::create();
    auto out = try_client(pki.server_cert, pki.server_key, "127.0.0.1", {pki.ca_cert, {}, false});
    EXPECT_FALSE(out.ec) << out.why;
    out = try_client(pki.server_cert, pki.server_key, "127.0.0.2", {pki.ca_cert, {}, false});
    EXPECT_EQ(out.ec, errc::tls_error);
    EXPECT_NE(out.why.find("IP address mismatch"), std::string::npos) << out.why;
}

TEST(stream, wrong_host_name_fails) {
    auto pki = test_pki::create();
    auto out = try_client(pki.server_cert, pki.server_key, "example.org", {pki.ca_cert, {}, false});
    EXPECT_EQ(out.ec, errc::tls_error);
    EXPECT_NE(out.why.find("hostname mismatch"), std::string::npos) << out.why;
}

TEST(stream, self_signed_certificate_fails) {
    auto pki = test_pki::create();
    auto out = try_client(pki.other_cert, pki.other_key, "other.example", {pki.ca_cert, {}, false});
    EXPECT_EQ(out.ec, errc::tls_error);
    EXPECT_NE(out.why.find("self-signed"), std::string::npos) << out.why;
}

TEST(stream, unknown_ca_fails) {
    auto pki = test_pki::create();
    auto out = try_client(pki.server_cert, pki.server_key, "localhost", {});  // system CAs only
    EXPECT_EQ(out.ec, errc::tls_error);
    EXPECT_NE(out.why.find("certificate verification failed"), std::string::npos) << out.why;
}

TEST(stream, insecure_accepts_any_certificate) {
    auto pki = test_pki::create();
    auto out = try_client(pki.other_cert, pki.other_key, "localhost", {{}, {}, true});
    EXPECT_FALSE(out.ec) << out.why;
}

TEST(stream, fingerprint_pin) {
    auto pki = test_pki::create();
    auto out = try_client(pki.other_cert, pki.other_key, "somewhere.invalid",
                          {{}, with_colons_upper(pki.other_fingerprint), false});
    EXPECT_FALSE(out.ec) << out.why;
    out = try_client(pki.server_cert, pki.server_key, "localhost", {{}, pki.other_fingerprint, false});
    EXPECT_EQ(out.ec, errc::tls_error);
    EXPECT_NE(out.why.find("fingerprint mismatch"), std::string::npos) << out.why;
}

TEST(stream, plaintext_client_to_tls_server_fails_cleanly) {
    auto pki = test_pki::create();
    auto sctx = server_ctx(pki.server_cert, pki.server_key);
    ASSERT_TRUE(sctx);
    std::error_code server_ec;
    std::string why;
    run_pair(
        [&](stream& s, gate&) -> asio::awaitable<void> {
            server_ec = co_await s.server_handshake(*sctx, 5s, &why);
            EXPECT_FALSE(s.is_open());
        },
        [&](stream& s, gate&) -> asio::awaitable<void> {
            co_await send(s, "USER x\r\n");
            {
                const auto got = co_await read_to_end(s);
                EXPECT_TRUE(got);  // an alert, then the close
            }
        });
    EXPECT_EQ(server_ec, errc::tls_error);
    EXPECT_FALSE(why.empty());
}

TEST(stream, garbage_to_tls_client_fails_cleanly) {
    auto pki = test_pki::create();
    const mailnet::net::tls_client_options verify{pki.ca_cert, {}, false};
    auto cctx = client_ctx(verify);
    ASSERT_TRUE(cctx);
    std::error_code client_ec;
    std::string why;
    run_pair(
        [&](stream& s, gate&) -> asio::awaitable<void> {
            co_await send(s, "+OK POP3 ready\r\n");
            co_await read_to_end(s);
        },
        [&](stream& s, gate&) -> asio::awaitable<void> {
            client_ec = co_await s.client_handshake(*cctx, localhost, verify, 5s, &why);
        });
    EXPECT_EQ(client_ec, errc::tls_error);
    EXPECT_FALSE(why.empty());
}

TEST(stream, silent_client_handshake_times_out) {
    auto pki = test_pki::create();
    auto sctx = server_ctx(pki.server_cert, pki.server_key);
    ASSERT_TRUE(sctx);
    std::error_code server_ec;
    std::string why;
    clock_type::duration took{};
    run_pair(
        [&](stream& s, gate& g) -> asio::awaitable<void> {
            const auto start = clock_type::now();
            server_ec = co_await s.server_handshake(*sctx, 1s, &why);
            took = clock_type::now() - start;
            EXPECT_TRUE(s.timed_out());
            g.open();
        },
        [&](stream&, gate& g) -> asio::awaitable<void> { co_await g.wait(); });
    EXPECT_EQ(server_ec, errc::timed_out);
    EXPECT_NE(why.find("timed out"), std::string::npos) << why;
    EXPECT_GE(took, 900ms);
    EXPECT_LT(took, 5s);
}

TEST(stream, client_handshake_with_a_silent_server_times_out) {
    auto pki = test_pki::create();
    const mailnet::net::tls_client_options verify{pki.ca_cert, {}, false};
    auto cctx = client_ctx(verify);
    ASSERT_TRUE(cctx);
    std::error_code client_ec;
    std::string why;
    clock_type::duration took{};
    run_pair(
        [&](stream&, gate& g) -> asio::awaitable<void> { co_await g.wait(); },  // accepts, says nothing
        [&](stream& s, gate& g) -> asio::awaitable<void> {
            const auto start = clock_type::now();
            client_ec = co_await s.client_handshake(*cctx, localhost, verify, 1s, &why);
            took = clock_type::now() - start;
            g.open();
        });
    EXPECT_EQ(client_ec, errc::timed_out);
    EXPECT_NE(why.find("timed out"), std::string::npos) << why;
    EXPECT_GE(took, 900ms);
    EXPECT_LT(took, 5s);
}

TEST(stream, client_sends_sni_for_a_name_and_none_for_an_ip_literal) {
    // RFC 6066 3: a host name goes into server_name; an IP literal must not.
    auto pki = test_pki::create();
    auto sctx = server_ctx(pki.server_cert, pki.server_key);
    ASSERT_TRUE(sctx);
    for (const std::string host : {"localhost", "127.0.0.1"}) {
        const mailnet::net::tls_client_options verify{pki.ca_cert, {}, false};
        auto cctx = client_ctx(verify);
        ASSERT_TRUE(cctx);
        std::string seen = "(not handshaken)";
        run_pair(
            [&](stream& s, gate& g) -> asio::awaitable<void> {
                std::string why;
                const auto ec = co_await s.server_handshake(*sctx, 5s, &why);
                EXPECT_FALSE(ec) << why;
                if (!ec) {
                    // The name the ClientHello carried, as the server saw it.
                    const char* name = SSL_get_servername(s.native_ssl(), TLSEXT_NAMETYPE_host_name);
                    seen = name ? name : "";
                }
                g.open();
                co_await s.shutdown(1s);
            },
            [&](stream& s, gate& g) -> asio::awaitable<void> {
                std::string why;
                const auto ec = co_await s.client_handshake(*cctx, host, verify, 5s, &why);
                EXPECT_FALSE(ec) << host << ": " << why;
                co_await g.wait();
                co_await s.shutdown(1s);
            });
        EXPECT_EQ(seen, host == "localhost" ? "localhost" : "") << host;
    }
}

// Whether a client-initiated TLS 1.2 renegotiation completes against `sctx`: the client is
// allowed to ask (its context's refusal is lifted), then sends a line and reads the answer.
bool renegotiation_completes(asio::ssl::context& sctx, const test_pki& pki) {
    const mailnet::net::tls_client_options verify{pki.ca_cert, {}, false};
    auto cctx = client_ctx(verify);
    if (!cctx) return false;
    SSL_CTX_clear_options(cctx->native_handle(), SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_max_proto_version(cctx->native_handle(), TLS1_2_VERSION);  // TLS 1.3 has none
    bool completed = false;
    run_pair(
        [&](stream& s, gate&) -> asio::awaitable<void> {
            const auto failed = co_await s.server_handshake(sctx, 5s);
            if (failed) co_return;
            const auto line = co_await read_line(s);
            if (line != "ping\r\n") co_return;
            (void)co_await write(s, "pong\r\n");
            co_await s.shutdown(1s);
        },
        [&](stream& s, gate&) -> asio::awaitable<void> {
            std::string why;
            const auto failed = co_await s.client_handshake(*cctx, localhost, verify, 5s, &why);
            if (failed) co_return;
            if (SSL_renegotiate(s.native_ssl()) != 1) co_return;
            s.set_deadline(clock_type::now() + 5s);
            const auto unsent = co_await write(s, "ping\r\n");
            if (unsent) co_return;
            const auto line = co_await read_line(s);
            completed = line == "pong\r\n" && SSL_renegotiate_pending(s.native_ssl()) == 0;
            co_await s.shutdown(1s);
        });
    return completed;
}

TEST(stream, renegotiation_is_refused) {
    auto pki = test_pki::create();
    // The control: a context like ours but allowing renegotiation lets it complete, so the
    // exchange really renegotiates when it is allowed to. (OpenSSL 3 servers refuse client
    // renegotiation by default too; ours also sets SSL_OP_NO_RENEGOTIATION, DESIGN.md "Rules".)
    auto lenient = server_ctx(pki.server_cert, pki.server_key);
    ASSERT_TRUE(lenient);
    SSL_CTX_clear_options(lenient->native_handle(), SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_options(lenient->native_handle(), SSL_OP_ALLOW_CLIENT_RENEGOTIATION);  // OpenSSL 3 servers
    ASSERT_TRUE(renegotiation_completes(*lenient, pki)) << "the control renegotiation did not complete";
    auto ours = server_ctx(pki.server_cert, pki.server_key);
    ASSERT_TRUE(ours);
    EXPECT_FALSE(renegotiation_completes(*ours, pki)) << "make_server_tls let a client renegotiate";
}

TEST(stream, tls11_client_refused) {
    auto pki = test_pki::create();
    auto sctx = server_ctx(pki.server_cert, pki.server_key);
    ASSERT_TRUE(sctx);
    // A client that offers at most TLS 1.1, with the security level low enough to let it.
    SSL_CTX* raw = SSL_CTX_new(TLS_client_method());
    ASSERT_NE(raw, nullptr);
    asio::ssl::context old_client(raw);
    SSL_CTX_set_security_level(raw, 0);
    ASSERT_EQ(SSL_CTX_set_cipher_list(raw, "DEFAULT:@SECLEVEL=0"), 1);
    ASSERT_EQ(SSL_CTX_set_min_proto_version(raw, TLS1_VERSION), 1);
    ASSERT_EQ(SSL_CTX_set_max_proto_version(raw, TLS1_1_VERSION), 1);
    std::error_code server_ec;
    std::error_code client_ec;
    std::string server_why;
    std::string client_why;
    run_pair(
        [&](stream& s, gate&) -> asio::awaitable<void> {
            server_ec = co_await s.server_handshake(*sctx, 5s, &server_why);
        },
        [&](stream& s, gate&) -> asio::awaitable<void> {
            client_ec = co_await s.client_handshake(old_client, localhost, insecure_options, 5s, &client_why);
        });
    EXPECT_EQ(server_ec, errc::tls_error);
    EXPECT_EQ(client_ec, errc::tls_error);
    EXPECT_NE(server_why.find("unsupported protocol"), std::string::npos) << server_why;
}

// ---- deadlines ----------------------------------------------------------------------------

TEST(stream, deadline_closes_idle_read) {
    std::error_code server_ec;
    run_pair(
        [&](stream& s, gate&) -> asio::awaitable<void> {
            s.set_deadline(clock_type::now() + 200ms);
            std::array<char, 16> buf{};
            co_await s.read_some(asio::buffer(buf), server_ec);
            EXPECT_TRUE(s.timed_out());
            EXPECT_FALSE(s.is_open());
        },
        [&](stream& s, gate&) -> asio::awaitable<void> {
            {
                const auto got = co_await read_to_end(s);
                EXPECT_TRUE(got);  // the server's close
            }
        });
    EXPECT_EQ(server_ec, errc::timed_out);
}

TEST(stream, deadline_closes_idle_tls_read) {
    auto pki = test_pki::create();
    auto sctx = server_ctx(pki.server_cert, pki.server_key);
    auto cctx = client_ctx(insecure_options);
    ASSERT_TRUE(sctx && cctx);
    std::error_code server_ec;
    run_pair(
        [&](stream& s, gate&) -> asio::awaitable<void> {
            const auto failed = co_await s.server_handshake(*sctx, 5s);
            if (failed) co_return;
            s.set_deadline(clock_type::now() + 200ms);
            std::array<char, 16> buf{};
            co_await s.read_some(asio::buffer(buf), server_ec);
            // A second read after a timeout must fail too, not resume the cancelled TLS read.
            std::error_code again;
            co_await s.read_some(asio::buffer(buf), again);
            EXPECT_TRUE(again);
        },
        [&](stream& s, gate&) -> asio::awaitable<void> {
            {
                const auto got = co_await s.client_handshake(*cctx, localhost, insecure_options, 5s);
                EXPECT_FALSE(got);
            }
            {
                const auto got = co_await read_to_end(s);
                EXPECT_TRUE(got);
            }
        });
    EXPECT_EQ(server_ec, errc::timed_out);
}

TEST(stream, deadline_moved_later_or_cleared_does_not_fire_early) {
    std::error_code later_ec;
    std::error_code final_ec;
    run_pair(
        [&](stream& s, gate&) -> asio::awaitable<void> {
            std::array<char, 16> buf{};
            s.set_deadline(clock_type::now() + 100ms);
            s.set_deadline(clock_type::time_point::max());  // cleared
            std::error_code ec;
            {
                const auto got = co_await s.read_some(asio::buffer(buf), ec);
                EXPECT_EQ(got, 1u);  // the client writes after 300 ms
            }
            EXPECT_FALSE(ec) << ec.message();
            s.set_deadline(clock_type::now() + 100ms);
            s.set_deadline(clock_type::now() + 3s);  // moved later
            {
                const auto got = co_await s.read_some(asio::buffer(buf), later_ec);
                EXPECT_EQ(got, 1u);  // again after 300 ms
            }
            s.set_deadline(clock_type::now() + 200ms);
            co_await s.read_some(asio::buffer(buf), final_ec);  // nothing more comes
        },
        [&](stream& s, gate&) -> asio::awaitable<void> {
            asio::steady_timer t(s.get_executor());
            for (int i = 0; i < 2; ++i) {
                t.expires_after(300ms);
                co_await t.async_wait(use_tuple);
                co_await send(s, "x");
            }
            {
                const auto got = co_await read_to_end(s);
                EXPECT_TRUE(got);
            }
        });
    EXPECT_FALSE(later_ec) << later_ec.message();
    EXPECT_EQ(final_ec, errc::timed_out);
}

TEST(stream, destroyed_with_deadline_pending) {
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    {
        tcp::socket a(ioc);
        a.connect(acceptor.local_endpoint());
        stream s(std::move(a));
        s.set_deadline(clock_type::now() + 50ms);
    }
    {
        tcp::socket a(ioc);
        a.connect(acceptor.local_endpoint());
        stream s(std::move(a));
        s.set_deadline(clock_type::now() - 1s);  // already due: the handler may be queued
        ioc.poll();
    }
    ioc.restart();
    ioc.run_for(300ms);
    EXPECT_TRUE(ioc.stopped());  // nothing left pending
}

asio::awaitable<void> stalled_writer(stream& s, gate& g, std::error_code& ec, clock_type::duration& took) {
    s.set_progress_timeout(1s);
    const std::vector<char> big(32u << 20, 'x');
    const auto start = clock_type::now();
    ec = co_await s.write_all(asio::buffer(big));
    took = clock_type::now() - start;
    g.open();
}

TEST(stream, write_to_peer_that_never_reads_times_out) {
    std::error_code ec;
    clock_type::duration took{};
    run_pair([&](stream& s, gate& g) -> asio::awaitable<void> { co_await stalled_writer(s, g, ec, took); },
             [&](stream&, gate& g) -> asio::awaitable<void> { co_await g.wait(); });
    EXPECT_EQ(ec, errc::timed_out);
    EXPECT_LT(took, 8s);
}

TEST(stream, tls_write_to_peer_that_never_reads_times_out) {
    auto pki = test_pki::create();
    auto sctx = server_ctx(pki.server_cert, pki.server_key);
    auto cctx = client_ctx(insecure_options);
    ASSERT_TRUE(sctx && cctx);
    std::error_code ec;
    clock_type::duration took{};
    run_pair(
        [&](stream& s, gate& g) -> asio::awaitable<void> {
            const auto failed = co_await s.server_handshake(*sctx, 5s);
            if (failed) co_return g.open();
            co_await stalled_writer(s, g, ec, took);
        },
        [&](stream& s, gate& g) -> asio::awaitable<void> {
            {
                const auto got = co_await s.client_handshake(*cctx, localhost, insecure_options, 5s);
                EXPECT_FALSE(got);
            }
            co_await g.wait();
        });
    EXPECT_EQ(ec, errc::timed_out);
    EXPECT_LT(took, 8s);
}

TEST(stream, tls_shutdown_with_silent_peer_is_bounded) {
    auto pki = test_pki::create();
    auto sctx = server_ctx(pki.server_cert, pki.server_key);
    auto cctx = client_ctx(insecure_options);
    ASSERT_TRUE(sctx && cctx);
    clock_type::duration took{};
    run_pair(
        [&](stream& s, gate& g) -> asio::awaitable<void> {
            const auto failed = co_await s.server_handshake(*sctx, 5s);
            if (failed) co_return g.open();
            const auto start = clock_type::now();
            co_await s.shutdown(1s);  // the client never answers close_notify
            took = clock_type::now() - start;
            EXPECT_FALSE(s.is_open());
            g.open();
        },
        [&](stream& s, gate& g) -> asio::awaitable<void> {
            {
                const auto got = co_await s.client_handshake(*cctx, localhost, insecure_options, 5s);
                EXPECT_FALSE(got);
            }
            co_await g.wait();
        });
    EXPECT_LT(took, 5s);
}

}  // namespace

namespace {

// Runs connect_to on a fresh io_context (bounded) and returns what it gave.
struct connected {
    bool finished = false;  // connect_to came back (within the test's own bound)
    bool ok = false;
    std::error_code error;
    std::string why;
    std::uint16_t peer_port = 0;
    std::size_t threads_started = 0;  // threads of the process made during connect_to
};

// The threads of this process now (/proc/self/task).
std::size_t thread_count() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
    return n;
}

connected run_connect(std::string host, std::uint16_t port, std::chrono::seconds timeout) {
    asio::io_context ioc;
    connected c;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            const std::size_t before = thread_count();
            auto s = co_await mailnet::net::connect_to(ioc.get_executor(), host, port, timeout, &c.why);
            c.threads_started = thread_count() - before;
            c.finished = true;
            c.ok = static_cast<bool>(s);
            c.error = s.error();
            if (s) c.peer_port = s->remote_endpoint().port();
            ioc.stop();  // a lookup still running detached is not waited for
        },
        asio::detached);
    ioc.run_for(10s);
    return c;
}

TEST(connect_to, connects_by_ip_literal_and_by_name) {
    asio::io_context server_io;
    tcp::acceptor acceptor(server_io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    const auto port = acceptor.local_endpoint().port();
    const auto by_ip = run_connect("127.0.0.1", port, 5s);
    EXPECT_TRUE(by_ip.ok) << by_ip.why;
    EXPECT_EQ(by_ip.peer_port, port);
    EXPECT_EQ(by_ip.threads_started, 0u) << "an address literal needs no resolver thread";
    // A form only getaddrinfo reads (inet_aton's "127.1") still goes through the lookup.
    const auto short_form = run_connect("127.1", port, 5s);
    EXPECT_TRUE(short_form.ok) << short_form.why;
    EXPECT_EQ(short_form.peer_port, port);
    // "localhost" comes from /etc/hosts; it may resolve to ::1 first, where nothing listens:
    // the next address is tried.
    const auto by_name = run_connect("localhost", port, 5s);
    EXPECT_TRUE(by_name.ok) << by_name.why;
}

TEST(connect_to, a_closed_port_fails_with_the_reason) {
    std::uint16_t port = 0;
    {
        asio::io_context io;
        tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
        port = a.local_endpoint().port();
    }  // closed again: nothing listens there now
    const auto c = run_connect("127.0.0.1", port, 5s);
    EXPECT_FALSE(c.ok);
    EXPECT_EQ(c.error, asio::error::connection_refused) << c.error.message();
    EXPECT_NE(c.why.find("127.0.0.1"), std::string::npos) << c.why;
}

TEST(connect_to, a_name_that_is_no_address_fails_cleanly) {
    // Not a resolvable name anywhere (RFC 2606 reserves .invalid); with no resolver reachable
    // the lookup may also run into the time limit: both are clean failures.
    const auto c = run_connect("no-such-host.invalid", 110, 3s);
    ASSERT_TRUE(c.finished) << "connect_to did not come back within its 3 s limit";
    EXPECT_FALSE(c.ok);
    EXPECT_TRUE(c.error == errc::not_found || c.error == errc::timed_out) << c.error.message();
    EXPECT_FALSE(c.why.empty());
}

}  // namespace
