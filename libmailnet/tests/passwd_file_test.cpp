// passwd_file_test.cpp: the Dovecot passwd-file authenticator (schemes, bare crypt hashes,
// rejected lines, reload on change, concurrency, recipient resolution) and secrets_equal.
#include "mailnet/auth/auth.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using mailnet::auth_result;
using mailnet::credentials;
using mailnet::log_level;
using mailnet::recipient_result;

// Hash vectors. None was made by the code under test:
// - SHA512-CRYPT, SHA256-CRYPT: `openssl passwd -6 -salt saltsalt secret` and `-5` (OpenSSL 3.0).
// - BLF-CRYPT: Openwall crypt_blowfish wrapper.c test vectors ("U*U"; "\xa3" for $2y$ / $2b$).
// - yescrypt: the openwall/yescrypt reference TESTS-OK ("pleaseletmein").
constexpr const char* sha512_secret =
    "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
constexpr const char* sha256_secret = "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";
constexpr const char* bcrypt_2a_uu = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
constexpr const char* bcrypt_2y_a3 = "$2y$05$/OK.fbVrR/bpIqNJ5ianF.Sa7shbm4.OzKpvFnX1pQLmQW96oUlCq";
constexpr const char* bcrypt_2b_a3 = "$2b$05$/OK.fbVrR/bpIqNJ5ianF.Sa7shbm4.OzKpvFnX1pQLmQW96oUlCq";
constexpr const char* yescrypt_please =
    "$y$jD5.7$LdJMENpBABJJ3hIHjB1Bi.$HboGM6qPrsK.StKYGt6KErmUYtioHreJd98oIugoNB6";

// Collects log lines; thread-safe, as a sink must be.
struct log_capture {
    std::mutex m;
    std::vector<std::pair<log_level, std::string>> lines;

    mailnet::log_sink sink() {
        return [this](log_level l, std::string_view s) {
            std::lock_guard g(m);
            lines.emplace_back(l, std::string(s));
        };
    }
    // Lines at `level` containing every one of `parts`.
    int count(log_level level, std::initializer_list<std::string_view> parts) {
        std::lock_guard g(m);
        int n = 0;
        for (const auto& [l, s] : lines) {
            bool all = l == level;
            for (auto p : parts) all = all && s.find(p) != std::string::npos;
            n += all;
        }
        return n;
    }
    bool mentions(std::string_view text) {
        std::lock_guard g(m);
        for (const auto& [l, s] : lines)
            if (s.find(text) != std::string::npos) return true;
        return false;
    }
};

class passwd_file : public ::testing::Test {
protected:
    void SetUp() override {
        std::string tmpl = (fs::temp_directory_path() / "mailnet-passwd-XXXXXX").string();
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        dir_ = tmpl;
        path_ = dir_ / "users";
    }
    void TearDown() override { fs::remove_all(dir_); }

    // Writes the file in place and gives it a modification time no earlier write had.
    void write(std::string_view text) {
        {
            std::ofstream f(path_, std::ios::binary | std::ios::trunc);
            f << text;
        }
        bump(path_);
    }
    // Replaces the file by rename, as editors and config tools do (a new inode).
    void replace(std::string_view text) {
        const fs::path tmp = dir_ / "users.new";
        {
            std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
            f << text;
        }
        bump(tmp);
        fs::rename(tmp, path_);
    }
    void bump(const fs::path& p) {
        const timespec t[2] = {{1'600'000'000 + ++stamps_, 0}, {1'600'000'000 + stamps_, 0}};
        ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), t, 0), 0);
    }

    std::unique_ptr<mailnet::authenticator> open() {
        auto r = mailnet::open_passwd_file({path_, log_.sink()});
        EXPECT_TRUE(r) << r.error().message();
        return r ? std::move(*r) : nullptr;
    }

    static bool ok(mailnet::authenticator& a, std::string user, std::string password) {
        const auth_result r = a.authenticate(credentials{std::move(user), std::move(password)});
        return r.outcome == auth_result::status::ok;
    }

    // "account mailbox" when the address resolves, "unknown" or "tempfail" otherwise.
    static std::string rcpt(mailnet::authenticator& a, std::string_view address) {
        const recipient_result r = a.resolve_recipient(address);
        switch (r.outcome) {
            case recipient_result::status::ok: return r.account + " " + r.mailbox;
            case recipient_result::status::unknown: return "unknown";
            case recipient_result::status::tempfail: return "tempfail";
        }
        return "?";
    }

    fs::path dir_;
    fs::path path_;
    log_capture log_;
    int stamps_ = 0;
};

