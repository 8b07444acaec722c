// store_functions_test.cpp: the storage hooks as std::function slots: the defaults (every
// mailbox empty, deletions refused), the in-process lock table, each slot called as given.
#include "mailnet/store.hpp"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mailnet/dot_stuffing.hpp"

namespace {

using mailnet::errc;

TEST(store_functions, empty_slots_give_an_empty_mailbox_that_refuses_deletion_and_delivery) {
    mailnet::store_functions s;
    ASSERT_TRUE(s.lock("alice"));
    auto snap = s.snapshot("alice");
    ASSERT_TRUE(snap);
    EXPECT_TRUE(snap->empty());
    EXPECT_EQ(s.open("alice", "1").error(), errc::not_found);
    const std::vector<std::string> deleted{"a", "b"}, seen{"a"};
    const auto errors = s.commit("alice", deleted, seen);
    ASSERT_EQ(errors.size(), 2u);
    EXPECT_EQ(errors[0], errc::unsupported);
    EXPECT_EQ(errors[1], errc::unsupported);
    const std::vector<std::string> to{"alice"};
    EXPECT_EQ(s.begin_delivery(to).error(), errc::unsupported);
    EXPECT_EQ(s.deliver(to, "x\n").error(), errc::unsupported);
    s.unlock("alice");
}

TEST(store_functions, one_session_per_mailbox_in_a_process_even_without_a_lock_slot) {
    mailnet::store_functions s;
    ASSERT_TRUE(s.lock("alice"));
    EXPECT_EQ(s.lock("alice").error(), errc::mailbox_in_use);
    EXPECT_TRUE(s.lock("bob"));
    s.unlock("alice");
    EXPECT_TRUE(s.lock("alice"));
}

TEST(store_functions, a_failing_lock_slot_leaves_the_mailbox_unlocked_and_unlock_only_frees_what_was_locked) {
    mailnet::store_functions s;
    int unlocks = 0;
    bool busy = true;
    s.on_lock = [&](std::string_view) -> mailnet::result<void> {
        if (busy) return mailnet::unexpected(errc::temporary_failure);
        return {};
    };
    s.on_unlock = [&](std::string_view) { ++unlocks; };
    EXPECT_EQ(s.lock("alice").error(), errc::temporary_failure);
    s.unlock("alice");  // not locked: the slot is not called
    EXPECT_EQ(unlocks, 0);
    busy = false;
    ASSERT_TRUE(s.lock("alice"));
    s.unlock("alice");
    s.unlock("alice");
    EXPECT_EQ(unlocks, 1);
}

TEST(store_functions, slots_serve_snapshot_messages_deletions_and_seen_marks) {
    auto bytes = std::make_shared<const std::string>("Subject: hi\n\nhello\n");
    std::vector<std::string> deleted_ids, seen_ids;
    mailnet::store_functions s;
    s.on_snapshot = [&](std::string_view mailbox) -> mailnet::result<std::vector<mailnet::message_info>> {
        if (mailbox != "alice") return mailnet::unexpected(errc::not_found);
        return std::vector<mailnet::message_info>{{"m1", mailnet::wire_octets(*bytes), "uid-1", false}};
    };
    s.on_open = [&](std::string_view, std::string_view id) -> mailnet::result<mailnet::message> {
        if (id != "m1") return mailnet::unexpected(errc::not_found);
        return mailnet::message(mailnet::string_source(bytes), bytes->size());
    };
    s.on_delete = [&](std::string_view, std::string_view id) {
        deleted_ids.emplace_back(id);
        return id == "gone" ? make_error_code(errc::io_error) : std::error_code();
    };
    s.on_seen = [&](std::string_view, std::string_view id) {
        seen_ids.emplace_back(id);
        return std::error_code();
    };
    auto snap = s.snapshot("alice");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 1u);
    EXPECT_EQ((*snap)[0].octets, 22u);
    EXPECT_EQ(s.snapshot("bob").error(), errc::not_found);
    auto m = s.open("alice", "m1");
    ASSERT_TRUE(m);
    std::string got(64, '\0');
    auto n = m->read(got);
    ASSERT_TRUE(n);
    EXPECT_EQ(got.substr(0, *n), *bytes);
    const std::vector<std::string> deleted{"m1", "gone"}, seen{"m2"};
    const auto errors = s.commit("alice", deleted, seen);
    ASSERT_EQ(errors.size(), 2u);
    EXPECT_FALSE(errors[0]);
    EXPECT_EQ(errors[1], errc::io_error);
    EXPECT_EQ(deleted_ids, deleted);
    EXPECT_EQ(seen_ids, seen);
}

}  // namespace
