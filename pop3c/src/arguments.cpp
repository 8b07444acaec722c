// arguments.cpp: checks of pop3c's positional arguments (arguments.hpp).
#include "arguments.hpp"

#include <limits>

namespace mailnet::pop3c {

std::optional<std::uint32_t> parse_line_count(std::string_view text) noexcept {
    if (text.empty()) return std::nullopt;
    constexpr std::uint32_t most = std::numeric_limits<std::uint32_t>::max();
    std::uint64_t n = 0;
    for (const char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        if (n <= most) n = n * 10 + static_cast<std::uint64_t>(c - '0');  // saturates below
    }
    return n > most ? most : static_cast<std::uint32_t>(n);
}

}  // namespace mailnet::pop3c
