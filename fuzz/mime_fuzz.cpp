// mime_fuzz.cpp: untrusted bytes through the message handle's header and MIME path: headers()
// (RFC 5322 2.1) and mime(), i.e. mime()'s pre-scan (checked against the tree mimetic builds,
// with small mime_limits), mimetic's RFC 5322 / RFC 2045-2046 parser, field values and the
// libmailnet's base64 / quoted-printable decoders (RFC 2045 6.7, 6.8), with the tree walked.
#include <algorithm>
#include <cstddef>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <string_view>

#include <mimetic/mimetic.h>

#include "mailnet/store/message.hpp"
#include "mailnet/transfer_encoding.hpp"

namespace {

// NOTE: a macro for the line (clang-14's libstdc++ 12 has no std::source_location).
void check_at(bool ok, int line) {
    if (ok) return;
    std::fprintf(stderr, "mime_fuzz: check failed at line %d\n", line);
    std::abort();
}
#define check(ok) check_at((ok), __LINE__)

// NOTE: libmimetic.so is not instrumented, so libFuzzer sees no coverage of what message::mime()
// runs inside it. This iterator is a distinct type with istreambuf_iterator's exact semantics
// (copies share the stream, post-increment caches the octet): parsing through it instantiates
// mimetic's input-iterator parser, the one its istream constructor runs, in this translation
// unit, where it is instrumented and guides the fuzzer.
struct stream_iterator {
    using iterator_category = std::input_iterator_tag;
    using value_type = char;
    using difference_type = std::ptrdiff_t;
    using pointer = const char*;
    using reference = char;

    std::istreambuf_iterator<char> it;

    char operator*() const { return *it; }
    stream_iterator& operator++() {
        ++it;
        return *this;
    }
    stream_iterator operator++(int) { return stream_iterator{it++}; }
    bool operator==(const stream_iterator& o) const { return it.equal(o.it); }
};

constexpr int max_depth = 32;  // the walk's own bound; the parse has none of its own

// Decodes a leaf body by its Content-Transfer-Encoding, as a consumer of mime() should: with
// libmailnet's decoders (mimetic's own are wrong on some input: docs/libmailnet.md).
std::size_t decoded_size(const mimetic::MimeEntity& e) {
    const auto& cte = e.header().contentTransferEncoding().mechanism();
    const std::string_view mechanism(cte.data(), cte.size());
    const std::string& body = e.body();
    const std::string out = mailnet::transfer_decode(body, mechanism);
    check(mailnet::transfer_decoded_size(body, mechanism) == out.size());
    check(out.size() <= body.size());
    return out.size();
}

// Touches every header field and the typed values mimetic parses lazily, then the parts;
// returns a summary so that two parses of the same octets can be compared.
bool is_address(const std::string& name) {
    std::string n;
    for (char c : name) n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (n.starts_with("resent-")) n = n.substr(7);
    return n == "from" || n == "sender" || n == "reply-to" || n == "to" || n == "cc" || n == "bcc";
}

// With `addresses`, also parses the address fields (only safe on an entity from
// message::mime(), which neutralises fields mimetic would crash on).
void walk(const mimetic::MimeEntity& e, int depth, std::string& summary, bool addresses) {
    if (depth > max_depth) return;
    const auto& h = e.header();
    for (const auto& f : h) {
        summary += f.name();
        summary += ':';
        // message::mime() may have emptied an address field mimetic cannot parse.
        if (addresses || !is_address(f.name())) summary += f.value();
        summary += '\n';
    }
    // Typed values are parsed on first access, by const accessors that replace the field's
    // value (mimetic's Rfc822Header::getField). A careful consumer catches what they throw.
    try {
        const auto& ct = h.contentType();
        summary += "ct ";
        summary += ct.type();
        summary += '/';
        summary += ct.subtype();
        for (const auto& p : ct.paramList()) {
            summary += ';';
            summary += p.name();
            summary += '=';
            summary += p.value();
        }
        summary += " boundary=" + ct.param("boundary");
        summary += " cte=" + std::string(h.contentTransferEncoding().mechanism());
        summary += " disp=" + std::string(h.contentDisposition().type());
        for (const auto& p : h.contentDisposition().paramList())
            summary += ";" + std::string(p.name()) + "=" + p.value();
        summary += " subject=" + h.subject();
        summary += " mid=" + h.messageid().str();
        summary += " mv=" + h.mimeVersion().str();
        if (addresses) {
            summary += " from=" + std::to_string(h.from().size());
            summary += " to=" + std::to_string(h.to().size()) + " cc=" + std::to_string(h.cc().size());
            summary += " bcc=" + std::to_string(h.bcc().size()) + " rt=" + std::to_string(h.replyto().size());
            for (const auto& a : h.to()) summary += a.isGroup() ? " group" : " mbox " + a.mailbox().str();
        }
        summary += " decoded=" + std::to_string(decoded_size(e));
    } catch (const std::exception&) {
        summary += " threw";
    }
    const auto& body = e.body();
    summary += "\nbody " + std::to_string(body.size()) + " pre " + std::to_string(body.preamble().size()) +
               " epi " + std::to_string(body.epilogue().size()) + "\n";
    for (const auto* part : body.parts()) {
        check(part != nullptr);
        walk(*part, depth + 1, summary, addresses);
    }
    summary += "end\n";
}

// Reads the whole message through the handle.
std::string read_all(mailnet::message& m) {
    std::string out;
    char buf[1024];
    for (;;) {
        auto n = m.read(std::span<char>(buf, sizeof buf));
        check(n.has_value());
        if (*n == 0) return out;
        out.append(buf, *n);
    }
}

// What mime()'s pre-scan bounds, measured on a tree mimetic built (before any typed accessor
// rewrote a field's value).
struct tree_stats {
    std::size_t entities = 0, depth = 0, fields = 0, longest_field = 0, address_items = 0;
};

void measure(const mimetic::MimeEntity& e, std::size_t depth, tree_stats& st) {
    ++st.entities;
    st.depth = std::max(st.depth, depth);
    for (const auto& f : e.header()) {
        ++st.fields;
        const std::string v = f.value();
        // mimetic's parse itself reads Content-Type as a ContentType, whose value() is written
        // anew ("; " and quotes added): not the octets the scan counted.
        if (f.name() != "Content-Type") st.longest_field = std::max(st.longest_field, f.name().size() + v.size());
        if (is_address(f.name())) st.address_items += 1 + static_cast<std::size_t>(std::count(v.begin(), v.end(), ','));
    }
    for (const auto* part : e.body().parts()) measure(*part, depth + 1, st);
}

// A limit that never binds.
constexpr std::size_t unbounded = std::size_t(-1) / 4;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto bytes = std::make_shared<const std::string>(reinterpret_cast<const char*>(data), size);
    const std::string_view in(*bytes);

