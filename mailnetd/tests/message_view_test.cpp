// message_view_test.cpp: read_head, read_message and read_part over well-formed and malformed
// messages: MIME structure (RFC 2046), transfer encodings (RFC 2045), RFC 2047, RFC 2231, links.
#include "mailnet/mailnetd/message_view.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace {

using namespace mailnet::mailnetd;
using strings = std::vector<std::string>;

// LF line ends to CRLF (the wire form; a stored message has LF).
std::string crlf(std::string_view lf) {
    std::string out;
    for (char c : lf) {
        if (c == '\n') out += '\r';
        out += c;
    }
    return out;
}

std::string bytes_0_to_199() {
    std::string s;
    for (int i = 0; i < 200; ++i) s += static_cast<char>(i);
    return s;
}

// The issue's case (#15): a quoted-printable text part, a base64 HTML part in ISO-8859-1, an
// attachment, an RFC 2047 subject.
const std::string issue_message =
    "Return-Path: <bounce@example.net>\n"
    "Received: from client.example (localhost [127.0.0.1])\n"
    "\tby mailnetd; Mon, 1 Jan 2024 00:00:00 +0000\n"
    "From: =?UTF-8?B?w5xuw69jb2Rl?= Sender <sender@example.org>\n"
    "To: \"Doe, Jane\" <jane@example.org>, bob@example.org (Bob)\n"
    "Cc: team: carol@example.org, \"Dan\" <dan@example.org>;, JANE@example.org\n"
    "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus?=\n"
    " =?ISO-8859-1?Q?_K=F6ln?= [#42]\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\n"
    "\n"
    "This is a multi-part message in MIME format.\n"
    "--outer\n"
    "Content-Type: multipart/alternative; boundary=inner\n"
    "\n"
    "--inner\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Hallo J=C3=B6rg,\n"
    "\n"
    "bitte best=C3=A4tige: https://example.org/confirm?id=3D7&t=3Dx.\n"
    "Ein sehr langer Satz, der umgebrochen wird und weiterl=\n"
    "=C3=A4uft.\n"
    "--inner\n"
    "Content-Type: text/html; charset=\"ISO-8859-1\"\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "PHA+R3L832UgYXVzIEv2bG4gJmFtcDsgbWVoci48L3A+DQo8cD48YSBocmVmPSJodHRwczovL2V4\n"
    "YW1wbGUub3JnL2NvbmZpcm0/aWQ9NyZhbXA7dD14JmFtcDt2aWE9aHRtbCI+QmVzdOR0aWdlbjwv\n"
    "YT48L3A+DQo=\n"
    "--inner--\n"
    "\n"
    "--outer\n"
    "Content-Type: application/pdf; name=\"=?UTF-8?Q?r=C3=A9sum=C3=A9.pdf?=\"\n"
    "Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\n"
    "OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3Bx\n"
    "cnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmq\n"
    "q6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TFxsc=\n"
    "--outer--\n"
    "epilogue\n";