TEST_F(passwd_file, each_scheme_accepts_its_password_and_refuses_others) {
    write(std::string("plain:{PLAIN}pw-plain\n") +           //
          "s512:{SHA512-CRYPT}" + sha512_secret + "\n" +     //
          "s256:{SHA256-CRYPT}" + sha256_secret + "\n" +     //
          "blf2a:{BLF-CRYPT}" + bcrypt_2a_uu + "\n" +        //
          "blf2y:{BLF-CRYPT}" + bcrypt_2y_a3 + "\n" +        //
          "blf2b:{BLF-CRYPT}" + bcrypt_2b_a3 + "\n" +        //
          "bare6:" + sha512_secret + "\n" +                  //
          "bare5:" + sha256_secret + "\n" +                  //
          "bare2y:" + bcrypt_2y_a3 + "\n" +                  //
          "bare_y:" + yescrypt_please + "\n" +               //
          "crypt:{CRYPT}" + sha512_secret + "\n" +           //
          "lower:{sha512-crypt}" + sha512_secret + "\n" +    //
          "mixed:{Plain}pw-mixed\n");
    auto a = open();
    ASSERT_TRUE(a);
    const std::vector<std::pair<std::string, std::string>> good = {
        {"plain", "pw-plain"}, {"s512", "secret"}, {"s256", "secret"},  {"blf2a", "U*U"},
        {"blf2y", "\xa3"},     {"blf2b", "\xa3"},  {"bare6", "secret"}, {"bare5", "secret"},
        {"bare2y", "\xa3"},    {"bare_y", "pleaseletmein"}, {"crypt", "secret"}, {"lower", "secret"},
        {"mixed", "pw-mixed"},
    };
    for (const auto& [user, pw] : good) {
        const auth_result r = a->authenticate({user, pw});
        EXPECT_EQ(r.outcome, auth_result::status::ok) << user;
        EXPECT_EQ(r.account, user);
        EXPECT_EQ(r.mailbox, user);
        EXPECT_FALSE(ok(*a, user, pw + "x")) << user;
        EXPECT_FALSE(ok(*a, user, "Secret")) << user;
    }
    EXPECT_FALSE(ok(*a, "blf2a", "U*U*"));
    EXPECT_TRUE(ok(*a, "PLAIN", "pw-plain"));  // a name in any ASCII case (Dovecot %Lu)
    EXPECT_FALSE(ok(*a, "plainx", "pw-plain"));
    EXPECT_FALSE(ok(*a, "nobody", "secret"));
    EXPECT_FALSE(ok(*a, "nobody", "pw-plain"));
    EXPECT_EQ(log_.count(log_level::warning, {}), 0);
}

