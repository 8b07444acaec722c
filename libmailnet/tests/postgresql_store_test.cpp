// postgresql_store_test.cpp: what the PostgreSQL store adds to the conformance suite
// (store_conformance_test.cpp): several front-ends over one database (DESIGN.md "On disk").
// Every test runs against the private server ctest starts (tests/tools/pg_private.sh), each
// in a schema of its own; without it they are skipped, never passed.
#include "mailnet/store/postgresql.hpp"

#include "support/store_backends.hpp"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using mailnet::errc;
using mailnet::store_event;

// A TCP relay to the private server that can stop relaying (a stopped server or a stuck
// proxy: the connections stay up, nothing comes back), or lose the answer of a COMMIT: it
// passes the COMMIT on, cuts that connection before the answer comes back and takes no new
// one until told (a network blip between a front-end and the database).
class freezing_relay {
public:
    explicit freezing_relay(std::uint16_t upstream) : upstream_(upstream) {
        listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listener_, 16) != 0) return;
        socklen_t len = sizeof a;
        if (::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) != 0) return;
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] { run(); });
    }
    ~freezing_relay() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
        for (const auto& [a, b] : pairs_) {
            ::close(a);
            ::close(b);
        }
        ::close(listener_);
    }
    std::uint16_t port() const { return port_; }
    void freeze(bool f) { frozen_ = f; }
    /// While set, a connection is relayed only until the server says it is ready for queries
    /// after the login (a stuck pooler: the login goes through, no query ever gets an answer);
    /// clearing it relays every connection again.
    void freeze_after_login(bool f) { freeze_after_login_ = f; }
    /// Every connection there is now stops being relayed for good (a proxy or pooler stuck on
    /// them: TCP stays up, nothing comes through); new ones are relayed as before.
    void stall_existing() { stall_ = true; }
    /// The next COMMIT is passed on, then its connection cut; no new one until refuse(false).
    void lose_next_commit_answer() { cut_commit_ = true; }
    bool commit_answer_lost() const { return commit_cut_; }
    void refuse(bool r) {
        refusing_ = r;
        if (!r) commit_cut_ = false;
    }

private:
    void run() {
        while (!stop_) {
            std::vector<pollfd> fds{{listener_, POLLIN, 0}};
            if (!freeze_after_login_) held_.clear();
            if (stall_.exchange(false))
                for (const auto& [a, b] : pairs_) stalled_.insert(a);
            if (!frozen_)
                for (std::size_t k = 0; k < pairs_.size(); ++k) {
                    const auto& [a, b] = pairs_[k];
                    const bool stalled = stalled_.contains(a);
                    fds.push_back({a, static_cast<short>(held_.contains(a) || stalled ? 0 : POLLIN), 0});  // a held client: not read
                    fds.push_back({b, static_cast<short>(stalled ? 0 : POLLIN), 0});
                }
            if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
            if (fds[0].revents & POLLIN) {
                const int in = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
                if (refusing_) {
                    if (in >= 0) ::close(in);
                    continue;
                }
                const int out = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                sockaddr_in a{};
                a.sin_family = AF_INET;
                a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                a.sin_port = htons(upstream_);
                if (in >= 0 && ::connect(out, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
                    pairs_.emplace_back(in, out);
                } else {
                    if (in >= 0) ::close(in);
                    ::close(out);
                }
            }
            std::vector<std::size_t> gone;  // pairs one side of which ended: closed, no more polled
            for (std::size_t i = 1; i < fds.size(); ++i) {
                if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
                const auto& pr = pairs_[(i - 1) / 2];
                const int from = fds[i].fd, to = from == pr.first ? pr.second : pr.first;
                char buf[65536];
                const ssize_t n = ::read(from, buf, sizeof buf);
                if (n <= 0) {
                    if (gone.empty() || gone.back() != (i - 1) / 2) gone.push_back((i - 1) / 2);
                    continue;
                }
                // Decided before the answer is passed on: once the client has it, what it sends
                // next is held (an answer passed on first could let the client send before).
                static constexpr char ready[] = {'Z', 0, 0, 0, 5};  // ReadyForQuery
                if (from == pr.second && freeze_after_login_ && std::search(buf, buf + n, ready, ready + sizeof ready) != buf + n)
                    held_.insert(pr.first);
                for (ssize_t done = 0; done < n;) {
                    const ssize_t w = ::write(to, buf + done, static_cast<std::size_t>(n - done));
                    if (w <= 0) break;
                    done += w;
                }
                static constexpr char commit[] = "COMMIT";  // a Parse message's text, NUL-ended
                if (from == pr.first && cut_commit_ &&
                    std::search(buf, buf + n, commit, commit + sizeof commit) != buf + n) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the server commits
                    cut_commit_ = false;
                    refusing_ = true;
                    commit_cut_ = true;
                    if (gone.empty() || gone.back() != (i - 1) / 2) gone.push_back((i - 1) / 2);
                }
            }
            for (auto it = gone.rbegin(); it != gone.rend(); ++it) {
                held_.erase(pairs_[*it].first);
                stalled_.erase(pairs_[*it].first);
                ::close(pairs_[*it].first);
                ::close(pairs_[*it].second);
                pairs_.erase(pairs_.begin() + static_cast<std::ptrdiff_t>(*it));
            }
        }
    }
    std::uint16_t upstream_;
    int listener_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> frozen_{false};
    std::atomic<bool> cut_commit_{false};
    std::atomic<bool> refusing_{false};
    std::atomic<bool> commit_cut_{false};
    std::atomic<bool> stop_{false};
    std::atomic<bool> freeze_after_login_{false};
    std::atomic<bool> stall_{false};
    std::vector<std::pair<int, int>> pairs_;  // the relay thread's
    std::set<int> held_;                      // the relay thread's: client sides no more read
    std::set<int> stalled_;                   // the relay thread's: client sides of pairs relayed no more
    std::thread thread_;
};

// Tries `f` every 100 ms until it returns true or `limit` passes; how long it took to succeed,
// or nothing.
template <class F>
std::optional<std::chrono::steady_clock::duration> succeeds_within(std::chrono::seconds limit, F&& f) {
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < limit) {
        if (f()) return std::chrono::steady_clock::now() - start;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return std::nullopt;
}

// What a subscriber heard, to be waited for under `m` with `cv`.
struct event_record {
    std::mutex m;
    std::condition_variable cv;
    std::vector<store_event> events;
    std::function<void(const store_event&)> listener() {
        return [this](const store_event& e) {
            std::lock_guard lock(m);
            events.push_back(e);
            cv.notify_all();
        };
    }
    std::size_t count(store_event::kind k) const {
        return static_cast<std::size_t>(std::count_if(events.begin(), events.end(), [&](const store_event& e) { return e.what == k; }));
    }
};

class postgresql_store : public ::testing::Test {
protected:
    void SetUp() override {
        auto pg = mailnet::testing::private_postgresql();
        if (!pg.uri) GTEST_SKIP() << pg.why_not;
        guard.uri = *pg.uri;
        guard.schema = mailnet::testing::fresh_schema();
    }
    std::unique_ptr<mailnet::store> open(mailnet::log_sink log = mailnet::null_log()) {
        mailnet::postgresql_options o;
        o.uri = guard.uri;
        o.schema = guard.schema;
        o.pool_size = 4;
        o.log = std::move(log);
        auto s = mailnet::open_postgresql_store(std::move(o));
        EXPECT_TRUE(s) << s.error().message();
        return s ? std::move(*s) : nullptr;
    }
    // One SQL statement on an administrator's connection; the first value of its first row.
    std::string admin(const std::string& sql) {
        PGconn* c = PQconnectdb(guard.uri.c_str());
        std::string out;
        if (PQstatus(c) == CONNECTION_OK) {
            PGresult* r = PQexec(c, sql.c_str());
            EXPECT_TRUE(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK) << PQresultErrorMessage(r);
            if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) out = PQgetvalue(r, 0, 0);
            PQclear(r);
        }
        PQfinish(c);
        return out;
    }
    // The octets of message `id`, read as RETR reads them.
    static std::string read_all(mailnet::store& s, const std::string& box, const std::string& id) {
        auto m = s.open(box, id);
        EXPECT_TRUE(m) << m.error().message();
        if (!m) return {};
        std::string out, buf(8192, '\0');
        while (true) {
            auto n = m->read(buf);
            EXPECT_TRUE(n);
            if (!n || *n == 0) break;
            out.append(buf.data(), *n);
        }
        return out;
    }
    // The private server's TCP port (the URI's), and this test's store reached through `relay`.
    std::uint16_t server_port() const {
        const auto colon = guard.uri.rfind(':');
        const auto slash = guard.uri.find('/', colon);
        return static_cast<std::uint16_t>(std::stoi(guard.uri.substr(colon + 1, slash - colon - 1)));
    }
    // A store of this test's schema whose connections all go through `relay`; a call_timeout
    // of zero keeps the store's default.
    std::unique_ptr<mailnet::store> open_through(const freezing_relay& relay, mailnet::log_sink log = mailnet::null_log(),
                                                 std::chrono::milliseconds call_timeout = {}, std::size_t pool_size = 4) {
        const auto colon = guard.uri.rfind(':');
        const auto slash = guard.uri.find('/', colon);
        mailnet::postgresql_options o;
        o.uri = guard.uri.substr(0, colon + 1) + std::to_string(relay.port()) + guard.uri.substr(slash);
        o.schema = guard.schema;
        o.pool_size = pool_size;
        o.wait = std::chrono::milliseconds(2000);
        if (call_timeout.count() > 0) o.call_timeout = call_timeout;
        o.log = std::move(log);
        auto s = mailnet::open_postgresql_store(std::move(o));
        EXPECT_TRUE(s) << s.error().message();
        return s ? std::move(*s) : nullptr;
    }
    // Ends the lock connection of this test's stores, and waits until its server process is
    // gone (and its locks with it).
    void cut_lock_connections() {
        const std::string which = "FROM pg_stat_activity WHERE application_name = 'mailnet locks " + guard.schema + "'";
        admin("SELECT pg_terminate_backend(pid) " + which);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (admin("SELECT count(*) " + which) != "0" && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    // Cuts every connection of this test's stores (their application_name ends in the schema).
    void cut_all() {
        admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'mailnet % " + guard.schema + "'");
    }
    mailnet::testing::pg_schema_guard guard;
};

TEST_F(postgresql_store, a_server_that_stops_answering_fails_calls_temporarily_and_the_store_recovers) {
    // The server is reached through a relay that stops relaying: nothing comes back, the TCP
    // connections stay up. A call fails after call_timeout (its connection cut), never hangs.
    freezing_relay relay(server_port());
    ASSERT_NE(relay.port(), 0);
    std::mutex m;
    std::string logged;
    auto opened = open_through(
        relay,
        [&](mailnet::log_level, std::string_view text) {
            std::lock_guard lock(m);
            logged += std::string(text) + "\n";
        },
        std::chrono::milliseconds(1500), 2);
    ASSERT_TRUE(opened);
    auto& st = *opened;
    const std::vector<std::string> boxes{"bob@example.org"};
    ASSERT_TRUE(st.deliver(boxes, "Subject: before\n\nx\n"));
    relay.freeze(true);
    const auto t0 = std::chrono::steady_clock::now();
    auto frozen = st.deliver(boxes, "Subject: frozen\n\nx\n");
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_FALSE(frozen);
    EXPECT_EQ(frozen ? std::error_code{} : frozen.error(), make_error_code(errc::temporary_failure));
    EXPECT_LT(took, std::chrono::seconds(20));
    // The watchdog logs on its own thread, after the cut the call saw: waited for.
    bool told = false;
    for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
         !told && std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(std::chrono::milliseconds(20))) {
        std::lock_guard lock(m);
        told = logged.find("no answer from the server within 1.5 s") != std::string::npos;
    }
    EXPECT_TRUE(told) << logged;
    relay.freeze(false);
    // Deliveries are held off for a second after a cut (not tried on a server that just
    // stopped answering); within a few seconds one is stored.
    EXPECT_TRUE(succeeds_within(std::chrono::seconds(5), [&] { return st.deliver(boxes, "Subject: after\n\nx\n").has_value(); }));
    auto snap = st.snapshot("bob@example.org");
    ASSERT_TRUE(snap);
    EXPECT_GE(snap->size(), 2u);  // before and after (the frozen one got 451: stored or not)
}

