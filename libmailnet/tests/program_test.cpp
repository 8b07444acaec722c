// program_test.cpp: what every program's --store does (net/program.hpp): a directory is a
// Maildir, a postgresql:// URI the PostgreSQL store; a password never on the command line.
#include "mailnet/net/program.hpp"
#include "mailnet/net/cli.hpp"

#include "support/store_backends.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace {

namespace net = mailnet::net;

TEST(uri_has_password, finds_a_password_in_the_user_part_or_the_parameters) {
    EXPECT_TRUE(net::uri_has_password("postgresql://bob:secret@db.example.org/mail"));
    EXPECT_FALSE(net::uri_has_password("postgres://bob:@db/mail"));  // an empty one is none
    EXPECT_TRUE(net::uri_has_password("postgresql://db/mail?sslmode=require&password=x"));
    EXPECT_TRUE(net::uri_has_password("postgresql://db/mail?password=x"));
    EXPECT_TRUE(net::uri_has_password("postgresql://u@db/mail?pass%77ord=secret"));  // libpq decodes names
    EXPECT_TRUE(net::uri_has_password("postgresql://u@db/mail?%70assword=secret"));
    EXPECT_TRUE(net::uri_has_password("postgresql://u:%73ecret@db/mail"));
    EXPECT_FALSE(net::uri_has_password("postgresql://bob@db.example.org:5433/mail"));
    EXPECT_FALSE(net::uri_has_password("postgresql://bob@[::1]:5433/mail?sslmode=verify-full"));
    EXPECT_FALSE(net::uri_has_password("postgresql:///mail?host=/run/postgresql"));
    EXPECT_FALSE(net::uri_has_password("postgresql://db/mail?passfile=/x"));
}

TEST(server_cli, the_limits_given_reach_the_servers_configuration) {
    // --max-per-peer: behind a load balancer every client has its address.
    auto parsed = [](std::vector<std::string> args) {
        CLI::App app;
        net::server_cli cli("test", {"pop3", "pop3s", "POP3", "STLS", "127.0.0.1:1100"}, 600, "RFC 1939 3");
        cli.add_to(app, "allow USER/PASS without TLS");
        std::reverse(args.begin(), args.end());  // CLI11 takes them last first
        app.parse(args);
        net::service_config cfg;
        EXPECT_EQ(cli.apply(cfg), net::exit_code::ok);
        return cfg;
    };
    const auto defaults = parsed({"--listen", "127.0.0.1:0"});
    EXPECT_EQ(defaults.max_connections, 1024u);
    EXPECT_EQ(defaults.max_per_peer, 32u);
    const auto given = parsed({"--listen", "127.0.0.1:0", "--max-connections", "5000", "--max-per-peer", "5000"});
    EXPECT_EQ(given.max_connections, 5000u);
    EXPECT_EQ(given.max_per_peer, 5000u);
    CLI::App app;
    net::server_cli cli("test", {"pop3", "pop3s", "POP3", "STLS", "127.0.0.1:1100"}, 600, "RFC 1939 3");
    cli.add_to(app, "x");
    EXPECT_THROW(app.parse(std::vector<std::string>{"0", "--max-per-peer"}), CLI::ValidationError);
}

TEST(service_cli, busy_poll_defaults_to_50_microseconds_and_is_bounded) {
    auto parsed = [](std::vector<std::string> args) {
        CLI::App app;
        net::server_cli cli("test", {"smtp", "smtps", "SMTP", "STARTTLS", "127.0.0.1:2525"}, 300, "RFC 5321");
        cli.add_to(app, "x");
        std::reverse(args.begin(), args.end());
        app.parse(args);
        return cli.common.busy_poll();
    };
    EXPECT_EQ(parsed({}), std::chrono::microseconds{50});
    EXPECT_EQ(parsed({"--busy-poll", "0"}), std::chrono::microseconds{0});
    EXPECT_EQ(parsed({"--busy-poll", "1000"}), std::chrono::microseconds{1000});
    EXPECT_THROW(parsed({"--busy-poll", "1001"}), CLI::ValidationError);
    EXPECT_THROW(parsed({"--busy-poll=-1"}), CLI::ValidationError);  // a negative is out of range
}

TEST(store_at, refuses_a_password_and_an_unreachable_database_with_their_exit_codes) {
    int exit = 0;
    EXPECT_FALSE(net::store_at("test", "postgresql://bob:secret@127.0.0.1/mail", mailnet::null_log(), exit));
    EXPECT_EQ(exit, net::exit_code::usage);
    exit = 0;
    // Port 1 on loopback: nothing listens there; refused at once.
    EXPECT_FALSE(net::store_at("test", "postgresql://bob@127.0.0.1:1/mail?connect_timeout=2", mailnet::null_log(), exit));
    EXPECT_EQ(exit, net::exit_code::temporary);
}

TEST(store_at, a_directory_is_a_maildir_and_a_uri_the_postgresql_store) {
    mailnet::testing::temp_dir dir{"mailnet-program"};
    int exit = 0;
    auto maildir = net::store_at("test", (dir.path / "mail").string(), mailnet::null_log(), exit);
    ASSERT_TRUE(maildir);
    const std::vector<std::string> box{"bob@example.org"};
    ASSERT_TRUE(maildir->deliver(box, "Subject: x\n\nx\n"));
    EXPECT_TRUE(std::filesystem::is_directory(dir.path / "mail" / "bob@example.org" / "new"));

    auto pg = mailnet::testing::private_postgresql();
    if (!pg.uri) GTEST_SKIP() << pg.why_not;
    // The default schema "mailnet" of a database of its own, dropped after.
    { mailnet::testing::pg_schema_guard earlier{*pg.uri, "mailnet"}; }  // a run cut short left one
    mailnet::testing::pg_schema_guard guard{*pg.uri, "mailnet"};
    auto store = net::store_at("test", *pg.uri, mailnet::null_log(), exit);
    ASSERT_TRUE(store) << exit;
    ASSERT_TRUE(store->deliver(box, "Subject: y\n\ny\n"));
    auto snap = store->snapshot(box[0]);
    ASSERT_TRUE(snap);
    EXPECT_EQ(snap->size(), 1u);
    // A URI whose options= weaken what the store needs: exit 64, as a bad command line.
    const char sep = pg.uri->find('?') == std::string::npos ? '?' : '&';
    exit = 0;
    EXPECT_FALSE(net::store_at("test", *pg.uri + sep + "options=-c%20synchronous_commit%3Doff", mailnet::null_log(), exit));
    EXPECT_EQ(exit, net::exit_code::usage);
}

}  // namespace
