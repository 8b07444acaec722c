// sinks.cpp: the Maildir, mbox (mboxrd) and stdout sinks of `pop3c fetch` (DESIGN.md "On disk":
// Delivery); a message counts as stored only after flush(), before the server deletes it (RFC 1939 6).
#include "sinks.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <optional>
#include <unordered_set>
#include <utility>
#include <vector>

#include "mailnet/store/store.hpp"
#include "mailnet/posix_io.hpp"

namespace mailnet::pop3c {

sink_message::~sink_message() = default;
message_sink::~message_sink() = default;

namespace {

// ---------------------------------------------------------------------------------------------
// Maildir: libmailnet's delivery does the writing, naming, fsync and tmp/ -> new/; the sink only
// decides when and on which thread the deliveries are committed. Completed messages are
// committed in groups (mailnet::commit_together): one data round for all their tmp/ files (one
// syncfs where the store trusts the file system), then all the links, then one fsync of new/,
// instead of one data round and one new/ fsync per handful of messages. A committer thread
// takes whatever completed meanwhile as the next group, so retrieval goes on while a group is
// made durable.

class maildir_sink;

constexpr std::size_t stock_max = 16;                      // tmp/ files opened ahead at most without expect()
constexpr std::size_t gather_target = 128;                 // messages a round waits for at most
constexpr std::chrono::microseconds gather_window{2000};   // and how long

// Set on the opener's thread: what the store logs there is not said. A file opened only in
// anticipation that cannot be made is no error of its own: begin() then opens the message's
// file itself, and the store says why if that fails too (one line for one failure, none when
// the disk had room again).
thread_local bool quiet_thread = false;

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
    std::string locator() const override { return locator_; }

private:
    maildir_sink& sink_;
    std::unique_ptr<delivery> delivery_;  // null once completed or aborted
    std::string locator_;                 // the delivery's name(), read before its commit
};

class maildir_sink final : public message_sink {
public:
    maildir_sink(std::unique_ptr<store> folder, std::filesystem::path dir, log_sink log, maildir_sink_options options)
        : folder_(std::move(folder)), dir_(std::move(dir)), log_(std::move(log)), options_(std::move(options)) {
        if (options_.max_outstanding == 0) options_.max_outstanding = 1;
    }