TEST_F(postgresql_store, a_delivery_whose_commit_answer_was_lost_is_found_stored_though_its_messages_were_deleted_since) {
    // The COMMIT reaches the server but its answer is lost, and this front-end cannot reach the
    // database for a while; meanwhile the user's POP3 session on another front-end fetches and
    // deletes the messages. Once back, the fate lookup must find the transaction committed: a
    // 451 would have the sender send it again, and the user get it twice.
    freezing_relay relay(server_port());
    ASSERT_NE(relay.port(), 0);
    mailnet::testing::log_capture log;
    auto via = open_through(relay, log.sink());
    auto pop = open();
    ASSERT_TRUE(via && pop);
    const std::string box = "fate@example.org";
    ASSERT_TRUE(via->deliver(std::vector<std::string>{box}, "Subject: warm-up\n\nx\n"));
    // Each round: a group of deliveries (one transaction), of which the user deletes before the
    // lookup the first only (whose token the lookup once used), then every one.
    std::size_t stored = 1;
    for (const auto& [group, keep] : {std::pair<std::size_t, std::size_t>{3, 2}, {1, 0}}) {
        SCOPED_TRACE(group);
        std::vector<std::unique_ptr<mailnet::delivery>> ds;
        std::vector<mailnet::delivery*> ptrs;
        for (std::size_t i = 0; i < group; ++i) {
            auto d = via->begin_delivery(std::vector<std::string>{box});
            ASSERT_TRUE(d);
            ASSERT_TRUE((*d)->write("Subject: important " + std::to_string(i) + "\n\nhello\n"));
            ptrs.push_back(d->get());
            ds.push_back(std::move(*d));
        }
        relay.lose_next_commit_answer();
        std::vector<mailnet::result<void>> results;
        std::thread sender([&] { results = mailnet::commit_together(ptrs); });
        auto until = [](auto&& done) {
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
            while (!done() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
            return done();
        };
        EXPECT_TRUE(until([&] { return relay.commit_answer_lost(); }));
        // Committed: the user's session sees the group, fetches it and deletes all but `keep`.
        std::vector<mailnet::message_info> snap;
        EXPECT_TRUE(until([&] {
            auto s = pop->snapshot(box);
            if (s && s->size() == stored + group) snap = *s;
            return !snap.empty();
        }));
        if (!snap.empty()) {
            EXPECT_TRUE(pop->lock(box));
            EXPECT_EQ(read_all(*pop, box, snap[stored].id), "Subject: important 0\n\nhello\n");
            std::vector<std::string> gone;
            for (std::size_t i = 0; i + keep < snap.size(); ++i) gone.push_back(snap[i].id);
            for (const auto& e : pop->commit(box, gone, {})) EXPECT_FALSE(e);
            pop->unlock(box);
        }
        stored = keep;
        relay.refuse(false);  // the front-end reaches the database again and asks
        sender.join();
        ASSERT_EQ(results.size(), group);
        for (const auto& r : results) EXPECT_TRUE(r) << r.error().message() << "\n" << log.all();
    }
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".messages"), "0");
}

TEST_F(postgresql_store, the_records_of_delivery_transactions_are_kept_a_day) {
    auto s = open();
    ASSERT_TRUE(s);
    const std::string t = guard.schema + ".deliveries";
    admin("INSERT INTO " + t + " (token, at) SELECT 'old' || n, now() - interval '25 hours' FROM generate_series(1, 1500) n");
    admin("INSERT INTO " + t + " (token, at) VALUES ('recent', now() - interval '23 hours')");
    // A front-end's first transaction prunes, and the next ones while some were left behind.
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(s->deliver(std::vector<std::string>{"p@example.org"}, "Subject: p\n\nx\n"));
    EXPECT_EQ(admin("SELECT count(*) FROM " + t + " WHERE token LIKE 'old%'"), "0");
    EXPECT_EQ(admin("SELECT count(*) FROM " + t + " WHERE token = 'recent'"), "1");
    EXPECT_EQ(admin("SELECT count(*) FROM " + t), "4");  // one per transaction
    // Not again within the minute: rows that became old meanwhile wait for the next prune.
    admin("UPDATE " + t + " SET at = now() - interval '2 days' WHERE token = 'recent'");
    ASSERT_TRUE(s->deliver(std::vector<std::string>{"p@example.org"}, "Subject: p\n\nx\n"));
    EXPECT_EQ(admin("SELECT count(*) FROM " + t + " WHERE token = 'recent'"), "1");
}

TEST_F(postgresql_store, every_front_end_hears_every_front_ends_deliveries_and_deletions_in_order) {
    auto a = open();
    auto b = open();
    ASSERT_TRUE(a && b);
    std::mutex m;
    std::vector<store_event> heard;
    auto sub = a->subscribe([&](const store_event& e) {
        std::lock_guard lock(m);
        heard.push_back(e);
    });
    const std::vector<std::string> boxes{"bob@example.org", "carol@example.org"};
    ASSERT_TRUE(b->deliver(boxes, "Subject: through b\n\nx\n"));  // through the other front-end
    auto snap = b->snapshot("bob@example.org");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 1u);
    const std::vector<std::string> gone{(*snap)[0].id};
    ASSERT_TRUE(b->lock("bob@example.org"));
    EXPECT_FALSE(b->commit("bob@example.org", gone, {})[0]);
    b->unlock("bob@example.org");
    // b waits for nobody (no subscriber of its own): a hears it moments later.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        {
            std::lock_guard lock(m);
            if (heard.size() >= 3) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::lock_guard lock(m);
    ASSERT_EQ(heard.size(), 3u);
    EXPECT_EQ(heard[0].what, store_event::kind::delivered);
    EXPECT_EQ(heard[0].mailbox, "bob@example.org");
    EXPECT_EQ(heard[0].id, (*snap)[0].id);
    EXPECT_EQ(heard[0].octets, (*snap)[0].octets);
    EXPECT_EQ(heard[1].what, store_event::kind::delivered);
    EXPECT_EQ(heard[1].mailbox, "carol@example.org");
    EXPECT_EQ(heard[2].what, store_event::kind::deleted);
    EXPECT_EQ(heard[2].id, (*snap)[0].id);
    EXPECT_EQ(heard[2].seq, heard[1].seq + 1);
}

TEST_F(postgresql_store, logins_queued_behind_a_lock_call_that_got_no_answer_fail_at_once_not_one_deadline_each) {
    // A pooler or proxy that takes logins but answers no query: a statement on the lock
    // connection is cut after call_timeout (2 s here); the POP3 logins queued behind it (one
    // lock connection per front-end) get [SYS/TEMP] at once, not after reconnecting (the login
    // goes through) and waiting out a deadline each, one after the other; and the next login
    // a moment later asks again (no hold-off for the call's whole time).
    // Two ways in: the lock connection made before (its lock statement cut), and one made
    // while the pooler is stuck (its first statements cut).
    for (const bool made_before : {true, false}) {
        SCOPED_TRACE(made_before ? "lock connection made before" : "lock connection made while stuck");
        freezing_relay relay(server_port());
        ASSERT_NE(relay.port(), 0);
        auto opened = open_through(relay, mailnet::null_log(), std::chrono::milliseconds(2000), 2);
        ASSERT_TRUE(opened);
        auto& st = *opened;
        if (made_before) {
            ASSERT_TRUE(st.lock("warm@example.org"));  // the lock connection made, through the relay
            st.unlock("warm@example.org");
        }
        relay.freeze_after_login(true);
        if (made_before) {
            ASSERT_TRUE(st.lock("last@example.org"));  // answered; from now on nothing is
        }
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<std::thread> logins;
        std::vector<mailnet::result<void>> got(4, mailnet::result<void>{});
        std::vector<std::chrono::steady_clock::duration> took(4);
        for (std::size_t i = 0; i < got.size(); ++i)
            logins.emplace_back([&, i] {
                got[i] = st.lock("user" + std::to_string(i) + "@example.org");
                took[i] = std::chrono::steady_clock::now() - t0;
            });
        for (auto& t : logins) t.join();
        for (std::size_t i = 0; i < got.size(); ++i) {
            EXPECT_FALSE(got[i]) << i;
            if (!got[i]) {
                EXPECT_EQ(got[i].error(), make_error_code(errc::temporary_failure)) << i;
            }
            // One deadline (2 s) for all: not a second one on a new connection, nor one each
            // (4 s and more); 1.5 s of slack for a loaded machine.
            EXPECT_LT(took[i], std::chrono::milliseconds(3500)) << i << ": "
                << std::chrono::duration_cast<std::chrono::milliseconds>(took[i]).count() << " ms";
        }
        relay.freeze_after_login(false);
        // Once the server answers again, a login within a few seconds gets its lock.
        const auto locked = succeeds_within(std::chrono::seconds(15), [&] { return st.lock("again@example.org").has_value(); });
        ASSERT_TRUE(locked);
        EXPECT_LT(*locked, std::chrono::seconds(5)) << "held off for about the pause, not the call's time";
    }
}