void expect_issue_view(const message_view& v) {
    EXPECT_EQ(v.head.return_path, "bounce@example.net");
    EXPECT_EQ(v.head.from, "Ünïcode Sender <sender@example.org>");
    EXPECT_EQ(v.head.to, (strings{"jane@example.org", "bob@example.org", "carol@example.org", "dan@example.org"}));
    EXPECT_EQ(v.head.subject, "Grüße aus Köln [#42]");
    EXPECT_EQ(v.text,
              "Hallo Jörg,\n\nbitte bestätige: https://example.org/confirm?id=7&t=x.\n"
              "Ein sehr langer Satz, der umgebrochen wird und weiterläuft.");  // the last LF is the delimiter's
    EXPECT_EQ(v.html,
              "<p>Grüße aus Köln &amp; mehr.</p>\n"
              "<p><a href=\"https://example.org/confirm?id=7&amp;t=x&amp;via=html\">Bestätigen</a></p>\n");
    ASSERT_EQ(v.attachments.size(), 1u);
    EXPECT_EQ(v.attachments[0].part, "2");
    EXPECT_EQ(v.attachments[0].filename, "résumé.pdf");
    EXPECT_EQ(v.attachments[0].content_type, "application/pdf");
    EXPECT_EQ(v.attachments[0].size, 200u);
    EXPECT_EQ(v.links, (strings{"https://example.org/confirm?id=7&t=x", "https://example.org/confirm?id=7&t=x&via=html"}));
    ASSERT_EQ(v.headers.size(), 8u);
    EXPECT_EQ(v.headers[0], (std::pair<std::string, std::string>{"Return-Path", "<bounce@example.net>"}));
    EXPECT_EQ(v.headers[1].second, "from client.example (localhost [127.0.0.1])\tby mailnetd; Mon, 1 Jan 2024 00:00:00 +0000");
    EXPECT_EQ(v.headers[5], (std::pair<std::string, std::string>{"Subject", "Grüße aus Köln [#42]"}));
    EXPECT_EQ(v.headers[7].first, "Content-Type");
}

TEST(MessageView, IssueCaseLf) { expect_issue_view(read_message(issue_message)); }

TEST(MessageView, IssueCaseCrlfGivesTheSameView) { expect_issue_view(read_message(crlf(issue_message))); }

TEST(MessageView, IssueCaseParts) {
    for (const auto& m : {issue_message, crlf(issue_message)}) {
        auto text = read_part(m, "1.1");
        ASSERT_TRUE(text);
        EXPECT_EQ(text->content_type, "text/plain; charset=utf-8");
        EXPECT_EQ(text->octets.substr(0, 12), "Hallo J\xC3\xB6rg,");
        auto html = read_part(m, "1.2");
        ASSERT_TRUE(html);
        EXPECT_EQ(html->content_type, "text/html; charset=iso-8859-1");
        EXPECT_EQ(html->octets.substr(0, 12), "<p>Gr\xFC\xDF" "e aus");  // charset untouched
        auto alternative = read_part(m, "1");
        ASSERT_TRUE(alternative);
        EXPECT_EQ(alternative->content_type, "multipart/alternative");
        auto pdf = read_part(m, "2");
        ASSERT_TRUE(pdf);
        EXPECT_EQ(pdf->content_type, "application/pdf");
        EXPECT_EQ(pdf->filename, "résumé.pdf");
        EXPECT_EQ(pdf->octets, bytes_0_to_199());
        for (const char* none : {"", "0", "3", "1.3", "2.1", "01", "1.", ".1", "1..2", "a", "1.1.1", "99999"})
            EXPECT_FALSE(read_part(m, none)) << none;
    }
}

TEST(MessageView, ReadHeadStopsAtTheEmptyLine) {
    const auto h = read_head(issue_message);
    EXPECT_EQ(h.subject, "Grüße aus Köln [#42]");
    EXPECT_EQ(h.to.size(), 4u);
    // A body line that looks like a header is not one.
    EXPECT_EQ(read_head("Subject: a\n\nSubject: b\n").subject, "a");
    EXPECT_EQ(read_head("Subject: a\r\n\r\nTo: x@y\r\n").to, strings{});
}

TEST(MessageView, ReturnPath) {
    EXPECT_EQ(read_head("Return-Path: <>\nFrom: a@b\n\n").return_path, "");
    EXPECT_EQ(read_head("Return-Path: <a@b>\nReturn-Path: <c@d>\n\n").return_path, "a@b");
    EXPECT_EQ(read_head("return-path:   x@y  \n\n").return_path, "x@y");
    EXPECT_EQ(read_head("From: a@b\n\n").return_path, "");
}