    // Starts the committer and the opener; an error if a thread could not be started.
    result<void> start() {
        if (!options_.commit_in_background) return {};
        try {
            committer_ = std::thread([this] { work(); });
            opener_ = std::thread([this] { open_ahead(); });
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
        if (opener_.joinable()) {
            // A file the opener made ready, if there is one and its tmp/ is still the one it was
            // made in (one removed meanwhile is made again by the store's own begin below; the
            // files opened ahead in the old one could never be linked).
            const auto here = tmp_identity();  // outside the lock: the opener and the committer go on
            std::unique_lock lock(mutex_);
            ++begun_;
            if (!stock_.empty()) {
                if (here && stock_.front().second == *here) {
                    auto d = std::move(stock_.front().first);
                    stock_.pop_front();
                    lock.unlock();
                    stock_cv_.notify_one();
                    return std::unique_ptr<sink_message>(std::make_unique<maildir_message>(*this, std::move(d)));
                }
                auto stale = std::exchange(stock_, {});
                lock.unlock();
                stale.clear();  // aborted, outside the lock
            } else {
                lock.unlock();
            }
            stock_cv_.notify_one();
        }
        auto d = folder_->begin_delivery(mailboxes_);
        if (!d) return unexpected(d.error());  // logged by the store
        return std::unique_ptr<sink_message>(std::make_unique<maildir_message>(*this, std::move(*d)));
    }

    result<void> flush() override {
        // Held messages (defer_commits) are committed now, as one group.
        if (!held_.empty()) {
            auto held = std::exchange(held_, {});
            if (!committer_.joinable()) {
                commit_group(held);
            } else {
                std::lock_guard lock(mutex_);
                outstanding_ += held.size();
                for (auto& d : held) queue_.push_back(std::move(d));
                work_.notify_one();
            }
        }
        std::unique_lock lock(mutex_);
        wait_idle(lock);
        const std::error_code e = std::exchange(error_, {});
        pending_ = 0;
        if (e) return unexpected(e);
        return {};
    }

    // With defer_commits and a committer, the held batch goes to the committer and
    // finish_flush() waits for it; new messages are held for the next batch meanwhile (in this
    // mode nothing else reaches the committer, so its outcome and error_ are this batch's).
    void start_flush() override {
        if (!options_.defer_commits || !committer_.joinable()) return message_sink::start_flush();
        auto held = std::exchange(held_, {});
        std::lock_guard lock(mutex_);
        pending_ = 0;
        outstanding_ += held.size();
        for (auto& d : held) queue_.push_back(std::move(d));
        work_.notify_one();
        overlapped_ = true;
    }

    bool flushes_in_background() const override { return options_.defer_commits && committer_.joinable(); }

    result<void> finish_flush() override {
        if (!std::exchange(overlapped_, false)) return message_sink::finish_flush();
        std::unique_lock lock(mutex_);
        wait_idle(lock);
        const std::error_code e = std::exchange(error_, {});
        if (e) return unexpected(e);
        return {};
    }

    std::size_t pending() const override {
        std::lock_guard lock(mutex_);
        return pending_;
    }

    void expect(std::size_t messages) override {
        {
            std::lock_guard lock(mutex_);
            expected_until_ = begun_ + messages;
        }
        stock_cv_.notify_one();
    }

    void expect_fewer(std::size_t messages) override {
        std::deque<std::pair<std::unique_ptr<delivery>, std::pair<dev_t, ino_t>>> extra;
        {
            std::lock_guard lock(mutex_);
            if (!expected_until_) return;
            const std::size_t left = *expected_until_ > begun_ ? *expected_until_ - begun_ : 0;
            *expected_until_ -= std::min(messages, left);
            while (stock_.size() > stock_wanted()) {
                extra.push_back(std::move(stock_.back()));
                stock_.pop_back();
            }
        }
        extra.clear();  // aborted (removed), outside the lock
    }

    // A name's file is in new/ (or in cur/, moved there by a mail reader meanwhile). Both are
    // read once, on the first call: only a run that was cut off asks, right at its start.
    // A run cut off mid-flush may have linked files into new/ without the fsync of new/ that
    // makes the links durable (their data is: a group's data round comes before any link), so
    // new/ and cur/ are fsync'd first; if that fails, nothing counts as held (fetched again:
    // a duplicate, never a loss after the DELE that holding leads to).
    bool holds(std::string_view locator) override {
        if (locator.empty()) return false;
        if (!names_) {
            names_.emplace();
            bool durable = true;
            for (const char* sub : {"new", "cur"}) {
                const int fd = ::open((dir_ / sub).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0) {
                    if (errno != ENOENT) durable = false;
                    continue;
                }
                if (::fsync(fd) != 0) durable = false;
                ::close(fd);
            }
            if (!durable) return false;
            for (const char* sub : {"new", "cur"}) {
                std::error_code ec;
                for (const auto& e : std::filesystem::directory_iterator(dir_ / sub, ec)) {
                    const std::string n = e.path().filename().string();
                    // "<secs>.M<usecs>P<pid>Q<n>" is all before the second '.'.
                    const auto first = n.find('.');
                    const auto second = first == n.npos ? n.npos : n.find('.', first + 1);
                    if (second != n.npos) names_->insert(n.substr(0, second));
                }
            }
        }
        return names_->contains(std::string(locator));
    }

    // complete() of a message: with defer_commits held until flush(), so nothing of a batch
    // is visible in new/ before the caller recorded it (its locator) as pending; otherwise
    // handed to the committer (or committed here without one).
    result<void> completed(std::unique_ptr<delivery> d) {
        std::unique_lock lock(mutex_);
        if (error_) {
            d->abort();
            return unexpected(error_);
        }
        ++pending_;
        if (options_.defer_commits) {
            lock.unlock();
            held_.push_back(std::move(d));
            return {};
        }
        if (!committer_.joinable()) {
            lock.unlock();
            std::vector<std::unique_ptr<delivery>> one;
            one.push_back(std::move(d));
            commit_group(one);
            lock.lock();
            if (error_) return unexpected(error_);
            return {};
        }
        if (outstanding_ >= options_.max_outstanding) {
            ++waiting_;  // the committer gathers no longer
            work_.notify_one();
            idle_.wait(lock, [&] { return outstanding_ < options_.max_outstanding || error_; });
            --waiting_;
        }
        if (error_) {
            d->abort();
            return unexpected(error_);
        }
        queue_.push_back(std::move(d));
        ++outstanding_;
        // The committer is woken for the first of a group and once a group is worth a round; in
        // between it gathers (work()), so each message costs it no wake-up.
        const bool wake = queue_.size() == 1 || queue_.size() == gather_target;
        lock.unlock();
        if (wake) work_.notify_one();
        return {};
    }

private:
    // Commits `group` together; the first failure is kept for flush(). Any thread, no lock held.
    void commit_group(std::vector<std::unique_ptr<delivery>>& group) {
        std::error_code e;
        try {
            std::vector<delivery*> ds;
            for (auto& d : group) ds.push_back(d.get());
            for (const auto& r : commit_together(ds))  // a failure is logged by the store
                if (!r && !e) e = r.error();
        } catch (const std::exception& ex) {
            // NOTE: the store reports failures as results; a throw (bad_alloc) still must
            // fail the batch, never be taken for a stored message.
            log_(log_level::error, std::string("maildir sink: commit threw: ") + ex.what());
            e = make_error_code(errc::io_error);
        }
        group.clear();  // aborts what was not committed: no tmp/ file stays
        std::lock_guard lock(mutex_);
        if (e && !error_) error_ = e;
    }

    void work() {
        std::unique_lock lock(mutex_);
        for (;;) {
            work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stopping, and nothing left to commit
            // A round costs two device flushes (the data, then new/) whatever its size: a small
            // group waits a moment for more, unless someone waits for the round. (Deferred
            // commits come as whole batches, flushed by the caller: no wait.)
            if (!options_.defer_commits)
                work_.wait_until(lock, std::chrono::steady_clock::now() + gather_window,
                                 [&] { return stopping_ || waiting_ > 0 || queue_.size() >= gather_target; });
            // Everything that completed while the last group was being committed is the next.
            std::vector<std::unique_ptr<delivery>> group;
            group.reserve(queue_.size());
            for (auto& d : queue_) group.push_back(std::move(d));
            queue_.clear();
            const std::size_t n = group.size();
            lock.unlock();
            commit_group(group);
            lock.lock();
            outstanding_ -= n;
            idle_.notify_all();
        }
    }

    // The opener: keeps tmp/ files open ahead of begin() (creating a file is the costliest
    // step of a small message, and the thread that reads the server need not wait for it), as
    // many as stock_wanted(); the ones never used are aborted (removed) when the sink stops.
    // After a failure it makes no more: begin() then opens its own files and reports the error
    // itself.
    void open_ahead() {
        quiet_thread = true;
        std::unique_lock lock(mutex_);
        for (;;) {
            stock_cv_.wait(lock, [&] { return stopping_ || (stock_.size() < stock_wanted() && !open_failed_); });
            if (stopping_) return;
            lock.unlock();
            try {
                const auto where = tmp_identity();
                auto d = folder_->begin_delivery(mailboxes_);
                lock.lock();
                if (!d) {
                    open_failed_ = true;
                    continue;
                }
                // No tmp/ before this open: the first message was making the Maildir. The file
                // is dropped (where it lies is not known for sure), the next one kept. One no
                // longer wanted (begin() opened its own meanwhile, or expect_fewer()) too.
                if (!where || stopping_ || stock_.size() >= stock_wanted()) {
                    lock.unlock();
                    d->reset();  // aborted (removed), outside the lock
                    lock.lock();
                    continue;
                }
                stock_.push_back({std::move(*d), *where});
            } catch (const std::exception&) {
                // NOTE: bad_alloc; begin() opens its own files from now on and reports what fails.
                if (!lock.owns_lock()) lock.lock();
                open_failed_ = true;
            }
        }
    }

    // How many files the opener keeps ready (lock held): as many as the messages expect()
    // announced that are still to begin, up to options_.open_ahead (none once all began);
    // without expect(), or past what it announced, no more than begun so far, up to stock_max
    // (a short fetch makes few in vain).
    std::size_t stock_wanted() const {
        if (expected_until_ && *expected_until_ >= begun_) return std::min(*expected_until_ - begun_, options_.open_ahead);
        return std::min({begun_, stock_max, options_.open_ahead});
    }

    // The device and inode of the Maildir's tmp/ now; nothing if it cannot be read.
    std::optional<std::pair<dev_t, ino_t>> tmp_identity() const {
        struct stat st{};
        if (::stat((dir_ / "tmp").c_str(), &st) != 0) return std::nullopt;
        return std::pair{st.st_dev, st.st_ino};
    }

    // Waits until everything handed to the committer was committed (lock held).
    void wait_idle(std::unique_lock<std::mutex>& lock) {
        if (outstanding_ == 0) return;
        ++waiting_;
        work_.notify_one();
        idle_.wait(lock, [&] { return outstanding_ == 0; });
        --waiting_;
    }

    // Lets the committer commit what was handed to it (a message completed but never flushed
    // may still land: as after a failed flush, a duplicate at worst), then joins it. Held
    // messages (defer_commits, never flushed) are aborted: they were never recorded.
    void stop() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        work_.notify_all();
        stock_cv_.notify_all();
        if (opener_.joinable()) opener_.join();
        if (committer_.joinable()) committer_.join();
        stock_.clear();  // aborted: their tmp/ files are removed
    }