TEST_F(postgresql_store, deliveries_queued_behind_a_delivery_that_got_no_answer_fail_at_once_not_one_deadline_each) {
    // A pooler that takes logins but answers no query: the batch under way is cut after
    // call_timeout (2 s here); the deliveries queued behind it get 451 at once, not after each
    // batch connects anew (the login goes through) and waits out a deadline of its own; once
    // the server answers again, a delivery a moment later is stored.
    freezing_relay relay(server_port());
    ASSERT_NE(relay.port(), 0);
    auto st = open_through(relay, mailnet::null_log(), std::chrono::milliseconds(2000), 4);
    ASSERT_TRUE(st);
    const std::vector<std::string> boxes{"queued@example.org"};
    ASSERT_TRUE(st->deliver(boxes, "Subject: warm-up\n\nx\n"));  // the mailbox's id known: one statement a batch
    relay.freeze_after_login(true);
    ASSERT_TRUE(st->snapshot(boxes[0]));  // answered on the pooled connection; from now on nothing is
    const auto t0 = std::chrono::steady_clock::now();
    // The first delivery alone, so that the others queue behind its batch (one under way at a time).
    std::vector<mailnet::result<void>> got(5, mailnet::result<void>{});
    std::vector<std::chrono::steady_clock::duration> took(got.size());
    std::vector<std::thread> senders;
    auto send = [&](std::size_t i) {
        senders.emplace_back([&, i] {
            got[i] = st->deliver(boxes, "Subject: queued " + std::to_string(i) + "\n\nx\n");
            took[i] = std::chrono::steady_clock::now() - t0;
        });
    };
    send(0);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    for (std::size_t i = 1; i < got.size(); ++i) {
        send(i);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // more than one batch, were each to wait
    }
    for (auto& t : senders) t.join();
    for (std::size_t i = 0; i < got.size(); ++i) {
        EXPECT_FALSE(got[i]) << i;
        if (!got[i]) {
            EXPECT_EQ(got[i].error(), make_error_code(errc::temporary_failure)) << i;
        }
        // One deadline (2 s) for all of them, not one for each batch (4 s and more); 1.5 s of
        // slack for a loaded machine.
        EXPECT_LT(took[i], std::chrono::milliseconds(3500))
            << i << ": " << std::chrono::duration_cast<std::chrono::milliseconds>(took[i]).count() << " ms";
    }
    relay.freeze_after_login(false);
    const auto stored = succeeds_within(std::chrono::seconds(15), [&] { return st->deliver(boxes, "Subject: after\n\nx\n").has_value(); });
    ASSERT_TRUE(stored);
    EXPECT_LT(*stored, std::chrono::seconds(5)) << "held off for about the pause";
}

TEST_F(postgresql_store, an_event_connection_that_silently_stops_relaying_is_replaced_and_the_subscribers_told_to_look_again) {
    // A proxy stuck on the LISTENing connection: TCP stays up (keepalives never end it), no
    // notification comes through. After call_timeout (2 s here) without a word the event
    // thread asks whether it still answers, cuts it when it does not, listens on a new one and
    // tells the subscribers to look at the store again: a delivery through another front-end
    // meanwhile is not missed for ever.
    freezing_relay relay(server_port());
    ASSERT_NE(relay.port(), 0);
    auto a = open_through(relay, mailnet::null_log(), std::chrono::milliseconds(2000), 2);
    auto b = open();
    ASSERT_TRUE(a && b);
    event_record heard;
    auto sub = a->subscribe(heard.listener());
    ASSERT_TRUE(b->deliver(std::vector<std::string>{"stall@example.org"}, "Subject: before\n\nx\n"));
    {
        std::unique_lock lock(heard.m);
        ASSERT_TRUE(heard.cv.wait_for(lock, std::chrono::seconds(10), [&] { return heard.count(store_event::kind::delivered) == 1; }));
    }
    std::size_t before = 0;  // what was heard before the stall (a slow first LISTEN may have added a resync)
    {
        std::lock_guard lock(heard.m);
        before = heard.count(store_event::kind::resync) + heard.count(store_event::kind::delivered);
    }
    relay.stall_existing();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ASSERT_TRUE(b->deliver(std::vector<std::string>{"stall@example.org"}, "Subject: during\n\nx\n"));
    std::unique_lock lock(heard.m);
    const bool told = heard.cv.wait_for(lock, std::chrono::seconds(15), [&] {
        return heard.count(store_event::kind::resync) + heard.count(store_event::kind::delivered) > before;
    });
    EXPECT_TRUE(told) << "the subscriber heard " << heard.events.size() << " events";
}

TEST_F(postgresql_store, two_commits_of_one_locked_mailbox_at_once_both_delete) {
    // A POP3 QUIT and an HTTP DELETE of one mailnetd on the same mailbox at once: both check
    // the session's lock under the mailbox's fence. The one that finds the fence taken waits
    // for it (milliseconds), rather than taking it for a lost lock (-ERR [SYS/TEMP], nothing
    // deleted, a lock connection probed for nothing).
    auto st = open();
    ASSERT_TRUE(st);
    const std::string box = "both@example.org";
    constexpr int rounds = 30;
    for (int i = 0; i < 2 * rounds; ++i)
        ASSERT_TRUE(st->deliver(std::vector<std::string>{box}, "Subject: " + std::to_string(i) + "\n\nx\n"));
    auto snap = st->snapshot(box);
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), static_cast<std::size_t>(2 * rounds));
    ASSERT_TRUE(st->lock(box));
    std::atomic<int> failed{0};
    for (int i = 0; i < rounds; ++i) {
        std::atomic<int> ready{0};
        auto one = [&](const std::string& id) {
            ++ready;
            while (ready < 2) std::this_thread::yield();  // both at once
            const std::vector<std::string> gone{id};
            for (const auto& e : st->commit(box, gone, {}))
                if (e) ++failed;
        };
        std::thread a(one, (*snap)[2 * i].id), b(one, (*snap)[2 * i + 1].id);
        a.join();
        b.join();
    }
    st->unlock(box);
    EXPECT_EQ(failed, 0);
    auto left = st->snapshot(box);
    ASSERT_TRUE(left);
    EXPECT_TRUE(left->empty()) << left->size() << " left";
}

TEST_F(postgresql_store, an_event_connection_whose_server_stops_answering_does_not_hold_up_the_shutdown) {
    // The subscription's wait for the readers of the listeners table times out (a long
    // reader), so the event thread tries it again a second later; by then the server answers
    // nothing. That retry, as every call, is cut after call_timeout: the store's shutdown,
    // which joins the event thread, ends (it waited for ever).
    freezing_relay relay(server_port());
    ASSERT_NE(relay.port(), 0);
    std::unique_ptr<mailnet::store> st = open_through(relay, mailnet::null_log(), std::chrono::milliseconds(1000), 2);
    ASSERT_TRUE(st);
    PGconn* reader = PQconnectdb(guard.uri.c_str());  // straight to the server, not through the relay
    ASSERT_EQ(PQstatus(reader), CONNECTION_OK);
    const std::string hold = "BEGIN; SELECT count(*) FROM " + guard.schema + ".listeners";
    PQclear(PQexec(reader, hold.c_str()));
    auto sub = st->subscribe([](const store_event&) {});  // returns once listening: the first wait gave up (0.5 s)
    relay.freeze(true);
    PQclear(PQexec(reader, "COMMIT"));
    PQfinish(reader);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the retry waits on the relay now
    auto stopped = std::async(std::launch::async, [&] {
        sub = {};
        st.reset();
    });
    EXPECT_EQ(stopped.wait_for(std::chrono::seconds(6)), std::future_status::ready) << "the shutdown waits on the event thread";
    relay.freeze(false);  // without the deadline, the retry gets its answer now and the store ends
    stopped.wait();
}

TEST_F(postgresql_store, a_front_end_that_goes_away_releases_its_pop3_locks) {
    auto a = open();
    auto b = open();
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->deliver(std::vector<std::string>{"bob@example.org"}, "Subject: x\n\nx\n"));
    ASSERT_TRUE(a->lock("bob@example.org"));
    EXPECT_EQ(b->lock("bob@example.org").error(), mailnet::make_error_code(errc::mailbox_in_use));
    a.reset();  // its lock connection closes, as when the process dies
    // The server releases the lock when that backend has ended: moments later, not at once.
    bool taken = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!(taken = b->lock("bob@example.org").has_value()) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_TRUE(taken);
    b->unlock("bob@example.org");
}

TEST_F(postgresql_store, a_session_locked_on_a_lost_lock_connection_cannot_delete_even_if_nobody_took_the_mailbox) {
    // The server released the lock with the connection: another front-end could have had the
    // mailbox meanwhile and gone again, so the session's QUIT deletes nothing ([SYS/TEMP]).
    mailnet::testing::log_capture log;
    auto a = open(log.sink());
    auto b = open();
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->deliver(std::vector<std::string>{"bob@example.org"}, "Subject: 1\n\nx\n"));
    ASSERT_TRUE(a->lock("bob@example.org"));
    auto snap = a->snapshot("bob@example.org");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 1u);
    const std::vector<std::string> gone{(*snap)[0].id};
    cut_lock_connections();  // a has not noticed yet
    EXPECT_EQ(a->commit("bob@example.org", gone, {})[0], mailnet::make_error_code(errc::temporary_failure));
    EXPECT_TRUE(log.contains("lock")) << log.all();
    // Nor once a has a new lock connection: the session's lock was not on it.
    ASSERT_TRUE(a->lock("carol@example.org"));
    EXPECT_EQ(a->commit("bob@example.org", gone, {})[0], mailnet::make_error_code(errc::temporary_failure));
    EXPECT_EQ(a->snapshot("bob@example.org")->size(), 1u);
    // A session that logs in afterwards locks on the new connection, and deletes.
    a->unlock("bob@example.org");
    ASSERT_TRUE(a->lock("bob@example.org"));
    EXPECT_EQ(b->lock("bob@example.org").error(), mailnet::make_error_code(errc::mailbox_in_use));
    EXPECT_FALSE(a->commit("bob@example.org", gone, {})[0]);
    a->unlock("bob@example.org");
    a->unlock("carol@example.org");
    EXPECT_EQ(b->snapshot("bob@example.org")->size(), 0u);
}

