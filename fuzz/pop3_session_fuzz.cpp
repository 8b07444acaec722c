// pop3_session_fuzz.cpp: the POP3 server core fed any bytes in any state; the input also
// chooses the chunking, the connection's properties and every answer to an action.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <vector>

#include "mailnet/pop3d/session.hpp"

namespace {

// Hands out the input's bytes as decisions, then zeros.
struct chooser {
    std::string_view bytes;
    unsigned take() {
        if (bytes.empty()) return 0;
        const auto b = static_cast<unsigned char>(bytes.front());
        bytes.remove_prefix(1);
        return b;
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 4) return 0;
    using namespace mailnet;
    using namespace mailnet::pop3;
    namespace act = mailnet::pop3::act;
    chooser pick{std::string_view(reinterpret_cast<const char*>(data), 4)};
    std::string_view input(reinterpret_cast<const char*>(data) + 4, size - 4);
    const unsigned flags = pick.take();
    const std::size_t chunk = 1 + pick.take() % 64;
    session_config cfg;
    cfg.peer_is_loopback = flags & 1;
    cfg.allow_plaintext_auth = flags & 2;
    cfg.tls_available = flags & 4;
    cfg.tls_active = flags & 8;
    cfg.apop = flags & 16;
    cfg.apop_timestamp = "<1.2@fuzz>";
    if (flags & 128) {
        // Fault rules at every POP3 phase, each acting on half its events.
        auto faults = std::make_shared<fault_rules>(flags);
        std::vector<fault_rule> rules;
        for (auto p : {fault_phase::connect, fault_phase::pop3_login, fault_phase::retr}) {
            fault_rule r;
            r.phase = p;
            r.probability = 0.5;
            r.reply = "-ERR fault";
            r.disconnect = flags & 32;
            r.delay = std::chrono::milliseconds(flags & 2 ? 0 : 5);
            rules.push_back(r);
        }
        if (!faults->replace(rules).empty()) std::abort();
        cfg.faults = faults;
    }
    limits lim;
    lim.max_command_octets = 16 + pick.take();
    lim.max_sasl_octets = 64;
    lim.auth_failure_delay = std::chrono::milliseconds(flags & 32 ? 1 : 0);
    // Retrievals answered at once, or (as the server does with a pipelined batch) only when
    // the session wants input: then RSET/LAST/QUIT wait on the outstanding ones.
    const bool lazy_retrieve = flags & 64;
    std::size_t outstanding = 0;
    session s(cfg, lim);
    s.start();
    // Answers come from the input too: the byte after each chunk.
    std::size_t sent = 0;
    while (!input.empty()) {
        const auto piece = input.substr(0, chunk);
        input.remove_prefix(piece.size());
        s.feed(piece);
        const unsigned answer = piece.empty() ? 0 : static_cast<unsigned char>(piece.back());
        for (int guard = 0;; ++guard) {
            if (guard > 100000) std::abort();  // the core must always come back to need_input
            action a = s.next();
            if (std::holds_alternative<act::need_input>(a)) {
                if (outstanding == 0) break;
                for (; outstanding > 0; --outstanding)
                    s.streamed(answer % 7 == 0 ? make_error_code(errc::io_error) : std::error_code{});
                continue;  // a deferred RSET/LAST/QUIT may now go on
            }
            if (auto* out = std::get_if<act::send>(&a)) {
                if (out->octets.empty()) std::abort();
                // Output leaves the core in bounded pieces (DESIGN.md "Layers" 1).
                if (out->octets.size() > max_pending_output_octets + 1024) std::abort();
                sent += out->octets.size();
            } else if (std::holds_alternative<act::authenticate>(a) || std::holds_alternative<act::authenticate_apop>(a)) {
                s.resume(answer % 3 == 0 ? auth_result::ok("u", "u") : answer % 3 == 1 ? auth_result::fail()
                                                                                      : auth_result::tempfail());
            } else if (std::holds_alternative<act::open_mailbox>(a)) {
                mailbox_result r;
                if (answer % 4 == 0) r.error = make_error_code(errc::mailbox_in_use);
                for (unsigned i = 0; i < answer % 5; ++i) r.messages.push_back({"id" + std::to_string(i), i * 10, "u" + std::to_string(i), (answer & i) != 0});
                s.resume(std::move(r));
            } else if (std::holds_alternative<act::stream_message>(a)) {
                if (lazy_retrieve)
                    ++outstanding;
                else
                    s.streamed(answer % 7 == 0 ? make_error_code(errc::io_error) : std::error_code{});
            } else if (auto* c = std::get_if<act::commit>(&a)) {
                commit_result r;
                r.errors.resize(c->deleted.size());
                if (!r.errors.empty() && answer % 2) r.errors[0] = make_error_code(errc::io_error);
                s.resume(r);
            } else if (std::holds_alternative<act::start_tls>(a)) {
                if (answer % 2) s.tls_started();
                else return 0;  // handshake failed: the connection closes
            } else if (std::holds_alternative<act::close>(a)) {
                return 0;
            }
            if (s.buffered() > lim.max_sasl_octets + lim.max_command_octets + chunk) std::abort();
        }
    }
    (void)sent;
    return 0;
}
