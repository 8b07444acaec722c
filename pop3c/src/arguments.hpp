// arguments.hpp: checks of pop3c's positional arguments that CLI11 leaves as strings
// (DESIGN.md "Command lines"; message numbers and words are message_index::parse's).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace mailnet::pop3c {

/// TOP's LINES: decimal digits only (no sign, no space, nothing after them). A count beyond
/// 2^32-1 is 2^32-1: "the entire message" either way (RFC 1939 7), never cut down to a smaller
/// count. nullopt if it is not a number.
std::optional<std::uint32_t> parse_line_count(std::string_view text) noexcept;

}  // namespace mailnet::pop3c
