// client.cpp: the blocking client: each call runs the async client's coroutine to its end on
// a private io_context, so both clients share every line of protocol and I/O code.
#include "mailnet/pop3c/client.hpp"

#include <exception>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include "mailnet/pop3c/async_client.hpp"

namespace mailnet::pop3c {

struct client::impl {
    asio::io_context io{1};
    std::unique_ptr<async_client> c;
    options opts;

    template <class T>
    outcome<T> run(asio::awaitable<outcome<T>> work) {
        outcome<T> out;
        std::exception_ptr thrown;
        asio::co_spawn(io, std::move(work), [&](std::exception_ptr e, outcome<T> r) {
            thrown = e;
            out = std::move(r);
        });
        io.restart();
        io.run();
        if (thrown) std::rethrow_exception(thrown);  // a handler's own exception
        return out;
    }
};

namespace {

failure closed_client() { return failure{make_error_code(errc::not_connected), "the client is closed", {}}; }

}  // namespace

client::client(std::unique_ptr<impl> p) : p_(std::move(p)) {}
client::client(client&&) noexcept = default;
client& client::operator=(client&&) noexcept = default;
client::~client() = default;

outcome<client> client::open(std::string host, std::string user, std::string password, std::uint16_t port,
                             options opts) {
    auto p = std::make_unique<impl>();
    p->opts = opts;
    auto c = p->run(async_client::open(p->io.get_executor(), std::move(host), std::move(user), std::move(password), port,
                                       std::move(opts)));
    if (!c) return c.why();
    p->c = std::move(*c);
    return client(std::move(p));
}

options client::config() const {
    options o = p_->opts;
    if (p_->c) o.mode = p_->c->mode();
    return o;
}

#define MAILNET_POP3C_CALL(expr) \
    if (!p_ || !p_->c) return closed_client(); \
    return p_->run(p_->c->expr)

outcome<mailbox_status> client::status() { MAILNET_POP3C_CALL(status()); }
outcome<std::uint32_t> client::last() { MAILNET_POP3C_CALL(last()); }
outcome<std::vector<listing>> client::list() { MAILNET_POP3C_CALL(list()); }
outcome<listing> client::list(std::uint32_t n) { MAILNET_POP3C_CALL(list(n)); }
outcome<std::vector<unique_id>> client::uidl() { MAILNET_POP3C_CALL(uidl()); }
outcome<unique_id> client::uidl(std::uint32_t n) { MAILNET_POP3C_CALL(uidl(n)); }
outcome<capabilities> client::capa() { MAILNET_POP3C_CALL(capa()); }
outcome<std::string> client::top(std::uint32_t n, std::uint32_t lines) { MAILNET_POP3C_CALL(top(n, lines)); }
outcome<std::vector<std::string>> client::retrieve(message_index start, std::optional<message_index> end) {
    MAILNET_POP3C_CALL(retrieve(start, end));
}
outcome<void> client::retrieve(message_index start, std::optional<message_index> end, retrieval_handler& h) {
    MAILNET_POP3C_CALL(retrieve(start, end, h));
}
outcome<void> client::retrieve_each(std::vector<std::uint32_t> numbers, retrieval_handler& h) {
    MAILNET_POP3C_CALL(retrieve_each(std::move(numbers), h));
}
outcome<void> client::remove(message_index start, std::optional<message_index> end) { MAILNET_POP3C_CALL(remove(start, end)); }
outcome<void> client::remove_each(std::vector<std::uint32_t> numbers) { MAILNET_POP3C_CALL(remove_each(std::move(numbers))); }
outcome<void> client::noop() { MAILNET_POP3C_CALL(noop()); }
outcome<void> client::reset() { MAILNET_POP3C_CALL(reset()); }

#undef MAILNET_POP3C_CALL

outcome<void> client::close() {
    if (!p_ || !p_->c) return closed_client();
    auto r = p_->run(p_->c->close());
    p_->c.reset();
    return r;
}

std::uint32_t client::count() const noexcept { return p_ && p_->c ? p_->c->count() : 0; }
const capabilities& client::server_capabilities() const noexcept {
    static const capabilities none;
    return p_ && p_->c ? p_->c->server_capabilities() : none;
}
const std::string& client::greeting() const noexcept {
    static const std::string none;
    return p_ && p_->c ? p_->c->greeting() : none;
}
retr_mode client::mode() const noexcept { return p_ && p_->c ? p_->c->mode() : p_ ? p_->opts.mode : retr_mode::retr; }
bool client::secure() const noexcept { return p_ && p_->c && p_->c->secure(); }
const std::string& client::login_used() const noexcept {
    static const std::string none;
    return p_ && p_->c ? p_->c->login_used() : none;
}

}  // namespace mailnet::pop3c