    std::unique_ptr<store> folder_;
    std::filesystem::path dir_;  // the Maildir: holds() looks in its new/ and cur/
    const std::vector<std::string> mailboxes_{"fetched"};  // any name: a folder is one mailbox
    log_sink log_;
    maildir_sink_options options_;
    std::thread committer_;

    mutable std::mutex mutex_;         // guards everything below but held_
    std::condition_variable work_;     // queue_ has work, or stopping_
    std::condition_variable idle_;     // outstanding_ fell (room for completed(), or none for flush)
    std::vector<std::unique_ptr<delivery>> queue_;  // completed, waiting for the committer
    std::size_t outstanding_ = 0;      // queued or being committed
    std::size_t pending_ = 0;          // completed since the last flush
    std::error_code error_;            // the first failure since the last flush
    bool stopping_ = false;
    std::size_t waiting_ = 0;          // threads waiting for the committer (a flush, a full queue)
    std::thread opener_;               // open_ahead()
    std::condition_variable stock_cv_; // stock_ fell, begun_ rose, expect(), or stopping_
    // tmp/ files opened ahead, for begin(), each with the identity of the tmp/ it was made in
    std::deque<std::pair<std::unique_ptr<delivery>, std::pair<dev_t, ino_t>>> stock_;
    std::size_t begun_ = 0;            // begin() calls so far
    std::optional<std::size_t> expected_until_;  // expect(): begun_ will reach this
    bool open_failed_ = false;         // the opener failed once and makes no more
    std::optional<std::unordered_set<std::string>> names_;  // holds(): what new/ and cur/ held
    std::vector<std::unique_ptr<delivery>> held_;  // defer_commits: completed, committed at flush()
    bool overlapped_ = false;  // start_flush() handed a held batch to the committer
};

result<void> maildir_message::complete() {
    if (!delivery_) return unexpected(errc::bad_input);
    // The octets it holds back written, its buffer let go of, before it waits for a commit.
    if (auto r = delivery_->end_of_message(); !r) {
        abort();
        return r;
    }
    locator_ = delivery_->name();
    return sink_.completed(std::move(delivery_));
}

// ---------------------------------------------------------------------------------------------
// mbox (mboxrd): one file, appended to under lock. Holding batches (pop3c fetch with a state
// file), a batch's messages are written to a spool first (STATE.spool: a header, then the
// messages) and appended to the mbox only by flush(), after the caller recorded their locators
// as pending: a run killed while it retrieves leaves nothing in the mbox that no record names,
// and one killed while it appends leaves the spool whose header lets the next run's recover()
// cut the part appended back (docs/pop3c.md). A failed or aborted message is cut off again.

constexpr std::size_t mbox_write_octets = 64 * 1024;   // buffered before a write()
constexpr std::size_t mbox_header_octets = 64 * 1024;  // where the Return-Path is looked for
constexpr std::size_t max_sender_octets = 256;         // RFC 5321 4.5.3.1.3: a path's limit
constexpr std::chrono::milliseconds lock_retry{50};

// The asctime() form of a time in UTC, "Thu Jan  1 00:00:00 1970" (locale-independent).
std::string asctime_utc(std::chrono::system_clock::time_point t) {
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const std::time_t secs = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    if (::gmtime_r(&secs, &tm) == nullptr) return "Thu Jan  1 00:00:00 1970";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s %s %2d %02d:%02d:%02d %d", days[tm.tm_wday % 7], months[tm.tm_mon % 12],
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_year + 1900);
    return buf;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

// The SENDER of a From_ line: the address of the first Return-Path field of `header` (whole
// lines of the message's header), or MAILER-DAEMON when there is none, it is the null path
// `<>`, or it could not stand in a From_ line (a space or control octet, or too long).
std::string mbox_sender(std::string_view header) {
    const std::string fallback = "MAILER-DAEMON";
    std::string value;
    bool found = false;
    while (!header.empty()) {
        const std::size_t nl = header.find('\n');
        std::string_view line = header.substr(0, nl);
        header.remove_prefix(nl == header.npos ? header.size() : nl + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (found) {
            if (line.empty() || (line.front() != ' ' && line.front() != '\t')) break;
            value += line;  // RFC 5322 2.2.3: unfolding
            continue;
        }
        const std::size_t colon = line.find(':');
        if (colon == line.npos || line.empty() || line.front() == ' ' || line.front() == '\t') continue;
        std::string_view name = line.substr(0, colon);
        while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);  // obs-optional
        if (!iequals(name, "Return-Path")) continue;
        found = true;
        value = line.substr(colon + 1);
    }
    if (!found) return fallback;
    std::string_view v = value;
    if (const std::size_t lt = v.find('<'); lt != v.npos) {
        const std::size_t gt = v.find('>', lt);
        if (gt == v.npos) return fallback;
        v = v.substr(lt + 1, gt - lt - 1);
    } else {
        while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
        while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    }
    if (v.empty() || v.size() > max_sender_octets) return fallback;
    for (const char c : v) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7F) return fallback;  // UTF-8 (RFC 6531) stays
    }
    return std::string(v);
}

// mboxrd quoting: each line matching ^>*From gets one more '>', however the input is cut. A
// line's leading '>'s and a partial "From " are held as counts until the line shows which it is.
class from_quoter {
public:
    void feed(std::string_view in, std::string& out) {
        std::size_t i = 0;
        while (i < in.size()) {
            if (at_line_start_) {
                const char c = in[i];
                if (matched_ == 0 && c == '>') {
                    ++quotes_;
                    ++i;
                    continue;
                }
                if (c == from_[matched_]) {
                    ++i;
                    if (++matched_ == from_.size()) {
                        out += '>';
                        release(out);
                    }
                    continue;
                }
                release(out);  // not a From_ line: what was held goes out as it was, then `c`
            }
            const std::size_t nl = in.find('\n', i);
            const std::size_t end = nl == in.npos ? in.size() : nl + 1;
            out.append(in.substr(i, end - i));
            i = end;
            at_line_start_ = nl != in.npos;
        }
    }

