// state_file_test.cpp: the UIDL state file of `pop3c fetch --state FILE`: round trip, the
// first line, bad lines reported as FILE:LINE, atomic replacement, pruning (RFC 1939 7).
#include "state_file.hpp"

#include <algorithm>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/fixtures.hpp"

namespace {

namespace fs = std::filesystem;
using mailnet::pop3c::state_file;
using mailnet::testing::log_capture;
using mailnet::testing::temp_dir;
using namespace std::string_literals;

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void write_file(const fs::path& p, const std::string& text) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
}

TEST(state_file, a_missing_file_is_an_empty_state) {
    temp_dir d;
    auto s = state_file::load(d.path / "state");
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->size(), 0u);
    EXPECT_FALSE(s->contains("a"));
    EXPECT_FALSE(fs::exists(d.path / "state"));  // loading creates nothing
}

TEST(state_file, an_empty_file_is_an_empty_state) {
    temp_dir d;
    write_file(d.path / "state", "");
    auto s = state_file::load(d.path / "state");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->size(), 0u);
}

TEST(state_file, round_trip_keeps_every_uidl_in_the_order_added) {
    temp_dir d;
    const std::string long_uid(70, '~');
    {
        auto s = state_file::load(d.path / "state");
        ASSERT_TRUE(s);
        EXPECT_TRUE(s->add("zeta"));
        EXPECT_TRUE(s->add("1700000000.M1P2Q3.host,S=10,W=11"));
        EXPECT_TRUE(s->add("!"));
        EXPECT_TRUE(s->add(long_uid));
        EXPECT_TRUE(s->add("zeta"));  // again: held once
        EXPECT_EQ(s->size(), 4u);
        ASSERT_TRUE(s->save());
    }
    EXPECT_EQ(read_file(d.path / "state"),
              "# mailnet pop3c state 3\nzeta -\n1700000000.M1P2Q3.host,S=10,W=11 -\n! -\n" + long_uid + " -\n");
    struct stat st{};
    ASSERT_EQ(::stat((d.path / "state").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);

    auto again = state_file::load(d.path / "state");
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(again->size(), 4u);
    EXPECT_TRUE(again->contains("zeta"));
    EXPECT_TRUE(again->contains("!"));
    EXPECT_TRUE(again->contains(long_uid));
    EXPECT_TRUE(again->contains("1700000000.M1P2Q3.host,S=10,W=11"));
    EXPECT_FALSE(again->contains("zet"));
}

TEST(state_file, add_refuses_what_is_not_a_uidl) {
    temp_dir d;
    auto s = state_file::load(d.path / "state");
    ASSERT_TRUE(s);
    for (const std::string& bad : {std::string(), std::string(71, 'a'), std::string("a b"), std::string("a\nb"),
                                  std::string("a\rb"), std::string("\x7f"), std::string("caf\xc3\xa9"),
                                  std::string("a\0b", 3)}) {
        EXPECT_EQ(s->add(bad).error(), mailnet::errc::bad_input) << bad;
    }
    EXPECT_EQ(s->size(), 0u);
}

TEST(state_file, a_bad_line_is_reported_by_file_and_line_never_its_text) {
    temp_dir d;
    struct bad_case {
        std::string text;
        int line;
    };
    const std::vector<bad_case> cases = {
        {"# mailnet pop3c state 1\nok\nsecret with space\n", 3},
        {"# mailnet pop3c state 1\nok\n\nok2\n", 3},                           // an empty line
        {"# mailnet pop3c state 1\r\nok\n", 1},                                // CRLF
        {"# mailnet pop3c state 1\nok\r\n", 2},
        {"# mailnet pop3c state 1\n" + std::string(71, 'x') + "\n", 2},       // too long
        {"# mailnet pop3c state 1\nok\nok\nnul\0x\n"s, 4},
        {"# mailnet pop3c state 4\nok 1\n", 1},                                // a later version
        {"# mailnet pop3c state 3\nok 1\nsecret 1x\n", 3},                     // not a size
        {"# mailnet pop3c state 3\nsecret\n", 2},                              // no size
        {"# mailnet pop3c state 2\nok\n# account a@b:1\n", 3},               // the account after a UIDL
        {"# mailnet pop3c state 2\n# account a@b:1\n# account c@d:1\n", 3},   // two account lines
        {"# mailnet pop3c state 2\n# account secret\x01x\n", 2},               // not printable
        {"# mailnet pop3c state 2\n# account  \n", 2},                         // empty
        {"ok\n", 1},                                                           // no first line
    };
    for (const auto& c : cases) {
        write_file(d.path / "state", c.text);
        log_capture log;
        auto s = state_file::load(d.path / "state", log.sink());
        ASSERT_FALSE(s) << c.text;
        EXPECT_EQ(s.error(), mailnet::errc::bad_config);
        EXPECT_TRUE(log.contains((d.path / "state").string() + ":" + std::to_string(c.line) + ": ")) << log.all();
        EXPECT_FALSE(log.contains("secret")) << log.all();
    }
}

TEST(state_file, the_last_line_may_lack_its_line_end) {
    temp_dir d;
    write_file(d.path / "state", "# mailnet pop3c state 1\na\nb");
    auto s = state_file::load(d.path / "state");
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->contains("a"));
    EXPECT_TRUE(s->contains("b"));
}

