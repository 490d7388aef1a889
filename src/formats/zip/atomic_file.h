// An AtomicFile streams bytes into a temporary file beside `path` and renames it into place on
// commit(), so that a failure (or an exception unwinding past it) never leaves a half-written
// file and never destroys an existing one. The streaming counterpart of core's
// write_file_atomic, for outputs too large to assemble in memory (archives, safetensors).
// Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace torchless::formats {

class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&&) = delete;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  // Without commit(), removes the temporary file.
  ~AtomicFile();

  void write(std::span<const std::byte> bytes);
  // Flushes, fsyncs and renames the temporary file to `path`.
  void commit();
  uint64_t size() const { return written_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void write_all(const std::byte* data, size_t size);
  void flush();
  void discard() noexcept;

  std::filesystem::path path_;
  std::string temp_path_;
  int fd_ = -1;
  std::vector<std::byte> pending_;
  uint64_t written_ = 0;
};

}  // namespace torchless::formats
