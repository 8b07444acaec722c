// deliver.cpp: a test tool: delivers files into a mailbox of a Maildir store with libmailnet's
// own writer (DESIGN.md "Delivery"), so interop tests can hand a peer a Maildir mailnet wrote.
// Usage: mailnet-test-deliver STORE MAILBOX FILE...   (one message per file; exit 0, 64, 74)
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "mailnet/store/store.hpp"

int main(int argc, char** argv) {
    if (argc < 4) {
        std::cerr << "usage: mailnet-test-deliver STORE MAILBOX FILE...\n";
        return 64;
    }
    mailnet::maildir_options o;
    o.root = argv[1];
    o.hostname = "testhost";
    o.log = mailnet::stderr_log();
    auto store = mailnet::open_maildir_store(o);
    if (!store) return 74;
    const std::vector<std::string> to{argv[2]};
    for (int i = 3; i < argc; ++i) {
        std::ifstream in(argv[i], std::ios::binary);
        std::ostringstream bytes;
        bytes << in.rdbuf();
        if (!in && !in.eof()) {
            std::cerr << "mailnet-test-deliver: cannot read " << argv[i] << "\n";
            return 74;
        }
        if (auto d = (*store)->deliver(to, bytes.str()); !d) {
            std::cerr << "mailnet-test-deliver: " << argv[i] << ": " << d.error().message() << "\n";
            return 74;
        }
    }
    return 0;
}
