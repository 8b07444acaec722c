// transcript.hpp: the transcript files every protocol core's tests read (STYLE.md "Tests"):
//   # comment               ! option words
//   C: client line          (CRLF added; "\r", "\n", "\0" and "\xHH" escapes allowed)
//   S: expected server line (without CRLF)
//   A: expected action => answer
// Shared by the test binaries of the components (header-only); each plays them on its core.
#pragma once

#include <algorithm>
#include <filesystem>
#include <memory>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mailnet/faults.hpp"

namespace mailnet::testing {

/// "\r", "\n", "\0", "\xHH" and "\\" in a C: line.
inline std::string unescape(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\' || i + 1 >= s.size()) {
            out += s[i];
            continue;
        }
        const char c = s[++i];
        if (c == 'r') out += '\r';
        else if (c == 'n') out += '\n';
        else if (c == '0') out += '\0';
        else if (c == 'x' && i + 2 < s.size()) {
            out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
            i += 2;
        } else out += c;
    }
    return out;
}

/// Whitespace-separated words.
inline std::vector<std::string> split_words(std::string_view s) {
    std::vector<std::string> w;
    std::istringstream in{std::string(s)};
    for (std::string x; in >> x;) w.push_back(x);
    return w;
}

/// One transcript file: its options (the words of each "!" line) and its lines in order
/// ('C' with CRLF added and escapes applied, 'S', 'A').
struct transcript_file {
    std::string name;
    std::vector<std::vector<std::string>> options;
    std::vector<std::pair<char, std::string>> lines;
};

inline transcript_file load_transcript(const std::filesystem::path& p) {
    transcript_file t;
    t.name = p.filename().string();
    std::ifstream in(p);
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        if (line[0] == '!') {
            t.options.push_back(split_words(std::string_view(line).substr(1)));
            continue;
        }
        if (line.size() < 2 || line[1] != ':' || (line[0] != 'C' && line[0] != 'S' && line[0] != 'A'))
            throw std::runtime_error(t.name + ": bad line: " + line);
        std::string body = line.size() > 3 ? line.substr(3) : "";
        t.lines.emplace_back(line[0], line[0] == 'C' ? unescape(body) + "\r\n" : body);
    }
    return t;
}

/// The *.txt files of a directory, sorted.
inline std::vector<std::string> transcript_names(const std::filesystem::path& dir) {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir))
        if (e.path().extension() == ".txt") names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

/// Checks what a core does against a transcript's S: and A: lines, in order.
class transcript_matcher {
public:
    explicit transcript_matcher(const std::vector<std::pair<char, std::string>>& lines) {
        for (const auto& [kind, text] : lines)
            if (kind != 'C') expected_.push_back(std::string(1, kind) + ": " + text);
    }
    /// Matches "A: <desc>" and returns its answer (what follows " => "), "" if none.
    std::string answer_for(const std::string& desc) {
        if (pos_ >= expected_.size()) {
            fail("unexpected A: " + desc);
            return {};
        }
        const std::string& e = expected_[pos_++];
        const auto arrow = e.find(" => ");
        if (e.substr(0, arrow) != "A: " + desc) fail("expected `" + e + "`, got `A: " + desc + "`");
        return arrow == std::string::npos ? "" : e.substr(arrow + 4);
    }
    /// Matches the output octets, a line (CRLF) at a time, against S: lines.
    void sent(const std::string& octets) {
        pending_ += octets;
        for (std::size_t p; (p = pending_.find("\r\n")) != std::string::npos;) {
            const std::string line = "S: " + pending_.substr(0, p);
            pending_.erase(0, p + 2);
            if (pos_ >= expected_.size()) fail("unexpected " + line);
            else if (expected_[pos_] != line) fail("expected `" + expected_[pos_] + "`, got `" + line + "`");
            ++pos_;
        }
    }
    /// Records a failure (the first one is kept).
    void fail(const std::string& what) {
        if (errors_.empty()) errors_ = what;
    }
    /// "" when every line matched and none is left, else the first mismatch.
    std::string finish() {
        if (pos_ < expected_.size()) fail("missing: " + expected_[pos_]);
        return errors_;
    }

private:
    std::vector<std::string> expected_;
    std::size_t pos_ = 0;
    std::string pending_, errors_;
};

