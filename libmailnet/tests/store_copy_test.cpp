// store_copy_test.cpp: copy_store (`mailnet-store copy`) between backends: identical bytes,
// every mailbox, UIDLs and seen flags kept where the target allows, and a second run copies
// nothing twice.
#include "mailnet/store/copy.hpp"

#include "support/store_backends.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace {

using mailnet::testing::backend;
using mailnet::testing::store_maker;

// (source backend, target backend)
class store_copy : public ::testing::TestWithParam<std::tuple<backend, backend>> {
protected:
    void SetUp() override {
        MAILNET_STORE_BACKEND_OR_SKIP(from_maker);
        MAILNET_STORE_BACKEND_OR_SKIP(to_maker);
        from = from_maker.make();
        to = to_maker.make();
        ASSERT_TRUE(from && to);
    }
    // mailbox -> [(uidl, seen, bytes)] in snapshot order.
    using content = std::map<std::string, std::vector<std::tuple<std::string, bool, std::string>>>;
    static content read(mailnet::store& s) {
        content out;
        auto boxes = s.mailboxes();
        EXPECT_TRUE(boxes);
        for (const auto& b : boxes.value_or(std::vector<std::string>{})) {
            auto snap = s.snapshot(b);
            EXPECT_TRUE(snap);
            for (const auto& m : snap.value_or(std::vector<mailnet::message_info>{})) {
                auto msg = s.open(b, m.id);
                EXPECT_TRUE(msg);
                std::string bytes, buf(7000, '\0');
                while (msg) {
                    auto n = msg->read(buf);
                    if (!n || *n == 0) break;
                    bytes.append(buf.data(), *n);
                }
                out[b].emplace_back(m.pop3_uidl(), m.seen, bytes);
            }
        }
        return out;
    }
    // A second run of the copy (after a cut-off one, the docs say to run it again): nothing
    // copied, `already` messages there already, the target as it was.
    void expect_nothing_copied_again(std::size_t already) {
        const auto before = read(*to);
        auto again = mailnet::copy_store(*from, *to);
        ASSERT_TRUE(again);
        EXPECT_EQ(again->copied, 0u);
        EXPECT_EQ(again->already, already);
        EXPECT_EQ(read(*to), before);
    }
    store_maker from_maker{std::get<0>(GetParam())};
    store_maker to_maker{std::get<1>(GetParam())};
    std::shared_ptr<mailnet::store> from, to;
};

TEST_P(store_copy, every_mailbox_is_copied_with_identical_bytes_and_a_second_run_copies_nothing) {
    std::string big = "Subject: big\n\n";
    while (big.size() < 200'000) big += "a line of a message spanning several pieces\n";
    ASSERT_TRUE(from->deliver(std::vector<std::string>{"alice@example.org", "bob@example.org"}, "Subject: both\n\nhi\n"));
    ASSERT_TRUE(from->deliver(std::vector<std::string>{"alice@example.org"}, big));
    ASSERT_TRUE(from->deliver(std::vector<std::string>{"carol@example.org"}, "Subject: crlf\r\n\r\n.dot\r\nno end"));
    // alice's first message retrieved by an earlier session: seen.
    auto snap = from->snapshot("alice@example.org");
    ASSERT_TRUE(snap);
    ASSERT_TRUE(from->lock("alice@example.org"));
    const std::vector<std::string> seen{(*snap)[0].id};
    (void)from->commit("alice@example.org", {}, seen);
    from->unlock("alice@example.org");

    auto r = mailnet::copy_store(*from, *to);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->mailboxes, 3u);
    EXPECT_EQ(r->copied, 4u);
    EXPECT_EQ(r->already, 0u);
    // Where UIDLs survive: into PostgreSQL, from a store whose UIDLs are not all digits (a
    // PostgreSQL store's own ids are: another one cannot take them as they are); into a
    // Maildir as the files' base names. Seen flags survive into PostgreSQL only.
    const backend source = std::get<0>(GetParam()), target = std::get<1>(GetParam());
    const bool uidls_kept = (target == backend::postgresql && source != backend::postgresql) || target == backend::maildir;
    const bool seen_kept = target == backend::postgresql && uidls_kept;
    EXPECT_EQ(r->new_uidls, uidls_kept ? 0u : 4u);
    const auto before = read(*from);
    const auto after = read(*to);
    ASSERT_EQ(after.size(), before.size());
    for (const auto& [box, messages] : before) {
        ASSERT_EQ(after.at(box).size(), messages.size()) << box;
        for (std::size_t i = 0; i < messages.size(); ++i) {
            EXPECT_EQ(std::get<2>(after.at(box)[i]), std::get<2>(messages[i])) << box << " " << i;  // the bytes
            if (uidls_kept) {
                EXPECT_EQ(std::get<0>(after.at(box)[i]), std::get<0>(messages[i])) << box << " " << i;
            }
            if (seen_kept) {
                EXPECT_EQ(std::get<1>(after.at(box)[i]), std::get<1>(messages[i])) << box << " " << i;
            }
        }
    }
    // Everything is there already, UIDLs kept or not.
    expect_nothing_copied_again(4);
}

