// store_http_test.cpp: what mailnetd's HTTP API needs of a store, for Maildir and memory: the
// list of mailboxes (names decoded, hashed ones from their name file) and deletion without the
// POP3 lock, also under a session that holds the mailbox (DESIGN.md "pluggable interfaces").
#include "mailnet/store/store.hpp"

#include "support/fixtures.hpp"
#include "support/store_backends.hpp"

#include <gtest/gtest.h>

#include <mutex>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <algorithm>
#include <vector>

namespace {

using mailnet::testing::temp_dir;

class store_http : public ::testing::TestWithParam<mailnet::testing::backend> {
protected:
    void SetUp() override {
        MAILNET_STORE_BACKEND_OR_SKIP(maker);
        st = maker.make();
        ASSERT_TRUE(st);
    }
    std::vector<std::string> ids(const std::string& box) {
        auto snap = st->snapshot(box);
        EXPECT_TRUE(snap);
        std::vector<std::string> out;
        if (snap)
            for (const auto& m : *snap) out.push_back(m.id);
        return out;
    }
    mailnet::testing::store_maker maker{GetParam()};
    std::shared_ptr<mailnet::store> st;
};

TEST_P(store_http, mailboxes_lists_what_delivery_made_by_name) {
    auto none = st->mailboxes();
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->empty());
    const std::string long_name = std::string(250, 'x') + "@example.org";  // hashed directory
    const std::vector<std::string> boxes{"bob@example.org", "a/b%c", ".hidden", long_name, "\x01odd"};
    for (const auto& b : boxes) ASSERT_TRUE(st->deliver(std::vector<std::string>{b}, "Subject: x\n\nbody\n"));
    auto got = st->mailboxes();
    ASSERT_TRUE(got);
    std::vector<std::string> want = boxes;
    std::sort(want.begin(), want.end());
    EXPECT_EQ(*got, want);
}

TEST_P(store_http, delete_without_lock) {
    const std::vector<std::string> box{"bob@example.org"};
    ASSERT_TRUE(st->deliver(box, "Subject: 1\n\none\n"));
    ASSERT_TRUE(st->deliver(box, "Subject: 2\n\ntwo\n"));
    auto before = ids(box[0]);
    ASSERT_EQ(before.size(), 2u);
    std::mutex m;
    std::vector<mailnet::store_event> events;
    auto sub = st->subscribe([&](const mailnet::store_event& e) {
        // The Maildir store's `changed` (its watch thread: files changed) is not what this is about.
        if (e.what == mailnet::store_event::kind::changed) return;
        std::lock_guard lock(m);
        events.push_back(e);
    });
    const auto told = [&] {
        std::lock_guard lock(m);
        return events;
    };
    auto r = st->commit(box[0], std::vector<std::string>{before[0]}, {});
    ASSERT_EQ(r.size(), 1u);
    EXPECT_FALSE(r[0]);
    EXPECT_EQ(ids(box[0]), std::vector<std::string>{before[1]});
    ASSERT_EQ(told().size(), 1u);
    EXPECT_EQ(told()[0].what, mailnet::store_event::kind::deleted);
    EXPECT_EQ(told()[0].id, before[0]);
    // Deleting it again is no error and tells nobody.
    r = st->commit(box[0], std::vector<std::string>{before[0]}, {});
    EXPECT_FALSE(r[0]);
    EXPECT_EQ(told().size(), 1u);
}

