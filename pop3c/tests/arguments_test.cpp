// arguments_test.cpp: pop3c's positional argument checks: TOP's LINES is a plain decimal
// number, and a huge one means the whole message (RFC 1939 7), never a smaller count.
#include "arguments.hpp"

#include <string>

#include <gtest/gtest.h>

namespace {

using mailnet::pop3c::parse_line_count;

TEST(pop3c_arguments, line_count_is_decimal_digits) {
    EXPECT_EQ(parse_line_count("0"), 0u);
    EXPECT_EQ(parse_line_count("5"), 5u);
    EXPECT_EQ(parse_line_count("007"), 7u);
    EXPECT_EQ(parse_line_count("4294967295"), 4294967295u);
    for (const char* bad : {"", "-1", "+1", " 1", "1 ", "3x", "0x10", "1e3", "-0"})
        EXPECT_FALSE(parse_line_count(bad)) << bad;
}

TEST(pop3c_arguments, a_huge_line_count_saturates_instead_of_wrapping) {
    // Before: std::stoul then a cast to 32 bits: 4294967296 became TOP n 0 (the header only),
    // and "-1" was taken as ULONG_MAX.
    EXPECT_EQ(parse_line_count("4294967296"), 4294967295u);
    EXPECT_EQ(parse_line_count("99999999999"), 4294967295u);
    EXPECT_EQ(parse_line_count("18446744073709551616"), 4294967295u);
    EXPECT_EQ(parse_line_count(std::string(400, '9')), 4294967295u);
}

}  // namespace
