// mailnet/pop3c/client.hpp: the blocking POP3 client: the seed's Tcl `pop3` calls in C++ form.
// It runs the async client (async_client.hpp) on a private io_context, so both behave the
// same. Not thread-safe: one call at a time. No Asio header here.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mailnet/pop3c/types.hpp"

namespace mailnet::pop3c {

class async_client;

/// One logged-in POP3 session (the seed's channel).
class client {
public:
    /// The seed's ::pop3::open: connects, secures (options.tls), logs in, takes STAT.
    /// Port 0: 995 with implicit TLS, else 110. A -ERR to the login is errc::server_error; a
    /// -ERR to the STAT after an accepted login is errc::mailbox_refused (its response code,
    /// IN-USE or SYS/TEMP among them, in failure::code either way).
    static outcome<client> open(std::string host, std::string user, std::string password, std::uint16_t port = 0,
                                options opts = {});
    client(client&&) noexcept;
    client& operator=(client&&) noexcept;
    ~client();  ///< without close(): the connection is dropped and nothing is deleted

    /// The options the client runs with (the seed's ::pop3::config), mode as now in force.
    options config() const;
    outcome<mailbox_status> status();
    outcome<std::uint32_t> last();
    outcome<std::vector<listing>> list();
    outcome<listing> list(std::uint32_t n);
    outcome<std::vector<unique_id>> uidl();
    outcome<unique_id> uidl(std::uint32_t n);
    outcome<capabilities> capa();
    outcome<std::string> top(std::uint32_t n, std::uint32_t lines);
    outcome<std::vector<std::string>> retrieve(message_index start, std::optional<message_index> end = {});
    outcome<void> retrieve(message_index start, std::optional<message_index> end, retrieval_handler& h);
    outcome<void> retrieve_each(std::vector<std::uint32_t> numbers, retrieval_handler& h);
    /// The seed's ::pop3::delete (`delete` is a C++ keyword).
    outcome<void> remove(message_index start, std::optional<message_index> end = {});
    outcome<void> remove_each(std::vector<std::uint32_t> numbers);
    outcome<void> noop();
    outcome<void> reset();
    /// QUIT: deletions take effect. The client is closed afterwards whatever the answer.
    outcome<void> close();

    std::uint32_t count() const noexcept;
    const capabilities& server_capabilities() const noexcept;
    const std::string& greeting() const noexcept;
    retr_mode mode() const noexcept;
    bool secure() const noexcept;
    const std::string& login_used() const noexcept;

    struct impl;

private:
    explicit client(std::unique_ptr<impl> p);
    std::unique_ptr<impl> p_;
};

}  // namespace mailnet::pop3c
