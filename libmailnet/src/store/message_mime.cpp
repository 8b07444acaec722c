// message_mime.cpp: message::mime(), the message parsed by mimetic (RFC 2045, RFC 5322) after
// a linear pre-scan that bounds what mimetic is given. Apart from message.cpp, so that only
// programs that parse MIME link libmimetic.
#include "mailnet/store/message.hpp"

#include <mimetic/mimetic.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <deque>
#include <istream>
#include <optional>
#include <streambuf>
#include <string_view>
#include <utility>

namespace mailnet {
namespace {

bool iequal_prefix(std::string_view text, std::string_view lower_word) {
    if (text.size() < lower_word.size()) return false;
    for (std::size_t i = 0; i < lower_word.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(text[i])) != lower_word[i]) return false;
    return true;
}

bool is_address_field(const std::string& name) {
    static constexpr std::string_view names[] = {"from", "sender", "reply-to", "to", "cc", "bcc",
                                                 "resent-from", "resent-sender", "resent-reply-to",
                                                 "resent-to", "resent-cc", "resent-bcc"};
    for (auto n : names)
        if (name.size() == n.size() && iequal_prefix(name, n)) return true;
    return false;
}

// NOTE: mimetic 0.9.8's Group::set throws on a group without ';' ("To: undisclosed-recipients:")
// after freeing the field's parsed value, so the entity later crashes in its destructor. Each
// address field is test-parsed on a copy; one that throws is emptied (its raw text is lost to
// mime() users only; read() and headers() still give the stored bytes).
void neutralise_bad_address_fields(mimetic::MimeEntity& e, int depth = 0) {
    for (auto& field : e.header()) {
        if (!is_address_field(field.name())) continue;
        try {
            mimetic::AddressList probe(field.value());
            for (const auto& a : probe) (void)a.isGroup();
        } catch (...) {
            field.value("");
        }
    }
    if (depth < 64)
        for (auto* part : e.body().parts()) neutralise_bad_address_fields(*part, depth + 1);
}

}  // namespace

namespace {

// An istream buffer over a message_source that yields at most `limit` octets, so mimetic
// reads the stream without the whole message ever being copied into one string first.
class source_streambuf final : public std::streambuf {
public:
    source_streambuf(message_source& source, std::uint64_t limit) : source_(source), remaining_(limit) {}

    std::error_code error() const noexcept { return error_; }
    /// True when all `limit` octets were handed out (more may follow in the source).
    bool limit_reached() const noexcept { return remaining_ == 0; }

protected:
    int_type underflow() override {
        if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
        if (remaining_ == 0 || error_) return traits_type::eof();
        const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf_.size(), remaining_));
        auto n = source_.read(std::span<char>(buf_.data(), want));
        if (!n) {
            error_ = n.error();
            return traits_type::eof();
        }
        if (*n == 0) return traits_type::eof();
        remaining_ -= *n;
        setg(buf_.data(), buf_.data(), buf_.data() + *n);
        return traits_type::to_int_type(buf_[0]);
    }

private:
    message_source& source_;
    std::uint64_t remaining_;
    std::error_code error_;
    std::array<char, 16 * 1024> buf_{};
};

// A linear pass over the octets that follows mimetic 0.9.8's input-iterator parser
// (mimetic/parser/itparser.h: loadHeader, loadBody, loadMultipart, copy_until_boundary) step by
// step, without building anything, and counts what mimetic would build: header fields and the
// octets its name and value buffers grow to (they grow 128 octets at a time with a full copy, so
// a field's cost is quadratic in its length), entities and their nesting (one recursion each).
// Content-Type values are read with mimetic's own ContentType, as its getType() and
// getBoundary() do, so the nesting found is the one mimetic recurses into. fuzz/mime_fuzz.cpp
// checks the scan against the tree mimetic builds.
class mime_prescan {
public:
    mime_prescan(std::streambuf& in, const mime_limits& limits) : in_(in), limits_(limits) {}

    /// True if mimetic may parse the octets within the limits.
    bool run() {
        if (entities_ > limits_.max_entities) return false;  // the message itself is one
        entity();
        return !over_;
    }

private:
    enum { cr = 0x0D, lf = 0x0A };
    enum class boundary_kind { none, boundary, closing, higher_level };

    static bool is_nl(char c) { return c == cr || c == lf; }
    static bool is_blank(char c) { return c == ' ' || c == '\t'; }
    static char other_nl(char c) { return c == cr ? lf : cr; }

