// dot_stuffing_test.cpp: dot-stuffing encoder and decoder (RFC 5321 4.5.2, 4.1.1.4; RFC 1939 3, 7):
// edge cases, every split offset, SMTP smuggling variants, limits, and random round trips.
#include "mailnet/dot_stuffing.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using mailnet::bare_line_end_policy;
using mailnet::dot_decoder;
using mailnet::dot_decoder_options;
using mailnet::dot_encoder;
using mailnet::output_line_ends;

constexpr bare_line_end_policy all_policies[] = {bare_line_end_policy::reject, bare_line_end_policy::normalise,
                                                 bare_line_end_policy::keep};

// ---- helpers ----

// Encodes `stored` in chunks of `chunk` octets; stops feeding when the encoder is done.
std::string encode(std::string_view stored, std::size_t chunk = 1 << 20,
                   std::optional<std::size_t> top = std::nullopt) {
    dot_encoder e(top);
    std::string out;
    while (!stored.empty() && !e.done()) {
        const auto piece = stored.substr(0, chunk);
        const std::size_t used = e.encode(piece, out);
        EXPECT_LE(used, piece.size());
        if (used < piece.size()) {
            EXPECT_TRUE(e.done());
        }
        stored.remove_prefix(piece.size());
    }
    e.finish(out);
    return out;
}

struct decoded {
    std::string out;
    std::size_t consumed = 0;
    bool finished = false;
};

// Decodes `wire` fed in chunks whose sizes come from `next_chunk`; checks that nothing is
// consumed after the end, and that a short count only happens at the end.
template <class ChunkFn>
decoded decode_with(dot_decoder& d, std::string_view wire, ChunkFn next_chunk) {
    decoded r;
    while (!wire.empty()) {
        const auto piece = wire.substr(0, next_chunk());
        const std::size_t used = d.decode(piece, r.out);
        EXPECT_LE(used, piece.size());
        r.consumed += used;
        if (used < piece.size()) {
            EXPECT_TRUE(d.finished());
            break;
        }
        wire.remove_prefix(piece.size());
    }
    r.finished = d.finished();
    if (r.finished) {
        const std::size_t before = r.out.size();
        EXPECT_EQ(d.decode("more\r\n.\r\n", r.out), 0u);
        EXPECT_EQ(r.out.size(), before);
    }
    EXPECT_EQ(d.consumed_octets(), r.consumed);
    return r;
}

decoded decode(std::string_view wire, dot_decoder_options o = {}, std::size_t chunk = 1 << 20) {
    dot_decoder d(o);
    return decode_with(d, wire, [chunk] { return chunk; });
}

dot_decoder_options opts(bare_line_end_policy p, output_line_ends e = output_line_ends::crlf) {
    dot_decoder_options o;
    o.bare = p;
    o.line_ends = e;
    return o;
}

// The stored message with each LF not preceded by CR made CRLF, and a CRLF added when it does
// not end with a line end: what decode(encode(x)) gives in CRLF mode.
std::string crlf_form(std::string_view x) {
    std::string r;
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (x[i] == '\n' && (i == 0 || x[i - 1] != '\r')) r += '\r';
        r += x[i];
    }
    if (!x.empty() && x.back() != '\n') r += "\r\n";
    return r;
}

// The stored message with CRLF made LF, and a LF added when it does not end with a line end.
std::string lf_form(std::string_view x) {
    std::string r;
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (x[i] == '\r' && i + 1 < x.size() && x[i + 1] == '\n') continue;
        r += x[i];
    }
    if (!x.empty() && x.back() != '\n') r += '\n';
    return r;
}

bool has_bare_cr(std::string_view x) {
    for (std::size_t i = 0; i < x.size(); ++i)
        if (x[i] == '\r' && (i + 1 == x.size() || x[i + 1] != '\n')) return true;
    return false;
}

// Reference encoder, line by line, independent of the streaming one.
std::string ref_encode(std::string_view x, std::optional<std::size_t> top) {
    std::vector<std::string_view> lines;
    for (std::size_t i = 0; i < x.size();) {
        const std::size_t j = x.find('\n', i);
        if (j == std::string_view::npos) {
            lines.push_back(x.substr(i));
            break;
        }
        lines.push_back(x.substr(i, j + 1 - i));
        i = j + 1;
    }
    std::string out;
    bool header = true;
    std::size_t body = 0;
    for (std::string_view l : lines) {
        if (top && !header && body == *top) break;
        if (top) {
            if (header)
                header = !(l == "\n" || l == "\r\n");
            else
                ++body;
        }
        if (l.front() == '.') out += '.';
        if (l.back() != '\n') {
            out.append(l);
            out += "\r\n";
        } else if (l.size() >= 2 && l[l.size() - 2] == '\r') {
            out.append(l);
        } else {
            out.append(l.substr(0, l.size() - 1));
            out += "\r\n";
        }
    }
    return out + ".\r\n";
}

struct ref_decoded {
    std::string out;
    std::size_t consumed = 0;
    bool finished = false;
    bool bare_cr = false;
    bool bare_lf = false;
    std::size_t longest = 0;
    std::uint64_t octets = 0;
};

