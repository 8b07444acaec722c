// net::delivery_committer: requests that arrive while a group commits form the next group (one
// commit_together for them), each caller resumes on its own executor with its own outcome, and
// a failing or throwing request fails only itself.
#include "mailnet/net/committer.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <thread>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include "mailnet/error.hpp"
#include "support/fixtures.hpp"

namespace {

using mailnet::net::commit_outcome;
using mailnet::net::commit_request;
using mailnet::net::delivery_committer;

// What the fake store's deliveries saw, shared by all of them.
struct journal {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<std::size_t> batches;            // size of each commit_batch call
    std::vector<std::string> committed;          // octets of each committed delivery
    bool hold_first = false;                     // the first commit_batch waits for release()
    bool first_started = false;
    bool released = false;
    std::size_t throw_in_batch = 0;              // the commit_batch call (1-based) that throws
    void release() {
        std::lock_guard l(mutex);
        released = true;
        cv.notify_all();
    }
    // False (and the hold released, so nothing hangs) when the first group never began.
    bool wait_first_started() {
        std::unique_lock l(mutex);
        if (cv.wait_for(l, std::chrono::seconds(10), [&] { return first_started; })) return true;
        released = true;
        cv.notify_all();
        return false;
    }
};

class fake_delivery final : public mailnet::delivery {
public:
    explicit fake_delivery(std::shared_ptr<journal> j) : j_(std::move(j)) {}
    mailnet::result<void> write(std::string_view octets) override {
        if (octets.find("throw") != std::string_view::npos) throw std::runtime_error("a store's bad day");
        if (octets.find("fail-write") != std::string_view::npos) return mailnet::unexpected(mailnet::errc::io_error);
        text_ += octets;
        return {};
    }
    mailnet::result<void> commit() override {
        ADD_FAILURE() << "commit() alone: the committer must use commit_together";
        return mailnet::unexpected(mailnet::errc::io_error);
    }
    void abort() noexcept override { aborted_ = true; }
    bool commit_batch(std::span<mailnet::delivery* const> batch, std::span<mailnet::result<void>> results) override {
        std::unique_lock l(j_->mutex);
        j_->batches.push_back(batch.size());
        if (j_->throw_in_batch == j_->batches.size()) throw std::runtime_error("commit_batch ran out of luck");
        if (j_->hold_first && !j_->first_started) {
            j_->first_started = true;
            j_->cv.notify_all();
            j_->cv.wait(l, [&] { return j_->released; });
        }
        for (std::size_t i = 0; i < batch.size(); ++i) {
            auto* d = static_cast<fake_delivery*>(batch[i]);
            if (d->text_.find("slow") != std::string::npos) {
                l.unlock();
                std::this_thread::sleep_for(std::chrono::milliseconds(200));
                l.lock();
            }
            if (d->text_.find("fail-commit") != std::string::npos) {
                results[i] = mailnet::unexpected(mailnet::errc::mailbox_in_use);
                continue;
            }
            j_->committed.push_back(d->text_);
        }
        return true;
    }

private:
    std::shared_ptr<journal> j_;
    std::string text_;
    bool aborted_ = false;
};

std::shared_ptr<mailnet::store_functions> fake_store(const std::shared_ptr<journal>& j) {
    auto s = std::make_shared<mailnet::store_functions>();
    s->on_begin_delivery = [j](std::span<const std::string> mailboxes) -> mailnet::result<std::unique_ptr<mailnet::delivery>> {
        if (!mailboxes.empty() && mailboxes.front() == "nobody") return mailnet::unexpected(mailnet::errc::bad_input);
        return std::make_unique<fake_delivery>(j);
    };
    return s;
}

// The same with store::group_linger (as the PostgreSQL store's, but long, so that only the last
// commit's time bounds it: four times that).
std::shared_ptr<mailnet::store_functions> lingering_store(const std::shared_ptr<journal>& j,
                                                          std::chrono::microseconds linger = std::chrono::seconds(30)) {
    struct lingering final : mailnet::store_functions {
        explicit lingering(std::chrono::microseconds l) : linger(l) {}
        std::chrono::microseconds group_linger() const noexcept override { return linger; }
        std::chrono::microseconds linger;
    };
    auto s = std::make_shared<lingering>(linger);
    s->on_begin_delivery = fake_store(j)->on_begin_delivery;
    return s;
}

commit_request request(const std::shared_ptr<mailnet::store>& s, std::string mailbox, std::string octets) {
    commit_request rq;
    rq.storage = s;
    rq.mailboxes = {std::move(mailbox)};
    rq.octets = std::move(octets);
    return rq;
}

// Runs one commit per request from coroutines on `io` (one I/O thread), in order of submission;
// returns each outcome and whether it resumed on the I/O thread.
struct caller {
    asio::io_context io;
    std::vector<commit_outcome> outcomes;
    std::vector<bool> on_io_thread;
    std::atomic<std::size_t> done{0};
    std::thread::id io_thread;
    void start(delivery_committer& c, std::vector<commit_request> rqs) {
        outcomes.resize(rqs.size());
        on_io_thread.resize(rqs.size());
        for (std::size_t i = 0; i < rqs.size(); ++i)
            asio::co_spawn(
                io,
                [&, i, rq = std::move(rqs[i])]() mutable -> asio::awaitable<void> {
                    outcomes[i] = co_await c.commit(std::move(rq));
                    on_io_thread[i] = std::this_thread::get_id() == io_thread;
                    ++done;
                },
                asio::detached);
    }
};

TEST(delivery_committer, requests_that_arrive_during_a_group_are_committed_together_in_the_next) {
    auto j = std::make_shared<journal>();
    j->hold_first = true;
    auto s = fake_store(j);
    delivery_committer c;
    caller first;
    std::vector<commit_request> one;
    one.push_back(request(s, "a", "message 0\n"));
    first.start(c, std::move(one));
    std::thread t1([&] {
        first.io_thread = std::this_thread::get_id();
        first.io.run();
    });
    ASSERT_TRUE(j->wait_first_started());
    // Five more while the first group is held inside its commit.
    caller rest;
    std::vector<commit_request> five;
    for (int i = 1; i <= 5; ++i) five.push_back(request(s, "b", "message " + std::to_string(i) + "\n"));
    rest.start(c, std::move(five));
    std::thread t2([&] {
        rest.io_thread = std::this_thread::get_id();
        rest.io.run();
    });
    // All five are queued (each coroutine submits when it starts) before the first group ends.
    for (int i = 0; i < 10000 && c.stats().queued < 5; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(c.stats().queued, 5u);
    j->release();
    t1.join();
    t2.join();
    ASSERT_EQ(first.done, 1u);
    ASSERT_EQ(rest.done, 5u);
    EXPECT_FALSE(first.outcomes[0].error);
    EXPECT_TRUE(first.on_io_thread[0]);
    for (std::size_t i = 0; i < 5; ++i) {
        EXPECT_FALSE(rest.outcomes[i].error) << i;
        EXPECT_TRUE(rest.on_io_thread[i]) << i;
    }
    EXPECT_EQ(j->batches, (std::vector<std::size_t>{1, 5}));
    const auto st = c.stats();
    EXPECT_EQ(st.groups, 2u);
    EXPECT_EQ(st.requests, 6u);
    EXPECT_EQ(st.largest_group, 5u);
    ASSERT_EQ(j->committed.size(), 6u);
    EXPECT_EQ(j->committed[0], "message 0\n");
}

TEST(delivery_committer, a_request_that_fails_or_throws_fails_alone) {
    auto j = std::make_shared<journal>();
    j->hold_first = true;
    auto s = fake_store(j);
    delivery_committer c;
    caller blocker;
    std::vector<commit_request> one;
    one.push_back(request(s, "a", "first\n"));
    blocker.start(c, std::move(one));
    std::thread t1([&] {
        blocker.io_thread = std::this_thread::get_id();
        blocker.io.run();
    });
    ASSERT_TRUE(j->wait_first_started());
    caller group;
    std::vector<commit_request> rqs;
    rqs.push_back(request(s, "a", "good 1\n"));
    rqs.push_back(request(s, "nobody", "begin fails\n"));
    rqs.push_back(request(s, "a", "throw in write\n"));
    rqs.push_back(request(s, "a", "fail-write\n"));
    rqs.push_back(request(s, "a", "fail-commit\n"));
    rqs.push_back(request(s, "a", "good 2\n"));
    group.start(c, std::move(rqs));
    std::thread t2([&] {
        group.io_thread = std::this_thread::get_id();
        group.io.run();
    });
    for (int i = 0; i < 10000 && c.stats().queued < 6; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(c.stats().queued, 6u);
    j->release();
    t1.join();
    t2.join();
    ASSERT_EQ(group.done, 6u);
    EXPECT_FALSE(group.outcomes[0].error);
    EXPECT_EQ(group.outcomes[1].error, mailnet::make_error_code(mailnet::errc::bad_input));
    EXPECT_EQ(group.outcomes[2].error, mailnet::make_error_code(mailnet::errc::io_error));
    EXPECT_EQ(group.outcomes[2].exception, "a store's bad day");
    EXPECT_EQ(group.outcomes[3].error, mailnet::make_error_code(mailnet::errc::io_error));
    EXPECT_TRUE(group.outcomes[3].exception.empty());
    EXPECT_EQ(group.outcomes[4].error, mailnet::make_error_code(mailnet::errc::mailbox_in_use));
    EXPECT_FALSE(group.outcomes[5].error);
    // The three whose writes failed took no part in the group's commit.
    EXPECT_EQ(j->batches, (std::vector<std::size_t>{1, 3}));
    EXPECT_EQ(j->committed, (std::vector<std::string>{"first\n", "good 1\n", "good 2\n"}));
}

TEST(delivery_committer, a_delivery_begun_elsewhere_is_written_and_committed_into_a_maildir) {
    mailnet::testing::temp_dir dir("mailnet-committer");
    mailnet::maildir_options o;
    o.root = dir.path / "store";
    auto opened = mailnet::open_maildir_store(o);
    ASSERT_TRUE(opened);
    std::shared_ptr<mailnet::store> s = std::move(*opened);
    EXPECT_TRUE(s->commits_in_groups());
    const std::vector<std::string> alice{"alice"}, both{"alice", "bob"};
    EXPECT_FALSE(s->knows_mailboxes(alice));  // not made yet: its begin_delivery would fsync
    ASSERT_TRUE(s->deliver(alice, "Subject: first\n\n"));
    EXPECT_TRUE(s->knows_mailboxes(alice));
    EXPECT_FALSE(s->knows_mailboxes(both));
    auto c = std::make_unique<delivery_committer>();
    std::vector<commit_request> rqs;
    for (int i = 0; i < 20; ++i) {
        commit_request rq;
        rq.storage = s;
        const std::vector<std::string> to{"alice", "bob"};
        if (i % 2 == 0) {
            auto d = s->begin_delivery(to);
            ASSERT_TRUE(d);
            ASSERT_TRUE((*d)->write("Subject: " + std::to_string(i) + "\n"));
            rq.out = std::move(*d);
        } else {
            rq.mailboxes = to;
            rq.octets = "Subject: " + std::to_string(i) + "\n";
        }
        rq.octets += "\nbody\n";
        rqs.push_back(std::move(rq));
    }
    caller callers;
    callers.start(*c, std::move(rqs));
    callers.io_thread = std::this_thread::get_id();
    callers.io.run();
    ASSERT_EQ(callers.done, 20u);
    for (const auto& o : callers.outcomes) EXPECT_FALSE(o.error) << o.error.message();
    for (const char* m : {"alice", "bob"}) {
        ASSERT_TRUE(s->lock(m));
        auto snap = s->snapshot(m);
        ASSERT_TRUE(snap);
        EXPECT_EQ(snap->size(), std::string(m) == "alice" ? 21u : 20u) << m;
        s->unlock(m);
    }
    EXPECT_TRUE(s->knows_mailboxes(both));
    // tmp/ holds at most the files made ahead for alice (prepare_delivery), empty; they go
    // with the store.
    c.reset();  // its thread joined: no hint under way
    const auto tmp = o.root / "alice" / "tmp";
    std::size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(tmp)) {
        std::error_code ec;  // one may expire (and go) while listed
        const auto size = std::filesystem::file_size(e.path(), ec);
        if (!ec) {
            EXPECT_EQ(size, 0u) << e.path();
        }
        ++n;
    }
    EXPECT_LE(n, 32u) << "at most 32 made ahead for one mailbox";
    s.reset();
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp), {}), 0);
    EXPECT_FALSE(mailnet::make_memory_store()->commits_in_groups());
}

