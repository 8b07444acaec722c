// memory_store_test.cpp: the memory store keeps the Maildir store's semantics: locks, delivery
// order, seen flags, deletions only at commit (RFC 1939 6), one message to many mailboxes.
#include "mailnet/store/store.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace {

using mailnet::errc;

std::vector<std::string> boxes(std::initializer_list<const char*> names) { return {names.begin(), names.end()}; }

std::string read_all(mailnet::message& m, std::size_t chunk) {
    std::string out;
    std::vector<char> buf(chunk);
    for (;;) {
        auto n = m.read(buf);
        if (!n || *n == 0) break;
        out.append(buf.data(), *n);
    }
    return out;
}

TEST(memory_store, one_lock_per_mailbox) {
    auto s = mailnet::make_memory_store();
    ASSERT_TRUE(s->lock("alice"));
    EXPECT_EQ(s->lock("alice").error(), errc::mailbox_in_use);
    EXPECT_TRUE(s->lock("bob"));
    EXPECT_EQ(s->lock("").error(), errc::bad_input);
    s->unlock("alice");
    EXPECT_TRUE(s->lock("alice"));
    s->unlock("nobody");  // harmless
}

TEST(memory_store, lock_of_a_missing_mailbox_is_an_empty_session) {
    // NOTE: that lock() adds no map entry is not visible through the interface; this shows
    // what a session sees: the lock holds, the snapshot is empty, commit has nothing to do.
    auto s = mailnet::make_memory_store();
    ASSERT_TRUE(s->lock("nobody"));
    EXPECT_EQ(s->lock("nobody").error(), errc::mailbox_in_use);
    auto snap = s->snapshot("nobody");
    ASSERT_TRUE(snap);
    EXPECT_TRUE(snap->empty());
    const std::vector<std::string> gone = {"m1"};
    const auto r = s->commit("nobody", gone, gone);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_FALSE(r[0]);
    s->unlock("nobody");
    EXPECT_TRUE(s->lock("nobody"));
    s->unlock("nobody");
    // A mailbox emptied by commit behaves as one never delivered to.
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "x\n"));
    auto a = s->snapshot("alice");
    ASSERT_TRUE(a);
    ASSERT_EQ(a->size(), 1u);
    const std::vector<std::string> del = {(*a)[0].id};
    EXPECT_FALSE(s->commit("alice", del, {})[0]);
    auto after = s->snapshot("alice");
    ASSERT_TRUE(after);
    EXPECT_TRUE(after->empty());
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "y\n"));
    auto again = s->snapshot("alice");
    ASSERT_TRUE(again);
    EXPECT_EQ(again->size(), 1u);
}

TEST(memory_store, snapshot_is_in_delivery_order_with_wire_sizes) {
    auto s = mailnet::make_memory_store();
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "first\n"));
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "second\r\nline\n"));
    ASSERT_TRUE(s->deliver(boxes({"alice"}), ""));
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 3u);
    EXPECT_EQ((*snap)[0].octets, 7u);
    EXPECT_EQ((*snap)[1].octets, 14u);
    EXPECT_EQ((*snap)[2].octets, 0u);
    std::set<std::string> ids, uidls;
    for (const auto& m : *snap) {
        ids.insert(m.id);
        uidls.insert(m.pop3_uidl());
        EXPECT_EQ(m.pop3_uidl(), mailnet::uidl_for_id(m.id));
        EXPECT_FALSE(m.seen);
    }
    EXPECT_EQ(ids.size(), 3u);
    EXPECT_EQ(uidls.size(), 3u);
    auto m = s->open("alice", (*snap)[1].id);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->stored_octets(), 13u);
    EXPECT_EQ(read_all(*m, 3), "second\r\nline\n");
    auto empty = s->snapshot("nobody");
    ASSERT_TRUE(empty);
    EXPECT_TRUE(empty->empty());
}