// Reference decoder over the whole input with lookahead. Like the streaming decoder, it does not
// emit what the input ends too early to decide (a CR, a leading "." or ".\r").
ref_decoded ref_decode(std::string_view w, dot_decoder_options o) {
    ref_decoded r;
    std::string line;
    bool start = true;
    bool after_crlf = true;
    const bool normalise = o.bare == bare_line_end_policy::normalise;
    auto end_line = [&](bool real) {
        r.out += line;
        r.out += o.line_ends == output_line_ends::crlf ? "\r\n" : "\n";
        r.longest = std::max(r.longest, line.size() + 2);
        r.octets += line.size() + 2;
        line.clear();
        start = true;
        after_crlf = real;
    };
    auto bare = [&](char c) {
        (c == '\r' ? r.bare_cr : r.bare_lf) = true;
        if (normalise)
            end_line(false);
        else
            line += c;
    };
    const std::size_t n = w.size();
    std::size_t i = 0;
    while (i < n) {
        if (start) {
            start = false;
            if (w[i] == '.') {
                if (i + 1 == n) {
                    i = n;
                    break;
                }
                if (w[i + 1] == '\r') {
                    if (i + 2 == n) {
                        i = n;
                        break;
                    }
                    if (w[i + 2] == '\n') {
                        if (after_crlf) {
                            r.finished = true;
                            i += 3;
                            break;
                        }
                        line += '.';
                        i += 3;
                        end_line(true);
                        continue;
                    }
                }
                // The dot is data only when a normalised bare CR or LF ends the line right after it.
                if (normalise && (w[i + 1] == '\r' || w[i + 1] == '\n')) line += '.';
                ++i;
                continue;
            }
        }
        const char c = w[i];
        if (c == '\r') {
            if (i + 1 == n) {
                i = n;
                break;
            }
            if (w[i + 1] == '\n') {
                i += 2;
                end_line(true);
            } else {
                ++i;
                bare('\r');
            }
            continue;
        }
        ++i;
        if (c == '\n')
            bare('\n');
        else
            line += c;
    }
    r.out += line;
    r.octets += line.size();
    r.longest = std::max(r.longest, line.size());
    r.consumed = i;
    return r;
}

// Random octets biased toward what matters here: dots, CR, LF, CRLF, CRLF.CRLF.
std::string random_bytes(std::mt19937& rng, std::size_t max_tokens) {
    static constexpr std::string_view tokens[] = {".", ".", "\r", "\r", "\n", "\n", "\r\n", "\r\n", "a", "..",
                                                  "\r\n.\r\n", "xyz"};
    std::string s;
    const std::size_t count = rng() % (max_tokens + 1);
    for (std::size_t i = 0; i < count; ++i) {
        const std::size_t t = rng() % (std::size(tokens) + 1);
        if (t == std::size(tokens))
            s += static_cast<char>(rng() & 0xff);
        else
            s += tokens[t];
    }
    return s;
}

// ---- dot_encoder ----

TEST(dot_encoder, lf_becomes_crlf_and_leading_dots_double) {
    EXPECT_EQ(encode("Subject: x\n\n.\n..a\nb.c\n.\n"), "Subject: x\r\n\r\n..\r\n...a\r\nb.c\r\n..\r\n.\r\n");
}

TEST(dot_encoder, first_line_dot_is_doubled) {
    EXPECT_EQ(encode(".\n"), "..\r\n.\r\n");
    EXPECT_EQ(encode(".hidden"), "..hidden\r\n.\r\n");
}

TEST(dot_encoder, crlf_file_and_lf_file_give_the_same_wire_form) {
    const std::string lf = "From: a@b\nSubject: s\n\n.line\nbody\n.\n";
    const std::string crlf = "From: a@b\r\nSubject: s\r\n\r\n.line\r\nbody\r\n.\r\n";
    const std::string want = "From: a@b\r\nSubject: s\r\n\r\n..line\r\nbody\r\n..\r\n.\r\n";
    for (std::size_t chunk = 1; chunk <= crlf.size(); ++chunk) {
        EXPECT_EQ(encode(lf, chunk), want) << "chunk " << chunk;
        EXPECT_EQ(encode(crlf, chunk), want) << "chunk " << chunk;
    }
}

TEST(dot_encoder, cr_before_lf_is_seen_across_a_chunk_border) {
    const std::string stored = "a\r\n.b\r\n\r\nc\n";
    for (std::size_t cut = 0; cut <= stored.size(); ++cut) {
        dot_encoder e;
        std::string out;
        e.encode(std::string_view(stored).substr(0, cut), out);
        e.encode(std::string_view(stored).substr(cut), out);
        e.finish(out);
        EXPECT_EQ(out, "a\r\n..b\r\n\r\nc\r\n.\r\n") << "cut " << cut;
    }
}

TEST(dot_encoder, leading_dot_at_a_chunk_border_is_doubled) {
    const std::string stored = "x\n.\n..\n.y\n";
    for (std::size_t cut = 0; cut <= stored.size(); ++cut) {
        for (std::size_t cut2 = cut; cut2 <= stored.size(); ++cut2) {
            dot_encoder e;
            std::string out;
            e.encode(std::string_view(stored).substr(0, cut), out);
            e.encode(std::string_view(stored).substr(cut, cut2 - cut), out);
            e.encode(std::string_view(stored).substr(cut2), out);
            e.finish(out);
            EXPECT_EQ(out, "x\r\n..\r\n...\r\n..y\r\n.\r\n") << "cuts " << cut << ' ' << cut2;
        }
    }
}

TEST(dot_encoder, finish_adds_the_missing_line_end) {
    EXPECT_EQ(encode(""), ".\r\n");
    EXPECT_EQ(encode("abc"), "abc\r\n.\r\n");
    EXPECT_EQ(encode("abc\n"), "abc\r\n.\r\n");
    EXPECT_EQ(encode("abc\r\n"), "abc\r\n.\r\n");
    EXPECT_EQ(encode("\n"), "\r\n.\r\n");
    EXPECT_EQ(encode("."), "..\r\n.\r\n");
}

