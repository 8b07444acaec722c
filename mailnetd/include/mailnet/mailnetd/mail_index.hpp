// mailnet/mailnetd/mail_index.hpp: the in-memory index mailnetd's HTTP API serves from (DESIGN.md
// "mailnetd's HTTP API and web view"): one summary per message copy, the list filters, newest
// first, and the waiters of GET /api/v1/wait, woken by insertion. Single-threaded: the I/O thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <deque>
#include <unordered_map>
#include <vector>

namespace mailnet::mailnetd {

/// One message copy as the API shows it (the summary of DESIGN.md), plus what the index needs.
struct message_summary {
    std::string id;        ///< opaque, URL-safe, stable: make_message_id(mailbox, store_id)
    std::string mailbox;   ///< the recipient this copy was delivered for
    std::string store_id;  ///< the store's id of it in `mailbox` (not shown)
    std::string from;      ///< the envelope sender (Return-Path; "" for <>)
    std::string from_header;        ///< the From header (the `from` filter matches it too; not shown)
    std::vector<std::string> to;    ///< To and Cc addresses
    std::string subject;            ///< decoded
    std::chrono::system_clock::time_point received;  ///< microseconds
    std::uint64_t size = 0;         ///< wire octets (the RETR size)
    /// summary_json() of the fields above, made once by mail_index::insert (they never change):
    /// a list answer or an event is these joined, not one JSON tree built and freed per message.
    std::string json_text;
};

/// Where a message stands in the index's order: received time, then insertion (`seq`: the
/// index's insertion sequence, from 1; the start-up scan inserts in received order, then each
/// store event in publish order).
struct order_key {
    std::int64_t received_us = 0;
    std::uint64_t seq = 0;
    auto operator<=>(const order_key&) const = default;
};

/// The filters of GET /api/v1/messages and /wait; empty strings match everything.
struct compiled_filters;

struct message_query {
    std::string mailbox;  ///< exact, ASCII case-insensitive
    std::string to;       ///< substring of the mailbox or a To/Cc address, case-insensitive
    std::string from;     ///< substring of the envelope sender or the From header, case-insensitive
    std::string subject;  ///< substring, case-insensitive
    /// since=TIME: only messages received after it (microseconds since the epoch).
    std::optional<std::int64_t> after_us;
    /// since=ID: only messages the index took in after that one (its order_key::seq). Insertion,
    /// not the received time: a Maildir name's time is taken when its delivery begins, so a long
    /// message started earlier can be delivered after one it would sort before.
    std::optional<std::uint64_t> after_seq;
    std::size_t limit = 50;          ///< at most this many summaries (the total counts all)
    /// The filters' searches, made by the index at its first use of this query and again only
    /// when a filter changed: a list or wait scans every summary with them.
    mutable std::shared_ptr<const compiled_filters> compiled;
};

/// A query's answer: how many match, and the newest `limit` of them, newest first.
struct query_result {
    std::size_t total = 0;
    std::vector<const message_summary*> messages;  ///< valid until the index changes
};

/// The index. Every member runs on one thread (mailnetd's I/O thread).
class mail_index {
public:
    using waiter_id = std::uint64_t;
    /// A change for the live events: `added` (the summary) or removed (its id).
    struct change {
        bool added = false;
        const message_summary* summary = nullptr;  ///< added: the new entry
        std::string id;                            ///< both
    };

    /// Adds a message; false (nothing changes) if its id is there already (a delivery seen by
    /// the start-up scan and by its event).
    bool insert(message_summary s);

    /// The received time of the newest message (microseconds since the epoch); 0 when empty.
    std::int64_t newest_received_us() const noexcept { return by_order_.empty() ? 0 : by_order_.rbegin()->first.received_us; }
    /// Removes by id; false if unknown.
    bool remove(std::string_view id);
    /// Removes the copy `store_id` of `mailbox` (a store's deleted event).
    bool remove(std::string_view mailbox, std::string_view store_id);

    const message_summary* find(std::string_view id) const;
    /// Where a message stands, also one removed lately (the last removed_keys_kept): a
    /// `since=<id>` stays good after a test fetched and deleted that message.
    std::optional<order_key> key_of(std::string_view id) const;
    static constexpr std::size_t removed_keys_kept = 4096;
    std::size_t size() const noexcept { return by_id_.size(); }

