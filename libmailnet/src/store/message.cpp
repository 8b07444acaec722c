// message.cpp: the message handle and its sources (a file read with pread, shared bytes) and
// the header block (RFC 5322 2.1: headers end at the first empty line); message_mime.cpp parses.
#include "mailnet/store/message.hpp"

// NOTE: the complete type for ~unique_ptr<MimeEntity> only: its destructor is virtual, so
// nothing here calls into libmimetic, and a program that never parses MIME (pop3c) does
// not load it (message_mime.cpp holds every call).
#include <mimetic/mimeentity.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>

namespace mailnet {

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

}  // namespace mailnet
