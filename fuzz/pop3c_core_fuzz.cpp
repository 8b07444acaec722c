// pop3c_core_fuzz.cpp: the POP3 client core fed any server output, split anywhere, with a mix
// of commands (each kind of answer, STLS, SASL, a pipelining window) drawn from the input: it
// never crashes, every view it hands out is bounded by what was fed, a failure is final, and
// it never writes a command before the greeting or past its window.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "mailnet/pop3c/core.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace mailnet::pop3c;
    if (size < 3) return 0;
    std::string_view input(reinterpret_cast<const char*>(data), size);
    const unsigned flags = static_cast<unsigned char>(input[0]);
    const std::size_t chunk = 1 + static_cast<unsigned char>(input[1]) % 64;
    const unsigned mix = static_cast<unsigned char>(input[2]);
    input.remove_prefix(3);
    core_options o;
    o.window = 1 + (flags & 7);
    o.lf_line_ends = flags & 8;
    o.max_line_octets = (flags & 16) ? 64 : 8192;
    o.data_line_ends = (flags & 32) ? mailnet::output_line_ends::lf : mailnet::output_line_ends::crlf;
    core c(o);
    static const command commands[] = {
        {"STAT"}, {"LIST", answer::lines}, {"RETR 1", answer::message}, {"TOP 1 0", answer::message},
        {"STLS", answer::single, true}, {"AUTH PLAIN", answer::sasl}, {"UIDL", answer::lines}, {"QUIT"}};
    for (unsigned i = 0; i < 8; ++i) c.submit(commands[((mix >> i) + i) % 8]);
    for (;;) {
        const std::string out = c.take_output();
        if (!c.greeted() && !out.empty()) std::abort();           // nothing before the greeting
        if (c.in_flight() > o.window) std::abort();              // never past the window
        const event e = c.next();
        if (const auto* d = std::get_if<ev::data>(&e)) {
            if (d->octets.size() > 2 * chunk + 2) std::abort();   // no more than was fed (LF may become CRLF)
        } else if (const auto* l = std::get_if<ev::line>(&e)) {
            if (l->text.size() > o.max_line_octets) std::abort();
        } else if (std::holds_alternative<ev::challenge>(e)) {
            c.respond("Kg==");
        } else if (std::holds_alternative<ev::failed>(e)) {
            if (!std::holds_alternative<ev::failed>(c.next())) std::abort();  // final
            break;
        } else if (std::holds_alternative<ev::need_input>(e)) {
            if (input.empty()) break;
            const auto piece = input.substr(0, chunk);
            input.remove_prefix(piece.size());
            c.feed(piece);
        }
    }
    return 0;
}