TEST_F(postgresql_store, after_a_lost_lock_connection_new_logins_lock_on_the_new_one_and_the_old_sessions_stay_out) {
    mailnet::testing::log_capture log;
    auto a = open(log.sink());
    auto b = open();
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->deliver(std::vector<std::string>{"bob@example.org", "carol@example.org"}, "Subject: 1\n\nx\n"));
    ASSERT_TRUE(a->lock("bob@example.org"));
    const auto bob = a->snapshot("bob@example.org");
    ASSERT_TRUE(bob && bob->size() == 1u);
    cut_lock_connections();
    // a's next login reconnects; bob's lock is not taken back (a second session could have
    // come and gone in between without anyone noticing): bob is free for another front-end.
    ASSERT_TRUE(a->lock("carol@example.org"));
    EXPECT_EQ(b->lock("carol@example.org").error(), mailnet::make_error_code(errc::mailbox_in_use));
    ASSERT_TRUE(b->lock("bob@example.org"));
    // Within a, bob's session is still open: no second one there.
    EXPECT_EQ(a->lock("bob@example.org").error(), mailnet::make_error_code(errc::mailbox_in_use));
    const std::vector<std::string> gone{(*bob)[0].id};
    EXPECT_EQ(a->commit("bob@example.org", gone, {})[0], mailnet::make_error_code(errc::temporary_failure));
    b->unlock("bob@example.org");
    // Free again, it is still not a's session's: its QUIT still deletes nothing.
    EXPECT_EQ(a->commit("bob@example.org", gone, {})[0], mailnet::make_error_code(errc::temporary_failure));
    EXPECT_EQ(b->snapshot("bob@example.org")->size(), 1u);
    // carol's session locked on the new connection: its QUIT deletes.
    const auto carol = a->snapshot("carol@example.org");
    ASSERT_TRUE(carol && carol->size() == 1u);
    EXPECT_FALSE(a->commit("carol@example.org", std::vector<std::string>{(*carol)[0].id}, {})[0]);
    EXPECT_EQ(b->snapshot("carol@example.org")->size(), 0u);
    a->unlock("bob@example.org");
    a->unlock("carol@example.org");
    EXPECT_TRUE(b->lock("bob@example.org"));
    EXPECT_TRUE(b->lock("carol@example.org"));
    b->unlock("bob@example.org");
    b->unlock("carol@example.org");
}

TEST_F(postgresql_store, two_sessions_on_one_mailbox_never_both_delete_after_the_lock_connection_is_lost) {
    // The hostile review's case: a session on a reads message 1; the database drops a's lock
    // connection; a session on b gets the mailbox, reads and deletes message 1 and quits; then
    // a's session quits. Its deletions must not be carried out: message 1 would have been
    // handed to two clients as theirs (and message 2 deleted under a lock a no longer held).
    auto a = open();
    auto b = open();
    ASSERT_TRUE(a && b);
    const std::string box = "bob@example.org";
    ASSERT_TRUE(a->deliver(std::vector<std::string>{box}, "Subject: 1\n\nx\n"));
    ASSERT_TRUE(a->deliver(std::vector<std::string>{box}, "Subject: 2\n\nx\n"));
    ASSERT_TRUE(a->lock(box));
    const auto snap = a->snapshot(box);
    ASSERT_TRUE(snap && snap->size() == 2u);
    EXPECT_EQ(read_all(*a, box, (*snap)[0].id), "Subject: 1\n\nx\n");
    cut_lock_connections();
    ASSERT_TRUE(b->lock(box));
    EXPECT_EQ(read_all(*b, box, (*snap)[0].id), "Subject: 1\n\nx\n");
    EXPECT_FALSE(b->commit(box, std::vector<std::string>{(*snap)[0].id}, {})[0]);
    b->unlock(box);
    const auto errs = a->commit(box, std::vector<std::string>{(*snap)[0].id, (*snap)[1].id}, {});
    ASSERT_EQ(errs.size(), 2u);
    EXPECT_EQ(errs[0], mailnet::make_error_code(errc::temporary_failure));
    EXPECT_EQ(errs[1], mailnet::make_error_code(errc::temporary_failure));
    a->unlock(box);
    const auto left = b->snapshot(box);
    ASSERT_TRUE(left);
    ASSERT_EQ(left->size(), 1u);
    EXPECT_EQ((*left)[0].id, (*snap)[1].id);
}

TEST_F(postgresql_store, a_quit_under_way_keeps_its_mailbox_in_use_till_its_deletions_are_done) {
    // A QUIT's transaction holds the mailbox's fence from its check of the session's lock to
    // its end: were the lock connection lost in between, a session that took the mailbox on
    // another front-end could read what is being deleted. A login that finds the fence held
    // is in use; a QUIT that finds it held (a login under way) deletes nothing.
    auto a = open();
    auto b = open();
    ASSERT_TRUE(a && b);
    const std::string box = "bob@example.org";
    ASSERT_TRUE(a->deliver(std::vector<std::string>{box}, "Subject: 1\n\nx\n"));
    // The store's keys: the first 64 bits of SHA-256 of "schema NUL mailbox", the fence's
    // schema followed by \x01fence.
    auto key = [&](const std::string& space) {
        return "('x' || left(encode(sha256(convert_to('" + guard.schema + "', 'UTF8') || " + space +
               "'\\x00'::bytea || convert_to('" + box + "', 'UTF8')), 'hex'), 16))::bit(64)::bigint";
    };
    ASSERT_TRUE(a->lock(box));
    EXPECT_EQ(admin("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND "
                    "((classid::bigint << 32) | objid::bigint) = " + key("")),
              "1");
    a->unlock(box);
    PGconn* quit = PQconnectdb(guard.uri.c_str());  // a QUIT's transaction, as another front-end holds it
    ASSERT_EQ(PQstatus(quit), CONNECTION_OK);
    PQclear(PQexec(quit, "BEGIN"));
    PGresult* r = PQexec(quit, ("SELECT pg_advisory_xact_lock(" + key("'\\x01'::bytea || convert_to('fence', 'UTF8') || ") + ")").c_str());
    EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
    PQclear(r);
    EXPECT_EQ(b->lock(box).error(), mailnet::make_error_code(errc::mailbox_in_use));
    EXPECT_EQ(admin("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND "
                    "((classid::bigint << 32) | objid::bigint) = " + key("")),
              "0") << "the refused login let the mailbox's lock go";
    PQclear(PQexec(quit, "COMMIT"));
    ASSERT_TRUE(b->lock(box));
    const auto snap = b->snapshot(box);
    ASSERT_TRUE(snap && snap->size() == 1u);
    // Held by a login under way: this QUIT deletes nothing.
    PQclear(PQexec(quit, "BEGIN"));
    PQclear(PQexec(quit, ("SELECT pg_advisory_lock_shared(" + key("'\\x01'::bytea || convert_to('fence', 'UTF8') || ") + ")").c_str()));
    EXPECT_EQ(b->commit(box, std::vector<std::string>{(*snap)[0].id}, {})[0], mailnet::make_error_code(errc::temporary_failure));
    PQclear(PQexec(quit, "ROLLBACK"));
    PQclear(PQexec(quit, ("SELECT pg_advisory_unlock_shared(" + key("'\\x01'::bytea || convert_to('fence', 'UTF8') || ") + ")").c_str()));
    EXPECT_FALSE(b->commit(box, std::vector<std::string>{(*snap)[0].id}, {})[0]);
    b->unlock(box);
    PQfinish(quit);
    EXPECT_EQ(a->snapshot(box)->size(), 0u);
}

TEST_F(postgresql_store, a_schema_name_sql_keeps_for_itself_is_a_configuration_error) {
    for (const char* name : {"user", "order", "pg_mail"}) {
        mailnet::postgresql_options o;
        o.uri = guard.uri;
        o.schema = name;
        o.log = mailnet::null_log();
        auto s = mailnet::open_postgresql_store(std::move(o));
        ASSERT_FALSE(s) << name;
        EXPECT_EQ(s.error(), mailnet::make_error_code(errc::bad_config)) << name;
    }
}

TEST_F(postgresql_store, connections_cut_by_the_server_are_remade_and_nothing_is_lost_or_doubled) {
    auto s = open();
    ASSERT_TRUE(s);
    const std::vector<std::string> box{"dave@example.org"};
    ASSERT_TRUE(s->deliver(box, "Subject: 1\n\nx\n"));
    ASSERT_TRUE(s->snapshot(box[0]));
    // Every connection of the store is cut, as a server restart does.
    cut_all();
    auto snap = s->snapshot(box[0]);  // a read is tried again on a new connection
    ASSERT_TRUE(snap) << snap.error().message();
    EXPECT_EQ(snap->size(), 1u);
    cut_all();
    ASSERT_TRUE(s->deliver(box, "Subject: 2\n\nx\n"));  // an idle connection lost before BEGIN
    snap = s->snapshot(box[0]);
    ASSERT_TRUE(snap);
    EXPECT_EQ(snap->size(), 2u);
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".bodies"), "2");
}

