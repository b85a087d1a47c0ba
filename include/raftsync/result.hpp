// raftsync — result<T>: a value or a std::error_code (an expected-like type; C++20 has no
// std::expected). Operating errors travel in result<T> or std::error_code; see error.hpp.
#pragma once

#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include "raftsync/assert.hpp"
#include "raftsync/error.hpp"

namespace raftsync {

template <typename T>
class [[nodiscard]] result {
  static_assert(!std::is_same_v<std::remove_cv_t<T>, std::error_code>,
                "result<std::error_code> is ambiguous; return std::error_code instead");

 public:
  using value_type = T;

  result(T value) : storage_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(implicit)
  result(std::error_code error) : storage_(std::in_place_index<1>, error) {  // NOLINT(implicit)
    RAFTSYNC_ASSERT(error, "a result holding an error needs a non-zero error code");
  }
  result(errc error) : result(make_error_code(error)) {}  // NOLINT(implicit)

  bool has_value() const noexcept { return storage_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & {
    RAFTSYNC_ASSERT(has_value(), "value() called on a result that holds an error");
    return std::get<0>(storage_);
  }
  const T& value() const& {
    RAFTSYNC_ASSERT(has_value(), "value() called on a result that holds an error");
    return std::get<0>(storage_);
  }
  T&& value() && {
    RAFTSYNC_ASSERT(has_value(), "value() called on a result that holds an error");
    return std::get<0>(std::move(storage_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The error, or a default (success) error_code when a value is held.
  std::error_code error() const noexcept {
    return has_value() ? std::error_code{} : std::get<1>(storage_);
  }

  template <typename U>
  T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(storage_) : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  std::variant<T, std::error_code> storage_;
};

}  // namespace raftsync