    // The header block: a prefix of the message, ending at its first empty line; rewinds.
    mailnet::message m(mailnet::string_source(bytes), bytes->size());
    if (auto h = m.headers(); h) {
        check(in.starts_with(*h));
        check(h->size() == in.size() || h->ends_with("\n"));
    } else {
        check(h.error() == mailnet::errc::too_large);
    }
    auto small = m.headers(16);
    check(small.has_value() ? small->size() <= 16 : small.error() == mailnet::errc::too_large);
    check(read_all(m) == in);

    // The lazily parsed entity, walked; the handle still reads from the first octet after.
    auto e = m.mime();
    if (!e) {
        // mimetic threw (reported, not propagated), or the pre-scan refused (deep nesting).
        check(e.error() == mailnet::errc::bad_input || e.error() == mailnet::errc::too_large);
        check(read_all(m) == in);
    } else {
        std::string via_handle;
        walk(**e, 0, via_handle, false);
        std::string with_addresses;
        walk(**e, 0, with_addresses, true);
        auto again = m.mime();
        check(again.has_value() && *again == *e);
        check(read_all(m) == in);

        // The same parser, instrumented here, over the same octets: the same tree.
        std::istringstream stream{std::string(in)};
        mimetic::MimeEntity direct;
        direct.load(stream_iterator{std::istreambuf_iterator<char>(stream)}, stream_iterator{});
        std::string via_direct;
        walk(direct, 0, via_direct, false);
        check(via_direct == via_handle);
    }

    // The pre-scan against the tree mimetic builds. Small inputs only: mimetic's own recursion
    // is unbounded (about 30 octets a level) and this parse has no pre-scan in front of it.
    if (size <= 16384) {
        std::istringstream stream{std::string(in)};
        mimetic::MimeEntity direct;
        direct.load(stream_iterator{std::istreambuf_iterator<char>(stream)}, stream_iterator{});
        tree_stats st;
        measure(direct, 0, st);
        auto accepted = [](const mailnet::result<const mimetic::MimeEntity*>& r) {
            return r.has_value() || r.error() == mailnet::errc::bad_input;  // bad_input: mimetic threw after the scan
        };
        // Structure: the scan counts what mimetic builds exactly, so it accepts iff the tree fits.
        mailnet::mime_limits exact;
        exact.max_field_octets = exact.max_header_octets = exact.max_address_items = unbounded;
        exact.max_depth = size % 5;
        exact.max_entities = size % 8;
        exact.max_fields = 3 + size % 9;
        mailnet::message s1(mailnet::string_source(bytes), bytes->size());
        const auto r1 = s1.mime(exact);
        check(r1.has_value() || r1.error() == mailnet::errc::bad_input || r1.error() == mailnet::errc::too_large);
        const bool fits = st.depth <= exact.max_depth && st.entities <= exact.max_entities && st.fields <= exact.max_fields;
        check(accepted(r1) == fits);
        check(read_all(s1) == in);
        // Octet counts: the scan counts what mimetic's buffers grow to (folds, octets after a NUL),
        // at least what the tree keeps; so what it accepts, the tree fits.
        mailnet::mime_limits tight;
        tight.max_field_octets = 8 + size % 64;
        tight.max_address_items = 1 + size % 7;
        tight.max_header_octets = 32 + size % 512;
        mailnet::message s2(mailnet::string_source(bytes), bytes->size());
        const auto r2 = s2.mime(tight);
        if (accepted(r2)) {
            check(st.longest_field <= tight.max_field_octets);
            check(st.address_items <= tight.max_address_items);
        } else {
            check(r2.error() == mailnet::errc::too_large);
        }
        check(read_all(s2) == in);
    }

    // The size limit, with an honest and with a stale stored size (parse stops at the limit).
    if (size > 1) {
        mailnet::message honest(mailnet::string_source(bytes), bytes->size());
        check(honest.mime(size - 1).error() == mailnet::errc::too_large);
        mailnet::message stale(mailnet::string_source(bytes), 0);
        const auto cut = stale.mime(size / 2).error();  // a parse of the first half, then refused
        check(cut == mailnet::errc::too_large || cut == mailnet::errc::bad_input);
        check(read_all(stale) == in);
    }
    return 0;
}
