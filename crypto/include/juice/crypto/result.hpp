// Result<T>: the value-or-error type every juice module returns for expected
// failures (bad input, failed verification, timeouts). Exceptions are kept for
// start-up failures and bugs only (see shared STYLE.md).
//
// An Error carries a std::error_code (one category per module, so callers can
// branch on it) and a human-readable message that tells the user what went
// wrong and, where possible, what to do about it.
#pragma once

#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace juice {

struct Error {
    std::error_code code;
    std::string message;  // user-facing; never empty when built by make_error

    // The text to show a user: the message, or the category's text if empty.
    std::string what() const { return message.empty() ? code.message() : message; }
};

template <class E>
Error make_error(E e, std::string message = {}) {
    auto code = make_error_code(e);
    if (message.empty()) message = code.message();
    return Error{code, std::move(message)};
}

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : m_v(std::in_place_index<0>, std::move(value)) {}
    Result(Error error) : m_v(std::in_place_index<1>, std::move(error)) {}

    bool ok() const noexcept { return m_v.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    // Precondition: ok(). Accessing the value of an error is a bug.
    T& value() & { return std::get<0>(m_v); }
    const T& value() const& { return std::get<0>(m_v); }
    T&& value() && { return std::get<0>(std::move(m_v)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    // Precondition: !ok().
    const Error& error() const { return std::get<1>(m_v); }

private:
    std::variant<T, Error> m_v;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : m_error(std::move(error)), m_ok(false) {}

    bool ok() const noexcept { return m_ok; }
    explicit operator bool() const noexcept { return m_ok; }
    const Error& error() const { return m_error; }

private:
    Error m_error{};
    bool m_ok = true;
};

}  // namespace juice