TEST(state_file, an_unreadable_path_is_a_system_error) {
    temp_dir d;
    write_file(d.path / "file", "");
    log_capture log;
    auto s = state_file::load(d.path / "file" / "state", log.sink());  // ENOTDIR
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error(), std::errc::not_a_directory);
    EXPECT_TRUE(log.contains((d.path / "file" / "state").string())) << log.all();
}

TEST(state_file, a_directory_or_fifo_is_not_a_state_file) {
    temp_dir d;
    fs::create_directory(d.path / "dir");
    ASSERT_EQ(::mkfifo((d.path / "fifo").c_str(), 0600), 0);
    for (const char* name : {"dir", "fifo"}) {
        log_capture log;
        auto s = state_file::load(d.path / name, log.sink());  // never blocks on the FIFO
        ASSERT_FALSE(s) << name;
        EXPECT_EQ(s.error(), mailnet::errc::bad_config);
        EXPECT_TRUE(log.contains("not a regular file")) << log.all();
    }
}

TEST(state_file, save_replaces_the_file_atomically_and_leaves_no_tmp) {
    temp_dir d;
    const fs::path file = d.path / "state";
    write_file(file, "# mailnet pop3c state 1\nold\n");
    // A FILE.tmp left by a crash is overwritten, then renamed away.
    write_file(d.path / "state.tmp", "# mailnet pop3c state 1\nhalf-writ");
    struct stat old_st{};
    ASSERT_EQ(::stat(file.c_str(), &old_st), 0);

    auto s = state_file::load(file);
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->add("new"));
    ASSERT_TRUE(s->save());
    EXPECT_EQ(read_file(file), "# mailnet pop3c state 3\nold -\nnew -\n");
    EXPECT_FALSE(fs::exists(d.path / "state.tmp"));
    // A new file renamed over the old, not the old one rewritten in place.
    struct stat st{};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_NE(st.st_ino, old_st.st_ino);
    // Nothing else is left in the directory but the lock file (kept: removing a lock file
    // races with a run waiting on it).
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(d.path)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"state", "state.lock"}));
}

TEST(state_file, one_run_at_a_time_holds_a_state) {
    temp_dir d;
    const fs::path file = d.path / "state";
    {
        auto first = state_file::load(file);
        ASSERT_TRUE(first);
        // A second run that loaded it now would fetch what the first fetches: refused.
        auto second = state_file::load(file);
        ASSERT_FALSE(second);
        EXPECT_EQ(second.error(), make_error_code(mailnet::errc::mailbox_in_use));
        ASSERT_TRUE(first->add("a"));
        ASSERT_TRUE(first->save());
        auto moved = std::move(*first);  // the lock goes with the state
        EXPECT_FALSE(state_file::load(file));
    }
    auto later = state_file::load(file);  // released with the state
    ASSERT_TRUE(later);
    EXPECT_TRUE(later->contains("a"));
}

TEST(state_file, a_failed_save_keeps_the_old_file) {
    temp_dir d;
    const fs::path file = d.path / "state";
    write_file(file, "# mailnet pop3c state 1\nold\n");
    log_capture log;
    auto s = state_file::load(file, log.sink());
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->add("new"));
    // FILE.tmp cannot be made: a directory is in its way.
    fs::create_directory(d.path / "state.tmp");
    EXPECT_FALSE(s->save());
    EXPECT_TRUE(log.contains("state.tmp")) << log.all();
    EXPECT_EQ(read_file(file), "# mailnet pop3c state 1\nold\n");
}

TEST(state_file, a_relative_path_saves_in_the_current_directory) {
    temp_dir d;
    const auto cwd = fs::current_path();
    fs::current_path(d.path);
    auto s = state_file::load("state");
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->add("x"));
    const bool saved = static_cast<bool>(s->save());
    fs::current_path(cwd);
    EXPECT_TRUE(saved);
    EXPECT_EQ(read_file(d.path / "state"), "# mailnet pop3c state 3\nx -\n");
}

