// address_test.cpp: SMTP paths (RFC 5321 4.1.2, 4.1.3, 4.1.1.3, 4.5.3.1; RFC 6531): what is
// accepted becomes data exactly, what is not gets a reason; the seed's Tcl-injection input
// is plain data.
#include "mailnet/address.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using mailnet::parse_path;
using mailnet::path_options;

const path_options sender{true, false, false};
const path_options recipient{false, false, true};
const path_options utf8_recipient{false, true, true};

std::string refused(std::string_view arg, const path_options& o = recipient) {
    std::string why;
    auto p = parse_path(arg, o, &why);
    return p ? std::string("accepted") : why;
}

TEST(address, a_plain_mailbox_with_parameters) {
    auto p = parse_path("<alice@example.org> SIZE=1024 body=8bitmime SMTPUTF8", sender);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->mailbox.local, "alice");
    EXPECT_EQ(p->mailbox.domain, "example.org");
    EXPECT_EQ(p->mailbox.original, "alice@example.org");
    EXPECT_EQ(p->mailbox.address(), "alice@example.org");
    ASSERT_EQ(p->parameters.size(), 3u);
    EXPECT_EQ(p->parameters[0].keyword, "SIZE");
    EXPECT_EQ(p->parameters[0].value, "1024");
    EXPECT_EQ(p->parameters[1].keyword, "BODY");
    EXPECT_EQ(p->parameters[1].value, "8bitmime");
    EXPECT_EQ(p->parameters[2].keyword, "SMTPUTF8");
    EXPECT_FALSE(p->parameters[2].has_value);
}

TEST(address, the_null_path_is_for_senders_only) {
    auto p = parse_path("<>", sender);
    ASSERT_TRUE(p);
    EXPECT_TRUE(p->mailbox.is_null());
    EXPECT_EQ(p->mailbox.address(), "");
    EXPECT_NE(refused("<>"), "accepted");
}

TEST(address, quoted_local_parts_are_unquoted_and_quoted_again_only_when_needed) {
    auto p = parse_path(R"(<"john \"q\" smith"@example.org>)", recipient);
    ASSERT_TRUE(p);
    EXPECT_TRUE(p->mailbox.quoted_local);
    EXPECT_EQ(p->mailbox.local, R"(john "q" smith)");
    EXPECT_EQ(p->mailbox.address(), R"("john \"q\" smith"@example.org)");
    EXPECT_EQ(p->mailbox.original, R"("john \"q\" smith"@example.org)");
    auto plain = parse_path(R"(<"alice"@example.org>)", recipient);
    ASSERT_TRUE(plain);
    EXPECT_EQ(plain->mailbox.address(), "alice@example.org");
    // A '>' inside the quotes does not end the path.
    auto gt = parse_path(R"(<"a>b"@example.org>)", recipient);
    ASSERT_TRUE(gt);
    EXPECT_EQ(gt->mailbox.local, "a>b");
}

TEST(address, address_literals) {
    auto v4 = parse_path("<root@[192.0.2.1]>", recipient);
    ASSERT_TRUE(v4);
    EXPECT_EQ(v4->mailbox.domain, "[192.0.2.1]");
    auto v6 = parse_path("<root@[IPv6:2001:db8::1]>", recipient);
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->mailbox.domain, "[IPv6:2001:db8::1]");
    EXPECT_TRUE(parse_path("<root@[x-tag:some-thing]>", recipient));
    EXPECT_NE(refused("<root@[192.0.2.256]>"), "accepted");
    EXPECT_NE(refused("<root@[IPv6:zz::1]>"), "accepted");
    // The tag in any case (RFC 5234 2.3), but only IPv6 text after it.
    for (const char* tag : {"IPV6", "ipv6", "iPv6"})
        EXPECT_TRUE(parse_path(std::string("<root@[") + tag + ":::1]>", recipient)) << tag;
    EXPECT_NE(refused("<root@[IPv6:vv::1]>"), "accepted");
    EXPECT_NE(refused("<root@[192.0.2.1>"), "accepted");
}

TEST(address, the_seeds_injection_input_is_only_data) {
    // The Tcl seed ran `eval` on the parsed sender: a domain literal executed code. Here it is
    // a General-address-literal or a refusal, never anything else.
    auto p = parse_path("<x@[exec:touch-/tmp/pwned]>", sender);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->mailbox.domain, "[exec:touch-/tmp/pwned]");
    EXPECT_NE(refused("<x@[exec rm -rf /]>", sender), "accepted");
    EXPECT_NE(refused("<\"$(id)\"@[;reboot]>", sender), "accepted");
    auto q = parse_path(R"(<"[exec reboot]"@example.org>)", sender);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->mailbox.local, "[exec reboot]");
}