// An HTTP DELETE while a POP3 session holds the mailbox: the session's RETR of that message
// finds it gone (errc::not_found: -ERR), its QUIT's deletion of it succeeds, the rest is kept.
TEST_P(store_http, delete_under_a_pop3_session) {
    const std::vector<std::string> box{"bob@example.org"};
    ASSERT_TRUE(st->deliver(box, "Subject: 1\n\none\n"));
    ASSERT_TRUE(st->deliver(box, "Subject: 2\n\ntwo\n"));
    ASSERT_TRUE(st->lock(box[0]));
    auto snap = st->snapshot(box[0]);
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 2u);
    ASSERT_TRUE(st->open(box[0], (*snap)[0].id));  // the session has read it once (a scan cache)
    auto r = st->commit(box[0], std::vector<std::string>{(*snap)[0].id}, {});  // HTTP, no lock
    EXPECT_FALSE(r[0]);
    auto gone = st->open(box[0], (*snap)[0].id);
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.error(), mailnet::errc::not_found);
    EXPECT_TRUE(st->open(box[0], (*snap)[1].id));
    // QUIT with DELE 1 and RETR 2 (seen).
    r = st->commit(box[0], std::vector<std::string>{(*snap)[0].id}, std::vector<std::string>{(*snap)[1].id});
    EXPECT_FALSE(r[0]);
    st->unlock(box[0]);
    auto after = st->snapshot(box[0]);
    ASSERT_TRUE(after);
    ASSERT_EQ(after->size(), 1u);
    EXPECT_EQ((*after)[0].id, (*snap)[1].id);
    EXPECT_TRUE((*after)[0].seen);
    // The lock is free again for the next session.
    EXPECT_TRUE(st->lock(box[0]));
    st->unlock(box[0]);
}

INSTANTIATE_TEST_SUITE_P(backends, store_http, mailnet::testing::all_backends, mailnet::testing::backend_name);

TEST(decode_mailbox_name, inverts_encode) {
    for (const std::string& n : std::vector<std::string>{"bob@example.org", "a/b", "%", ".x", ".", "..", "x\\y", std::string("a\0b", 3), "\x7f", "é@x"}) {
        auto d = mailnet::decode_mailbox_name(mailnet::encode_mailbox_name(n));
        ASSERT_TRUE(d) << n;
        EXPECT_EQ(*d, n);
    }
    EXPECT_FALSE(mailnet::decode_mailbox_name(mailnet::encode_mailbox_name(std::string(300, 'a'))));
    EXPECT_FALSE(mailnet::decode_mailbox_name("a%41"));  // not what the encoding makes
    EXPECT_FALSE(mailnet::decode_mailbox_name("a%4"));
    EXPECT_FALSE(mailnet::decode_mailbox_name("a%zz"));
    EXPECT_FALSE(mailnet::decode_mailbox_name(""));
}

TEST(maildir_mailboxes, skips_foreign_folders_and_a_hashed_one_without_its_name) {
    temp_dir dir{"mailnet-store-http"};
    mailnet::maildir_options o;
    o.root = dir.path;
    o.hostname = "test";
    o.fsync = false;
    o.log = mailnet::null_log();
    auto s = mailnet::open_maildir_store(std::move(o));
    ASSERT_TRUE(s);
    const std::string long_name = std::string(250, 'y');
    ASSERT_TRUE((*s)->deliver(std::vector<std::string>{long_name}, "x\n"));
    ASSERT_TRUE((*s)->deliver(std::vector<std::string>{"ok"}, "x\n"));
    const auto hashed = dir.path / mailnet::encode_mailbox_name(long_name);
    ASSERT_TRUE(std::filesystem::exists(hashed / "mailnet-mailbox-name"));
    std::filesystem::create_directories(dir.path / "no-new-dir");
    std::filesystem::create_directories(dir.path / "a%41" / "new");
    std::filesystem::create_directories(dir.path / ".Trash" / "new");
    std::ofstream(dir.path / "dovecot-uidlist") << "x";
    std::filesystem::create_directory_symlink(dir.path / "ok", dir.path / "link");
    auto got = (*s)->mailboxes();
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, (std::vector<std::string>{"ok", long_name}));
    std::filesystem::remove(hashed / "mailnet-mailbox-name");
    got = (*s)->mailboxes();
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, std::vector<std::string>{"ok"});
}

TEST(maildir_mailboxes, a_folder_store_cannot_tell) {
    temp_dir dir{"mailnet-store-http"};
    mailnet::maildir_options o;
    o.root = dir.path;
    o.fsync = false;
    o.log = mailnet::null_log();
    auto s = mailnet::open_maildir_folder(std::move(o));
    ASSERT_TRUE(s);
    auto got = (*s)->mailboxes();
    ASSERT_FALSE(got);
    EXPECT_EQ(got.error(), mailnet::errc::unsupported);
}

}  // namespace
