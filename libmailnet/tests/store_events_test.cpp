// store_events_test.cpp: a store tells its subscribers of each delivery and deletion (DESIGN.md
// "pluggable interfaces"), the same way for every backend (memory, Maildir, PostgreSQL): after the commit,
// once per mailbox or id, never for what did not happen; unsubscribing is final.
#include "mailnet/store/store.hpp"

#include "support/fixtures.hpp"
#include "support/store_backends.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using mailnet::store_event;

struct recorder {
    std::mutex mutex;
    std::vector<store_event> events;
    mailnet::event_hub::listener listener() {
        return [this](const store_event& e) {
            // The Maildir store also names each mailbox whose files changed (its own changes
            // too): advice to compare, told as well as the events these tests are about.
            if (e.what == store_event::kind::changed) return;
            std::lock_guard lock(mutex);
            events.push_back(e);
        };
    }
    std::vector<store_event> taken() {
        std::lock_guard lock(mutex);
        return std::exchange(events, {});
    }
};

class store_events : public ::testing::TestWithParam<mailnet::testing::backend> {
protected:
    void SetUp() override {
        MAILNET_STORE_BACKEND_OR_SKIP(maker);
        store = maker.make();
        ASSERT_TRUE(store);
    }
    mailnet::testing::store_maker maker{GetParam()};
    std::shared_ptr<mailnet::store> store;
};

TEST_P(store_events, a_delivery_is_told_once_per_mailbox_after_it_is_visible) {
    recorder r;
    std::vector<store_event> seen_when_told;
    auto sub = store->subscribe(r.listener());
    const std::vector<std::string> boxes{"alice@example.org", "bob@example.org", "alice@example.org"};
    ASSERT_TRUE(store->deliver(boxes, "Subject: hi\n\nhello\n"));
    const auto events = r.taken();
    ASSERT_EQ(events.size(), 2u);  // the mailbox named twice receives (and is told) once
    for (std::size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(events[i].what, store_event::kind::delivered);
        EXPECT_EQ(events[i].mailbox, boxes[i]);
        ASSERT_TRUE(store->lock(boxes[i]));
        auto snap = store->snapshot(boxes[i]);
        store->unlock(boxes[i]);
        ASSERT_TRUE(snap);
        ASSERT_EQ(snap->size(), 1u);
        EXPECT_EQ(events[i].id, (*snap)[0].id);          // the id a session opens it by
        EXPECT_EQ(events[i].octets, (*snap)[0].octets);  // the wire size LIST gives
        EXPECT_EQ(events[i].octets, 22u);  // 19 octets stored, 3 LFs sent as CRLF
    }
}

TEST_P(store_events, what_does_not_happen_is_not_told) {
    recorder r;
    auto sub = store->subscribe(r.listener());
    const std::vector<std::string> boxes{"carol@example.org"};
    {
        auto d = store->begin_delivery(boxes);
        ASSERT_TRUE(d);
        ASSERT_TRUE((*d)->write("aborted\n"));
        (*d)->abort();
    }
    {
        auto d = store->begin_delivery(boxes);
        ASSERT_TRUE(d);
        ASSERT_TRUE((*d)->write("dropped without a commit\n"));
    }
    EXPECT_TRUE(r.taken().empty());
    // A commit that deletes nothing, or ids that are not there, tells nothing either.
    ASSERT_TRUE(store->lock("carol@example.org"));
    const std::vector<std::string> none, unknown{"no-such-id"};
    store->commit("carol@example.org", none, none);
    store->commit("carol@example.org", unknown, none);
    store->unlock("carol@example.org");
    EXPECT_TRUE(r.taken().empty());
}

TEST_P(store_events, deletions_at_commit_are_told_per_id_and_seen_flags_are_not) {
    const std::vector<std::string> box{"dave@example.org"};
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(store->deliver(box, "Subject: " + std::to_string(i) + "\n\nx\n"));
    recorder r;
    auto sub = store->subscribe(r.listener());
    ASSERT_TRUE(store->lock(box[0]));
    auto snap = store->snapshot(box[0]);
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 3u);
    const std::vector<std::string> deleted{(*snap)[0].id, (*snap)[2].id}, seen{(*snap)[1].id};
    const auto results = store->commit(box[0], deleted, seen);
    store->unlock(box[0]);
    ASSERT_EQ(results.size(), 2u);
    EXPECT_FALSE(results[0]);
    EXPECT_FALSE(results[1]);
    const auto events = r.taken();
    ASSERT_EQ(events.size(), 2u);
    for (std::size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(events[i].what, store_event::kind::deleted);
        EXPECT_EQ(events[i].mailbox, box[0]);
        EXPECT_EQ(events[i].id, deleted[i]);
    }
}

