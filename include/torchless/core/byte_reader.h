// ByteReader is a bounds-checked cursor over bytes. Every read checks the remaining length
// first and throws Error naming the source (`what`), the offset, and how many bytes were
// wanted and left. Integers are little-endian unless the method says otherwise.
// Not thread-safe (it has a cursor); cheap to copy.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "torchless/core/error.h"

namespace torchless {

// byteswap is C++23; this is the C++20 equivalent for unsigned integers.
template <typename T>
constexpr T byteswap(T value) {
  static_assert(std::is_unsigned_v<T>);
  if constexpr (sizeof(T) == 1) return value;
  if constexpr (sizeof(T) == 2) return static_cast<T>(__builtin_bswap16(value));
  if constexpr (sizeof(T) == 4) return static_cast<T>(__builtin_bswap32(value));
  if constexpr (sizeof(T) == 8) return static_cast<T>(__builtin_bswap64(value));
}

class ByteReader {
 public:
  ByteReader(std::span<const std::byte> bytes, std::string what)
      : bytes_(bytes), what_(std::move(what)) {}
  ByteReader(std::string_view bytes, std::string what)
      : ByteReader(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())),
                   std::move(what)) {}

  uint64_t position() const { return pos_; }
  uint64_t size() const { return bytes_.size(); }
  uint64_t remaining() const { return bytes_.size() - pos_; }
  bool at_end() const { return pos_ == bytes_.size(); }
  const std::string& what() const { return what_; }

  void seek(uint64_t position) {
    if (position > bytes_.size()) {
      fail("{}: seek to offset {} beyond the end ({} bytes)", what_, position, bytes_.size());
    }
    pos_ = position;
  }
  void skip(uint64_t n) { take(n); }

  std::span<const std::byte> take(uint64_t n) {
    require(n);
    auto out = bytes_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  std::string_view take_string(uint64_t n) {
    auto s = take(n);
    return {reinterpret_cast<const char*>(s.data()), s.size()};
  }
  uint8_t u8() { return static_cast<uint8_t>(take(1)[0]); }
  uint16_t u16() { return le<uint16_t>(); }
  uint32_t u32() { return le<uint32_t>(); }
  uint64_t u64() { return le<uint64_t>(); }
  int32_t i32() { return static_cast<int32_t>(le<uint32_t>()); }
  int64_t i64() { return static_cast<int64_t>(le<uint64_t>()); }
  float f32() { return std::bit_cast<float>(le<uint32_t>()); }
  double f64() { return std::bit_cast<double>(le<uint64_t>()); }
  double f64_be() { return std::bit_cast<double>(byteswap(le<uint64_t>())); }

  template <typename T>
  T le() {
    static_assert(std::is_unsigned_v<T>, "read unsigned, then convert");
    auto s = take(sizeof(T));
    T value;
    std::memcpy(&value, s.data(), sizeof(T));
    if constexpr (std::endian::native == std::endian::big) value = byteswap(value);
    return value;
  }

  // Reads up to and including `delimiter`; returns the text before it. Throws if absent.
  std::string_view take_until(char delimiter) {
    const auto* begin = reinterpret_cast<const char*>(bytes_.data()) + pos_;
    const void* hit = std::memchr(begin, delimiter, remaining());
    if (hit == nullptr) {
      fail("{}: at offset {}: expected a line ending in byte 0x{:02x}, found end of data", what_,
           pos_, static_cast<unsigned>(static_cast<unsigned char>(delimiter)));
    }
    auto length = static_cast<uint64_t>(static_cast<const char*>(hit) - begin);
    auto out = take_string(length);
    pos_ += 1;
    return out;
  }

 private:
  void require(uint64_t n) const {
    if (n > remaining()) {
      fail("{}: at offset {}: need {} bytes, only {} left (truncated?)", what_, pos_, n,
           remaining());
    }
  }

  std::span<const std::byte> bytes_;
  std::string what_;
  uint64_t pos_ = 0;
};

}  // namespace torchless
