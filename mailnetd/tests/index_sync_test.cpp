// index_sync_test.cpp: mailnetd's index kept equal to the store: the start-up scan racing
// deliveries and deletions (nothing missed, nothing twice), complete() once the scan is in,
// and the scan's messages taken in oldest first; after a store's `resync` event (its events were
// cut), what was missed is taken in and what went is dropped.
#include "mailnet/mailnetd/index_sync.hpp"

#include <gtest/gtest.h>

#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <thread>

namespace {

using namespace mailnet::mailnetd;
using namespace std::chrono_literals;

// An index fed by index_sync from `st`, its I/O thread running; every `added` change counted.
struct synced {
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
    mail_index index;
    std::map<std::string, int> added;  // id -> times told (I/O thread)
    std::optional<index_sync> sync;
    std::thread thread;

    explicit synced(std::shared_ptr<mailnet::store> st) {
        index.watch([this](const mail_index::change& c) {
            if (c.added) ++added[c.id];
        });
        sync.emplace(io, std::move(st), index, mailnet::null_log());
    }
    void start() {
        sync->start();
        thread = std::thread([this] { io.run(); });
    }
    ~synced() {
        work.reset();
        io.stop();
        if (thread.joinable()) thread.join();
        sync.reset();
    }
    template <class F>
    auto on_io(F f) {
        std::packaged_task<decltype(f())()> task(f);
        auto done = task.get_future();
        asio::post(io, [&task] { task(); });
        return done.get();
    }
    // Waits until every event told so far (a resync too) is in the index, and no resync runs.
    bool settled() {
        std::promise<void> p;
        auto f = p.get_future();
        sync->after_pending([&p] { p.set_value(); });
        if (f.wait_for(10s) != std::future_status::ready) return false;
        return until([&] { return !sync->behind(); });
    }
    // Waits until `f()` holds on the I/O thread.
    bool until(const std::function<bool()>& f, std::chrono::seconds limit = 10s) {
        const auto end = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < end) {
            if (on_io(f)) return true;
            std::this_thread::sleep_for(5ms);
        }
        return false;
    }
};

// A file put into a Maildir's new/ or cur/ as a Maildir writer puts it: written in tmp/, then
// renamed, so that no scan sees it half written (a scan that saw it short would keep that size).
void put_file(const std::filesystem::path& path, const std::string& text) {
    const auto tmp = path.parent_path().parent_path() / "tmp" / path.filename();
    std::filesystem::create_directories(tmp.parent_path());
    std::ofstream(tmp) << text;
    std::filesystem::rename(tmp, path);
}

std::set<std::string> store_ids(mailnet::store& st) {
    std::set<std::string> out;
    auto boxes = st.mailboxes();
    if (!boxes) return out;
    for (const auto& b : *boxes)
        if (auto snap = st.snapshot(b))
            for (const auto& m : *snap) out.insert(make_message_id(b, m.id));
    return out;
}

TEST(index_sync, a_summary_keeps_at_most_100_addresses_of_256_octets_and_4_kib_of_them) {
    // A summary is kept for every recipient's copy: 100 addresses of 1 KiB in To made 20 MB of
    // index for one 100 KB message sent to 100 mailboxes.
    std::unique_ptr<mailnet::store> st = mailnet::make_memory_store();
    std::string to = "To: ";
    for (int i = 0; i < 150; ++i) to += (i ? ", " : "") + std::string(300, static_cast<char>('a' + i % 26)) + "@x.org";
    const std::vector<std::string> bob{"bob@x.org"};
    ASSERT_TRUE(st->deliver(bob, to + "\nSubject: many\n\nbody\n"));
    auto snap = st->snapshot("bob@x.org");
    ASSERT_TRUE(snap && snap->size() == 1u);
    auto s = read_summary(*st, "bob@x.org", (*snap)[0].id, (*snap)[0].octets);
    ASSERT_TRUE(s);
    std::size_t total = 0;
    for (const auto& a : s->to) {
        EXPECT_LE(a.size(), 256u);
        total += a.size();
    }
    EXPECT_LE(total, 4096u);
    EXPECT_EQ(s->to.size(), 16u);  // 16 x 256 = 4096
    EXPECT_EQ(s->to.front(), std::string(256, 'a'));
}

