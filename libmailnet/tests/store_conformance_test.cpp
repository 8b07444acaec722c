// store_conformance_test.cpp: the storage and delivery interfaces (DESIGN.md "pluggable
// interfaces") as a POP3 session and an SMTP delivery rely on them, the same for every backend:
// memory, Maildir and PostgreSQL. store_events_test.cpp and store_http_test.cpp run their
// tests over the same three backends.
#include "mailnet/dot_stuffing.hpp"
#include "mailnet/store/store.hpp"

#include "support/store_backends.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using mailnet::errc;
using mailnet::testing::backend;

class store_conformance : public ::testing::TestWithParam<backend> {
protected:
    void SetUp() override {
        MAILNET_STORE_BACKEND_OR_SKIP(maker);
        st = maker.make();
        ASSERT_TRUE(st) << "the store did not open";
    }
    std::vector<mailnet::message_info> snap(const std::string& box) {
        auto s = st->snapshot(box);
        EXPECT_TRUE(s) << s.error().message();
        return s ? *s : std::vector<mailnet::message_info>{};
    }
    std::string read_all(const std::string& box, const std::string& id, std::size_t piece = 4096) {
        auto m = st->open(box, id);
        EXPECT_TRUE(m) << m.error().message();
        if (!m) return {};
        std::string out;
        std::string buf(piece, '\0');
        while (true) {
            auto n = m->read(buf);
            EXPECT_TRUE(n);
            if (!n || *n == 0) break;
            out.append(buf.data(), *n);
        }
        EXPECT_EQ(out.size(), m->stored_octets());
        return out;
    }
    void deliver(const std::vector<std::string>& boxes, const std::string& text) {
        auto r = st->deliver(boxes, text);
        ASSERT_TRUE(r) << r.error().message();
    }
    mailnet::testing::store_maker maker{GetParam()};
    std::shared_ptr<mailnet::store> st;
};

TEST_P(store_conformance, a_missing_mailbox_locks_with_an_empty_snapshot_and_is_not_created) {
    ASSERT_TRUE(st->lock("nobody@example.org"));
    EXPECT_TRUE(snap("nobody@example.org").empty());
    st->unlock("nobody@example.org");
    auto boxes = st->mailboxes();
    ASSERT_TRUE(boxes);
    EXPECT_TRUE(boxes->empty());
    EXPECT_EQ(st->open("nobody@example.org", "1").error(), mailnet::make_error_code(errc::not_found));
}

TEST_P(store_conformance, the_lock_is_exclusive_across_store_objects_and_released_by_unlock) {
    auto other = maker.make();  // another front-end where the backend has them
    ASSERT_TRUE(other);
    // Mailboxes that exist (Maildir: a missing one is locked in-process only; its session
    // sees an empty snapshot whatever arrives, so nothing can be deleted twice).
    deliver({"alice@example.org", "bob@example.org"}, "Subject: x\n\nx\n");
    ASSERT_TRUE(st->lock("alice@example.org"));
    EXPECT_EQ(st->lock("alice@example.org").error(), mailnet::make_error_code(errc::mailbox_in_use));
    EXPECT_EQ(other->lock("alice@example.org").error(), mailnet::make_error_code(errc::mailbox_in_use));
    EXPECT_TRUE(other->lock("bob@example.org"));  // another mailbox is free
    st->unlock("alice@example.org");
    EXPECT_TRUE(other->lock("alice@example.org"));
    other->unlock("alice@example.org");
    other->unlock("bob@example.org");
    EXPECT_TRUE(st->lock("alice@example.org"));
    st->unlock("alice@example.org");
    EXPECT_EQ(st->lock("").error(), mailnet::make_error_code(errc::bad_input));
}

TEST_P(store_conformance, messages_come_in_delivery_order_with_wire_sizes_and_stable_valid_uidls) {
    const std::vector<std::string> texts{"Subject: one\n\nfirst\n", "Subject: two\r\n\r\nCRLF already\r\n",
                                         "Subject: three\n\n.leading dot\nlast line without end"};
    for (const auto& t : texts) deliver({"alice@example.org"}, t);
    ASSERT_TRUE(st->lock("alice@example.org"));
    auto a = snap("alice@example.org");
    auto b = snap("alice@example.org");
    st->unlock("alice@example.org");
    ASSERT_EQ(a.size(), 3u);
    std::set<std::string> uidls, ids;
    for (std::size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i].octets, mailnet::wire_octets(texts[i])) << i;
        EXPECT_EQ(read_all("alice@example.org", a[i].id), texts[i]) << i;  // as stored: never stuffed
        const std::string& u = a[i].pop3_uidl();
        EXPECT_GE(u.size(), 1u);
        EXPECT_LE(u.size(), 70u);
        EXPECT_TRUE(std::all_of(u.begin(), u.end(), [](char c) { return c >= 0x21 && c <= 0x7e; })) << u;
        uidls.insert(u);
        ids.insert(a[i].id);
        EXPECT_EQ(a[i].id, b[i].id);
        EXPECT_EQ(b[i].pop3_uidl(), u);
        EXPECT_FALSE(a[i].seen);
    }
    EXPECT_EQ(uidls.size(), 3u);
    EXPECT_EQ(ids.size(), 3u);
}

