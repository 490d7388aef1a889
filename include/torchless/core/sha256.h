// SHA-256 (FIPS 180-4), used to check model-package files against their manifest and to pin a
// package's manifest from a compressed file. Sha256 is an incremental hasher (not thread-safe;
// one per thread); sha256() and sha256_hex() hash one run of bytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace torchless {

using Sha256Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  void update(std::span<const std::byte> bytes);
  void update(std::string_view bytes);
  // Pads and returns the digest; the hasher must not be updated afterwards.
  Sha256Digest finish();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> block_{};
  size_t block_used_ = 0;
  uint64_t total_bytes_ = 0;
};

Sha256Digest sha256(std::span<const std::byte> bytes);
Sha256Digest sha256(std::string_view bytes);
// Lower-case hex, as Python's hashlib.hexdigest().
std::string to_hex(const Sha256Digest& digest);
// Hashes a whole file; throws Error naming the file when it cannot be read.
Sha256Digest sha256_file(const std::filesystem::path& path);

}  // namespace torchless
