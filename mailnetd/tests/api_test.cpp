// api_test.cpp: the HTTP API's request parsing (400 for unknown names and bad values) and its
// JSON, without a socket.
#include "mailnet/mailnetd/api.hpp"

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

namespace {

using namespace mailnet::mailnetd;
using json = nlohmann::json;

query_params params(std::string_view q) {
    auto p = parse_query_string(q);
    EXPECT_TRUE(std::holds_alternative<query_params>(p)) << q;
    return std::get<query_params>(p);
}

TEST(query_string, decodes) {
    auto p = params("to=bob%40x.org&subject=Password+reset&&empty=&flag");
    ASSERT_EQ(p.size(), 4u);
    EXPECT_EQ(p[0], (std::pair<std::string, std::string>{"to", "bob@x.org"}));
    EXPECT_EQ(p[1].second, "Password reset");
    EXPECT_EQ(p[2].second, "");
    EXPECT_EQ(p[3], (std::pair<std::string, std::string>{"flag", ""}));
    EXPECT_TRUE(params("").empty());
}

// user+tag@example.org unencoded, as curl users write it: a '+' in an address filter is a '+'.
TEST(query_string, a_plus_in_an_address_filter_is_a_plus_and_elsewhere_a_space) {
    auto p = params("mailbox=user+1@x.org&to=a+b@x.org&from=c+d@x.org&subject=a+b&since=x+y&to2=%2B");
    // since=, as date -Iseconds prints it
    const mail_index none;
    auto w = parse_wait_request(params("since=2020-01-01T00:00:00+01:00"), none, api_limits{});
    ASSERT_TRUE(std::holds_alternative<wait_request>(w));
    EXPECT_EQ(std::get<wait_request>(w).q.after_us, 1577833200000000);
    ASSERT_EQ(p.size(), 6u);
    EXPECT_EQ(p[0].second, "user+1@x.org");
    EXPECT_EQ(p[1].second, "a+b@x.org");
    EXPECT_EQ(p[2].second, "c+d@x.org");
    EXPECT_EQ(p[3].second, "a b");
    EXPECT_EQ(p[4].second, "x+y");  // since: an RFC 3339 offset, +00:00
    EXPECT_EQ(p[5].second, "+");
}

TEST(query_string, bad_escapes_and_repeats_are_400) {
    for (const char* q : {"to=%4", "to=%zz", "to=a&to=b", "%=x"}) {
        auto p = parse_query_string(q);
        ASSERT_TRUE(std::holds_alternative<api_error>(p)) << q;
        EXPECT_EQ(std::get<api_error>(p).status, 400);
    }
}

TEST(list_request, values_and_limits) {
    api_limits lim;
    auto r = parse_list_request(params("mailbox=Bob%40x.org&to=a&from=b&subject=c&limit=1000"), lim);
    ASSERT_TRUE(std::holds_alternative<message_query>(r));
    const auto& q = std::get<message_query>(r);
    EXPECT_EQ(q.mailbox, "Bob@x.org");
    EXPECT_EQ(q.to, "a");
    EXPECT_EQ(q.from, "b");
    EXPECT_EQ(q.subject, "c");
    EXPECT_EQ(q.limit, 1000u);
    EXPECT_EQ(std::get<message_query>(parse_list_request({}, lim)).limit, 50u);
    for (const char* bad : {"limit=0", "limit=1001", "limit=-1", "limit=x", "limit=", "limit=99999999999999999999",
                            "color=red", "since=2024-01-01T00:00:00Z"}) {
        auto e = parse_list_request(params(bad), lim);
        ASSERT_TRUE(std::holds_alternative<api_error>(e)) << bad;
        EXPECT_EQ(std::get<api_error>(e).status, 400);
    }
}

TEST(wait_request, values_since_and_limits) {
    api_limits lim;
    mail_index index;
    message_summary s;
    s.id = make_message_id("bob@x.org", "1");
    s.mailbox = "bob@x.org";
    s.store_id = "1";
    index.insert(s);
    auto r = parse_wait_request(params("to=bob&count=3&timeout=5&since=" + s.id), index, lim);
    ASSERT_TRUE(std::holds_alternative<wait_request>(r));
    auto w = std::get<wait_request>(r);
    EXPECT_EQ(w.count, 3u);
    EXPECT_EQ(w.timeout, std::chrono::seconds(5));
    EXPECT_EQ(w.q.after_seq, index.key_of(s.id)->seq);  // by insertion, not received time
    EXPECT_FALSE(w.q.after_us);
    w = std::get<wait_request>(parse_wait_request({}, index, lim));
    EXPECT_EQ(w.count, 1u);
    EXPECT_EQ(w.timeout, std::chrono::seconds(30));
    EXPECT_FALSE(w.q.after_seq);
    EXPECT_FALSE(w.q.after_us);
    r = parse_wait_request(params("since=2024-01-01T00:00:00Z"), index, lim);
    ASSERT_TRUE(std::holds_alternative<wait_request>(r));
    EXPECT_EQ(std::get<wait_request>(r).q.after_us, 1704067200000000);
    EXPECT_TRUE(std::holds_alternative<wait_request>(parse_wait_request(params("timeout=0"), index, lim)));
    for (const char* bad : {"count=0", "count=x", "timeout=601", "timeout=-1", "since=nosuchid", "since=",
                            "limit=0", "limit=1001", "limit=x", "unknown=1"}) {
        auto e = parse_wait_request(params(bad), index, lim);
        ASSERT_TRUE(std::holds_alternative<api_error>(e)) << bad;
        EXPECT_EQ(std::get<api_error>(e).status, 400);
    }
}

TEST(wait_request, limit_bounds_the_summaries_answered) {
    api_limits lim;
    mail_index index;
    // Default: 50, or count when it is larger; limit= from 1 to max_list, below count allowed.
    EXPECT_EQ(std::get<wait_request>(parse_wait_request({}, index, lim)).q.limit, 50u);
    EXPECT_EQ(std::get<wait_request>(parse_wait_request(params("count=200"), index, lim)).q.limit, 200u);
    auto w = std::get<wait_request>(parse_wait_request(params("count=5&limit=2"), index, lim));
    EXPECT_EQ(w.count, 5u);
    EXPECT_EQ(w.q.limit, 2u);
    EXPECT_EQ(std::get<wait_request>(parse_wait_request(params("limit=1000"), index, lim)).q.limit, 1000u);
}

message_summary numbered(int i, std::size_t subject_octets = 10) {
    message_summary s;
    s.id = make_message_id("bob@x.org", std::to_string(i));
    s.mailbox = "bob@x.org";
    s.store_id = std::to_string(i);
    s.from = "alice@a.org";
    s.to = {"bob@x.org"};
    s.subject = std::string(subject_octets, 'x') + " " + std::to_string(i);
    s.received = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000 + i));
    s.size = 10;
    return s;
}

