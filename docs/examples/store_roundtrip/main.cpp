// main.cpp: delivers a message into a memory store, lists the mailbox as a POP3 session
// would see it, and prints the message back through the line reader.
#include <mailnet/line_reader.hpp>
#include <mailnet/store/store.hpp>

#include <iostream>
#include <string>
#include <vector>

int main() {
    auto store = mailnet::make_memory_store();
    const std::vector<std::string> to{"alice@example.org"};
    if (auto r = store->deliver(to, "Subject: hi\n\nhello\n"); !r) {
        std::cerr << "deliver: " << r.error().message() << "\n";
        return 1;
    }
    if (!store->lock("alice@example.org")) return 1;
    auto list = store->snapshot("alice@example.org");
    if (!list || list->size() != 1) return 1;
    std::cout << "messages " << list->size() << " octets " << (*list)[0].octets << "\n";
    auto msg = store->open("alice@example.org", (*list)[0].id);
    if (!msg) return 1;
    std::string buf(4096, '\0');
    auto n = msg->read(buf);
    if (!n) return 1;
    mailnet::line_reader lines(1000);
    std::string wire;  // stored LF line ends become CRLF on the wire
    for (char c : buf.substr(0, *n)) wire += c == '\n' ? std::string("\r\n") : std::string(1, c);
    lines.feed(wire);
    while (lines.next() == mailnet::line_reader::status::line) std::cout << "| " << lines.text() << "\n";
    store->unlock("alice@example.org");
    return 0;
}
