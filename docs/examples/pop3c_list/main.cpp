// pop3c_list: logs in to a POP3 server, prints the mailbox's STAT and each message's Subject
// line, streamed (docs/pop3c.md "The library"). Usage: pop3c_list HOST PORT USER (password in
// the environment variable POP3_PASSWORD).
#include <mailnet/pop3c/client.hpp>

#include <cstdlib>
#include <iostream>
#include <string>

namespace pop3c = mailnet::pop3c;

// Prints the Subject header of each message as it streams past; the message is never whole
// in memory.
class subjects final : public pop3c::retrieval_handler {
public:
    bool begin(std::uint32_t n, std::optional<std::uint64_t>) override {
        number_ = n;
        line_.clear();
        in_header_ = true;
        return true;
    }
    bool data(std::uint32_t, std::string_view octets) override {
        for (const char c : octets) {
            if (!in_header_) break;
            if (c != '\n') {
                line_ += c;
                continue;
            }
            if (line_.empty()) in_header_ = false;  // the header ends at its empty line
            if (line_.rfind("Subject:", 0) == 0) std::cout << number_ << " " << line_ << "\n";
            line_.clear();
        }
        return true;
    }
    bool end(std::uint32_t, std::uint64_t) override { return true; }
    void refused(std::uint32_t n, const pop3c::failure& why) override {
        std::cerr << "message " << n << ": " << why.message() << "\n";
    }

private:
    std::uint32_t number_ = 0;
    std::string line_;
    bool in_header_ = true;
};

int main(int argc, char** argv) {
    if (argc != 4 || std::getenv("POP3_PASSWORD") == nullptr) {
        std::cerr << "usage: POP3_PASSWORD=... pop3c_list HOST PORT USER\n";
        return 64;
    }
    pop3c::options o;
    o.line_ends = mailnet::output_line_ends::lf;
    try {
        auto c = pop3c::client::open(argv[1], argv[3], std::getenv("POP3_PASSWORD"),
                                     static_cast<std::uint16_t>(std::stoi(argv[2])), o)
                     .value();
        const auto st = c.status().value();
        std::cout << "messages " << st.count << " octets " << st.octets << "\n";
        subjects h;
        c.retrieve(pop3c::message_index::word::start, pop3c::message_index::word::end, h).value();
        c.close().value();
    } catch (const pop3c::error& e) {
        std::cerr << "pop3c_list: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
