// mailnet/log.hpp: the logging hook every component takes. No global logger: a server or
// store gets a sink as a parameter; the default writes one line per event to stderr.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace mailnet {

/// Severity of a log line.
enum class log_level { debug, info, warning, error };

/// Receives one log line (no trailing newline). Must be thread-safe.
using log_sink = std::function<void(log_level, std::string_view)>;

/// A sink writing "LEVEL: text" lines to stderr, at `min` and above.
log_sink stderr_log(log_level min = log_level::info);

/// A sink that drops everything.
log_sink null_log();

/// Peer-supplied text (a login name, a mailbox) made safe for a log line: at most `max_octets`
/// of it, every octet outside printable ASCII as `\xNN` (so a CR or LF in it can never start
/// a forged line), `\` doubled, and "..." if it was cut.
std::string log_text(std::string_view text, std::size_t max_octets = 64);

}  // namespace mailnet
