// Overflow-checked integer arithmetic for sizes and offsets read from untrusted files.
#pragma once

#include <cstdint>
#include <limits>
#include <string_view>

#include "torchless/core/error.h"

namespace torchless {

inline uint64_t checked_add(uint64_t a, uint64_t b, std::string_view what) {
  uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) fail("{}: {} + {} overflows 64 bits", what, a, b);
  return r;
}

inline uint64_t checked_mul(uint64_t a, uint64_t b, std::string_view what) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) fail("{}: {} * {} overflows 64 bits", what, a, b);
  return r;
}

// Narrowing that refuses to lose information.
template <typename To, typename From>
To checked_cast(From value, std::string_view what) {
  if (!std::in_range<To>(value)) fail("{}: value {} does not fit the target type", what, value);
  return static_cast<To>(value);
}

}  // namespace torchless
