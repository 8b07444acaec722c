// message_test.cpp: the message handle over a file and over shared bytes: chunked reads,
// rewind, the header block (RFC 5322 2.1, LF or CRLF) and lazy MIME parsing (RFC 2045/2046).
#include "mailnet/store/message.hpp"

#include <mimetic/mimetic.h>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using mailnet::errc;

mailnet::message from_string(std::string s) {
    auto bytes = std::make_shared<const std::string>(std::move(s));
    const auto size = bytes->size();
    return mailnet::message(mailnet::string_source(bytes), size);
}

std::string read_all(mailnet::message& m, std::size_t chunk) {
    std::string out;
    std::vector<char> buf(chunk);
    for (;;) {
        auto n = m.read(buf);
        if (!n) {
            ADD_FAILURE() << n.error().message();
            break;
        }
        if (*n == 0) break;
        out.append(buf.data(), *n);
    }
    return out;
}

// A temporary file holding `content`, opened for reading; the name is unlinked at once.
int temp_file_with(std::string_view content) {
    char name[] = "/tmp/mailnet-message-XXXXXX";
    const int fd = ::mkstemp(name);
    EXPECT_GE(fd, 0);
    ::unlink(name);
    EXPECT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    return fd;
}

const std::string multipart =
    "From: alice@example.org\n"
    "To: bob@example.org\n"
    "Subject: parts\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"XYZ\"\n"
    "\n"
    "preamble\n"
    "--XYZ\n"
    "Content-Type: text/plain\n"
    "\n"
    "hello\n"
    "--XYZ\n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAEC\n"
    "--XYZ--\n";

TEST(message, string_source_reads_in_chunks_and_rewinds) {
    const std::string text = "Subject: x\n\nbody\nmore\n";
    for (std::size_t chunk : {1u, 2u, 7u, 4096u}) {
        auto m = from_string(text);
        EXPECT_EQ(m.stored_octets(), text.size());
        EXPECT_EQ(read_all(m, chunk), text) << chunk;
        ASSERT_TRUE(m.rewind());
        EXPECT_EQ(read_all(m, chunk), text) << chunk;
    }
    auto empty = mailnet::message(mailnet::string_source(nullptr), 0);
    EXPECT_EQ(read_all(empty, 10), "");
}

TEST(message, file_source_reads_with_pread_and_closes_its_descriptor) {
    std::string text;
    for (int i = 0; i < 20000; ++i) text += "line " + std::to_string(i) + "\n";
    const int fd = temp_file_with(text);
    ASSERT_EQ(::lseek(fd, 0, SEEK_END), static_cast<off_t>(text.size()));  // pread ignores the offset
    {
        mailnet::message m(mailnet::file_source(fd), text.size());
        mailnet::message moved = std::move(m);
        EXPECT_EQ(read_all(moved, 333), text);
        ASSERT_TRUE(moved.rewind());
        EXPECT_EQ(read_all(moved, 65536), text);
        auto h = moved.headers();
        ASSERT_TRUE(h);
        EXPECT_EQ(*h, text) << "no empty line: the whole message";
    }
    errno = 0;
    EXPECT_EQ(::fcntl(fd, F_GETFD), -1);
    EXPECT_EQ(errno, EBADF);
}

TEST(message, headers_end_at_the_first_empty_line_lf_or_crlf) {
    struct row {
        std::string text, headers;
    };
    const std::vector<row> rows = {
        {"Subject: a\nTo: b\n\nbody\n\nmore\n", "Subject: a\nTo: b\n\n"},
        {"Subject: a\r\nTo: b\r\n\r\nbody\r\n", "Subject: a\r\nTo: b\r\n\r\n"},
        {"Subject: a\r\n\nbody\n", "Subject: a\r\n\n"},
        {"Subject: a\n\r\nbody\n", "Subject: a\n\r\n"},
        {"\nbody\n", "\n"},
        {"\r\nbody\n", "\r\n"},
        {"Subject: a\rb\n\n", "Subject: a\rb\n\n"},  // a bare CR inside a line ends nothing
        {"Subject: a\n \r\n\n", "Subject: a\n \r\n\n"},
        {"Subject: no body\n", "Subject: no body\n"},
        {"", ""},
    };
    for (const auto& r : rows) {
        auto m = from_string(r.text);
        auto h = m.headers();
        ASSERT_TRUE(h) << r.text;
        EXPECT_EQ(*h, r.headers) << r.text;
        EXPECT_EQ(read_all(m, 5), r.text) << "headers() rewinds";
    }
}

