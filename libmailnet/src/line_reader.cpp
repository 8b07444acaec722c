// line_reader.cpp: CRLF line splitting with a hard limit (RFC 5321 4.5.3.1, RFC 2449 4).
#include "mailnet/line_reader.hpp"

#include <algorithm>

namespace mailnet {

void line_reader::feed(std::string_view bytes) {
    line_ = {};
    if (pos_ > 0 && (pos_ >= buf_.size() / 2 || pos_ > 65536)) {
        buf_.erase(0, pos_);
        scan_ -= pos_;
        pos_ = 0;
    }
    buf_.append(bytes);
}

line_reader::status line_reader::next() {
    line_ = {};
    for (;;) {
        // Search for CR LF from scan_; a CR at the very end may pair with the next byte.
        std::size_t crlf = std::string::npos;
        for (std::size_t i = buf_.find('\r', scan_); i != std::string::npos; i = buf_.find('\r', i + 1)) {
            if (i + 1 >= buf_.size()) break;
            if (buf_[i + 1] == '\n') { crlf = i; break; }
        }
        if (crlf == std::string::npos) {
            // Keep a trailing CR: it may start the CRLF of the next chunk.
            std::size_t keep_from = buf_.size();
            if (keep_from > pos_ && buf_[keep_from - 1] == '\r') --keep_from;
            scan_ = keep_from;
            if (discarding_ || keep_from - pos_ > max_ - 2) {
                // Over-long: drop what we have, remember to report when its CRLF arrives.
                if (!discarding_) head_ = buf_.substr(pos_, std::min(keep_from - pos_, head_octets));
                discarding_ = true;
                dropped_ += keep_from - pos_;
                buf_.erase(0, keep_from);
                pos_ = 0;
                scan_ = 0;
            }
            return status::need_more;
        }
        std::size_t start = pos_;
        pos_ = crlf + 2;
        scan_ = pos_;
        if (discarding_ || crlf - start > max_ - 2) {
            if (!discarding_) head_ = buf_.substr(start, std::min(crlf - start, head_octets));
            discarding_ = false;
            dropped_ = 0;
            return status::too_long;
        }
        line_ = std::string_view(buf_).substr(start, crlf - start);
        return status::line;
    }
}

std::string line_reader::take_buffered() {
    std::string rest = buf_.substr(pos_);
    clear();
    return rest;
}

void line_reader::clear() noexcept {
    buf_.clear();
    pos_ = scan_ = 0;
    discarding_ = false;
    dropped_ = 0;
    line_ = {};
    head_.clear();
}

}  // namespace mailnet
