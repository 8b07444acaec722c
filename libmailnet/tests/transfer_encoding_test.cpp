// transfer_encoding_test.cpp: MIME body decoding, base64 (RFC 2045 6.8) and quoted-printable
// (RFC 2045 6.7), on well-formed and broken input, with the output bound each promises.
#include "mailnet/transfer_encoding.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

std::string b64(std::string_view s) {
    std::string out;
    mailnet::base64_body_decode(s, out);
    return out;
}

std::string qp(std::string_view s) {
    std::string out;
    mailnet::quoted_printable_decode(s, out);
    return out;
}

TEST(transfer_encoding, base64_decodes_and_skips_what_is_outside_the_alphabet) {
    EXPECT_EQ(b64("AAEC"), std::string("\0\1\2", 3));
    EXPECT_EQ(b64("aGVs\nbG8=\n"), "hello");
    EXPECT_EQ(b64("aGVs\r\nbG8=\r\n"), "hello");
    EXPECT_EQ(b64("aG|Vs bG8="), "hello") << "'|' is no base64 (mimetic's decoder reads it as 'A')";
    EXPECT_EQ(b64("aGk=aGk="), "hihi") << "'=' ends a quantum: concatenated encodings";
    EXPECT_EQ(b64("===="), "");
    EXPECT_EQ(b64("/w=="), "\xFF");
    EXPECT_EQ(b64("QUJDR"), "ABC") << "a lone sextet at the end is dropped";
    EXPECT_EQ(b64(""), "");
    std::string out = "kept:";
    mailnet::base64_body_decode("aGk=", out);
    EXPECT_EQ(out, "kept:hi") << "appends";
}

TEST(transfer_encoding, quoted_printable_keeps_line_breaks_and_joins_soft_ones) {
    EXPECT_EQ(qp("a=3Db=3db\n"), "a=b=b\n");
    EXPECT_EQ(qp("line one\nline two\n"), "line one\nline two\n") << "mimetic's decoder drops these";
    EXPECT_EQ(qp("crlf\r\nnext"), "crlf\nnext");
    EXPECT_EQ(qp("soft=\nbreak"), "softbreak");
    EXPECT_EQ(qp("soft=\r\nbreak"), "softbreak");
    EXPECT_EQ(qp("soft= \t\nbreak"), "softbreak") << "blanks after a soft break's '=' are deleted";
    EXPECT_EQ(qp("trailing  \t\nx"), "trailing\nx") << "rule 3: blanks at a line's end are deleted";
    EXPECT_EQ(qp("=ZZ=4=\n"), "=ZZ=4");
    EXPECT_EQ(qp("end="), "end");
    EXPECT_EQ(qp("=C3=A9t=C3=A9"), "\xC3\xA9t\xC3\xA9");
}

TEST(transfer_encoding, by_mechanism_with_sizes_and_bounds) {
    EXPECT_EQ(mailnet::transfer_decode("aGk=", "BASE64"), "hi");
    EXPECT_EQ(mailnet::transfer_decode("a=3Db", " Quoted-Printable "), "a=b");
    EXPECT_EQ(mailnet::transfer_decode("a=3Db", "7bit"), "a=3Db");
    EXPECT_EQ(mailnet::transfer_decode("aGk=", ""), "aGk=");
    // A Content-Transfer-Encoding field's whole value (RFC 2045 6.1 with CFWS): as mimetic's
    // mechanism() gives it.
    EXPECT_EQ(mailnet::transfer_decode("QUJD", "base64 (comment)"), "ABC");
    EXPECT_EQ(mailnet::transfer_decode("QUJD", "(a (nested) comment)base64"), "ABC");
    EXPECT_EQ(mailnet::transfer_decode("QUJD", "\"base64\""), "ABC");
    EXPECT_EQ(mailnet::transfer_decode("QUJD", "base64;"), "ABC");
    EXPECT_EQ(mailnet::transfer_decoded_size("QUJD", "\r\n base64 (x)"), 3u);
    EXPECT_EQ(mailnet::transfer_decode("QUJD", "base64x"), "QUJD");
    // Every octet value, at every position of short inputs: output within the bound, size agrees.
    for (int c = 0; c < 256; ++c) {
        for (std::string base : {"", "a", "ab=", "abc\n", "=4", "QUJD\r\n"}) {
            for (std::size_t at = 0; at <= base.size(); ++at) {
                std::string in = base;
                in.insert(at, 1, static_cast<char>(c));
                const auto d64 = mailnet::transfer_decode(in, "base64");
                EXPECT_LE(d64.size(), in.size() * 3 / 4) << in;
                EXPECT_EQ(mailnet::transfer_decoded_size(in, "base64"), d64.size());
                const auto dqp = mailnet::transfer_decode(in, "quoted-printable");
                EXPECT_LE(dqp.size(), in.size()) << in;
                EXPECT_EQ(mailnet::transfer_decoded_size(in, "quoted-printable"), dqp.size());
            }
        }
    }
}

}  // namespace
