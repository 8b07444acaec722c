// committer.cpp: delivery_committer (mailnet/net/committer.hpp).
#include "mailnet/net/committer.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <initializer_list>
#include <utility>

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/execution_context.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>

#include "mailnet/error.hpp"

namespace mailnet::net {

delivery_committer::delivery_committer() : thread_([this] { run(); }) {}

delivery_committer::~delivery_committer() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
}

void delivery_committer::submit(std::unique_ptr<job> j) {
    bool wake = false;
    {
        std::lock_guard lock(mutex_);
        // Otherwise the thread is awake already or about to look again, or lingers for a
        // larger group (woken once it is complete).
        wake = queue_.empty() || (lingering_for_ > 0 && queue_.size() + 1 >= lingering_for_);
        queue_.push_back(std::move(j));
    }
    if (wake) cv_.notify_one();
}

delivery_committer::counts delivery_committer::stats() const {
    std::lock_guard lock(mutex_);
    auto c = counts_;
    c.queued = queue_.size();
    return c;
}

void delivery_committer::run() {
    std::vector<std::unique_ptr<job>> group;
    struct hint {
        std::shared_ptr<store> storage;
        std::vector<std::string> mailbox;  // one: the first of a request's
    };
    constexpr std::size_t max_hints = 8;
    std::vector<hint> hints;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            // NOTE: a stop with requests queued commits them first: their callers wait.
            if (queue_.empty()) {
                const auto idle = std::chrono::steady_clock::now();
                cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
                if (queue_.empty()) return;
                // After a pause the recent groups say nothing of the next ones: a lone client
                // after a burst must not wait.
                if (std::chrono::steady_clock::now() - idle > idle_resets) usual_group_ = peak_group_ = 1;
            }
            // NOTE: where the store asks for it (store::group_linger; that of the first request
            // waiting), a group smaller than one more than the recent ones' mean, and than
            // their peak, waits a little for the messages about to end: at most the store's
            // linger and linger_commits times the last commit's time, and only while groups
            // held two or more (a lone client's every message would wait for nothing).
            const auto want = std::min({max_group, static_cast<std::size_t>(usual_group_) + 1,
                                        static_cast<std::size_t>(peak_group_)});
            if (usual_group_ >= 2 && queue_.size() < want && !stopping_) {
                const auto& first = queue_.front()->request.storage;
                const auto most = first ? std::chrono::steady_clock::duration(first->group_linger()) : std::chrono::steady_clock::duration{};
                if (const auto linger = std::min(most, linger_commits * last_commit_); linger.count() > 0) {
                    lingering_for_ = want;
                    cv_.wait_for(lock, linger, [&] { return stopping_ || queue_.size() >= want; });
                    lingering_for_ = 0;
                }
            }
            // NOTE: at most max_group: a group's deliveries are open at once (a descriptor and
            // their paths each), and 1,000 sessions ending together would hold them all.
            const auto n = std::min(queue_.size(), max_group);
            group.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.begin() + n));
            queue_.erase(queue_.begin(), queue_.begin() + n);
            ++counts_.groups;
            counts_.requests += group.size();
            counts_.largest_group = std::max(counts_.largest_group, group.size());
        }
        // The group's mailboxes (the first of each request's, a few distinct at most), for
        // the stores' prepare_delivery() once the group is done.
        hints.clear();
        try {
            for (const auto& j : group) {
                const auto& rq = j->request;
                if (rq.mailboxes.empty() || !rq.storage || hints.size() >= max_hints) continue;
                if (std::none_of(hints.begin(), hints.end(), [&](const hint& h) {
                        return h.storage == rq.storage && h.mailbox.front() == rq.mailboxes.front();
                    }))
                    hints.push_back({rq.storage, {rq.mailboxes.front()}});
            }
        } catch (...) {  // out of memory: no hints this time
            hints.clear();
        }
        const auto started = std::chrono::steady_clock::now();
        try {
            commit_group(group);
        } catch (...) {
            // NOTE: only an allocation can fail here (the store's calls are guarded): every
            // caller not yet resumed gets an error rather than waiting for ever.
            for (auto& j : group) {
                if (!j) continue;
                try {
                    j->complete({make_error_code(errc::io_error), "out of memory in the committer"});
                } catch (...) {
                }
            }
        }
        last_commit_ = std::chrono::steady_clock::now() - started;
        usual_group_ = 0.75 * usual_group_ + 0.25 * static_cast<double>(group.size());
        peak_group_ = std::max(static_cast<double>(group.size()), 0.9 * peak_group_);
        group.clear();
        // NOTE: after the callers were resumed, and only with nothing queued: a lone client's
        // next message is what a store can prepare for (the Maildir store's own thread then
        // makes its tmp/ file while the client sends it). With requests queued the committer
        // is the bottleneck and deliveries begin right here anyway: files made ahead then only
        // cost CPU (20 sessions: about a fifth more per message, for no gain, when every hint
        // was given). A hint does no slow work here.
        bool idle = false;
        {
            std::lock_guard lock(mutex_);
            idle = queue_.empty();
        }
        if (idle)
            for (auto& h : hints) {
                try {
                    h.storage->prepare_delivery(h.mailbox);
                } catch (...) {  // a hint: nothing depends on it
                }
            }
        hints.clear();
    }
}