    /// The message ended: a line cut short while held ("From" at the very end) goes out as is.
    void finish(std::string& out) {
        if (at_line_start_) release(out);
    }

private:
    void release(std::string& out) {
        out.append(quotes_, '>');
        out.append(from_.substr(0, matched_));
        quotes_ = matched_ = 0;
        at_line_start_ = false;
    }

    static constexpr std::string_view from_ = "From ";
    bool at_line_start_ = true;
    std::size_t quotes_ = 0;   // '>'s held at the start of the line
    std::size_t matched_ = 0;  // octets of "From " held after them
};

// FNV-1a (64 bits) of the octets a message put into the file: enough to tell, after a crash,
// whether the octets at its place are still the ones it wrote.
constexpr std::uint64_t fnv_offset = 14695981039346656037ull;
std::uint64_t fnv1a(std::uint64_t h, std::string_view octets) {
    for (const char c : octets) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ull;
    }
    return h;
}

class mbox_sink;

class mbox_message final : public sink_message {
public:
    mbox_message(mbox_sink& sink, off_t spool_start, off_t start, std::string from_line_prefix, std::string date)
        : sink_(sink), spool_start_(spool_start), start_(start), prefix_(std::move(from_line_prefix)),
          date_(std::move(date)) {}
    ~mbox_message() override { abort(); }

    result<void> write(std::string_view octets) override;
    result<void> complete() override;
    void abort() noexcept override;
    std::string locator() const override;

private:
    void start_body(bool at_end);
    result<void> drain(std::size_t at_least);
    result<void> fail(std::error_code e);

    mbox_sink& sink_;
    const off_t spool_start_;  // where it starts in the spool (not holding: the mbox): where a failure cuts back to
    const off_t start_;        // where it will start in the mbox once flushed
    std::string prefix_;  // line ends the file needs before this message's From_ line
    std::string date_;
    bool done_ = false;
    // Until the end of the header (or mbox_header_octets of it) the octets wait in head_: the
    // From_ line, which needs the Return-Path, comes first.
    bool in_header_ = true;
    std::string head_;
    std::size_t line_start_ = 0;  // of the first head_ line not yet known to be whole
    from_quoter quoter_;
    std::string out_;  // quoted octets not yet written
    off_t written_ = 0;  // octets of this message in the file
    char last_ = '\n';  // the message's last octet ('\n' while it is empty)
    std::uint64_t digest_ = fnv_offset;  // of the octets written, for locator()
};

class mbox_sink final : public message_sink {
public:
    // `spool`: the batches' spool (hold_batches), or none; `spool_path`: its name if it has one
    // (its octets then outlive a killed run, for recover()).
    mbox_sink(posix::unique_fd fd, posix::unique_fd spool, std::string spool_path, std::string path, off_t size,
              log_sink log, mbox_sink_options options)
        : fd_(std::move(fd)), spool_(std::move(spool)), spool_path_(std::move(spool_path)), path_(std::move(path)),
          size_(size), flushed_(size), log_(std::move(log)), options_(std::move(options)) {
        struct stat st{};
        spool_stale_ = spool_.get() >= 0 && ::fstat(spool_.get(), &st) == 0 && st.st_size > 0;
    }

    // The named spool goes with the sink: what it holds matters only to a run killed while it
    // appended (it never gets here), or after a batch that could not be cut off again or a
    // recovery that failed (kept for the next run).
    ~mbox_sink() override {
        if (!spool_path_.empty() && !keep_spool_) ::unlink(spool_path_.c_str());
    }

    result<std::unique_ptr<sink_message>> begin(std::uint64_t /*size_hint*/) override {
        if (broken_) return unexpected(errc::io_error);
        if (open_) return unexpected(errc::bad_input);  // one message at a time
        if (auto r = reset_stale_spool(); !r) return unexpected(r.error());
        auto prefix = separator();
        if (!prefix) return unexpected(prefix.error());
        open_ = true;
        const auto now = options_.clock ? options_.clock() : std::chrono::system_clock::now();
        const off_t at = holding() ? spool_end_ : size_;
        return std::unique_ptr<sink_message>(
            std::make_unique<mbox_message>(*this, at, mbox_offset(at), std::move(*prefix), asctime_utc(now)));
    }

    // Holding batches: appends the spool's completed messages to the mbox, then one fsync.
    // Else one fsync of what was appended since the last flush. Between messages only.
    result<void> flush() override {
        if (broken_) return unexpected(errc::io_error);
        if (open_) return unexpected(errc::bad_input);  // abort() the open message first
        const std::size_t batch = std::exchange(pending_, 0);
        if (auto c = copy_done(); !c) {
            if (broken_) {
                keep_spool_ = true;  // the file ends in part of the batch: the next run needs the spool
            } else {
                drop_done();
            }
            return c;
        }
        if (::fsync(fd_.get()) != 0) {
            const auto e = last_system_error();
            log_(log_level::error, "mbox " + path_ + ": fsync: " + e.message());
            // None of the batch counts as stored, so none of it stays: the server keeps it
            // and a later fetch would store it a second time.
            if (batch > 0) cut_back(flushed_);
            return unexpected(e);
        }
        flushed_ = size_;
        return {};
    }

    std::size_t pending() const override { return pending_; }

    // A run killed while it appended a batch (its records pending) may have left part of it
    // at the file's end. The named spool still holds that batch and, in its header, where in
    // the file it began: if the file's octets from there are a proper beginning of the batch
    // (so ours, and nothing was appended since), the file is cut back to where the batch
    // began, and its messages are fetched again. If they are the whole batch, nothing was cut;
    // if they are neither, the file changed since and is left as it is, with a warning.
    result<void> recover(std::span<const std::string> locators) override {
        if (broken_) return {};
        auto r = recover_from_spool(locators);
        if (r && spool_stale_) (void)reset_stale_spool();  // needed by this call only
        return r;
    }