TEST_P(store_copy, a_target_message_that_only_shares_a_uidl_is_not_taken_for_a_copy_and_identical_copies_each_count) {
    // The target's own message comes first, so in a PostgreSQL target it has the id (and UIDL)
    // a PostgreSQL source's first message has: a copy that went by UIDL would skip that one.
    ASSERT_TRUE(to->deliver(std::vector<std::string>{"alice@example.org"}, "Subject: the target's own\n\nmine\n"));
    ASSERT_TRUE(from->deliver(std::vector<std::string>{"alice@example.org"}, "Subject: first\n\nx\n"));
    ASSERT_TRUE(from->deliver(std::vector<std::string>{"alice@example.org"}, "Subject: twice\n\nsame\n"));
    ASSERT_TRUE(from->deliver(std::vector<std::string>{"alice@example.org"}, "Subject: twice\n\nsame\n"));
    // And one of the same size as the target's own, other octets.
    ASSERT_TRUE(from->deliver(std::vector<std::string>{"alice@example.org"}, "Subject: the target's OWN\n\nmine\n"));
    auto bytes_of = [&](mailnet::store& s) {
        std::multiset<std::string> out;
        const auto all = read(s);
        for (const auto& [uidl, seen, bytes] : all.at("alice@example.org")) out.insert(bytes);
        return out;
    };
    auto r = mailnet::copy_store(*from, *to);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->copied, 4u);
    EXPECT_EQ(r->already, 0u);
    auto want = bytes_of(*from);
    want.insert("Subject: the target's own\n\nmine\n");
    EXPECT_EQ(bytes_of(*to), want);
    expect_nothing_copied_again(4);
}

TEST_P(store_copy, two_sources_copied_into_one_target_keep_each_others_messages) {
    // Two stores of the source's kind merged into one target: their UIDLs may be the same
    // (two PostgreSQL stores number from 1); the second's messages are copied all the same,
    // under new UIDLs where the first's took them, and a second run of either copies nothing.
    store_maker second_maker{std::get<0>(GetParam())};
    std::string why;
    ASSERT_TRUE(second_maker.available(why)) << why;
    auto second = second_maker.make();
    ASSERT_TRUE(second);
    ASSERT_TRUE(from->deliver(std::vector<std::string>{"bob@example.org"}, "Subject: from the first\n\n1\n"));
    // Of the same size as the first's, other octets: a UIDL and a size alone say nothing.
    ASSERT_TRUE(second->deliver(std::vector<std::string>{"bob@example.org"}, "Subject: from the secnd\n\n2\n"));
    auto r1 = mailnet::copy_store(*from, *to);
    ASSERT_TRUE(r1) << r1.error().message();
    auto r2 = mailnet::copy_store(*second, *to);
    ASSERT_TRUE(r2) << r2.error().message();
    EXPECT_EQ(r1->copied + r2->copied, 2u);
    auto box = read(*to)["bob@example.org"];
    ASSERT_EQ(box.size(), 2u);
    EXPECT_NE(std::get<0>(box[0]), std::get<0>(box[1])) << "one UIDL for two messages";
    for (auto* s : {from.get(), second.get()}) {
        auto again = mailnet::copy_store(*s, *to);
        ASSERT_TRUE(again);
        EXPECT_EQ(again->copied, 0u);
    }
    EXPECT_EQ(read(*to)["bob@example.org"].size(), 2u);
    // The first store's copy fetched and deleted by a POP3 user of the target: the UIDL the
    // second's message could not have is free now, and a run of the second finds its copy
    // under the new one all the same (by its octets), not copying it again.
    auto snap = to->snapshot("bob@example.org");
    ASSERT_TRUE(snap);
    std::vector<std::string> first_copy;
    for (const auto& m : *snap) {
        auto msg = to->open("bob@example.org", m.id);
        ASSERT_TRUE(msg);
        std::string bytes(4096, '\0');
        auto n = msg->read(bytes);
        ASSERT_TRUE(n);
        if (bytes.substr(0, *n).find("from the first") != std::string::npos) first_copy.push_back(m.id);
    }
    ASSERT_EQ(first_copy.size(), 1u);
    ASSERT_TRUE(to->lock("bob@example.org"));
    for (const auto& e : to->commit("bob@example.org", first_copy, {})) EXPECT_FALSE(e) << e.message();
    to->unlock("bob@example.org");
    auto again = mailnet::copy_store(*second, *to);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->copied, 0u);
    EXPECT_EQ(read(*to)["bob@example.org"].size(), 1u);
}

TEST_P(store_copy, a_mailbox_in_use_stops_the_copy_with_in_use) {
    ASSERT_TRUE(from->deliver(std::vector<std::string>{"dave@example.org"}, "Subject: x\n\nx\n"));
    ASSERT_TRUE(from->lock("dave@example.org"));
    auto r = mailnet::copy_store(*from, *to);
    from->unlock("dave@example.org");
    EXPECT_EQ(r.error(), mailnet::make_error_code(mailnet::errc::mailbox_in_use));
}

std::string pair_name(const ::testing::TestParamInfo<std::tuple<backend, backend>>& info) {
    auto name = [](backend b) {
        return mailnet::testing::backend_name(::testing::TestParamInfo<backend>(b, 0));
    };
    return name(std::get<0>(info.param)) + "_to_" + name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(pairs, store_copy,
                         ::testing::Values(std::make_tuple(backend::maildir, backend::postgresql),
                                           std::make_tuple(backend::postgresql, backend::maildir),
                                           std::make_tuple(backend::postgresql, backend::postgresql),
                                           std::make_tuple(backend::memory, backend::postgresql),
                                           std::make_tuple(backend::maildir, backend::memory)),
                         pair_name);

}  // namespace
