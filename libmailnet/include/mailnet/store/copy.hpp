// mailnet/store/copy.hpp: copying every mailbox of one store into another (`mailnet-store copy
// FROM TO`, DESIGN.md "On disk"): identical bytes; UIDLs and seen flags kept where the target's
// format allows (delivery::keep); a message whose UIDL the target already has is not copied
// again, so an interrupted copy is finished by running it again.
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

#include "mailnet/error.hpp"
#include "mailnet/log.hpp"
#include "mailnet/store/store.hpp"

namespace mailnet {

/// What a copy did.
struct copy_report {
    std::size_t mailboxes = 0;   ///< mailboxes gone through
    std::size_t copied = 0;      ///< messages stored in the target
    std::size_t already = 0;     ///< messages the target had already (same mailbox and UIDL)
    std::size_t new_uidls = 0;   ///< copied messages the target gave a UIDL of its own
    std::uint64_t octets = 0;    ///< octets copied (as stored)
};

/// How a copy reports.
struct copy_options {
    /// Problems (which mailbox, which message, why) and one line per mailbox at info level.
    log_sink log = null_log();
};

/// Copies every mailbox of `from` (from.mailboxes()) into `to`, each under the POP3 lock of
/// both stores (a mailbox in use by a session is an error: errc::mailbox_in_use, nothing of it
/// half-copied beyond the messages already committed). Stops at the first failure, logged
/// with the mailbox and message; what was copied before it stays (run again to finish).
result<copy_report> copy_store(store& from, store& to, const copy_options& options = {});

}  // namespace mailnet
