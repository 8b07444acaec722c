// error_test.cpp: result<T> and the mailnet error category.
#include "mailnet/error.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace {

mailnet::result<int> parse_digit(char c) {
    if (c < '0' || c > '9') return mailnet::unexpected(mailnet::errc::bad_input);
    return c - '0';
}

TEST(result, holds_a_value_or_an_error) {
    auto ok = parse_digit('7');
    ASSERT_TRUE(ok);
    EXPECT_EQ(*ok, 7);
    EXPECT_FALSE(ok.error());
    auto bad = parse_digit('x');
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error(), mailnet::errc::bad_input);
    EXPECT_EQ(bad.error().message(), "malformed input");
    EXPECT_STREQ(bad.error().category().name(), "mailnet");
    EXPECT_EQ(bad.value_or(-1), -1);
}

TEST(result, move_only_values_and_void) {
    mailnet::result<std::unique_ptr<std::string>> r = std::make_unique<std::string>("x");
    auto p = std::move(r).value();
    EXPECT_EQ(*p, "x");
    mailnet::result<void> v;
    EXPECT_TRUE(v);
    mailnet::result<void> e = mailnet::unexpected(mailnet::errc::io_error);
    EXPECT_EQ(e.error(), mailnet::errc::io_error);
}

}  // namespace
