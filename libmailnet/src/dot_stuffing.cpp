// dot_stuffing.cpp: streaming dot-stuffing and unstuffing of multiline data, wire sizes
// (RFC 5321 4.5.2, 4.1.1.4, 4.5.3.1.6; RFC 1939 3, 7; RFC 1870 3).
#include "mailnet/dot_stuffing.hpp"

#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace mailnet {

namespace {

// First CR or LF in [p, end), or end: two vectorised memchr passes instead of a byte loop,
// since a line is long compared with the one CR before its LF.
const char* find_cr_or_lf(const char* p, const char* end) noexcept {
    const void* lf = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
    const char* stop = lf ? static_cast<const char*>(lf) : end;
    const void* cr = std::memchr(p, '\r', static_cast<std::size_t>(stop - p));
    return cr ? static_cast<const char*>(cr) : stop;
}

// Copies [p, end) to w up to the first LF; returns the LF (or end) and advances w by the
// octets copied. One pass instead of memchr then memcpy: lines of mail are short, so the two
// calls per line cost more than the copying. The caller guarantees room for end - p octets
// at w: a block store may write past the LF it finds, but never past that room.
const char* copy_to_lf(const char* p, const char* const end, char*& w) noexcept {
#if defined(__SSE2__)
    const __m128i lf = _mm_set1_epi8('\n');
    const char* q = p;
    char* out = w;
    while (end - q >= 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out), v);
        if (const int m = _mm_movemask_epi8(_mm_cmpeq_epi8(v, lf)); m != 0) {
            const int at = __builtin_ctz(static_cast<unsigned>(m));
            w = out + at;
            return q + at;
        }
        q += 16;
        out += 16;
    }
    w = out;
    p = q;
#endif
    const void* hit = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
    const char* stop = hit ? static_cast<const char*>(hit) : end;
    const auto n = static_cast<std::size_t>(stop - p);
    std::memcpy(w, p, n);
    w += n;
    return stop;
}

}  // namespace

// ---- wire size ----

std::uint64_t wire_octets(std::string_view stored) noexcept {
    wire_size_counter c;
    c.add(stored);
    return c.octets();
}

void wire_size_counter::add(std::string_view stored) noexcept {
    if (stored.empty()) return;
    const char* p = stored.data();
    const char* const end = p + stored.size();
    octets_ += stored.size();
    while (const void* hit = std::memchr(p, '\n', static_cast<std::size_t>(end - p))) {
        const char* lf = static_cast<const char*>(hit);
        const bool cr_before = lf > p ? lf[-1] == '\r' : prev_cr_;
        if (!cr_before) ++octets_;  // this LF goes out as CRLF
        prev_cr_ = false;
        p = lf + 1;
        if (p == end) return;
    }
    prev_cr_ = end[-1] == '\r';
}

// ---- encoder ----

dot_encoder::dot_encoder(std::optional<std::size_t> top_body_lines) noexcept : top_(top_body_lines) {}

std::size_t dot_encoder::encode(std::string_view chunk, std::string& out) {
    // Slices bound the output's transient growth (twice the slice) whatever the chunk size.
    constexpr std::size_t slice = 64 * 1024;
    std::size_t used = 0;
    while (used < chunk.size() && !done()) {
        const std::string_view piece = chunk.substr(used, slice);
        const std::size_t base = out.size();
        out.resize(base + max_encoded(piece.size()));
        const auto [n, written] = encode_to(piece, out.data() + base);
        out.resize(base + written);
        used += n;
        if (n < piece.size()) break;
    }
    return used;
}

std::pair<std::size_t, std::size_t> dot_encoder::encode_to(std::string_view chunk, char* const dest) noexcept {
    if (done()) return {0, 0};
    const char* const begin = chunk.data();
    const char* p = begin;
    const char* const end = p + chunk.size();
    // Each input octet gives at most two ("\n" -> "\r\n", a leading '.' -> ".."): write
    // through a pointer, with no append per line.
    char* w = dest;
    while (p < end) {
        // RFC 5321 4.5.2, RFC 1939 3: a line that starts with '.' gets one more.
        if (at_line_start_) {
            if (*p == '.') *w++ = '.';
            at_line_start_ = false;
        }
        const char* const lf = copy_to_lf(p, end, w);
        const auto n = static_cast<std::size_t>(lf - p);
        if (lf == end) {
            prev_cr_ = end[-1] == '\r';
            wire_ += n;
            if (top_) line_octets_ += n;
            p = end;
            break;
        }
        const bool cr_before = n > 0 ? lf[-1] == '\r' : prev_cr_;
        if (!cr_before) *w++ = '\r';  // DESIGN "On disk": a LF not preceded by CR goes out as CRLF
        *w++ = '\n';
        wire_ += n + (cr_before ? 1 : 2);
        p = lf + 1;
        at_line_start_ = true;
        prev_cr_ = false;
        if (top_) {
            // RFC 1939 7: the header block ends with the first empty line; then count body lines.
            const std::size_t before_lf = line_octets_ + n;
            line_octets_ = 0;
            if (in_header_) {
                if (before_lf == 0 || (before_lf == 1 && cr_before)) in_header_ = false;
            } else {
                --*top_;
            }
            if (!in_header_ && *top_ == 0) {
                top_done_ = true;  // NOTE: the rest of the chunk is not consumed
                break;
            }
        }
    }
    return {static_cast<std::size_t>(p - begin), static_cast<std::size_t>(w - dest)};
}

