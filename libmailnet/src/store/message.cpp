// message.cpp: the message handle and its sources (a file read with pread, shared bytes);
// the header block (RFC 5322 2.1: headers end at the first empty line) and lazy MIME parsing.
#include "mailnet/store/message.hpp"

#include <mimetic/mimetic.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <string_view>
#include <array>
#include <cerrno>
#include <istream>
#include <streambuf>
#include <utility>

namespace mailnet {
namespace {

// mimetic recurses once per multipart level with no bound (a deep enough message overflows
// the stack): every level needs a "multipart" token, so counting them bounds the depth.
constexpr std::size_t max_multipart_tokens = 1000;

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

class fd_source final : public message_source {
public:
    explicit fd_source(int fd) : fd_(fd) {}
    fd_source(const fd_source&) = delete;
    fd_source& operator=(const fd_source&) = delete;
    ~fd_source() override {
        if (fd_ >= 0) ::close(fd_);
    }

    result<std::size_t> read(std::span<char> buf) override {
        if (buf.empty()) return std::size_t{0};
        for (;;) {
            const ssize_t n = ::pread(fd_, buf.data(), buf.size(), offset_);
            if (n >= 0) {
                offset_ += n;
                return static_cast<std::size_t>(n);
            }
            if (errno != EINTR) return unexpected(last_system_error());
        }
    }

    result<void> rewind() override {
        offset_ = 0;
        return {};
    }

private:
    int fd_;
    off_t offset_ = 0;
};

class bytes_source final : public message_source {
public:
    explicit bytes_source(std::shared_ptr<const std::string> bytes) : bytes_(std::move(bytes)) {}

    result<std::size_t> read(std::span<char> buf) override {
        if (!bytes_) return std::size_t{0};
        const std::size_t n = std::min(buf.size(), bytes_->size() - offset_);
        std::copy_n(bytes_->data() + offset_, n, buf.data());
        offset_ += n;
        return n;
    }

    result<void> rewind() override {
        offset_ = 0;
        return {};
    }

private:
    std::shared_ptr<const std::string> bytes_;
    std::size_t offset_ = 0;
};

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

}  // namespace

std::unique_ptr<message_source> file_source(int fd) { return std::make_unique<fd_source>(fd); }

std::unique_ptr<message_source> string_source(std::shared_ptr<const std::string> bytes) {
    return std::make_unique<bytes_source>(std::move(bytes));
}

message::message(std::unique_ptr<message_source> source, std::uint64_t stored_octets)
    : source_(std::move(source)), stored_octets_(stored_octets) {}

message::message(message&&) noexcept = default;
message& message::operator=(message&&) noexcept = default;
message::~message() = default;

result<std::size_t> message::read(std::span<char> buf) { return source_->read(buf); }

result<void> message::rewind() { return source_->rewind(); }

result<std::string> message::headers(std::size_t max_octets) {
    if (auto r = rewind(); !r) return unexpected(r.error());
    // RFC 5322 2.1: the header block ends at the first empty line; a stored message has LF
    // line ends, a foreign one may have CRLF, so both "\n\n" and "\n\r\n" end it.
    enum class at { line_start, cr_at_line_start, inside_line } state = at::line_start;
    std::string out;
    std::size_t end = std::string::npos;
    std::array<char, 4096> buf{};
    while (end == std::string::npos) {
        auto n = source_->read(buf);
        if (!n) {
            (void)rewind();
            return unexpected(n.error());
        }
        if (*n == 0) break;
        const std::size_t from = out.size();
        out.append(buf.data(), *n);
        for (std::size_t i = from; i < out.size(); ++i) {
            const char c = out[i];
            if (state == at::inside_line) {
                if (c == '\n') state = at::line_start;
            } else if (c == '\n') {
                end = i + 1;  // LF or CRLF right at a line start: the empty line
                break;
            } else if (state == at::line_start && c == '\r') {
                state = at::cr_at_line_start;
            } else {
                state = at::inside_line;
            }
        }
        if (end == std::string::npos && out.size() > max_octets) break;
    }
    // Whatever the outcome, the next read() starts at the first octet again.
    if (auto r = rewind(); !r) return unexpected(r.error());
    if (end == std::string::npos) end = out.size();  // no empty line: the whole message
    if (end > max_octets) return unexpected(errc::too_large);
    out.resize(end);
    return out;
}

result<const mimetic::MimeEntity*> message::mime(std::size_t max_octets) {
    if (mime_) return mime_.get();
    if (stored_octets_ > max_octets) return unexpected(errc::too_large);
    if (auto r = rewind(); !r) return unexpected(r.error());
    {
        // One bounded pass to bound mimetic's recursion depth.
        std::array<char, 65536> buf;
        std::size_t tokens = 0, seen = 0;
        std::string carry;
        for (;;) {
            auto n = source_->read(buf);
            if (!n) return unexpected(n.error());
            if (*n == 0 || seen > max_octets) break;
            seen += *n;
            std::string text = carry + std::string(buf.data(), *n);
            for (std::size_t p = 0; (p = text.find_first_of("mM", p)) != std::string::npos; ++p)
                if (iequal_prefix(std::string_view(text).substr(p), "multipart")) ++tokens;
            carry = text.substr(text.size() > 8 ? text.size() - 8 : 0);
            if (tokens > max_multipart_tokens) {
                (void)rewind();
                return unexpected(errc::bad_input);
            }
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
