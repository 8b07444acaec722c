// mailnet/store/store.hpp: the storage interface (DESIGN.md "pluggable interfaces") and the two
// stores: Maildir on disk (the default) and memory (for embedding and tests).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "mailnet/error.hpp"
#include "mailnet/log.hpp"
#include "mailnet/store/message.hpp"

namespace mailnet {

/// One message of a snapshot, as a POP3 session numbers it.
struct message_info {
    std::string id;            ///< the backend's stable id (Maildir: the base name, before ':')
    std::uint64_t octets = 0;  ///< wire size: CRLF line ends, before dot-stuffing (RFC 1939 LIST)
    std::string uidl;          ///< 1-70 octets in 0x21-0x7E (RFC 1939 7); empty: `id` is the UIDL
    bool seen = false;         ///< retrieved by an earlier session (Maildir flag S; LAST)

    /// The UIDL to send: `uidl`, or `id` when `uidl` is empty (stores leave it empty when the
    /// id is itself a valid UIDL, so a snapshot holds one string per message, not two).
    const std::string& pop3_uidl() const noexcept { return uidl.empty() ? id : uidl; }
};

/// What changed in a store: the source of mailnetd's wait-for-mail and live events (DESIGN.md
/// "pluggable interfaces": "a store tells subscribers of each delivery and deletion").
struct store_event {
    enum class kind {
        delivered,  ///< a message became visible in `mailbox`: its delivery is durable
        deleted,    ///< a message was deleted from `mailbox` (a POP3 QUIT's commit)
        /// Events may have been missed: the store's source of other processes' events was cut
        /// and is back (PostgreSQL: the LISTEN connection was lost and is listening again). A
        /// listener that keeps state rebuilds it from mailboxes() and contents() now; every
        /// change after this event is told again. `mailbox` and `id` are empty.
        resync,
        /// `mailbox`'s files changed on disk, maybe through another program (a file copied
        /// in, another pop3d's deletion; this store's own changes too, which are also told as
        /// delivered/deleted): a listener that keeps state compares that mailbox's contents()
        /// with it. The Maildir store, while anyone subscribes (inotify); `id` is empty.
        changed,
    };
    kind what = kind::delivered;
    std::string mailbox;       ///< as begin_delivery() or commit() was given it
    std::string id;            ///< the message's id in that mailbox, as snapshot() and open() take it
    std::uint64_t octets = 0;  ///< delivered: the wire size, as snapshot() gives it; deleted: 0
    std::uint64_t seq = 0;     ///< the store's publish order, from 1: listeners see events in this order
};

class event_hub;

/// Keeps a listener subscribed to a store's events; destroying it (or reset()) unsubscribes.
/// Once that returns, the listener is not running and is never called again, except when a
/// listener ends its own subscription from inside its call (allowed; not another's from there).
/// Move-only; may outlive the store.
class subscription {
public:
    subscription() = default;
    subscription(subscription&& other) noexcept;
    subscription& operator=(subscription&& other) noexcept;
    subscription(const subscription&) = delete;
    subscription& operator=(const subscription&) = delete;
    ~subscription() { reset(); }
    /// Unsubscribes now (nothing if already done).
    void reset() noexcept;
    /// Whether a listener is subscribed through this object.
    explicit operator bool() const noexcept { return entry_ != nullptr; }