TEST(state_file, retain_only_forgets_what_left_the_server) {
    temp_dir d;
    auto s = state_file::load(d.path / "state");
    ASSERT_TRUE(s);
    std::uint64_t n = 10;
    for (const char* u : {"a", "b", "c", "d"}) ASSERT_TRUE(s->add(u, n++));
    const std::vector<std::string> on_server{"d", "b", "new-one"};
    EXPECT_EQ(s->retain_only(on_server), 2u);
    EXPECT_EQ(s->size(), 2u);
    EXPECT_FALSE(s->contains("a"));
    EXPECT_FALSE(s->contains("c"));
    EXPECT_TRUE(s->contains("b"));
    EXPECT_TRUE(s->contains("d"));
    EXPECT_FALSE(s->contains("new-one"));  // pruning never adds
    ASSERT_TRUE(s->add("e"));
    ASSERT_TRUE(s->save());
    EXPECT_EQ(read_file(d.path / "state"), "# mailnet pop3c state 3\nb 11\nd 13\ne -\n");  // order and sizes kept
    EXPECT_EQ(s->retain_only({}), 3u);
    EXPECT_EQ(s->size(), 0u);
}

TEST(state_file, a_moved_state_still_finds_its_uidls) {
    temp_dir d;
    auto s = state_file::load(d.path / "state");
    ASSERT_TRUE(s);
    // Short strings live inside the string object: the views must survive the move.
    for (int i = 0; i < 1000; ++i) ASSERT_TRUE(s->add(std::to_string(i)));
    state_file moved = std::move(*s);
    for (int i = 0; i < 1000; ++i) ASSERT_TRUE(moved.contains(std::to_string(i))) << i;
    EXPECT_FALSE(moved.contains("1000"));
}

}  // namespace

TEST(state_file, pending_records_survive_a_save_and_are_taken_once) {
    temp_dir d;
    {
        auto s = state_file::load(d.path / "state");
        ASSERT_TRUE(s);
        ASSERT_TRUE(s->add("stored-1"));
        ASSERT_TRUE(s->add_pending("maybe-2", "1700000000.M1P2Q3"));
        ASSERT_TRUE(s->add_pending("maybe-3", ""));
        EXPECT_FALSE(s->add_pending("bad uid", "x"));
        EXPECT_FALSE(s->add_pending("ok", "has space"));
        EXPECT_FALSE(s->contains("maybe-2"));  // pending is not stored
        ASSERT_TRUE(s->save());
    }
    EXPECT_EQ(read_file(d.path / "state"),
              "# mailnet pop3c state 3\nstored-1 -\n? maybe-2 1700000000.M1P2Q3 -\n? maybe-3  -\n");
    auto s = state_file::load(d.path / "state");
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->contains("stored-1"));
    EXPECT_FALSE(s->contains("maybe-2"));
    EXPECT_EQ(s->pending(), 2u);
    const auto p = s->take_pending();
    ASSERT_EQ(p.size(), 2u);
    EXPECT_EQ(p[0], (state_file::pending_record{"maybe-2", "1700000000.M1P2Q3"}));
    EXPECT_EQ(p[1], (state_file::pending_record{"maybe-3", ""}));
    EXPECT_EQ(s->pending(), 0u);
}

TEST(state_file, sizes_tell_a_reused_uidl_from_the_stored_message) {
    temp_dir d;
    {
        auto s = state_file::load(d.path / "state");
        ASSERT_TRUE(s);
        ASSERT_TRUE(s->add("u1", 4162));
        ASSERT_TRUE(s->add("u2"));  // size not known: matches any
        ASSERT_TRUE(s->add("u3", 0));
        ASSERT_TRUE(s->add_pending("u4", "loc", 77));
        ASSERT_TRUE(s->add_pending("u5", "", 18446744073709551614u));  // the largest size written
        ASSERT_TRUE(s->save());
    }
    EXPECT_EQ(read_file(d.path / "state"),
              "# mailnet pop3c state 3\nu1 4162\nu2 -\nu3 0\n? u4 loc 77\n? u5  18446744073709551614\n");
    auto s = state_file::load(d.path / "state");
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_TRUE(s->holds("u1", 4162));
    EXPECT_FALSE(s->holds("u1", 4163)) << "another message under a stored one's UIDL";
    EXPECT_TRUE(s->contains("u1"));
    EXPECT_TRUE(s->holds("u2", 1));
    EXPECT_TRUE(s->holds("u2", 99999));
    EXPECT_TRUE(s->holds("u3", 0));
    EXPECT_FALSE(s->holds("u3", 1));
    EXPECT_FALSE(s->holds("u9", 1));
    const auto p = s->take_pending();
    ASSERT_EQ(p.size(), 2u);
    EXPECT_EQ(p[0], (state_file::pending_record{"u4", "loc", 77}));
    EXPECT_EQ(p[1], (state_file::pending_record{"u5", "", 18446744073709551614u}));
    // Adding again records the new size (the message fetched anew under the reused UIDL).
    ASSERT_TRUE(s->add("u1", 5000));
    EXPECT_TRUE(s->holds("u1", 5000));
    EXPECT_FALSE(s->holds("u1", 4162));
    // A version 2 file (no sizes) reads as sizes not known, pending records included.
    write_file(d.path / "v2", "# mailnet pop3c state 2\nold\n? p loc\n? q \n");
    auto v2 = state_file::load(d.path / "v2");
    ASSERT_TRUE(v2) << v2.error().message();
    EXPECT_TRUE(v2->holds("old", 123));
    const auto p2 = v2->take_pending();
    ASSERT_EQ(p2.size(), 2u);
    EXPECT_EQ(p2[0], (state_file::pending_record{"p", "loc"}));
    EXPECT_EQ(p2[1], (state_file::pending_record{"q", ""}));
    // Version 3 lines without a size, or with one that is not, do not load.
    for (const char* bad : {"# mailnet pop3c state 3\nu1\n", "# mailnet pop3c state 3\nu1 12x\n",
                            "# mailnet pop3c state 3\nu1 18446744073709551615\n",
                            "# mailnet pop3c state 3\nu1 99999999999999999999999\n", "# mailnet pop3c state 3\nu1 \n"}) {
        write_file(d.path / "bad", bad);
        EXPECT_FALSE(state_file::load(d.path / "bad")) << bad;
    }
}