std::string all_pieces(list_writer& w, const mail_index& index, std::size_t max, std::vector<std::size_t>* sizes = nullptr) {
    std::string out;
    for (std::string piece = w.next(index, max); !piece.empty(); piece = w.next(index, max)) {
        if (sizes) sizes->push_back(piece.size());
        out += piece;
    }
    return out;
}

TEST(list_writer, pieces_make_the_list_json) {
    mail_index index;
    for (int i = 0; i < 300; ++i) index.insert(numbered(i, 200));
    for (std::size_t limit : {1u, 7u, 50u, 1000u}) {
        message_query q;
        q.limit = limit;
        list_writer w(index, q);
        std::vector<std::size_t> sizes;
        const std::string got = all_pieces(w, index, 4096, &sizes);
        EXPECT_EQ(got, list_json(index.query(q))) << limit;
        EXPECT_EQ(w.next(index, 4096), "");
        // Bounded pieces: at most the bound plus one summary (about 300 octets here).
        for (auto n : sizes) EXPECT_LE(n, 4096u + 400u);
        if (limit == 1000) {
            EXPECT_GE(sizes.size(), 300u * 250u / 4096u);
        }
    }
    // Filters and an empty answer.
    message_query q;
    q.subject = "nothing like it";
    list_writer empty(index, q);
    EXPECT_EQ(all_pieces(empty, index, 4096), R"({"messages":[],"total":0})");
    EXPECT_EQ(all_pieces(empty, index, 4096), "");
}

TEST(list_writer, a_known_total_is_not_counted_again) {
    mail_index index;
    for (int i = 0; i < 10; ++i) index.insert(numbered(i));
    message_query q;
    q.limit = 3;
    list_writer told(index, q, 10);
    list_writer counted(index, q);
    EXPECT_EQ(all_pieces(told, index, 4096), all_pieces(counted, index, 4096));
    list_writer wrong(index, q, 99);  // the caller's word is taken
    EXPECT_EQ(json::parse(all_pieces(wrong, index, 4096))["total"], 99);
}