TEST(MessageView, Addresses) {
    auto to = [](std::string_view header) { return read_head(std::string(header) + "\n\n").to; };
    EXPECT_EQ(to("To: \"Smith, John\" <j@x.org>, \"a\\\"b, c\" <k@x.org>"), (strings{"j@x.org", "k@x.org"}));
    EXPECT_EQ(to("To: undisclosed-recipients:;"), strings{});
    EXPECT_EQ(to("To: a@x (comment, with <comma>), b@x"), (strings{"a@x", "b@x"}));
    EXPECT_EQ(to("To: <@relay.example:c@x>"), strings{"c@x"});
    EXPECT_EQ(to("To: Smith, John <j@x>"), strings{"j@x"});  // unquoted comma: "Smith" is no address
    EXPECT_EQ(to("To: a@x\nCc: b@x, A@X\nTo: c@x"), (strings{"a@x", "c@x", "b@x"}));
    EXPECT_EQ(to("To: =?UTF-8?Q?J=C3=B6rg?= <j@x>,\n =?UTF-8?Q?a,b?= <k@x>"), (strings{"j@x", "k@x"}));
    EXPECT_EQ(to("To: \"unterminated <a@x>"), strings{});
    EXPECT_EQ(to("To: <unterminated@x"), strings{"unterminated@x"});
    EXPECT_EQ(to("To: \"quoted local\"@x"), strings{"\"quotedlocal\"@x"});
}

TEST(MessageView, EncodedWords) {
    auto subject = [](std::string_view s) { return read_head("Subject: " + std::string(s) + "\n\n").subject; };
    EXPECT_EQ(subject("=?utf-8?q?a?= =?utf-8?q?b?="), "ab");             // RFC 2047 6.2: space dropped
    EXPECT_EQ(subject("=?utf-8?q?a?=\n   \t=?utf-8?b?Yg==?="), "ab");    // folded too
    EXPECT_EQ(subject("x =?utf-8?q?a?= y"), "x a y");                    // next to text: kept
    EXPECT_EQ(subject("=?utf-8?q?a_b?="), "a b");
    EXPECT_EQ(subject("=?UTF-8?B?4oI=?= =?UTF-8?B?rA==?="), "€");         // a character split between words
    EXPECT_EQ(subject("=?utf-8*en?q?hi?="), "hi");                       // RFC 2231 language
    EXPECT_EQ(subject("=?iso-8859-15?q?=A4?="), "€");                    // through iconv
    EXPECT_EQ(subject("=?windows-1252?B?gCA1?="), "€ 5");
    EXPECT_EQ(subject("=?no-such-charset?q?caf=C3=A9?="), "café");       // unknown: valid UTF-8 kept
    EXPECT_EQ(subject("=?no-such-charset?q?caf=E9?="), "café");          // unknown: else ISO-8859-1
    EXPECT_EQ(subject("=?x//TRANSLIT?q?caf=E9?="), "café");              // not a plain label: unknown
    EXPECT_EQ(subject("=?utf-8?q?caf=E9?="), "caf\xEF\xBF\xBD");         // declared UTF-8, invalid: U+FFFD
    EXPECT_EQ(subject("=?utf-8?x?abc?="), "=?utf-8?x?abc?=");            // not B or Q: as written
    EXPECT_EQ(subject("=?utf-8?q?unterminated"), "=?utf-8?q?unterminated");
    EXPECT_EQ(subject("=??q?a?="), "=??q?a?=");
    EXPECT_EQ(subject("=?utf-8?q?line=0Abreak?="), "line break");         // no control characters
    EXPECT_EQ(subject("raw \xC3\xA9 and \xE9"), "raw é and \xEF\xBF\xBD");
    EXPECT_EQ(subject("=?utf-8?b?!!!?="), "");                           // bad base64: nothing, no crash
}