TEST(dot_encoder, bare_cr_stays_data) {
    // Only a LF ends a stored line; a CR not before LF is data (and a final one gets its CRLF).
    EXPECT_EQ(encode("a\rb\n\r.c\n"), "a\rb\r\n\r.c\r\n.\r\n");
    EXPECT_EQ(encode("a\r"), "a\r\r\n.\r\n");
    EXPECT_EQ(encode("\r\r\n"), "\r\r\n.\r\n");
}

TEST(dot_encoder, finish_is_once_and_done_after) {
    dot_encoder e;
    std::string out;
    EXPECT_FALSE(e.done());
    e.encode("a\n", out);
    e.finish(out);
    EXPECT_TRUE(e.done());
    e.finish(out);
    EXPECT_EQ(e.encode("more\n", out), 0u);
    EXPECT_EQ(out, "a\r\n.\r\n");
}

TEST(dot_encoder, appends_to_the_callers_buffer) {
    dot_encoder e;
    std::string out = "+OK 3 octets\r\n";
    e.encode("hi\n", out);
    e.finish(out);
    EXPECT_EQ(out, "+OK 3 octets\r\nhi\r\n.\r\n");
}

TEST(dot_encoder, no_stored_bytes_end_the_data_early) {
    // DESIGN "On disk": whatever is stored, the decoder reads the whole message back.
    for (std::string_view stored : {".\r\n", "\r\n.\r\n", "a\r\n.\r\nb", "\n.\n", ".\n.\n.", "\r.\r\n", "..\r\n"}) {
        const std::string wire = encode(stored);
        const decoded d = decode(wire, opts(bare_line_end_policy::keep));
        EXPECT_TRUE(d.finished);
        EXPECT_EQ(d.consumed, wire.size()) << testing::PrintToString(std::string(stored));
        EXPECT_EQ(d.out, crlf_form(stored));
    }
}

TEST(dot_encoder, top_zero_lines_sends_the_header_block_only) {
    const std::string msg = "From: a\nSubject: s\n\nbody 1\nbody 2\n";
    EXPECT_EQ(encode(msg, 1 << 20, 0), "From: a\r\nSubject: s\r\n\r\n.\r\n");
}

TEST(dot_encoder, top_counts_body_lines) {
    const std::string msg = "From: a\n\n.b1\nb2\nb3\n";
    EXPECT_EQ(encode(msg, 1 << 20, 1), "From: a\r\n\r\n..b1\r\n.\r\n");
    EXPECT_EQ(encode(msg, 1 << 20, 2), "From: a\r\n\r\n..b1\r\nb2\r\n.\r\n");
    EXPECT_EQ(encode(msg, 1 << 20, 3), "From: a\r\n\r\n..b1\r\nb2\r\nb3\r\n.\r\n");
    EXPECT_EQ(encode(msg, 1 << 20, 1000), "From: a\r\n\r\n..b1\r\nb2\r\nb3\r\n.\r\n");
}

TEST(dot_encoder, top_with_crlf_file_split_everywhere) {
    const std::string msg = "From: a\r\n\r\nb1\r\nb2\r\n";
    for (std::size_t chunk = 1; chunk <= msg.size(); ++chunk) {
        EXPECT_EQ(encode(msg, chunk, 0), "From: a\r\n\r\n.\r\n") << "chunk " << chunk;
        EXPECT_EQ(encode(msg, chunk, 1), "From: a\r\n\r\nb1\r\n.\r\n") << "chunk " << chunk;
    }
}

TEST(dot_encoder, top_of_a_message_without_body_or_without_empty_line) {
    EXPECT_EQ(encode("From: a\nSubject: s\n", 1 << 20, 0), "From: a\r\nSubject: s\r\n.\r\n");
    EXPECT_EQ(encode("From: a\nSubject: s", 1 << 20, 5), "From: a\r\nSubject: s\r\n.\r\n");
    EXPECT_EQ(encode("From: a\n\n", 1 << 20, 3), "From: a\r\n\r\n.\r\n");
    EXPECT_EQ(encode("", 1 << 20, 0), ".\r\n");
    EXPECT_EQ(encode("\nbody\n", 1 << 20, 0), "\r\n.\r\n");  // empty header block
}

TEST(dot_encoder, top_a_line_holding_only_cr_is_not_the_empty_line) {
    EXPECT_EQ(encode("A: 1\n\r\r\nB: 2\n\nbody\n", 1 << 20, 0), "A: 1\r\n\r\r\nB: 2\r\n\r\n.\r\n");
}

TEST(dot_encoder, top_stops_consuming_when_done) {
    dot_encoder e(1);
    std::string out;
    const std::string msg = "H: v\n\nline 1\nline 2\n";
    EXPECT_EQ(e.encode(msg, out), msg.find("line 2"));
    EXPECT_TRUE(e.done());
    EXPECT_EQ(e.encode("more\n", out), 0u);
    e.finish(out);
    EXPECT_EQ(out, "H: v\r\n\r\nline 1\r\n.\r\n");
}

TEST(dot_encoder, matches_a_line_by_line_reference_on_random_input) {
    std::mt19937 rng(19391);
    for (int n = 0; n < 3000; ++n) {
        const std::string x = random_bytes(rng, 30);
        std::optional<std::size_t> top;
        if (rng() % 2) top = rng() % 4;
        const std::size_t chunk = 1 + rng() % 8;
        ASSERT_EQ(encode(x, chunk, top), ref_encode(x, top))
            << testing::PrintToString(x) << " chunk " << chunk << " top " << (top ? int(*top) : -1);
    }
}