    // A crossed limit ends the input, so every loop below stops as mimetic's would at the end.
    bool at_end() { return over_ || in_.sgetc() == std::char_traits<char>::eof(); }
    char cur() { return std::char_traits<char>::to_char_type(in_.sgetc()); }
    void next() { in_.sbumpc(); }
    void over() { over_ = true; }

    // MimeEntity: the header, then the body by its Content-Type (doLoad).
    void entity() {
        std::optional<std::string> content_type;
        header(content_type);
        mimetic::ContentType ct;
        if (content_type && !over_) {
            try {
                ct = mimetic::ContentType(*content_type);
            } catch (...) {
                over();  // NOTE: mimetic would throw the same while parsing: refused here instead
                return;
            }
        }
        if (ct.isMultipart()) {
            multipart("--" + ct.param("boundary"));
        } else if (ct.type() == "message" && ct.subtype() == "rfc822") {
            child();
        } else {
            copy_until_boundary();
        }
    }

    // pushNewChild(); doLoad(); popChild()
    void child() {
        if (++entities_ > limits_.max_entities || depth_ + 1 > limits_.max_depth) return over();
        ++depth_;
        entity();
        --depth_;
    }

    // loadMultipart()
    void multipart(std::string boundary) {
        boundaries_.push_front(std::move(boundary));
        copy_until_boundary();
        while (!at_end()) {
            switch (last_) {
            case boundary_kind::none:
                return;
            case boundary_kind::boundary:
                child();
                break;
            case boundary_kind::closing:
                boundaries_.pop_front();
                copy_until_boundary();
                return;
            case boundary_kind::higher_level:
                boundaries_.pop_front();
                return;
            }
        }
    }

    // isBoundary(): the innermost boundary first; a line starting with an outer one ends it.
    boundary_kind is_boundary(std::string_view line) {
        if (line.empty() || line[0] != '-') return last_ = boundary_kind::none;
        std::size_t level = 0;
        for (const auto& b : boundaries_) {
            if (line.substr(0, b.size()) == b) {
                if (level > 0) return last_ = boundary_kind::higher_level;
                if (line.size() > b.size() && line.substr(b.size(), 2) == "--") return last_ = boundary_kind::closing;
                return last_ = boundary_kind::boundary;
            }
            ++level;
        }
        return last_ = boundary_kind::none;
    }

    // copy_until_boundary(): lines are collected in a 4096-octet block; a line that does not fit
    // is flushed in pieces, and each piece is tested as if a line started there, as mimetic does.
    void copy_until_boundary() {
        constexpr std::size_t blksz = 4096, nlsz = 1;
        std::size_t pos = 0, blkpos = 0, sl_off = 0;
        while (!at_end()) {
            if (blkpos >= blksz - 2 - nlsz) {
                if (sl_off == 0) {
                    blkpos = 0;
                } else {
                    const std::size_t llen = blkpos - sl_off;
                    std::memmove(block_.data(), block_.data() + sl_off, llen);
                    sl_off = 0;
                    blkpos = llen;
                }
            }
            const char c = cur();
            if (is_nl(c)) {
                char nl2 = 0;
                next();
                if (!at_end() && cur() == other_nl(c)) {
                    nl2 = cur();
                    next();
                }
                if (pos) {
                    block_[blkpos] = 0;
                    if (block_[sl_off] == '-' && sl_off < blkpos && block_[sl_off + 1] == '-' &&
                        is_boundary(std::string_view(block_.data() + sl_off, blkpos - sl_off)) != boundary_kind::none)
                        return;
                }
                block_[blkpos++] = c;
                if (nl2) block_[blkpos++] = nl2;
                sl_off = blkpos;
                pos = 0;
            } else {
                ++pos;
                block_[blkpos++] = c;
                next();
            }
        }
    }

    // A field as loadHeader() adds it: the value is passed as a C string (cut at a NUL).
    void add_field(const std::string& name, const std::string& value, std::optional<std::string>& content_type) {
        if (++fields_ > limits_.max_fields) return over();
        const std::string_view v(value.c_str());
        if (!content_type && name.size() == 12 && iequal_prefix(name, "content-type")) content_type = std::string(v);
        if (is_address_field(name)) {
            address_items_ += 1 + static_cast<std::size_t>(std::count(v.begin(), v.end(), ','));
            if (address_items_ > limits_.max_address_items) return over();
        }
    }