TEST(message, headers_are_bounded) {
    auto m = from_string("Subject: " + std::string(10000, 'x') + "\n\nbody\n");
    EXPECT_EQ(m.headers(1000).error(), errc::too_large);
    EXPECT_EQ(read_all(m, 4096).size(), 10016u) << "rewound after failing too";
    auto exact = from_string("A: b\n\nbody");
    EXPECT_TRUE(exact.headers(6));
    EXPECT_EQ(exact.headers(5).error(), errc::too_large);
    auto no_end = from_string(std::string(100000, 'x'));
    EXPECT_EQ(no_end.headers(50000).error(), errc::too_large);
}

TEST(message, mime_parses_lazily_once) {
    auto m = from_string(multipart);
    auto e = m.mime();
    ASSERT_TRUE(e);
    const mimetic::MimeEntity* entity = *e;
    EXPECT_EQ(entity->header().subject(), "parts");
    EXPECT_TRUE(entity->header().contentType().isMultipart());
    ASSERT_EQ(entity->body().parts().size(), 2u);
    EXPECT_EQ(entity->body().parts().front()->header().contentType().subtype(), "plain");
    auto again = m.mime();
    ASSERT_TRUE(again);
    EXPECT_EQ(*again, entity) << "parsed once";
    EXPECT_EQ(read_all(m, 64), multipart) << "the stream is still at the start";
}

TEST(message, mime_over_a_file) {
    const int fd = temp_file_with(multipart);
    mailnet::message m(mailnet::file_source(fd), multipart.size());
    auto e = m.mime();
    ASSERT_TRUE(e);
    EXPECT_EQ((*e)->header().from().str().find("alice@example.org") != std::string::npos, true);
}

TEST(message, mime_is_bounded) {
    auto m = from_string(multipart);
    EXPECT_EQ(m.mime(10).error(), errc::too_large);
    // A source longer than the size stated: the limit still holds.
    auto lying = mailnet::message(mailnet::string_source(std::make_shared<const std::string>(multipart)), 10);
    EXPECT_EQ(lying.mime(20).error(), errc::too_large);
    EXPECT_TRUE(m.mime(multipart.size()));
    auto braces = mailnet::message(mailnet::string_source(std::make_shared<const std::string>("Subject: x\n\nbody\n")), 17);
    EXPECT_TRUE(braces.mime({})) << "mime({}) is the default limits, not a limit of 0 octets";
}

}  // namespace

namespace {

mailnet::message from_text(std::string text) {
    auto bytes = std::make_shared<const std::string>(std::move(text));
    return mailnet::message(mailnet::string_source(bytes), bytes->size());
}

}  // namespace

TEST(message, mime_survives_an_unterminated_address_group) {
    // mimetic 0.9.8 throws on "group:" without ';' after freeing the field, then crashes.
    auto m = from_text("From: a@example.org\nTo: undisclosed-recipients:\nCc: x: y,\nSubject: hi\n\nbody\n");
    auto e = m.mime();
    ASSERT_TRUE(e);
    EXPECT_NO_THROW((void)(*e)->header().to().size());
    EXPECT_NO_THROW((void)(*e)->header().cc().size());
    EXPECT_EQ((*e)->header().from().size(), 1u);
    EXPECT_EQ((*e)->header().subject(), "hi");
}

namespace {

// A message whose part nests `levels` multiparts deep (the message is level 0): one text leaf inside.
std::string nested_multipart(int levels) {
    std::string m = "Subject: nest\nContent-Type: multipart/mixed; boundary=\"b0\"\n\n";
    for (int i = 1; i <= levels; ++i) {
        m += "--b" + std::to_string(i - 1) + "\n";
        if (i < levels)
            m += "Content-Type: multipart/mixed; boundary=\"b" + std::to_string(i) + "\"\n\n";
        else
            m += "Content-Type: text/plain\n\nleaf\n";
    }
    for (int i = levels - 1; i >= 0; --i) m += "--b" + std::to_string(i) + "--\n";
    return m;
}

int depth_of(const mimetic::MimeEntity& e) {
    int d = 0;
    for (const auto* p : e.body().parts()) d = std::max(d, 1 + depth_of(*p));
    return d;
}

// The stored octets are still there after a refusal.
void expect_still_readable(mailnet::message& m, const std::string& text) {
    std::string head(64, '\0');
    auto n = m.read(head);
    ASSERT_TRUE(n);
    EXPECT_EQ(head.substr(0, *n), text.substr(0, *n));
}

}  // namespace

