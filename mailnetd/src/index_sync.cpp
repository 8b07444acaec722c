// index_sync.cpp: the store -> mail_index feed of mailnetd (scan at start, then store events),
// with each message's head read on a pool, never on the I/O thread.
#include "mailnet/mailnetd/index_sync.hpp"

#include <asio/post.hpp>

#include <algorithm>
#include <iterator>
#include <unordered_set>

#include "mailnet/mailnetd/message_view.hpp"

namespace mailnet::mailnetd {

namespace {

constexpr std::size_t max_summary_field_octets = 1024;  // subject, from: a summary's text fields
constexpr std::size_t max_summary_addresses = 100;      // to: To and Cc addresses kept
constexpr std::size_t max_summary_address_octets = 256; // each (RFC 5321 4.5.3.1.3: a path is 256)
constexpr std::size_t max_summary_to_octets = 4096;     // all of them: a summary is kept for every
                                                        // copy (100 recipients, 100 summaries)

// At most `max` octets of UTF-8 `text`, never cutting a character in two.
std::string utf8_prefix(const std::string& text, std::size_t max) {
    if (text.size() <= max) return text;
    std::size_t n = max;
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;  // a continuation octet
    return text.substr(0, n);
}

}  // namespace

namespace {
// A header block larger than this is summarised from its first part (subject, addresses).
constexpr std::size_t max_head_octets = 256 * 1024;
}  // namespace

std::optional<message_summary> read_summary(store& st, const std::string& mailbox, const std::string& store_id,
                                            std::uint64_t wire_octets,
                                            std::optional<std::chrono::system_clock::time_point> told_at) {
    auto m = st.open(mailbox, store_id);
    if (!m) return std::nullopt;  // gone meanwhile: its deleted event follows
    std::string head;
    if (auto h = m->headers(max_head_octets)) {
        head = std::move(*h);
    } else {
        if (auto r = m->rewind(); !r) return std::nullopt;
        head.resize(max_head_octets);
        auto n = m->read(head);
        if (!n) return std::nullopt;
        head.resize(*n);
    }
    const message_head mh = read_head(head);
    message_summary s;
    s.id = make_message_id(mailbox, store_id);
    s.mailbox = mailbox;
    s.store_id = store_id;
    // Bounded: a summary is copied into every list, wait answer and event, and searched by
    // every filter, so one message with a 250 KB subject must not cost each of them that much.
    s.from = utf8_prefix(mh.return_path, max_summary_field_octets);
    s.from_header = utf8_prefix(mh.from, max_summary_field_octets);
    std::size_t to_octets = 0;
    for (const auto& a : mh.to) {
        if (s.to.size() == max_summary_addresses) break;
        std::string kept = utf8_prefix(a, max_summary_address_octets);
        if (to_octets + kept.size() > max_summary_to_octets) break;
        to_octets += kept.size();
        s.to.push_back(std::move(kept));
    }
    s.subject = utf8_prefix(mh.subject, max_summary_field_octets);
    // The store's own time (PostgreSQL); else, for a delivery told by its event, when it was
    // told: a Maildir name's time is when its file was made, up to 2 s before the delivery for
    // one made ahead, and a `since=TIME` taken before the mail was sent must count it. A
    // message found on disk (the start-up scan, a file copied in) has its name's time; a
    // store with no time at all (the memory store), the time it was indexed.
    const auto received = m->received();
    s.received = received ? *received
                 : told_at ? *told_at
                           : received_from_store_id(store_id).value_or(std::chrono::system_clock::now());
    s.size = wire_octets;
    return s;
}

index_sync::index_sync(asio::io_context& io, std::shared_ptr<store> st, mail_index& index, log_sink log)
    : io_(io), store_(std::move(st)), index_(index), log_(std::move(log)), serial_(asio::make_strand(pool_)), retry_(io), check_timer_(io) {}

index_sync::~index_sync() {
    sub_.reset();
    retry_.cancel();
    check_timer_.cancel();
    pool_.stop();
    pool_.join();
}

void index_sync::start(std::function<void(std::size_t)> on_scanned) {
    sub_ = store_->subscribe([this](const store_event& e) { on_event(e); });
    asio::post(serial_, [this, done = std::move(on_scanned)]() mutable { scan(std::move(done)); });
}

void index_sync::scan(std::function<void(std::size_t)> on_scanned) {
    std::vector<message_summary> all;
    auto boxes = store_->mailboxes();
    if (!boxes) {
        if (log_) log_(log_level::warning, "mailnetd: http: the store cannot list its mailboxes (" +
                                               boxes.error().message() + "): the index starts empty");
    } else {
        for (const auto& box : *boxes) {
            auto snap = store_->contents(box);
            if (!snap) continue;
            for (const auto& m : *snap)
                if (auto s = read_summary(*store_, box, m.id, m.octets)) all.push_back(std::move(*s));
        }
    }
    // Inserted oldest first, so the index's insertion order (since=ID) agrees with the received
    // order for what was there at start; every event is inserted after (this runs on serial_).
    std::stable_sort(all.begin(), all.end(),
                     [](const message_summary& a, const message_summary& b) { return a.received < b.received; });
    const std::size_t count = all.size();
    constexpr std::size_t batch_size = 1024;  // the I/O thread serves between batches
    for (std::size_t at = 0; at < all.size(); at += batch_size) {
        const auto end = all.begin() + static_cast<std::ptrdiff_t>(std::min(all.size(), at + batch_size));
        std::vector<message_summary> batch(std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(at)),
                                           std::make_move_iterator(end));
        asio::post(io_, [this, batch = std::move(batch)]() mutable {
            for (auto& s : batch) index_.insert(std::move(s));
        });
    }
    asio::post(io_, [this, count, f = std::move(on_scanned)] {
        index_.set_complete();
        if (f) f(count);
    });
}