/// Everything the client sends in a transcript, as one string.
inline std::string client_input(const std::vector<std::pair<char, std::string>>& lines) {
    std::string all;
    for (const auto& [kind, text] : lines)
        if (kind == 'C') all += text;
    return all;
}

/// Feeds the client's lines one at a time to `p`; returns "" or the first mismatch.
template <class Player>
std::string play_line_by_line(const std::vector<std::pair<char, std::string>>& lines, Player& p) {
    for (const auto& [kind, text] : lines)
        if (kind == 'C') p.feed(text);
    return p.finish();
}

/// Plays `input` pipelined, split in two at every offset, each time through a fresh player from
/// `make` (with feed() and finish() returning "" or the first mismatch); returns the first
/// failure as "split at K: ...", or "".
template <class MakePlayer>
std::string play_split_everywhere(const std::string& input, MakePlayer make) {
    for (std::size_t k = 0; k <= input.size(); ++k) {
        auto p = make();
        p.feed(std::string_view(input).substr(0, k));
        p.feed(std::string_view(input).substr(k));
        if (auto e = p.finish(); !e.empty()) return "split at " + std::to_string(k) + ": " + e;
    }
    return {};
}

/// For a transcript whose input must not be pipelined whole (STARTTLS, a close mid-way): feeds
/// each client line on its own, split in two at offset K within it, for every K, each time
/// through a fresh player from `make`; returns the first failure as "split at K: ...", or "".
template <class MakePlayer>
std::string play_each_line_split(const std::vector<std::pair<char, std::string>>& lines, MakePlayer make) {
    for (std::size_t k = 0;; ++k) {
        bool any = false;
        auto p = make();
        for (const auto& [kind, text] : lines) {
            if (kind != 'C') continue;
            const auto cut = std::min(k, text.size());
            any = any || k < text.size();
            p.feed(std::string_view(text).substr(0, cut));
            p.feed(std::string_view(text).substr(cut));
        }
        if (auto e = p.finish(); !e.empty()) return "split at " + std::to_string(k) + ": " + e;
        if (!any) return {};
    }
}

/// The pipelined runs of a transcript: with `sequential` (STLS/STARTTLS, a close mid-way) each
/// client line on its own split at every offset, else all client input pipelined and split at
/// every offset; "" or the first failure.
template <class MakePlayer>
std::string play_pipelined(const std::vector<std::pair<char, std::string>>& lines, bool sequential, MakePlayer make) {
    return sequential ? play_each_line_split(lines, make) : play_split_everywhere(client_input(lines), make);
}

/// A fault rule from an option line's words: "fault PHASE [nth=N] [delay=MS] [probability=P]
/// [rcpt=S] [from=S] [disconnect] [reply=TEXT...]" (reply= takes the rest of the words).
inline fault_rule fault_option(const std::vector<std::string>& w) {
    fault_rule r;
    const auto phase = parse_fault_phase(w.at(1));
    if (!phase) throw std::runtime_error("unknown fault phase " + w.at(1));
    r.phase = *phase;
    for (std::size_t i = 2; i < w.size(); ++i) {
        const auto eq = w[i].find('=');
        const std::string key = w[i].substr(0, eq), value = eq == std::string::npos ? "" : w[i].substr(eq + 1);
        if (key == "nth") r.nth = std::stoull(value);
        else if (key == "delay") r.delay = std::chrono::milliseconds(std::stoll(value));
        else if (key == "probability") r.probability = std::stod(value);
        else if (key == "rcpt") r.match.rcpt = value;
        else if (key == "from") r.match.from = value;
        else if (key == "disconnect") r.disconnect = true;
        else if (key == "reply") {
            r.reply = value;
            for (++i; i < w.size(); ++i) r.reply += " " + w[i];
        } else throw std::runtime_error("unknown fault option " + w[i]);
    }
    return r;
}

/// Fresh fault rules holding `rules` (each player counts from 0), or null for none.
inline std::shared_ptr<fault_rules> make_faults(const std::vector<fault_rule>& rules) {
    if (rules.empty()) return nullptr;
    auto f = std::make_shared<fault_rules>(1);
    if (auto why = f->replace(rules); !why.empty()) throw std::runtime_error("bad fault rule: " + why);
    return f;
}

/// A test name from a transcript file name ("long_line.txt" -> "long_line").
inline std::string transcript_test_name(const std::string& file) {
    std::string n = file.substr(0, file.size() - 4);
    for (auto& c : n)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    return n;
}

}  // namespace mailnet::testing