TEST_P(store_conformance, a_big_message_streams_in_small_reads_and_rewinds) {
    std::string big = "Subject: big\n\n";
    for (int i = 0; big.size() < 1'300'000; ++i) big += "line " + std::to_string(i) + " of a message larger than any chunk\n";
    deliver({"big@example.org"}, big);
    auto s = snap("big@example.org");
    ASSERT_EQ(s.size(), 1u);
    EXPECT_EQ(s[0].octets, mailnet::wire_octets(big));
    EXPECT_EQ(read_all("big@example.org", s[0].id, 1000), big);
    auto m = st->open("big@example.org", s[0].id);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->stored_octets(), big.size());
    auto h = m->headers();
    ASSERT_TRUE(h);
    EXPECT_EQ(*h, "Subject: big\n\n");
    std::string buf(300'000, '\0');
    ASSERT_TRUE(m->read(buf));
    ASSERT_TRUE(m->rewind());
    std::string again;
    while (true) {
        auto n = m->read(buf);
        ASSERT_TRUE(n);
        if (*n == 0) break;
        again.append(buf.data(), *n);
    }
    EXPECT_EQ(again, big);
}

TEST_P(store_conformance, deletions_and_seen_flags_take_effect_at_commit_and_a_dropped_session_changes_nothing) {
    for (int i = 0; i < 4; ++i) deliver({"carol@example.org"}, "Subject: " + std::to_string(i) + "\n\nbody\n");
    ASSERT_TRUE(st->lock("carol@example.org"));
    auto s = snap("carol@example.org");
    st->unlock("carol@example.org");  // a dropped session: no commit
    ASSERT_EQ(s.size(), 4u);
    EXPECT_EQ(snap("carol@example.org").size(), 4u);

    ASSERT_TRUE(st->lock("carol@example.org"));
    const std::vector<std::string> gone{s[1].id, s[3].id};
    const std::vector<std::string> seen{s[0].id};
    auto errs = st->commit("carol@example.org", gone, seen);
    st->unlock("carol@example.org");
    ASSERT_EQ(errs.size(), 2u);
    EXPECT_FALSE(errs[0]);
    EXPECT_FALSE(errs[1]);
    auto after = snap("carol@example.org");
    ASSERT_EQ(after.size(), 2u);
    EXPECT_EQ(after[0].id, s[0].id);
    EXPECT_TRUE(after[0].seen);
    EXPECT_EQ(after[1].id, s[2].id);
    EXPECT_FALSE(after[1].seen);
    EXPECT_EQ(after[1].pop3_uidl(), s[2].pop3_uidl());  // UIDLs never change
    EXPECT_EQ(st->open("carol@example.org", s[1].id).error(), mailnet::make_error_code(errc::not_found));
    // An id already gone counts as deleted.
    auto twice = st->commit("carol@example.org", gone, {});
    ASSERT_EQ(twice.size(), 2u);
    EXPECT_FALSE(twice[0]);
    EXPECT_FALSE(twice[1]);
    EXPECT_EQ(snap("carol@example.org").size(), 2u);
}

TEST_P(store_conformance, each_recipient_gets_one_copy_and_deleting_one_leaves_the_others) {
    const std::string text = "Subject: to three\n\nshared body\n";
    deliver({"a@example.org", "b@example.org", "c@example.org", "a@example.org"}, text);  // a named twice
    for (const char* box : {"a@example.org", "b@example.org", "c@example.org"}) {
        auto s = snap(box);
        ASSERT_EQ(s.size(), 1u) << box;
        EXPECT_EQ(read_all(box, s[0].id), text);
    }
    auto b = snap("b@example.org");
    ASSERT_TRUE(st->lock("b@example.org"));
    const std::vector<std::string> gone{b[0].id};
    auto errs = st->commit("b@example.org", gone, {});
    st->unlock("b@example.org");
    EXPECT_FALSE(errs[0]);
    EXPECT_TRUE(snap("b@example.org").empty());
    for (const char* box : {"a@example.org", "c@example.org"}) {
        auto s = snap(box);
        ASSERT_EQ(s.size(), 1u) << box;
        EXPECT_EQ(read_all(box, s[0].id), text) << box;
    }
    auto boxes = st->mailboxes();
    ASSERT_TRUE(boxes);
    EXPECT_TRUE(std::is_sorted(boxes->begin(), boxes->end()));
    for (const char* box : {"a@example.org", "c@example.org"})
        EXPECT_NE(std::find(boxes->begin(), boxes->end(), box), boxes->end()) << box;
}

