// line_reader_fuzz.cpp: any bytes, fed in chunks whose sizes the input chooses, through
// line_reader; checks the limit and that no line holds CRLF.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "mailnet/line_reader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::size_t limit = 3 + data[0] % 64;
    const std::size_t chunk = 1 + data[1] % 17;
    std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);
    mailnet::line_reader r(limit);
    while (!in.empty()) {
        r.feed(in.substr(0, chunk));
        in.remove_prefix(std::min(chunk, in.size()));
        for (auto s = r.next(); s != mailnet::line_reader::status::need_more; s = r.next()) {
            if (s == mailnet::line_reader::status::line) {
                if (r.text().size() + 2 > limit) std::abort();
                if (r.text().find("\r\n") != std::string_view::npos) std::abort();
            }
        }
        if (r.buffered() >= limit) std::abort();  // never more than one partial line
    }
    return 0;
}
