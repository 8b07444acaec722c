// transcript.hpp: the transcript files every protocol core's tests read (STYLE.md "Tests"):
//   # comment               ! option words
//   C: client line          (CRLF added; "\r", "\n", "\0" and "\xHH" escapes allowed)
//   S: expected server line (without CRLF)
//   A: expected action => answer
// Shared by the test binaries of the components (header-only); each plays them on its core.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

/// A test name from a transcript file name ("long_line.txt" -> "long_line").
inline std::string transcript_test_name(const std::string& file) {
    std::string n = file.substr(0, file.size() - 4);
    for (auto& c : n)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    return n;
}

}  // namespace mailnet::testing