TEST(index_sync, a_scan_racing_deliveries_misses_nothing_and_tells_nothing_twice) {
    for (int round = 0; round < 5; ++round) {
        std::shared_ptr<mailnet::store> st(mailnet::make_memory_store());
        const std::vector<std::string> boxes{"a@x.org", "b@x.org", "c@x.org"};
        for (int i = 0; i < 300; ++i)
            ASSERT_TRUE(st->deliver(std::vector<std::string>{boxes[i % 3]}, "Subject: old " + std::to_string(i) + "\n\nx\n"));
        synced s(st);
        std::promise<void> go;
        auto go_f = go.get_future().share();
        // Deliveries (two mailboxes at once, then one) and a few deletions while the scan runs.
        auto writer = std::async(std::launch::async, [&] {
            go_f.wait();
            for (int i = 0; i < 300; ++i) {
                if (!st->deliver(std::vector<std::string>{boxes[i % 3], boxes[(i + 1) % 3]},
                                 "Subject: new " + std::to_string(i) + "\n\ny\n"))
                    return false;
                if (i % 50 == 0) {
                    auto snap = st->snapshot(boxes[0]);
                    if (snap && !snap->empty()) st->commit(boxes[0], std::vector<std::string>{(*snap)[0].id}, {});
                }
            }
            return true;
        });
        go.set_value();
        s.start();
        ASSERT_TRUE(writer.get());
        const auto want = store_ids(*st);
        ASSERT_EQ(want.size(), 300u + 600u - 6u);
        ASSERT_TRUE(s.until([&] { return s.index.complete() && s.index.size() == want.size(); }))
            << "round " << round << ": " << s.on_io([&] { return s.index.size(); }) << " of " << want.size();
        std::this_thread::sleep_for(50ms);  // nothing more arrives
        s.on_io([&] {
            std::set<std::string> have;
            for (const auto* m : s.index.in_mailbox("")) have.insert(m->id);
            EXPECT_EQ(have, want) << "round " << round;
            for (const auto& [id, n] : s.added) EXPECT_EQ(n, 1) << id;
            return 0;
        });
    }
}