TEST(dot_encoder, counts_the_wire_size_it_encoded_as_wire_octets_does) {
    // A server checks RETR's wire size against LIST's with this count, split anywhere.
    std::mt19937 rng(1939);
    for (int n = 0; n < 3000; ++n) {
        const std::string x = random_bytes(rng, 30);
        const std::size_t chunk = 1 + rng() % 8;
        mailnet::dot_encoder e;
        std::string out;
        for (std::size_t i = 0; i < x.size(); i += chunk) e.encode(std::string_view(x).substr(i, chunk), out);
        ASSERT_EQ(e.wire_octets(), mailnet::wire_octets(x)) << testing::PrintToString(x) << " chunk " << chunk;
    }
}

// ---- dot_decoder ----

TEST(dot_decoder, ends_at_crlf_dot_crlf_and_unstuffs) {
    const decoded d = decode("Subject: x\r\n\r\n..a\r\n...\r\nb.\r\n.\r\n");
    EXPECT_TRUE(d.finished);
    EXPECT_EQ(d.out, "Subject: x\r\n\r\n.a\r\n..\r\nb.\r\n");
}

TEST(dot_decoder, a_leading_dot_before_other_text_is_removed) {
    // RFC 5321 4.5.2 and RFC 1939 3: not only "..": any leading dot followed by more of the line.
    EXPECT_EQ(decode(".x\r\n. \r\n...\r\n.\r\n").out, "x\r\n \r\n..\r\n");
}

TEST(dot_decoder, data_starting_with_the_final_dot_is_an_empty_message) {
    dot_decoder d;
    std::string out;
    EXPECT_EQ(d.decode(".\r\nQUIT\r\n", out), 3u);
    EXPECT_TRUE(d.finished());
    EXPECT_EQ(out, "");
    EXPECT_EQ(d.message_octets(), 0u);
}

TEST(dot_decoder, returns_what_follows_the_end) {
    const std::string wire = "hello\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n";
    dot_decoder d;
    std::string out;
    const std::size_t used = d.decode(wire, out);
    EXPECT_EQ(std::string_view(wire).substr(used), "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
    EXPECT_EQ(out, "hello\r\n");
    EXPECT_EQ(d.consumed_octets(), 10u);
}

TEST(dot_decoder, end_split_at_every_offset) {
    const std::string wire = "a\r\n..b\r\n..\r\n\r\n.\r\nNOOP\r\n";
    for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
        for (std::size_t cut2 = cut; cut2 <= wire.size(); ++cut2) {
            dot_decoder d;
            std::string out;
            std::size_t used = 0;
            const std::pair<std::size_t, std::size_t> parts[] = {{0, cut}, {cut, cut2}, {cut2, wire.size()}};
            for (auto [from, to] : parts) {
                const std::size_t got = d.decode(std::string_view(wire).substr(from, to - from), out);
                used += got;
                if (got < to - from) break;
            }
            EXPECT_TRUE(d.finished());
            EXPECT_EQ(used, wire.size() - 6) << "cuts " << cut << ' ' << cut2;
            EXPECT_EQ(out, "a\r\n.b\r\n.\r\n\r\n") << "cuts " << cut << ' ' << cut2;
        }
    }
}

TEST(dot_decoder, every_chunk_size) {
    const std::string wire = "..\r\n.x\r\n\r\n..\r\n.\r\nREST";
    for (std::size_t chunk = 1; chunk <= wire.size(); ++chunk) {
        const decoded d = decode(wire, {}, chunk);
        EXPECT_TRUE(d.finished);
        EXPECT_EQ(d.consumed, wire.size() - 4) << "chunk " << chunk;
        EXPECT_EQ(d.out, ".\r\nx\r\n\r\n.\r\n") << "chunk " << chunk;
    }
}

TEST(dot_decoder, smuggling_variants_do_not_end_the_data) {
    // DESIGN "Rules": only CRLF.CRLF ends; these are data whatever the policy.
    for (std::string_view smuggle :
         {"\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r", "\r.\r\n", "\n.\r", "\r\n.\r\r\n", "\r\n.\r.\r\n", "\r\n. \r\n"}) {
        for (auto p : all_policies) {
            const std::string wire = "a" + std::string(smuggle) + "MAIL FROM:<evil>\r\n";
            for (std::size_t chunk : {std::size_t{1}, std::size_t{2}, std::size_t{3}, wire.size()}) {
                const decoded d = decode(wire, opts(p), chunk);
                EXPECT_FALSE(d.finished) << testing::PrintToString(std::string(smuggle)) << " policy " << int(p);
                EXPECT_EQ(d.consumed, wire.size());
            }
            // The real end still works afterwards.
            const decoded d = decode(wire + ".\r\n", opts(p));
            EXPECT_TRUE(d.finished) << testing::PrintToString(std::string(smuggle)) << " policy " << int(p);
        }
    }
}

TEST(dot_decoder, reject_flags_bare_cr_and_bare_lf_and_reads_to_the_end) {
    struct case_ {
        std::string_view wire;
        bool cr, lf;
    };
    for (auto [w, cr, lf] : {case_{"a\nb\r\n.\r\n", false, true}, case_{"a\rb\r\n.\r\n", true, false},
                             case_{"a\r\r\n.\r\n", true, false}, case_{"\n.\n\r\n.\r\n", false, true},
                             case_{"\r\n.\r.\r\n.\r\n", true, false}}) {
        dot_decoder d;
        std::string out;
        EXPECT_EQ(d.decode(w, out), w.size());
        EXPECT_TRUE(d.finished());
        EXPECT_TRUE(d.rejected()) << testing::PrintToString(std::string(w));
        EXPECT_EQ(d.saw_bare_cr(), cr);
        EXPECT_EQ(d.saw_bare_lf(), lf);
    }
    dot_decoder d;
    std::string out;
    d.decode("ok\r\n.\r\n", out);
    EXPECT_FALSE(d.rejected());
}