    // "mbox:START:END:DIGEST": the file still holds, at START..END, the octets that digest to it.
    // The file is fsync'd first (once): a run cut off before its flush's fsync left octets
    // that may be in the page cache only; if that fails, nothing counts as held.
    bool holds(std::string_view locator) override {
        if (!synced_) synced_ = ::fsync(fd_.get()) == 0 ? 1 : -1;
        if (synced_ < 0) return false;
        const auto l = parse_locator(locator);
        if (!l) return false;
        struct stat st{};
        if (::fstat(fd_.get(), &st) != 0 || static_cast<unsigned long long>(st.st_size) < l->end) return false;
        std::uint64_t h = fnv_offset;
        std::string buf(64 * 1024, '\0');
        for (unsigned long long at = l->start; at < l->end;) {
            const auto want = static_cast<std::size_t>(std::min<unsigned long long>(buf.size(), l->end - at));
            const ssize_t n = ::pread(fd_.get(), buf.data(), want, static_cast<off_t>(at));
            if (n <= 0) return false;
            h = fnv1a(h, std::string_view(buf.data(), static_cast<std::size_t>(n)));
            at += static_cast<unsigned long long>(n);
        }
        return h == l->digest;
    }

    // For mbox_message: octets of the open message, to the spool (or the mbox).
    result<void> append(std::string_view octets) {
        if (!holding()) {
            if (auto w = posix::write_all(fd_.get(), octets); !w) {
                log_(log_level::error, "mbox " + path_ + ": write: " + w.error().message());
                return w;
            }
            size_ += static_cast<off_t>(octets.size());
            return {};
        }
        if (auto w = pwrite_spool(octets, spool_header + spool_end_); !w) return w;
        spool_end_ += static_cast<off_t>(octets.size());
        return {};
    }
    void completed() {
        done_ = spool_end_;
        ++pending_;
        open_ = false;
    }
    // A message failed or aborted: what was written of it goes (from the spool, or the mbox).
    void dropped(off_t at) {
        open_ = false;
        if (!holding()) {
            cut_back(at);
            return;
        }
        spool_end_ = at;
        (void)::ftruncate(spool_.get(), spool_header + at);  // a failure only leaves octets no one reads
        rewind_spool();
    }

private:
    struct locator_parts {
        unsigned long long start = 0, end = 0, digest = 0;
    };
    static std::optional<locator_parts> parse_locator(std::string_view locator) {
        locator_parts l;
        const std::string loc(locator);
        char tail = 0;
        if (std::sscanf(loc.c_str(), "mbox:%llu:%llu:%llx%c", &l.start, &l.end, &l.digest, &tail) != 3 ||
            l.end < l.start)
            return std::nullopt;
        return l;
    }

    bool holding() const { return options_.hold_batches; }
    std::string spool_name() const { return spool_path_.empty() ? std::string("(unnamed)") : spool_path_; }

    result<void> recover_from_spool(std::span<const std::string> locators) {
        struct stat st{};
        if (::fstat(fd_.get(), &st) != 0) return report_recovery(last_system_error());
        const auto size = static_cast<unsigned long long>(st.st_size);
        auto batch = spool_stale_ ? read_header() : std::nullopt;
        if (batch && (batch->dev != static_cast<unsigned long long>(st.st_dev) ||
                      batch->ino != static_cast<unsigned long long>(st.st_ino))) {
            log_(log_level::warning, "mbox " + path_ + ": the spool " + spool_name() +
                                         " holds a batch an interrupted run was appending to another mbox (device " +
                                         std::to_string(batch->dev) + ", inode " + std::to_string(batch->ino) +
                                         "), which may end in part of it: not looked at");
            return {};
        }
        if (!batch) {
            // No spool to compare with: a file that ends inside a pending message shows a cut.
            for (const auto& loc : locators)
                if (const auto l = parse_locator(loc); l && l->start < size && size < l->end)
                    return warn_left(l->start, size);
            return {};
        }
        if (size == batch->at) return {};                     // nothing of it reached the file
        if (size < batch->at) return warn_left(size, size);  // the file is shorter now: rewritten
        const unsigned long long end = batch->at + batch->octets;
        const auto same = same_octets(batch->at, batch->spool_at, std::min(size, end) - batch->at);
        if (!same) return report_recovery(same.error());
        if (*same && size >= end) return {};  // the whole batch is there
        if (!*same) return warn_left(batch->at, size);
        if (::ftruncate(fd_.get(), static_cast<off_t>(batch->at)) != 0) return report_recovery(last_system_error());
        size_ = flushed_ = static_cast<off_t>(batch->at);
        log_(log_level::info, "mbox " + path_ + ": the part of a batch an interrupted run was appending (" +
                                  std::to_string(size - batch->at) + " octets at " + std::to_string(batch->at) +
                                  ") removed: its messages are fetched again");
        return {};
    }

    result<void> report_recovery(std::error_code e) {
        keep_spool_ = true;  // the next run tries again
        log_(log_level::error, "mbox " + path_ + ": looking for what an interrupted run left: " + e.message());
        return unexpected(e);
    }
    result<void> warn_left(unsigned long long from, unsigned long long size) {
        log_(log_level::warning, "mbox " + path_ + ": it may end in part of a batch an interrupted run was appending (" +
                                     std::to_string(from) + ".." + std::to_string(size) +
                                     "), but the file changed since: left as it is; those messages are fetched again");
        return {};
    }

