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

std::string log_text(std::string_view text, std::size_t max_octets) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (const char ch : text.substr(0, max_octets)) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '\\') {
            out += "\\\\";
        } else if (c < 0x20 || c >= 0x7f) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += ch;
        }
    }
    if (text.size() > max_octets) out += "...";
    return out;
}

}  // namespace mailnet