void index_sync::on_event(const store_event& e) {
    if (e.what == store_event::kind::changed) {
        asio::post(io_, [this, box = e.mailbox] { check_later(box); });
        return;
    }
    queued_.fetch_add(1, std::memory_order_relaxed);
    const auto told_at = std::chrono::system_clock::now();
    asio::post(serial_, [this, e, told_at] {
        queued_.fetch_sub(1, std::memory_order_relaxed);
        if (e.what == store_event::kind::resync) {
            resync();
            return;
        }
        if (e.what == store_event::kind::deleted) {
            asio::post(io_, [this, box = e.mailbox, id = e.id] { index_.remove(box, id); });
            return;
        }
        auto s = read_summary(*store_, e.mailbox, e.id, e.octets, told_at);
        if (!s) return;
        asio::post(io_, [this, s = std::move(*s)]() mutable {
            // A delivery told after another is not listed as older than it by a little (a
            // store's own times from transactions that committed in another order, the clock
            // stepped back). Older by more (another front-end's clock): its own time is kept.
            constexpr std::int64_t made_ahead_skew_us = 5'000'000;
            const std::int64_t newest = index_.newest_received_us();
            const std::int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(s.received.time_since_epoch()).count();
            if (us < newest && newest - us <= made_ahead_skew_us)
                s.received = std::chrono::system_clock::time_point(
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::microseconds(newest)));
            index_.insert(std::move(s));
        });
    });
}

void index_sync::after_pending(std::function<void()> done) {
    // serial_ runs the events in order, and each posts its index change to io_ before the next
    // begins: this reaches io_ after the changes of every event told before it.
    asio::post(serial_, [this, done = std::move(done)]() mutable { asio::post(io_, std::move(done)); });
}

bool index_sync::behind() const noexcept {
    return !index_.complete() || resyncs_.load(std::memory_order_relaxed) > 0 ||
           queued_.load(std::memory_order_relaxed) > max_queued_events;
}

void index_sync::resync_later() {
    retry_.expires_after(retry_pause_);
    retry_pause_ = std::min(retry_pause_ * 2, std::chrono::seconds(30));
    retry_.async_wait([this](std::error_code ec) {
        if (!ec) on_event({store_event::kind::resync, {}, {}, 0, 0});
    });
}