    struct entry;  ///< implementation detail

private:
    friend class event_hub;
    std::weak_ptr<event_hub> hub_;
    std::shared_ptr<entry> entry_;
};

/// The subscribers of one store; the store and the deliveries it began share it. Thread-safe.
class event_hub : public std::enable_shared_from_this<event_hub> {
public:
    using listener = std::function<void(const store_event&)>;
    /// Adds a listener (see store::subscribe).
    subscription subscribe(listener l);
    /// Numbers `e` (seq) and calls every listener with it, on this thread, one event at a time
    /// store-wide, so every listener sees every event in seq order; a listener that throws is
    /// skipped. A `deleted` of a message whose delivery was expect()ed but not yet published
    /// waits and is published right after that `delivered`: a listener never hears of a
    /// deletion before the delivery. Every expect() must end in a `delivered` or a withdraw().
    void publish(store_event e);
    /// A delivery is about to make `id` visible in `mailbox` (before it is durable): a deletion
    /// of it (a fast POP3 session) is told after its `delivered`.
    void expect(std::string_view mailbox, std::string_view id);
    /// The delivery expect()ed failed and removed its message: a deletion waiting on it is
    /// dropped (its delivery never was told).
    void withdraw(std::string_view mailbox, std::string_view id);
    /// Whether a delivery expect()ed `id` in `mailbox` and has not published or withdrawn it:
    /// visible, and not yet told (a listener comparing the store with its view leaves it alone).
    bool expected(std::string_view mailbox, std::string_view id) const;
    /// Whether anyone listens (a store builds no events for nobody).
    bool has_subscribers() const noexcept { return count_.load(std::memory_order_acquire) > 0; }

private:
    friend class subscription;
    void remove(const subscription::entry* e) noexcept;
    static std::string key(std::string_view mailbox, std::string_view id);
    void call_listeners(const store_event& e, const std::vector<std::shared_ptr<subscription::entry>>& now);
    std::mutex publish_mutex_;   // held while listeners run: one event at a time, in seq order
    std::uint64_t seq_ = 0;      // under publish_mutex_
    mutable std::mutex mutex_;   // guards listeners_, expected_, deferred_
    std::vector<std::shared_ptr<subscription::entry>> listeners_;
    std::multiset<std::string, std::less<>> expected_;  // key(): deliveries visible, not yet published
                                                        // (one per expect(): a name may be tried twice)
    std::set<std::string, std::less<>> deferred_;  // key(): deleted while expected
    std::atomic<std::size_t> count_{0};
};

/// A delivery under way: octets are written as they arrive, then committed or aborted.
class delivery {
public:
    virtual ~delivery() = default;  ///< aborts if neither commit nor abort was called
    /// Appends octets of the message as it will be stored (LF line ends).
    virtual result<void> write(std::string_view octets) = 0;
    /// Says that the message is complete: a store that holds octets back (the Maildir's direct
    /// writes) writes them now and lets go of its buffers. commit() does it if it was not
    /// called; a caller that keeps completed deliveries a while before committing them calls it
    /// first. An error as from write(): the delivery can only be aborted.
    virtual result<void> end_of_message() { return {}; }
    /// Makes the message durable in every target mailbox, or in none (then an error).
    virtual result<void> commit() = 0;
    /// Drops the message; nothing becomes visible.
    virtual void abort() noexcept = 0;
    /// A name the stored message's files begin with (Maildir: the `<secs>.M<usecs>P<pid>Q<n>`
    /// before the first "." of the host part), known from the start, so a caller cut off
    /// between commit() and recording it can tell later whether the message was stored. Read
    /// it before commit(): a commit that meets a name already taken picks another (rare).
    /// Empty when the store has none.
    virtual std::string name() const { return {}; }
    /// For a copy between stores (copy_store, `mailnet-store copy`): asks that the message keep
    /// `uidl` as its UIDL, where the store's format allows (a PostgreSQL store: 1-70 octets in
    /// 0x21-0x7E and not all digits, its own ids' form; a Maildir: a UIDL that can be a file's
    /// base name: no '/' or ':', not '.' first), and `seen` as its seen flag (PostgreSQL only).
    /// Call before commit(); false when the message gets a UIDL of the store's own.
    virtual bool keep(std::string_view uidl, bool seen) {
        (void)uidl;
        (void)seen;
        return false;
    }
    /// commit_together()'s hook: commits `batch` (this delivery among them, none committed
    /// yet), writing each one's result into `results` (same order), sharing the durability
    /// work; false (nothing done) when this store cannot, and then each is committed alone.
    virtual bool commit_batch(std::span<delivery* const> batch, std::span<result<void>> results) {
        (void)batch;
        (void)results;
        return false;
    }
};

/// Commits the deliveries of `batch` (of one store; none committed yet) as one group, each
/// with commit()'s guarantee and its own result (same order). The Maildir store shares the
/// durability work of the whole group, more than concurrent commit() calls can: one data
/// round for all the tmp/ files (a syncfs(2) where it trusts the file system, as
/// `maildir_data_sync` allows), then all the links, then one fsync of each new/. The PostgreSQL
/// store takes the group into its batches at once; other stores commit one after the other.
std::vector<result<void>> commit_together(std::span<delivery* const> batch);

/// The storage backend. Calls may block (disk, network): servers run them off the I/O
/// threads. Implementations are thread-safe. Every mailbox name is checked again here.
class store {
public:
    virtual ~store() = default;