TEST(MessageView, Filenames) {
    const std::string m =
        "Content-Type: multipart/mixed; boundary=b\n\n"
        "--b\n"
        "Content-Type: text/plain\n"
        "Content-Disposition: attachment;\n"
        " filename*0*=iso-8859-1'de'Gr%FC;\n"
        " filename*1=\"n e\";\n"
        " filename*2*=%21.txt\n\n"
        "one\n"
        "--b\n"
        "Content-Type: image/png; name=\"=?utf-8?b?w6k=?=.png\"\n\n"
        "x\n"
        "--b\n"
        "Content-Type: application/octet-stream; name=\"a\\\"b\"\n"
        "Content-Disposition: attachment; filename=\"evil\\r\\nname\"\n\n"
        "--b--\n";
    const auto v = read_message(m);
    EXPECT_EQ(v.text, "");
    ASSERT_EQ(v.attachments.size(), 3u);
    EXPECT_EQ(v.attachments[0].filename, "Grün e!.txt");
    EXPECT_EQ(v.attachments[0].content_type, "text/plain");
    EXPECT_EQ(v.attachments[0].size, 3u);
    EXPECT_EQ(v.attachments[1].filename, "é.png");
    EXPECT_EQ(v.attachments[2].filename, "evilrnname");
    EXPECT_EQ(v.attachments[2].size, 0u);
}

TEST(MessageView, NonMultipartBodyIsPartOne) {
    const auto v = read_message("Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nAAEC\n");
    EXPECT_EQ(v.text, "");
    ASSERT_EQ(v.attachments.size(), 1u);
    EXPECT_EQ(v.attachments[0].part, "1");
    EXPECT_EQ(v.attachments[0].size, 3u);
    auto p = read_part("Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nAAEC\n", "1");
    ASSERT_TRUE(p);
    EXPECT_EQ(p->octets, std::string("\0\1\2", 3));
    EXPECT_FALSE(read_part("Subject: x\n\nbody\n", "2"));
    EXPECT_FALSE(read_part("Subject: x\n\nbody\n", "1.1"));
    EXPECT_EQ(read_part("Subject: x\n\nbody\n", "1")->content_type, "text/plain");

    const auto plain = read_message("Subject: x\n\nline 1\r\nline 2\rline 3\n");
    EXPECT_EQ(plain.text, "line 1\nline 2\nline 3\n");
    EXPECT_TRUE(plain.attachments.empty());
}

TEST(MessageView, NestedNumberingAndChoices) {
    const std::string m =
        "Content-Type: multipart/mixed; boundary=\"=_a\"\n\n"
        "--=_a\n"
        "Content-Type: multipart/related; boundary=\"=_b\"\n\n"
        "--=_b\n"
        "Content-Type: multipart/alternative; boundary=\"=_c\"\n\n"
        "--=_c\n"
        "Content-Type: text/plain\n\nfirst text http://a.example/1\n"
        "--=_c\n"
        "Content-Type: text/html\n\n<a href='http://a.example/2'>x</a> http://a.example/1\n"
        "--=_c--\n"
        "--=_b\n"
        "Content-Type: image/png\nContent-ID: <img>\n\nPNG\n"
        "--=_b--\n"
        "--=_a\n"
        "Content-Type: text/plain\n\nsecond text\n"
        "--=_a\n"
        "Content-Type: text/html\nContent-Disposition: attachment; filename=page.html\n\n<p>x</p>\n"
        "--=_a\n"
        "Content-Type: message/rfc822\n\n"
        "Subject: inner\nContent-Type: multipart/mixed; boundary=z\n\n--z\n\ninner text\n--z--\n"
        "--=_a--\n";
    const auto v = read_message(m);
    EXPECT_EQ(v.text, "first text http://a.example/1");
    EXPECT_EQ(v.html, "<a href='http://a.example/2'>x</a> http://a.example/1");
    ASSERT_EQ(v.attachments.size(), 4u);
    EXPECT_EQ(v.attachments[0].part, "1.2");
    EXPECT_EQ(v.attachments[0].content_type, "image/png");
    EXPECT_EQ(v.attachments[1].part, "2");
    EXPECT_EQ(v.attachments[1].content_type, "text/plain");
    EXPECT_EQ(v.attachments[2].part, "3");
    EXPECT_EQ(v.attachments[2].filename, "page.html");
    EXPECT_EQ(v.attachments[3].part, "4");
    EXPECT_EQ(v.attachments[3].content_type, "message/rfc822");
    EXPECT_EQ(v.links, (strings{"http://a.example/1", "http://a.example/2"}));
    EXPECT_EQ(read_part(m, "1.1.2")->octets, "<a href='http://a.example/2'>x</a> http://a.example/1");
    EXPECT_EQ(read_part(m, "1.2")->octets, "PNG");
    EXPECT_EQ(read_part(m, "4")->content_type, "message/rfc822");
    EXPECT_FALSE(read_part(m, "4.1"));  // message/rfc822 is a leaf here
}