    // The spool's header (its first spool_header octets): the mbox (device, inode), where in
    // it the batch being appended begins, where in the spool, and how long it is. Written
    // before each append, gone with the rewind after it.
    static constexpr off_t spool_header = 128;
    struct batch_place {
        unsigned long long dev = 0, ino = 0, at = 0, spool_at = 0, octets = 0;
    };
    std::optional<batch_place> read_header() {
        char h[spool_header + 1] = {};
        if (::pread(spool_.get(), h, spool_header, 0) != spool_header) return std::nullopt;
        batch_place b;
        char tail = 0;
        if (std::sscanf(h, "mailnet-spool %llu %llu %llu %llu %llu%c", &b.dev, &b.ino, &b.at, &b.spool_at, &b.octets,
                        &tail) != 6 ||
            tail != '\n')
            return std::nullopt;
        struct stat st{};
        if (::fstat(spool_.get(), &st) != 0 ||
            static_cast<unsigned long long>(st.st_size) < spool_header + b.spool_at + b.octets)
            return std::nullopt;
        return b;
    }
    result<void> write_header(const batch_place& b) {
        char h[spool_header + 1];
        std::memset(h, ' ', sizeof h);
        const int n = std::snprintf(h, sizeof h, "mailnet-spool %llu %llu %llu %llu %llu\n", b.dev, b.ino, b.at,
                                    b.spool_at, b.octets);
        if (n <= 0 || n > spool_header) return unexpected(errc::io_error);
        h[n] = ' ';
        h[spool_header - 1] = '\n';
        return pwrite_spool(std::string_view(h, spool_header), 0);
    }
    result<void> pwrite_spool(std::string_view octets, off_t at) {
        for (std::size_t done = 0; done < octets.size();) {
            const ssize_t n = ::pwrite(spool_.get(), octets.data() + done, octets.size() - done, at + static_cast<off_t>(done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                const auto e = n < 0 ? last_system_error() : make_error_code(errc::io_error);
                log_(log_level::error, "mbox " + path_ + ": writing its spool " + spool_name() + ": " + e.message());
                return unexpected(e);
            }
            done += static_cast<std::size_t>(n);
        }
        return {};
    }

    // Whether the file's octets [from, from + n) are the spool's batch octets from spool_at.
    result<bool> same_octets(unsigned long long from, unsigned long long spool_at, unsigned long long n) {
        std::string a(64 * 1024, '\0'), b(64 * 1024, '\0');
        for (unsigned long long done = 0; done < n;) {
            const auto want = static_cast<std::size_t>(std::min<unsigned long long>(a.size(), n - done));
            const ssize_t k = ::pread(fd_.get(), a.data(), want, static_cast<off_t>(from + done));
            if (k < 0) return unexpected(last_system_error());
            if (k == 0) return false;
            const ssize_t m = ::pread(spool_.get(), b.data(), static_cast<std::size_t>(k),
                                      spool_header + static_cast<off_t>(spool_at + done));
            if (m < 0) return unexpected(last_system_error());
            if (m != k || std::memcmp(a.data(), b.data(), static_cast<std::size_t>(k)) != 0) return false;
            done += static_cast<unsigned long long>(k);
        }
        return true;
    }

    // The named spool still holds what a killed run left until recover() has used it, or the
    // first message begins.
    result<void> reset_stale_spool() {
        if (!spool_stale_) return {};
        if (spool_.get() >= 0 && ::ftruncate(spool_.get(), 0) != 0) {
            const auto e = last_system_error();
            log_(log_level::error, "mbox " + path_ + ": emptying its spool " + spool_name() + ": " + e.message());
            return unexpected(e);
        }
        spool_stale_ = false;
        return {};
    }

    // The place in the mbox the spool's octet `at` gets once flushed (holding; else `at` is
    // the mbox's own place).
    off_t mbox_offset(off_t at) const { return holding() ? size_ + (at - base_) : at; }

    // Appends the spool's completed octets [base_, done_) to the mbox (none when not holding).
    result<void> copy_done() {
        const off_t before = size_;
        if (done_ > base_ && !spool_path_.empty()) {
            struct stat st{};
            if (::fstat(fd_.get(), &st) != 0) return unexpected(last_system_error());
            const batch_place b{static_cast<unsigned long long>(st.st_dev), static_cast<unsigned long long>(st.st_ino),
                                static_cast<unsigned long long>(size_), static_cast<unsigned long long>(base_),
                                static_cast<unsigned long long>(done_ - base_)};
            if (auto h = write_header(b); !h) return h;
        }
        std::string buf(static_cast<std::size_t>(std::min<off_t>(done_ - base_, 256 * 1024)), '\0');
        for (off_t at = base_; at < done_;) {
            const auto want = static_cast<std::size_t>(std::min<off_t>(static_cast<off_t>(buf.size()), done_ - at));
            const ssize_t n = ::pread(spool_.get(), buf.data(), want, spool_header + at);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                const auto e = n < 0 ? last_system_error() : make_error_code(errc::io_error);
                log_(log_level::error, "mbox " + path_ + ": reading its spool " + spool_name() + ": " + e.message());
                cut_back(before);
                return unexpected(e);
            }
            if (auto w = posix::write_all(fd_.get(), std::string_view(buf.data(), static_cast<std::size_t>(n))); !w) {
                log_(log_level::error, "mbox " + path_ + ": write: " + w.error().message());
                cut_back(before);  // none of the batch stays
                return w;
            }
            size_ += n;
            at += n;
        }
        base_ = done_;
        rewind_spool();
        return {};
    }

    // Forgets the completed octets of the spool (a failed flush: none of them is stored).
    void drop_done() {
        spool_end_ = base_ = done_;
        rewind_spool();
    }

    // An empty spool starts again at 0.
    void rewind_spool() {
        if (open_ || base_ != spool_end_ || spool_end_ == 0) return;
        if (::ftruncate(spool_.get(), 0) != 0) {
            // It only grows on, but its header must not outlive its batch (a later run would
            // take a shorter file for part of it, and cut stored mail): blanked, or no more.
            if (!pwrite_spool(std::string(spool_header, ' '), 0)) broken_ = true;
            return;
        }
        base_ = done_ = spool_end_ = 0;
    }

    // The line ends the file needs before a From_ line: none when it is empty or ends in an
    // empty line; else what makes its last line whole and adds the empty line mboxrd expects.
    // A message already waiting in the spool ends in an empty line.
    // NOTE: the file is never rewritten: what it held stays, even the partial last message of
    // another program that crashed (a reader sees it end there, then our messages).
    result<std::string> separator() {
        if (done_ > base_ || size_ == 0) return std::string();
        char tail[2] = {0, 0};
        const off_t from = size_ >= 2 ? size_ - 2 : 0;
        const auto want = static_cast<std::size_t>(size_ - from);
        const ssize_t n = ::pread(fd_.get(), tail, want, from);
        if (n != static_cast<ssize_t>(want)) {
            const auto e = n < 0 ? last_system_error() : make_error_code(errc::io_error);
            log_(log_level::error, "mbox " + path_ + ": read: " + e.message());
            return unexpected(e);
        }
        if (tail[want - 1] != '\n') return std::string("\n\n");
        if (want == 2 && tail[0] == '\n') return std::string();
        return std::string("\n");
    }

    // Cuts the file back to `size`: a failed message (not holding), or a batch whose append
    // or fsync failed.
    void cut_back(off_t size) {
        if (::ftruncate(fd_.get(), size) != 0) {
            // The file now ends in a partial message we cannot remove: take no more.
            broken_ = true;
            log_(log_level::error, "mbox " + path_ + ": cannot cut off what failed at " + std::to_string(size) + ": " +
                                       last_system_error().message());
            return;
        }
        size_ = size;
        if (flushed_ > size) flushed_ = size;
    }

