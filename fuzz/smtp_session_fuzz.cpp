// smtp_session_fuzz.cpp: the SMTP core on any input, split anywhere, every verdict drawn from
// the input: it always comes back to need_input, its output comes in bounded pieces, and
// nothing it buffers grows past its limits.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

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
    limits lim;
    lim.max_command_octets = 64 + (flags >> 4) * 64;
    lim.max_message_octets = 1 + (flags & 2 ? 100 : 100000);
    lim.max_recipients = 1 + (flags >> 2) % 4;
    session s(cfg, lim);
    s.start();
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
            } else if (auto* d = std::get_if<act::deliver>(&a)) {
                if (d->mail.recipients.empty() || d->mail.recipients.size() > lim.max_recipients) std::abort();
                s.resume(answer % 3 ? verdict::accept() : verdict::refuse(451, "4.3.0", "no"));
            } else if (std::holds_alternative<act::validate_host>(a) || std::holds_alternative<act::validate_sender>(a) ||
                       std::holds_alternative<act::validate_recipient>(a)) {
                s.resume(answer % 3 ? verdict::accept() : verdict::refuse(550, "5.7.1", "no"));
            } else if (std::holds_alternative<act::close>(a)) {
                return 0;
            }
        }
        if (s.buffered() > lim.max_command_octets + chunk + 8) std::abort();
    }
    return 0;
}