TEST_P(store_events, every_subscriber_is_told_and_an_ended_subscription_is_not) {
    recorder a, b;
    auto sa = store->subscribe(a.listener());
    auto sb = store->subscribe(b.listener());
    const std::vector<std::string> box{"erin@example.org"};
    ASSERT_TRUE(store->deliver(box, "one\n"));
    EXPECT_EQ(a.taken().size(), 1u);
    EXPECT_EQ(b.taken().size(), 1u);
    sa.reset();
    EXPECT_FALSE(sa);
    EXPECT_TRUE(sb);
    ASSERT_TRUE(store->deliver(box, "two\n"));
    EXPECT_TRUE(a.taken().empty());
    EXPECT_EQ(b.taken().size(), 1u);
    {
        auto moved = std::move(sb);  // the subscription moves with its object
        ASSERT_TRUE(store->deliver(box, "three\n"));
        EXPECT_EQ(b.taken().size(), 1u);
    }
    ASSERT_TRUE(store->deliver(box, "four\n"));
    EXPECT_TRUE(b.taken().empty());
}

TEST_P(store_events, a_listener_may_end_its_own_subscription_and_one_that_throws_changes_nothing) {
    mailnet::subscription self;
    int calls = 0;
    self = store->subscribe([&](const store_event&) {
        ++calls;
        self.reset();
    });
    auto thrower = store->subscribe([](const store_event&) { throw std::runtime_error("listener failed"); });
    const std::vector<std::string> box{"frank@example.org"};
    ASSERT_TRUE(store->deliver(box, "one\n"));
    ASSERT_TRUE(store->deliver(box, "two\n"));
    EXPECT_EQ(calls, 1);
    ASSERT_TRUE(store->lock(box[0]));
    auto snap = store->snapshot(box[0]);
    store->unlock(box[0]);
    ASSERT_TRUE(snap);
    EXPECT_EQ(snap->size(), 2u);  // both delivered, whatever the listeners did
}

