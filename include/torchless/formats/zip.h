// Zip archives as PyTorch writes them (and as other tools re-zip them).
//
// A ZipArchive is a validated, read-only index over the bytes of a zip file (normally a mapped
// file). Stored records are handed out as zero-copy slices of those bytes; deflated records are
// inflated into a fresh Buffer, bounded by Limits and checked against their CRC-32. Opening an
// archive validates the whole directory (EOCD, zip64 records, every central-directory entry and
// its local header) so that later reads cannot go out of bounds. Thread-safe: immutable.
//
// A ZipWriter writes a stored (uncompressed) archive the way torch's PyTorchStreamWriter does:
// every record's data starts at a multiple of `alignment` (64) thanks to an 'FB' padding field
// in the local header, zip64 fields wherever a size or offset needs them. Writing to a path is
// atomic: a temporary file beside it is renamed into place by finish(). Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "torchless/core/buffer.h"
#include "torchless/core/limits.h"

namespace torchless::formats {

struct ZipEntry {
  static constexpr uint16_t kStored = 0;
  static constexpr uint16_t kDeflated = 8;

  std::string name;           // as stored in the central directory (UTF-8 or CP437 bytes)
  uint16_t method = kStored;  // only kStored and kDeflated are accepted
  uint16_t flags = 0;         // general purpose bit flags (bit 3: data descriptor, 11: UTF-8)
  uint32_t crc32 = 0;         // from the central directory
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;  // offset in the Buffer (archive prefix already added)
  uint64_t data_offset = 0;          // offset in the Buffer of the (compressed) data
  // Non-empty when the name is unsafe to use as a path: contains "..", is absolute, has a
  // backslash or a NUL. Such entries can still be found and read, never extracted.
  std::string name_problem;

  bool is_stored() const { return method == kStored; }
};

class ZipArchive {
 public:
  // True when `bytes` starts with a local file header signature ("PK\3\4"), which is how torch
  // tells a zip checkpoint from a legacy one.
  static bool looks_like_zip(std::span<const std::byte> bytes);

  // Maps `path` and parses it. Throws Error naming the file and what is wrong.
  static ZipArchive open(const std::filesystem::path& path,
                         const Limits& limits = Limits::defaults());
  // Parses `bytes`; `name` (usually the file name) prefixes every error message.
  static ZipArchive parse(Buffer bytes, std::string name,
                          const Limits& limits = Limits::defaults());

  const std::string& name() const { return name_; }
  const Buffer& buffer() const { return buffer_; }
  // Bytes before the archive proper (a self-extracting stub, or data the archive was appended
  // to). Offsets inside the archive are relative to its start, as every zip reader assumes.
  uint64_t prefix_size() const { return prefix_size_; }
  // Entries in central-directory order.
  const std::vector<ZipEntry>& entries() const { return entries_; }
  // The archive comment from the end-of-central-directory record.
  std::string_view comment() const { return comment_; }

  const ZipEntry* find(std::string_view name) const;
  // Like find(), but throws Error naming the archive and the missing record.
  const ZipEntry& at(std::string_view name) const;

  // The uncompressed bytes of `entry`: a zero-copy slice for stored entries (CRC not checked:
  // see verify_crc), an inflated copy for deflated ones (CRC checked, size bounded by Limits).
  Buffer read(const ZipEntry& entry) const;
  Buffer read(std::string_view name) const { return read(at(name)); }
  // Checks the CRC-32 of a stored entry (reading all of its bytes); throws Error on mismatch.
  void verify_crc(const ZipEntry& entry) const;

  // Where `entry` would go if extracted under `root`; throws Error for unsafe names (see
  // ZipEntry::name_problem), so that nothing can be written outside `root`.
  std::filesystem::path extraction_path(const ZipEntry& entry,
                                        const std::filesystem::path& root) const;

 private:
  ZipArchive() = default;

  std::string name_;
  Buffer buffer_;
  Limits limits_;
  uint64_t prefix_size_ = 0;
  std::vector<ZipEntry> entries_;
  std::string comment_;
  std::vector<size_t> sorted_by_name_;  // indexes into entries_, for find()
};

struct ZipWriterOptions {
  // Each record's data starts at a multiple of this (1 = no padding). torch uses 64.
  uint32_t alignment = 64;
};

class ZipWriter {
 public:
  // Writes to `path` atomically: to a temporary file beside it until finish().
  explicit ZipWriter(const std::filesystem::path& path, ZipWriterOptions options = {});
  // Writes into memory; take_bytes() returns the archive after finish().
  explicit ZipWriter(ZipWriterOptions options = {});
  ZipWriter(ZipWriter&&) noexcept;
  ZipWriter& operator=(ZipWriter&&) noexcept;
  ZipWriter(const ZipWriter&) = delete;
  ZipWriter& operator=(const ZipWriter&) = delete;
  // Without finish(), removes the temporary file: the destination is left untouched.
  ~ZipWriter();

  // Adds a stored record. Names must be unique, non-empty and shorter than 64 KiB.
  void add(std::string_view name, std::span<const std::byte> data);
  void add(std::string_view name, std::string_view data);
  // Adds one record whose data is the concatenation of `pieces` (no copy is made).
  void add(std::string_view name, std::span<const std::span<const std::byte>> pieces);

  // Writes the central directory and end records, then renames the file into place.
  void finish();
  // The archive written in memory (in-memory writers only, after finish()).
  std::vector<std::byte> take_bytes();
  // Bytes written so far.
  uint64_t size() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace torchless::formats
