// log.cpp: the default log sinks.
#include "mailnet/log.hpp"

#include <cstdio>
#include <string>

namespace mailnet {

log_sink stderr_log(log_level min) {
    return [min](log_level level, std::string_view text) {
        if (level < min) return;
        static constexpr const char* names[] = {"debug", "info", "warning", "error"};
        std::string line = names[static_cast<int>(level)];
        line += ": ";
        line += text;
        line += '\n';
        std::fwrite(line.data(), 1, line.size(), stderr);  // one write per line: lines never interleave
    };
}

log_sink null_log() {
    return [](log_level, std::string_view) {};
}

}  // namespace mailnet