TEST_P(store_events, concurrent_deliveries_are_each_told_once_and_reset_waits_for_a_call_in_progress) {
    std::atomic<int> told{0};
    std::atomic<bool> inside{false}, after_reset{false};
    std::atomic<bool> overlapped{false};
    auto sub = store->subscribe([&](const store_event& e) {
        if (inside.exchange(true)) overlapped = true;  // one call at a time per listener
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        if (after_reset) overlapped = true;  // reset() returned while this ran
        if (e.what == store_event::kind::delivered) ++told;
        inside = false;
    });
    constexpr int threads = 4, each = 25;
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back([&, t] {
            const std::vector<std::string> box{"box" + std::to_string(t)};
            for (int i = 0; i < each; ++i) (void)store->deliver(box, "m\n");
        });
    for (auto& w : workers) w.join();
    EXPECT_EQ(told.load(), threads * each);
    // A delivery on another thread while the subscription ends: after reset() returns, no
    // call is running and none starts.
    std::thread late([&] {
        const std::vector<std::string> box{"late"};
        for (int i = 0; i < 20; ++i) (void)store->deliver(box, "m\n");
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    sub.reset();
    after_reset = true;
    late.join();
    EXPECT_FALSE(overlapped.load());
}

TEST_P(store_events, a_deletion_is_never_told_before_its_delivery_and_seq_orders_every_event) {
    // A POP3 session may delete a message the moment it is visible, before its delivery's
    // commit() has published it: the listener still hears "delivered" first.
    struct checker {
        std::mutex mutex;
        std::set<std::string> delivered, deleted;
        std::uint64_t last_seq = 0;
        int bad_order = 0, bad_seq = 0;
    } c;
    auto sub = store->subscribe([&](const store_event& e) {
        std::lock_guard lock(c.mutex);
        if (e.seq != c.last_seq + 1) ++c.bad_seq;
        c.last_seq = e.seq;
        if (e.what == store_event::kind::changed) return;
        if (e.what == store_event::kind::delivered) {
            c.delivered.insert(e.id);
        } else {
            if (!c.delivered.contains(e.id)) ++c.bad_order;
            c.deleted.insert(e.id);
        }
    });
    const std::vector<std::string> box{"race@example.org"};
    constexpr int senders = 3, each = 60;
    std::atomic<bool> sending{true};
    std::set<std::string> removed;
    std::atomic<std::size_t> removed_while_sending{0};
    std::atomic<bool> reaping{false};
    std::thread reaper([&] {
        // Deletes whatever is visible, as fast as it can, while deliveries go on, then once
        // more after the last one; bounded in time, not in rounds (the senders may start late).
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (std::chrono::steady_clock::now() < deadline) {
            const bool last = !sending.load();
            reaping = true;
            if (!store->lock(box[0])) continue;
            auto snap = store->snapshot(box[0]);
            std::vector<std::string> ids;
            if (snap)
                for (const auto& m : *snap) ids.push_back(m.id);
            auto errs = store->commit(box[0], ids, {});
            store->unlock(box[0]);
            for (std::size_t i = 0; i < ids.size(); ++i)
                if (!errs[i]) removed.insert(ids[i]);
            if (!last) removed_while_sending = removed.size();
            if (last) break;
        }
    });
    std::vector<std::thread> workers;
    for (int t = 0; t < senders; ++t)
        workers.emplace_back([&] {
            while (!reaping.load()) std::this_thread::yield();
            for (int i = 0; i < each; ++i) {
                (void)store->deliver(box, "Subject: race\n\nm\n");
                std::this_thread::sleep_for(std::chrono::microseconds(50));  // the reaper gets its turns
            }
        });
    for (auto& w : workers) w.join();
    sending = false;
    reaper.join();
    std::lock_guard lock(c.mutex);
    EXPECT_EQ(c.bad_order, 0);
    EXPECT_EQ(c.bad_seq, 0);
    EXPECT_EQ(c.delivered.size(), std::size_t{senders * each});
    EXPECT_EQ(c.deleted, removed);
    EXPECT_EQ(removed.size(), std::size_t{senders * each});  // the last round took the rest
    EXPECT_GT(removed_while_sending.load(), 0u) << "no deletion raced a delivery: the test proved nothing";
}

TEST_P(store_events, a_subscription_may_outlive_its_store) {
    recorder r;
    auto sub = store->subscribe(r.listener());
    store.reset();
    sub.reset();  // nothing to unsubscribe from: no crash
    EXPECT_FALSE(sub);
}

TEST(event_hub, a_deletion_waits_for_the_expected_delivery_and_a_withdrawn_one_is_dropped) {
    auto hub = std::make_shared<mailnet::event_hub>();
    recorder r;
    auto sub = hub->subscribe(r.listener());
    using k = store_event::kind;
    hub->expect("box", "1");
    hub->expect("box", "2");
    hub->publish({k::deleted, "box", "1", 0, 0});  // seen by a fast session: waits
    hub->publish({k::deleted, "box", "3", 0, 0});  // nothing expected of it: told now
    EXPECT_EQ(r.taken().size(), 1u);
    hub->publish({k::delivered, "box", "1", 7, 0});
    auto e = r.taken();
    ASSERT_EQ(e.size(), 2u);
    EXPECT_EQ(e[0].what, k::delivered);
    EXPECT_EQ(e[0].id, "1");
    EXPECT_EQ(e[0].octets, 7u);
    EXPECT_EQ(e[1].what, k::deleted);
    EXPECT_EQ(e[1].id, "1");
    EXPECT_EQ(e[1].seq, e[0].seq + 1);
    EXPECT_EQ(e[0].seq, 2u);  // after "3"'s deletion
    // A delivery that failed after its message was seen and deleted: neither is told.
    hub->publish({k::deleted, "box", "2", 0, 0});
    hub->withdraw("box", "2");
    EXPECT_TRUE(r.taken().empty());
    // The same id in another mailbox is another message.
    hub->expect("other", "1");
    hub->publish({k::deleted, "box", "1", 0, 0});
    EXPECT_EQ(r.taken().size(), 1u);
    hub->withdraw("other", "1");
}

INSTANTIATE_TEST_SUITE_P(backends, store_events, mailnet::testing::all_backends, mailnet::testing::backend_name);

TEST(store_events_functions, store_functions_tells_the_deletions_on_delete_made) {
    mailnet::store_functions s;
    s.on_delete = [](std::string_view, std::string_view id) {
        return id == "bad" ? std::make_error_code(std::errc::io_error) : std::error_code{};
    };
    recorder r;
    auto sub = s.subscribe(r.listener());
    const std::vector<std::string> deleted{"a", "bad", "b"}, none;
    ASSERT_TRUE(s.lock("box"));
    s.commit("box", deleted, none);
    s.unlock("box");
    const auto events = r.taken();
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0].id, "a");
    EXPECT_EQ(events[1].id, "b");
    EXPECT_EQ(events[1].mailbox, "box");
}

}  // namespace
