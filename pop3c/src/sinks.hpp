// sinks.hpp: where `pop3c fetch` puts what it retrieves (DESIGN.md "Command lines": --maildir,
// --mbox, --stdout), in batches made durable by flush() before the server deletes (RFC 1939 6).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "mailnet/error.hpp"
#include "mailnet/log.hpp"

namespace mailnet::pop3c {

/// One message on its way into a sink. Not thread-safe; its sink must outlive it.
class sink_message {
public:
    virtual ~sink_message();  ///< aborts if neither complete() nor abort() was called
    /// Appends octets of the message as stored (LF line ends), in chunks split anywhere.
    virtual result<void> write(std::string_view octets) = 0;
    /// All octets are written. The message is durable only once the sink's flush() succeeds.
    /// After an error the message is gone (as after abort()).
    virtual result<void> complete() = 0;
    /// Drops the message: nothing of it stays (the stream sink cannot take back its output).
    virtual void abort() noexcept = 0;
    /// After complete(): where the message can be found again after a crash, for
    /// message_sink::holds() (Maildir: its file name's unique part; mbox: its place in the
    /// file and a digest of its octets). Printable, no spaces; empty: it cannot be found.
    virtual std::string locator() const { return {}; }
};

/// A destination for fetched messages. The caller deletes a message on the server (or records
/// it as fetched) only after a flush() that covered it succeeded.
class message_sink {
public:
    virtual ~message_sink();
    /// Starts a message of about `size_hint` octets (the server's LIST size; 0 if unknown).
    virtual result<std::unique_ptr<sink_message>> begin(std::uint64_t size_hint) = 0;
    /// Makes every completed message durable. Any error means that *none* of the messages
    /// completed since the last successful flush may be counted as stored: the caller keeps
    /// them on the server. The mbox sink cuts them off again; the Maildir sink leaves those
    /// that reached new/ (a later fetch stores them twice: a duplicate, never a loss). A
    /// failed commit (Maildir) or write (stream) fails the whole batch, and begin() refuses
    /// until flush() (or finish_flush()) has reported it: a batch being retrieved while the
    /// one before failed its flush stops there. In the mbox sink a failed message is cut off
    /// alone.
    virtual result<void> flush() = 0;
    /// The same in two steps, so that the next batch can be retrieved meanwhile: start_flush()
    /// begins making durable the messages completed so far, finish_flush() waits for that and
    /// reports it as flush() would. Messages begun and completed in between belong to the
    /// next flush. One flush at a time: each start_flush() is followed by its finish_flush()
    /// before any other flush call. The Maildir sink with defer_commits and a committer overlaps
    /// them (its committer commits the batch); the others flush in start_flush().
    virtual void start_flush() { started_ = flush(); }
    virtual result<void> finish_flush() { return std::exchange(started_, result<void>{}); }
    /// Whether start_flush() returns before the flush is done, so that work can overlap it.
    virtual bool flushes_in_background() const { return false; }
    /// Messages completed since the last flush() or start_flush().
    virtual std::size_t pending() const = 0;
    /// A hint: `messages` more messages will be begun (the fetch's list). The Maildir sink then
    /// opens files ahead of begin() for them (maildir_sink_options::open_ahead at most).
    virtual void expect(std::size_t messages) { (void)messages; }
    /// `messages` of those expect() announced will not be begun after all (refused by the
    /// server): files opened ahead for them are let go.
    virtual void expect_fewer(std::size_t messages) { (void)messages; }
    /// Whether the message a locator() names is there (a run cut off between its flush and
    /// its record in the state file). False for an empty or foreign locator.
    virtual bool holds(std::string_view locator) {
        (void)locator;
        return false;
    }
    /// Before anything else, with every pending locator of a run that was cut off (none is
    /// fine): the mbox sink cuts the file back to where the batch that run was appending
    /// began, when its spool shows the file's end is part of that batch (docs/pop3c.md). An
    /// error: the file could not be read or cut.
    virtual result<void> recover(std::span<const std::string> locators) {
        (void)locators;
        return {};
    }

private:
    result<void> started_;  // the default start_flush()'s result, for finish_flush()
};

/// How a Maildir sink commits.
struct maildir_sink_options {
    /// A committer thread commits the completed messages in groups (whatever completed while
    /// the group before was being committed), while the caller goes on; false: each complete()
    /// commits its message alone before it returns (and flush() a held batch as one group).
    bool commit_in_background = true;
    /// Completed messages not yet committed at most; complete() waits beyond (memory and
    /// open descriptors stay bounded however fast the server sends). Not with defer_commits,
    /// where the caller's batches bound them (two at once when flushes overlap retrieval).
    std::size_t max_outstanding = 256;
    /// For the file names; empty: gethostname().
    std::string hostname;
    /// Commit nothing before flush(): completed messages wait in tmp/ (their descriptors
    /// open), so none is visible in new/ before the caller recorded its locator (a run cut
    /// off then leaves only tmp/ files, which are never delivered); flush() commits them as
    /// one group. `pop3c fetch` uses it whenever it keeps a state file.
    bool defer_commits = false;
    /// A message's octets past this many are written with O_DIRECT, not through the page
    /// cache (maildir_options::direct_io_from); 0: never.
    std::uint64_t direct_io_from = 128 * 1024;
    /// tmp/ files opened ahead at most for the messages expect() announced (each holds a
    /// descriptor); without expect(), at most 16 and no more than messages begun so far.
    std::size_t open_ahead = 64;
};

/// `--maildir DIR`: DIR/{tmp,new,cur}, created if missing; messages land in new/ through the
/// Maildir store's delivery (libmailnet open_maildir_folder: names, tmp/ -> new/, fsync).
result<std::unique_ptr<message_sink>> open_maildir_sink(const std::filesystem::path& dir, log_sink log,
                                                        maildir_sink_options options = {});

/// How an mbox sink opens its file and dates its messages.
struct mbox_sink_options {
    /// How long to wait for another program's lock on the file before giving up.
    std::chrono::milliseconds lock_wait{5000};
    /// The time in each message's From_ line; empty: the system clock.
    std::function<std::chrono::system_clock::time_point()> clock;
    /// Messages wait in a spool until flush() appends them (the caller records their
    /// locators first); false: each is appended to FILE as it is written (cut off again if it
    /// fails) and flush() only fsyncs. `pop3c fetch` holds its batches whenever it keeps a
    /// state file.
    bool hold_batches = true;
    /// The spool's file (mode 0600, locked while the sink lives, removed when it closes unless
    /// the next run needs it): what a run killed while it appended left in it (a header naming
    /// FILE and where in it the batch began, then the batch) lets recover() tell part of that
    /// batch from other mail. Empty: an unnamed file beside FILE, else in $TMPDIR or /tmp, and
    /// recover() cuts nothing. `pop3c fetch` uses STATE.spool.
    std::filesystem::path spool;
};

/// `--mbox FILE`: mboxrd, appended to FILE (created 0600 if missing) under an fcntl and an
/// flock write lock held for the sink's lifetime (errc::mailbox_in_use, logged, when another
/// program holds either beyond `lock_wait`). Each message: `From SENDER DATE` (SENDER from its
/// first Return-Path, else MAILER-DAEMON; DATE as asctime(), UTC), its lines matching
/// `^>*From ` with one more '>', then a line end and an empty line. Messages wait in a spool
/// until flush() appends them and fsyncs FILE once (see hold_batches and spool); a failed or
/// aborted message is cut off again, a failed append or fsync cuts FILE back to its last
/// flush. One message at a time; flush() only between messages (errc::bad_input while one is
/// open). A spool in use by another sink is errc::mailbox_in_use.
result<std::unique_ptr<message_sink>> open_mbox_sink(const std::filesystem::path& file, log_sink log,
                                                     mbox_sink_options options = {});

/// `--stdout`: the octets as they come, nothing between messages; flush() is fflush(), and
/// fsync() too when `out` is a regular file.
std::unique_ptr<message_sink> make_stream_sink(std::FILE* out);

}  // namespace mailnet::pop3c