namespace {

// Runs `f`, turning an exception into an outcome (a store's code may throw: bad_alloc).
template <class F>
bool guarded(commit_outcome& o, F&& f) {
    try {
        f();
        return true;
    } catch (const std::exception& e) {
        o.exception = e.what();
    } catch (...) {
        o.exception = "unknown exception";
    }
    o.error = make_error_code(errc::io_error);
    return false;
}

}  // namespace

void delivery_committer::commit_group(std::vector<std::unique_ptr<job>>& group) {
    std::vector<commit_outcome> outcomes(group.size());
    std::vector<delivery*> batch;
    std::vector<std::size_t> of;  // batch[k] is group[of[k]]'s delivery
    batch.reserve(group.size());
    of.reserve(group.size());
    // Each message's last octets, written as the pool would have: begin, write; a failure
    // here fails that message only.
    for (std::size_t i = 0; i < group.size(); ++i) {
        auto& rq = group[i]->request;
        auto& o = outcomes[i];
        const bool ok = guarded(o, [&] {
            if (!rq.out) {
                auto d = rq.storage->begin_delivery(rq.mailboxes);
                if (!d) {
                    o.error = d.error();
                    return;
                }
                rq.out = std::move(*d);
            }
            if (!rq.octets.empty())
                if (auto w = rq.out->write(rq.octets); !w) o.error = w.error();
            std::string().swap(rq.octets);
        });
        if (!ok || o.error) continue;
        batch.push_back(rq.out.get());
        of.push_back(i);
    }
    // One commit for the rest. commit_together() needs the deliveries of one store: a group
    // with several (two servers sharing this committer) is split by store, in order.
    std::size_t from = 0;
    while (from < batch.size()) {
        const auto* s = group[of[from]]->request.storage.get();
        std::size_t to = from + 1;
        while (to < batch.size() && group[of[to]]->request.storage.get() == s) ++to;
        std::span<delivery* const> part(batch.data() + from, to - from);
        commit_outcome failure;
        std::vector<result<void>> results;
        if (guarded(failure, [&] { results = commit_together(part); })) {
            for (std::size_t k = from; k < to; ++k)
                if (!results[k - from]) outcomes[of[k]].error = results[k - from].error();
        } else {
            for (std::size_t k = from; k < to; ++k) outcomes[of[k]] = failure;
        }
        from = to;
    }
    for (std::size_t i = 0; i < group.size(); ++i) {
        auto& rq = group[i]->request;
        if (rq.out) {
            // NOTE: a delivery not committed (a failed write, an exception) is aborted by its
            // destructor; one that commit_together() finished is only freed.
            rq.out.reset();
        }
        rq.storage.reset();
        auto j = std::move(group[i]);  // completed once: a throw below leaves no second try
        j->complete(std::move(outcomes[i]));
    }
}

namespace {

// The committer an io_context owns: its shutdown (the io_context's destruction) joins the
// thread before the io_context's queues are torn down, so a group still committing then posts
// its completions into a live io_context, whose shutdown then destroys them.
class committer_service final : public asio::execution_context::service {
public:
    using key_type = committer_service;
    static asio::execution_context::id id;
    explicit committer_service(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}
    delivery_committer& get() {
        std::call_once(once_, [&] { committer_ = std::make_unique<delivery_committer>(); });
        return *committer_;
    }

private:
    void shutdown() override { committer_.reset(); }
    std::once_flag once_;
    std::unique_ptr<delivery_committer> committer_;
};

asio::execution_context::id committer_service::id;

}  // namespace

delivery_committer& delivery_committer::of(asio::io_context& io) { return asio::use_service<committer_service>(io).get(); }

asio::awaitable<commit_outcome> delivery_committer::commit(commit_request request) {
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(commit_outcome)>(
        [this](auto handler, commit_request rq) {
            using handler_type = decltype(handler);
            using executor_type = asio::associated_executor_t<handler_type>;
            struct waiter final : job {
                waiter(handler_type h)
                    : handler(std::move(h)), work(asio::make_work_guard(asio::get_associated_executor(handler))) {}
                handler_type handler;
                asio::executor_work_guard<executor_type> work;  // the caller's io_context keeps running
                void complete(commit_outcome outcome) override {
                    auto ex = work.get_executor();
                    asio::post(ex, [h = std::move(handler), o = std::move(outcome)]() mutable { std::move(h)(std::move(o)); });
                    work.reset();
                }
            };
            auto w = std::make_unique<waiter>(std::move(handler));
            w->request = std::move(rq);
            submit(std::move(w));
        },
        asio::use_awaitable, std::move(request));
}

}  // namespace mailnet::net