TEST(address, source_routes_are_accepted_and_dropped) {
    auto p = parse_path("<@relay.example,@hop.example:bob@example.org>", recipient);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->mailbox.address(), "bob@example.org");
    EXPECT_EQ(p->mailbox.original, "bob@example.org");
    EXPECT_NE(refused("<@relay.example bob@example.org>"), "accepted");
}

TEST(address, postmaster_without_a_domain_only_where_allowed) {
    auto p = parse_path("<Postmaster>", recipient);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->mailbox.local, "Postmaster");
    EXPECT_EQ(p->mailbox.domain, "");
    EXPECT_NE(refused("<Postmaster>", sender), "accepted");
    EXPECT_NE(refused("<alice>"), "accepted");
}

TEST(address, utf8_only_with_smtputf8_and_only_well_formed) {
    EXPECT_EQ(refused("<jörg@example.org>"), "8-bit octets in an address need SMTPUTF8 (RFC 6531)");
    auto p = parse_path("<jörg@bücher.example>", utf8_recipient);
    ASSERT_TRUE(p);
    EXPECT_TRUE(p->mailbox.utf8);
    EXPECT_EQ(p->mailbox.local, "jörg");
    EXPECT_EQ(p->mailbox.domain, "bücher.example");
    EXPECT_NE(refused("<j\xC3@example.org>", utf8_recipient), "accepted");        // cut sequence
    EXPECT_NE(refused("<j\xC0\xAF@example.org>", utf8_recipient), "accepted");    // overlong
    EXPECT_NE(refused("<j\xED\xA0\x80@example.org>", utf8_recipient), "accepted");  // surrogate
}

TEST(address, limits_and_malformed_paths_get_a_reason) {
    const std::string local64(64, 'a');
    EXPECT_EQ(refused("<" + local64 + "@example.org>"), "accepted");
    EXPECT_EQ(refused("<" + local64 + "a@example.org>"), "local part longer than 64 octets");
    std::string domain;
    while (domain.size() < 250) domain += "abcdefghi.";
    domain += "example";  // 257 octets
    EXPECT_EQ(refused("<a@" + domain + ">"), "domain longer than 255 octets");
    for (const char* bad : {"alice@example.org", "<alice@example.org", "<alice@>", "<@example.org>",
                            "<alice..b@example.org>", "<.alice@example.org>", "<alice@-example.org>",
                            "<alice@example-.org>", "<alice@example..org>", "<alice@example.org> SIZE=",
                            "<alice@example.org> =1", "<alice@example.org>x", "<alice@example.org> SIZE=1 SIZE=2",
                            "<alice@exa mple.org>", "<a\"b@example.org>", "<alice@example.org> SIZE=a=b"})
        EXPECT_NE(refused(bad), "accepted") << bad;
    // Sizes count as written: quotes in the local part, brackets in the path; labels 63.
    EXPECT_EQ(refused("<\"" + std::string(63, 'a') + "\"@example.org>"), "local part longer than 64 octets");
    EXPECT_NE(refused("<a@" + std::string(64, 'b') + ".example>"), "accepted");
    const std::string label(63, 'x');
    const std::string path_255 = "a@" + label + "." + label + "." + label + "." + std::string(60, 'y');  // 254 octets
    ASSERT_EQ(path_255.size(), 254u);
    EXPECT_EQ(refused("<" + path_255 + ">"), "accepted");
    EXPECT_EQ(refused("<" + path_255 + "x>"), "path longer than 256 octets");
    // Control octets go nowhere: not through an address literal (inet_pton stops at NUL), not
    // into a quoted local part or a parameter.
    using namespace std::string_literals;
    EXPECT_EQ(refused("<b@[127.0.0.1\0\n<script>]>"s), "control octets in an address");
    EXPECT_EQ(refused("<\"a\rb\"@example.org>"), "control octets in an address");
    EXPECT_EQ(refused("<a@example.org> X=\x7f"), "control octets in an address");
    // 8-bit octets anywhere (a source route too) need SMTPUTF8, and then well-formed UTF-8.
    EXPECT_EQ(refused("<@\xff\xfe:a@b.example>"), "8-bit octets in an address need SMTPUTF8 (RFC 6531)");
    EXPECT_EQ(refused("<@\xff\xfe:a@b.example>", utf8_recipient), "the address is not valid UTF-8");
    // Tolerated: a space before the path, several between parameters.
    EXPECT_EQ(refused(" <alice@example.org>  SIZE=1   BODY=7BIT"), "accepted");
}

}  // namespace