TEST(MessageView, DigestPartsDefaultToMessage) {
    const auto v = read_message(
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nbody\n--d--\n");
    ASSERT_EQ(v.attachments.size(), 1u);
    EXPECT_EQ(v.attachments[0].content_type, "message/rfc822");
}

TEST(MessageView, MultipartWithoutBoundaryIsText) {
    const auto v = read_message("Content-Type: multipart/mixed\n\n--x\nContent-Type: text/html\n\nhi\n--x--\n");
    EXPECT_EQ(v.text, "--x\nContent-Type: text/html\n\nhi\n--x--\n");
    EXPECT_TRUE(v.attachments.empty());
    EXPECT_EQ(read_message("Content-Type: multipart/mixed; boundary=\"\"\n\nbody\n").text, "body\n");
}

TEST(MessageView, UnterminatedMultipart) {
    const auto v = read_message(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nfirst\n--b\nContent-Type: text/html\n\n<p>cut");
    EXPECT_EQ(v.text, "first");
    EXPECT_EQ(v.html, "<p>cut");
    // No delimiter at all: no parts.
    const auto none = read_message("Content-Type: multipart/mixed; boundary=b\n\njust a preamble\n");
    EXPECT_EQ(none.text, "");
    EXPECT_TRUE(none.attachments.empty());
}

TEST(MessageView, DelimiterNeedsTheWholeLine) {
    // "--b" must be followed only by white space (or "--"): "--bb" is text, "--b  " a delimiter.
    const auto v = read_message(
        "Content-Type: multipart/mixed; boundary=b\n\n--b  \n\nline\n--bb\n--b-- \nafter\n");
    EXPECT_EQ(v.text, "line\n--bb");
}

TEST(MessageView, PartWithoutHeaderOrEmptyLine) {
    const auto v = read_message("Content-Type: multipart/mixed; boundary=b\n\n--b\nno header here\n--b--\n");
    EXPECT_EQ(v.text, "no header here");
}

TEST(MessageView, BadBase64) {
    const auto v = read_message(
        "Content-Transfer-Encoding: base64\nContent-Type: text/plain; charset=utf-8\n\n"
        "aGVs|bG8=!!d29y\nbGQ=*Z\n");  // junk skipped, '=' ends a quantum, a lone sextet dropped
    EXPECT_EQ(v.text, "helloworld");
    EXPECT_EQ(read_message("Content-Transfer-Encoding: base64\n\n====\n").text, "");
    EXPECT_EQ(read_message("Content-Transfer-Encoding: base64\n\n/w==\n").text, "\xC3\xBF");  // 0xFF unlabelled: ISO-8859-1
}

TEST(MessageView, QuotedPrintableOddities) {
    const auto v = read_message(
        "Content-Transfer-Encoding: Quoted-Printable\n\n"
        "a=3Db =ZZ end=\n"
        "trailing   \n"
        "=E2=82=AC=");
    EXPECT_EQ(v.text, "a=b =ZZ end" "trailing\n€");  // a final '=' is a soft break too
}

TEST(MessageView, Charsets) {
    auto text = [](std::string_view charset, std::string_view body, std::string_view cte = "8bit") {
        return read_message("Content-Type: text/plain; charset=" + std::string(charset) +
                            "\nContent-Transfer-Encoding: " + std::string(cte) + "\n\n" + std::string(body))
            .text;
    };
    EXPECT_EQ(text("utf-8", "ok \xC3\xA9 \xFF \xE2\x82"), "ok é \xEF\xBF\xBD \xEF\xBF\xBD");
    EXPECT_EQ(text("windows-1252", "\x80 \x93q\x94"), "€ “q”");
    EXPECT_EQ(text("utf-16", "//5hAA0ACgBiAA==", "base64"), "a\nb");  // line ends after conversion
    EXPECT_EQ(text("shift_jis", "\x82\xA0"), "あ");
    EXPECT_EQ(text("shift_jis", "a\xFF" "b"), "a\xEF\xBF\xBD" "b");  // invalid in the charset: U+FFFD, then on
    EXPECT_EQ(text("iso-2022-jp", "\x1B$B$\"\x1B(B!"), "あ!");
    EXPECT_EQ(text("x-unknown", "caf\xE9"), "café");
    EXPECT_EQ(text("\"../../etc\"", "caf\xC3\xA9"), "café");
    EXPECT_EQ(text("us-ascii", "caf\xE9"), "café");
    EXPECT_EQ(read_message("Subject: x\n\n\xE9t\xE9\n").text, "été\n");
}

TEST(MessageView, HeaderWithoutColonAndOddLines) {
    const auto v = read_message(
        "From mbox-line Sat Jan  1 00:00:00 2000\n"
        "Subject: one\n"
        "this line has no colon\n"
        " and a continuation of it\n"
        "Bad Name: skipped too\n"
        ": empty name\n"
        "To: a@x\n"
        "  ,b@x\n"
        "\n"
        "body\n");
    EXPECT_EQ(v.head.subject, "one");
    EXPECT_EQ(v.head.to, (strings{"a@x", "b@x"}));
    ASSERT_EQ(v.headers.size(), 2u);
    EXPECT_EQ(v.headers[1].second, "a@x  ,b@x");
    EXPECT_EQ(v.text, "body\n");
}

TEST(MessageView, EmptyAndHeaderOnlyInputs) {
    for (const char* m : {"", "\n", "\r\n", "Subject: x", "Subject: x\n", ":", "\r", "--", "=?"}) {
        const auto v = read_message(m);
        EXPECT_TRUE(v.attachments.size() <= 1) << m;
        (void)read_head(m);
        (void)read_part(m, "1");
    }
    EXPECT_EQ(read_message("Subject: x").head.subject, "x");
    EXPECT_EQ(read_message("Subject: x").text, "");
}

TEST(MessageView, Links) {
    const auto v = read_message(
        "Content-Type: multipart/alternative; boundary=b\n\n--b\n\n"
        "See (https://ex.org/wiki/Foo_(bar)), http://ex.org/a.\n"
        "<https://ex.org/angle> \"http://ex.org/q\" HTTPS://EX.ORG/Up!\n"
        "not: javascript:alert(1) ftp://ex.org xhttp://ex.org http:// http:///x\n"
        "again http://ex.org/a\n"
        "--b\nContent-Type: text/html\n\n"
        "<A HREF = \"https://ex.org/h?a=1&amp;b=2&#x26;c=&#51;\">x</A>\n"
        "<img src=https://ex.org/i.png alt=x><a href='javascript:alert(1)'>j</a>\n"
        "<!-- http://ex.org/comment --><script>var u='http://ex.org/script';</script>\n"
        "<p>text http://ex.org/t?x=1&amp;y=2 &lt;http://ex.org/lt&gt;</p> < 3 <a href=\"http://ex.org/a\">dup</a>\n"
        "--b--\n");
    EXPECT_EQ(v.links, (strings{"https://ex.org/wiki/Foo_(bar)", "http://ex.org/a", "https://ex.org/angle",
                                "http://ex.org/q", "HTTPS://EX.ORG/Up", "https://ex.org/h?a=1&b=2&c=3",
                                "https://ex.org/i.png", "http://ex.org/t?x=1&y=2", "http://ex.org/lt"}));
}

TEST(MessageView, DeepNestingIsBounded) {
    std::string m;
    const int levels = 5000;
    for (int i = 0; i < levels; ++i)
        m += "Content-Type: multipart/mixed; boundary=b" + std::to_string(i) + "\n\n--b" + std::to_string(i) + "\n";
    m += "\ninnermost\n";
    const auto v = read_message(m);
    EXPECT_EQ(v.text, "");
    ASSERT_EQ(v.attachments.size(), 1u);  // the multipart at depth 32 is one leaf
    EXPECT_EQ(v.attachments[0].content_type, "multipart/mixed");
    EXPECT_EQ(std::count(v.attachments[0].part.begin(), v.attachments[0].part.end(), '.'), 31);
    std::string deep = "1";
    for (int i = 1; i < 32; ++i) deep += ".1";
    EXPECT_TRUE(read_part(m, deep));
    EXPECT_FALSE(read_part(m, deep + ".1"));
    // message/rfc822 nesting (no multipart token): read as one leaf, no recursion.
    std::string r;
    for (int i = 0; i < 100000; ++i) r += "Content-Type: message/rfc822\n\n";
    EXPECT_EQ(read_message(r).attachments.size(), 1u);
}

TEST(MessageView, ManyPartsAreBounded) {
    std::string m = "Content-Type: multipart/mixed; boundary=b\n\n";
    for (int i = 0; i < 20000; ++i) m += "--b\n\n";
    const auto v = read_message(m);
    EXPECT_LE(v.attachments.size() + 1, 1000u);
    EXPECT_TRUE(read_part(m, "1000"));
    EXPECT_FALSE(read_part(m, "1001"));
}

TEST(MessageView, HostileSizesStayFast) {
    const auto start = std::chrono::steady_clock::now();
    const std::size_t n = 4 << 20;
    std::string long_header = "Subject: " + std::string(n, 'a') + "\nTo: " + std::string(n, '<') + "\n\n";
    (void)read_message(long_header);
    std::string words = "Subject: ";
    while (words.size() < n) words += "=?a?q?b =?=?q? ";
    (void)read_message(words + "\n\n");
    std::string url = "Subject: x\n\nhttp://x/" + std::string(n, ')') + " http://" + std::string(n, 'h');
    EXPECT_TRUE(read_message(url).links.empty());
    std::string html = "Content-Type: text/html\n\n";
    for (std::size_t i = 0; i < n / 16; ++i) html += "<a href=\"http:/";
    (void)read_message(html);
    std::string fields;
    for (std::size_t i = 0; i < n / 4; ++i) fields += "a:\n";
    EXPECT_EQ(read_message(fields + "\n").headers.size(), 1000u);
    std::string params = "Content-Type: text/plain";
    for (std::size_t i = 0; i < n / 16; ++i) params += "; name*" + std::to_string(i % 64) + "=x";
    (void)read_message(params + "\n\nx");
    std::string addresses = "To: ";
    for (std::size_t i = 0; i < n / 4; ++i) addresses += "a@" + std::to_string(i) + ",";
    EXPECT_EQ(read_head(addresses + "\n\n").to.size(), 1000u);
    // '&' with no ';' after it (each looked for a ';' to the end of the text) and many URLs just
    // under the length limit ending in ')' (each dropped ')' counted the whole URL again).
    std::string amps = "Content-Type: text/html\n\n<p>";
    while (amps.size() < n) amps += std::string(998, '&') + "\n";
    (void)read_message(amps);
    std::string parens = "Subject: x\n\n";
    while (parens.size() < n) parens += "http://x/" + std::string(8150, ')') + " ";
    const auto parens_view = read_message(parens);
    ASSERT_FALSE(parens_view.links.empty());
    EXPECT_EQ(parens_view.links.front(), "http://x/");
    const auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(secs, 60.0);  // linear: ~3 s here, more under ASan on a shared machine; quadratic would be hours
}

}  // namespace
