// mailnet/error.hpp: the library's error codes and result<T>, a std::expected-shaped
// carrier for fallible calls (C++23's std::expected is not in g++ 12).
#pragma once

#include <cassert>
#include <cerrno>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace mailnet {

/// Failures of ours or of the system; refusals are replies, not errors.
enum class errc {
    line_too_long = 1,  ///< a line exceeded its limit
    bad_input,          ///< malformed input (syntax, encoding)
    not_found,          ///< no such mailbox, message or user
    mailbox_in_use,     ///< the mailbox is locked by another session
    io_error,           ///< a file or socket operation failed
    tls_error,          ///< a TLS context, handshake or verification failure
    timed_out,          ///< a timeout expired
    too_large,          ///< a size limit was crossed
    bad_config,         ///< a configuration value or file is unusable
    temporary_failure,  ///< try again later (auth backend down, disk full...)
    closed,             ///< the peer or the server closed
    unsupported,        ///< the backend does not offer this call
};

/// The category of mailnet::errc.
const std::error_category& category() noexcept;

/// Makes an error_code from a mailnet::errc.
inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), category()}; }

/// An error_code from the current errno.
inline std::error_code last_system_error() noexcept { return {errno, std::system_category()}; }

/// Wraps an error_code to construct a failed result<T>.
struct unexpected {
    std::error_code error;
    unexpected(std::error_code e) : error(e) {}   // NOLINT: implicit by design
    unexpected(errc e) : error(make_error_code(e)) {}  // NOLINT
};

/// Either a T or an error_code, shaped like std::expected<T, std::error_code>.
template <class T>
class [[nodiscard]] result {
public:
    using value_type = T;
    result() requires std::is_default_constructible_v<T> : v_(std::in_place_index<0>) {}
    template <class U = T>
        requires std::is_constructible_v<T, U&&> && (!std::is_same_v<std::remove_cvref_t<U>, result>) &&
                 (!std::is_same_v<std::remove_cvref_t<U>, unexpected>)
    result(U&& v) : v_(std::in_place_index<0>, std::forward<U>(v)) {}  // NOLINT
    result(unexpected u) : v_(std::in_place_index<1>, u.error) { assert(u.error); }  // NOLINT

    bool has_value() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }
    T& value() & { assert(has_value()); return std::get<0>(v_); }
    const T& value() const& { assert(has_value()); return std::get<0>(v_); }
    T&& value() && { assert(has_value()); return std::get<0>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    std::error_code error() const noexcept { return has_value() ? std::error_code{} : std::get<1>(v_); }
    template <class U> T value_or(U&& u) const& { return has_value() ? value() : T(std::forward<U>(u)); }

private:
    std::variant<T, std::error_code> v_;
};

/// result<void>: success or an error_code.
template <>
class [[nodiscard]] result<void> {
public:
    result() = default;
    result(unexpected u) : ec_(u.error) { assert(u.error); }  // NOLINT
    bool has_value() const noexcept { return !ec_; }
    explicit operator bool() const noexcept { return has_value(); }
    void value() const { assert(has_value()); }
    std::error_code error() const noexcept { return ec_; }

private:
    std::error_code ec_;
};

}  // namespace mailnet

template <>
struct std::is_error_code_enum<mailnet::errc> : std::true_type {};
