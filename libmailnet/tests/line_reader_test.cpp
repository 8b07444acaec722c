// line_reader_test.cpp: CRLF splitting, the hard limit, bare CR/LF, chunking.
#include "mailnet/line_reader.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using mailnet::line_reader;

// Feeds `in` in chunks of `chunk` bytes and collects lines; "<too long>" marks a skipped one.
std::vector<std::string> split(std::string_view in, std::size_t limit, std::size_t chunk) {
    line_reader r(limit);
    std::vector<std::string> out;
    while (!in.empty()) {
        r.feed(in.substr(0, chunk));
        in.remove_prefix(std::min(chunk, in.size()));
        for (auto s = r.next(); s != line_reader::status::need_more; s = r.next())
            out.push_back(s == line_reader::status::line ? std::string(r.text()) : "<too long>");
    }
    return out;
}

TEST(line_reader, splits_crlf_lines_at_every_chunk_size) {
    const std::string in = "USER alice\r\nPASS secret\r\n\r\nQUIT\r\n";
    for (std::size_t chunk = 1; chunk <= in.size(); ++chunk)
        EXPECT_EQ(split(in, 512, chunk), (std::vector<std::string>{"USER alice", "PASS secret", "", "QUIT"}))
            << "chunk " << chunk;
}

TEST(line_reader, bare_cr_and_bare_lf_are_not_line_ends) {
    EXPECT_EQ(split("a\nb\rc\r\n\n\r\r\n", 512, 100), (std::vector<std::string>{"a\nb\rc", "\n\r"}));
}

TEST(line_reader, incomplete_line_waits) {
    line_reader r(512);
    r.feed("NOOP\r");
    EXPECT_EQ(r.next(), line_reader::status::need_more);
    r.feed("\n");
    ASSERT_EQ(r.next(), line_reader::status::line);
    EXPECT_EQ(r.text(), "NOOP");
}

TEST(line_reader, limit_counts_the_crlf) {
    // limit 8: six octets of text plus CRLF fit, seven do not.
    EXPECT_EQ(split("123456\r\n1234567\r\nok\r\n", 8, 100), (std::vector<std::string>{"123456", "<too long>", "ok"}));
}

TEST(line_reader, over_long_line_is_skipped_without_buffering_it) {
    const std::string big(1 << 20, 'x');
    for (std::size_t chunk : {1u, 7u, 4096u, 1u << 20}) {
        line_reader r(512);
        std::string_view in = big;
        std::size_t most = 0;
        while (!in.empty()) {
            r.feed(in.substr(0, chunk));
            in.remove_prefix(std::min<std::size_t>(chunk, in.size()));
            EXPECT_EQ(r.next(), line_reader::status::need_more);
            most = std::max(most, r.buffered());
        }
        EXPECT_LT(most, 512u) << "chunk " << chunk;
        r.feed("yyy\r\nNOOP\r\n");
        EXPECT_EQ(r.next(), line_reader::status::too_long);
        ASSERT_EQ(r.next(), line_reader::status::line);
        EXPECT_EQ(r.text(), "NOOP");
        EXPECT_EQ(r.next(), line_reader::status::need_more);
    }
}

TEST(line_reader, over_long_line_ending_in_split_crlf) {
    EXPECT_EQ(split("abcdefghij\r\nz\r\n", 5, 1), (std::vector<std::string>{"<too long>", "z"}));
    EXPECT_EQ(split("abcdefghij\r\nz\r\n", 5, 11), (std::vector<std::string>{"<too long>", "z"}));
}

TEST(line_reader, the_head_of_a_dropped_line_is_kept_whatever_the_chunking) {
    // An SMTP server must know a dropped line was a BDAT (its chunk follows).
    const std::string line = "BDAT 5 LAST " + std::string(3000, 'x') + "\r\n";
    for (const std::size_t chunk : {1u, 7u, 512u, 4096u}) {
        line_reader r(512);
        std::string_view in = line;
        line_reader::status last = line_reader::status::need_more;
        while (!in.empty()) {
            r.feed(in.substr(0, chunk));
            in.remove_prefix(std::min<std::size_t>(chunk, in.size()));
            last = r.next();
        }
        ASSERT_EQ(last, line_reader::status::too_long) << "chunk " << chunk;
        EXPECT_EQ(r.too_long_head(), "BDAT 5 LAST xxxx") << "chunk " << chunk;
    }
}

TEST(line_reader, take_buffered_returns_unread_bytes_and_clear_drops_them) {
    line_reader r(512);
    r.feed("DATA\r\nSubject: x\r\n\r\nbody");
    ASSERT_EQ(r.next(), line_reader::status::line);
    EXPECT_EQ(r.text(), "DATA");
    EXPECT_EQ(r.take_buffered(), "Subject: x\r\n\r\nbody");
    EXPECT_EQ(r.buffered(), 0u);
    r.feed("STLS\r\nCAPA\r\n");
    ASSERT_EQ(r.next(), line_reader::status::line);
    r.clear();
    EXPECT_EQ(r.next(), line_reader::status::need_more);
}

}  // namespace