// On serial_, in event order. The store's messages now are listed here (with their API ids);
// the I/O thread then removes what the index has beyond them and names what it lacks; their
// heads are read back on serial_, after any event queued meanwhile, and inserted. No race
// loses or revives one:
// - an index entry not in the list was deleted before the list was taken (an entry inserted
//   later comes from a later event, whose insertion the I/O thread runs after this removal);
// - a lacking message deleted before its head is read cannot be opened and is skipped; one
//   delivered meanwhile and also told by its event is inserted once (insert() keeps the first).
// A mailbox whose snapshot fails keeps its entries as they are (a failure is no deletion), and
// the whole resync is done again later.
void index_sync::resync() {
    struct listed {
        std::string id, mailbox, store_id;
        std::uint64_t octets = 0;
    };
    resyncs_.fetch_add(1, std::memory_order_relaxed);
    const auto done = [this] { resyncs_.fetch_sub(1, std::memory_order_relaxed); };
    auto boxes = store_->mailboxes();
    if (!boxes) {
        if (log_) log_(log_level::warning, "mailnetd: http: the store's events were cut and it cannot list its mailboxes (" +
                                               boxes.error().message() + "): trying again later");
        asio::post(io_, [this, done] {
            done();
            resync_later();
        });
        return;
    }
    std::vector<listed> now;
    std::unordered_set<std::string> unread;  // mailboxes whose snapshot failed
    for (const auto& box : *boxes) {
        auto snap = store_->contents(box);
        if (!snap) {
            unread.insert(box);
            continue;
        }
        for (const auto& m : *snap) now.push_back({make_message_id(box, m.id), box, m.id, m.octets});
    }
    asio::post(io_, [this, done, now = std::move(now), unread = std::move(unread)]() mutable {
        std::unordered_set<std::string> in_store;
        in_store.reserve(now.size());
        std::vector<listed> lacking;
        for (auto& m : now) {
            if (!index_.find(m.id)) {
                in_store.insert(m.id);
                lacking.push_back(std::move(m));
            } else {
                in_store.insert(std::move(m.id));
            }
        }
        std::vector<std::string> gone;
        for (const auto* s : index_.in_mailbox(""))
            if (!in_store.contains(s->id) && !unread.contains(s->mailbox)) gone.push_back(s->id);
        for (const auto& id : gone) index_.remove(id);
        if (log_)
            log_(log_level::info, "mailnetd: http: the store's events were cut; the index was checked against the store: " +
                                      std::to_string(lacking.size()) + " missed, " + std::to_string(gone.size()) + " gone" +
                                      (unread.empty() ? std::string() : ", " + std::to_string(unread.size()) + " mailboxes unreadable (again later)"));
        if (unread.empty()) {
            retry_pause_ = std::chrono::seconds(1);
        } else {
            resync_later();
        }
        if (lacking.empty()) {
            done();
            return;
        }
        asio::post(serial_, [this, done, lacking = std::move(lacking)] {
            std::vector<message_summary> found;
            for (const auto& m : lacking)
                if (auto s = read_summary(*store_, m.mailbox, m.store_id, m.octets)) found.push_back(std::move(*s));
            std::stable_sort(found.begin(), found.end(),
                             [](const message_summary& a, const message_summary& b) { return a.received < b.received; });
            asio::post(io_, [this, done, found = std::move(found)]() mutable {
                for (auto& s : found) index_.insert(std::move(s));
                done();
            });
        });
    });
}

void index_sync::check_later(const std::string& box) {
    to_check_.insert(box);
    arm_check();
}

void index_sync::arm_check() {
    if (check_armed_ || to_check_.empty()) return;
    // A tick every 0.2 s while a mailbox waits: the changes of a burst (100 recipients, a copy
    // of many files) come in together, and a mailbox due later never holds back one due now.
    check_armed_ = true;
    check_timer_.expires_after(std::chrono::milliseconds(200));
    check_timer_.async_wait([this](std::error_code ec) {
        if (ec) return;  // cancelled: this object may be gone
        check_armed_ = false;
        const auto now = std::chrono::steady_clock::now();
        check_budget_ = std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(200),
                                                                      check_budget_ + (now - budget_at_) / 10);
        budget_at_ = now;
        for (auto it = to_check_.begin(); it != to_check_.end() && check_budget_ > std::chrono::steady_clock::duration::zero();) {
            auto& c = checks_[*it];
            if (c.running || c.not_before > now) {  // one at a time per mailbox; a busy one waits its turn
                ++it;
                continue;
            }
            c.running = true;
            asio::post(serial_, [this, box = *it] { check(box); });
            it = to_check_.erase(it);
        }
        // What is done with: a mailbox with nothing pending whose pause has passed.
        for (auto it = checks_.begin(); it != checks_.end();) {
            const auto& c = it->second;
            if (!c.running && c.lacking.empty() && c.missing.empty() && c.not_before <= now && !to_check_.contains(it->first))
                it = checks_.erase(it);
            else
                ++it;
        }
        arm_check();
    });
}

