// state_file.hpp: `pop3c fetch --new-only --state FILE` (DESIGN.md "Command lines"): the UIDLs
// (RFC 1939 7) of the messages already stored locally, kept across runs and replaced atomically.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "mailnet/error.hpp"
#include "mailnet/log.hpp"
#include "mailnet/posix_io.hpp"

namespace mailnet::pop3c {

/// True for a UIDL as RFC 1939 7 allows it: 1-70 octets, each in 0x21-0x7E.
bool is_valid_uidl(std::string_view uid) noexcept;

/// The set of UIDLs known to be stored locally. The file: a first line
/// `# mailnet pop3c state 3`, then `# account ACCOUNT` (the account it is kept for, see
/// account_of()), then one `UIDL SIZE` per line (SIZE: the message's octets as the server's
/// LIST gave them; a line without one, from version 1 or 2, matches any size), in the order
/// they were added, then the pending ones as `? UIDL LOCATOR SIZE`: messages written locally
/// whose flush had not been confirmed when the file was saved (LOCATOR, where the sink can find
/// them, may be empty). Version 1 files (no account line) and version 2 files (no sizes) are
/// read too; a version 1 file takes the account of its next run.
class state_file {
public:
    /// The first line of every state file written (version 3: sizes).
    static constexpr std::string_view header = "# mailnet pop3c state 3";
    /// The first lines of the versions before, still read.
    static constexpr std::string_view header_v2 = "# mailnet pop3c state 2";
    static constexpr std::string_view header_v1 = "# mailnet pop3c state 1";
    /// A size not known (a record of version 1 or 2): matches any size.
    static constexpr std::uint64_t unknown_size = ~std::uint64_t{0};

    /// A pending record (add_pending()).
    struct pending_record {
        std::string uid;
        std::string locator;
        std::uint64_t size = unknown_size;
        bool operator==(const pending_record&) const = default;
    };

    /// The account a state is kept for: `USER@HOST:PORT`, the host in lower case, and in the
    /// user and host every octet outside 0x21-0x7E, and '%', written as %XX (so the line is
    /// printable and no name is refused).
    static std::string account_of(std::string_view user, std::string_view host, std::uint16_t port);

    /// Locks `path`.lock (made if missing; flock, held while the state lives): another run
    /// holding it is errc::mailbox_in_use, logged. Then reads `path`; a missing file (or an
    /// empty one) is an empty state. A line that is not a valid UIDL, or a wrong first line,
    /// is errc::bad_config, logged as FILE:LINE (never the line itself); an unreadable file is
    /// the system's error, logged.
    static result<state_file> load(std::filesystem::path path, log_sink log = null_log());

    /// Binds the state to `account` (from account_of()): a state kept for no account takes it
    /// (written by the next save()); one kept for another account is errc::bad_config and
    /// stays as it was (account() names it): its UIDLs are another server's, so skipping or
    /// forgetting by them would lose mail. An account that is empty or has an octet outside
    /// 0x21-0x7E is errc::bad_input, and the state stays as it was.
    result<void> bind(std::string_view account);
    /// The account this state was kept for; empty if none yet.
    const std::string& account() const noexcept { return account_; }

    /// Whether `uid` is stored locally. O(1).
    bool contains(std::string_view uid) const;
    /// Whether `uid` is stored locally as a message of `size` octets (or of a size not
    /// recorded): a server that gives a stored message's UIDL to a new message of another size
    /// (RFC 1939 7 says it never should) does not have the new one taken for stored. O(1).
    bool holds(std::string_view uid, std::uint64_t size) const;
    /// Records `uid` as stored, `size` octets (LIST's); errc::bad_input (nothing recorded) if it
    /// is not a valid UIDL, so a saved file always loads again. Adding one already there
    /// records the new size.
    result<void> add(std::string_view uid, std::uint64_t size = unknown_size);
    /// Records `uid` as written to the sink at `locator`, not yet known to be durable: saved
    /// before a flush, so that a run cut off after the flush and before the state is saved
    /// again can ask the sink (message_sink::holds) instead of fetching it a second time.
    /// errc::bad_input for an invalid UIDL or a locator with a space, CR or LF.
    result<void> add_pending(std::string_view uid, std::string_view locator, std::uint64_t size = unknown_size);
    /// The pending records, removed from the state, in the order added.
    std::vector<pending_record> take_pending();
    /// How many records are pending.
    std::size_t pending() const noexcept { return pending_.size(); }
    /// Forgets every UIDL not in `on_server` (the messages deleted on the server), so the file
    /// does not grow forever; returns how many were forgotten. Linear in both sizes.
    std::size_t retain_only(std::span<const std::string> on_server);
    /// Forgets `uids`, stored or pending (a server that broke the protocol: what this run
    /// recorded is not trusted). Returns how many were known.
    std::size_t forget(std::span<const std::string> uids);
    /// Writes the state: FILE.tmp in the same directory, fsync, rename over FILE, fsync the
    /// directory. A crash leaves the old file or the new one, never a mix. Linear in size().
    result<void> save();

    /// How many UIDLs are known.
    std::size_t size() const noexcept { return order_.size(); }
    /// The file this state is read from and saved to.
    const std::filesystem::path& path() const noexcept { return path_; }

    // Moves keep the set's views valid: a deque's move takes its blocks, never its strings.
    state_file(state_file&&) = default;
    state_file& operator=(state_file&&) = default;
    state_file(const state_file&) = delete;
    state_file& operator=(const state_file&) = delete;

private:
    state_file(std::filesystem::path path, log_sink log) : path_(std::move(path)), log_(std::move(log)) {}
    void insert(std::string_view uid, std::uint64_t size);
    /// The size of each of order_'s UIDLs, in its order.
    std::vector<std::uint64_t> sizes_in_order() const;

    std::filesystem::path path_;
    log_sink log_;
    std::string account_;
    // The UIDLs in the order added; the set views the deque's strings (a deque never moves its
    // elements on push_back), so a lookup costs no copy and each UIDL is held once.
    std::deque<std::string> order_;
    std::unordered_map<std::string_view, std::uint64_t> set_;  // uid -> size (unknown_size: any)
    std::vector<pending_record> pending_;
    posix::unique_fd lock_;  // FILE.lock, flock'd: one run per state (load())
};

}  // namespace mailnet::pop3c