TEST(dot_decoder, keep_passes_bare_octets_through_and_does_not_reject) {
    dot_decoder d(opts(bare_line_end_policy::keep));
    std::string out;
    d.decode("a\nb\rc\r\n..\n\r\n.\r\n", out);
    EXPECT_TRUE(d.finished());
    EXPECT_FALSE(d.rejected());
    EXPECT_TRUE(d.saw_bare_cr());
    EXPECT_TRUE(d.saw_bare_lf());
    EXPECT_EQ(out, "a\nb\rc\r\n.\n\r\n");
}

TEST(dot_decoder, normalise_makes_bare_octets_line_ends_but_never_the_end) {
    for (std::size_t chunk = 1; chunk <= 4; ++chunk) {
        const decoded d =
            decode("a\nb\rc\r\r\n\n.\r\n..x\n.\n\r\n.\r\n", opts(bare_line_end_policy::normalise), chunk);
        EXPECT_TRUE(d.finished);
        // "\n.\r\n" is a line holding one dot; ".." after a bare LF loses one dot as after CRLF;
        // ".\n" is a line holding one dot.
        EXPECT_EQ(d.out, "a\r\nb\r\nc\r\n\r\n\r\n.\r\n.x\r\n.\r\n\r\n") << "chunk " << chunk;
    }
    const decoded lf = decode("a\nb\rc\r\n.\r\n", opts(bare_line_end_policy::normalise, output_line_ends::lf));
    EXPECT_EQ(lf.out, "a\nb\nc\n");
}

TEST(dot_decoder, lf_line_end_reads_a_bare_lf_server_to_its_end) {
    for (std::size_t chunk = 1; chunk <= 5; ++chunk) {
        // A bare-LF server (MS Exchange quirk): LF is a line end, ".\n" the end, "..x" unstuffed;
        // a bare CR stays data; CRLF lines mix in; what follows the end is not consumed.
        const std::string wire = "a\nb\rc\r\n..x\n..\r\n\n.\nNEXT";
        dot_decoder d(opts(bare_line_end_policy::lf_line_end));
        std::string out;
        std::size_t used = 0;
        for (std::size_t at = 0; at < wire.size() && !d.finished(); at += chunk)
            used += d.decode(std::string_view(wire).substr(at, chunk), out);
        EXPECT_TRUE(d.finished()) << "chunk " << chunk;
        EXPECT_EQ(out, "a\r\nb\rc\r\n.x\r\n.\r\n\r\n") << "chunk " << chunk;
        EXPECT_EQ(used, wire.size() - 4) << "chunk " << chunk;
        EXPECT_FALSE(d.rejected());
    }
    const decoded crlf = decode("a\r\n.\r\n", opts(bare_line_end_policy::lf_line_end, output_line_ends::lf));
    EXPECT_TRUE(crlf.finished);
    EXPECT_EQ(crlf.out, "a\n");
}

TEST(dot_decoder, lf_output_for_storage) {
    dot_decoder d(opts(bare_line_end_policy::reject, output_line_ends::lf));
    std::string out;
    d.decode("Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\n", out);
    EXPECT_EQ(out, "Subject: x\n\n.dot\nbody\n");
    // RFC 1870 3 size: CRLF line ends, no stuffing dot, no final dot; the same as ,W= of the file.
    EXPECT_EQ(d.message_octets(), 26u);
    EXPECT_EQ(d.message_octets(), mailnet::wire_octets(out));
    EXPECT_EQ(d.consumed_octets(), 30u);
}

TEST(dot_decoder, longest_line_counts_crlf_not_the_stuffing_dot) {
    // RFC 5321 4.5.3.1.6: 1000 octets including CRLF, not counting the leading dot duplicated.
    const std::string ok(998, 'x');
    const std::string stuffed = "." + std::string(998, '.');
    for (std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{4096}}) {
        dot_decoder d;
        decode_with(d, "a\r\n" + ok + "\r\n" + stuffed + "\r\n.\r\n", [chunk] { return chunk; });
        EXPECT_EQ(d.longest_line_octets(), 1000u);
        dot_decoder d2;
        decode_with(d2, ok + "y\r\nb\r\n.\r\n", [chunk] { return chunk; });
        EXPECT_EQ(d2.longest_line_octets(), 1001u);
    }
    dot_decoder d;
    std::string out;
    d.decode("abcd", out);
    EXPECT_EQ(d.longest_line_octets(), 4u);  // an unfinished line counts what was decoded
}

TEST(dot_decoder, over_limit_stops_output_but_reads_to_the_final_dot) {
    dot_decoder_options o;
    o.max_message_octets = 10;
    for (std::size_t chunk : {std::size_t{1}, std::size_t{3}, std::size_t{1000}}) {
        dot_decoder d(o);
        const std::string big(5000, 'z');
        const std::string wire = "12345678\r\n" + big + "\r\n" + big + "\r\n.\r\nQUIT\r\n";
        const decoded r = decode_with(d, wire, [chunk] { return chunk; });
        EXPECT_TRUE(r.finished);
        EXPECT_EQ(r.consumed, wire.size() - 6);
        EXPECT_TRUE(d.over_limit());
        EXPECT_EQ(r.out, "12345678\r\n");
        EXPECT_EQ(d.message_octets(), 10u + 2 * 5002u);
    }
    // Exactly at the limit is not over it.
    dot_decoder d(o);
    std::string out;
    d.decode("12345678\r\n.\r\n", out);
    EXPECT_FALSE(d.over_limit());
    EXPECT_EQ(out, "12345678\r\n");
    // A line end never half written: the output stays a prefix of the whole message.
    o.max_message_octets = 9;
    dot_decoder d9(o);
    out.clear();
    d9.decode("12345678\r\n.\r\n", out);
    EXPECT_TRUE(d9.over_limit());
    EXPECT_EQ(out, "12345678");
}