    /// Takes the exclusive POP3 lock on a mailbox; errc::mailbox_in_use when another session
    /// holds it, any other error for a system failure. Never creates the mailbox (delivery
    /// does): a missing one locks and its snapshot is empty.
    virtual result<void> lock(std::string_view mailbox) = 0;
    /// Releases the lock taken by lock().
    virtual void unlock(std::string_view mailbox) noexcept = 0;
    /// The messages, oldest delivery first; taken once after lock() so numbers never move.
    virtual result<std::vector<message_info>> snapshot(std::string_view mailbox) = 0;
    /// What `mailbox` holds now, listed as snapshot() lists it, for a listener that keeps its
    /// own view of the store (mailnetd's index): never a session's view. (The Maildir store
    /// shows a session that locked a mailbox which did not exist yet an empty snapshot, as it
    /// holds no flock on it; this lists what was delivered to it since.) By default snapshot().
    virtual result<std::vector<message_info>> contents(std::string_view mailbox) { return snapshot(mailbox); }
    /// Whether a delivery of this store object has made `id` visible in `mailbox` and not yet
    /// told its subscribers (it will, or take it back): not a message another program wrote.
    bool delivering(std::string_view mailbox, std::string_view id) const { return events_->expected(mailbox, id); }
    /// Opens a message of the snapshot by id (found again if renamed meanwhile); errc::not_found
    /// if it is gone, another error if it is no longer what the snapshot announced (not a
    /// regular file, or another size).
    virtual result<message> open(std::string_view mailbox, std::string_view id) = 0;
    /// At QUIT: deletes `deleted` and marks `seen` as seen. One error_code per id of
    /// `deleted` (in order); a failure to mark seen is logged, not returned. An id already gone
    /// counts as deleted. Also callable without lock() (mailnetd's HTTP DELETE): a message
    /// deleted so while a POP3 session holds the mailbox is gone for that session too: its
    /// open() answers errc::not_found (RETR: -ERR) and its own commit of the id succeeds.
    virtual std::vector<std::error_code> commit(std::string_view mailbox, std::span<const std::string> deleted,
                                                std::span<const std::string> seen) = 0;
    /// Starts a delivery of one message to every mailbox in `mailboxes` (created on demand).
    virtual result<std::unique_ptr<delivery>> begin_delivery(std::span<const std::string> mailboxes) = 0;

    /// The mailboxes that delivery made and that are still there (a mailbox emptied by
    /// deletions may stay), by name as begin_delivery() was given it, sorted; no lock needed.
    /// errc::unsupported where the store cannot tell (a Maildir folder, store_functions
    /// without on_mailboxes).
    virtual result<std::vector<std::string>> mailboxes() { return unexpected(errc::unsupported); }

    /// Whether concurrent deliveries are best committed together now, by one thread, with
    /// commit_together() (net::delivery_committer), rather than each by its own commit() on a
    /// pool thread: true for the Maildir store, whose commit_batch() shares more than
    /// concurrent commit() calls can, and for the PostgreSQL store while nobody subscribes.
    /// May change while the store is used: ask for each delivery.
    virtual bool commits_in_groups() const noexcept { return false; }

    /// How long a delivery committer may hold back a group smaller than its recent ones,
    /// waiting for the messages about to end, when it commits this store's deliveries; zero:
    /// never (the default). Worth it where each commit costs CPU on the cores the front-ends
    /// use too (a PostgreSQL transaction: the PostgreSQL store says 3 ms), not where a commit
    /// waits on a device (the Maildir store's flushes, where holding back only idles the disk).
    virtual std::chrono::microseconds group_linger() const noexcept { return {}; }

    /// Whether begin_delivery(mailboxes) does no slow work (the Maildir store: every mailbox
    /// already made and known, so no mkdir and no fsync; the PostgreSQL store: always, it
    /// needs no database until the commit), so a committer's thread can begin it without
    /// holding up the others. False when unsure.
    virtual bool knows_mailboxes(std::span<const std::string> mailboxes) {
        (void)mailboxes;
        return false;
    }