TEST(message, mime_refuses_a_4_mib_subject) {
    // mimetic grows a field's buffer 128 octets at a time with a full copy: 4 MiB took 18.7 s.
    const std::string text = "Subject: " + std::string(4u << 20, 'x') + "\n\nbody\n";
    auto m = from_text(text);
    auto e = m.mime();
    ASSERT_FALSE(e);
    EXPECT_EQ(e.error(), errc::too_large);
    expect_still_readable(m, text);
    // The same without a colon (mimetic's name buffer), and as folded continuation lines.
    auto name = from_text(std::string(4u << 20, 'x') + "\n\nbody\n");
    EXPECT_EQ(name.mime().error(), errc::too_large);
    std::string folded = "Subject: start\n";
    for (int i = 0; i < 2000; ++i) folded += " " + std::string(70, 'y') + "\n";
    auto f = from_text(folded + "\nbody\n");
    EXPECT_EQ(f.mime().error(), errc::too_large);
}

TEST(message, mime_field_limit_counts_name_value_and_folds) {
    mailnet::mime_limits limits;
    limits.max_field_octets = 20;
    // "Subject" (7) + "0123456789ab" (12) = 19; a fold adds one space for its line break.
    auto ok = from_text("Subject: 0123456789ab\n\nbody\n");
    EXPECT_TRUE(ok.mime(limits));
    auto at = from_text("Subject: 0123456789a\n b\n\nbody\n");  // 7 + 11 + 1 + 1 = 20
    EXPECT_TRUE(at.mime(limits));
    auto over = from_text("Subject: 0123456789a\n bc\n\nbody\n");
    EXPECT_EQ(over.mime(limits).error(), errc::too_large);
    // Body lines are not header fields: a long one is fine.
    auto body = from_text("Subject: s\n\n" + std::string(100000, 'z') + "\n");
    EXPECT_TRUE(body.mime(limits));
}

TEST(message, mime_refuses_nesting_deeper_than_the_limit) {
    auto ok = from_text(nested_multipart(32));
    auto e = ok.mime();
    ASSERT_TRUE(e) << e.error().message();
    EXPECT_EQ(depth_of(**e), 32);
    const std::string deep_text = nested_multipart(33);
    auto deep = from_text(deep_text);
    EXPECT_EQ(deep.mime().error(), errc::too_large);
    expect_still_readable(deep, deep_text);
    mailnet::mime_limits limits;
    limits.max_depth = 3;
    auto three = from_text(nested_multipart(3));
    EXPECT_TRUE(three.mime(limits));
    auto four = from_text(nested_multipart(4));
    EXPECT_EQ(four.mime(limits).error(), errc::too_large);
}

TEST(message, mime_refuses_nesting_deep_enough_to_overflow_the_stack) {
    // Multipart levels with empty boundaries, and message/rfc822 levels (no "multipart" at all).
    std::string multi;
    for (int i = 0; i < 50000; ++i) multi += "Content-Type:multipart/x;boundary=\n\n--\n";
    std::string rfc822;
    for (int i = 0; i < 100000; ++i) rfc822 += "Content-Type: message/rfc822\n\n";
    for (const auto& text : {multi, rfc822}) {
        auto m = from_text(text);
        auto e = m.mime();
        ASSERT_FALSE(e);
        EXPECT_EQ(e.error(), errc::too_large);
        expect_still_readable(m, text);
    }
}