// The encoder's contract byte by byte, for whole messages (no TOP).
std::string reference_encode(std::string_view stored) {
    std::string out;
    bool line_start = true;
    for (std::size_t i = 0; i < stored.size(); ++i) {
        const char c = stored[i];
        if (line_start && c == '.') out += '.';
        line_start = false;
        if (c == '\n') {
            if (i == 0 || stored[i - 1] != '\r') out += '\r';
            line_start = true;
        }
        out += c;
    }
    if (!line_start) out += "\r\n";
    return out + ".\r\n";
}

TEST(dot_encoder, matches_a_bytewise_reference_on_long_and_short_lines) {
    // Lines from 0 to 300 octets (the block-wise copy handles 16 at a time), LF or CRLF ends,
    // dots and CRs anywhere, encoded whole, in random chunks, and through encode_to.
    std::mt19937 rng(8314);
    for (int n = 0; n < 600; ++n) {
        std::string x;
        const std::size_t lines = rng() % 12;
        for (std::size_t l = 0; l < lines; ++l) {
            const std::size_t len = rng() % 4 == 0 ? rng() % 4 : rng() % 300;
            for (std::size_t i = 0; i < len; ++i) {
                const unsigned r = rng() % 40;
                x += r == 0 ? '.' : r == 1 ? '\r' : static_cast<char>('a' + r % 26);
            }
            if (rng() % 8 != 0) x += rng() % 3 == 0 ? "\r\n" : "\n";
        }
        const std::string want = reference_encode(x);
        ASSERT_EQ(encode(x), want) << testing::PrintToString(x);
        ASSERT_EQ(encode(x, 1 + rng() % 40), want) << testing::PrintToString(x);
        // encode_to with exactly max_encoded() of room: nothing is written past it.
        dot_encoder e;
        std::string got;
        std::size_t at = 0;
        while (at < x.size()) {
            const std::size_t piece = std::min<std::size_t>(x.size() - at, 1 + rng() % 100);
            std::vector<char> room(dot_encoder::max_encoded(piece) + 16, '#');
            const auto [used, written] = e.encode_to(std::string_view(x).substr(at, piece), room.data());
            ASSERT_EQ(used, piece);
            ASSERT_LE(written, dot_encoder::max_encoded(piece));
            for (std::size_t i = dot_encoder::max_encoded(piece); i < room.size(); ++i) ASSERT_EQ(room[i], '#');
            got.append(room.data(), written);
            at += piece;
        }
        char tail[dot_encoder::finish_octets];
        got.append(tail, e.finish_to(tail));
        ASSERT_EQ(got, want) << testing::PrintToString(x);
    }
}

TEST(dot_decoder, reset_starts_a_new_message) {
    dot_decoder d(opts(bare_line_end_policy::reject, output_line_ends::lf));
    std::string out;
    d.decode("a\nb\r\n.\r\n", out);
    EXPECT_TRUE(d.rejected());
    d.reset();
    EXPECT_FALSE(d.finished());
    EXPECT_FALSE(d.rejected());
    EXPECT_EQ(d.message_octets(), 0u);
    EXPECT_EQ(d.options().line_ends, output_line_ends::lf);
    out.clear();
    EXPECT_EQ(d.decode(".\r\n", out), 3u);
    EXPECT_TRUE(d.finished());
    EXPECT_EQ(out, "");
}

TEST(dot_decoder, matches_a_whole_input_reference_on_random_wire_octets) {
    std::mt19937 rng(4242);
    for (int n = 0; n < 4000; ++n) {
        const std::string w = random_bytes(rng, 24);
        dot_decoder_options o = opts(all_policies[rng() % 3], rng() % 2 ? output_line_ends::crlf : output_line_ends::lf);
        const ref_decoded want = ref_decode(w, o);
        const std::size_t max_chunk = 1 + rng() % 6;
        dot_decoder d(o);
        const decoded got = decode_with(d, w, [&] { return 1 + rng() % max_chunk; });
        const std::string ctx = testing::PrintToString(w) + " policy " + std::to_string(int(o.bare));
        ASSERT_EQ(got.out, want.out) << ctx;
        ASSERT_EQ(got.consumed, want.consumed) << ctx;
        ASSERT_EQ(got.finished, want.finished) << ctx;
        ASSERT_EQ(d.saw_bare_cr(), want.bare_cr) << ctx;
        ASSERT_EQ(d.saw_bare_lf(), want.bare_lf) << ctx;
        ASSERT_EQ(d.longest_line_octets(), want.longest) << ctx;
        ASSERT_EQ(d.message_octets(), want.octets) << ctx;

        // With a limit, the output is a prefix cut near the limit and the counts do not change.
        o.max_message_octets = rng() % 40;
        dot_decoder lim(o);
        const decoded cut = decode_with(lim, w, [&] { return 1 + rng() % max_chunk; });
        ASSERT_EQ(want.out.compare(0, cut.out.size(), cut.out), 0) << ctx;
        ASSERT_EQ(cut.consumed, want.consumed) << ctx;
        ASSERT_EQ(lim.message_octets(), want.octets) << ctx;
        ASSERT_EQ(lim.over_limit(), want.octets > o.max_message_octets) << ctx;
        if (!lim.over_limit()) {
            ASSERT_EQ(cut.out, want.out) << ctx;
        }
    }
}