    /// A hint, from a delivery committer after each group (net::delivery_committer): more
    /// deliveries to `mailboxes` may follow soon, so whatever slow work their begin_delivery()
    /// could do ahead is best started now, on a thread of the store's own; the call itself must
    /// be quick. The Maildir store keeps files made ahead in the `tmp/` of a mailbox hinted
    /// twice within a second (creating an inode is most of a lone client's wait on this disk,
    /// after the flushes), which its next deliveries take if they come within
    /// prepared_lifetime (maildir_options::made_ahead_lifetime). Never fails; the default does
    /// nothing.
    virtual void prepare_delivery(std::span<const std::string> mailboxes) { (void)mailboxes; }
    /// How long what prepare_delivery() made ahead waits for a delivery before it is removed.
    static constexpr std::chrono::seconds prepared_lifetime{2};

    /// Delivers a whole message held in memory: begin_delivery, write, commit.
    result<void> deliver(std::span<const std::string> mailboxes, std::string_view octets);

    /// Calls `listener` after each delivery this store object made durable (once per mailbox,
    /// when commit() succeeded, before it returns) and after each message a commit() deleted
    /// (once per id), on the thread that did it, one event at a time store-wide, in `seq`
    /// order; a message's `deleted` never comes before its `delivered`. It must be
    /// quick and thread-safe, and must not call this store's lock/commit/delivery methods. Only
    /// this process's changes through this object are told (a PostgreSQL store will tell every
    /// front-end's). Keep the subscription: destroying it unsubscribes. The Maildir and memory
    /// stores tell both kinds; store_functions tells the deletions its on_delete made.
    virtual subscription subscribe(event_hub::listener listener) { return events_->subscribe(std::move(listener)); }

protected:
    /// The subscribers, for implementations (a delivery keeps the pointer past its store).
    const std::shared_ptr<event_hub>& events() const noexcept { return events_; }
    /// Tells the subscribers that `ids` were deleted from `mailbox` (after a commit()).
    void tell_deleted(std::string_view mailbox, const std::vector<std::string>& ids) const;

private:
    std::shared_ptr<event_hub> events_ = std::make_shared<event_hub>();
};

/// The same hooks as std::function slots (the seed's lock / unlock / stat / size / get / dele
/// callbacks); an empty slot means the default. Whatever the slots do, lock() also takes an
/// in-process table, so two sessions of one process never share a mailbox.
struct store_functions : store {
    /// Cross-process or remote lock; default: none beyond the in-process table.
    std::function<result<void>(std::string_view mailbox)> on_lock;
    /// Releases on_lock's lock; default: nothing.
    std::function<void(std::string_view mailbox)> on_unlock;
    /// The messages; default: none (every mailbox is empty).
    std::function<result<std::vector<message_info>>(std::string_view mailbox)> on_snapshot;
    /// One message; default: errc::not_found. Wrap bytes with string_source() or file_source().
    std::function<result<message>(std::string_view mailbox, std::string_view id)> on_open;
    /// Deletes one message at QUIT; default: errc::unsupported (QUIT answers -ERR [SYS/TEMP]).
    std::function<std::error_code(std::string_view mailbox, std::string_view id)> on_delete;
    /// Marks one message seen at QUIT; default: nothing. A failure is logged, not returned.
    std::function<std::error_code(std::string_view mailbox, std::string_view id)> on_seen;
    /// Starts a delivery (SMTP); default: errc::unsupported.
    std::function<result<std::unique_ptr<delivery>>(std::span<const std::string> mailboxes)> on_begin_delivery;
    /// The mailboxes (store::mailboxes); default: errc::unsupported.
    std::function<result<std::vector<std::string>>()> on_mailboxes;
    /// Where a failure of on_seen is reported.
    log_sink log = stderr_log();

