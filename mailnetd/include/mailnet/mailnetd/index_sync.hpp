// mailnet/mailnetd/index_sync.hpp: keeps mailnetd's mail_index equal to the store: a scan at
// start and the store's delivered/deleted events, each message's head read off the I/O thread
// (DESIGN.md "pluggable interfaces": a store tells subscribers of each delivery and deletion).
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <unordered_set>
#include <memory>
#include <optional>
#include <string>

#include "mailnet/log.hpp"
#include "mailnet/mailnetd/mail_index.hpp"
#include "mailnet/store/store.hpp"

namespace mailnet::mailnetd {

/// The summary of one stored message, read from its header block (blocking: store I/O). Its
/// received time: the store's own (PostgreSQL), else `told_at` (when its delivery was told),
/// else its Maildir name's, else now.
std::optional<message_summary> read_summary(store& st, const std::string& mailbox, const std::string& store_id,
                                            std::uint64_t wire_octets,
                                            std::optional<std::chrono::system_clock::time_point> told_at = std::nullopt);

/// Feeds `index` (used on `io`'s thread only) from `st`, on a thread of its own: the HTTP API's
/// reads (a 30 MB message view) never delay an index update. After a store's `resync` event
/// (its event source was cut: PostgreSQL's LISTEN connection) the index is compared with the
/// store again: what was missed is added (and wakes its waiters), what is gone is removed.
/// A `changed` event (the Maildir store: a mailbox's files changed on disk, maybe through
/// another program) compares that mailbox's contents() with the index, at most once a second
/// per mailbox (or a tenth of the time, for one whose comparison takes more than 100 ms): a
/// message the index lacks, and no delivery of this store is about to tell, is added once
/// comparisons at least a second apart all lacked it; one the store lost is removed so too.
class index_sync {
public:
    index_sync(asio::io_context& io, std::shared_ptr<store> st, mail_index& index, log_sink log);
    ~index_sync();
    index_sync(const index_sync&) = delete;
    index_sync& operator=(const index_sync&) = delete;

    /// Subscribes to the store, then scans it off the I/O thread; the scan's messages go into the
    /// index oldest first, then every event's. Once the scan is in, the index is marked
    /// complete() and `on_scanned` runs (on `io`).
    void start(std::function<void(std::size_t messages)> on_scanned = {});

    /// Calls `done` on `io` once every delivered or deleted event told before this call is in
    /// the index (a delivery that commit() returned from is then listed, and its waits were
    /// woken). Not what a resync reads back (see behind()).
    void after_pending(std::function<void()> done);

    /// On `io`: whether the index is catching up, so that after_pending() may take long: the
    /// start-up scan or a resync under way, or more than `max_queued_events` events waiting.
    /// mailnetd's 250 does not wait for the index then.
    bool behind() const noexcept;
    static constexpr std::size_t max_queued_events = 256;

private:
    void scan(std::function<void(std::size_t)> on_scanned);
    void on_event(const store_event& e);
    // A resync event: events were missed; the index is made equal to the store again. A store
    // that cannot list a mailbox (the database just came back) is asked again later.
    void resync();
    void resync_later();  // on io_
    // A `changed` of `box`: compared at its box_check's not_before at the soonest (on io_).
    void check_later(const std::string& box);
    void arm_check();                     // on io_
    void check(const std::string& box);  // on serial_

    asio::io_context& io_;
    std::shared_ptr<store> store_;
    mail_index& index_;
    log_sink log_;
    asio::thread_pool pool_{1};
    // The scan, then every event, one at a time in publish order: a message's delivered is
    // read and inserted before its deleted removes it.
    asio::strand<asio::thread_pool::executor_type> serial_;
    subscription sub_;
    std::atomic<std::size_t> queued_{0};   // events posted to serial_, not yet begun
    std::atomic<int> resyncs_{0};          // resyncs begun, not yet in the index
    asio::steady_timer retry_;             // on io_: the next resync after one that failed
    std::chrono::seconds retry_pause_{1};  // on io_: doubles to 30 s while they fail
    // On io_: mailboxes to compare with the store (check_later), the timer that does it, and
    // per mailbox what its comparisons found.
    struct box_check {
        std::chrono::steady_clock::time_point not_before{};  // the next comparison no sooner
        bool running = false;                                // posted to serial_, not yet back on io_
        // API id -> when a comparison first found it in the store and not in the index
        // (lacking), or in the index and not in the store (missing)
        std::unordered_map<std::string, std::chrono::steady_clock::time_point> lacking, missing;
    };
    std::set<std::string> to_check_;
    asio::steady_timer check_timer_;
    bool check_armed_ = false;
    std::map<std::string, box_check> checks_;
    // All comparisons together take at most about a tenth of the time: each takes its time
    // from this budget, which grows by 100 ms a second up to 200 ms.
    std::chrono::steady_clock::duration check_budget_ = std::chrono::milliseconds(200);
    std::chrono::steady_clock::time_point budget_at_ = std::chrono::steady_clock::now();
};

}  // namespace mailnet::mailnetd
