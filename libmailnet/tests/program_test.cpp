// program_test.cpp: what every program's --store does (net/program.hpp): a directory is a
// Maildir, a postgresql:// URI the PostgreSQL store; a password never on the command line.
#include "mailnet/net/program.hpp"

#include "support/store_backends.hpp"

#include <gtest/gtest.h>

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
