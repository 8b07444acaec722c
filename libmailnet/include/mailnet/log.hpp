// mailnet/log.hpp: the logging hook every component takes. No global logger: a server or
// store gets a sink as a parameter; the default writes one line per event to stderr.
#pragma once

#include <functional>
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

}  // namespace mailnet