TEST_F(postgresql_store, a_body_is_stored_once_and_removed_with_its_last_copy_even_when_front_ends_race) {
    auto a = open();
    auto b = open();
    ASSERT_TRUE(a && b);
    constexpr int messages = 30;
    const std::vector<std::string> boxes{"x@example.org", "y@example.org"};
    for (int i = 0; i < messages; ++i) ASSERT_TRUE(a->deliver(boxes, "Subject: " + std::to_string(i) + "\n\nshared\n"));
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".bodies"), std::to_string(messages));
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".messages"), std::to_string(2 * messages));
    // Both copies of every body deleted at once, one through each front-end.
    auto remove_all = [](mailnet::store& s, const std::string& box) {
        auto snap = s.snapshot(box);
        ASSERT_TRUE(snap);
        std::vector<std::string> ids;
        for (const auto& m : *snap) ids.push_back(m.id);
        ASSERT_TRUE(s.lock(box));
        for (const auto& e : s.commit(box, ids, {})) EXPECT_FALSE(e);
        s.unlock(box);
    };
    std::thread tx([&] { remove_all(*a, "x@example.org"); });
    std::thread ty([&] { remove_all(*b, "y@example.org"); });
    tx.join();
    ty.join();
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".messages"), "0");
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".bodies"), "0");
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".chunks"), "0");
}

TEST_F(postgresql_store, front_ends_starting_together_create_the_schema_once_and_a_newer_one_is_refused) {
    auto start_six = [&] {
        std::vector<std::thread> starters;
        std::atomic<int> opened{0};
        for (int i = 0; i < 6; ++i)
            starters.emplace_back([&] {
                if (open()) ++opened;
            });
        for (auto& t : starters) t.join();
        EXPECT_EQ(opened.load(), 6);
    };
    start_six();
    EXPECT_EQ(admin("SELECT version FROM " + guard.schema + ".version"), std::to_string(mailnet::postgresql_schema_version));
    EXPECT_EQ(mailnet::postgresql_schema_version, 3);
    // A version 2 schema (before the deliveries table) is migrated once by six starting at once.
    admin("DROP TABLE " + guard.schema + ".deliveries");
    admin("UPDATE " + guard.schema + ".version SET version = 2");
    start_six();
    EXPECT_EQ(admin("SELECT version FROM " + guard.schema + ".version"), "3");
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".deliveries"), "0");
    // A version 1 schema (before the listeners table too) is migrated by the next start.
    admin("DROP TABLE " + guard.schema + ".listeners");
    admin("DROP TABLE " + guard.schema + ".deliveries");
    admin("UPDATE " + guard.schema + ".version SET version = 1");
    {
        auto s = open();
        ASSERT_TRUE(s);
        EXPECT_EQ(admin("SELECT version FROM " + guard.schema + ".version"), "3");
        EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".listeners"), "0");
        ASSERT_TRUE(s->deliver(std::vector<std::string>{"m@example.org"}, "Subject: m\n\nx\n"));
        EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".deliveries"), "1");
    }
    admin("UPDATE " + guard.schema + ".version SET version = 99");
    mailnet::postgresql_options o;
    o.uri = guard.uri;
    o.schema = guard.schema;
    o.log = mailnet::null_log();
    EXPECT_EQ(mailnet::open_postgresql_store(o).error(), mailnet::make_error_code(errc::bad_config));
    o.schema = "Bad-Name";
    EXPECT_EQ(mailnet::open_postgresql_store(o).error(), mailnet::make_error_code(errc::bad_config));
}

TEST_F(postgresql_store, a_uri_whose_options_weaken_durability_isolation_or_the_locks_is_refused_at_start) {
    const char sep = guard.uri.find('?') == std::string::npos ? '?' : '&';
    std::vector<std::string> logged;
    auto start_with = [&](const std::string& options) {
        mailnet::postgresql_options o;
        o.uri = guard.uri + sep + "options=" + options;
        o.schema = guard.schema;
        o.log = [&](mailnet::log_level, std::string_view line) { logged.emplace_back(line); };
        return mailnet::open_postgresql_store(std::move(o));
    };
    for (const char* weak : {"-c%20synchronous_commit%3Doff", "-c%20synchronous_commit%3Dlocal",
                             "-c%20default_transaction_isolation%3Dserializable",
                             // the lock connection's POP3 locks would go with an idle cut
                             "-c%20idle_session_timeout%3D600000"}) {
        logged.clear();
        auto s = start_with(weak);
        ASSERT_FALSE(s) << weak;
        EXPECT_EQ(s.error(), mailnet::make_error_code(errc::bad_input)) << weak;
        ASSERT_FALSE(logged.empty()) << weak;
        EXPECT_NE(logged.back().find("synchronous_commit"), std::string::npos) << logged.back();
    }
    // As strong or stronger: accepted.
    auto strong = start_with("-c%20synchronous_commit%3Dremote_apply");
    EXPECT_TRUE(strong) << (strong ? "" : strong.error().message());
}

TEST_F(postgresql_store, concurrent_deliveries_share_transactions) {
    auto s = open();
    ASSERT_TRUE(s);
    constexpr int threads = 16, each = 10;
    std::vector<std::thread> senders;
    for (int t = 0; t < threads; ++t)
        senders.emplace_back([&, t] {
            for (int i = 0; i < each; ++i)
                EXPECT_TRUE(s->deliver(std::vector<std::string>{"g" + std::to_string(t)}, "Subject: g\n\nx\n"));
        });
    for (auto& t : senders) t.join();
    auto total = admin("SELECT count(*) FROM " + guard.schema + ".messages");
    EXPECT_EQ(total, std::to_string(threads * each));
    // Group commit: `received` is now(), the start of the transaction (the same in each of its
    // SAVEPOINTs). Fewer transactions than deliveries shows that waiting deliveries joined one.
    const auto transactions = std::stoi(admin("SELECT count(DISTINCT received) FROM " + guard.schema + ".bodies"));
    EXPECT_LT(transactions, threads * each);
}

TEST_F(postgresql_store, deliveries_committed_together_share_one_transaction_and_each_has_its_own_result) {
    // A server's committer thread (net::delivery_committer) hands the store whole groups.
    auto s = open();
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->commits_in_groups());
    const std::vector<std::string> boxes{"alice", "bob"};
    EXPECT_TRUE(s->knows_mailboxes(boxes));  // begin_delivery() needs no database
    std::vector<std::unique_ptr<mailnet::delivery>> ds;
    std::vector<mailnet::delivery*> ptrs;
    for (int i = 0; i < 12; ++i) {
        auto d = s->begin_delivery(i % 3 == 0 ? boxes : std::vector<std::string>{"bob"});
        ASSERT_TRUE(d);
        ASSERT_TRUE((*d)->write("Subject: " + std::to_string(i) + "\n\nbody\n"));
        ptrs.push_back(d->get());
        ds.push_back(std::move(*d));
    }
    const auto results = mailnet::commit_together(ptrs);
    ASSERT_EQ(results.size(), 12u);
    for (const auto& r : results) EXPECT_TRUE(r) << r.error().message();
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".messages"), "16");  // 4 to both, 8 to bob
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".bodies"), "12");
    EXPECT_EQ(admin("SELECT count(DISTINCT received) FROM " + guard.schema + ".bodies"), "1");
    // A delivery committed already cannot be again: the group is refused whole, nothing doubles.
    const auto again = mailnet::commit_together(ptrs);
    for (const auto& r : again) EXPECT_FALSE(r);
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".bodies"), "12");

    // One delivery of a group that cannot be stored (a UIDL its mailbox has already) fails
    // alone; the others of its group are stored once.
    std::vector<std::unique_ptr<mailnet::delivery>> more;
    std::vector<mailnet::delivery*> mp;
    for (int i = 0; i < 5; ++i) {
        auto d = s->begin_delivery(std::vector<std::string>{"carol"});
        ASSERT_TRUE(d);
        ASSERT_TRUE((*d)->write("Subject: c" + std::to_string(i) + "\n\nx\n"));
        if (i == 1 || i == 3) {
            EXPECT_TRUE((*d)->keep("same-uidl", false));
        }
        mp.push_back(d->get());
        more.push_back(std::move(*d));
    }
    const auto mixed = mailnet::commit_together(mp);
    ASSERT_EQ(mixed.size(), 5u);
    EXPECT_TRUE(mixed[0]);
    EXPECT_TRUE(mixed[1]);
    EXPECT_TRUE(mixed[2]);
    EXPECT_FALSE(mixed[3]);
    EXPECT_TRUE(mixed[4]);
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".messages m JOIN " + guard.schema +
                    ".mailboxes x ON x.id = m.mailbox_id WHERE x.name = 'carol'"),
              "4");

    // A delivery of 1 MiB or more in a group goes in a transaction of its own (it would hold up
    // the group's small ones, and those of a server's other sessions behind them).
    std::vector<std::unique_ptr<mailnet::delivery>> sized;
    std::vector<mailnet::delivery*> sp;
    for (int i = 0; i < 4; ++i) {
        auto d = s->begin_delivery(std::vector<std::string>{"dave"});
        ASSERT_TRUE(d);
        ASSERT_TRUE((*d)->write(i == 2 ? "Subject: big\n\n" + std::string(1536 * 1024, 'b') + "\n" : "Subject: small\n\nx\n"));
        sp.push_back(d->get());
        sized.push_back(std::move(*d));
    }
    for (const auto& r : mailnet::commit_together(sp)) EXPECT_TRUE(r);
    EXPECT_EQ(admin("SELECT count(DISTINCT b.received) FROM " + guard.schema + ".bodies b JOIN " + guard.schema +
                    ".messages m ON m.body_id = b.id JOIN " + guard.schema + ".mailboxes x ON x.id = m.mailbox_id WHERE x.name = 'dave'"),
              "2");

    // While someone subscribes (mailnetd), the store's deliveries go back to the pool: a
    // batch then waits for its own events, which a server's one committer thread must not.
    {
        auto sub = s->subscribe([](const mailnet::store_event&) {});
        EXPECT_FALSE(s->commits_in_groups());
    }
    EXPECT_TRUE(s->commits_in_groups());
}

