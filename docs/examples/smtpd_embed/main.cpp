// smtpd_embed: an application with its own SMTP server (docs/smtpd.md, "Embedding"). It takes
// mail for example.org only, hands each message to its own code, and sends itself one message
// to show it working.
#include <mailnet/smtpd/server.hpp>

#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read_until.hpp>
#include <asio/streambuf.hpp>
#include <asio/write.hpp>

#include <iostream>
#include <thread>

namespace smtp = mailnet::smtp;

int main() {
    auto callbacks = std::make_shared<smtp::callback_functions>();
    // The seed's validate_recipient: the address arrives parsed, as data.
    callbacks->on_validate_recipient = [](const mailnet::mailbox_address& rcpt) {
        if (rcpt.domain != "example.org") return smtp::verdict::refuse(550, "5.7.1", "we take mail for example.org only");
        return smtp::verdict::accept();
    };
    // Without a store, deliver gets each message; 250 goes out only after it returns.
    callbacks->on_deliver = [](const smtp::transaction_info& t, mailnet::message& m) {
        auto headers = m.headers();
        std::cout << "delivered " << t.mail.recipients.size() << " recipient(s) from " << t.mail.sender.address()
                  << ", " << m.stored_octets() << " octets\n";
        if (headers) std::cout << *headers;
        return smtp::verdict::accept();
    };

    asio::io_context io;
    smtp::server_config cfg;
    cfg.listen = {{"smtp", "127.0.0.1", 0, false}};  // port 0: the OS chooses
    cfg.handler = callbacks;
    cfg.hostname = "mx.example.org";
    cfg.log = mailnet::null_log();
    smtp::server server(io, cfg);
    if (!server.up()) return 1;
    const auto port = server.listeners().at(0).endpoint.port();
    std::thread loop([&] { io.run(); });

    // A client: one message, then QUIT.
    asio::io_context client_io;
    asio::ip::tcp::socket s(client_io);
    s.connect({asio::ip::make_address("127.0.0.1"), port});
    asio::streambuf in;
    auto reply = [&] {
        std::string line;
        do {
            asio::read_until(s, in, "\r\n");
            std::istream is(&in);
            std::getline(is, line);
        } while (line.size() > 3 && line[3] == '-');
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return line;
    };
    reply();
    for (const char* cmd : {"EHLO client\r\n", "MAIL FROM:<alice@example.net>\r\n", "RCPT TO:<bob@example.org>\r\n",
                            "RCPT TO:<eve@example.com>\r\n", "DATA\r\n", "Subject: hello\r\n\r\nHi Bob.\r\n.\r\n",
                            "QUIT\r\n"}) {
        asio::write(s, asio::buffer(std::string(cmd)));
        const std::string answer = reply();
        std::cout << "> " << answer << "\n";
    }
    server.destroy(mailnet::net::server::destroy_mode::kill, [&] { io.stop(); });
    loop.join();
    return 0;
}
