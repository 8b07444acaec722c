// error.cpp: the mailnet error category.
#include "mailnet/error.hpp"

namespace mailnet {
namespace {

class category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "mailnet"; }
    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
            case errc::line_too_long: return "line too long";
            case errc::bad_input: return "malformed input";
            case errc::not_found: return "not found";
            case errc::mailbox_in_use: return "mailbox in use";
            case errc::io_error: return "I/O error";
            case errc::tls_error: return "TLS error";
            case errc::timed_out: return "timed out";
            case errc::too_large: return "too large";
            case errc::bad_config: return "bad configuration";
            case errc::temporary_failure: return "temporary failure";
            case errc::closed: return "connection closed";
            case errc::unsupported: return "not supported";
        }
        return "unknown mailnet error";
    }
};

}  // namespace

const std::error_category& category() noexcept {
    static const category_impl instance;  // NOTE: immutable; the one static the standard asks for
    return instance;
}

}  // namespace mailnet