// Groups of 1 (held) and 5 (whose commit takes 0.2 s for each of its first `slow`, 1 s for
// all five): the recent groups then average 2, so the committer may wait for a group of 3.
// Then one request, and two more 0.1 s later. With `lingering`, the lone request must be
// committed with the pair, at once when the pair arrives (not when the wait runs out);
// without, the pair is sent once the lone one is done.
void groups_of_one_and_five(delivery_committer& c, const std::shared_ptr<mailnet::store>& s, const std::shared_ptr<journal>& j,
                            int slow = 5) {
    caller first, five;
    std::vector<commit_request> rqs;
    rqs.push_back(request(s, "a", "first\n"));
    first.start(c, std::move(rqs));
    std::thread t1([&] { first.io.run(); });
    const bool started = j->wait_first_started();
    rqs.clear();
    for (int i = 0; i < 5; ++i) rqs.push_back(request(s, "a", (i < slow ? "slow " : "quick ") + std::to_string(i) + "\n"));
    five.start(c, std::move(rqs));
    std::thread t2([&] { five.io.run(); });
    for (int i = 0; i < 10000 && c.stats().queued < 5; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    j->release();
    t1.join();
    t2.join();
    EXPECT_TRUE(started);
    EXPECT_EQ(five.done, 5u);
}

std::vector<std::size_t> batches_with_a_late_pair(const std::shared_ptr<mailnet::store>& s, const std::shared_ptr<journal>& j,
                                                  bool lingering) {
    delivery_committer c;
    groups_of_one_and_five(c, s, j);
    caller lone, pair, last;
    std::vector<commit_request> rqs;
    rqs.push_back(request(s, "a", "lone\n"));
    const auto lone_sent = std::chrono::steady_clock::now();
    lone.start(c, std::move(rqs));
    std::thread t3([&] { lone.io.run(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!lingering) {
        for (int i = 0; i < 10000 && lone.done == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        // Committed at once: not after a wait of four times the last commit (4 s).
        EXPECT_LT(std::chrono::steady_clock::now() - lone_sent, std::chrono::milliseconds(2000));
    }
    EXPECT_EQ(lone.done, lingering ? 0u : 1u);
    rqs.clear();
    rqs.push_back(request(s, "a", "pair 1\n"));
    rqs.push_back(request(s, "a", "pair 2\n"));
    pair.start(c, std::move(rqs));
    const auto pair_sent = std::chrono::steady_clock::now();
    std::thread t4([&] { pair.io.run(); });
    t3.join();
    // Woken by the pair, not by the end of its wait (about 4 s: four times the last commit's).
    EXPECT_LT(std::chrono::steady_clock::now() - pair_sent, std::chrono::milliseconds(600));
    t4.join();
    EXPECT_EQ(lone.done, 1u);
    EXPECT_EQ(pair.done, 2u);
    // One more, alone: the wait is bounded (by four times the last commit's time), so it is
    // committed although no other request comes.
    rqs.clear();
    rqs.push_back(request(s, "a", "last\n"));
    last.start(c, std::move(rqs));
    const auto started_last = std::chrono::steady_clock::now();
    last.io.run();
    EXPECT_LT(std::chrono::steady_clock::now() - started_last, std::chrono::seconds(10));
    EXPECT_EQ(last.done, 1u);
    EXPECT_FALSE(last.outcomes[0].error);
    std::lock_guard l(j->mutex);
    return j->batches;
}

TEST(delivery_committer, a_store_that_asks_for_it_has_a_small_group_wait_for_the_messages_about_to_end) {
    auto j = std::make_shared<journal>();
    j->hold_first = true;
    EXPECT_EQ(batches_with_a_late_pair(lingering_store(j), j, true), (std::vector<std::size_t>{1, 5, 3, 1}));
}

// After groups_of_one_and_five(..., slow) on a store asking for `linger`: how long one lone
// request then waits to be committed (the recent groups promise two more, which never come).
std::chrono::steady_clock::duration lone_request_wait(std::chrono::microseconds linger, int slow,
                                                       std::vector<std::size_t>* batches = nullptr) {
    auto j = std::make_shared<journal>();
    j->hold_first = true;
    auto s = lingering_store(j, linger);
    delivery_committer c;
    groups_of_one_and_five(c, s, j, slow);
    caller lone;
    std::vector<commit_request> rqs;
    rqs.push_back(request(s, "a", "lone\n"));
    const auto sent = std::chrono::steady_clock::now();
    lone.start(c, std::move(rqs));
    lone.io.run();
    const auto waited = std::chrono::steady_clock::now() - sent;
    EXPECT_EQ(lone.done, 1u);
    EXPECT_FALSE(lone.outcomes.empty() || lone.outcomes[0].error);
    std::lock_guard l(j->mutex);
    if (batches) *batches = j->batches;
    return waited;
}

TEST(delivery_committer, a_small_group_waits_at_most_the_linger_and_four_times_the_last_commit) {
    // The last commit took about 0.2 s (one slow message of five): a lone request then waits
    // for the two more the recent groups promise until four times that (0.8 s), not the
    // store's 30 s, and not just the commit's 0.2 s (that was too short a wait for
    // PostgreSQL front-ends sharing two cores: docs/stores.md).
    std::vector<std::size_t> batches;
    const auto waited = lone_request_wait(std::chrono::seconds(30), 1, &batches);
    EXPECT_GE(waited, std::chrono::milliseconds(450));
    EXPECT_LT(waited, std::chrono::seconds(5));
    EXPECT_EQ(batches, (std::vector<std::size_t>{1, 5, 1}));
}

TEST(delivery_committer, a_small_group_waits_no_longer_than_the_store_asks) {
    // The last commit took about 1 s (five slow messages), four times that is 4 s; the store
    // asks for 0.3 s: a lone request is committed after about 0.3 s.
    const auto waited = lone_request_wait(std::chrono::milliseconds(300), 5);
    EXPECT_GE(waited, std::chrono::milliseconds(250));
    EXPECT_LT(waited, std::chrono::milliseconds(2000));
}

TEST(delivery_committer, a_committer_stopped_while_a_group_waits_commits_it_at_once) {
    auto j = std::make_shared<journal>();
    j->hold_first = true;
    auto s = lingering_store(j);
    std::optional<delivery_committer> c(std::in_place);
    groups_of_one_and_five(*c, s, j);
    caller lone;
    std::vector<commit_request> rqs;
    rqs.push_back(request(s, "a", "lone\n"));
    lone.start(*c, std::move(rqs));
    std::thread t([&] { lone.io.run(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(lone.done, 0u);  // it waits for two more
    const auto stopped = std::chrono::steady_clock::now();
    c.reset();
    t.join();
    EXPECT_LT(std::chrono::steady_clock::now() - stopped, std::chrono::milliseconds(600));
    EXPECT_EQ(lone.done, 1u);
    EXPECT_FALSE(lone.outcomes[0].error);
    EXPECT_EQ(j->batches, (std::vector<std::size_t>{1, 5, 1}));
}

TEST(delivery_committer, after_a_group_the_store_is_hinted_of_the_first_mailbox_of_each_request) {
    // prepare_delivery: the store may make ready what the next deliveries there need.
    struct hinted final : mailnet::store_functions {
        std::mutex mutex;
        std::vector<std::vector<std::string>> calls;
        void prepare_delivery(std::span<const std::string> mailboxes) override {
            std::lock_guard l(mutex);
            calls.emplace_back(mailboxes.begin(), mailboxes.end());
        }
        std::size_t count() {
            std::lock_guard l(mutex);
            return calls.size();
        }
    };
    auto j = std::make_shared<journal>();
    auto s = std::make_shared<hinted>();
    s->on_begin_delivery = fake_store(j)->on_begin_delivery;
    delivery_committer c;
    caller one;
    std::vector<commit_request> rqs;
    commit_request rq = request(s, "alice", "first\n");
    rq.mailboxes.push_back("bob");
    rqs.push_back(std::move(rq));
    one.start(c, std::move(rqs));
    one.io.run();
    ASSERT_EQ(one.done, 1u);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (s->count() < 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::lock_guard l(s->mutex);
    EXPECT_EQ(s->calls, (std::vector<std::vector<std::string>>{{"alice"}}));
}

TEST(delivery_committer, a_store_that_does_not_ask_for_it_has_no_group_wait) {
    auto j = std::make_shared<journal>();
    j->hold_first = true;
    const auto b = batches_with_a_late_pair(fake_store(j), j, false);
    // The lone request is committed at once, alone; the pair (submitted one after the other)
    // in one group or two; then the last.
    ASSERT_GE(b.size(), 5u);
    EXPECT_EQ(std::vector<std::size_t>(b.begin(), b.begin() + 3), (std::vector<std::size_t>{1, 5, 1}));
    EXPECT_EQ(b.back(), 1u);
    EXPECT_EQ(std::accumulate(b.begin() + 3, b.end(), std::size_t{0}), 3u);
}

TEST(delivery_committer, a_group_holds_at_most_max_group_requests) {
    auto j = std::make_shared<journal>();
    j->hold_first = true;
    auto s = fake_store(j);
    delivery_committer c;
    caller first, callers;
    std::vector<commit_request> one, rqs;
    one.push_back(request(s, "a", "first\n"));
    first.start(c, std::move(one));
    std::thread t1([&] { first.io.run(); });
    const bool started = j->wait_first_started();
    for (int i = 0; i < 100; ++i) rqs.push_back(request(s, "a", "m" + std::to_string(i) + "\n"));
    callers.start(c, std::move(rqs));
    std::thread t2([&] { callers.io.run(); });
    for (int i = 0; i < 10000 && c.stats().queued < 100; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(c.stats().queued, 100u);
    j->release();
    t1.join();
    t2.join();
    ASSERT_TRUE(started);
    EXPECT_EQ(callers.done, 100u);
    EXPECT_EQ(j->batches, (std::vector<std::size_t>{1, delivery_committer::max_group, 100 - delivery_committer::max_group}));
    EXPECT_EQ(c.stats().largest_group, delivery_committer::max_group);
}

TEST(delivery_committer, a_commit_that_throws_fails_its_group_and_the_next_group_commits) {
    auto j = std::make_shared<journal>();
    j->hold_first = true;
    j->throw_in_batch = 2;
    auto s = fake_store(j);
    delivery_committer c;
    caller first, second;
    std::vector<commit_request> one, three;
    one.push_back(request(s, "a", "first\n"));
    first.start(c, std::move(one));
    std::thread t1([&] { first.io.run(); });
    const bool started = j->wait_first_started();
    for (int i = 0; i < 3; ++i) three.push_back(request(s, "a", "doomed\n"));
    second.start(c, std::move(three));
    std::thread t2([&] { second.io.run(); });
    for (int i = 0; i < 10000 && c.stats().queued < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    j->release();
    t1.join();
    t2.join();
    ASSERT_TRUE(started);
    ASSERT_EQ(second.done, 3u);
    for (const auto& o : second.outcomes) {
        EXPECT_EQ(o.error, mailnet::make_error_code(mailnet::errc::io_error));
        EXPECT_EQ(o.exception, "commit_batch ran out of luck");
    }
    // The thread lives on: a later request commits.
    caller third;
    std::vector<commit_request> last;
    last.push_back(request(s, "a", "after\n"));
    third.start(c, std::move(last));
    third.io.run();
    ASSERT_EQ(third.done, 1u);
    EXPECT_FALSE(third.outcomes[0].error);
    EXPECT_EQ(j->committed, (std::vector<std::string>{"first\n", "after\n"}));
}

TEST(delivery_committer, an_io_context_destroyed_while_its_commit_runs_waits_for_it_and_frees_everything) {
    // The io_context's own committer (of()): its destruction joins the committer's thread
    // before tearing down its queues, so the held group's completion is posted into a live
    // io_context and destroyed with it (under ASan: no use after free, no leak).
    auto j = std::make_shared<journal>();
    j->hold_first = true;
    auto s = fake_store(j);
    std::thread releaser;
    {
        asio::io_context io;
        auto& c = delivery_committer::of(io);
        EXPECT_EQ(&c, &delivery_committer::of(io));
        bool resumed = false;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                (void)co_await c.commit(request(s, "a", "in flight\n"));
                resumed = true;
            },
            asio::detached);
        io.run_one();  // the coroutine starts and submits its request
        ASSERT_TRUE(j->wait_first_started());
        io.stop();
        EXPECT_FALSE(resumed);
        releaser = std::thread([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            j->release();
        });
    }  // ~io_context: shutdown of the committer service waits for the held group
    releaser.join();
    EXPECT_EQ(j->committed, (std::vector<std::string>{"in flight\n"}));
}

}  // namespace