TEST_P(store_conformance, a_delivery_aborted_or_dropped_leaves_nothing_and_a_written_one_is_whole) {
    const std::vector<std::string> box{"dave@example.org"};
    {
        auto d = st->begin_delivery(box);
        ASSERT_TRUE(d);
        ASSERT_TRUE((*d)->write("Subject: aborted\n\n"));
        (*d)->abort();
        EXPECT_FALSE((*d)->commit());  // nothing after abort
    }
    {
        auto d = st->begin_delivery(box);
        ASSERT_TRUE(d);
        ASSERT_TRUE((*d)->write("Subject: dropped\n\n"));
    }  // destroyed without commit
    EXPECT_TRUE(snap(box[0]).empty());
    auto d = st->begin_delivery(box);
    ASSERT_TRUE(d);
    std::string whole;
    for (int i = 0; i < 3000; ++i) {  // many small writes, past any in-memory threshold
        const std::string piece = i == 0 ? "Subject: pieces\n\n" : "piece " + std::to_string(i) + " of a long message body\n";
        ASSERT_TRUE((*d)->write(piece));
        whole += piece;
    }
    ASSERT_TRUE((*d)->commit());
    EXPECT_FALSE((*d)->write("more"));  // nothing after commit
    auto s = snap(box[0]);
    ASSERT_EQ(s.size(), 1u);
    EXPECT_EQ(read_all(box[0], s[0].id), whole);
    EXPECT_FALSE(st->begin_delivery(std::vector<std::string>{}));
    EXPECT_FALSE(st->begin_delivery(std::vector<std::string>{""}));
}

TEST_P(store_conformance, mailbox_names_are_data) {
    // Names a filesystem or SQL would trip on reach their own mailbox, and only it.
    const std::vector<std::string> names{"a/b%c@example.org", "..", "x'; DROP TABLE messages; --", "\xc3\xa9t\xc3\xa9@example.org",
                                         std::string(300, 'l') + "@example.org"};
    for (std::size_t i = 0; i < names.size(); ++i) deliver({names[i]}, "Subject: " + std::to_string(i) + "\n\nx\n");
    for (std::size_t i = 0; i < names.size(); ++i) {
        auto s = snap(names[i]);
        ASSERT_EQ(s.size(), 1u) << i;
        EXPECT_EQ(read_all(names[i], s[0].id), "Subject: " + std::to_string(i) + "\n\nx\n");
    }
    auto boxes = st->mailboxes();
    ASSERT_TRUE(boxes);
    auto sorted = names;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(*boxes, sorted);
}

TEST_P(store_conformance, concurrent_deliveries_are_each_stored_once) {
    constexpr int threads = 6, each = 15;
    std::atomic<int> failed{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back([&, t] {
            for (int i = 0; i < each; ++i) {
                const std::vector<std::string> boxes{"shared@example.org", "own" + std::to_string(t) + "@example.org"};
                if (!st->deliver(boxes, "Subject: " + std::to_string(t) + "." + std::to_string(i) + "\n\nx\n")) ++failed;
            }
        });
    for (auto& w : workers) w.join();
    EXPECT_EQ(failed.load(), 0);
    auto s = snap("shared@example.org");
    EXPECT_EQ(s.size(), std::size_t{threads * each});
    std::set<std::string> subjects;
    for (const auto& m : s) subjects.insert(read_all("shared@example.org", m.id));
    EXPECT_EQ(subjects.size(), std::size_t{threads * each});
    for (int t = 0; t < threads; ++t) EXPECT_EQ(snap("own" + std::to_string(t) + "@example.org").size(), std::size_t{each});
}

TEST_P(store_conformance, what_one_store_object_delivers_another_sees) {
    auto other = maker.make();
    ASSERT_TRUE(other);
    deliver({"eve@example.org"}, "Subject: across\n\nx\n");
    auto s = other->snapshot("eve@example.org");
    ASSERT_TRUE(s);
    ASSERT_EQ(s->size(), 1u);
    const std::vector<std::string> gone{(*s)[0].id};
    ASSERT_TRUE(other->lock("eve@example.org"));
    EXPECT_FALSE(other->commit("eve@example.org", gone, {})[0]);
    other->unlock("eve@example.org");
    EXPECT_TRUE(snap("eve@example.org").empty());
}

INSTANTIATE_TEST_SUITE_P(backends, store_conformance, mailnet::testing::all_backends, mailnet::testing::backend_name);

}  // namespace
