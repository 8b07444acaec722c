// address_fuzz.cpp: the SMTP path parser (RFC 5321 4.1.2) on any octets: it never crashes,
// what it accepts keeps its limits, and a mailbox it accepts parses again to the same data.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mailnet/address.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const mailnet::path_options o{(data[0] & 1) != 0, (data[0] & 2) != 0, (data[0] & 4) != 0};
    const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
    auto p = mailnet::parse_path(in, o);
    if (!p) return 0;
    const auto& m = p->mailbox;
    if (m.local.size() > 64 || m.domain.size() > 255) std::abort();
    if (m.is_null()) return 0;
    // What goes into headers and replies: no control octet, never longer than the path allows.
    const std::string canonical = m.address();
    for (char c : canonical)
        if (static_cast<unsigned char>(c) < 32 || c == 127) std::abort();
    if (canonical.size() > 256) std::abort();
    // The canonical form is itself a valid path with the same meaning.
    auto again = mailnet::parse_path("<" + m.address() + ">", o);
    if (!again || again->mailbox.local != m.local || again->mailbox.domain != m.domain) std::abort();
    return 0;
}