// ---- BDAT chunks (RFC 3030): no dot-stuffing, the end is said by the command ----

dot_decoder_options chunk_opts(bare_line_end_policy p) {
    dot_decoder_options o = opts(p, output_line_ends::lf);
    o.dot_stuffed = false;
    return o;
}

TEST(bdat_decoding, dots_are_data_and_only_end_of_chunks_ends_the_message) {
    const std::string wire = "Subject: x\r\n\r\n.\r\n..two\r\n.\r\nlast";
    for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
        dot_decoder d(chunk_opts(bare_line_end_policy::reject));
        std::string out;
        EXPECT_EQ(d.decode(std::string_view(wire).substr(0, cut), out), cut);
        EXPECT_EQ(d.decode(std::string_view(wire).substr(cut), out), wire.size() - cut);
        EXPECT_FALSE(d.finished()) << "a '.' line does not end BDAT data";
        d.end_of_chunks(out);
        EXPECT_TRUE(d.finished());
        EXPECT_EQ(out, "Subject: x\n\n.\n..two\n.\nlast\n") << "cut at " << cut;  // the last line's end added
        EXPECT_FALSE(d.rejected());
        EXPECT_EQ(d.message_octets(), wire.size() + 2);
        EXPECT_EQ(d.longest_line_octets(), 12u);
    }
}

TEST(bdat_decoding, bare_line_ends_follow_the_policy_and_a_final_cr_is_bare) {
    {
        dot_decoder d(chunk_opts(bare_line_end_policy::reject));
        std::string out;
        d.decode("a\nb\r\n", out);
        d.end_of_chunks(out);
        EXPECT_TRUE(d.rejected());
        EXPECT_TRUE(d.saw_bare_lf());
    }
    {
        dot_decoder d(chunk_opts(bare_line_end_policy::reject));
        std::string out;
        d.decode("a\r\nb\r", out);  // the CR might have been half of a CRLF in the next chunk
        EXPECT_FALSE(d.saw_bare_cr());
        d.end_of_chunks(out);  // it was not
        EXPECT_TRUE(d.saw_bare_cr());
        EXPECT_TRUE(d.rejected());
    }
    {
        dot_decoder d(chunk_opts(bare_line_end_policy::normalise));
        std::string out;
        d.decode("a\rb\nc\r", out);
        d.end_of_chunks(out);
        EXPECT_EQ(out, "a\nb\nc\n");
        EXPECT_FALSE(d.rejected());
    }
}

TEST(bdat_decoding, a_last_line_without_crlf_counts_the_crlf_it_gets) {
    // RFC 5321 4.5.3.1.6: 998 octets and CRLF at most; 999 without one becomes 1001 with it.
    for (const std::size_t n : {998u, 999u}) {
        dot_decoder d(chunk_opts(bare_line_end_policy::reject));
        std::string out;
        d.decode(std::string(n, 'x'), out);
        d.end_of_chunks(out);
        EXPECT_EQ(d.longest_line_octets(), n + 2);
        EXPECT_EQ(d.message_octets(), n + 2);
        EXPECT_EQ(out, std::string(n, 'x') + "\n");
    }
}

// BDAT decoding (reject bare line ends) with a size limit of 10 octets.
dot_decoder_options ten_octets() {
    dot_decoder_options o = chunk_opts(bare_line_end_policy::reject);
    o.max_message_octets = 10;
    return o;
}

// RFC 1870 counts the octets the client sent: a last line without CRLF that fits the limit
// still fits with the line end the decoder adds (stored whole), one octet more does not.
TEST(bdat_decoding, the_line_end_added_to_a_last_line_never_passes_the_size_limit) {
    for (const std::size_t n : {9u, 10u, 11u}) {
        dot_decoder d(ten_octets());
        std::string out;
        d.decode(std::string(n, 'x'), out);
        d.end_of_chunks(out);
        EXPECT_EQ(d.over_limit(), n > 10) << n;
        EXPECT_EQ(d.message_octets(), n + 2) << n;
        EXPECT_EQ(out, n > 10 ? std::string(10, 'x') : std::string(n, 'x') + "\n") << n;
    }
    // A last line after others: the same.
    dot_decoder d(ten_octets());
    std::string out;
    d.decode("abc\r\nxxxxx", out);
    d.end_of_chunks(out);
    EXPECT_FALSE(d.over_limit());
    EXPECT_EQ(out, "abc\nxxxxx\n");
}

TEST(bdat_decoding, the_size_limit_cuts_the_output_and_counts_on) {
    dot_decoder d(ten_octets());
    std::string out;
    d.decode("0123456789\r\nmore\r\n", out);
    d.end_of_chunks(out);
    EXPECT_TRUE(d.over_limit());
    EXPECT_EQ(out, "0123456789");
    EXPECT_EQ(d.message_octets(), 18u);
}

// ---- both, and wire sizes ----