TEST_F(postgresql_store, a_group_stored_in_one_statement_keeps_each_deliverys_uidl_ids_and_events) {
    // Deliveries of one piece go in one statement (arrays, one element each): UIDLs with the
    // array syntax's own characters arrive as given, each delivery gets the ids of its own
    // rows, and another front-end hears each copy with its size.
    auto a = open();
    auto b = open();
    ASSERT_TRUE(a && b);
    event_record heard;
    auto sub = b->subscribe(heard.listener());
    ASSERT_TRUE(a->commits_in_groups());
    const std::vector<std::string> uidls{"q\"uote", "back\\slash", "{brace,comma}", ""};
    const std::vector<std::vector<std::string>> targets{{"erin"}, {"frank", "erin"}, {"frank"}, {"erin", "gus"}};
    std::vector<std::unique_ptr<mailnet::delivery>> ds;
    std::vector<mailnet::delivery*> ptrs;
    std::vector<std::string> texts;
    for (std::size_t i = 0; i < uidls.size(); ++i) {
        auto d = a->begin_delivery(targets[i]);
        ASSERT_TRUE(d);
        texts.push_back("Subject: " + std::to_string(i) + "\n\n" + std::string(i * 100, 'x') + "\n");
        ASSERT_TRUE((*d)->write(texts.back()));
        if (!uidls[i].empty()) {
            EXPECT_TRUE((*d)->keep(uidls[i], i == 2));
        }
        ptrs.push_back(d->get());
        ds.push_back(std::move(*d));
    }
    for (const auto& r : mailnet::commit_together(ptrs)) ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(admin("SELECT count(DISTINCT received) FROM " + guard.schema + ".bodies"), "1");  // one transaction
    EXPECT_EQ(admin("SELECT count(DISTINCT cmin::text) FROM " + guard.schema + ".bodies"), "1");  // one statement
    EXPECT_EQ(admin("SELECT string_agg(coalesce(uidl, '-'), '|' ORDER BY id) FROM " + guard.schema + ".messages"),
              "q\"uote|back\\slash|back\\slash|{brace,comma}|-|-");
    EXPECT_EQ(admin("SELECT string_agg(seen::text, '|' ORDER BY id) FROM " + guard.schema + ".messages"),
              "false|false|false|true|false|false");
    // Each copy readable through its mailbox with its own text; 6 copies heard, each once.
    std::map<std::string, std::vector<std::string>> want{{"erin", {texts[0], texts[1], texts[3]}},
                                                         {"frank", {texts[1], texts[2]}}, {"gus", {texts[3]}}};
    for (const auto& [box, bodies] : want) {
        auto snap = a->snapshot(box);
        ASSERT_TRUE(snap) << box;
        ASSERT_EQ(snap->size(), bodies.size()) << box;
        for (std::size_t k = 0; k < bodies.size(); ++k) {
            const std::string got = read_all(*a, box, (*snap)[k].id);
            EXPECT_NE(got.find(bodies[k]), std::string::npos) << box << " " << k;
        }
    }
    std::unique_lock lock(heard.m);
    ASSERT_TRUE(heard.cv.wait_for(lock, std::chrono::seconds(10), [&] { return heard.count(store_event::kind::delivered) >= 6; }));
    std::map<std::string, int> copies;
    for (const auto& e : heard.events) {
        if (e.what != store_event::kind::delivered) continue;
        auto snap = b->snapshot(e.mailbox);
        ASSERT_TRUE(snap);
        auto it = std::find_if(snap->begin(), snap->end(), [&](const auto& mi) { return mi.id == e.id; });
        ASSERT_NE(it, snap->end()) << e.mailbox << " " << e.id;
        EXPECT_EQ(it->octets, e.octets);
        ++copies[e.mailbox];
    }
    EXPECT_EQ(copies, (std::map<std::string, int>{{"erin", 3}, {"frank", 2}, {"gus", 1}}));
    lock.unlock();

    // The ids each delivery of such a group is given back: with its event connection cut, a
    // front-end tells its own subscribers of its deliveries itself, from those ids; each
    // must name that delivery's own copy in that mailbox.
    event_record own;
    auto mine = a->subscribe(own.listener());
    admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mailnet events " + guard.schema + "'");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ds.clear();
    ptrs.clear();
    std::map<std::string, std::string> text_of;  // mailbox + subject -> text
    for (std::size_t i = 0; i < targets.size(); ++i) {
        auto d = a->begin_delivery(targets[i]);
        ASSERT_TRUE(d);
        const std::string text = "Subject: second " + std::to_string(i) + "\n\n" + std::string(50 + i, 'y') + "\n";
        ASSERT_TRUE((*d)->write(text));
        for (const auto& t : targets[i]) text_of[t + " " + std::to_string(i)] = text;
        ptrs.push_back(d->get());
        ds.push_back(std::move(*d));
    }
    for (const auto& r : mailnet::commit_together(ptrs)) ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(admin("SELECT count(DISTINCT cmin::text) FROM " + guard.schema + ".bodies WHERE stored_octets > 60"), "1");
    std::lock_guard l(own.m);
    ASSERT_EQ(own.count(store_event::kind::delivered), 6u) << "told before commit_together returned";
    for (const auto& e : own.events) {
        if (e.what != store_event::kind::delivered) continue;
        const std::string got = read_all(*a, e.mailbox, e.id);
        const auto at = got.find("Subject: second ");
        ASSERT_NE(at, std::string::npos) << e.mailbox << " " << e.id << ": not a copy of this group";
        const std::string key = e.mailbox + " " + got.substr(at + 16, 1);
        ASSERT_TRUE(text_of.count(key)) << key << ": a delivery that did not go to " << e.mailbox;
        EXPECT_NE(got.find(text_of[key]), std::string::npos) << key;
        EXPECT_EQ(e.octets, text_of[key].size() + std::count(text_of[key].begin(), text_of[key].end(), '\n'))
            << key;  // the wire size: CRLF line ends
    }
}

TEST_F(postgresql_store, a_delivery_that_fails_in_a_shared_transaction_spoils_no_other) {
    auto s = open();
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->deliver(std::vector<std::string>{"gone@example.org"}, "Subject: first\n\nx\n"));
    // The mailbox's row removed behind the store's back (its id is cached): a delivery to it
    // now breaks a foreign key, inside whatever batch it shares.
    admin("DELETE FROM " + guard.schema + ".messages; DELETE FROM " + guard.schema + ".mailboxes");
    constexpr int threads = 12, each = 8;
    std::atomic<int> ok{0}, failed_gone{0}, failed_other{0};
    std::vector<std::thread> senders;
    for (int t = 0; t < threads; ++t)
        senders.emplace_back([&, t] {
            for (int i = 0; i < each; ++i) {
                const bool to_gone = t == 0 && i == 0;
                const std::vector<std::string> box{to_gone ? "gone@example.org" : "b" + std::to_string(t) + "@example.org"};
                if (s->deliver(box, "Subject: x\n\nx\n"))
                    ++ok;
                else
                    ++(to_gone ? failed_gone : failed_other);
            }
        });
    for (auto& t : senders) t.join();
    EXPECT_EQ(failed_other.load(), 0);
    EXPECT_EQ(failed_gone.load(), 1);
    EXPECT_EQ(ok.load(), threads * each - 1);
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".messages"), std::to_string(ok.load()));
    // The stale id is forgotten: the mailbox is made again by the next delivery.
    EXPECT_TRUE(s->deliver(std::vector<std::string>{"gone@example.org"}, "Subject: again\n\nx\n"));
    auto snap = s->snapshot("gone@example.org");
    ASSERT_TRUE(snap);
    EXPECT_EQ(snap->size(), 1u);
}

// A message of several 64 KiB pieces, told apart by `tag`.
std::string big_message(const std::string& tag) {
    std::string text = "Subject: " + tag + "\n\n";
    while (text.size() < 200 * 1024) text += tag + " 0123456789abcdefghijklmnopqrstuvwxyz\n";
    return text;
}

TEST_F(postgresql_store, a_failing_delivery_in_a_batch_leaves_the_others_stored_whole_and_once) {
    auto s = open();
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->deliver(std::vector<std::string>{"gone@example.org"}, "Subject: first\n\nx\n"));
    // As above: the cached mailbox id of gone@ now names nothing, so its delivery fails in
    // whatever batch it joins; here the batches carry multi-piece messages too.
    admin("DELETE FROM " + guard.schema + ".messages; DELETE FROM " + guard.schema + ".bodies; DELETE FROM " +
          guard.schema + ".mailboxes");
    constexpr int threads = 8, each = 3;
    std::atomic<int> failed_gone{0}, failed_other{0};
    std::vector<std::thread> senders;
    for (int t = 0; t < threads; ++t)
        senders.emplace_back([&, t] {
            for (int i = 0; i < each; ++i) {
                const bool to_gone = t == 0 && i == 1;
                const std::string tag = "t" + std::to_string(t) + "m" + std::to_string(i);
                const std::vector<std::string> box{to_gone ? "gone@example.org" : "big" + std::to_string(t) + "@example.org"};
                if (!s->deliver(box, i == 0 ? "Subject: " + tag + "\n\nsmall\n" : big_message(tag)))
                    ++(to_gone ? failed_gone : failed_other);
            }
        });
    for (auto& t : senders) t.join();
    EXPECT_EQ(failed_gone.load(), 1);
    EXPECT_EQ(failed_other.load(), 0);
    // Each other message is there once, whole: nothing of a rolled-back batch stays behind.
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".bodies"), std::to_string(threads * each - 1));
    for (int t = 0; t < threads; ++t) {
        const std::string box = "big" + std::to_string(t) + "@example.org";
        auto snap = s->snapshot(box);
        ASSERT_TRUE(snap);
        ASSERT_EQ(snap->size(), static_cast<std::size_t>(t == 0 ? each - 1 : each)) << box;
        std::size_t k = 0;
        for (int i = 0; i < each; ++i) {
            if (t == 0 && i == 1) continue;
            const std::string tag = "t" + std::to_string(t) + "m" + std::to_string(i);
            EXPECT_EQ(read_all(*s, box, (*snap)[k++].id), i == 0 ? "Subject: " + tag + "\n\nsmall\n" : big_message(tag)) << tag;
        }
    }
}