TEST_F(passwd_file, a_bare_secret_is_never_plain) {
    write("bob:hunter2\nbob2:{PLAIN\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_FALSE(ok(*a, "bob", "hunter2"));
    EXPECT_FALSE(ok(*a, "bob2", "{PLAIN"));
    EXPECT_EQ(log_.count(log_level::warning, {"line 1", "bob", "never taken as PLAIN", "disabled"}), 1);
    EXPECT_EQ(log_.count(log_level::warning, {"line 2", "bob2", "disabled"}), 1);
    EXPECT_FALSE(log_.mentions("hunter2"));
}

TEST_F(passwd_file, weak_or_unknown_crypt_prefixes_are_disabled) {
    // DES and MD5-crypt strings: libxcrypt would take them, the users file does not.
    write("des:ab01FAX.bQRSU\nmd5:$1$abcd0123$9Qcg8DyviekV3tDGMZynJ1\nmismatch:{SHA512-CRYPT}" +
          std::string(sha256_secret) + "\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_FALSE(ok(*a, "md5", "Xy01@#"));
    EXPECT_FALSE(ok(*a, "mismatch", "secret"));
    EXPECT_EQ(log_.count(log_level::warning, {"line 1", "des", "disabled"}), 1);
    EXPECT_EQ(log_.count(log_level::warning, {"line 2", "md5", "disabled"}), 1);
    EXPECT_EQ(log_.count(log_level::warning, {"line 3", "mismatch", "SHA512-CRYPT", "disabled"}), 1);
    EXPECT_TRUE(a->exists("des"));  // the account exists; only its password is unusable
}

TEST_F(passwd_file, unknown_scheme_disables_the_entry_with_a_warning) {
    write("# users\nalice:{MD5}X03MO1qnZdYdgyfeuILPmQ==\ncarol:{SSHA}c2VjcmV0c2FsdA==\ndave:{PLAIN}ok\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_FALSE(ok(*a, "alice", "password"));
    EXPECT_FALSE(ok(*a, "carol", "secret"));
    EXPECT_TRUE(ok(*a, "dave", "ok"));
    EXPECT_EQ(log_.count(log_level::warning, {"line 2", "alice", "unknown password scheme {MD5}", "disabled"}), 1);
    EXPECT_EQ(log_.count(log_level::warning, {"line 3", "carol", "{SSHA}"}), 1);
    EXPECT_FALSE(log_.mentions("X03MO1qnZdYdgyfeuILPmQ"));
    EXPECT_FALSE(log_.mentions("c2VjcmV0c2FsdA"));
}

TEST_F(passwd_file, a_malformed_line_fails_the_first_read_with_bad_config) {
    // Not name:secret[:...] with a name and a secret field: the file does not parse.
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"justapassword", "no ':'"},
        {":{PLAIN}nameless", "empty user name"},
    };
    for (const auto& [bad, why] : cases) {
        log_capture log;
        write("# users\n   \n\t\ngood:{PLAIN}pw\n" + bad + "\nlater:{PLAIN}pw\n");
        auto r = mailnet::open_passwd_file({path_, log.sink()});
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error(), mailnet::errc::bad_config) << bad;
        EXPECT_EQ(log.count(log_level::error, {path_.string() + ":5: ", why, "not loaded"}), 1) << bad;
        EXPECT_EQ(log.count(log_level::warning, {}), 0) << bad;
        EXPECT_FALSE(log.mentions("justapassword"));
        EXPECT_FALSE(log.mentions("nameless"));
    }
    // Blank, whitespace-only and comment lines are fine; so is an unusable entry, such as one
    // with an empty password field (Dovecot's `user::1000:1000::/home/u::`): it is disabled.
    write("# users\n   \n\t\n\ngood:{PLAIN}pw\nodd:{MD5}abc\nnopw:{PLAIN}\nemptypw:\nemptypw2::1000:1000::/home/x::\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_TRUE(ok(*a, "good", "pw"));
    EXPECT_EQ(log_.count(log_level::warning, {"line 6", "odd", "disabled"}), 1);
    EXPECT_EQ(log_.count(log_level::warning, {"line 7", "nopw", "empty password", "disabled"}), 1);
    EXPECT_EQ(log_.count(log_level::warning, {"line 8", "emptypw", "empty password", "disabled"}), 1);
    EXPECT_FALSE(ok(*a, "emptypw", ""));
    EXPECT_FALSE(ok(*a, "emptypw2", ""));
}

TEST_F(passwd_file, a_crypt_hash_libxcrypt_cannot_use_disables_its_entry) {
    write("broken:$6$bad salt$abc\nalice:{PLAIN}pw\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_EQ(log_.count(log_level::warning, {"line 1", "broken", "cannot use", "disabled"}), 1);
    EXPECT_FALSE(ok(*a, "broken", "abc"));
    EXPECT_TRUE(ok(*a, "alice", "pw"));
}

TEST_F(passwd_file, comments_blank_lines_and_extra_fields) {
    write("# comment: with colon\n\n#alice:{PLAIN}commented\nalice:{PLAIN}pw:1000:1000:Alice:/home/alice:/bin/sh:"
          "userdb_mail=maildir:~/Mail\nbob:" +
          std::string(sha512_secret) + "::::::\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_TRUE(ok(*a, "alice", "pw"));
    EXPECT_FALSE(ok(*a, "alice", "commented"));
    EXPECT_FALSE(ok(*a, "#alice", "commented"));
    EXPECT_TRUE(ok(*a, "bob", "secret"));
    EXPECT_EQ(log_.count(log_level::warning, {}), 0);
}

TEST_F(passwd_file, crlf_line_ends) {
    write("# windows\r\n\r\nalice:{PLAIN}pw\r\nbob:" + std::string(sha256_secret) + "\r\ncarol:{PLAIN}last");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_TRUE(ok(*a, "alice", "pw"));
    EXPECT_FALSE(ok(*a, "alice", "pw\r"));
    EXPECT_TRUE(ok(*a, "bob", "secret"));
    EXPECT_TRUE(ok(*a, "carol", "last"));  // no final line end
    EXPECT_EQ(log_.count(log_level::warning, {}), 0);
}

TEST_F(passwd_file, duplicate_name_first_wins_with_a_warning) {
    write("alice:{PLAIN}first\nalice:{PLAIN}second\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_TRUE(ok(*a, "alice", "first"));
    EXPECT_FALSE(ok(*a, "alice", "second"));
    EXPECT_EQ(log_.count(log_level::warning, {"line 2", "alice", "line 1"}), 1);
}

TEST_F(passwd_file, nul_bytes_and_empty_or_overlong_passwords_fail) {
    write("alice:{PLAIN}pw\nempty:{PLAIN}\nlong:{PLAIN}" + std::string(600, 'x') + "\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_FALSE(ok(*a, "alice", std::string("pw\0", 3)));
    EXPECT_FALSE(ok(*a, "alice", std::string("p\0w", 3)));
    EXPECT_FALSE(ok(*a, std::string("alice\0", 6), "pw"));
    EXPECT_FALSE(ok(*a, "alice", ""));
    EXPECT_FALSE(ok(*a, "empty", ""));
    EXPECT_FALSE(ok(*a, "", ""));
    EXPECT_FALSE(ok(*a, "long", std::string(600, 'x')));
    EXPECT_TRUE(ok(*a, "alice", "pw"));
}

TEST_F(passwd_file, lookup_gives_only_plain_secrets) {
    write("alice:{PLAIN}pw\nbob:" + std::string(sha512_secret) + "\ncarol:{MD5}abc\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_TRUE(a->can_lookup());
    EXPECT_EQ(a->lookup("alice"), "pw");
    EXPECT_EQ(a->lookup("bob"), std::nullopt);
    EXPECT_EQ(a->lookup("carol"), std::nullopt);
    EXPECT_EQ(a->lookup("nobody"), std::nullopt);
    EXPECT_TRUE(a->exists("alice"));
    EXPECT_TRUE(a->exists("bob"));
    EXPECT_FALSE(a->exists("nobody"));

    write("bob:" + std::string(sha512_secret) + "\n");
    EXPECT_FALSE(a->can_lookup());
    EXPECT_EQ(a->lookup("alice"), std::nullopt);
    EXPECT_FALSE(a->exists("alice"));
}

TEST_F(passwd_file, rewritten_in_place_is_reloaded) {
    write("alice:{PLAIN}old\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_TRUE(ok(*a, "alice", "old"));
    write("alice:{PLAIN}new\n");  // same size, same inode: only the time differs
    EXPECT_TRUE(ok(*a, "alice", "new"));
    EXPECT_FALSE(ok(*a, "alice", "old"));
    write("alice:" + std::string(sha256_secret) + "\nbob:{PLAIN}pw\n");
    EXPECT_TRUE(ok(*a, "alice", "secret"));
    EXPECT_TRUE(a->exists("bob"));
    EXPECT_GE(log_.count(log_level::info, {"reloaded"}), 2);
}

TEST_F(passwd_file, replaced_by_rename_is_reloaded) {
    write("alice:{PLAIN}old\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_TRUE(ok(*a, "alice", "old"));
    replace("alice:{PLAIN}new\n");
    EXPECT_TRUE(ok(*a, "alice", "new"));
    EXPECT_FALSE(ok(*a, "alice", "old"));
}

TEST_F(passwd_file, missing_file_keeps_the_previous_table_and_logs_once) {
    write("alice:{PLAIN}pw\n");
    auto a = open();
    ASSERT_TRUE(a);
    fs::remove(path_);
    EXPECT_TRUE(ok(*a, "alice", "pw"));
    EXPECT_TRUE(ok(*a, "alice", "pw"));
    EXPECT_TRUE(a->exists("alice"));
    EXPECT_EQ(log_.count(log_level::warning, {"cannot re-read", "keeping the previous 1"}), 1);

    write("alice:{PLAIN}back\n");
    EXPECT_TRUE(ok(*a, "alice", "back"));
    EXPECT_EQ(log_.count(log_level::info, {"readable again"}), 1);
}

TEST_F(passwd_file, unreadable_file_keeps_the_previous_table) {
    // A directory in the file's place: stat works, reading does not (also as root, which
    // chmod 000 would not stop).
    write("alice:{PLAIN}pw\n");
    auto a = open();
    ASSERT_TRUE(a);
    fs::remove(path_);
    fs::create_directory(path_);
    EXPECT_TRUE(ok(*a, "alice", "pw"));
    EXPECT_TRUE(ok(*a, "alice", "pw"));
    EXPECT_EQ(log_.count(log_level::warning, {"cannot re-read", "not a regular file"}), 1);
    fs::remove(path_);
    write("alice:{PLAIN}new\n");
    EXPECT_TRUE(ok(*a, "alice", "new"));
}

TEST_F(passwd_file, a_reload_that_does_not_parse_keeps_the_previous_table) {
    write("alice:{PLAIN}pw\nbob:{PLAIN}pw2\n");
    auto a = open();
    ASSERT_TRUE(a);
    const std::string at = path_.string() + ":";
    // Garbage (a binary in the file's place): every user still logs in, one log line.
    write("\x7f" "ELF\x01\x02\n\xff\xfe garbage\nno colon here\n");
    for (int i = 0; i < 5; ++i) {
        EXPECT_TRUE(ok(*a, "alice", "pw"));
        EXPECT_TRUE(a->exists("bob"));
    }
    EXPECT_EQ(a->lookup("bob"), "pw2");
    EXPECT_EQ(log_.count(log_level::warning, {at + "1: ", "not reloaded", "keeping the previous 2 entries"}), 1);

    // A half-edited file: the good lines before the bad one are not taken either.
    write("alice:{PLAIN}new\ncarol:{PLAIN}pw3\ndave\n");
    EXPECT_TRUE(ok(*a, "alice", "pw"));
    EXPECT_FALSE(ok(*a, "alice", "new"));
    EXPECT_FALSE(a->exists("carol"));
    EXPECT_TRUE(ok(*a, "bob", "pw2"));
    EXPECT_EQ(log_.count(log_level::warning, {at + "3: ", "no ':'", "keeping the previous 2 entries"}), 1);
    EXPECT_EQ(log_.count(log_level::warning, {"not reloaded"}), 2) << "once per version of the file";

    // Fixed: the new file takes effect; an unknown scheme only disables its entry.
    write("alice:{PLAIN}new\ncarol:{PLAIN}pw3\ndave:{MD5}abc\n");
    EXPECT_TRUE(ok(*a, "alice", "new"));
    EXPECT_FALSE(ok(*a, "alice", "pw"));
    EXPECT_TRUE(ok(*a, "carol", "pw3"));
    EXPECT_FALSE(a->exists("bob"));
    EXPECT_TRUE(a->exists("dave"));
    EXPECT_EQ(log_.count(log_level::warning, {"line 3", "dave", "unknown password scheme", "disabled"}), 1);
    EXPECT_EQ(log_.count(log_level::info, {"reloaded", "3 entries"}), 1);
    EXPECT_EQ(log_.count(log_level::warning, {"not reloaded"}), 2);
}

TEST_F(passwd_file, a_bad_reload_undone_to_the_same_bytes_keeps_the_table_and_says_so) {
    write("alice:{PLAIN}pw\n");
    auto a = open();
    ASSERT_TRUE(a);
    replace("alice\n");
    EXPECT_TRUE(ok(*a, "alice", "pw"));
    EXPECT_EQ(log_.count(log_level::warning, {path_.string() + ":1: ", "not reloaded"}), 1);
    replace("alice\n");  // the same bad bytes, a new version of the file: said again
    EXPECT_TRUE(ok(*a, "alice", "pw"));
    EXPECT_EQ(log_.count(log_level::warning, {"not reloaded"}), 2);
    replace("alice:{PLAIN}pw\n");
    EXPECT_TRUE(ok(*a, "alice", "pw"));
    EXPECT_EQ(log_.count(log_level::info, {"parses again", "1 entries"}), 1);
    EXPECT_EQ(log_.count(log_level::info, {"reloaded"}), 0);
}

TEST_F(passwd_file, open_fails_with_io_error_when_the_file_cannot_be_read) {
    auto r = mailnet::open_passwd_file({dir_ / "missing", log_.sink()});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), mailnet::errc::io_error);
    EXPECT_EQ(log_.count(log_level::error, {"missing"}), 1);

    auto d = mailnet::open_passwd_file({dir_, log_.sink()});
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error(), mailnet::errc::io_error);
}

TEST_F(passwd_file, empty_file_opens_with_no_users) {
    write("");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_FALSE(ok(*a, "alice", "pw"));
    EXPECT_FALSE(a->can_lookup());
}

TEST_F(passwd_file, concurrent_logins_while_the_file_is_rewritten) {
    write("alice:{PLAIN}one\nbob:" + std::string(sha256_secret) + "\n");
    auto a = open();
    ASSERT_TRUE(a);
    std::atomic<bool> stop{false};
    std::atomic<int> oks{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
        threads.emplace_back([&, i] {
            for (int n = 0; !stop || n < 5; ++n) {
                const bool bob = (n + i) % 4 == 0;
                const auth_result r = bob ? a->authenticate({"bob", "secret"})
                                          : a->authenticate({"alice", n % 2 ? "one" : "two"});
                EXPECT_NE(r.outcome, auth_result::status::tempfail);
                if (r.outcome == auth_result::status::ok) ++oks;
                (void)a->exists("alice");
                // A reader may catch the file truncated (an empty table): unknown, never another.
                const std::string to = rcpt(*a, "ALICE");
                EXPECT_TRUE(to == "alice alice" || to == "unknown") << to;
                (void)a->lookup("alice");
                (void)a->can_lookup();
            }
        });
    for (int n = 0; n < 40; ++n) {
        const std::string text = "alice:{PLAIN}" + std::string(n % 2 ? "one" : "two") + "\nbob:" + sha256_secret + "\n";
        if (n % 3 == 0)
            replace(text);
        else
            write(text);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    stop = true;
    for (auto& t : threads) t.join();
    EXPECT_GT(oks.load(), 0);

    write("alice:{PLAIN}final\n");
    EXPECT_TRUE(ok(*a, "alice", "final"));
}

TEST_F(passwd_file, a_recipient_resolves_to_the_account_a_login_reaches_in_any_ascii_case) {
    write("alice@example.org:{PLAIN}pw\nbob@example.org:" + std::string(sha512_secret) + "\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_EQ(rcpt(*a, "alice@example.org"), "alice@example.org alice@example.org");
    // The whole address: local part and domain alike.
    EXPECT_EQ(rcpt(*a, "Alice@Example.ORG"), "alice@example.org alice@example.org");
    EXPECT_EQ(rcpt(*a, "ALICE@EXAMPLE.ORG"), "alice@example.org alice@example.org");
    EXPECT_EQ(rcpt(*a, "BOB@example.org"), "bob@example.org bob@example.org");
    // The same account and mailbox as a login of it.
    const auth_result login = a->authenticate({"alice@example.org", "pw"});
    const recipient_result r = a->resolve_recipient("aLiCe@eXaMpLe.oRg");
    ASSERT_EQ(login.outcome, auth_result::status::ok);
    ASSERT_EQ(r.outcome, recipient_result::status::ok);
    EXPECT_EQ(r.account, login.account);
    EXPECT_EQ(r.mailbox, login.mailbox);
    const auth_result bob = a->authenticate({"bob@example.org", "secret"});
    EXPECT_EQ(rcpt(*a, "Bob@Example.org"), bob.account + " " + bob.mailbox);
    EXPECT_EQ(log_.count(log_level::warning, {}), 0);
}

TEST_F(passwd_file, a_bare_postmaster_reaches_the_first_postmaster_line_unless_one_is_named_so) {
    // RFC 5321 4.5.1: mail to <Postmaster> must be taken; smtpd asks for postmaster@ its host
    // name first, then for the bare name, which finds the first postmaster@ line in the file.
    write("alice@example.org:{PLAIN}pw\nPostMaster@example.net:{PLAIN}pw\npostmaster@example.org:{PLAIN}pw\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_EQ(rcpt(*a, "postmaster"), "PostMaster@example.net PostMaster@example.net");
    EXPECT_EQ(rcpt(*a, "POSTMASTER"), "PostMaster@example.net PostMaster@example.net");
    EXPECT_EQ(rcpt(*a, "postmaster@example.org"), "postmaster@example.org postmaster@example.org");
    EXPECT_EQ(rcpt(*a, "postmaster@example.com"), "unknown") << "a domain not in the file stays unknown";
    EXPECT_EQ(rcpt(*a, "alice"), "unknown");
    // An entry named "postmaster" itself wins; without any postmaster line the bare name is unknown.
    write("postmaster@example.org:{PLAIN}pw\npostmaster:{PLAIN}pw\n");
    EXPECT_EQ(rcpt(*a, "Postmaster"), "postmaster postmaster");
    write("alice@example.org:{PLAIN}pw\n");
    EXPECT_EQ(rcpt(*a, "postmaster"), "unknown");
}

TEST_F(passwd_file, an_entry_written_with_needless_quotes_is_the_recipient_smtpd_names_without_them) {
    // smtpd asks for "quoted"@example.org as quoted@example.org (the form it stores under):
    // an entry written with the quotes, or a login, reaches the same account either way.
    write("\"quoted\"@example.org:{PLAIN}pw\n\"a\\ b\"@example.org:{PLAIN}pw2\nplain@example.org:{PLAIN}pw3\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_EQ(rcpt(*a, "quoted@example.org"), "\"quoted\"@example.org \"quoted\"@example.org");
    EXPECT_EQ(rcpt(*a, "\"a b\"@example.org"), "\"a\\ b\"@example.org \"a\\ b\"@example.org");
    const auth_result login = a->authenticate({"\"quoted\"@example.org", "pw"});
    ASSERT_EQ(login.outcome, auth_result::status::ok);
    EXPECT_EQ(login.mailbox, a->resolve_recipient("quoted@example.org").mailbox);
    // And a login written with quotes reaches an entry written without them.
    EXPECT_EQ(a->authenticate({"\"plain\"@example.org", "pw3"}).outcome, auth_result::status::ok);
    EXPECT_EQ(log_.count(log_level::warning, {}), 0);
    // Not a spelling of an address: a source route, parameters, text after it.
    EXPECT_EQ(a->authenticate({"@relay.example:plain@example.org", "pw3"}).outcome, auth_result::status::fail);
    EXPECT_EQ(a->authenticate({"plain@example.org> X=1", "pw3"}).outcome, auth_result::status::fail);
}

TEST_F(passwd_file, a_quoted_entry_never_takes_the_address_of_an_entry_written_plainly) {
    // "bob" first, bob second: any case of bob@example.org is still the second line's.
    write("\"bob\"@example.org:{PLAIN}one\nbob@example.org:{PLAIN}two\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_EQ(rcpt(*a, "Bob@example.org"), "bob@example.org bob@example.org");
    EXPECT_EQ(rcpt(*a, "bob@example.org"), "bob@example.org bob@example.org");
    EXPECT_EQ(a->authenticate({"BOB@example.org", "one"}).outcome, auth_result::status::fail);
    EXPECT_EQ(a->authenticate({"BOB@example.org", "two"}).outcome, auth_result::status::ok);
    EXPECT_EQ(log_.count(log_level::warning, {"line 1:", "names the address of line 2"}), 1) << "said once, of line 1";
}

TEST_F(passwd_file, a_login_in_any_ascii_case_reaches_the_entry_and_only_with_its_password) {
    // As Dovecot's default auth_username_format %Lu: the login's case does not matter, so a
    // user who types ALICE@Example.org reaches the mailbox RCPT TO:<alice@example.org> fills.
    write("alice@example.org:{PLAIN}pw\nbob@example.org:" + std::string(sha512_secret) + "\n");
    auto a = open();
    ASSERT_TRUE(a);
    const auth_result upper = a->authenticate({"ALICE@Example.ORG", "pw"});
    ASSERT_EQ(upper.outcome, auth_result::status::ok);
    EXPECT_EQ(upper.account, "alice@example.org");
    EXPECT_EQ(upper.mailbox, "alice@example.org");
    EXPECT_FALSE(ok(*a, "ALICE@Example.ORG", "PW"));  // the password's case does
    EXPECT_TRUE(ok(*a, "Bob@Example.org", "secret"));  // crypt entries alike
    EXPECT_FALSE(ok(*a, "Bob@Example.org", "Secret"));
    EXPECT_EQ(a->lookup("ALICE@EXAMPLE.ORG").value_or(""), "pw");  // APOP's secret
    EXPECT_FALSE(ok(*a, "alice@example.orgx", "pw"));
}

TEST_F(passwd_file, an_address_with_no_account_is_unknown) {
    write("alice@example.org:{PLAIN}pw\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_EQ(rcpt(*a, "carol@example.org"), "unknown");
    EXPECT_EQ(rcpt(*a, "alice"), "unknown");  // the whole address, not the local part
    EXPECT_EQ(rcpt(*a, "alice@example.org.evil"), "unknown");
    EXPECT_EQ(rcpt(*a, "alice@example.or"), "unknown");
    EXPECT_EQ(rcpt(*a, ""), "unknown");
    EXPECT_EQ(rcpt(*a, std::string("alice@example.org\0", 18)), "unknown");
}

TEST_F(passwd_file, names_differing_only_in_case_exact_case_wins_else_the_first_line) {
    write("Alice@Example.org:{PLAIN}upper\nalice@example.org:{PLAIN}lower\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_EQ(rcpt(*a, "Alice@Example.org"), "Alice@Example.org Alice@Example.org");
    EXPECT_EQ(rcpt(*a, "alice@example.org"), "alice@example.org alice@example.org");
    EXPECT_EQ(rcpt(*a, "ALICE@EXAMPLE.ORG"), "Alice@Example.org Alice@Example.org");  // line 1's
    EXPECT_TRUE(ok(*a, "Alice@Example.org", "upper"));
    EXPECT_TRUE(ok(*a, "alice@example.org", "lower"));
    // Said once, when the file is read; never per call.
    EXPECT_EQ(log_.count(log_level::warning, {"line 2", "alice@example.org", "differs only in case", "line 1"}), 1);
    EXPECT_EQ(log_.count(log_level::warning, {}), 1);
}

TEST_F(passwd_file, a_disabled_entry_still_receives_mail) {
    // As Dovecot: an entry whose password cannot be used cannot log in, but it is an account.
    write("carol@example.org:{MD5}X03MO1qnZdYdgyfeuILPmQ==\ndave@example.org:\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_FALSE(ok(*a, "carol@example.org", "password"));
    EXPECT_EQ(rcpt(*a, "carol@example.org"), "carol@example.org carol@example.org");
    EXPECT_EQ(rcpt(*a, "Dave@Example.org"), "dave@example.org dave@example.org");
}

TEST_F(passwd_file, recipients_follow_a_reload) {
    write("alice@example.org:{PLAIN}pw\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_EQ(rcpt(*a, "Alice@example.org"), "alice@example.org alice@example.org");
    replace("bob@example.org:{PLAIN}pw\nAlice@Example.org:{PLAIN}pw\n");
    EXPECT_EQ(rcpt(*a, "BOB@example.org"), "bob@example.org bob@example.org");
    EXPECT_EQ(rcpt(*a, "alice@example.org"), "Alice@Example.org Alice@Example.org");
    write("bob@example.org:{PLAIN}pw\n");
    EXPECT_EQ(rcpt(*a, "alice@example.org"), "unknown");
    // A reload that does not parse keeps the previous table, recipients included.
    write("bob@example.org:{PLAIN}pw\ngarbage\n");
    EXPECT_EQ(rcpt(*a, "Bob@example.org"), "bob@example.org bob@example.org");
    fs::remove(path_);  // unreadable: still the previous table, never tempfail
    EXPECT_EQ(rcpt(*a, "Bob@example.org"), "bob@example.org bob@example.org");
}

TEST_F(passwd_file, utf8_in_a_recipient_is_matched_octet_for_octet) {
    // Only ASCII letters fold: "Ö" (c3 96) is not "ö" (c3 b6), as DESIGN.md's mailbox names.
    write("j\xc3\xb6rg@example.org:{PLAIN}pw\n\xc3\x84lice@example.org:{PLAIN}pw\n");
    auto a = open();
    ASSERT_TRUE(a);
    EXPECT_EQ(rcpt(*a, "J\xc3\xb6RG@EXAMPLE.org"), "j\xc3\xb6rg@example.org j\xc3\xb6rg@example.org");
    EXPECT_EQ(rcpt(*a, "J\xc3\x96RG@example.org"), "unknown");
    EXPECT_EQ(rcpt(*a, "j\xc3\x96rg@example.org"), "unknown");
    EXPECT_EQ(rcpt(*a, "\xc3\x84LICE@example.org"), "\xc3\x84lice@example.org \xc3\x84lice@example.org");
    EXPECT_EQ(rcpt(*a, "\xc3\xa4lice@example.org"), "unknown");
}

TEST(auth_functions, resolve_recipient_slot_default_and_set) {
    mailnet::auth_functions f;
    EXPECT_EQ(f.resolve_recipient("alice@example.org").outcome, recipient_result::status::unknown);
    // The interface's own default, for a backend that does not override it: no recipients.
    struct login_only final : mailnet::authenticator {
        auth_result authenticate(const credentials&) override { return auth_result::ok("a", "a"); }
        bool exists(std::string_view) override { return true; }
    } backend;
    EXPECT_EQ(backend.resolve_recipient("a").outcome, recipient_result::status::unknown);

    f.on_resolve_recipient = [](std::string_view address) {
        if (address == "down@example.org") return recipient_result::tempfail();
        if (address == "alice@example.org") return recipient_result::ok("alice", "alice-box");
        return recipient_result::unknown();
    };
    const recipient_result r = f.resolve_recipient("alice@example.org");
    ASSERT_EQ(r.outcome, recipient_result::status::ok);
    EXPECT_EQ(r.account, "alice");
    EXPECT_EQ(r.mailbox, "alice-box");
    EXPECT_EQ(f.resolve_recipient("down@example.org").outcome, recipient_result::status::tempfail);
    EXPECT_EQ(f.resolve_recipient("bob@example.org").outcome, recipient_result::status::unknown);
    f.on_resolve_recipient = nullptr;  // unset again: the default
    EXPECT_EQ(f.resolve_recipient("alice@example.org").outcome, recipient_result::status::unknown);
}

TEST(secrets, equal_and_unequal) {
    using mailnet::secrets_equal;
    EXPECT_TRUE(secrets_equal("", ""));
    EXPECT_TRUE(secrets_equal("secret", "secret"));
    EXPECT_FALSE(secrets_equal("secret", "Secret"));
    EXPECT_FALSE(secrets_equal("secret", "secrets"));
    EXPECT_FALSE(secrets_equal("secret", ""));
    EXPECT_FALSE(secrets_equal("", "x"));
    const std::string big(100000, 'a');
    EXPECT_TRUE(secrets_equal(big, big));
    EXPECT_FALSE(secrets_equal(big, big.substr(1)));
}

TEST(secrets, embedded_nul_bytes_count) {
    using mailnet::secrets_equal;
    using namespace std::string_view_literals;
    EXPECT_TRUE(secrets_equal("a\0b"sv, "a\0b"sv));
    EXPECT_FALSE(secrets_equal("a\0b"sv, "a\0c"sv));
    EXPECT_FALSE(secrets_equal("a\0"sv, "a"sv));
    EXPECT_FALSE(secrets_equal("\0"sv, ""sv));
}

}  // namespace

namespace {

TEST(open_authenticator, a_login_is_its_own_password_and_the_mailbox_its_lowercased_address) {
    auto a = mailnet::make_open_authenticator();
    const auto ok = a->authenticate({"Alice@Example.ORG", "Alice@Example.ORG"});
    ASSERT_EQ(ok.outcome, mailnet::auth_result::status::ok);
    EXPECT_EQ(ok.account, "Alice@Example.ORG");
    EXPECT_EQ(ok.mailbox, "alice@example.org") << "the mailbox SMTP delivers to";
    EXPECT_EQ(a->authenticate({"alice@example.org", "secret"}).outcome, mailnet::auth_result::status::fail);
    EXPECT_EQ(a->authenticate({"", ""}).outcome, mailnet::auth_result::status::fail);
    // The password is the address in any case, as the login is (docs/mailnetd.md).
    const auto cased = a->authenticate({"ALICE@example.org", "alice@EXAMPLE.org"});
    ASSERT_EQ(cased.outcome, mailnet::auth_result::status::ok);
    EXPECT_EQ(cased.mailbox, "alice@example.org");
    EXPECT_EQ(a->authenticate({"alice@example.org", "alice@example.orh"}).outcome, mailnet::auth_result::status::fail);
    // A login written as RCPT TO may write it reaches the mailbox that delivery went to.
    const auto quoted = a->authenticate({"\"Bob\"@example.org", "\"Bob\"@example.org"});
    ASSERT_EQ(quoted.outcome, mailnet::auth_result::status::ok);
    EXPECT_EQ(quoted.mailbox, a->resolve_recipient("bob@example.org").mailbox);
    const auto spaced = a->authenticate({"\"a\\ b\"@example.org", "\"a\\ b\"@example.org"});
    ASSERT_EQ(spaced.outcome, mailnet::auth_result::status::ok);
    EXPECT_EQ(spaced.mailbox, a->resolve_recipient("\"a b\"@example.org").mailbox);
    EXPECT_TRUE(a->can_lookup());
    EXPECT_EQ(a->lookup("bob@example.org"), std::optional<std::string>("bob@example.org"));
}

TEST(open_authenticator, every_recipient_reaches_the_mailbox_its_login_reaches) {
    auto a = mailnet::make_open_authenticator();
    const auto r = a->resolve_recipient("Alice@Example.ORG");
    ASSERT_EQ(r.outcome, mailnet::recipient_result::status::ok);
    EXPECT_EQ(r.mailbox, a->authenticate({"alice@example.org", "alice@example.org"}).mailbox);
    EXPECT_EQ(a->resolve_recipient("").outcome, mailnet::recipient_result::status::unknown);
}

}  // namespace