    posix::unique_fd fd_;     // O_APPEND, locked until closed
    posix::unique_fd spool_;  // holding: a header, then the messages not yet appended (locked if named)
    std::string spool_path_;  // its name; empty: unnamed
    bool spool_stale_ = false;  // it still holds what a killed run left (for recover(); reset_stale_spool)
    bool keep_spool_ = false;   // the next run needs it: not removed with the sink
    int synced_ = 0;           // holds(): 1 once the file was fsync'd for it, -1 if that failed
    std::string path_;
    off_t size_;           // the mbox's size (holding: where the spool's octet base_ goes)
    off_t flushed_;        // its size at the last successful flush (or at open)
    off_t base_ = 0;       // the spool's first octet not yet appended
    off_t done_ = 0;       // the end of its completed messages
    off_t spool_end_ = 0;  // the end of what it holds (the open message's octets after done_)
    std::size_t pending_ = 0;
    bool open_ = false;    // a message is being written
    bool broken_ = false;  // a failed message or batch could not be cut off
    log_sink log_;
    mbox_sink_options options_;
};

result<void> mbox_message::write(std::string_view octets) {
    if (done_) return unexpected(errc::bad_input);
    if (octets.empty()) return {};
    last_ = octets.back();
    if (!in_header_) {
        quoter_.feed(octets, out_);
        return drain(mbox_write_octets);
    }
    head_.append(octets);
    // The header ends at its first empty line (a CRLF one too, from a foreign source).
    for (std::size_t nl; in_header_ && (nl = head_.find('\n', line_start_)) != head_.npos;) {
        const std::string_view line = std::string_view(head_).substr(line_start_, nl - line_start_);
        line_start_ = nl + 1;
        if (line.empty() || line == "\r") start_body(false);
    }
    // NOTE: a Return-Path further down than mbox_header_octets is not looked for (mbox_sender).
    if (in_header_ && head_.size() >= mbox_header_octets) start_body(false);
    return drain(mbox_write_octets);
}

// Writes the From_ line and what waited for it. `at_end`: the message ended in its header, so
// its last line counts even without a line end.
void mbox_message::start_body(bool at_end) {
    in_header_ = false;
    std::string_view header = at_end ? std::string_view(head_) : std::string_view(head_).substr(0, line_start_);
    if (header.size() > mbox_header_octets) {
        // Only whole lines within the first mbox_header_octets count, however the octets
        // came in: the same message always gets the same From_ line.
        header = header.substr(0, mbox_header_octets);
        header = header.substr(0, header.rfind('\n') + 1);
    }
    out_ = prefix_ + "From " + mbox_sender(header) + " " + date_ + "\n";
    quoter_.feed(head_, out_);
    std::string().swap(head_);
}

result<void> mbox_message::drain(std::size_t at_least) {
    if (out_.size() < at_least || out_.empty()) return {};
    auto r = sink_.append(out_);
    digest_ = fnv1a(digest_, out_);
    written_ += static_cast<off_t>(out_.size());
    out_.clear();
    if (!r) return fail(r.error());
    return {};
}

result<void> mbox_message::complete() {
    if (done_) return unexpected(errc::bad_input);
    if (in_header_) start_body(true);
    quoter_.finish(out_);
    // mboxrd: the message ends with a line end, then an empty line before the next From_.
    // NOTE: so a reader cannot tell whether a message had its last line end: one is added.
    if (last_ != '\n') out_ += '\n';
    out_ += '\n';
    if (auto r = drain(1); !r) return r;
    done_ = true;
    sink_.completed();
    return {};
}

std::string mbox_message::locator() const {
    if (!done_) return {};
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(digest_));
    return "mbox:" + std::to_string(start_) + ":" + std::to_string(start_ + written_) + ":" + hex;
}

void mbox_message::abort() noexcept {
    if (done_) return;
    done_ = true;
    sink_.dropped(spool_start_);
}

result<void> mbox_message::fail(std::error_code e) {
    done_ = true;
    sink_.dropped(spool_start_);  // a failed message leaves no partial
    return unexpected(e);
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
    // The folder the user named, a symbolic link to it followed once here (a linked ~/Maildir
    // is common; the store itself follows none below its root), a trailing slash dropped.
    o.root = dir;
    if (!o.root.has_filename() && o.root.has_parent_path()) o.root = o.root.parent_path();
    std::error_code ec;
    if (auto real = std::filesystem::canonical(o.root, ec); !ec) {
        o.root = std::move(real);
    } else if (std::filesystem::is_symlink(o.root, ec)) {
        // A link to a folder still to be made: made where it points.
        if (auto target = std::filesystem::read_symlink(o.root, ec); !ec)
            o.root = target.is_absolute() ? target : o.root.parent_path() / target;
    }
    o.hostname = options.hostname;
    o.log = [log](log_level level, std::string_view text) {
        if (!quiet_thread) log(level, text);
    };
    // The folder is checked (and made) once, when the sink opens: not new/ and cur/ again
    // before each message (two lstat a message on the thread that reads the server). A new/
    // removed during the fetch fails the batch (exit 74, nothing deleted) instead of being made
    // again.
    o.recheck_mailboxes = false;
    // A large message's octets past the first 128 KiB go to the disk directly, not through the
    // page cache: on the bench's VM a copy into fresh page cache costs about 2 ms of CPU a MiB
    // on the thread that reads the server (docs/benchmarks.md).
    o.direct_io_from = options.direct_io_from;
    auto folder = open_maildir_folder(std::move(o));
    if (!folder) return unexpected(folder.error());  // logged by the store
    auto sink = std::make_unique<maildir_sink>(std::move(*folder), dir, log, std::move(options));
    if (auto started = sink->start(); !started) {
        log(log_level::error, "maildir sink: cannot start its committer thread: " + started.error().message());
        return unexpected(started.error());
    }
    return std::unique_ptr<message_sink>(std::move(sink));
}

namespace {

// The mbox sink's spool. Named (mbox_sink_options::spool): opened without emptying it (recover()
// reads what a killed run left) and locked, so two runs never share it. Else an unnamed file
// (O_TMPFILE, gone when closed or killed) in `dir` (the mbox's own file system), else in
// $TMPDIR or /tmp; where O_TMPFILE is missing, a named one removed at once.
result<posix::unique_fd> open_spool(const std::filesystem::path& named, const std::filesystem::path& dir) {
    // The file locked must still be the one under its name: a run that ends removes it (after
    // another opened it, before that one's flock), and a third would make a new one.
    for (int attempt = 0; !named.empty(); ++attempt) {
        posix::unique_fd fd(::open(named.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600));
        if (fd.get() < 0) return unexpected(last_system_error());
        struct stat st{}, now{};
        if (::fstat(fd.get(), &st) != 0) return unexpected(last_system_error());
        if (!S_ISREG(st.st_mode)) return unexpected(errc::bad_config);
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0)
            return unexpected(errno == EWOULDBLOCK ? make_error_code(errc::mailbox_in_use) : last_system_error());
        if (::lstat(named.c_str(), &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
            if (attempt < 8) continue;
            return unexpected(errc::mailbox_in_use);
        }
        if ((st.st_mode & 07777) != 0600 && ::fchmod(fd.get(), 0600) != 0) return unexpected(last_system_error());
        return fd;
    }
    posix::unique_fd fd(posix::open_unnamed_temp_file(dir.empty() ? std::filesystem::path(".") : dir));
    if (fd.get() >= 0) return fd;
    const auto beside = last_system_error();
    fd.reset(posix::open_unnamed_temp_file());
    if (fd.get() >= 0) return fd;
    return unexpected(beside);
}

}  // namespace