TEST_F(postgresql_store, large_and_small_deliveries_at_once_are_all_stored_whole) {
    // Six senders of 12 MiB each (one pipelined flight may carry them all, or a second batch
    // runs beside a large one) and six of small messages: every one stored once, byte for byte.
    auto s = open();
    ASSERT_TRUE(s);
    auto large = [](int t) {
        std::string text = "Subject: large " + std::to_string(t) + "\n\n";
        const std::string line = "line of sender " + std::to_string(t) + " 0123456789abcdefghijklmnopqrstuvwxyz\n";
        while (text.size() < 12 * 1024 * 1024) text += line;
        return text;
    };
    std::atomic<int> failed{0};
    std::vector<std::thread> senders;
    for (int t = 0; t < 12; ++t)
        senders.emplace_back([&, t] {
            const std::vector<std::string> box{"mixed" + std::to_string(t) + "@example.org"};
            if (t < 6) {
                if (!s->deliver(box, large(t))) ++failed;
            } else {
                for (int i = 0; i < 5; ++i)
                    if (!s->deliver(box, "Subject: small " + std::to_string(i) + "\n\nx\n")) ++failed;
            }
        });
    for (auto& t : senders) t.join();
    EXPECT_EQ(failed.load(), 0);
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".bodies"), std::to_string(6 + 6 * 5));
    for (int t = 0; t < 12; ++t) {
        const std::string box = "mixed" + std::to_string(t) + "@example.org";
        auto snap = s->snapshot(box);
        ASSERT_TRUE(snap);
        ASSERT_EQ(snap->size(), t < 6 ? 1u : 5u) << box;
        if (t < 6) {
            EXPECT_TRUE(read_all(*s, box, (*snap)[0].id) == large(t)) << box;
        }
    }
}

TEST_F(postgresql_store, reads_and_deliveries_work_on_connections_that_replaced_cut_ones) {
    // The statements prepared on a connection go with it: its replacement prepares its own.
    auto s = open();
    ASSERT_TRUE(s);
    const std::string box = "again@example.org";
    for (int round = 0; round < 3; ++round) {
        const std::string tag = "round" + std::to_string(round);
        ASSERT_TRUE(s->deliver(std::vector<std::string>{box}, big_message(tag)));
        auto snap = s->snapshot(box);
        ASSERT_TRUE(snap);
        ASSERT_EQ(snap->size(), static_cast<std::size_t>(round + 1));
        for (int i = 0; i <= round; ++i) EXPECT_EQ(read_all(*s, box, (*snap)[i].id), big_message("round" + std::to_string(i)));
        cut_all();
        for (int i = 0; i <= round; ++i)
            EXPECT_EQ(read_all(*s, box, (*snap)[i].id), big_message("round" + std::to_string(i))) << "after the cut, round " << round;
        cut_all();
    }
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".bodies"), "3");
}

TEST_F(postgresql_store, deliveries_under_way_when_connections_are_cut_are_stored_once_or_refused) {
    auto s = open();
    ASSERT_TRUE(s);
    constexpr int threads = 8, each = 6;
    std::atomic<int> ok{0};
    std::atomic<bool> go{true};
    std::thread cutter([&] {
        while (go) {
            cut_all();
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    });
    std::vector<std::thread> senders;
    for (int t = 0; t < threads; ++t)
        senders.emplace_back([&, t] {
            for (int i = 0; i < each; ++i)
                if (s->deliver(std::vector<std::string>{"cut" + std::to_string(t) + "@example.org"},
                               i % 2 ? big_message("c" + std::to_string(t) + "." + std::to_string(i)) : "Subject: c\n\nx\n"))
                    ++ok;
        });
    for (auto& t : senders) t.join();
    go = false;
    cutter.join();
    // A delivery answered ok is stored once; one refused (a temporary failure) is not stored.
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".bodies"), std::to_string(ok.load()));
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".messages"), std::to_string(ok.load()));
    EXPECT_GT(ok.load(), 0);
}

TEST_F(postgresql_store, the_pool_survives_connections_cut_again_and_again) {
    mailnet::postgresql_options o;
    o.uri = guard.uri;
    o.schema = guard.schema;
    o.pool_size = 2;
    o.wait = std::chrono::milliseconds(2000);
    o.log = mailnet::null_log();
    auto opened = mailnet::open_postgresql_store(o);
    ASSERT_TRUE(opened);
    auto& s = *opened;
    const std::vector<std::string> box{"pool@example.org"};
    for (int round = 0; round < 6; ++round) {
        cut_all();
        auto r = s->deliver(box, "Subject: round\n\nx\n");
        EXPECT_TRUE(r) << "round " << round << ": " << r.error().message();
    }
    // Both pooled connections still usable at once (a lost slot would make one wait and fail).
    std::atomic<int> ok{0};
    std::vector<std::thread> readers;
    for (int i = 0; i < 8; ++i)
        readers.emplace_back([&] {
            for (int k = 0; k < 20; ++k)
                if (s->snapshot(box[0])) ++ok;
        });
    for (auto& t : readers) t.join();
    EXPECT_EQ(ok.load(), 160);
    EXPECT_EQ(admin("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mailnet pool " + guard.schema + "'"), "2");
}

TEST_F(postgresql_store, a_session_whose_lock_was_lost_cannot_delete) {
    auto a = open();
    auto b = open();
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->deliver(std::vector<std::string>{"bob@example.org"}, "Subject: x\n\nx\n"));
    auto snap = a->snapshot("bob@example.org");
    ASSERT_TRUE(snap);
    ASSERT_TRUE(a->lock("bob@example.org"));
    admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mailnet locks " + guard.schema + "'");
    // b gets in while a has not noticed: the server released a's lock with its connection.
    bool b_in = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!(b_in = b->lock("bob@example.org").has_value()) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(b_in);
    // a's QUIT may not delete: b's session owns the mailbox now.
    const std::vector<std::string> gone{(*snap)[0].id};
    auto errs = a->commit("bob@example.org", gone, {});
    ASSERT_EQ(errs.size(), 1u);
    EXPECT_EQ(errs[0], mailnet::make_error_code(errc::temporary_failure));
    a->unlock("bob@example.org");
    auto still = b->snapshot("bob@example.org");
    ASSERT_TRUE(still);
    EXPECT_EQ(still->size(), 1u);
    EXPECT_FALSE(b->commit("bob@example.org", gone, {})[0]);  // b's own deletion goes through
    b->unlock("bob@example.org");
}

TEST_F(postgresql_store, own_changes_are_told_while_the_event_connection_is_down) {
    auto s = open();
    ASSERT_TRUE(s);
    std::mutex m;
    std::vector<store_event> heard;
    auto sub = s->subscribe([&](const store_event& e) {
        std::lock_guard lock(m);
        heard.push_back(e);
    });
    admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mailnet events " + guard.schema + "'");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ASSERT_TRUE(s->deliver(std::vector<std::string>{"ev@example.org"}, "Subject: x\n\nx\n"));
    std::lock_guard lock(m);
    std::erase_if(heard, [](const store_event& e) { return e.what == store_event::kind::resync; });
    ASSERT_EQ(heard.size(), 1u) << "told before deliver() returned, listener or not";
    EXPECT_EQ(heard[0].mailbox, "ev@example.org");
}

TEST_F(postgresql_store, a_subscriber_that_stopped_waiting_for_the_first_listen_is_told_to_look_again) {
    // subscribe() waits `wait` for the LISTEN; 1 ms is too short for a connection, so the
    // subscriber goes on (and scans) before it: what came between is found by a resync.
    mailnet::postgresql_options o;
    o.uri = guard.uri;
    o.schema = guard.schema;
    o.wait = std::chrono::milliseconds(1);
    auto s = mailnet::open_postgresql_store(std::move(o));
    ASSERT_TRUE(s) << s.error().message();
    std::mutex m;
    std::condition_variable cv;
    bool resync = false;
    auto sub = (*s)->subscribe([&](const store_event& e) {
        std::lock_guard lock(m);
        if (e.what == store_event::kind::resync) resync = true;
        cv.notify_all();
    });
    std::unique_lock lock(m);
    EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(15), [&] { return resync; }));
}

TEST_F(postgresql_store, a_message_says_when_it_was_received) {
    auto s = open();
    ASSERT_TRUE(s);
    const auto before = std::chrono::system_clock::now();
    ASSERT_TRUE(s->deliver(std::vector<std::string>{"when@example.org"}, "Subject: when\n\nx\n"));
    const auto after = std::chrono::system_clock::now();
    auto snap = s->snapshot("when@example.org");
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->size(), 1u);
    auto m = s->open("when@example.org", (*snap)[0].id);
    ASSERT_TRUE(m);
    ASSERT_TRUE(m->received().has_value()) << "mailnetd would show the time it indexed the message instead";
    // The database's clock is this machine's (a private server on 127.0.0.1).
    EXPECT_GE(*m->received(), before - std::chrono::seconds(1));
    EXPECT_LE(*m->received(), after + std::chrono::seconds(1));
}

TEST_F(postgresql_store, once_the_event_connection_is_back_subscribers_are_told_to_look_again) {
    auto a = open();
    auto b = open();
    ASSERT_TRUE(a && b);
    event_record record;
    auto sub = a->subscribe(record.listener());
    auto& heard = record.events;
    auto& m = record.m;
    auto& cv = record.cv;
    ASSERT_TRUE(b->deliver(std::vector<std::string>{"seen@example.org"}, "Subject: heard\n\nx\n"));
    {
        std::unique_lock lock(m);
        ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return heard.size() == 1; }));
        EXPECT_EQ(heard[0].what, store_event::kind::delivered);
    }
    // a's LISTEN is cut; b delivers meanwhile (a may not hear it); a listens again and says so.
    admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mailnet events " + guard.schema + "'");
    ASSERT_TRUE(b->deliver(std::vector<std::string>{"missed@example.org"}, "Subject: maybe missed\n\nx\n"));
    std::unique_lock lock(m);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(15), [&] {
        return std::any_of(heard.begin(), heard.end(), [](const store_event& e) { return e.what == store_event::kind::resync; });
    })) << "no resync after the event connection was cut";
    const auto r = std::find_if(heard.begin(), heard.end(), [](const store_event& e) { return e.what == store_event::kind::resync; });
    EXPECT_TRUE(r->mailbox.empty() && r->id.empty());
    EXPECT_EQ(std::count_if(heard.begin(), heard.end(), [](const store_event& e) { return e.what == store_event::kind::resync; }), 1);
    lock.unlock();
    // Events flow again after it.
    ASSERT_TRUE(b->deliver(std::vector<std::string>{"after@example.org"}, "Subject: after\n\nx\n"));
    lock.lock();
    EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] {
        return std::any_of(heard.begin(), heard.end(), [](const store_event& e) { return e.mailbox == "after@example.org"; });
    }));
}

}  // namespace

