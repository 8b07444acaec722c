// dot_stuffing_fuzz.cpp: any bytes, in chunks whose sizes the input chooses, through dot_decoder
// and dot_encoder (RFC 5321 4.5.2, 4.1.1.4; RFC 1939 3, 7). Checks chunking changes nothing,
// counts and limits, that normalised output re-encodes to itself, the encode→decode round trip,
// and BDAT mode (no stuffing, end_of_chunks).
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "mailnet/dot_stuffing.hpp"

namespace {

struct decode_run {
    std::string out;
    std::size_t consumed = 0;
};

void check(bool ok) {
    if (!ok) std::abort();
}

// Feeds `in` in chunks of `chunk` octets; checks what decode() may consume.
decode_run decode_chunked(mailnet::dot_decoder& d, std::string_view in, std::size_t chunk) {
    decode_run r;
    while (!in.empty()) {
        const std::string_view piece = in.substr(0, chunk);
        const std::size_t used = d.decode(piece, r.out);
        check(used <= piece.size());
        r.consumed += used;
        if (used < piece.size()) {
            check(d.finished());  // only the end of data stops it short
            break;
        }
        in.remove_prefix(piece.size());
    }
    if (d.finished()) {
        const std::size_t before = r.out.size();
        check(d.decode("x\r\n.\r\n", r.out) == 0 && r.out.size() == before);
    }
    check(d.consumed_octets() == r.consumed);
    return r;
}

std::string encode_chunked(std::string_view stored, std::size_t chunk, std::optional<std::size_t> top) {
    mailnet::dot_encoder e(top);
    std::string out;
    while (!stored.empty() && !e.done()) {
        const std::string_view piece = stored.substr(0, chunk);
        const std::size_t used = e.encode(piece, out);
        check(used <= piece.size());
        check(used == piece.size() || e.done());
        stored.remove_prefix(piece.size());
    }
    e.finish(out);
    return out;
}

// Longest CRLF-delimited line of a CRLF-mode output, CRLF counted.
std::size_t longest_crlf_line(std::string_view s) {
    std::size_t longest = 0;
    for (;;) {
        const std::size_t at = s.find("\r\n");
        if (at == std::string_view::npos) return longest > s.size() ? longest : s.size();
        if (at + 2 > longest) longest = at + 2;
        s.remove_prefix(at + 2);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 3) return 0;
    const std::size_t chunk = 1 + data[0] % 32;
    const std::uint8_t flags = data[1];
    const std::uint64_t limit = data[2];
    const std::string_view in(reinterpret_cast<const char*>(data) + 3, size - 3);

    mailnet::dot_decoder_options o;
    o.bare = static_cast<mailnet::bare_line_end_policy>(flags % 3);
    o.line_ends = (flags & 4) ? mailnet::output_line_ends::lf : mailnet::output_line_ends::crlf;

    // Decoding: in one piece and in chunks gives the same result.
    mailnet::dot_decoder whole(o);
    const decode_run w = decode_chunked(whole, in, in.size() + 1);
    mailnet::dot_decoder split(o);
    const decode_run s = decode_chunked(split, in, chunk);
    check(w.out == s.out && w.consumed == s.consumed);
    check(whole.finished() == split.finished() && whole.message_octets() == split.message_octets());
    check(whole.saw_bare_cr() == split.saw_bare_cr() && whole.saw_bare_lf() == split.saw_bare_lf());
    check(whole.longest_line_octets() == split.longest_line_octets());
    check(whole.consumed_octets() <= in.size());
    check(!whole.finished() || w.consumed >= 3);
    check(whole.rejected() ==
          (o.bare == mailnet::bare_line_end_policy::reject && (whole.saw_bare_cr() || whole.saw_bare_lf())));
    check(whole.message_octets() <= whole.consumed_octets() * 2);
    if (o.line_ends == mailnet::output_line_ends::crlf) {
        check(whole.message_octets() == w.out.size());
        check(whole.longest_line_octets() == longest_crlf_line(w.out));
        if (whole.finished()) check(w.out.empty() || w.out.ends_with("\r\n"));
    }

    // A limit cuts the output to a prefix and changes no count.
    o.max_message_octets = limit;
    mailnet::dot_decoder lim(o);
    const decode_run l = decode_chunked(lim, in, chunk);
    check(l.consumed == w.consumed && lim.message_octets() == whole.message_octets());
    check(lim.over_limit() == (whole.message_octets() > limit));
    check(w.out.compare(0, l.out.size(), l.out) == 0);
    if (!lim.over_limit()) check(l.out == w.out);
    o.max_message_octets = std::numeric_limits<std::uint64_t>::max();

    // What normalise accepted (CRLF lines only) is sent again as the same message.
    if (o.bare == mailnet::bare_line_end_policy::normalise && whole.finished()) {
        const std::string wire = encode_chunked(w.out, chunk, std::nullopt);
        mailnet::dot_decoder again(o);
        const decode_run a = decode_chunked(again, wire, chunk);
        check(again.finished() && a.consumed == wire.size() && !again.saw_bare_cr() && !again.saw_bare_lf());
        check(a.out == w.out && again.message_octets() == whole.message_octets());
    }

    // Round trip: any stored bytes, encoded, decode to the stored bytes with CRLF line ends.
    const std::string wire = encode_chunked(in, chunk, std::nullopt);
    check(wire.ends_with(".\r\n"));
    std::string want;
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r')) want += '\r';
        want += in[i];
    }
    if (!in.empty() && in.back() != '\n') want += "\r\n";
    check(mailnet::wire_octets(in) + ((!in.empty() && in.back() != '\n') ? 2 : 0) == want.size());
    mailnet::dot_decoder_options keep;
    keep.bare = mailnet::bare_line_end_policy::keep;
    mailnet::dot_decoder rt(keep);
    const decode_run r = decode_chunked(rt, wire, chunk);
    check(rt.finished() && r.consumed == wire.size());  // no stored byte ends the data early
    check(r.out == want && !rt.saw_bare_lf());