TEST(memory_store, one_message_to_many_mailboxes) {
    auto s = mailnet::make_memory_store();
    ASSERT_TRUE(s->deliver(boxes({"alice", "bob", "alice"}), "shared\n"));
    ASSERT_TRUE(s->deliver(boxes({"bob"}), "bob only\n"));
    auto a = s->snapshot("alice");
    auto b = s->snapshot("bob");
    ASSERT_TRUE(a && b);
    ASSERT_EQ(a->size(), 1u) << "a mailbox named twice gets it once";
    ASSERT_EQ(b->size(), 2u);
    EXPECT_EQ((*a)[0].id, (*b)[0].id);
    EXPECT_NE((*b)[0].id, (*b)[1].id);
    // Deleting it in one mailbox leaves the other's copy.
    const std::vector<std::string> del = {(*a)[0].id};
    EXPECT_FALSE(s->commit("alice", del, {})[0]);
    auto m = s->open("bob", (*b)[0].id);
    ASSERT_TRUE(m);
    EXPECT_EQ(read_all(*m, 100), "shared\n");
    EXPECT_EQ(s->open("alice", (*a)[0].id).error(), errc::not_found);
}

TEST(memory_store, deletions_and_seen_flags_apply_at_commit) {
    auto s = mailnet::make_memory_store();
    for (const char* t : {"1\n", "2\n", "3\n"}) ASSERT_TRUE(s->deliver(boxes({"alice"}), t));
    ASSERT_TRUE(s->lock("alice"));
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 3u);
    // A delivery after the snapshot does not move its numbers.
    ASSERT_TRUE(s->deliver(boxes({"alice"}), "4\n"));
    const std::vector<std::string> del = {(*snap)[0].id, "no-such-id"};
    const std::vector<std::string> seen = {(*snap)[2].id};
    const auto r = s->commit("alice", del, seen);
    ASSERT_EQ(r.size(), 2u);
    EXPECT_FALSE(r[0]);
    EXPECT_FALSE(r[1]) << "already gone counts as deleted";
    s->unlock("alice");
    auto after = s->snapshot("alice");
    ASSERT_TRUE(after);
    ASSERT_EQ(after->size(), 3u);
    EXPECT_EQ((*after)[0].id, (*snap)[1].id);
    EXPECT_FALSE((*after)[0].seen);
    EXPECT_EQ((*after)[1].id, (*snap)[2].id);
    EXPECT_TRUE((*after)[1].seen);
    EXPECT_FALSE((*after)[2].seen);
}

TEST(memory_store, uncommitted_deliveries_stay_invisible) {
    auto s = mailnet::make_memory_store();
    {
        auto d = s->begin_delivery(boxes({"alice"}));
        ASSERT_TRUE(d);
        ASSERT_TRUE((*d)->write("part"));
        auto snap = s->snapshot("alice");
        ASSERT_TRUE(snap);
        EXPECT_TRUE(snap->empty()) << "buffered until commit";
        (*d)->abort();
        EXPECT_FALSE((*d)->commit());
    }
    {
        auto d = s->begin_delivery(boxes({"alice"}));
        ASSERT_TRUE(d);
        ASSERT_TRUE((*d)->write("part"));
    }
    auto snap = s->snapshot("alice");
    ASSERT_TRUE(snap);
    EXPECT_TRUE(snap->empty());
    EXPECT_EQ(s->begin_delivery({}).error(), errc::bad_input);
    EXPECT_EQ(s->begin_delivery(boxes({"a", ""})).error(), errc::bad_input);
    EXPECT_EQ(s->snapshot("").error(), errc::bad_input);
}

TEST(memory_store, a_delivery_may_outlive_its_store) {
    auto s = mailnet::make_memory_store();
    auto d = s->begin_delivery(boxes({"alice"}));
    ASSERT_TRUE(d);
    s.reset();
    ASSERT_TRUE((*d)->write("late\n"));
    EXPECT_TRUE((*d)->commit());
}

}  // namespace
