// types_test.cpp: the seed's index words (start, next, end, last) resolved as it documents
// them, without its bugs (an out-of-range number is an error, LAST asked only when needed),
// and the typed failures (exceptions or checks).
#include "mailnet/pop3c/types.hpp"

#include <gtest/gtest.h>

namespace {

using namespace mailnet::pop3c;

struct last_counter {
    std::uint32_t value = 0;
    int asked = 0;
    std::function<outcome<std::uint32_t>()> fn() {
        return [this]() -> outcome<std::uint32_t> {
            ++asked;
            return value;
        };
    }
};

range ok(outcome<range> r) {
    EXPECT_TRUE(r) << (r ? "" : r.why().message());
    return r ? *r : range{};
}

TEST(pop3c_index, parses_numbers_and_words) {
    EXPECT_EQ(message_index::parse("12")->n, 12u);
    EXPECT_EQ(message_index::parse("next")->w, message_index::word::next);
    EXPECT_EQ(message_index::parse("last")->w, message_index::word::last);
    for (const char* bad : {"", "0", "-1", "1x", "first", "99999999999"})
        EXPECT_EQ(message_index::parse(bad).error(), make_error_code(errc::bad_index)) << bad;
}

TEST(pop3c_index, resolves_as_the_seed_documents) {
    last_counter last;
    last.value = 3;
    auto r = ok(resolve(message_index(message_index::word::start), message_index(message_index::word::end), 10, last.fn()));
    EXPECT_EQ(r.first, 1u);
    EXPECT_EQ(r.last, 10u);
    EXPECT_EQ(last.asked, 0);  // LAST only for next and last (the seed asked it every time)
    r = ok(resolve(message_index(message_index::word::next), message_index(message_index::word::end), 10, last.fn()));
    EXPECT_EQ(r.first, 4u);
    EXPECT_EQ(r.last, 10u);
    r = ok(resolve(message_index(message_index::word::start), message_index(message_index::word::last), 10, last.fn()));
    EXPECT_EQ(r.first, 1u);
    EXPECT_EQ(r.last, 3u);
    r = ok(resolve(message_index(message_index::word::end), std::nullopt, 10, last.fn()));
    EXPECT_EQ(r.first, 10u);
    EXPECT_EQ(r.last, 10u);
    r = ok(resolve(message_index(5), std::nullopt, 10, last.fn()));
    EXPECT_EQ(r.size(), 1u);
    EXPECT_EQ(r.first, 5u);
}

TEST(pop3c_index, next_with_nothing_new_is_empty_and_numbers_out_of_range_are_errors) {
    last_counter last;
    last.value = 10;
    EXPECT_TRUE(ok(resolve(message_index(message_index::word::next), message_index(message_index::word::end), 10, last.fn())).empty());
    EXPECT_TRUE(ok(resolve(message_index(message_index::word::next), std::nullopt, 10, last.fn())).empty());
    EXPECT_TRUE(ok(resolve(message_index(message_index::word::start), message_index(message_index::word::end), 0, last.fn())).empty());
    // The seed silently gave nothing for these.
    EXPECT_EQ(resolve(message_index(11), std::nullopt, 10, last.fn()).error(), make_error_code(errc::no_such_message));
    EXPECT_EQ(resolve(message_index(2), message_index(11), 10, last.fn()).error(), make_error_code(errc::no_such_message));
    EXPECT_EQ(resolve(message_index(message_index::word::last), std::nullopt, 10, last.fn()).error(), make_error_code(errc::bad_index));
    EXPECT_EQ(resolve(message_index(1), message_index(message_index::word::next), 10, last.fn()).error(), make_error_code(errc::bad_index));
}

TEST(pop3c_outcome, value_throws_the_typed_error) {
    outcome<int> bad(failure{make_error_code(errc::server_error), "mailbox locked", "IN-USE"});
    EXPECT_FALSE(bad);
    try {
        (void)bad.value();
        FAIL() << "no exception";
    } catch (const error& e) {
        EXPECT_EQ(e.code(), make_error_code(errc::server_error));
        EXPECT_EQ(e.why().code, "IN-USE");
        EXPECT_STREQ(e.what(), "server: [IN-USE] mailbox locked");
    }
    outcome<int> good(7);
    EXPECT_EQ(good.value(), 7);
}

TEST(pop3c_failure, a_message_shows_the_servers_control_octets_escaped) {
    // "-ERR \x1b]0;pwned\x07\x1b[2J": a terminal would take the escape sequences as commands.
    const failure f{make_error_code(errc::server_error), "\x1b]0;pwned\x07\x1b[2J caf\xc3\xa9\x7f", "SYS\x1b"};
    EXPECT_EQ(f.message(), "server: [SYS\\x1b] \\x1b]0;pwned\\x07\\x1b[2J caf\xc3\xa9\\x7f");
}

}  // namespace