TEST(state_file, it_is_bound_to_the_account_it_was_kept_for) {
    temp_dir d;
    {
        auto s = state_file::load(d.path / "state");
        ASSERT_TRUE(s);
        EXPECT_EQ(s->account(), "");
        ASSERT_TRUE(s->bind("alice@pop.example:110"));
        ASSERT_TRUE(s->add("u1"));
        ASSERT_TRUE(s->save());
    }
    EXPECT_EQ(read_file(d.path / "state"), "# mailnet pop3c state 3\n# account alice@pop.example:110\nu1 -\n");
    auto again = state_file::load(d.path / "state");
    ASSERT_TRUE(again);
    EXPECT_EQ(again->account(), "alice@pop.example:110");
    EXPECT_TRUE(again->contains("u1"));
    EXPECT_TRUE(again->bind("alice@pop.example:110")) << "the same account";
    // Another account (user, host or port) is refused, and the state stays the first's.
    for (const char* other : {"bob@pop.example:110", "alice@pop.example:995", "alice@other.example:110"}) {
        auto b = again->bind(other);
        ASSERT_FALSE(b) << other;
        EXPECT_EQ(b.error(), make_error_code(mailnet::errc::bad_config));
        EXPECT_EQ(again->account(), "alice@pop.example:110");
    }
    EXPECT_EQ(again->bind("bad\taccount").error(), make_error_code(mailnet::errc::bad_input));
    EXPECT_EQ(again->bind("").error(), make_error_code(mailnet::errc::bad_input));
}

TEST(state_file, a_file_from_before_accounts_takes_the_first_account_bound) {
    temp_dir d;
    write_file(d.path / "state", "# mailnet pop3c state 1\nu1\nu2\n");
    auto s = state_file::load(d.path / "state");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->account(), "");
    ASSERT_TRUE(s->bind("alice@pop.example:110"));
    ASSERT_TRUE(s->save());
    EXPECT_EQ(read_file(d.path / "state"), "# mailnet pop3c state 3\n# account alice@pop.example:110\nu1 -\nu2 -\n");
}

TEST(state_file, the_account_names_user_host_and_port_printably) {
    EXPECT_EQ(state_file::account_of("Alice", "POP.Example", 995), "Alice@pop.example:995");
    EXPECT_EQ(state_file::account_of("bo\tb 100%", "::1", 110), "bo%09b%20100%25@::1:110");
    EXPECT_EQ(state_file::account_of("\xC3\xA9", "h", 1), "%C3%A9@h:1");
    // Escaped, every account can be bound: no name skips the check.
    temp_dir d;
    auto s = state_file::load(d.path / "state");
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->bind(state_file::account_of("bo\tb", "h", 110)));
    EXPECT_FALSE(s->bind(state_file::account_of("bob", "h", 110)));
}

TEST(state_file, a_hand_edited_account_line_is_read_with_its_blanks_trimmed) {
    temp_dir d;
    write_file(d.path / "state", "# mailnet pop3c state 2\n#account x\n");
    EXPECT_FALSE(state_file::load(d.path / "state")) << "not the account line: not a UIDL either";
    write_file(d.path / "state", "# mailnet pop3c state 2\n# account  alice@localhost:110 \t\nu1\n");
    auto s = state_file::load(d.path / "state");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->account(), "alice@localhost:110");
    EXPECT_TRUE(s->bind("alice@localhost:110"));
    EXPECT_TRUE(s->contains("u1"));
}