TEST(index_sync, complete_once_the_scan_is_in_and_the_scan_goes_in_oldest_first) {
    const auto dir = std::filesystem::temp_directory_path() / ("mailnetd-index-sync-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir / "bob@x.org" / "new");
    std::filesystem::create_directories(dir / "bob@x.org" / "cur");
    std::filesystem::create_directories(dir / "bob@x.org" / "tmp");
    std::filesystem::create_directories(dir / "amy@x.org" / "new");
    std::filesystem::create_directories(dir / "amy@x.org" / "cur");
    std::filesystem::create_directories(dir / "amy@x.org" / "tmp");
    // Maildir names say when: bob's mailbox has the oldest and the newest, amy's the middle one.
    const auto put = [&](const std::string& box, const std::string& name, const std::string& subject) {
        const std::string body = "Subject: " + subject + "\n\nx\n";
        std::ofstream(dir / box / "new" / name) << body;
    };
    put("bob@x.org", "1700000001.M1P1Q1.h", "first");
    put("amy@x.org", "1700000002.M1P1Q1.h", "second");
    put("bob@x.org", "1700000003.M1P1Q1.h", "third");
    mailnet::maildir_options opts;
    opts.root = dir;
    auto st = mailnet::open_maildir_store(opts);
    ASSERT_TRUE(st) << st.error().message();
    synced s(std::shared_ptr<mailnet::store>(std::move(*st)));
    EXPECT_FALSE(s.index.complete());
    s.start();
    ASSERT_TRUE(s.until([&] { return s.index.complete(); }));
    s.on_io([&] {
        EXPECT_EQ(s.index.size(), 3u);
        std::vector<std::pair<std::uint64_t, std::string>> by_seq;
        for (const auto* m : s.index.in_mailbox("")) by_seq.emplace_back(s.index.key_of(m->id)->seq, m->subject);
        std::sort(by_seq.begin(), by_seq.end());
        ASSERT_EQ(by_seq.size(), 3u);
        EXPECT_EQ(by_seq[0].second, "first");
        EXPECT_EQ(by_seq[1].second, "second");
        EXPECT_EQ(by_seq[2].second, "third");
    });
    std::filesystem::remove_all(dir);
}

// A store that tells nobody of its changes (as another front-end's are not told while a
// PostgreSQL store's event connection is down, or files written by hand into a Maildir):
// the test tells a delivery itself (tell) or says that events were missed (resync).
class quiet_store : public mailnet::store {
public:
    explicit quiet_store(std::unique_ptr<mailnet::store> inner = mailnet::make_memory_store()) : inner_(std::move(inner)) {}
    mailnet::result<void> lock(std::string_view box) override { return inner_->lock(box); }
    void unlock(std::string_view box) noexcept override { inner_->unlock(box); }
    mailnet::result<std::vector<mailnet::message_info>> snapshot(std::string_view box) override {
        if (fail_bob && box == "bob@x.org") return mailnet::unexpected(mailnet::errc::temporary_failure);
        return inner_->snapshot(box);
    }
    std::atomic<bool> fail_bob{false};
    mailnet::result<mailnet::message> open(std::string_view box, std::string_view id) override { return inner_->open(box, id); }
    std::vector<std::error_code> commit(std::string_view box, std::span<const std::string> deleted,
                                        std::span<const std::string> seen) override {
        return inner_->commit(box, deleted, seen);
    }
    mailnet::result<std::unique_ptr<mailnet::delivery>> begin_delivery(std::span<const std::string> boxes) override {
        return inner_->begin_delivery(boxes);
    }
    mailnet::result<std::vector<std::string>> mailboxes() override { return inner_->mailboxes(); }
    void tell(const std::string& box, const std::string& id, std::uint64_t octets) {
        events()->publish({mailnet::store_event::kind::delivered, box, id, octets, 0});
    }
    void resync() { events()->publish({mailnet::store_event::kind::resync, {}, {}, 0, 0}); }

private:
    std::unique_ptr<mailnet::store> inner_;
};

TEST(index_sync, a_delivery_is_received_when_told_not_at_its_file_names_earlier_time) {
    // A Maildir file made ahead of its delivery names a time up to 2 s early (here: years):
    // a delivery told by its event is received when told, so each is newer than the one told
    // before it, and a `since=TIME` taken before it was sent counts it.
    const auto dir = std::filesystem::temp_directory_path() / ("mailnetd-index-order-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    for (const char* sub : {"new", "cur", "tmp"}) std::filesystem::create_directories(dir / "bob@x.org" / sub);
    mailnet::maildir_options opts;
    opts.root = dir;
    auto st = mailnet::open_maildir_store(opts);
    ASSERT_TRUE(st) << st.error().message();
    auto store = std::make_shared<quiet_store>(std::move(*st));
    synced s(store);
    s.start();
    ASSERT_TRUE(s.until([&] { return s.index.complete(); }));
    const auto deliver = [&](const std::string& name, const std::string& subject) {
        put_file(dir / "bob@x.org" / "new" / name, "Subject: " + subject + "\n\nx\n");
        store->tell("bob@x.org", name, 16 + subject.size());
    };
    const auto before = std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
    deliver("1700000003.M1P1Q1.h", "m3");
    deliver("1700000002.M2P1Q2.h", "m4");  // made ahead: a second earlier
    deliver("1699999990.M3P1Q3.h", "m5");  // ten seconds earlier still
    ASSERT_TRUE(s.until([&] { return s.index.size() == 3; }));
    s.on_io([&] {
        std::vector<std::string> newest_first;
        for (const auto* m : s.index.query(message_query{}).messages) newest_first.push_back(m->subject);
        EXPECT_EQ(newest_first, (std::vector<std::string>{"m5", "m4", "m3"}));
        message_query since;
        since.after_us = before;
        EXPECT_EQ(s.index.query(since).total, 3u) << "since=TIME taken before the three were told";
    });
    std::filesystem::remove_all(dir);
}

TEST(index_sync, a_resync_takes_in_what_was_missed_and_drops_what_went_and_wakes_its_waiter) {
    auto st = std::make_shared<quiet_store>();
    const std::vector<std::string> bob{"bob@x.org"}, amy{"amy@x.org"};
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(st->deliver(bob, "Subject: old " + std::to_string(i) + "\n\nx\n"));
    synced s(st);
    s.start();
    ASSERT_TRUE(s.until([&] { return s.index.complete() && s.index.size() == 4u; }));
    // Unheard: two deliveries, one of them to two mailboxes, and a deletion.
    ASSERT_TRUE(st->deliver(amy, "Subject: missed 1\n\ny\n"));
    ASSERT_TRUE(st->deliver(std::vector<std::string>{"amy@x.org", "bob@x.org"}, "Subject: missed 2\n\ny\n"));
    auto snap = st->snapshot("bob@x.org");
    ASSERT_TRUE(snap);
    ASSERT_TRUE(st->lock("bob@x.org"));
    EXPECT_FALSE(st->commit("bob@x.org", std::vector<std::string>{(*snap)[0].id}, {})[0]);
    st->unlock("bob@x.org");
    // A waiter for amy's two messages is not woken by what nobody told.
    std::atomic<int> woken{0};
    s.on_io([&] {
        message_query q;
        q.mailbox = "amy@x.org";
        return s.index.wait(q, 2, [&] { ++woken; });
    });
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(woken.load(), 0);
    EXPECT_EQ(s.on_io([&] { return s.index.size(); }), 4u);
    st->resync();
    const auto want = store_ids(*st);
    ASSERT_EQ(want.size(), 6u);  // bob: 3 old + missed 2; amy: missed 1 and 2
    ASSERT_TRUE(s.until([&] {
        std::set<std::string> have;
        for (const auto* m : s.index.in_mailbox("")) have.insert(m->id);
        return have == want;
    })) << s.on_io([&] { return s.index.size(); }) << " in the index";
    EXPECT_EQ(woken.load(), 1);
    // A second resync changes nothing, and nothing was told twice.
    st->resync();
    ASSERT_TRUE(s.settled());
    s.on_io([&] {
        EXPECT_FALSE(s.sync->behind());
        EXPECT_EQ(s.index.size(), want.size());
        for (const auto& [id, n] : s.added) EXPECT_EQ(n, 1) << id;
        return 0;
    });
}

TEST(index_sync, a_mailbox_the_store_cannot_read_in_a_resync_keeps_its_entries_until_a_later_one_can) {
    auto st = std::make_shared<quiet_store>();
    const std::vector<std::string> bob{"bob@x.org"}, amy{"amy@x.org"};
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(st->deliver(bob, "Subject: bob " + std::to_string(i) + "\n\nx\n"));
    synced s(st);
    s.start();
    ASSERT_TRUE(s.until([&] { return s.index.complete() && s.index.size() == 3u; }));
    std::atomic<int> removed{0};
    s.on_io([&] {
        return s.index.watch([&](const mail_index::change& c) {
            if (!c.added) ++removed;
        });
    });
    // Unheard: one of bob's deleted, one mail for amy; then bob's mailbox cannot be read.
    auto snap = st->snapshot("bob@x.org");
    ASSERT_TRUE(snap);
    EXPECT_FALSE(st->commit("bob@x.org", std::vector<std::string>{(*snap)[0].id}, {})[0]);
    ASSERT_TRUE(st->deliver(amy, "Subject: amy\n\nx\n"));
    st->fail_bob = true;
    st->resync();
    ASSERT_TRUE(s.until([&] { return s.index.in_mailbox("amy@x.org").size() == 1u; }));
    EXPECT_EQ(s.on_io([&] { return s.index.in_mailbox("bob@x.org").size(); }), 3u)
        << "a failed snapshot is no deletion: bob's entries stay";
    EXPECT_EQ(removed.load(), 0);
    // Readable again: the resync done again later (after about a second) drops the deleted one.
    st->fail_bob = false;
    ASSERT_TRUE(s.until([&] { return s.index.in_mailbox("bob@x.org").size() == 2u; }))
        << "no later resync after the failed snapshot";
    EXPECT_EQ(removed.load(), 1);
}

}  // namespace

namespace {

void hand_made_dir(const std::filesystem::path& box) {
    for (const char* sub : {"tmp", "new", "cur"}) std::filesystem::create_directories(box / sub);
}

// An empty directory of this test process's own, made again.
std::filesystem::path fresh_dir(const std::string& what) {
    const auto dir = std::filesystem::temp_directory_path() / ("mailnetd-index-" + what + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
}

// A Maildir store on `dir` (null, and the test failed, when it cannot be opened).
std::shared_ptr<mailnet::store> maildir_at(const std::filesystem::path& dir) {
    mailnet::maildir_options opts;
    opts.root = dir;
    auto opened = mailnet::open_maildir_store(opts);
    EXPECT_TRUE(opened) << opened.error().message();
    return opened ? std::shared_ptr<mailnet::store>(std::move(*opened)) : nullptr;
}

// Mail written into a Maildir store by another program (a file copied in by hand, another
// pop3d's deletion) is in the index within a few seconds, as the store's own deliveries are
// at once; those are never taken twice.
TEST(index_sync, a_maildir_changed_on_disk_by_another_program_is_followed) {
    const auto dir = fresh_dir("disk");
    std::shared_ptr<mailnet::store> st = maildir_at(dir);
    ASSERT_TRUE(st);
    const std::vector<std::string> bob{"bob@x.org"};
    ASSERT_TRUE(st->deliver(bob, "Subject: own 0\n\nx\n"));
    synced s(st);
    s.start();
    ASSERT_TRUE(s.until([&] { return s.index.complete() && s.index.size() == 1u; }));
    const auto subjects = [&](const std::string& box) {  // of the mailbox named exactly so
        std::set<std::string> out;
        for (const auto* m : s.index.in_mailbox(box))
            if (m->mailbox == box) out.insert(m->subject);
        return out;
    };
    // Copied in by hand: into bob's new/, and a mailbox of its own made with it.
    put_file(dir / "bob@x.org" / "new" / "1700000000.M1P1.elsewhere", "Subject: copied\n\nx\n");
    for (const char* sub : {"tmp", "new", "cur"}) std::filesystem::create_directories(dir / "amy@x.org" / sub);
    put_file(dir / "amy@x.org" / "cur" / "1700000001.M2P1.elsewhere:2,S", "Subject: amy's\n\ny\n");
    ASSERT_TRUE(s.until([&] { return subjects("bob@x.org").contains("copied") && subjects("amy@x.org").size() == 1u; }))
        << s.on_io([&] { return s.index.size(); }) << " in the index";
    // The store's own deliveries meanwhile: each told once, by its event.
    for (int i = 1; i <= 20; ++i) ASSERT_TRUE(st->deliver(bob, "Subject: own " + std::to_string(i) + "\n\nx\n"));
    ASSERT_TRUE(s.until([&] { return subjects("bob@x.org").size() == 22u; }));
    // A mailbox named in other letters is another mailbox: a delivery to bob@ drops none of Bob@'s.
    hand_made_dir(dir / "Bob@x.org");
    put_file(dir / "Bob@x.org" / "new" / "1700000002.M3P1.elsewhere", "Subject: Bob's\n\nx\n");
    ASSERT_TRUE(s.until([&] { return subjects("Bob@x.org").size() == 1u; }));
    ASSERT_TRUE(st->deliver(bob, "Subject: own 21\n\nx\n"));
    std::this_thread::sleep_for(2500ms);
    EXPECT_EQ(s.on_io([&] { return subjects("Bob@x.org").size(); }), 1u) << "compared as bob@x.org's";
    EXPECT_EQ(s.on_io([&] { return subjects("bob@x.org").size(); }), 23u);
    std::filesystem::remove_all(dir / "Bob@x.org");
    // Removed by hand: gone from the index.
    std::filesystem::remove(dir / "bob@x.org" / "new" / "1700000000.M1P1.elsewhere");
    std::filesystem::remove_all(dir / "amy@x.org");
    ASSERT_TRUE(s.until([&] {
        return !subjects("bob@x.org").contains("copied") && subjects("amy@x.org").empty() && subjects("Bob@x.org").empty();
    }));
    std::this_thread::sleep_for(2500ms);  // two more comparisons, had anything been left to compare
    s.on_io([&] {
        EXPECT_EQ(s.index.size(), 22u);
        for (const auto& [id, n] : s.added) EXPECT_EQ(n, 1) << id;
        return 0;
    });
    std::filesystem::remove_all(dir);
}

}  // namespace

namespace {

// A POP3 session of this process that locked a mailbox before it existed sees it empty (no
// flock was taken); the index follows the mailbox as it is, and keeps what is delivered to it.
TEST(index_sync, mail_to_a_mailbox_a_session_locked_before_it_existed_stays_listed) {
    const auto dir = fresh_dir("locked");
    std::shared_ptr<mailnet::store> st = maildir_at(dir);
    ASSERT_TRUE(st);
    synced s(st);
    s.start();
    ASSERT_TRUE(s.until([&] { return s.index.complete(); }));
    ASSERT_TRUE(st->lock("bob@x.org"));  // a session, before bob has a mailbox
    ASSERT_TRUE(st->deliver(std::vector<std::string>{"bob@x.org"}, "Subject: while locked\n\nx\n"));
    ASSERT_TRUE(s.until([&] { return s.index.size() == 1u; }));
    std::this_thread::sleep_for(2500ms);  // the comparisons its new mailbox's files set off
    EXPECT_EQ(s.on_io([&] { return s.index.size(); }), 1u) << "dropped: compared with the session's empty view";
    st->unlock("bob@x.org");
    std::filesystem::remove_all(dir);
}

}  // namespace
