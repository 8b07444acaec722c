// sinks.cpp: the Maildir and stdout sinks of `pop3c fetch` (DESIGN.md "On disk": Delivery; a
// message is counted as stored only after flush(), before the server deletes it, RFC 1939 6).
#include "sinks.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mailnet/store/store.hpp"

namespace mailnet::pop3c {

sink_message::~sink_message() = default;
message_sink::~message_sink() = default;

namespace {

// ---------------------------------------------------------------------------------------------
// Maildir: libmailnet's delivery does the writing, naming, fsync and tmp/ -> new/; the sink only
// decides on which thread a delivery's commit() runs. Committing on a small pool lets several
// commits wait on the disk at once: each message's own fsync overlaps the others', and the
// store's group commit covers all of them with one fsync of new/ per round.

class maildir_sink;

class maildir_message final : public sink_message {
public:
    maildir_message(maildir_sink& sink, std::unique_ptr<delivery> d) : sink_(sink), delivery_(std::move(d)) {}
    ~maildir_message() override { abort(); }

    result<void> write(std::string_view octets) override {
        if (!delivery_) return unexpected(errc::bad_input);  // completed or aborted
        auto r = delivery_->write(octets);
        if (!r) abort();  // the store's delivery can only be aborted after a failed write
        return r;
    }
    result<void> complete() override;
    void abort() noexcept override {
        if (delivery_) delivery_->abort();
        delivery_.reset();
    }

private:
    maildir_sink& sink_;
    std::unique_ptr<delivery> delivery_;  // null once completed or aborted
};

class maildir_sink final : public message_sink {
public:
    maildir_sink(std::unique_ptr<store> folder, log_sink log, maildir_sink_options options)
        : folder_(std::move(folder)), log_(std::move(log)), options_(std::move(options)) {
        if (options_.max_outstanding == 0) options_.max_outstanding = 1;
    }

    // Starts the pool; false (with the threads already started stopped) if a thread could not be.
    result<void> start() {
        try {
            for (unsigned i = 0; i < options_.commit_threads; ++i) threads_.emplace_back([this] { work(); });
        } catch (const std::system_error& e) {
            stop();
            return unexpected(e.code());
        }
        return {};
    }

    ~maildir_sink() override { stop(); }

    result<std::unique_ptr<sink_message>> begin(std::uint64_t /*size_hint*/) override {
        {
            // A batch that already failed takes no more: flush() will fail it anyway, and a
            // full disk should stop the fetch, not let it run through the whole mailbox.
            std::lock_guard lock(mutex_);
            if (error_) return unexpected(error_);
        }
        auto d = folder_->begin_delivery(mailboxes_);
        if (!d) return unexpected(d.error());  // logged by the store
        return std::unique_ptr<sink_message>(std::make_unique<maildir_message>(*this, std::move(*d)));
    }

    result<void> flush() override {
        std::unique_lock lock(mutex_);
        idle_.wait(lock, [&] { return outstanding_ == 0; });
        const std::error_code e = std::exchange(error_, {});
        pending_ = 0;
        if (e) return unexpected(e);
        return {};
    }

    std::size_t pending() const override {
        std::lock_guard lock(mutex_);
        return pending_;
    }

    // complete() of a message: its commit() queued for the pool (or run here without one).
    result<void> submit(std::unique_ptr<delivery> d) {
        if (threads_.empty()) {
            auto r = d->commit();
            std::lock_guard lock(mutex_);
            ++pending_;
            if (!r && !error_) error_ = r.error();
            return r;
        }
        std::unique_lock lock(mutex_);
        idle_.wait(lock, [&] { return outstanding_ < options_.max_outstanding || error_; });
        if (error_) {
            d->abort();
            return unexpected(error_);
        }
        queue_.push_back(std::move(d));
        ++outstanding_;
        ++pending_;
        lock.unlock();
        work_.notify_one();
        return {};
    }

private:
    void work() {
        std::unique_lock lock(mutex_);
        for (;;) {
            work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stopping, and nothing left to commit
            std::unique_ptr<delivery> d = std::move(queue_.front());
            queue_.pop_front();
            lock.unlock();
            std::error_code e;
            try {
                if (auto r = d->commit(); !r) e = r.error();  // a failure is logged by the store
            } catch (const std::exception& ex) {
                // NOTE: the store reports failures as results; a throw (bad_alloc) still must
                // fail the batch, never be taken for a stored message.
                log_(log_level::error, std::string("maildir sink: commit threw: ") + ex.what());
                e = make_error_code(errc::io_error);
            }
            d.reset();  // aborts what was not committed: no tmp/ file stays
            lock.lock();
            if (e && !error_) error_ = e;
            --outstanding_;
            idle_.notify_all();
        }
    }

