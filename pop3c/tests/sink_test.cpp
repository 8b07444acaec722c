// sink_test.cpp: where `pop3c fetch` stores messages: Maildir (through the store's delivery, with
// commits on a pool), stdout; each durable after flush() and all-or-nothing per batch.
#include "sinks.hpp"
#include "mailnet/posix_io.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <optional>
#include <string>
#include <csignal>
#include <tuple>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/fixtures.hpp"
#include "support/heap.hpp"

namespace {

namespace fs = std::filesystem;
using mailnet::pop3c::maildir_sink_options;
using mailnet::pop3c::mbox_sink_options;
using mailnet::pop3c::message_sink;
using mailnet::pop3c::sink_message;
using mailnet::testing::log_capture;
using mailnet::testing::temp_dir;

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// The files of a directory, by name.
std::vector<fs::path> files_in(const fs::path& dir) {
    std::vector<fs::path> out;
    if (!fs::exists(dir)) return out;
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

// The files of a directory that hold something: tmp/ may also hold a few empty files the
// sink opened ahead for messages to come, removed when it goes (the_files_opened_ahead_...).
std::vector<fs::path> written_in(const fs::path& dir) {
    auto all = files_in(dir);
    std::erase_if(all, [](const fs::path& p) {
        std::error_code ec;  // one the opener drops meanwhile is gone
        const auto size = fs::file_size(p, ec);
        return ec || size == 0;
    });
    return all;
}

// The contents of every file in a directory, sorted.
std::multiset<std::string> contents_of(const fs::path& dir) {
    std::multiset<std::string> out;
    for (const auto& p : files_in(dir)) out.insert(read_file(p));
    return out;
}

// Writes `octets` into a new message of `sink` in pieces of `piece` octets and completes it.
void store(message_sink& sink, std::string_view octets, std::size_t piece = 7) {
    auto m = sink.begin(octets.size());
    ASSERT_TRUE(m) << m.error().message();
    for (std::size_t off = 0; off < octets.size(); off += piece) ASSERT_TRUE((*m)->write(octets.substr(off, piece)));
    ASSERT_TRUE((*m)->complete());
}

std::unique_ptr<message_sink> open_maildir(const fs::path& dir, bool background = true, std::size_t outstanding = 64,
                                           mailnet::log_sink log = mailnet::null_log()) {
    maildir_sink_options o;
    o.commit_in_background = background;
    o.max_outstanding = outstanding;
    o.hostname = "test.example";
    auto s = mailnet::pop3c::open_maildir_sink(dir, std::move(log), o);
    EXPECT_TRUE(s) << s.error().message();
    return s ? std::move(*s) : nullptr;
}

// A Maildir sink as pop3c fetch opens it with a state file: commits deferred to the flush.
std::unique_ptr<message_sink> open_deferred(const fs::path& dir) {
    maildir_sink_options o;
    o.defer_commits = true;
    o.hostname = "test.example";
    auto s = mailnet::pop3c::open_maildir_sink(dir, mailnet::null_log(), o);
    EXPECT_TRUE(s) << s.error().message();
    return s ? std::move(*s) : nullptr;
}

// ---------------------------------------------------------------------------------------------
// Maildir

TEST(maildir_sink, messages_land_in_new_with_their_exact_octets) {
    temp_dir d;
    const fs::path box = d.path / "Maildir";  // created with tmp/ new/ cur/
    auto sink = open_maildir(box);
    ASSERT_TRUE(sink);
    const std::string a = "Return-Path: <a@example.org>\nSubject: one\n\nbody\n.\n..dots stay\nFrom here\n";
    const std::string b = "Subject: two\n\nno final line end";
    store(*sink, a, 1);
    store(*sink, b, 5);
    EXPECT_EQ(sink->pending(), 2u);
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(sink->pending(), 0u);
    EXPECT_EQ(contents_of(box / "new"), (std::multiset<std::string>{a, b}));
    EXPECT_TRUE(written_in(box / "tmp").empty());
    sink.reset();  // what a user sees once pop3c is done: nothing in tmp/, empty or not
    EXPECT_TRUE(files_in(box / "tmp").empty());
    EXPECT_TRUE(fs::is_directory(box / "cur"));
    // The store's names: unique, with the sizes (LIST needs no reads), our host name.
    for (const auto& p : files_in(box / "new")) {
        const std::string name = p.filename().string();
        EXPECT_NE(name.find(".test.example,S="), std::string::npos) << name;
        const auto size = fs::file_size(p);
        EXPECT_NE(name.find(",S=" + std::to_string(size) + ",W="), std::string::npos) << name;
    }
}

TEST(maildir_sink, large_messages_held_for_a_flush_are_stored_exactly_and_hold_no_write_buffer) {
    // Their octets past the first 128 KiB are written directly (maildir_sink_options::
    // direct_io_from), through a 256 KiB buffer of each message's own: a completed message
    // writes out what it held back and lets the buffer go, so 96 of them waiting for their
    // batch's flush do not hold 24 MiB of heap.
    temp_dir d;
    const fs::path box = d.path / "Maildir";
    auto sink = open_deferred(box);
    ASSERT_TRUE(sink);
    auto text_of = [](int i) {
        std::string text = "Subject: " + std::to_string(i) + "\n\n";
        while (text.size() < 300 * 1024 + static_cast<std::size_t>(i) * 977) text += "line " + std::to_string(text.size()) + "\n";
        return text;
    };
    store(*sink, text_of(96), 65536);  // the threads and their stacks are there before the count
    const std::size_t before = mailnet::testing::heap_in_use();
    for (int i = 0; i < 96; ++i) store(*sink, text_of(i), 65536 + static_cast<std::size_t>(i));
    const std::size_t after = mailnet::testing::heap_in_use();
    EXPECT_LT(after, before + 2 * 1024 * 1024) << before << " octets of heap before, " << after << " after";
    ASSERT_TRUE(sink->flush());
    std::multiset<std::string> sent;
    for (int i = 0; i <= 96; ++i) sent.insert(text_of(i));
    EXPECT_EQ(contents_of(box / "new"), sent);
    EXPECT_TRUE(written_in(box / "tmp").empty());
}

TEST(maildir_sink, the_files_opened_ahead_are_empty_few_and_removed_with_the_sink) {
    // The sink opens tmp/ files ahead of begin() on a thread of its own: never more than 16,
    // never more than messages begun (a one-message fetch makes at most one in vain), and
    // none is left once the sink is gone, flushed or not, deferring or not.
    for (const bool deferred : {false, true}) {
        SCOPED_TRACE(deferred);
        temp_dir d;
        const fs::path box = d.path / "m";
        {
            auto sink = deferred ? open_deferred(box) : open_maildir(box);
            ASSERT_TRUE(sink);
            store(*sink, "Subject: one\n\n");
            ASSERT_TRUE(sink->flush());
            std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the opener's turn
            EXPECT_LE(files_in(box / "tmp").size(), 1u);
            for (int i = 0; i < 50; ++i) store(*sink, "Subject: " + std::to_string(i) + "\n\n");
            ASSERT_TRUE(sink->flush());
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            const auto ahead = files_in(box / "tmp");
            EXPECT_LE(ahead.size(), 16u);
            EXPECT_GE(ahead.size(), 1u) << "files are opened ahead";
            for (const auto& p : ahead) {
                std::error_code ec;
                const auto size = fs::file_size(p, ec);
                if (!ec) {
                    EXPECT_EQ(size, 0u) << p;
                }
            }
            EXPECT_EQ(files_in(box / "new").size(), 51u);
            store(*sink, "Subject: last, never flushed\n\n");
        }
        EXPECT_TRUE(files_in(box / "tmp").empty());
        EXPECT_EQ(files_in(box / "new").size(), deferred ? 51u : 52u);
    }
}

TEST(maildir_sink, told_how_many_messages_come_it_opens_files_ahead_for_them_and_never_more) {
    // expect(n) (the fetch's list): before the first begin() the sink opens files ahead for the
    // messages announced, up to 64, and as they are begun never more than are still to come.
    temp_dir d;
    const fs::path box = d.path / "m";
    auto sink = open_maildir(box);
    ASSERT_TRUE(sink);
    auto settle = [&](std::size_t want) {  // the opener's turn: up to 20 s for `want` files
        for (int i = 0; i < 2000 && files_in(box / "tmp").size() != want; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // and none beyond
        return files_in(box / "tmp").size();
    };
    sink->expect(100);
    EXPECT_EQ(settle(64), 64u);
    for (int i = 0; i < 90; ++i) store(*sink, "Subject: " + std::to_string(i) + "\n\n");
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(settle(10), 10u) << "10 of the 100 are still to come";
    for (int i = 0; i < 10; ++i) store(*sink, "Subject: late " + std::to_string(i) + "\n\n");
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(settle(0), 0u) << "all 100 came: no file in vain";
    EXPECT_EQ(files_in(box / "new").size(), 100u);
    // Messages the server refused are never begun: expect_fewer() lets their files go.
    sink->expect(10);
    EXPECT_EQ(settle(10), 10u);
    sink->expect_fewer(4);
    EXPECT_EQ(settle(6), 6u) << "4 of the 10 will not come";
    for (int i = 0; i < 6; ++i) store(*sink, "Subject: after " + std::to_string(i) + "\n\n");
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(settle(0), 0u);
    EXPECT_EQ(files_in(box / "new").size(), 106u);
}

TEST(maildir_sink, files_opened_ahead_stay_within_what_the_descriptor_limit_leaves_them) {
    // maildir_sink_options::open_ahead (pop3c: what the descriptor limit leaves after two
    // batches and 64 more): 0 opens none ahead, whatever expect() says.
    temp_dir d;
    const fs::path box = d.path / "m";
    maildir_sink_options o;
    o.open_ahead = 0;
    o.hostname = "test.example";
    auto sink = mailnet::pop3c::open_maildir_sink(box, mailnet::null_log(), o);
    ASSERT_TRUE(sink);
    (*sink)->expect(50);
    for (int i = 0; i < 20; ++i) store(**sink, "Subject: " + std::to_string(i) + "\n\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the opener's turn
    EXPECT_TRUE(files_in(box / "tmp").empty());
    ASSERT_TRUE((*sink)->flush());
    EXPECT_EQ(files_in(box / "new").size(), 20u);
}

TEST(maildir_sink, a_tmp_directory_removed_during_a_fetch_is_made_again_and_the_files_opened_ahead_dropped) {
    // As before the files were opened ahead: the store makes tmp/ again for the next message;
    // the ones opened in the removed tmp/ could never be linked, so they are not handed out.
    for (const bool deferred : {false, true}) {
        SCOPED_TRACE(deferred);
        temp_dir d;
        const fs::path box = d.path / "m";
        log_capture log;
        maildir_sink_options o;
        o.defer_commits = deferred;
        o.hostname = "test.example";
        auto s = mailnet::pop3c::open_maildir_sink(box, log.sink(), o);
        ASSERT_TRUE(s);
        auto& sink = **s;
        for (int i = 0; i < 30; ++i) store(sink, "Subject: " + std::to_string(i) + "\n\n");
        ASSERT_TRUE(sink.flush());
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // files opened ahead meanwhile
        fs::remove_all(box / "tmp");
        for (int i = 30; i < 35; ++i) store(sink, "Subject: " + std::to_string(i) + "\n\n");
        EXPECT_TRUE(sink.flush()) << log.all();
        EXPECT_EQ(files_in(box / "new").size(), 35u);
        s->reset();
        EXPECT_TRUE(files_in(box / "tmp").empty());
    }
}

TEST(maildir_sink, a_tmp_that_cannot_be_written_is_one_warning_not_one_per_thread) {
    // The opener's own failed open says nothing: the message's open fails too and says why,
    // once (a cron job's mail counts the lines).
    temp_dir d;
    const fs::path box = d.path / "m";
    log_capture log;
    maildir_sink_options o;
    o.hostname = "test.example";
    auto s = mailnet::pop3c::open_maildir_sink(box, log.sink(), o);
    ASSERT_TRUE(s);
    auto& sink = **s;
    store(sink, "Subject: one\n\n");
    ASSERT_TRUE(sink.flush());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // a file opened ahead
    fs::remove_all(box / "tmp");
    std::ofstream(box / "tmp") << "in the way";
    EXPECT_FALSE(sink.begin(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the opener's turn too
    const std::string all = log.all();
    std::size_t lines = 0;
    for (auto at = all.find("cannot create"); at != std::string::npos; at = all.find("cannot create", at + 1)) ++lines;
    EXPECT_EQ(lines, 1u) << all;
    fs::remove(box / "tmp");
}

TEST(maildir_sink, an_empty_flush_succeeds) {
    temp_dir d;
    auto sink = open_maildir(d.path / "m");
    ASSERT_TRUE(sink);
    EXPECT_TRUE(sink->flush());
    EXPECT_EQ(sink->pending(), 0u);
}

TEST(maildir_sink, many_completes_in_the_background_then_one_flush_store_every_message) {
    temp_dir d;
    const fs::path box = d.path / "m";
    // Few slots: complete() has to wait for the committer again and again.
    auto sink = open_maildir(box, true, 3);
    ASSERT_TRUE(sink);
    std::multiset<std::string> sent;
    for (int i = 0; i < 300; ++i) {
        std::string m = "Subject: message " + std::to_string(i) + "\n\n" +
                        std::string(static_cast<std::size_t>(i) * 13, 'x') + "\n";
        store(*sink, m, 100);
        sent.insert(std::move(m));
    }
    EXPECT_EQ(sink->pending(), 300u);
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(sink->pending(), 0u);
    EXPECT_EQ(contents_of(box / "new"), sent);
    EXPECT_TRUE(written_in(box / "tmp").empty());
}

TEST(maildir_sink, batches_flush_one_after_another) {
    temp_dir d;
    const fs::path box = d.path / "m";
    auto sink = open_maildir(box);
    ASSERT_TRUE(sink);
    for (int batch = 0; batch < 5; ++batch) {
        for (int i = 0; i < 10; ++i) store(*sink, "Subject: " + std::to_string(batch * 10 + i) + "\n\n");
        ASSERT_TRUE(sink->flush());
        EXPECT_EQ(files_in(box / "new").size(), static_cast<std::size_t>(batch + 1) * 10);
    }
}

TEST(maildir_sink, deferred_messages_wait_in_tmp_until_the_flush_commits_them_together) {
    // pop3c fetch with a state file: nothing of a batch may show in new/ before its locators
    // are recorded; the flush then commits the batch as one group, with or without a thread.
    for (bool background : {true, false}) {
        SCOPED_TRACE(background);
        temp_dir d;
        const fs::path box = d.path / "m";
        maildir_sink_options o;
        o.commit_in_background = background;
        o.defer_commits = true;
        o.max_outstanding = 2;  // not a bound here: the batch is the caller's
        o.hostname = "test.example";
        auto s = mailnet::pop3c::open_maildir_sink(box, mailnet::null_log(), o);
        ASSERT_TRUE(s) << s.error().message();
        auto& sink = **s;
        std::multiset<std::string> sent;
        for (int batch = 0; batch < 3; ++batch) {
            for (int i = 0; i < 20; ++i) {
                std::string m = "Subject: " + std::to_string(batch) + "/" + std::to_string(i) + "\n\n";
                store(sink, m);
                sent.insert(std::move(m));
            }
            EXPECT_EQ(files_in(box / "new").size(), static_cast<std::size_t>(batch) * 20) << "before the flush";
            EXPECT_EQ(written_in(box / "tmp").size(), 20u);
            EXPECT_EQ(sink.pending(), 20u);
            ASSERT_TRUE(sink.flush());
            EXPECT_EQ(files_in(box / "new").size(), static_cast<std::size_t>(batch + 1) * 20);
            EXPECT_TRUE(written_in(box / "tmp").empty());
        }
        EXPECT_EQ(contents_of(box / "new"), sent);
    }
}

TEST(maildir_sink, a_deferred_batch_is_committed_while_the_next_one_is_stored) {
    // pop3c fetch's batches: start_flush() hands a held batch to the committer and returns;
    // the next batch's messages are stored meanwhile and stay in tmp/ (not yet recorded), and
    // finish_flush() reports the first batch alone.
    temp_dir d;
    const fs::path box = d.path / "m";
    auto s = open_deferred(box);
    ASSERT_TRUE(s);
    auto& sink = *s;
    const auto numbered = [&](const std::string& name, int n) {  // stores n messages, returns them
        std::multiset<std::string> sent;
        for (int i = 0; i < n; ++i) {
            std::string m = "Subject: " + name + " " + std::to_string(i) + "\n\n";
            store(sink, m);
            sent.insert(std::move(m));
        }
        return sent;
    };
    const auto first = numbered("first", 30);
    EXPECT_TRUE(sink.flushes_in_background());
    sink.start_flush();
    EXPECT_EQ(sink.pending(), 0u) << "the started batch is no longer pending";
    const auto second = numbered("second", 20);
    EXPECT_EQ(sink.pending(), 20u);
    ASSERT_TRUE(sink.finish_flush());
    EXPECT_EQ(contents_of(box / "new"), first) << "the first batch alone";
    EXPECT_EQ(written_in(box / "tmp").size(), 20u) << "the second batch waits for its own flush";
    sink.start_flush();
    ASSERT_TRUE(sink.finish_flush());
    std::multiset<std::string> all = first;
    all.insert(second.begin(), second.end());
    EXPECT_EQ(contents_of(box / "new"), all);
    EXPECT_TRUE(written_in(box / "tmp").empty());
}

TEST(maildir_sink, a_failed_overlapped_flush_is_reported_by_finish_flush_and_stops_new_messages) {
    temp_dir d;
    const fs::path box = d.path / "m";
    auto s = open_deferred(box);
    ASSERT_TRUE(s);
    auto& sink = *s;
    for (int i = 0; i < 5; ++i) store(sink, "Subject: " + std::to_string(i) + "\n\n");
    fs::rename(box / "new", d.path / "new-gone");  // the links fail
    sink.start_flush();
    // Once the committer has failed, the next batch's messages are refused: its retrieval
    // stops there instead of running through the mailbox.
    bool refused = false;
    for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
         !refused && std::chrono::steady_clock::now() < until;) {
        auto m = sink.begin(0);
        if (!m) {
            refused = true;
            break;
        }
        (*m)->abort();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE(refused);
    EXPECT_FALSE(sink.finish_flush());
    EXPECT_TRUE(files_in(d.path / "new-gone").empty());
    fs::rename(d.path / "new-gone", box / "new");
    // Reported once: the next batch is stored and flushed as usual.
    store(sink, "Subject: after\n\n");
    sink.start_flush();
    EXPECT_TRUE(sink.finish_flush());
    EXPECT_EQ(files_in(box / "new").size(), 1u);
}

TEST(maildir_sink, only_a_deferring_sink_with_a_committer_flushes_in_the_background) {
    temp_dir d;
    for (bool background : {true, false})
        for (bool defer : {true, false}) {
            maildir_sink_options o;
            o.commit_in_background = background;
            o.defer_commits = defer;
            o.hostname = "test.example";
            auto s = mailnet::pop3c::open_maildir_sink(d.path / "m", mailnet::null_log(), o);
            ASSERT_TRUE(s);
            EXPECT_EQ((*s)->flushes_in_background(), background && defer) << background << defer;
        }
}

TEST(stream_sink, start_and_finish_flush_are_one_flush) {
    std::FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    auto sink = mailnet::pop3c::make_stream_sink(f);
    EXPECT_FALSE(sink->flushes_in_background());
    store(*sink, "abc");
    sink->start_flush();
    EXPECT_EQ(sink->pending(), 0u);
    EXPECT_TRUE(sink->finish_flush());
    EXPECT_EQ(std::ftell(f), 3);
    std::fclose(f);
}

TEST(maildir_sink, a_deferred_batch_never_flushed_leaves_nothing_in_new) {
    temp_dir d;
    const fs::path box = d.path / "m";
    {
        maildir_sink_options o;
        o.defer_commits = true;
        o.hostname = "test.example";
        auto s = mailnet::pop3c::open_maildir_sink(box, mailnet::null_log(), o);
        ASSERT_TRUE(s);
        for (int i = 0; i < 5; ++i) store(**s, "Subject: " + std::to_string(i) + "\n\n");
    }
    // Never recorded, so never delivered: the server still has them.
    EXPECT_TRUE(files_in(box / "new").empty());
    EXPECT_TRUE(files_in(box / "tmp").empty());
}

TEST(maildir_sink, sequential_commit_without_a_committer) {
    temp_dir d;
    const fs::path box = d.path / "m";
    auto sink = open_maildir(box, false);
    ASSERT_TRUE(sink);
    store(*sink, "Subject: a\n\n");
    // Committed by complete() itself, still counted until flush().
    EXPECT_EQ(files_in(box / "new").size(), 1u);
    EXPECT_EQ(sink->pending(), 1u);
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(sink->pending(), 0u);
}

TEST(maildir_sink, abort_leaves_nothing_in_tmp_or_new) {
    temp_dir d;
    const fs::path box = d.path / "m";
    auto sink = open_maildir(box);
    ASSERT_TRUE(sink);
    {
        auto m = sink->begin(10);
        ASSERT_TRUE(m);
        ASSERT_TRUE((*m)->write("Subject: half\n"));
        EXPECT_EQ(written_in(box / "tmp").size(), 1u);  // being written
        (*m)->abort();
        EXPECT_TRUE(written_in(box / "tmp").empty());
        EXPECT_EQ((*m)->write("more").error(), mailnet::errc::bad_input);
        EXPECT_EQ((*m)->complete().error(), mailnet::errc::bad_input);
    }
    {
        auto m = sink->begin(10);  // dropped without complete(): aborted
        ASSERT_TRUE(m);
        ASSERT_TRUE((*m)->write("Subject: dropped\n"));
    }
    EXPECT_EQ(sink->pending(), 0u);
    ASSERT_TRUE(sink->flush());
    EXPECT_TRUE(written_in(box / "tmp").empty());
    EXPECT_TRUE(files_in(box / "new").empty());
}

TEST(maildir_sink, a_completed_message_cannot_be_written_again) {
    temp_dir d;
    auto sink = open_maildir(d.path / "m");
    ASSERT_TRUE(sink);
    auto m = sink->begin(0);
    ASSERT_TRUE(m);
    ASSERT_TRUE((*m)->complete());
    EXPECT_EQ((*m)->write("x").error(), mailnet::errc::bad_input);
    EXPECT_EQ((*m)->complete().error(), mailnet::errc::bad_input);
    (*m)->abort();  // too late: nothing happens
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(contents_of(d.path / "m" / "new"), std::multiset<std::string>{""});
    sink.reset();
    EXPECT_TRUE(files_in(d.path / "m" / "tmp").empty());
}

TEST(maildir_sink, a_failed_commit_fails_the_batch_and_the_next_batch_starts_clean) {
    for (bool background : {false, true}) {
        temp_dir d;
        const fs::path box = d.path / "m";
        log_capture log;
        auto sink = open_maildir(box, background, 64, log.sink());
        ASSERT_TRUE(sink);
        auto m = sink->begin(0);
        ASSERT_TRUE(m);
        ASSERT_TRUE((*m)->write("Subject: lost\n\n"));
        // new/ stops being a directory between the write and the commit: the link fails.
        fs::rename(box / "new", box / "new.away");
        std::ofstream(box / "new") << "in the way";
        if (!background) {
            EXPECT_FALSE((*m)->complete());
            EXPECT_FALSE(sink->begin(0)) << "a failed batch takes no more messages";
        } else {
            EXPECT_TRUE((*m)->complete());  // queued: the failure shows in flush()
        }
        EXPECT_FALSE(sink->flush()) << background;
        EXPECT_TRUE(log.contains("maildir")) << log.all();
        EXPECT_TRUE(written_in(box / "tmp").empty());

        fs::remove(box / "new");
        fs::rename(box / "new.away", box / "new");
        store(*sink, "Subject: next\n\n");
        EXPECT_TRUE(sink->flush()) << background;
        EXPECT_EQ(contents_of(box / "new"), std::multiset<std::string>{"Subject: next\n\n"});
    }
}

TEST(maildir_sink, a_directory_that_cannot_be_a_maildir_is_an_error) {
    temp_dir d;
    std::ofstream(d.path / "file") << "x";
    log_capture log;
    auto s = mailnet::pop3c::open_maildir_sink(d.path / "file", log.sink());
    EXPECT_FALSE(s);
    EXPECT_TRUE(log.contains((d.path / "file").string())) << log.all();
}

TEST(maildir_sink, destroying_the_sink_commits_what_was_completed) {
    temp_dir d;
    const fs::path box = d.path / "m";
    {
        auto sink = open_maildir(box, true);
        ASSERT_TRUE(sink);
        for (int i = 0; i < 20; ++i) store(*sink, "Subject: " + std::to_string(i) + "\n\n");
    }
    // Not flushed, so not counted as stored (the server keeps them), but never half there.
    EXPECT_EQ(files_in(box / "new").size(), 20u);
    EXPECT_TRUE(files_in(box / "tmp").empty());
}

// ---------------------------------------------------------------------------------------------
// mbox

// 2024-03-05 07:08:09 UTC, a Tuesday.
const auto fixed_time = std::chrono::system_clock::time_point(std::chrono::seconds(1709622489));
const std::string fixed_date = "Tue Mar  5 07:08:09 2024";

std::unique_ptr<message_sink> open_mbox(const fs::path& file, mailnet::log_sink log = mailnet::null_log(),
                                        std::chrono::milliseconds lock_wait = std::chrono::milliseconds(200)) {
    mbox_sink_options o;
    o.lock_wait = lock_wait;
    o.clock = [] { return fixed_time; };
    auto s = mailnet::pop3c::open_mbox_sink(file, std::move(log), o);
    EXPECT_TRUE(s) << s.error().message();
    return s ? std::move(*s) : nullptr;
}

// The directories fsync'd since the last clear (device, inode): this test binary defines
// fsync(2), which the sinks' calls bind to, records directories, then does the real one.
std::mutex fsynced_mutex;
std::vector<std::pair<dev_t, ino_t>> fsynced_dirs;
int dir_fsync_error = 0;  // under fsynced_mutex: a directory's fsync fails with it

bool fsynced(const fs::path& dir) {
    struct stat st{};
    if (::stat(dir.c_str(), &st) != 0) return false;
    std::lock_guard g(fsynced_mutex);
    return std::find(fsynced_dirs.begin(), fsynced_dirs.end(), std::pair{st.st_dev, st.st_ino}) != fsynced_dirs.end();
}

std::unique_ptr<message_sink> open_mbox_with(const fs::path& file, mbox_sink_options o) {
    o.lock_wait = std::chrono::milliseconds(200);
    o.clock = [] { return fixed_time; };
    auto s = mailnet::pop3c::open_mbox_sink(file, mailnet::null_log(), o);
    EXPECT_TRUE(s) << s.error().message();
    return s ? std::move(*s) : nullptr;
}

void write_file(const fs::path& p, const std::string& text) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
}

// What one message becomes in a fresh mbox, written in pieces of `piece` octets.
std::string as_mbox(std::string_view message, std::size_t piece = 1000000) {
    temp_dir d;
    auto sink = open_mbox(d.path / "mbox");
    if (!sink) return "(open failed)";
    store(*sink, message, piece);
    EXPECT_TRUE(sink->flush());
    return read_file(d.path / "mbox");
}

// The From_ line one message gets.
std::string from_line(std::string_view message) {
    const std::string m = as_mbox(message);
    return m.substr(0, m.find('\n'));
}

TEST(mbox_sink, a_new_mbox_has_its_name_made_durable_before_anything_is_stored_in_it) {
    // A flush fsyncs the file; the name of the mbox must be durable too (an fsync of its
    // directory), or a power cut could take a new mbox and the mail deleted on the server
    // after the flush: fsync'd at every open, whoever made the file.
    temp_dir d;
    const fs::path dir = d.path / "mail";
    fs::create_directories(dir);
    {
        std::lock_guard g(fsynced_mutex);
        fsynced_dirs.clear();
    }
    auto sink = open_mbox(dir / "inbox");
    ASSERT_TRUE(sink);
    EXPECT_TRUE(fsynced(dir)) << "the directory of the mbox the sink made";
    store(*sink, "Subject: one\n\nbody\n");
    ASSERT_TRUE(sink->flush());
    sink.reset();
    {
        std::lock_guard g(fsynced_mutex);
        fsynced_dirs.clear();
    }
    auto again = open_mbox(dir / "inbox");
    ASSERT_TRUE(again);
    // One that holds mail already too: another program (a delivery agent) may have made it, or
    // written to it between this open's create and its lock, and never made its name durable.
    EXPECT_TRUE(fsynced(dir)) << "an mbox that was there already, with mail in it";
    // A new mbox named without a directory part: the current directory's.
    const auto cwd = fs::current_path();
    fs::current_path(dir);
    again.reset();
    auto here = open_mbox("relative-inbox");
    fs::current_path(cwd);
    ASSERT_TRUE(here);
    EXPECT_TRUE(fsynced(dir)) << "the current directory, for a name without one";
}

TEST(mbox_sink, an_empty_mbox_found_or_made_through_a_link_has_its_real_directory_made_durable) {
    // Keyed on what is opened, not on whether the name was there: an empty mbox a failed run
    // left (its directory fsync may be what failed), and the target a dangling symbolic link
    // names (made by the open, in the target's directory, not the link's).
    temp_dir d;
    const fs::path links = d.path / "links", real = d.path / "real";
    fs::create_directories(links);
    fs::create_directories(real);
    { std::ofstream(real / "left-empty"); }
    fs::create_symlink(real / "made-by-the-open", links / "dangling");
    for (const char* name : {"left-empty", "dangling"}) {
        {
            std::lock_guard g(fsynced_mutex);
            fsynced_dirs.clear();
        }
        auto sink = open_mbox(std::string(name) == "dangling" ? links / name : real / name);
        ASSERT_TRUE(sink) << name;
        EXPECT_TRUE(fsynced(real)) << name << ": the directory that holds the file";
        EXPECT_FALSE(fsynced(links)) << name << ": not the link's";
    }
    EXPECT_TRUE(fs::exists(real / "made-by-the-open"));
}

TEST(mbox_sink, a_directory_that_cannot_be_fsynced_is_made_durable_by_a_sync_of_its_file_system) {
    // A spool directory this user may write but not read (mode 1733: opening it for the fsync
    // is refused), or a file system without directory fsync: the run goes on (syncfs through
    // the mbox), where it stopped every run; another failure still stops it.
    temp_dir d;
    for (const int e : {EACCES, EINVAL, EIO}) {
        {
            std::lock_guard g(fsynced_mutex);
            dir_fsync_error = e;
        }
        auto sink = mailnet::pop3c::open_mbox_sink(d.path / ("mbox" + std::to_string(e)), mailnet::null_log(), {});
        {
            std::lock_guard g(fsynced_mutex);
            dir_fsync_error = 0;
        }
        EXPECT_EQ(sink.has_value(), e != EIO) << std::strerror(e);
    }
}

TEST(durable_dirs, each_directory_made_is_fsynced_in_its_parent) {
    // What pop3c makes for a first run's default state ($XDG_STATE_HOME/mailnet-pop3c): a
    // power cut must not keep the state file's directory entry while losing a directory above.
    temp_dir d;
    {
        std::lock_guard g(fsynced_mutex);
        fsynced_dirs.clear();
    }
    ASSERT_TRUE(mailnet::posix::make_dirs(d.path / "state" / "mailnet-pop3c", true));
    EXPECT_TRUE(fsynced(d.path)) << "the entry of state/";
    EXPECT_TRUE(fsynced(d.path / "state")) << "the entry of mailnet-pop3c/";
    {
        std::lock_guard g(fsynced_mutex);
        fsynced_dirs.clear();
    }
    ASSERT_TRUE(mailnet::posix::make_dirs(d.path / "state" / "mailnet-pop3c", true));
    EXPECT_FALSE(fsynced(d.path / "state")) << "nothing made, nothing to make durable";
    { std::ofstream(d.path / "file"); }
    EXPECT_FALSE(mailnet::posix::make_dirs(d.path / "file" / "below", true)) << "a file in the way";
}

TEST(mbox_sink, mboxrd_quoting_and_message_ends_whatever_the_chunks) {
    const std::string message =
        "Return-Path: <alice@example.org>\nSubject: quoting\n\n"
        "From me\n>From you\n>>From x\nFrom\nFromage\n > From not\n>From\n>\n>>\nFrom the last";
    const std::string expected = "From alice@example.org " + fixed_date + "\n" +
                                 "Return-Path: <alice@example.org>\nSubject: quoting\n\n"
                                 ">From me\n>>From you\n>>>From x\nFrom\nFromage\n > From not\n>From\n>\n>>\n"
                                 ">From the last"
                                 "\n\n";
    // Every chunk size, so "From " and the '>'s before it are cut at every place.
    for (std::size_t piece = 1; piece <= message.size(); ++piece) ASSERT_EQ(as_mbox(message, piece), expected) << piece;
}

TEST(mbox_sink, from_split_across_writes) {
    temp_dir d;
    auto sink = open_mbox(d.path / "mbox");
    ASSERT_TRUE(sink);
    auto m = sink->begin(0);
    ASSERT_TRUE(m);
    for (const char* piece : {"Subject: s\n", "\n", ">", "Fr", "om", " x\n", "F", "rom", "", " y\nFro", "m"})
        ASSERT_TRUE((*m)->write(piece));
    ASSERT_TRUE((*m)->complete());
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(read_file(d.path / "mbox"),
              "From MAILER-DAEMON " + fixed_date + "\nSubject: s\n\n>>From x\n>From y\nFrom\n\n");
}

TEST(mbox_sink, the_first_line_and_header_lines_are_quoted_too) {
    EXPECT_EQ(as_mbox("From old-style envelope\nSubject: x\n\nbody\n"),
              "From MAILER-DAEMON " + fixed_date + "\n>From old-style envelope\nSubject: x\n\nbody\n\n");
}

TEST(mbox_sink, messages_end_with_one_empty_line) {
    EXPECT_EQ(as_mbox("Subject: a\n\nends with a line end\n"),
              "From MAILER-DAEMON " + fixed_date + "\nSubject: a\n\nends with a line end\n\n");
    EXPECT_EQ(as_mbox("Subject: a\n\nno line end"),
              "From MAILER-DAEMON " + fixed_date + "\nSubject: a\n\nno line end\n\n");
    EXPECT_EQ(as_mbox("Subject: a\n\nends with an empty line\n\n"),
              "From MAILER-DAEMON " + fixed_date + "\nSubject: a\n\nends with an empty line\n\n\n");
    EXPECT_EQ(as_mbox("Subject: header only"), "From MAILER-DAEMON " + fixed_date + "\nSubject: header only\n\n");
    EXPECT_EQ(as_mbox(""), "From MAILER-DAEMON " + fixed_date + "\n\n");
}

TEST(mbox_sink, sender_from_the_first_return_path_of_the_header) {
    const std::string tail = " " + fixed_date;
    EXPECT_EQ(from_line("Return-Path: <bob@example.org>\n\nx\n"), "From bob@example.org" + tail);
    EXPECT_EQ(from_line("Subject: s\nreturn-PATH:   <bob@example.org>  \n\nx\n"), "From bob@example.org" + tail);
    EXPECT_EQ(from_line("Return-Path: bob@example.org\n\n"), "From bob@example.org" + tail);
    EXPECT_EQ(from_line("Return-Path:\n  <folded@example.org>\nSubject: s\n\n"), "From folded@example.org" + tail);
    EXPECT_EQ(from_line("Return-Path : <obs@example.org>\n\n"), "From obs@example.org" + tail);
    EXPECT_EQ(from_line("Return-Path: <first@example.org>\nReturn-Path: <second@example.org>\n\n"),
              "From first@example.org" + tail);
    EXPECT_EQ(from_line("Return-Path: <crlf@example.org>\r\nSubject: s\r\n\r\nbody\r\n"),
              "From crlf@example.org" + tail);
    EXPECT_EQ(from_line("Return-Path: <no-body@example.org>"), "From no-body@example.org" + tail);
    // None, or none that could stand in a From_ line.
    EXPECT_EQ(from_line("Subject: s\n\nReturn-Path: <in-the-body@example.org>\n"), "From MAILER-DAEMON" + tail);
    EXPECT_EQ(from_line("\nReturn-Path: <after-an-empty-header@example.org>\n"), "From MAILER-DAEMON" + tail);
    EXPECT_EQ(from_line("Return-Path: <>\n\n"), "From MAILER-DAEMON" + tail);
    EXPECT_EQ(from_line("Return-Path: <\"a b\"@example.org>\n\n"), "From MAILER-DAEMON" + tail);
    EXPECT_EQ(from_line("Return-Path: <a\x01@example.org>\n\n"), "From MAILER-DAEMON" + tail);
    EXPECT_EQ(from_line("Return-Path: <unclosed@example.org\n\n"), "From MAILER-DAEMON" + tail);
    EXPECT_EQ(from_line("Return-Path: <" + std::string(300, 'a') + "@example.org>\n\n"), "From MAILER-DAEMON" + tail);
    EXPECT_EQ(from_line("X-Return-Path: <x@example.org>\n\n"), "From MAILER-DAEMON" + tail);
    // UTF-8 (RFC 6531) addresses stay.
    EXPECT_EQ(from_line("Return-Path: <j\xc3\xb6rg@example.org>\n\n"), "From j\xc3\xb6rg@example.org" + tail);
}

TEST(mbox_sink, a_return_path_cut_across_writes_is_found) {
    const std::string message = "Subject: s\nReturn-Path: <split@example.org>\n\nbody\n";
    const std::string expected = "From split@example.org " + fixed_date + "\n" + message + "\n";
    for (std::size_t piece = 1; piece <= message.size(); ++piece) ASSERT_EQ(as_mbox(message, piece), expected) << piece;
}

TEST(mbox_sink, a_long_header_is_not_held_in_memory_whole) {
    // Past the 64 KiB looked at, the From_ line goes out without a Return-Path that comes later.
    std::string header;
    while (header.size() < 70 * 1024) header += "X-Filler: 0123456789012345678901234567890123456789\n";
    const std::string message = header + "Return-Path: <late@example.org>\n\nbody\n";
    EXPECT_EQ(from_line(message), "From MAILER-DAEMON " + fixed_date);  // in one write
    EXPECT_EQ(as_mbox(message, 4096), "From MAILER-DAEMON " + fixed_date + "\n" + message + "\n");
}

TEST(mbox_sink, the_date_is_asctime_in_utc) {
    temp_dir d;
    for (const auto& [secs, date] : std::vector<std::pair<long long, std::string>>{
             {0, "Thu Jan  1 00:00:00 1970"},
             {1703548799, "Mon Dec 25 23:59:59 2023"},
             {951782400, "Tue Feb 29 00:00:00 2000"}}) {
        mbox_sink_options o;
        o.clock = [s = secs] { return std::chrono::system_clock::time_point(std::chrono::seconds(s)); };
        const fs::path file = d.path / ("mbox" + std::to_string(secs));
        auto sink = mailnet::pop3c::open_mbox_sink(file, mailnet::null_log(), o);
        ASSERT_TRUE(sink);
        store(**sink, "Subject: s\n\n");
        ASSERT_TRUE((*sink)->flush());
        EXPECT_EQ(read_file(file), "From MAILER-DAEMON " + date + "\nSubject: s\n\n\n");
    }
}

TEST(mbox_sink, appends_to_what_is_there_and_creates_a_missing_file_0600) {
    temp_dir d;
    const fs::path file = d.path / "mbox";
    {
        auto sink = open_mbox(file);
        ASSERT_TRUE(sink);
        store(*sink, "Subject: 1\n\none\n");
        store(*sink, "Subject: 2\n\ntwo\n");
        EXPECT_EQ(sink->pending(), 2u);
        ASSERT_TRUE(sink->flush());
        EXPECT_EQ(sink->pending(), 0u);
    }
    struct stat st{};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    {
        auto sink = open_mbox(file);
        ASSERT_TRUE(sink);
        store(*sink, "Subject: 3\n\nthree\n");
        ASSERT_TRUE(sink->flush());
    }
    const std::string f = "From MAILER-DAEMON " + fixed_date + "\n";
    EXPECT_EQ(read_file(file),
              f + "Subject: 1\n\none\n\n" + f + "Subject: 2\n\ntwo\n\n" + f + "Subject: 3\n\nthree\n\n");
}

TEST(mbox_sink, a_file_without_a_final_empty_line_is_kept_and_appended_to_cleanly) {
    temp_dir d;
    const std::string f = "From MAILER-DAEMON " + fixed_date + "\nSubject: new\n\n";
    for (const auto& [before, separator] : std::vector<std::pair<std::string, std::string>>{
             {"", ""},
             {"\n", "\n"},
             {"From x Thu Jan  1 00:00:00 1970\nSubject: old\n\nfull\n\n", ""},
             {"From x Thu Jan  1 00:00:00 1970\nSubject: old\n\nno empty line\n", "\n"},
             {"From x Thu Jan  1 00:00:00 1970\nSubject: old\n\ncut off by a cra", "\n\n"},
             {"x", "\n\n"}}) {
        const fs::path file = d.path / "mbox";
        write_file(file, before);
        auto sink = open_mbox(file);
        ASSERT_TRUE(sink);
        // An aborted message first: the separator is cut off with it and written again.
        {
            auto m = sink->begin(0);
            ASSERT_TRUE(m);
            ASSERT_TRUE((*m)->write("Subject: aborted\n\nbody\n"));
        }
        ASSERT_TRUE(sink->flush());
        store(*sink, "Subject: new\n\n");
        ASSERT_TRUE(sink->flush());
        EXPECT_EQ(read_file(file), before + separator + f + "\n") << before;
        sink.reset();
        fs::remove(file);
    }
}

TEST(mbox_sink, abort_cuts_the_file_back_to_before_the_message) {
    temp_dir d;
    const fs::path file = d.path / "mbox";
    auto sink = open_mbox(file);
    ASSERT_TRUE(sink);
    store(*sink, "Subject: kept\n\n");
    ASSERT_TRUE(sink->flush());
    const std::string kept = read_file(file);
    const std::string big(300 * 1024, 'x');  // more than is buffered: part of it reaches the spool
    {
        auto m = sink->begin(big.size());
        ASSERT_TRUE(m);
        ASSERT_TRUE((*m)->write("Subject: aborted\n\n"));
        ASSERT_TRUE((*m)->write(big));
        EXPECT_EQ(read_file(file), kept) << "nothing reaches the mbox before flush()";
        EXPECT_EQ(sink->begin(0).error(), mailnet::errc::bad_input) << "one message at a time";
        (*m)->abort();
        EXPECT_EQ(read_file(file), kept);
        EXPECT_EQ((*m)->write("x").error(), mailnet::errc::bad_input);
        EXPECT_EQ((*m)->complete().error(), mailnet::errc::bad_input);
    }
    {
        auto m = sink->begin(big.size());  // dropped without complete(): aborted as well
        ASSERT_TRUE(m);
        ASSERT_TRUE((*m)->write(big));
    }
    EXPECT_EQ(read_file(file), kept);
    EXPECT_EQ(sink->pending(), 0u);
    store(*sink, "Subject: after\n\n");
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(read_file(file), kept + "From MAILER-DAEMON " + fixed_date + "\nSubject: after\n\n\n");
}

// Runs `child` in a forked process (this test binary has no other thread then) and returns
// its exit status; -1 if it did not exit normally.
int run_in_child(const std::function<int()>& child) {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(child());
    int status = 0;
    if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

TEST(mbox_sink, a_write_error_drops_the_message_whether_it_goes_to_the_spool_or_the_file) {
    for (const bool hold : {true, false}) {
        temp_dir d;
        const fs::path file = d.path / "mbox";
        // A file size limit makes write() fail with EFBIG part way through a message (holding:
        // in the spool; else in the mbox); in a child, so that the limit and the ignored
        // SIGXFSZ stay there.
        const int status = run_in_child([&] {
            {
                mbox_sink_options o;
                o.hold_batches = hold;
                auto sink = open_mbox_with(file, o);
                if (!sink) return 10;
                store(*sink, "Subject: kept\n\n");
                if (!sink->flush()) return 11;
                const auto kept = fs::file_size(file);
                struct sigaction ignore{};
                ignore.sa_handler = SIG_IGN;
                ::sigaction(SIGXFSZ, &ignore, nullptr);
                const rlimit lim{kept + 100 * 1024, RLIM_INFINITY};
                if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return 12;
                auto m = sink->begin(0);
                if (!m) return 13;
                bool failed = false;
                const std::string chunk(16 * 1024, 'y');
                for (int i = 0; i < 20 && !failed; ++i) failed = !(*m)->write(chunk);
                if (!failed) failed = !(*m)->complete();
                if (!failed) return 14;
                if (fs::file_size(file) != kept) return 15;  // no partial
                if (sink->pending() != 0) return 16;
                if (!(*m)->write("x").error()) return 17;
                store(*sink, "Subject: small\n\n");  // the sink goes on
                if (!sink->flush()) return 18;
            }
            return 0;
        });
        EXPECT_EQ(status, 0) << hold;
        const std::string f = "From MAILER-DAEMON " + fixed_date + "\n";
        EXPECT_EQ(read_file(file), f + "Subject: kept\n\n\n" + f + "Subject: small\n\n\n") << hold;
    }
}

// A child process holding a lock on a file, as another mail program would, until release()
// (or for `hold` only).
class lock_holder {
public:
    enum kind { posix_fcntl, bsd_flock };
    lock_holder(const fs::path& file, kind k, std::chrono::milliseconds hold = std::chrono::milliseconds(-1)) {
        int ready[2], release[2];
        if (::pipe(ready) != 0 || ::pipe(release) != 0) throw std::runtime_error("pipe");
        pid_ = ::fork();
        if (pid_ == 0) {
            ::close(ready[0]);
            ::close(release[1]);
            const int fd = ::open(file.c_str(), O_RDWR | O_CREAT, 0600);
            bool locked = false;
            if (k == posix_fcntl) {
                struct flock fl{};
                fl.l_type = F_WRLCK;
                fl.l_whence = SEEK_SET;
                locked = fd >= 0 && ::fcntl(fd, F_SETLK, &fl) == 0;
            } else {
                locked = fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) == 0;
            }
            const char c = locked ? 'y' : 'n';
            if (::write(ready[1], &c, 1) != 1) ::_exit(1);
            if (hold.count() >= 0) {
                ::usleep(static_cast<useconds_t>(hold.count()) * 1000);
            } else {
                char x;
                while (::read(release[0], &x, 1) > 0) {
                }
            }
            ::_exit(0);
        }
        ::close(ready[1]);
        ::close(release[0]);
        release_ = release[1];
        char c = 'n';
        locked_ = ::read(ready[0], &c, 1) == 1 && c == 'y';
        ::close(ready[0]);
    }
    ~lock_holder() { release(); }
    bool locked() const { return locked_; }
    void release() {
        if (release_ >= 0) ::close(release_);
        release_ = -1;
        if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

private:
    pid_t pid_ = -1;
    int release_ = -1;
    bool locked_ = false;
};

// Whether another process could take a classic fcntl write lock on `file` now.
bool others_can_fcntl_lock(const fs::path& file) {
    return run_in_child([&] {
        const int fd = ::open(file.c_str(), O_RDWR);
        struct flock fl{};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        return fd >= 0 && ::fcntl(fd, F_SETLK, &fl) == 0 ? 0 : 1;
    }) == 0;
}

bool others_can_flock(const fs::path& file) {
    return run_in_child([&] {
        const int fd = ::open(file.c_str(), O_RDWR);
        return fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : 1;
    }) == 0;
}

TEST(mbox_sink, the_file_is_locked_for_the_sinks_lifetime) {
    temp_dir d;
    const fs::path file = d.path / "mbox";
    {
        auto first = open_mbox(file);
        ASSERT_TRUE(first);
        EXPECT_FALSE(others_can_fcntl_lock(file));
        EXPECT_FALSE(others_can_flock(file));

        // A second sink on the same file, in this process: refused after the bounded wait.
        log_capture log;
        mbox_sink_options o;
        o.lock_wait = std::chrono::milliseconds(300);
        const auto t0 = std::chrono::steady_clock::now();
        auto second = mailnet::pop3c::open_mbox_sink(file, log.sink(), o);
        const auto waited = std::chrono::steady_clock::now() - t0;
        ASSERT_FALSE(second);
        EXPECT_EQ(second.error(), mailnet::errc::mailbox_in_use);
        EXPECT_TRUE(log.contains("locked by another program")) << log.all();
        EXPECT_GE(waited, std::chrono::milliseconds(300));
        EXPECT_LT(waited, std::chrono::seconds(3));

        // The failed open closed its descriptor: the first sink's locks are all still held (a
        // classic fcntl lock would have been dropped by that close).
        EXPECT_FALSE(others_can_fcntl_lock(file));
        EXPECT_FALSE(others_can_flock(file));
        store(*first, "Subject: still mine\n\n");
        EXPECT_TRUE(first->flush());
    }
    EXPECT_TRUE(others_can_fcntl_lock(file));
    EXPECT_TRUE(others_can_flock(file));
    EXPECT_TRUE(open_mbox(file));
}

TEST(mbox_sink, another_programs_fcntl_or_flock_lock_is_respected) {
    temp_dir d;
    const fs::path file = d.path / "mbox";
    for (auto k : {lock_holder::posix_fcntl, lock_holder::bsd_flock}) {
        lock_holder other(file, k);
        ASSERT_TRUE(other.locked());
        log_capture log;
        mbox_sink_options o;
        o.lock_wait = std::chrono::milliseconds(200);
        auto s = mailnet::pop3c::open_mbox_sink(file, log.sink(), o);
        ASSERT_FALSE(s) << k;
        EXPECT_EQ(s.error(), mailnet::errc::mailbox_in_use);
        EXPECT_TRUE(log.contains(file.string())) << log.all();
        other.release();
        EXPECT_TRUE(mailnet::pop3c::open_mbox_sink(file, mailnet::null_log(), o)) << k;
    }
}

TEST(mbox_sink, a_lock_let_go_within_the_wait_is_taken) {
    temp_dir d;
    const fs::path file = d.path / "mbox";
    lock_holder other(file, lock_holder::posix_fcntl, std::chrono::milliseconds(300));
    ASSERT_TRUE(other.locked());
    auto s = open_mbox(file, mailnet::null_log(), std::chrono::seconds(10));
    EXPECT_TRUE(s);
}

TEST(mbox_sink, only_a_regular_file_is_an_mbox) {
    temp_dir d;
    fs::create_directory(d.path / "dir");
    ASSERT_EQ(::mkfifo((d.path / "fifo").c_str(), 0600), 0);
    for (const char* name : {"dir", "fifo", "missing-dir/mbox"}) {
        log_capture log;
        auto s = mailnet::pop3c::open_mbox_sink(d.path / name, log.sink());  // never blocks on the FIFO
        EXPECT_FALSE(s) << name;
        EXPECT_TRUE(log.contains((d.path / name).string())) << log.all();
    }
}

// ---------------------------------------------------------------------------------------------
// stdout

TEST(stream_sink, octets_pass_through_as_they_come) {
    std::FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    auto sink = mailnet::pop3c::make_stream_sink(f);
    store(*sink, "Subject: a\n\nFrom x\n", 3);
    store(*sink, "Subject: b\n\nno end", 4);
    {
        auto m = sink->begin(0);
        ASSERT_TRUE(m);
        ASSERT_TRUE((*m)->write("partial"));
        (*m)->abort();  // cannot be taken back from a stream
    }
    EXPECT_EQ(sink->pending(), 2u);
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(sink->pending(), 0u);
    std::rewind(f);
    std::string got(256, '\0');
    got.resize(std::fread(got.data(), 1, got.size(), f));
    EXPECT_EQ(got, "Subject: a\n\nFrom x\nSubject: b\n\nno endpartial");
    std::fclose(f);
}

TEST(stream_sink, a_write_error_is_an_error) {
    std::FILE* f = std::fopen("/dev/full", "w");
    ASSERT_NE(f, nullptr);
    std::setvbuf(f, nullptr, _IONBF, 0);
    auto sink = mailnet::pop3c::make_stream_sink(f);
    auto m = sink->begin(0);
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)->write("Subject: x\n\n").error(), std::errc::no_space_on_device);
    EXPECT_FALSE((*m)->complete());
    EXPECT_FALSE(sink->begin(0)) << "the batch failed";
    EXPECT_FALSE(sink->flush());
    EXPECT_TRUE(sink->begin(0)) << "a new batch may start";
    std::fclose(f);
}

TEST(stream_sink, an_error_of_buffered_output_shows_in_flush) {
    std::FILE* f = std::fopen("/dev/full", "w");
    ASSERT_NE(f, nullptr);
    auto sink = mailnet::pop3c::make_stream_sink(f);
    store(*sink, "Subject: x\n\nbody\n");
    EXPECT_EQ(sink->flush().error(), std::errc::no_space_on_device);
    EXPECT_EQ(sink->pending(), 0u);
    std::fclose(f);
}

}  // namespace

// fsync(2) as the sinks call it in this test binary: a directory's recorded (fsynced_dirs),
// then the real call.
extern "C" int fsync(int fd) {
    struct stat st{};
    if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        std::lock_guard g(fsynced_mutex);
        if (dir_fsync_error != 0) {
            errno = dir_fsync_error;
            return -1;
        }
        fsynced_dirs.emplace_back(st.st_dev, st.st_ino);
    }
    return static_cast<int>(::syscall(SYS_fsync, fd));
}

// ---------------------------------------------------------------------------------------------
// Finding a message again after a run was cut off (locator, holds)

namespace {

std::string store_located(message_sink& sink, std::string_view octets) {
    auto m = sink.begin(octets.size());
    EXPECT_TRUE(m);
    if (!m) return {};
    EXPECT_TRUE((*m)->write(octets));
    EXPECT_TRUE((*m)->complete());
    return (*m)->locator();
}

}  // namespace

TEST(maildir_sink, a_stored_message_is_found_again_by_its_locator_in_new_or_cur) {
    temp_dir d;
    std::string a, b;
    {
        auto sink = open_maildir(d.path / "md");
        a = store_located(*sink, "Subject: a\n\nA\n");
        b = store_located(*sink, "Subject: b\n\nB\n");
        ASSERT_TRUE(sink->flush());
    }
    EXPECT_FALSE(a.empty());
    EXPECT_NE(a, b);
    // A mail reader moves one into cur/ and flags it.
    const auto moved = files_in(d.path / "md" / "new").front();
    fs::rename(moved, d.path / "md" / "cur" / (moved.filename().string() + ":2,S"));
    auto again = open_maildir(d.path / "md");
    EXPECT_TRUE(again->holds(a));
    EXPECT_TRUE(again->holds(b));
    EXPECT_FALSE(again->holds(""));
    EXPECT_FALSE(again->holds("1700000000.M1P1Q1"));
}

TEST(maildir_sink, nothing_is_held_when_new_and_cur_cannot_be_made_durable) {
    // A run cut off mid-flush may have left links in new/ that no fsync of new/ made durable:
    // the rerun counts a message as held (and DELEtes it) only after fsyncing new/ and cur/.
    temp_dir d;
    std::string a;
    {
        auto sink = open_maildir(d.path / "md");
        a = store_located(*sink, "Subject: a\n\nA\n");
        ASSERT_TRUE(sink->flush());
    }
    auto again = open_maildir(d.path / "md");
    ASSERT_TRUE(again);
    fs::remove(d.path / "md" / "cur");
    { std::ofstream(d.path / "md" / "cur") << "not a directory"; }  // cannot be opened and fsync'd
    EXPECT_FALSE(again->holds(a)) << "held without new/ and cur/ made durable: a DELE could lose it";
}

TEST(maildir_sink, an_aborted_message_is_not_held) {
    temp_dir d;
    auto sink = open_maildir(d.path / "md");
    auto m = sink->begin(10);
    ASSERT_TRUE(m);
    ASSERT_TRUE((*m)->write("Subject: x\n\n"));
    (*m)->abort();
    auto fresh = open_maildir(d.path / "md");
    EXPECT_FALSE(fresh->holds((*m)->locator()));
}

TEST(mbox_sink, a_batch_reaches_the_file_only_at_flush_where_its_locators_said) {
    temp_dir d;
    const auto file = d.path / "mbox";
    write_file(file, "From x Thu Jan  1 00:00:00 1970\nSubject: old\n\nno empty line\n");
    const std::string before = read_file(file);
    auto sink = open_mbox(file);
    ASSERT_TRUE(sink);
    const std::string a = store_located(*sink, "Subject: a\n\nA\n");
    {
        auto m = sink->begin(0);  // aborted between two completed ones: leaves nothing
        ASSERT_TRUE(m);
        ASSERT_TRUE((*m)->write("Subject: gone\n\n" + std::string(100 * 1024, 'g')));
    }
    const std::string b = store_located(*sink, "Subject: b\n\nB\n");
    EXPECT_EQ(read_file(file), before) << "a batch waits in the spool until flush()";
    EXPECT_FALSE(sink->holds(a));
    ASSERT_TRUE(sink->flush());
    const std::string f = "From MAILER-DAEMON " + fixed_date + "\n";
    EXPECT_EQ(read_file(file), before + "\n" + f + "Subject: a\n\nA\n\n" + f + "Subject: b\n\nB\n\n");
    EXPECT_EQ(a.rfind("mbox:" + std::to_string(before.size()) + ":", 0), 0u) << a;
    EXPECT_TRUE(sink->holds(a));
    EXPECT_TRUE(sink->holds(b));
    // The next batch starts where this one ended, with no separator.
    const std::string c = store_located(*sink, "Subject: c\n\nC\n");
    ASSERT_TRUE(sink->flush());
    EXPECT_TRUE(sink->holds(c));
    EXPECT_EQ(read_file(file), before + "\n" + f + "Subject: a\n\nA\n\n" + f + "Subject: b\n\nB\n\n" + f +
                                   "Subject: c\n\nC\n\n");
}

TEST(mbox_sink, a_failed_append_leaves_none_of_the_batch) {
    temp_dir d;
    const fs::path file = d.path / "mbox";
    const std::string old = "From x Thu Jan  1 00:00:00 1970\nSubject: old\n\n" + std::string(200 * 1024, 'o') + "\n\n";
    write_file(file, old);
    // The spool (a small file) takes the batch; the mbox (200 KiB and more) cannot grow past
    // the limit: the append fails part way and is cut off; the sink goes on.
    const int status = run_in_child([&] {
        {
            auto sink = open_mbox(file);
            if (!sink) return 10;
            struct sigaction ignore{};
            ignore.sa_handler = SIG_IGN;
            ::sigaction(SIGXFSZ, &ignore, nullptr);
            const rlimit lim{old.size() + 50 * 1024, RLIM_INFINITY};
            if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return 12;
            for (int i = 0; i < 3; ++i) store(*sink, "Subject: big\n\n" + std::string(30 * 1024, 'b') + "\n", 4096);
            if (sink->flush()) return 13;
            if (read_file(file) != old) return 14;
            if (sink->pending() != 0) return 15;
            store(*sink, "Subject: small\n\n");
            if (!sink->flush()) return 16;
        }
        return 0;
    });
    EXPECT_EQ(status, 0);
    EXPECT_EQ(read_file(file), old + "From MAILER-DAEMON " + fixed_date + "\nSubject: small\n\n\n");
}

TEST(mbox_sink, not_holding_batches_each_message_is_appended_as_it_completes) {
    temp_dir d;
    const fs::path file = d.path / "mbox";
    const std::string old = "From x Thu Jan  1 00:00:00 1970\nSubject: old\n\n" + std::string(200 * 1024, 'o') + "\n\n";
    write_file(file, old);
    const std::string f = "From MAILER-DAEMON " + fixed_date + "\n";
    const std::string big = "Subject: big\n\n" + std::string(60 * 1024, 'b') + "\n";
    const int status = run_in_child([&] {
        {
            mbox_sink_options o;
            o.clock = [] { return fixed_time; };
            o.hold_batches = false;
            auto s = mailnet::pop3c::open_mbox_sink(file, mailnet::null_log(), o);
            if (!s) return 10;
            auto& sink = **s;
            store(sink, "Subject: a\n\nA\n");
            if (read_file(file) != old + f + "Subject: a\n\nA\n\n") return 11;  // before any flush
            struct sigaction ignore{};
            ignore.sa_handler = SIG_IGN;
            ::sigaction(SIGXFSZ, &ignore, nullptr);
            const rlimit lim{old.size() + 50 * 1024, RLIM_INFINITY};
            if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return 12;
            auto m = sink.begin(0);
            if (!m || !(*m)->write(big)) return 13;  // buffered (less than a write's worth)
            if ((*m)->complete()) return 14;         // the file cannot take it: cut off again
            if (read_file(file) != old + f + "Subject: a\n\nA\n\n") return 15;
            if (sink.pending() != 1) return 16;
            store(sink, "Subject: c\n\nC\n");
            if (!sink.flush()) return 17;
        }
        return 0;
    });
    EXPECT_EQ(status, 0);
    EXPECT_EQ(read_file(file), old + f + "Subject: a\n\nA\n\n" + f + "Subject: c\n\nC\n\n");
}

// The spool a run killed while it appended to `mbox` leaves: its header (written by flush()
// before it appends: the mbox's device and inode, where in it the batch begins, where in the
// spool, how long), then the batch.
std::string spool_as_left(const fs::path& mbox, std::size_t mbox_at, const std::string& batch) {
    struct stat st{};
    EXPECT_EQ(::stat(mbox.c_str(), &st), 0);
    std::string h = "mailnet-spool " + std::to_string(st.st_dev) + " " + std::to_string(st.st_ino) + " " +
                    std::to_string(mbox_at) + " 0 " + std::to_string(batch.size()) + "\n";
    h.resize(127, ' ');
    return h + "\n" + batch;
}

// The mbox sink with a named spool (as pop3c fetch keeps one beside its state file).
class mbox_spool : public ::testing::Test {
protected:
    mbox_spool() { o.spool = spool; }
    temp_dir d;
    const fs::path file = d.path / "mbox";
    const fs::path spool = d.path / "state.spool";
    mbox_sink_options o;  // with `spool`
};

TEST_F(mbox_spool, recover_cuts_back_only_a_batch_the_spool_shows_is_ours) {
    const std::string old = "From x Thu Jan  1 00:00:00 1970\nSubject: old\n\nno empty line\n";
    write_file(file, old);
    // A batch as a run writes it to its spool (not yet appended): its messages' octets.
    std::vector<std::string> locs;
    {
        auto sink = open_mbox_with(file, o);
        ASSERT_TRUE(sink);
        locs.push_back(store_located(*sink, "Subject: a\n\nA\n"));
        locs.push_back(store_located(*sink, "Subject: b\n\nFrom the body\n" + std::string(5000, 'b') + "\n"));
        locs.push_back(store_located(*sink, "Subject: c\n\nC\n"));
        mbox_sink_options other = o;
        other.lock_wait = std::chrono::milliseconds(0);
        EXPECT_EQ(mailnet::pop3c::open_mbox_sink(file, mailnet::null_log(), other).error(), mailnet::errc::mailbox_in_use)
            << "the mbox is one run's";
        EXPECT_EQ(mailnet::pop3c::open_mbox_sink(d.path / "another", mailnet::null_log(), other).error(),
                  mailnet::errc::mailbox_in_use)
            << "and so is its spool";
    }
    EXPECT_FALSE(fs::exists(spool)) << "the spool goes with the sink";
    // What the file holds once the batch is appended whole (the locators say where).
    const std::string batch = "\nFrom MAILER-DAEMON " + fixed_date + "\nSubject: a\n\nA\n\n" + "From MAILER-DAEMON " +
                              fixed_date + "\nSubject: b\n\n>From the body\n" + std::string(5000, 'b') + "\n\n" +
                              "From MAILER-DAEMON " + fixed_date + "\nSubject: c\n\nC\n\n";
    const std::string whole = old + batch;
    const std::size_t b_start = whole.find("From MAILER-DAEMON", old.size() + 2);
    ASSERT_NE(b_start, std::string::npos);
    ASSERT_EQ(locs[1].rfind("mbox:" + std::to_string(b_start) + ":", 0), 0u) << locs[1];
    const std::string cut = whole.substr(0, b_start + 3000);  // b cut off in its body, c never written
    const std::string glued = "From other@example.org Thu Jan  1 00:00:00 1970\nSubject: other\n\nO\n\n";
    const std::string rewritten = old + batch.substr(0, 10) + "X" + batch.substr(11, 2000);
    struct scenario {
        std::string name, text, want;
        bool a_held = false;
        std::optional<std::string> left_spool;  // none: the batch as a killed append left it
        std::size_t first_record = 0;            // a record for each message from this one on
    };
    for (const auto& sc : std::vector<scenario>{
             {"cut in a message", cut, old, false, std::nullopt, 0},
             {"cut where a message starts", whole.substr(0, b_start), old, false, std::nullopt, 0},
             {"cut in a From_ line", whole.substr(0, b_start + 3), old, false, std::nullopt, 0},
             {"cut in the separator", old + "\n", old, false, std::nullopt, 0},
             {"the whole batch", whole, whole, true, std::nullopt, 0},
             {"the whole batch and more mail after it", whole + glued, whole + glued, true, std::nullopt, 0},
             {"another program's mail glued on", cut + glued, cut + glued, true, std::nullopt, 0},
             {"another program's mail appended", cut + "\n\n" + glued, cut + "\n\n" + glued, true, std::nullopt, 0},
             {"more mail than the rest of the batch", cut + "\n\n" + std::string(20000, 'o') + "\n\n",
              cut + "\n\n" + std::string(20000, 'o') + "\n\n", true, std::nullopt, 0},
             {"the file rewritten since", rewritten, rewritten, false, std::nullopt, 0},
             {"nothing appended yet", old, old, false, std::nullopt, 0},
             {"a message without a record first", cut, old, false, std::nullopt, 1},
             {"no spool left: a cut shows but cannot be told apart", cut, cut, true, std::string(), 0},
             {"a spool without a header", cut, cut, true, std::string(128, '\0') + batch, 0},
             {"the file shorter than where the batch began", old.substr(0, 20), old.substr(0, 20), false, std::nullopt, 0}}) {
        write_file(file, sc.text);
        write_file(spool, sc.left_spool.value_or(spool_as_left(file, old.size(), batch)));
        auto sink = open_mbox_with(file, o);
        ASSERT_TRUE(sink);
        ASSERT_TRUE(sink->recover(std::span(locs).subspan(sc.first_record))) << sc.name;
        EXPECT_EQ(read_file(file), sc.want) << sc.name;
        EXPECT_EQ(read_file(spool), "") << "emptied once it was used: " << sc.name;
        EXPECT_EQ(sink->holds(locs[0]), sc.a_held) << sc.name;
        EXPECT_EQ(sink->holds(locs[2]), sc.want.substr(0, whole.size()) == whole) << sc.name;
        // What is appended next starts right after what is left.
        store(*sink, "Subject: next\n\n");
        ASSERT_TRUE(sink->flush());
        const std::string sep = sc.want.size() >= 2 && sc.want.substr(sc.want.size() - 2) == "\n\n" ? ""
                                : sc.want.back() == '\n'                                      ? "\n"
                                                                                              : "\n\n";
        EXPECT_EQ(read_file(file), sc.want + sep + "From MAILER-DAEMON " + fixed_date + "\nSubject: next\n\n\n") << sc.name;
        sink.reset();
        EXPECT_FALSE(fs::exists(spool)) << "the spool goes with the sink: " << sc.name;
    }
}

TEST_F(mbox_spool, an_append_killed_part_way_is_cut_back_by_the_next_runs_recover) {
    const std::string old = "From x Thu Jan  1 00:00:00 1970\nSubject: old\n\nkept\n\n";
    const std::string body(64 * 1024, 'z');
    for (int attempt = 0;; ++attempt) {
        ASSERT_LT(attempt, 10) << "never killed while it appended";
        write_file(file, old);
        fs::remove(spool);
        // A child writes a batch of 20 MiB to its spool, then appends it (flush()), and is
        // killed once the mbox has grown.
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            o.clock = [] { return fixed_time; };
            auto s = mailnet::pop3c::open_mbox_sink(file, mailnet::null_log(), o);
            if (!s) ::_exit(10);
            for (int i = 0; i < 20; ++i) {
                auto m = (*s)->begin(0);
                if (!m || !(*m)->write("Subject: " + std::to_string(i) + "\n\n")) ::_exit(11);
                for (int k = 0; k < 16; ++k)
                    if (!(*m)->write(body)) ::_exit(12);
                if (!(*m)->complete()) ::_exit(13);
            }
            (void)(*s)->flush();
            ::_exit(0);
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (fs::file_size(file) == old.size() && std::chrono::steady_clock::now() < deadline) {
            int st = 0;
            if (::waitpid(pid, &st, WNOHANG) == pid) break;
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        ::kill(pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
        const auto size = fs::file_size(file);
        if (!WIFSIGNALED(status) || size == old.size() || size >= old.size() + 20 * (16 * body.size() + 20)) continue;
        // The next run: its records of the batch pending (any will do: the spool says where).
        auto sink = open_mbox_with(file, o);
        ASSERT_TRUE(sink);
        const std::vector<std::string> pending{"mbox:" + std::to_string(old.size()) + ":" + std::to_string(size + 1) + ":0"};
        ASSERT_TRUE(sink->recover(pending));
        EXPECT_EQ(read_file(file), old) << "killed after " << size - old.size() << " octets of the batch";
        break;
    }
}

TEST_F(mbox_spool, a_run_with_nothing_to_fetch_leaves_no_spool) {
    {
        auto sink = open_mbox_with(file, o);
        ASSERT_TRUE(sink);
        EXPECT_TRUE(fs::exists(spool));
    }
    EXPECT_FALSE(fs::exists(spool));
    // A spool left by a killed run: gone once looked at, or once a message begins.
    write_file(spool, spool_as_left(file, 0, "From x\n\n"));
    { auto sink = open_mbox_with(file, o); }
    EXPECT_FALSE(fs::exists(spool));
}

TEST_F(mbox_spool, recover_needs_no_record_and_looks_only_at_the_mbox_its_spool_names) {
    const auto other = d.path / "other";
    const std::string old = "From x Thu Jan  1 00:00:00 1970\nSubject: old\n\nkept\n\n";
    const std::string batch = "From MAILER-DAEMON " + fixed_date + "\nSubject: a\n\n" + std::string(3000, 'a') + "\n\n";
    // A batch of messages without a record (no UIDL): no pending locator, the file is cut back
    // all the same.
    write_file(file, old + batch.substr(0, 1000));
    write_file(spool, spool_as_left(file, old.size(), batch));
    {
        auto sink = open_mbox_with(file, o);
        ASSERT_TRUE(sink->recover({}));
        EXPECT_EQ(read_file(file), old);
    }
    // A spool of another mbox (another run, another --mbox, the same state): not looked at.
    write_file(other, old + batch.substr(0, 1000));
    write_file(file, old + batch.substr(0, 1000));
    write_file(spool, spool_as_left(other, old.size(), batch));
    {
        auto sink = open_mbox_with(file, o);
        ASSERT_TRUE(sink->recover({}));
        EXPECT_EQ(read_file(file), old + batch.substr(0, 1000));
    }
}

TEST(mbox_sink, flush_refuses_while_a_message_is_open) {
    temp_dir d;
    const auto file = d.path / "mbox";
    auto sink = open_mbox(file);
    ASSERT_TRUE(sink);
    store(*sink, "Subject: a\n\nA\n");
    auto m = sink->begin(0);
    ASSERT_TRUE(m);
    ASSERT_TRUE((*m)->write("Subject: open\n\n"));
    EXPECT_EQ(sink->flush().error(), mailnet::errc::bad_input);
    (*m)->abort();
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(read_file(file), "From MAILER-DAEMON " + fixed_date + "\nSubject: a\n\nA\n\n");
}

TEST(mbox_sink, a_stored_message_is_found_again_only_while_its_octets_are_there) {
    temp_dir d;
    const auto file = d.path / "mbox";
    std::string a, b;
    {
        auto sink = open_mbox(file);
        a = store_located(*sink, "Subject: a\n\nFrom here\n");
        b = store_located(*sink, "Subject: b\n\nB\n");
        ASSERT_TRUE(sink->flush());
    }
    EXPECT_EQ(a.rfind("mbox:0:", 0), 0u) << a;
    {
        auto sink = open_mbox(file);
        EXPECT_TRUE(sink->holds(a));
        EXPECT_TRUE(sink->holds(b));
        EXPECT_FALSE(sink->holds("mbox:0:5:0000000000000000"));
        EXPECT_FALSE(sink->holds("garbage"));
    }
    // The file cut back (a message lost with a crash before its fsync): b is not there.
    std::string text = read_file(file);
    fs::resize_file(file, text.size() - 3);
    auto sink = open_mbox(file);
    EXPECT_TRUE(sink->holds(a));
    EXPECT_FALSE(sink->holds(b));
}
