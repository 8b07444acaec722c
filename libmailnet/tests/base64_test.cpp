// base64_test.cpp: RFC 4648 10 test vectors and strictness.
#include "mailnet/base64.hpp"

#include <gtest/gtest.h>

namespace {

TEST(base64, rfc4648_vectors_round_trip) {
    const std::pair<const char*, const char*> vectors[] = {
        {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
    for (auto [plain, coded] : vectors) {
        EXPECT_EQ(mailnet::base64_encode(plain), coded);
        EXPECT_EQ(mailnet::base64_decode(coded), std::optional<std::string>(plain));
    }
    const std::string sasl("\0alice\0secret", 13);
    EXPECT_EQ(mailnet::base64_decode(mailnet::base64_encode(sasl)), sasl);
}

TEST(base64, rejects_malformed_input) {
    for (const char* bad : {"Zg", "Zg=", "Z===", "Zm9v YmFy", "Zm9v\r\n", "Zh==", "Zm9=", "=Zm9", "Zg==Zg==", "Zm9*"})
        EXPECT_FALSE(mailnet::base64_decode(bad)) << bad;
}

}  // namespace