TEST(dot_stuffing, round_trip_crlf_output_on_random_messages) {
    std::mt19937 rng(1939);
    for (int n = 0; n < 2000; ++n) {
        const std::string x = random_bytes(rng, 30);
        const std::string wire = encode(x, 1 + rng() % 9);
        for (auto p : {bare_line_end_policy::reject, bare_line_end_policy::keep}) {
            dot_decoder d(opts(p));
            const decoded got = decode_with(d, wire, [&] { return 1 + rng() % 9; });
            ASSERT_TRUE(got.finished) << testing::PrintToString(x);
            ASSERT_EQ(got.consumed, wire.size()) << testing::PrintToString(x);
            ASSERT_EQ(got.out, crlf_form(x)) << testing::PrintToString(x);
            ASSERT_EQ(d.saw_bare_cr(), has_bare_cr(x)) << testing::PrintToString(x);
            ASSERT_FALSE(d.saw_bare_lf()) << testing::PrintToString(x);
            ASSERT_EQ(d.message_octets(), got.out.size());
        }
    }
}

TEST(dot_stuffing, round_trip_lf_output_on_random_messages) {
    std::mt19937 rng(5321);
    for (int n = 0; n < 2000; ++n) {
        const std::string x = random_bytes(rng, 30);
        const std::string wire = encode(x, 1 + rng() % 9);
        dot_decoder d(opts(bare_line_end_policy::keep, output_line_ends::lf));
        std::string got;
        ASSERT_EQ(d.decode(wire, got), wire.size());
        ASSERT_EQ(got, lf_form(x)) << testing::PrintToString(x);
        // Storing what arrived and sending it again gives the same wire form, when no bare CR.
        if (!has_bare_cr(x)) {
            ASSERT_EQ(encode(got), wire) << testing::PrintToString(x);
            ASSERT_EQ(mailnet::wire_octets(got), d.message_octets());
        }
    }
}

TEST(dot_stuffing, decode_after_normalise_reencodes_to_the_same_wire) {
    // What smtpd stores under normalise is sent back by pop3d as the CRLF form it accepted.
    std::mt19937 rng(2920);
    for (int n = 0; n < 2000; ++n) {
        std::string w = random_bytes(rng, 24) + "\r\n.\r\n";
        dot_decoder d(opts(bare_line_end_policy::normalise, output_line_ends::lf));
        std::string stored;
        d.decode(w, stored);
        ASSERT_TRUE(d.finished());
        const std::string wire = encode(stored);
        dot_decoder again(opts(bare_line_end_policy::reject, output_line_ends::lf));
        std::string stored2;
        ASSERT_EQ(again.decode(wire, stored2), wire.size());
        ASSERT_FALSE(again.rejected());
        ASSERT_EQ(stored2, stored) << testing::PrintToString(w);
        ASSERT_EQ(again.message_octets(), d.message_octets()) << testing::PrintToString(w);
    }
}

TEST(dot_stuffing, a_large_message_round_trips_in_socket_sized_chunks) {
    std::string x;
    std::mt19937 rng(35);
    while (x.size() < (1u << 20)) {
        x += (rng() % 10 == 0) ? "." : "";
        x += std::string(rng() % 120, 'm');
        x += '\n';
    }
    const std::string wire = encode(x, 65536);
    EXPECT_EQ(wire, ref_encode(x, std::nullopt));
    EXPECT_EQ(encode(x), wire);  // one chunk of 1 MiB
    EXPECT_EQ(encode(x, 100000, 9000), ref_encode(x, 9000));
    dot_encoder top(9000);
    std::string top_out;
    const std::size_t used = top.encode(x, top_out);
    EXPECT_TRUE(top.done());
    top.finish(top_out);
    EXPECT_EQ(top_out, ref_encode(x, 9000));
    EXPECT_EQ(top_out.size(), ref_encode(x.substr(0, used), std::nullopt).size());
    dot_decoder d(opts(bare_line_end_policy::reject, output_line_ends::lf));
    const decoded got = decode_with(d, wire, [] { return 16384; });
    EXPECT_TRUE(got.finished);
    EXPECT_EQ(got.out, x);
    EXPECT_EQ(d.message_octets(), mailnet::wire_octets(x));
}

TEST(dot_stuffing, wire_octets_counts_lone_lf_twice) {
    EXPECT_EQ(mailnet::wire_octets(""), 0u);
    EXPECT_EQ(mailnet::wire_octets("a\n"), 3u);
    EXPECT_EQ(mailnet::wire_octets("a\r\n"), 3u);
    EXPECT_EQ(mailnet::wire_octets("\n\n"), 4u);
    EXPECT_EQ(mailnet::wire_octets("a\rb"), 3u);
    EXPECT_EQ(mailnet::wire_octets("abc"), 3u);  // no line end is added
    EXPECT_EQ(mailnet::wire_octets("\r\r\n\n"), 5u);
}

TEST(dot_stuffing, wire_size_counter_split_at_every_offset) {
    const std::string x = "a\r\n\n\r\r\nb\n\r";
    const std::uint64_t whole = mailnet::wire_octets(x);
    EXPECT_EQ(whole, 12u);
    for (std::size_t cut = 0; cut <= x.size(); ++cut) {
        for (std::size_t cut2 = cut; cut2 <= x.size(); ++cut2) {
            mailnet::wire_size_counter c;
            c.add(std::string_view(x).substr(0, cut));
            c.add(std::string_view(x).substr(cut, cut2 - cut));
            c.add(std::string_view(x).substr(cut2));
            EXPECT_EQ(c.octets(), whole) << "cuts " << cut << ' ' << cut2;
        }
    }
}

TEST(dot_stuffing, wire_octets_is_the_encoded_size_without_stuffing) {
    std::mt19937 rng(1870);
    for (int n = 0; n < 2000; ++n) {
        const std::string x = random_bytes(rng, 30);
        ASSERT_EQ(mailnet::wire_octets(x) + ((!x.empty() && x.back() != '\n') ? 2 : 0), crlf_form(x).size())
            << testing::PrintToString(x);
    }
}

}  // namespace