void dot_encoder::finish(std::string& out) {
    char tail[finish_octets];
    out.append(tail, finish_to(tail));
}

std::size_t dot_encoder::finish_to(char* dest) noexcept {
    if (finished_) return 0;
    finished_ = true;
    std::size_t n = 0;
    // A bare CR at the very end stays data: the added CRLF follows it.
    if (!at_line_start_) {
        dest[n++] = '\r';
        dest[n++] = '\n';
    }
    dest[n++] = '.';
    dest[n++] = '\r';
    dest[n++] = '\n';
    return n;
}

// ---- decoder ----

void dot_decoder::emit(const char* p, std::size_t n, std::string& out) {
    line_octets_ += n;
    const std::uint64_t before = message_octets_;
    message_octets_ += n;
    const std::uint64_t max = options_.max_message_octets;
    if (message_octets_ <= max) {
        out.append(p, n);
    } else if (before < max) {
        out.append(p, static_cast<std::size_t>(max - before));  // the part that fits; then nothing
    }
}

void dot_decoder::line_end(bool real_crlf, std::string& out, bool added) {
    const std::size_t line = line_octets_ + 2;
    if (line > longest_line_) longest_line_ = line;
    line_octets_ = 0;
    // NOTE: a line end is written whole or not at all, so the cut output stays a prefix. One
    // the decoder adds goes with a message that fitted, whatever room is left.
    const std::uint64_t max = options_.max_message_octets;
    const bool fits = message_octets_ <= max && (added || max - message_octets_ >= 2);
    message_octets_ += 2;
    if (added) added_octets_ = 2;
    if (fits) {
        if (options_.line_ends == output_line_ends::crlf)
            out.append("\r\n", 2);
        else
            out.push_back('\n');
    }
    state_ = state::line_start;
    after_crlf_ = real_crlf;
}

void dot_decoder::bare_cr(std::string& out) {
    bare_cr_ = true;
    if (options_.bare == bare_line_end_policy::normalise) {
        line_end(false, out);
    } else {
        emit("\r", 1, out);
        state_ = state::text;
    }
}

void dot_decoder::bare_lf(std::string& out) {
    bare_lf_ = true;
    if (options_.bare == bare_line_end_policy::lf_line_end) {
        line_end(true, out);
    } else if (options_.bare == bare_line_end_policy::normalise) {
        line_end(false, out);
    } else {
        emit("\n", 1, out);
        state_ = state::text;
    }
}

std::size_t dot_decoder::decode(std::string_view in, std::string& out) {
    const char* const begin = in.data();
    const char* p = begin;
    const char* const end = p + in.size();
    while (p < end && state_ != state::done) {
        switch (state_) {
        case state::line_start:
            if (*p == '.' && options_.dot_stuffed) {
                ++p;
                state_ = state::dot;
            } else {
                state_ = state::text;
            }
            break;
        case state::dot:
            // RFC 5321 4.5.2, RFC 1939 3: a leading dot followed by more of the line is removed;
            // ".\r" may be the end of data. A bare LF ends the line only under normalise, and
            // then the line is a lone dot: data, never the end.
            if (*p == '\r') {
                ++p;
                state_ = state::dot_cr;
                break;
            }
            if (*p == '\n' && options_.bare == bare_line_end_policy::lf_line_end && after_crlf_) {
                ++p;  // "." LF after a line end: the end of data of a bare-LF server
                bare_lf_ = true;
                state_ = state::done;
                break;
            }
            if (*p == '\n' && options_.bare == bare_line_end_policy::normalise) emit(".", 1, out);
            state_ = state::text;
            break;
        case state::dot_cr:
            if (*p == '\n') {
                ++p;
                // RFC 5321 4.1.1.4: only CRLF "." CRLF ends the data; after a bare CR or LF
                // (normalise) this is a line holding one dot.
                if (after_crlf_) {
                    state_ = state::done;
                } else {
                    emit(".", 1, out);
                    line_end(true, out);
                }
            } else {
                // A bare CR: under normalise it ends a one-dot line, else the dot is stuffing.
                if (options_.bare == bare_line_end_policy::normalise) emit(".", 1, out);
                bare_cr(out);
            }
            break;
        case state::cr:
            if (*p == '\n') {
                ++p;
                line_end(true, out);
            } else {
                bare_cr(out);
            }
            break;
        case state::text: {
            const char* stop = find_cr_or_lf(p, end);
            if (stop != p) emit(p, static_cast<std::size_t>(stop - p), out);
            p = stop;
            if (p == end) break;
            ++p;
            if (p[-1] == '\r')
                state_ = state::cr;
            else
                bare_lf(out);
            break;
        }
        case state::done:
            break;
        }
    }
    const auto consumed = static_cast<std::size_t>(p - begin);
    consumed_octets_ += consumed;
    return consumed;
}

void dot_decoder::end_of_chunks(std::string& out) {
    if (state_ == state::done) return;
    if (state_ == state::cr) bare_cr(out);  // nothing follows the CR: it is no line end
    // The last line's own line end: counted in its length as the others' (RFC 5321 4.5.3.1.6),
    // but not against the size limit.
    if (line_octets_ > 0) line_end(true, out, true);
    state_ = state::done;
}

}  // namespace mailnet
