// store_functions_test.cpp: the storage hooks as std::function slots: the defaults (every
// mailbox empty, deletions refused), the in-process lock table, each slot called as given.
#include "mailnet/store/store.hpp"

#include <gtest/gtest.h>

#include <map>
#include <stdexcept>
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

TEST(store_functions, a_throwing_lock_slot_is_a_temporary_failure_that_leaves_nothing_locked) {
    mailnet::store_functions s;
    bool fail = true;
    s.on_lock = [&](std::string_view) -> mailnet::result<void> {
        if (fail) throw std::runtime_error("backend down");
        return {};
    };
    EXPECT_EQ(s.lock("alice").error(), errc::temporary_failure);
    fail = false;
    EXPECT_TRUE(s.lock("alice")) << "the failed attempt left the mailbox locked";
}

TEST(store_functions, the_unlock_slot_runs_before_another_session_can_lock) {
    mailnet::store_functions s;
    bool external = false;  // the backend's own lock
    s.on_lock = [&](std::string_view) -> mailnet::result<void> {
        if (external) return mailnet::unexpected(errc::mailbox_in_use);
        external = true;
        return {};
    };
    s.on_unlock = [&](std::string_view m) {
        // While the old holder releases, a new lock() must not get through to on_lock.
        EXPECT_EQ(s.lock(m).error(), errc::mailbox_in_use);
        external = false;
    };
    ASSERT_TRUE(s.lock("alice"));
    s.unlock("alice");
    EXPECT_TRUE(s.lock("alice"));
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
