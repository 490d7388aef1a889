// A Buffer is an immutable, shared run of bytes: a heap allocation, a memory-mapped file, or a
// slice of another Buffer. Copies share the owner; a slice keeps the whole owner alive. This is
// what lets checkpoint readers hand out tensors that point into the mapped file (zero copy).
// Thread-safe: a Buffer is never mutated after construction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace torchless {

class Buffer {
 public:
  Buffer() = default;

  // Takes ownership of `bytes` without copying them.
  static Buffer adopt(std::vector<std::byte> bytes);
  static Buffer adopt(std::vector<uint8_t> bytes);
  static Buffer copy_of(std::span<const std::byte> bytes);
  static Buffer copy_of(std::string_view bytes);
  // Wraps memory owned by `owner` (kept alive as long as any copy of this Buffer).
  static Buffer wrap(std::shared_ptr<const void> owner, const std::byte* data, size_t size);
  // Maps `path` read-only (an empty file gives an empty Buffer). Throws Error naming the file.
  static Buffer map_file(const std::filesystem::path& path);
  // Reads `path` into memory (for pipes and files that cannot be mapped).
  static Buffer read_file(const std::filesystem::path& path);

  const std::byte* data() const { return data_; }
  const uint8_t* u8() const { return reinterpret_cast<const uint8_t*>(data_); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }

  // [offset, offset + length) of this buffer, sharing the owner. Throws Error if out of range;
  // `what` names the thing being sliced in that message.
  Buffer slice(uint64_t offset, uint64_t length, std::string_view what = "buffer") const;

  // True when the bytes come from a memory-mapped file (for zero-copy assertions and stats).
  bool is_mapped() const { return mapped_; }
  const std::shared_ptr<const void>& owner() const { return owner_; }

 private:
  std::shared_ptr<const void> owner_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
};

// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, then rename, so a
// failure never leaves a half-written file or destroys an existing one.
void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes);
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

}  // namespace torchless