TEST(message, mime_refuses_too_many_entities_fields_and_address_items) {
    // An empty boundary makes each "--" line a new part: about 1 KiB of memory per 4 octets.
    std::string parts = "Content-Type: multipart/mixed; boundary=\"\"\n\n";
    for (int i = 0; i < 999; ++i) parts += "--\n\n";
    auto most = from_text(parts);
    auto e = most.mime();
    ASSERT_TRUE(e) << "the message and 999 parts: 1000 entities";
    EXPECT_EQ((*e)->body().parts().size(), 999u);
    EXPECT_EQ(from_text(parts + "--\n\n").mime().error(), errc::too_large);
    mailnet::mime_limits one;
    one.max_entities = 1;
    EXPECT_TRUE(from_text("Subject: s\n\nbody\n").mime(one)) << "the message alone is one entity";
    EXPECT_EQ(from_text("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--\n").mime(one).error(),
              errc::too_large);
    one.max_entities = 0;
    EXPECT_EQ(from_text("Subject: s\n\nbody\n").mime(one).error(), errc::too_large) << "0: not even the message";

    std::string fields;
    for (int i = 0; i < 10000; ++i) fields += "a:\n";
    EXPECT_TRUE(from_text(fields + "\nbody\n").mime());
    EXPECT_EQ(from_text(fields + "a:\n\nbody\n").mime().error(), errc::too_large);

    mailnet::mime_limits limits;
    limits.max_address_items = 3;
    EXPECT_TRUE(from_text("To: a@x, b@x\nCc: c@x\nX-Other: ,,,,\n\nbody\n").mime(limits));
    EXPECT_EQ(from_text("To: a@x, b@x\nCc: c@x, d@x\n\nbody\n").mime(limits).error(), errc::too_large);
    EXPECT_EQ(from_text("To: " + std::string(65000, ',') + "\n\nbody\n").mime().error(), errc::too_large);
}

TEST(message, mime_refuses_too_many_header_octets_over_all_parts) {
    mailnet::mime_limits limits;
    limits.max_header_octets = 200;
    std::string m = "Content-Type: multipart/mixed; boundary=b\n\n";
    for (int i = 0; i < 4; ++i) m += "--b\nContent-Type: text/plain\n\nx\n";  // 26 header octets each
    EXPECT_TRUE(from_text(m + "--b--\n").mime(limits));
    for (int i = 0; i < 4; ++i) m += "--b\nContent-Type: text/plain\n\nx\n";
    EXPECT_EQ(from_text(m + "--b--\n").mime(limits).error(), errc::too_large);
}

TEST(message, mime_still_parses_ordinary_structure) {
    const std::string text =
        "From: alice@example.org\n"
        "To: bob@example.org, carol@example.org\n"
        "Subject: structure\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed;\n boundary=\"outer\"\n"
        "\n"
        "--outer\n"
        "Content-Type: multipart/alternative; boundary=inner\n"
        "\n"
        "--inner\n"
        "Content-Type: text/plain\n"
        "\n"
        "plain\n"
        "--inner\n"
        "Content-Type: text/html\n"
        "\n"
        "<p>html</p>\n"
        "--inner--\n"
        "--outer\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "Subject: forwarded\n"
        "Content-Type: text/plain\n"
        "\n"
        "inner body\n"
        "--outer--\n";
    auto m = from_text(text);
    auto e = m.mime();
    ASSERT_TRUE(e) << e.error().message();
    const auto& top = **e;
    EXPECT_EQ(top.header().subject(), "structure");
    EXPECT_EQ(top.header().to().size(), 2u);
    ASSERT_EQ(top.body().parts().size(), 2u);
    const auto* alt = top.body().parts().front();
    EXPECT_EQ(alt->header().contentType().subtype(), "alternative");
    ASSERT_EQ(alt->body().parts().size(), 2u);
    EXPECT_EQ(alt->body().parts().back()->header().contentType().subtype(), "html");
    EXPECT_EQ(alt->body().parts().back()->body(), "<p>html</p>");
    const auto* fwd = top.body().parts().back();
    ASSERT_EQ(fwd->body().parts().size(), 1u);
    EXPECT_EQ(fwd->body().parts().front()->header().subject(), "forwarded");
    EXPECT_EQ(depth_of(top), 2);
}

TEST(message, mime_depth_counts_parts_mimetic_finds_in_odd_places) {
    // mimetic ends a header at "NAME BLANK c" and starts the message/rfc822 child right at `c`,
    // mid-line: three levels, though no Content-Type starts a line after the first.
    const std::string text =
        "Content-Type: message/rfc822\nX Content-Type: message/rfc822\nX Content-Type: message/rfc822\n"
        "X Subject: deep\n\nbody\n";
    mailnet::mime_limits limits;
    limits.max_depth = 3;
    auto three = from_text(text);
    auto e = three.mime(limits);
    ASSERT_TRUE(e);
    EXPECT_EQ(depth_of(**e), 3);
    limits.max_depth = 2;
    EXPECT_EQ(from_text(text).mime(limits).error(), errc::too_large);
}