    // BDAT (RFC 3030 2): no stuffing and no end of data; every octet is consumed, chunking
    // changes nothing, end_of_chunks() ends the message. Kept as sent, the output is the input
    // with a last line end added when it had none; that added CRLF never passes the limit.
    {
        mailnet::dot_decoder_options b = o;
        b.dot_stuffed = false;
        const auto bdat = [&](std::size_t piece_octets, std::uint64_t max) {
            b.max_message_octets = max;
            mailnet::dot_decoder d(b);
            std::string out;
            for (std::string_view rest = in; !rest.empty();) {
                const std::string_view piece = rest.substr(0, piece_octets);
                check(d.decode(piece, out) == piece.size() && !d.finished());
                rest.remove_prefix(piece.size());
            }
            d.end_of_chunks(out);
            check(d.finished() && d.consumed_octets() == in.size());
            const std::size_t before = out.size();
            check(d.decode("x\r\n", out) == 0 && out.size() == before);
            return std::pair{std::move(out), d};
        };
        const auto [bw, dw] = bdat(in.size() + 1, std::numeric_limits<std::uint64_t>::max());
        const auto [bs, ds] = bdat(chunk, std::numeric_limits<std::uint64_t>::max());
        check(bw == bs && dw.message_octets() == ds.message_octets());
        check(dw.saw_bare_cr() == ds.saw_bare_cr() && dw.saw_bare_lf() == ds.saw_bare_lf());
        check(dw.longest_line_octets() == ds.longest_line_octets());
        check(!dw.over_limit());
        if (o.line_ends == mailnet::output_line_ends::crlf) {
            check(dw.message_octets() == bw.size());
            check(dw.longest_line_octets() == longest_crlf_line(bw));
            check(bw.empty() || bw.ends_with("\r\n"));
        }
        if (o.bare == mailnet::bare_line_end_policy::keep && o.line_ends == mailnet::output_line_ends::crlf) {
            const bool added = !in.empty() && !in.ends_with("\r\n");
            check(bw == std::string(in) + (added ? "\r\n" : ""));
            const auto [bl, dl] = bdat(chunk, limit);
            check(dl.over_limit() == (in.size() > limit));
            check(bw.compare(0, bl.size(), bl) == 0);
            if (!dl.over_limit()) check(bl == bw);
        }
    }

    // TOP: a prefix of the whole message's lines, ending at a line end.
    const std::size_t top_lines = flags >> 3;
    const std::string top = encode_chunked(in, chunk, top_lines);
    check(top.size() <= wire.size() && top.ends_with(".\r\n"));
    const std::string_view top_body = std::string_view(top).substr(0, top.size() - 3);
    check(std::string_view(wire).starts_with(top_body));
    check(top_body.empty() || top_body.ends_with("\r\n"));
    return 0;
}
