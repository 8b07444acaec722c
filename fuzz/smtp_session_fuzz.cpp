// smtp_session_fuzz.cpp: the SMTP core on any input, split anywhere, every verdict drawn from
// the input: it always comes back to need_input, its output comes in bounded pieces, and
// nothing it buffers grows past its limits.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <vector>

#include "mailnet/smtpd/session.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace mailnet::smtp;
    if (size < 2) return 0;
    std::string_view input(reinterpret_cast<const char*>(data), size);
    const unsigned flags = static_cast<unsigned char>(input[0]);
    const std::size_t chunk = 1 + static_cast<unsigned char>(input[1]) % 64;
    input.remove_prefix(2);
    session_config cfg;
    cfg.peer_address = "192.0.2.1";
    cfg.normalise_bare_line_ends = flags & 1;
    cfg.tls_available = flags & 4;
    cfg.auth_available = flags & 8;
    cfg.peer_is_loopback = flags & 16;
    cfg.require_auth = flags & 32;
    if (flags & 64) {
        // Fault rules at every SMTP phase, each acting on half its events (a reply, a hang-up or
        // only a delay): the transaction must stay consistent whatever is faulted.
        auto faults = std::make_shared<mailnet::fault_rules>(flags);
        std::vector<mailnet::fault_rule> rules;
        for (auto p : {mailnet::fault_phase::connect, mailnet::fault_phase::ehlo, mailnet::fault_phase::mail,
                       mailnet::fault_phase::rcpt, mailnet::fault_phase::data, mailnet::fault_phase::auth}) {
            mailnet::fault_rule r;
            r.phase = p;
            r.probability = 0.5;
            r.reply = (flags & 128) ? "421 4.3.0 fault" : "451 4.3.0 fault";
            r.disconnect = (flags & 128) && p == mailnet::fault_phase::data;
            r.delay = std::chrono::milliseconds(flags & 2 ? 0 : 5);
            rules.push_back(r);
            r.reply.clear();  // a delay alone, for the events the first rule leaves
            rules.push_back(r);
        }
        if (!faults->replace(rules).empty()) std::abort();
        cfg.faults = faults;
    }
    limits lim;
    lim.max_command_octets = 64 + (flags >> 4) * 64;
    lim.max_message_octets = 1 + (flags & 2 ? 100 : 100000);
    lim.max_recipients = 1 + (flags >> 2) % 4;
    session s(cfg, lim);
    s.start();
    std::uint64_t message = 0;  // message_data octets of the message in progress
    while (!input.empty()) {
        const auto piece = input.substr(0, chunk);
        input.remove_prefix(piece.size());
        s.feed(piece);
        const unsigned answer = static_cast<unsigned char>(piece.back());
        for (int guard = 0;; ++guard) {
            if (guard > 100000) std::abort();  // the core must always come back to need_input
            auto a = s.next();
            if (std::holds_alternative<mailnet::act::need_input>(a)) break;
            if (auto* out = std::get_if<mailnet::act::send>(&a)) {
                if (out->octets.empty() || out->octets.size() > mailnet::max_pending_output_octets + 4096) std::abort();
                // Every reply line starts with three digits (RFC 5321 4.2).
                if (out->octets.size() < 5 || out->octets[0] < '2' || out->octets[0] > '5') std::abort();
            } else if (auto* m = std::get_if<act::message_data>(&a)) {
                // Never more than the limit is handed out (RFC 1870: refused, not buffered).
                message += m->octets.size();
                if (m->octets.empty() || message > lim.max_message_octets) std::abort();
            } else if (std::holds_alternative<act::discard>(a)) {
                message = 0;
            } else if (auto* d = std::get_if<act::deliver>(&a)) {
                if (d->mail.recipients.empty() || d->mail.recipients.size() > lim.max_recipients) std::abort();
                message = 0;
                s.resume(answer % 3 ? verdict::accept() : verdict::refuse(451, "4.3.0", "no"));
            } else if (std::holds_alternative<act::validate_host>(a) || std::holds_alternative<act::validate_sender>(a) ||
                       std::holds_alternative<act::validate_recipient>(a)) {
                s.resume(answer % 3 ? verdict::accept() : verdict::refuse(550, "5.7.1", "no"));
            } else if (std::holds_alternative<act::start_tls>(a)) {
                if (!cfg.tls_available) std::abort();
                s.tls_started();
            } else if (std::holds_alternative<act::authenticate>(a)) {
                if (!cfg.auth_available) std::abort();
                s.resume(answer % 3 == 0   ? mailnet::auth_result::fail()
                         : answer % 3 == 1 ? mailnet::auth_result::tempfail()
                                           : mailnet::auth_result::ok("a", "a"));
            } else if (std::holds_alternative<act::close>(a)) {
                return 0;
            }
        }
        // A line is held up to its limit (a SASL response line's is larger), never more.
        if (s.buffered() > std::max(lim.max_command_octets, lim.max_sasl_octets) + chunk + 8) std::abort();
    }
    return 0;
}