    /// The matches, newest first.
    query_result query(const message_query& q) const;
    /// Whether one summary matches the filters (not since=, not `limit`).
    static bool matches(const message_query& q, const message_summary& s);
    /// Whether a message at `k` is after q's since= (true without one).
    static bool after_since(const message_query& q, const order_key& k);
    /// The newest match of `q` (filters and since=) strictly older than `before` (none: the
    /// newest of all), and where it stands; nullptr when there is none. For a list sent in
    /// pieces while the index changes between them.
    const message_summary* next_match(const message_query& q, const std::optional<order_key>& before,
                                      order_key& at) const;

    /// Calls `done(total)` once `count` messages match `q` (now, or at the insertion that makes it
    /// so; a removal counts down again), with how many match then. Returns 0 when it is already
    /// so (`done` was called).
    waiter_id wait(message_query q, std::size_t count, std::function<void(std::size_t total)> done);
    /// The same, for a `done` that needs no total.
    waiter_id wait(message_query q, std::size_t count, std::function<void()> done) {
        return wait(std::move(q), count, [done = std::move(done)](std::size_t) { done(); });
    }
    /// Forgets a waiter (timeout, client gone); nothing if it fired already.
    void cancel(waiter_id id);
    std::size_t waiters() const noexcept { return waiters_.size(); }

    /// Whether the index holds every message the store had at start (index_sync's scan is in);
    /// until then GET /healthz answers 503.
    bool complete() const noexcept { return complete_; }
    void set_complete() noexcept { complete_ = true; }

    /// Calls `f` for every later change, in order, until unwatch().
    std::uint64_t watch(std::function<void(const change&)> f);
    void unwatch(std::uint64_t id);

    /// Every id of `mailbox` (empty: all), for DELETE /api/v1/messages.
    std::vector<const message_summary*> in_mailbox(std::string_view mailbox) const;
    /// How many messages of the mailbox named exactly so are here: a hash lookup.
    std::size_t count_in(std::string_view mailbox) const;

private:
    struct waiter {
        message_query q;
        std::size_t count = 0;
        std::size_t have = 0;
        std::function<void(std::size_t)> done;
    };
    void erase(std::map<order_key, message_summary>::iterator it);
    void notify(const change& c);
    std::map<order_key, message_summary> by_order_;
    std::unordered_map<std::string, order_key> by_id_;
    std::unordered_map<std::string, order_key> removed_keys_;  // id -> where it stood, bounded
    std::deque<std::string> removed_order_;                    // their ids, oldest first
    std::unordered_map<std::string, std::size_t> per_mailbox_;  // mailbox (exact) -> messages here
    std::uint64_t seq_ = 0;
    std::map<waiter_id, waiter> waiters_;
    waiter_id next_waiter_ = 1;
    // shared: a watcher that unwatches from inside its own call is not destroyed mid-call
    std::map<std::uint64_t, std::shared_ptr<std::function<void(const change&)>>> watchers_;
    std::uint64_t next_watcher_ = 1;
    bool complete_ = false;
};

/// The opaque id of one copy: 16 characters [a-z2-7] (base32 of SHA-256 over mailbox and store id).
std::string make_message_id(std::string_view mailbox, std::string_view store_id);

/// When a Maildir name says the message was delivered ("<secs>.M<usecs>P..."); nullopt otherwise.
std::optional<std::chrono::system_clock::time_point> received_from_store_id(std::string_view store_id);

/// RFC 3339 UTC with microseconds: "2024-05-01T12:00:00.000000Z".
std::string format_rfc3339(std::chrono::system_clock::time_point t);
/// RFC 3339 (5.6 date-time, any offset; fraction optional); nullopt if it is not one.
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view text);

/// ASCII case-insensitive substring / equality (UTF-8 bytes compared as they are).
bool contains_nocase(std::string_view haystack, std::string_view needle);
bool equals_nocase(std::string_view a, std::string_view b);

}  // namespace mailnet::mailnetd