TEST(list_writer, the_index_may_change_between_pieces) {
    mail_index index;
    for (int i = 0; i < 10; ++i) index.insert(numbered(i));
    message_query q;
    q.limit = 5;
    list_writer w(index, q);
    std::string out = w.next(index, 60);  // the head and the newest (9)
    index.remove(make_message_id("bob@x.org", "8"));  // deleted before its piece: left out
    index.insert(numbered(20));                       // newer than what was written: not added
    out += all_pieces(w, index, 1);
    const auto j = json::parse(out);
    EXPECT_EQ(j["total"], 10);  // counted at the start
    std::vector<std::string> subjects;
    for (const auto& m : j["messages"]) subjects.push_back(m["subject"]);
    EXPECT_EQ(subjects, (std::vector<std::string>{"xxxxxxxxxx 9", "xxxxxxxxxx 7", "xxxxxxxxxx 6", "xxxxxxxxxx 5",
                                                  "xxxxxxxxxx 4"}));
}

TEST(delete_request, mailbox_only) {
    EXPECT_EQ(std::get<std::string>(parse_delete_request(params("mailbox=a%40b"))), "a@b");
    EXPECT_EQ(std::get<std::string>(parse_delete_request({})), "");
    EXPECT_TRUE(std::holds_alternative<api_error>(parse_delete_request(params("to=x"))));
}

TEST(part_number, shapes) {
    for (const char* ok : {"1", "2", "1.2", "10.3.1"}) EXPECT_TRUE(valid_part_number(ok)) << ok;
    for (const char* bad : {"", "0", "01", "1.", ".1", "1..2", "a", "1.0", "-1", "1/2"}) EXPECT_FALSE(valid_part_number(bad)) << bad;
}

TEST(json, summary_list_and_errors) {
    message_summary s;
    s.id = "abc";
    s.mailbox = "bob@x.org";
    s.from = "alice@a.org";
    s.to = {"bob@x.org"};
    s.subject = "Caf\xc3\xa9 <script>";
    s.received = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
    s.size = 42;
    auto j = json::parse(summary_json(s));
    EXPECT_EQ(j["id"], "abc");
    EXPECT_EQ(j["subject"], "Caf\xc3\xa9 <script>");
    EXPECT_EQ(j["received"], "2023-11-14T22:13:20.000000Z");
    EXPECT_EQ(j["size"], 42);
    EXPECT_EQ(j["to"], json::array({"bob@x.org"}));
    EXPECT_FALSE(j.contains("store_id"));
    s.subject = "bad \xff byte";  // not UTF-8: replaced, never an exception
    EXPECT_NO_THROW(json::parse(summary_json(s)));
    query_result r;
    r.total = 7;
    r.messages.push_back(&s);
    j = json::parse(list_json(r));
    EXPECT_EQ(j["total"], 7);
    EXPECT_EQ(j["messages"].size(), 1u);
    EXPECT_EQ(json::parse(error_json("no \"such\" id"))["error"], "no \"such\" id");
    EXPECT_EQ(json::parse(id_json("abc")), json({{"id", "abc"}}));
}

TEST(json, message_view_and_mailboxes) {
    message_summary s;
    s.id = "abc";
    s.mailbox = "bob@x.org";
    s.size = 10;
    message_view v;
    v.headers = {{"Subject", "hi"}, {"To", "bob@x.org"}};
    v.text = "hello\n";
    v.html = "<p>hello</p>";
    v.attachments.push_back({"2", "a.pdf", "application/pdf", 1234});
    v.links = {"https://example.org/confirm?x=1"};
    auto j = json::parse(message_json(s, v));
    EXPECT_EQ(j["headers"], json::parse(R"([["Subject","hi"],["To","bob@x.org"]])"));
    EXPECT_EQ(j["text"], "hello\n");
    EXPECT_EQ(j["attachments"][0]["part"], "2");
    EXPECT_EQ(j["attachments"][0]["size"], 1234);
    EXPECT_EQ(j["links"][0], "https://example.org/confirm?x=1");
    mail_index index;
    index.insert(s);
    j = json::parse(mailboxes_json({"bob@x.org", "empty@x.org"}, index));
    EXPECT_EQ(j, json::parse(R"([{"name":"bob@x.org","messages":1,"size":10},{"name":"empty@x.org","messages":0,"size":0}])"));
}

}  // namespace
