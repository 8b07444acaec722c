// sink_test.cpp: where `pop3c fetch` stores messages: Maildir (through the store's delivery, with
// commits on a pool), stdout; each durable after flush() and all-or-nothing per batch.
#include "sinks.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/fixtures.hpp"

namespace {

namespace fs = std::filesystem;
using mailnet::pop3c::maildir_sink_options;
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

std::unique_ptr<message_sink> open_maildir(const fs::path& dir, unsigned threads = 8, std::size_t outstanding = 64,
                                           mailnet::log_sink log = mailnet::null_log()) {
    maildir_sink_options o;
    o.commit_threads = threads;
    o.max_outstanding = outstanding;
    o.hostname = "test.example";
    auto s = mailnet::pop3c::open_maildir_sink(dir, std::move(log), o);
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

TEST(maildir_sink, an_empty_flush_succeeds) {
    temp_dir d;
    auto sink = open_maildir(d.path / "m");
    ASSERT_TRUE(sink);
    EXPECT_TRUE(sink->flush());
    EXPECT_EQ(sink->pending(), 0u);
}

TEST(maildir_sink, many_completes_on_the_pool_then_one_flush_store_every_message) {
    temp_dir d;
    const fs::path box = d.path / "m";
    // Few slots: complete() has to wait for the pool again and again.
    auto sink = open_maildir(box, 4, 3);
    ASSERT_TRUE(sink);
    std::multiset<std::string> sent;
    for (int i = 0; i < 300; ++i) {
        std::string m = "Subject: message " + std::to_string(i) + "\n\n" + std::string(static_cast<std::size_t>(i) * 13, 'x') + "\n";
        store(*sink, m, 100);
        sent.insert(std::move(m));
    }
    EXPECT_EQ(sink->pending(), 300u);
    ASSERT_TRUE(sink->flush());
    EXPECT_EQ(sink->pending(), 0u);
    EXPECT_EQ(contents_of(box / "new"), sent);
    EXPECT_TRUE(files_in(box / "tmp").empty());
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

TEST(maildir_sink, sequential_commit_without_a_pool) {
    temp_dir d;
    const fs::path box = d.path / "m";
    auto sink = open_maildir(box, 0);
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
        EXPECT_EQ(files_in(box / "tmp").size(), 1u);  // being written
        (*m)->abort();
        EXPECT_TRUE(files_in(box / "tmp").empty());
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
    EXPECT_TRUE(files_in(box / "tmp").empty());
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
}

TEST(maildir_sink, a_failed_commit_fails_the_batch_and_the_next_batch_starts_clean) {
    for (unsigned threads : {0u, 4u}) {
        temp_dir d;
        const fs::path box = d.path / "m";
        log_capture log;
        auto sink = open_maildir(box, threads, 64, log.sink());
        ASSERT_TRUE(sink);
        auto m = sink->begin(0);
        ASSERT_TRUE(m);
        ASSERT_TRUE((*m)->write("Subject: lost\n\n"));
        // new/ stops being a directory between the write and the commit: the link fails.
        fs::rename(box / "new", box / "new.away");
        std::ofstream(box / "new") << "in the way";
        if (threads == 0) {
            EXPECT_FALSE((*m)->complete());
            EXPECT_FALSE(sink->begin(0)) << "a failed batch takes no more messages";
        } else {
            EXPECT_TRUE((*m)->complete());  // queued: the failure shows in flush()
        }
        EXPECT_FALSE(sink->flush()) << threads;
        EXPECT_TRUE(log.contains("maildir")) << log.all();
        EXPECT_TRUE(files_in(box / "tmp").empty());

        fs::remove(box / "new");
        fs::rename(box / "new.away", box / "new");
        store(*sink, "Subject: next\n\n");
        EXPECT_TRUE(sink->flush()) << threads;
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
        auto sink = open_maildir(box, 2);
        ASSERT_TRUE(sink);
        for (int i = 0; i < 20; ++i) store(*sink, "Subject: " + std::to_string(i) + "\n\n");
    }
    // Not flushed, so not counted as stored (the server keeps them), but never half there.
    EXPECT_EQ(files_in(box / "new").size(), 20u);
    EXPECT_TRUE(files_in(box / "tmp").empty());
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