    result<void> lock(std::string_view mailbox) override;
    void unlock(std::string_view mailbox) noexcept override;
    result<std::vector<message_info>> snapshot(std::string_view mailbox) override;
    result<message> open(std::string_view mailbox, std::string_view id) override;
    std::vector<std::error_code> commit(std::string_view mailbox, std::span<const std::string> deleted,
                                        std::span<const std::string> seen) override;
    result<std::unique_ptr<delivery>> begin_delivery(std::span<const std::string> mailboxes) override;
    result<std::vector<std::string>> mailboxes() override;

private:
    std::mutex mutex_;                        // guards locked_
    std::set<std::string, std::less<>> locked_;  // mailboxes locked in this process
};

/// How a Maildir delivery makes its `tmp/` file durable before linking it into `new/` (the
/// first of its two group-commit rounds; the second fsyncs each target's `new/`). See
/// docs/libmailnet.md "Durable delivery" for the measurements behind the default.
enum class maildir_data_sync {
    file,      ///< fdatasync of each file, by its own delivery, in parallel with the others
    syncfs,    ///< one syncfs(2) of the file system (plus a cache flush) covers every file of a group
               ///< (only on ext2/3/4, xfs, btrfs, tmpfs; elsewhere, or after a syncfs error: `file`)
    adaptive,  ///< syncfs for groups of at least `syncfs_min_group` unless it takes over 4 times
               ///< fdatasync's time per file (measured as it runs); fdatasync otherwise
};

/// Options of the Maildir store.
struct maildir_options {
    std::filesystem::path root;           ///< DIR: mailboxes are DIR/<encoded name>/{tmp,new,cur}
    std::string hostname;                 ///< for file names; empty: gethostname()
    bool fsync = true;                    ///< fsync files and directories on delivery (tests may turn off)
    maildir_data_sync data_sync = maildir_data_sync::adaptive;  ///< with `fsync`: how file data is made durable
    std::size_t syncfs_min_group = 3;     ///< adaptive: the smallest group a syncfs may serve
    std::chrono::hours tmp_max_age{36};   ///< tmp/ files older than this are removed at start
    log_sink log = stderr_log();          ///< where problems are reported
    std::function<std::chrono::system_clock::time_point()> clock;  ///< empty: system clock
    /// Each delivery checks that a mailbox this store already made or found complete still has
    /// its new/ and cur/ (two lstat), so that one removed meanwhile is made again by the next
    /// delivery. false: checked once per store (a fetch into one folder); a mailbox removed
    /// behind its back then fails its deliveries at the link into new/ (ENOENT) or goes
    /// without cur/, until a new store checks it again. A missing tmp/ is made again either way.
    bool recheck_mailboxes = true;
    /// Files made ahead for a busy mailbox (store::prepare_delivery): how long one waits for a
    /// delivery before it is removed, and how close two hints make a mailbox busy. Tests
    /// change them; a server keeps the defaults.
    std::chrono::milliseconds made_ahead_lifetime = store::prepared_lifetime;
    std::chrono::milliseconds made_ahead_busy{1000};
    /// With `fsync`, on ext2/3/4 and xfs: a message's octets past this many are written with
    /// O_DIRECT, in aligned blocks from a buffer of the delivery's own (256 KiB), instead of
    /// through the page cache: a large message then costs no copy into freshly allocated page
    /// cache and its data round finds it written (docs/libmailnet.md, "Direct writes"). 0:
    /// never. Other file systems, or a descriptor that refuses O_DIRECT: the page cache.
    std::uint64_t direct_io_from = 0;
};

/// A Maildir store (DESIGN.md "On disk"), readable by Dovecot and mutt.
result<std::unique_ptr<store>> open_maildir_store(maildir_options options);

/// One Maildir folder: `options.root` is itself the Maildir (ROOT/{tmp,new,cur}, created if
/// missing), as a fetcher's `--maildir DIR` names it. A store with a single mailbox: every
/// non-empty mailbox name refers to ROOT; delivery has the store's guarantees.
result<std::unique_ptr<store>> open_maildir_folder(maildir_options options);

/// A store in memory: same semantics as Maildir, nothing on disk.
std::unique_ptr<store> make_memory_store();

/// The one function that turns a mailbox name into a directory name: escapes '%', '/',
/// '\', NUL, control bytes, a leading '.', and the names "." and ".." as %XX; a result
/// over 200 octets becomes a hash. Never empty, never leaves the store's root.
std::string encode_mailbox_name(std::string_view name);

/// The mailbox name a directory name of encode_mailbox_name() stands for; nullopt for a
/// hashed name (the Maildir store keeps those names in a file) or one encode_mailbox_name()
/// would not have made (a foreign folder).
std::optional<std::string> decode_mailbox_name(std::string_view directory);

/// A delivery's target mailboxes for a store's begin_delivery(): each once (the same mailbox
/// named twice receives the message once), in the order given; errc::bad_input for none or an
/// empty name.
result<std::vector<std::string>> delivery_targets(std::span<const std::string> mailboxes);

/// The mailbox for an SMTP recipient address: ASCII letters lowercased, UTF-8 untouched.
std::string mailbox_for_address(std::string_view address);

/// UIDL for a Maildir base name: itself when 1-70 octets in 0x21-0x7E, else
/// base32(SHA-256(name)) truncated (DESIGN.md "UIDL").
std::string uidl_for_id(std::string_view base_name);

}  // namespace mailnet