// A raw connection that LISTENs on the store's channel, as a front-end's event connection does
// but without entering the listeners table: it hears what the front-ends send for others.
class raw_listener {
public:
    raw_listener(const std::string& uri, const std::string& schema) : c_(PQconnectdb(uri.c_str())), channel_(schema + "_events") {
        run("LISTEN " + channel_);
    }
    ~raw_listener() { PQfinish(c_); }
    void run(const std::string& sql) {
        PGresult* r = PQexec(c_, sql.c_str());
        EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQresultErrorMessage(r);
        PQclear(r);
    }
    // Every notification committed before now: the listener's own last one comes after them
    // (PostgreSQL tells them in commit order), so this needs no timing.
    std::vector<std::string> heard_so_far() {
        run("NOTIFY " + channel_ + ", 'sentinel'");
        std::vector<std::string> out;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (std::chrono::steady_clock::now() < deadline) {
            PQconsumeInput(c_);
            while (PGnotify* n = PQnotifies(c_)) {
                const std::string payload = n->extra;
                PQfreemem(n);
                if (payload == "sentinel") return out;
                out.push_back(payload);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        ADD_FAILURE() << "the sentinel never came back";
        return out;
    }

private:
    PGconn* c_;
    std::string channel_;
};

TEST_F(postgresql_store, changes_notify_only_while_some_front_end_listens) {
    // Every transaction that notifies holds one server-wide lock through its commit: front-ends
    // that nobody listens to (smtpd, pop3d) must not send any.
    auto b = open();
    ASSERT_TRUE(b);
    raw_listener raw(guard.uri, guard.schema);
    auto deliver_and_delete = [&](const std::string& box) {
        ASSERT_TRUE(b->deliver(std::vector<std::string>{box}, "Subject: n\n\nx\n"));
        auto snap = b->snapshot(box);
        ASSERT_TRUE(snap && snap->size() == 1u);
        ASSERT_TRUE(b->lock(box));
        EXPECT_FALSE(b->commit(box, std::vector<std::string>{(*snap)[0].id}, {})[0]);
        b->unlock(box);
    };
    deliver_and_delete("quiet@example.org");
    EXPECT_TRUE(raw.heard_so_far().empty()) << "nobody listened";
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".listeners"), "0");
    {
        auto a = open();
        ASSERT_TRUE(a);
        auto sub = a->subscribe([](const store_event&) {});
        EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".listeners"), "1");
        deliver_and_delete("heard@example.org");
        const auto heard = raw.heard_so_far();
        ASSERT_EQ(heard.size(), 2u);
        EXPECT_EQ(heard[0].substr(0, 2), "D ");
        EXPECT_EQ(heard[1].substr(0, 2), "X ");
    }
    // The front-end is gone, and its row with it.
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".listeners"), "0");
    deliver_and_delete("quiet@example.org");
    EXPECT_TRUE(raw.heard_so_far().empty());
    // A row whose server process is gone (a front-end killed) is dropped at the next start.
    admin("INSERT INTO " + guard.schema + ".listeners (pid, front_end) VALUES (2147483646, 'killed')");
    EXPECT_TRUE(open());
    EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".listeners"), "0");
}

// One statement on a connection of the test's own; the first value of its first row.
std::string q1(PGconn* c, const std::string& sql) {
    PGresult* r = PQexec(c, sql.c_str());
    std::string out;
    EXPECT_TRUE(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK) << sql << ": " << PQresultErrorMessage(r);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) out = PQgetvalue(r, 0, 0);
    PQclear(r);
    return out;
}

// Polls `sql` on `c` until it gives `want` (at most 10 s).
bool until(PGconn* c, const std::string& sql, const std::string& want) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        if (q1(c, sql) == want) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
}

TEST_F(postgresql_store, a_new_listener_waits_for_a_delivery_that_found_no_listener) {
    // A delivery whose statement looked at the listeners table before a front-end's row came
    // sends no NOTIFY: subscribe() returns only once it is over, so the subscriber's first look
    // at the store finds it. The delivery is held after that look by a lock on its mailbox's
    // row (its foreign key check waits), and let go only once the new listener waits for it:
    // no sleep decides the outcome.
    auto a = open();
    auto b = open();
    ASSERT_TRUE(a && b);
    const std::vector<std::string> box{"race@example.org"};
    ASSERT_TRUE(b->deliver(box, "Subject: 1\n\n1\n"));
    PGconn* holder = PQconnectdb(guard.uri.c_str());
    PGconn* watch = PQconnectdb(guard.uri.c_str());
    ASSERT_EQ(PQstatus(holder), CONNECTION_OK);
    ASSERT_EQ(PQstatus(watch), CONNECTION_OK);
    q1(holder, "BEGIN");
    q1(holder, "SELECT 1 FROM " + guard.schema + ".mailboxes WHERE name = 'race@example.org' FOR UPDATE");
    std::atomic<bool> second_ok{false};
    std::thread deliverer([&] { second_ok = static_cast<bool>(b->deliver(box, "Subject: 2\n\n2\n")); });
    EXPECT_TRUE(until(watch, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mailnet pool " + guard.schema +
                                 "' AND wait_event_type = 'Lock'", "1"));
    std::thread releaser([&] {
        // The listener's barrier waits behind the delivery: let the delivery go.
        EXPECT_TRUE(until(watch, "SELECT count(*) FROM pg_locks WHERE relation = '" + guard.schema +
                                     ".listeners'::regclass AND mode = 'AccessExclusiveLock' AND NOT granted", "1"));
        q1(holder, "COMMIT");
    });
    auto sub = a->subscribe([](const store_event&) {});
    auto snap = a->snapshot("race@example.org");
    ASSERT_TRUE(snap);
    EXPECT_EQ(snap->size(), 2u) << "subscribe() returned before a delivery that sent no NOTIFY was over";
    releaser.join();
    deliverer.join();
    EXPECT_TRUE(second_ok.load());
    PQfinish(holder);
    PQfinish(watch);
}

TEST_F(postgresql_store, a_listener_that_waited_too_long_hears_every_change_and_is_told_to_look_again) {
    // A transaction that read the listeners table and stays open: subscribe() waits 0.5 s for
    // it, then goes on; changes are heard meanwhile, and a resync comes once it is over (the
    // barrier is tried again after 1, 2, 4... s).
    auto a = open();
    auto b = open();
    ASSERT_TRUE(a && b);
    PGconn* reader = PQconnectdb(guard.uri.c_str());
    ASSERT_EQ(PQstatus(reader), CONNECTION_OK);
    q1(reader, "BEGIN");
    q1(reader, "SELECT count(*) FROM " + guard.schema + ".listeners");
    std::mutex m;
    std::condition_variable cv;
    int delivered = 0;
    bool resync = false;
    const auto t0 = std::chrono::steady_clock::now();
    auto sub = a->subscribe([&](const store_event& e) {
        std::lock_guard lock(m);
        if (e.what == store_event::kind::resync) resync = true;
        if (e.what == store_event::kind::delivered) ++delivered;
        cv.notify_all();
    });
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(450));
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(b->deliver(std::vector<std::string>{"long@example.org"}, "Subject: l\n\nl\n"));
    {
        std::unique_lock lock(m);
        EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return delivered == 5; })) << delivered << " of 5 heard";
        EXPECT_FALSE(resync);
    }
    // Held a while longer: the barrier is tried again after 1, 2, 4 s..., each time for at most
    // 100 ms (its lock request waiting, deliveries queued behind it): over 4.5 s, 2 tries, not 4.
    PGconn* watcher = PQconnectdb(guard.uri.c_str());
    ASSERT_EQ(PQstatus(watcher), CONNECTION_OK);
    const std::string waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock' "
                                "AND relation = '" + guard.schema + ".listeners'::regclass";
    int tries = 0;
    bool in_try = false;
    auto try_began = std::chrono::steady_clock::now();
    std::chrono::steady_clock::duration longest{};
    const auto watch_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(4500);
    while (std::chrono::steady_clock::now() < watch_end) {
        const bool now_waiting = q1(watcher, waiting) != "0";
        if (now_waiting && !in_try) {
            ++tries;
            try_began = std::chrono::steady_clock::now();
        }
        if (!now_waiting && in_try) longest = std::max(longest, std::chrono::steady_clock::now() - try_began);
        in_try = now_waiting;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    PQfinish(watcher);
    EXPECT_GE(tries, 1);
    EXPECT_LE(tries, 3) << "tried again at growing intervals, not each second";
    EXPECT_LT(longest, std::chrono::milliseconds(400)) << "each try waits 100 ms";
    q1(reader, "COMMIT");
    std::unique_lock lock(m);
    EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return resync; }));
    PQfinish(reader);
}

TEST_F(postgresql_store, a_schema_migrated_to_version_2_keeps_working_for_a_role_with_rights_on_its_tables) {
    // The role of the front-ends got its rights on version 1's tables; the owner's first
    // start of version 2 (now 3) gives it the same on the new tables.
    auto owner = open();
    ASSERT_TRUE(owner);
    const std::string role = "app_" + guard.schema;
    admin("DROP TABLE " + guard.schema + ".listeners");
    admin("DROP TABLE " + guard.schema + ".deliveries");
    admin("UPDATE " + guard.schema + ".version SET version = 1");
    admin("CREATE ROLE " + role + " LOGIN");
    admin("GRANT USAGE ON SCHEMA " + guard.schema + " TO " + role);
    admin("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA " + guard.schema + " TO " + role);
    admin("GRANT USAGE ON ALL SEQUENCES IN SCHEMA " + guard.schema + " TO " + role);
    owner.reset();
    ASSERT_TRUE(open());  // the owner migrates
    EXPECT_EQ(admin("SELECT version FROM " + guard.schema + ".version"), "3");
    mailnet::postgresql_options o;
    o.uri = guard.uri + (guard.uri.find('?') == std::string::npos ? "?" : "&") + "user=" + role;
    o.schema = guard.schema;
    o.log = mailnet::null_log();
    {
        auto app = mailnet::open_postgresql_store(o);
        ASSERT_TRUE(app) << app.error().message();
        auto sub = (*app)->subscribe([](const store_event&) {});
        EXPECT_EQ(admin("SELECT count(*) FROM " + guard.schema + ".listeners l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE a.usename = '" + role + "'"),
                  "1");
        ASSERT_TRUE((*app)->deliver(std::vector<std::string>{"app@example.org"}, "Subject: a\n\na\n"));
    }
    admin("DROP SCHEMA " + guard.schema + " CASCADE");
    admin("DROP ROLE " + role);
}