// On serial_, after the events told before it (as resync(), for one mailbox). A message in the
// store and not in the index, and one in the index and not in the store, is taken in or
// dropped only when comparisons at least a second apart all found it so: the store's own
// deliveries are told through their events (and one it is about to tell is left alone), its
// own deletions likewise, and a file renamed while a directory is read may be missed once.
void index_sync::check(const std::string& box) {
    struct listed {
        std::string id, store_id;
        std::uint64_t octets = 0;
    };
    const auto began = std::chrono::steady_clock::now();
    auto snap = store_->contents(box);
    if (!snap) {
        // A failure is no deletion: the entries stay, and the mailbox is compared again at its
        // next change, 5 s from now at the soonest.
        asio::post(io_, [this, box, took = std::chrono::steady_clock::now() - began] {
            auto& c = checks_[box];
            c.running = false;
            c.not_before = std::chrono::steady_clock::now() + std::chrono::seconds(5);
            check_budget_ -= took;
        });
        return;
    }
    std::vector<listed> now;
    now.reserve(snap->size());
    for (const auto& m : *snap) now.push_back({make_message_id(box, m.id), m.id, m.octets});
    snap->clear();
    const auto read_for = std::chrono::steady_clock::now() - began;
    asio::post(io_, [this, box, read_for, now = std::move(now)]() mutable {
        const auto began = std::chrono::steady_clock::now();
        constexpr auto settle = std::chrono::seconds(1);
        auto& c = checks_[box];
        std::unordered_set<std::string> in_store;
        in_store.reserve(now.size());
        std::unordered_map<std::string, std::chrono::steady_clock::time_point> lacking, missing;
        std::vector<listed> found;
        std::size_t listed_here = 0;  // of the mailbox's messages in the store, those in the index
        for (auto& m : now) {
            in_store.insert(m.id);
            if (index_.find(m.id)) {
                ++listed_here;
                continue;
            }
            if (store_->delivering(box, m.store_id)) continue;  // told by its own event soon
            const auto first = c.lacking.find(m.id);
            const auto since = first == c.lacking.end() ? began : first->second;
            if (began - since >= settle)
                found.push_back(std::move(m));
            else
                lacking.emplace(m.id, since);
        }
        // The index's whole walk only when the mailbox holds entries the store no longer has.
        std::vector<std::string> gone;
        if (index_.count_in(box) != listed_here)
            for (const auto* s : index_.in_mailbox(box)) {
                if (s->mailbox != box || in_store.contains(s->id)) continue;  // Bob@ is not bob@
                const auto first = c.missing.find(s->id);
                const auto since = first == c.missing.end() ? began : first->second;
                if (began - since >= settle)
                    gone.push_back(s->id);
                else
                    missing.emplace(s->id, since);
            }
        for (const auto& id : gone) index_.remove(id);
        c.lacking = std::move(lacking);
        c.missing = std::move(missing);
        // A large mailbox changing all the time is compared at most a tenth of the time.
        const auto took = read_for + (std::chrono::steady_clock::now() - began);
        c.not_before = began + std::max<std::chrono::steady_clock::duration>(settle, 10 * took);
        c.running = false;
        check_budget_ -= took;
        if (!c.lacking.empty() || !c.missing.empty()) check_later(box);  // again, even if nothing more changes
        if (log_ && !gone.empty())
            log_(log_level::info, "mailnetd: http: mailbox " + log_text(box, 256) + " changed on disk outside this process: " +
                                      std::to_string(gone.size()) + " gone");
        if (found.empty()) return;
        asio::post(serial_, [this, box, found = std::move(found)] {
            std::vector<message_summary> read;
            for (const auto& m : found)
                if (auto s = read_summary(*store_, box, m.store_id, m.octets)) read.push_back(std::move(*s));
            std::stable_sort(read.begin(), read.end(),
                             [](const message_summary& a, const message_summary& b) { return a.received < b.received; });
            if (log_ && !read.empty())
                log_(log_level::info, "mailnetd: http: mailbox " + log_text(box, 256) + " changed on disk outside this process: " +
                                          std::to_string(read.size()) + " new");
            asio::post(io_, [this, read = std::move(read)]() mutable {
                for (auto& s : read) index_.insert(std::move(s));
            });
        });
    });
}

}  // namespace mailnet::mailnetd
