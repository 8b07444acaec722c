// mailnet/net/committer.hpp: durable delivery in groups on one thread (DESIGN.md "pluggable
// interfaces", Delivery: group commit). A server hands it the end of each message; the thread
// writes what is left of every message queued meanwhile, commits them all with one
// commit_together() (the Maildir store: one data round, the links, one fsync per new/) and
// resumes each caller on its own executor. Against one pool thread per delivery, each waiting
// for the group's rounds, this saves about two thirds of the thread switches per message.
// Where the store asks for it (store::group_linger), a group smaller than the recent ones
// waits a little for the messages about to end (at most four times the last commit's time).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>

#include "mailnet/store/store.hpp"

namespace mailnet::net {

/// The end of one message: the delivery (or, when nothing was written yet, the mailboxes to
/// begin it for) and the octets still to write.
struct commit_request {
    std::shared_ptr<store> storage;      ///< begins the delivery when `out` is null
    std::unique_ptr<delivery> out;       ///< the delivery under way, or null
    std::vector<std::string> mailboxes;  ///< for begin_delivery when `out` is null
    std::string octets;                  ///< written before the commit (after begin_delivery)
};

/// How a commit ended: `error` is empty once the message is durable in every mailbox; an
/// exception of the store's code is reported in `exception` (with errc::io_error), never thrown.
struct commit_outcome {
    std::error_code error;
    std::string exception;
};

/// One thread that commits deliveries in groups. Thread-safe. Destroy it only once nothing
/// waits on it, and before the io_contexts of its callers: of() gives the one an io_context
/// owns, which its shutdown ends (after the groups queued then, whose callers it resumes).
class delivery_committer {
public:
    /// The committer of `io` (an io_context service; its thread starts on the first call).
    static delivery_committer& of(asio::io_context& io);

    delivery_committer();
    ~delivery_committer();
    delivery_committer(const delivery_committer&) = delete;
    delivery_committer& operator=(const delivery_committer&) = delete;

    /// Begins the delivery if needed, writes `octets` and commits it together with the other
    /// requests that reached the thread before this group started (up to max_group in all);
    /// resumes the caller on its executor. The request's delivery is finished (and destroyed)
    /// on the committer's thread.
    asio::awaitable<commit_outcome> commit(commit_request request);

    /// Groups committed so far and the requests they held, and the requests waiting for the
    /// next group (for tests and benchmarks).
    struct counts {
        std::size_t groups = 0;
        std::size_t requests = 0;
        std::size_t largest_group = 0;
        std::size_t queued = 0;
    };
    counts stats() const;

    /// Implementation detail: a request with its way back to the caller.
    struct job {
        virtual ~job() = default;
        commit_request request;
        /// Resumes the caller (on its executor, never inline).
        virtual void complete(commit_outcome outcome) = 0;
    };

    /// Implementation detail: queues `j` for the next group.
    void submit(std::unique_ptr<job> j);

private:
public:
    static constexpr std::size_t max_group = 64;  ///< requests committed together at most

private:
    void run();
    void commit_group(std::vector<std::unique_ptr<job>>& group);

    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::unique_ptr<job>> queue_;  // under mutex_
    bool stopping_ = false;                   // under mutex_
    counts counts_;                           // under mutex_
    std::size_t lingering_for_ = 0;           // under mutex_: run() waits for a group this large
    double usual_group_ = 1;                  // run()'s: the recent groups' mean size
    double peak_group_ = 1;                   // run()'s: the recent groups' largest (decaying)
    /// A pause this long forgets the recent groups (usual_group_, peak_group_).
    static constexpr std::chrono::seconds idle_resets{1};
    std::chrono::steady_clock::duration last_commit_{};  // run()'s: the last group's commit time
    // A lingering group waits at most this many times the last commit's time (and at most the
    // store's linger). 4: three PostgreSQL front-ends on two cores were 13-16% faster with a
    // 3 ms linger unbounded by the commit's time than with 1 ms bounded by one commit (where a
    // 2 ms linger was no faster): PostgreSQL's commits take 0.75 ms or more there, so four of
    // them leave the 3 ms (docs/stores.md).
    static constexpr int linger_commits = 4;
    std::thread thread_;
};

}  // namespace mailnet::net