    // Lets the pool commit what was completed (a message completed but never flushed may
    // still land: as after a failed flush, a duplicate at worst), then joins it.
    void stop() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        work_.notify_all();
        for (auto& t : threads_) t.join();
        threads_.clear();
    }

    std::unique_ptr<store> folder_;
    const std::vector<std::string> mailboxes_{"fetched"};  // any name: a folder is one mailbox
    log_sink log_;
    maildir_sink_options options_;
    std::vector<std::thread> threads_;

    mutable std::mutex mutex_;         // guards everything below
    std::condition_variable work_;     // queue_ has work, or stopping_
    std::condition_variable idle_;     // outstanding_ fell (room for submit, or none for flush)
    std::deque<std::unique_ptr<delivery>> queue_;  // completed, waiting for a thread
    std::size_t outstanding_ = 0;      // queued or committing
    std::size_t pending_ = 0;          // completed since the last flush
    std::error_code error_;            // the first failure since the last flush
    bool stopping_ = false;
};

result<void> maildir_message::complete() {
    if (!delivery_) return unexpected(errc::bad_input);
    return sink_.submit(std::move(delivery_));
}

// ---------------------------------------------------------------------------------------------
// stdout: octets pass straight through.

class stream_sink;

class stream_message final : public sink_message {
public:
    explicit stream_message(stream_sink& sink) : sink_(sink) {}
    result<void> write(std::string_view octets) override;
    result<void> complete() override;
    // NOTE: what was written is already on its way to the reader: nothing can take it back.
    // The caller keeps the message on the server, so a later fetch sends it whole again.
    void abort() noexcept override { done_ = true; }

private:
    stream_sink& sink_;
    bool done_ = false;
};

class stream_sink final : public message_sink {
public:
    explicit stream_sink(std::FILE* out) : out_(out) {}

    result<std::unique_ptr<sink_message>> begin(std::uint64_t /*size_hint*/) override {
        if (error_) return unexpected(error_);  // the batch failed: flush() says so
        return std::unique_ptr<sink_message>(std::make_unique<stream_message>(*this));
    }

    result<void> flush() override {
        errno = 0;
        if (std::fflush(out_) != 0) fail();
        // A regular file (`--stdout > FILE`) is made durable as the other sinks are; a pipe
        // or terminal has handed the octets over once fflush() returns.
        const int fd = ::fileno(out_);
        struct stat st{};
        if (!error_ && fd >= 0 && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ::fsync(fd) != 0) fail();
        pending_ = 0;
        if (error_) return unexpected(std::exchange(error_, {}));
        return {};
    }

    std::size_t pending() const override { return pending_; }

    result<void> write(std::string_view octets) {
        if (error_) return unexpected(error_);
        errno = 0;
        if (!octets.empty() && std::fwrite(octets.data(), 1, octets.size(), out_) != octets.size()) fail();
        if (error_) return unexpected(error_);
        return {};
    }

    void completed() { ++pending_; }

private:
    // Records the failure of the last call: it fails the whole batch (what was buffered with
    // it is lost too), and the stream is cleared for the next one.
    void fail() {
        const std::error_code e = errno != 0 ? last_system_error() : make_error_code(errc::io_error);
        std::clearerr(out_);
        if (!error_) error_ = e;
    }

    std::FILE* out_;
    std::size_t pending_ = 0;
    std::error_code error_;  // the first failure since the last flush
};

result<void> stream_message::write(std::string_view octets) {
    if (done_) return unexpected(errc::bad_input);
    auto r = sink_.write(octets);
    if (!r) done_ = true;
    return r;
}

result<void> stream_message::complete() {
    if (done_) return unexpected(errc::bad_input);
    done_ = true;
    sink_.completed();
    return {};
}

}  // namespace

result<std::unique_ptr<message_sink>> open_maildir_sink(const std::filesystem::path& dir, log_sink log,
                                                        maildir_sink_options options) {
    if (!log) log = null_log();
    maildir_options o;
    o.root = dir;
    o.hostname = options.hostname;
    o.log = log;
    auto folder = open_maildir_folder(std::move(o));
    if (!folder) return unexpected(folder.error());  // logged by the store
    auto sink = std::make_unique<maildir_sink>(std::move(*folder), log, std::move(options));
    if (auto started = sink->start(); !started) {
        log(log_level::error, "maildir sink: cannot start its commit threads: " + started.error().message());
        return unexpected(started.error());
    }
    return std::unique_ptr<message_sink>(std::move(sink));
}

std::unique_ptr<message_sink> make_stream_sink(std::FILE* out) { return std::make_unique<stream_sink>(out); }

}  // namespace mailnet::pop3c