    // loadHeader(), state for state.
    void header(std::optional<std::string>& content_type) {
        enum { s_init, s_ignore_line, s_newline, s_waiting_name, s_waiting_value, s_waiting_folded_value, s_name,
               s_value } status = s_init;
        long pos = 0;
        std::string name, value;
        auto grown = [&] {
            if (name.size() + value.size() > limits_.max_field_octets) over();
        };
        while (!at_end()) {
            char c = cur();
            switch (status) {
            case s_init:
                status = is_nl(c) ? s_newline : s_name;
                continue;
            case s_ignore_line:
                if (!is_nl(c)) break;
                status = s_newline;
                continue;
            case s_newline: {
                status = s_waiting_name;
                const char prev = c;
                next();
                if (count_header_octet(); at_end()) return;
                c = cur();
                if (pos > 0) {
                    pos = 0;
                    if (c == other_nl(prev)) {
                        --pos;
                        break;
                    }
                    continue;
                }
                if (c == other_nl(prev)) {
                    next();
                    count_header_octet();
                }
                return;  // an empty line ends the header
            }
            case s_waiting_name:
                if (is_blank(c)) {
                    status = s_waiting_folded_value;
                    continue;
                }
                if (!name.empty()) {
                    add_field(name, value, content_type);
                    name.clear();
                    value.clear();
                }
                status = is_nl(c) ? s_newline : s_name;
                continue;
            case s_waiting_value:
                if (is_blank(c)) break;
                status = s_value;
                continue;
            case s_waiting_folded_value:
                if (is_blank(c)) break;
                value += ' ';
                grown();
                status = s_value;
                continue;
            case s_name:
                if (c > 32 && c < 127 && c != ':') {
                    if (!name.empty() && is_blank(name.back())) return;  // "NAME BLANK+ c": the body starts
                    name += c;
                    grown();
                } else if (c == ':') {
                    if (name.empty()) {
                        status = s_ignore_line;
                        continue;
                    }
                    while (!name.empty() && is_blank(name.back())) name.pop_back();
                    status = s_waiting_value;
                } else if (is_blank(c)) {
                    name += c;
                    grown();
                } else {
                    return;  // no field here: the body starts
                }
                break;
            case s_value:
                if (is_nl(c)) {
                    status = s_newline;
                    continue;
                }
                value += c;
                grown();
                break;
            }
            next();
            count_header_octet();
            ++pos;
        }
    }

    void count_header_octet() {
        if (++header_octets_ > limits_.max_header_octets) over();
    }

    std::streambuf& in_;
    const mime_limits& limits_;
    bool over_ = false;
    boundary_kind last_ = boundary_kind::none;
    std::deque<std::string> boundaries_;
    std::size_t depth_ = 0, entities_ = 1, fields_ = 0, address_items_ = 0;
    std::uint64_t header_octets_ = 0;
    std::array<char, 4096> block_{};
};
}  // namespace

result<const mimetic::MimeEntity*> message::mime(const mime_limits& limits) {
    if (mime_) return mime_.get();
    const std::uint64_t max_octets = limits.max_octets;
    if (stored_octets_ > max_octets) return unexpected(errc::too_large);
    if (auto r = rewind(); !r) return unexpected(r.error());
    {
        // First the linear pre-scan: mimetic sees only what it parses within the limits.
        source_streambuf scan_sb(*source_, max_octets);
        bool within = false;
        try {
            within = mime_prescan(scan_sb, limits).run();
        } catch (const std::bad_alloc&) {
            within = false;
        }
        if (scan_sb.error()) {
            (void)rewind();
            return unexpected(scan_sb.error());
        }
        if (!within) {
            (void)rewind();
            return unexpected(errc::too_large);
        }
        if (auto r = rewind(); !r) return unexpected(r.error());
    }
    source_streambuf sb(*source_, max_octets);
    std::istream in(&sb);
    std::unique_ptr<mimetic::MimeEntity> entity;
    try {
        entity = std::make_unique<mimetic::MimeEntity>(in);
    } catch (const std::bad_alloc&) {
        (void)rewind();
        return unexpected(errc::too_large);
    } catch (...) {
        // NOTE: mimetic is not documented to throw on bad input; should it, the message is
        // reported as malformed rather than letting an exception cross the store's callers.
        (void)rewind();
        return unexpected(errc::bad_input);
    }
    if (sb.error()) {
        (void)rewind();
        return unexpected(sb.error());
    }
    if (sb.limit_reached()) {
        // The size stored may be stale (a file grown since): anything past the limit is too much.
        char extra = 0;
        auto more = source_->read(std::span<char>(&extra, 1));
        if (!more) {
            (void)rewind();
            return unexpected(more.error());
        }
        if (*more != 0) {
            (void)rewind();
            return unexpected(errc::too_large);
        }
    }
    if (auto r = rewind(); !r) return unexpected(r.error());
    neutralise_bad_address_fields(*entity);
    mime_ = std::move(entity);
    return mime_.get();
}

}  // namespace mailnet