result<std::unique_ptr<message_sink>> open_mbox_sink(const std::filesystem::path& file, log_sink log,
                                                     mbox_sink_options options) {
    if (!log) log = null_log();
    const std::string path = file.string();
    auto fail = [&](const std::string& what, std::error_code e) -> result<std::unique_ptr<message_sink>> {
        log(log_level::error, "mbox " + path + ": " + what + (e ? ": " + e.message() : std::string()));
        return unexpected(e ? e : make_error_code(errc::bad_config));
    };
    // O_NONBLOCK only while opening: a FIFO in its place must not hang the fetch.
    posix::unique_fd fd(::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_NOCTTY | O_NONBLOCK | O_CLOEXEC, 0600));
    if (fd.get() < 0) return fail("cannot open", last_system_error());
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) return fail("stat", last_system_error());
    if (!S_ISREG(st.st_mode)) return fail("not a regular file", {});
    if (::fcntl(fd.get(), F_SETFL, O_APPEND) != 0) return fail("fcntl", last_system_error());

    // The locks mutt, procmail and Dovecot take on an mbox: fcntl, then flock (on Linux these
    // are separate locks, and either may be all another program checks). The fcntl lock is
    // an open file description lock (F_OFD_SETLK): it conflicts with the classic F_SETLK
    // locks of other programs as one, but closing another descriptor of the same file in this
    // process (a second open that failed) does not drop it as it would a classic one.
    // NOTE: no dot-lock file (FILE.lock): that needs write access to the file's directory
    // and is what the others take in addition, not instead.
    const auto deadline = std::chrono::steady_clock::now() + options.lock_wait;
    int lock_cmd = F_OFD_SETLK;
    for (;;) {
        struct flock fl{};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;  // l_start = l_len = 0: the whole file, as it grows too
        int r = ::fcntl(fd.get(), lock_cmd, &fl);
        if (r != 0 && errno == EINVAL && lock_cmd == F_OFD_SETLK) {
            lock_cmd = F_SETLK;  // a kernel or file system without OFD locks
            r = ::fcntl(fd.get(), lock_cmd, &fl);
        }
        if (r == 0) {
            if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) break;
            const int e = errno;
            fl.l_type = F_UNLCK;  // never hold one lock while waiting for the other
            (void)::fcntl(fd.get(), lock_cmd, &fl);
            if (e != EWOULDBLOCK) return fail("flock", {e, std::system_category()});
        } else if (errno != EACCES && errno != EAGAIN) {
            return fail("fcntl lock", last_system_error());
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            const auto ms = options.lock_wait.count();
            log(log_level::error, "mbox " + path + ": locked by another program (waited " + std::to_string(ms / 1000) +
                                      "." + std::to_string(ms % 1000 / 100) + " s)");
            return unexpected(errc::mailbox_in_use);
        }
        std::this_thread::sleep_for(lock_retry);
    }
    // The size only now: another program may have appended until it let go of the lock.
    if (::fstat(fd.get(), &st) != 0) return fail("stat", last_system_error());
    if (st.st_nlink == 0) return fail("removed while it was being opened", {});
    {
        // Its name is made durable (an fsync of the directory that holds it, a symbolic
        // link's target's) before any message counts as stored in it, at every open: a flush
        // fsyncs the file, not the directory, and without this a power cut could take a new
        // mbox, and every message the server deleted after that flush, with it. Not keyed on
        // whether this open made the file: another program (a delivery agent) may have made
        // it, or written to one this open made before the lock was had; and a dangling
        // link's new target, or a file whose first run failed this very fsync, is covered too.
        // One fsync a run.
        std::error_code ec;
        const auto real = std::filesystem::canonical(file, ec);
        if (ec) return fail("cannot resolve its name", ec);
        struct stat named{};
        if (::stat(real.c_str(), &named) != 0 || named.st_dev != st.st_dev || named.st_ino != st.st_ino) {
            log(log_level::error, "mbox " + path + ": renamed or replaced while it was being opened; try again");
            return unexpected(errc::mailbox_in_use);  // another program at work on it: temporary
        }
        if (auto s = posix::fsync_dir(real.parent_path().string()); !s) {
            // A directory this user may write and search but not read (a sticky spool of mode
            // 1733), or a file system without directory fsync: the whole file system's sync
            // (through the mbox's own descriptor) makes the entry durable as well.
            const int e = s.error().value();
            const bool other_way = e == EACCES || e == EPERM || e == EINVAL || e == ENOSYS || e == EOPNOTSUPP;
            if (!other_way || ::syncfs(fd.get()) != 0)
                return fail("fsync of its directory " + real.parent_path().string(), s.error());
        }
    }
    posix::unique_fd spool;
    if (options.hold_batches) {
        auto sp = open_spool(options.spool, file.parent_path());
        if (!sp) {
            if (sp.error() == make_error_code(errc::mailbox_in_use)) {
                log(log_level::error, "mbox " + path + ": its spool " + options.spool.string() + " is in use by another run");
                return unexpected(sp.error());
            }
            return fail(options.spool.empty() ? "cannot make a spool file beside it or in the temporary directory"
                                              : "cannot open its spool " + options.spool.string(),
                        sp.error());
        }
        spool = std::move(*sp);
    }
    std::string spool_path = options.hold_batches ? options.spool.string() : std::string();
    return std::unique_ptr<message_sink>(std::make_unique<mbox_sink>(
        std::move(fd), std::move(spool), std::move(spool_path), path, st.st_size, std::move(log), std::move(options)));
}

std::unique_ptr<message_sink> make_stream_sink(std::FILE* out) { return std::make_unique<stream_sink>(out); }

}  // namespace mailnet::pop3c
