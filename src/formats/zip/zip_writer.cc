#include <optional>
#include <set>

#include "formats/zip/atomic_file.h"
#include "formats/zip/zip_format.h"
#include "torchless/core/crc32.h"
#include "torchless/core/error.h"
#include "torchless/formats/zip.h"

namespace torchless::formats {

using namespace zip_format;

namespace {

constexpr uint64_t k32 = 0xFFFFFFFF;

class Bytes {
 public:
  void u16(uint16_t v) {
    for (int i = 0; i < 2; ++i) out_.push_back(static_cast<std::byte>(v >> (8 * i)));
  }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<std::byte>(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<std::byte>(v >> (8 * i)));
  }
  void str(std::string_view s) {
    for (char c : s) out_.push_back(static_cast<std::byte>(c));
  }
  void fill(size_t n, char c) { out_.insert(out_.end(), n, static_cast<std::byte>(c)); }
  std::span<const std::byte> span() const { return out_; }

 private:
  std::vector<std::byte> out_;
};

uint32_t saturate(uint64_t value) {
  return value >= k32 ? static_cast<uint32_t>(k32) : static_cast<uint32_t>(value);
}

struct WrittenEntry {
  std::string name;
  uint32_t crc32;
  uint64_t size;
  uint64_t offset;
};

}  // namespace

struct ZipWriter::State {
  ZipWriterOptions options;
  std::optional<AtomicFile> file;  // absent: in memory
  std::vector<std::byte> memory;
  uint64_t written = 0;
  std::vector<WrittenEntry> entries;
  std::set<std::string, std::less<>> names;
  bool finished = false;

  std::string where() const { return file ? file->path().string() : std::string("zip archive"); }

  void write(std::span<const std::byte> bytes) {
    if (file) {
      file->write(bytes);
    } else {
      memory.insert(memory.end(), bytes.begin(), bytes.end());
    }
    written += bytes.size();
  }
};

ZipWriter::ZipWriter(const std::filesystem::path& path, ZipWriterOptions options)
    : state_(std::make_unique<State>()) {
  state_->options = options;
  state_->file.emplace(path);
}

ZipWriter::ZipWriter(ZipWriterOptions options) : state_(std::make_unique<State>()) {
  state_->options = options;
}

ZipWriter::ZipWriter(ZipWriter&&) noexcept = default;
ZipWriter& ZipWriter::operator=(ZipWriter&&) noexcept = default;

ZipWriter::~ZipWriter() = default;  // an uncommitted AtomicFile removes its temporary file

void ZipWriter::add(std::string_view name, std::span<const std::byte> data) {
  std::span<const std::byte> pieces[] = {data};
  add(name, std::span<const std::span<const std::byte>>(pieces));
}

void ZipWriter::add(std::string_view name, std::string_view data) {
  add(name, std::as_bytes(std::span<const char>(data.data(), data.size())));
}

void ZipWriter::add(std::string_view name, std::span<const std::span<const std::byte>> pieces) {
  State& s = *state_;
  if (s.finished) fail("{}: record '{}' added after finish()", s.where(), name);
  if (name.empty() || name.size() > 0xFFFF) {
    fail("{}: record name must have 1 to 65535 bytes, '{}' has {}", s.where(), name, name.size());
  }
  if (s.names.contains(name)) fail("{}: duplicate record name '{}'", s.where(), name);

  uint64_t size = 0;
  uint32_t crc = 0;
  for (auto piece : pieces) {
    size += piece.size();
    crc = crc32(piece, crc);
  }
  const uint64_t offset = s.written;
  const bool zip64_size = size >= k32;

  Bytes header;
  header.u32(kLocalHeaderSignature);
  header.u16(zip64_size ? 45 : 20);  // version needed: 4.5 for zip64, else 2.0
  header.u16(0x0800);                // names are UTF-8
  header.u16(ZipEntry::kStored);
  header.u16(kDosTime);
  header.u16(kDosDate);
  header.u32(crc);
  header.u32(saturate(size));
  header.u32(saturate(size));
  header.u16(static_cast<uint16_t>(name.size()));
  // Extra field length is patched below once the padding is known.
  uint64_t extra_length = zip64_size ? 20 : 0;
  uint64_t padding = 0;
  const uint64_t alignment = s.options.alignment;
  if (alignment > 1) {
    // Same rule as torch's detail::getPadding: the 'FB' field is present even when no padding
    // is needed, and its payload brings the data start to a multiple of the alignment.
    uint64_t start = offset + kLocalHeaderSize + name.size() + extra_length + 4;
    padding = (alignment - start % alignment) % alignment;
    extra_length += 4 + padding;
  }
  if (extra_length > 0xFFFF) fail("{}: alignment {} is too large", s.where(), alignment);
  header.u16(static_cast<uint16_t>(extra_length));
  header.str(name);
  if (zip64_size) {
    header.u16(kZip64ExtraId);
    header.u16(16);
    header.u64(size);
    header.u64(size);
  }
  if (alignment > 1) {
    header.u16(kPaddingExtraId);
    header.u16(static_cast<uint16_t>(padding));
    header.fill(padding, 'Z');
  }
  s.write(header.span());
  for (auto piece : pieces) s.write(piece);
  s.entries.push_back({std::string(name), crc, size, offset});
  s.names.insert(std::string(name));
}

void ZipWriter::finish() {
  State& s = *state_;
  if (s.finished) fail("{}: finish() called twice", s.where());
  const uint64_t cd_offset = s.written;
  for (const auto& e : s.entries) {
    const bool zip64_size = e.size >= k32;
    const bool zip64_offset = e.offset >= k32;
    Bytes header;
    header.u32(kCentralHeaderSignature);
    header.u16((3 << 8) | 45);  // made by: Unix, zip 4.5
    header.u16(zip64_size || zip64_offset ? 45 : 20);
    header.u16(0x0800);
    header.u16(ZipEntry::kStored);
    header.u16(kDosTime);
    header.u16(kDosDate);
    header.u32(e.crc32);
    header.u32(saturate(e.size));
    header.u32(saturate(e.size));
    header.u16(static_cast<uint16_t>(e.name.size()));
    uint16_t extra_length = (zip64_size ? 16 : 0) + (zip64_offset ? 8 : 0);
    header.u16(extra_length > 0 ? extra_length + 4 : 0);
    header.u16(0);               // comment length
    header.u16(0);               // disk number start
    header.u16(0);               // internal attributes
    header.u32(0100644u << 16);  // external attributes: regular file, rw-r--r--
    header.u32(saturate(e.offset));
    header.str(e.name);
    if (extra_length > 0) {
      header.u16(kZip64ExtraId);
      header.u16(extra_length);
      if (zip64_size) {
        header.u64(e.size);
        header.u64(e.size);
      }
      if (zip64_offset) header.u64(e.offset);
    }
    s.write(header.span());
  }
  const uint64_t cd_size = s.written - cd_offset;
  const uint64_t count = s.entries.size();
  Bytes end;
  if (count >= 0xFFFF || cd_offset >= k32 || cd_size >= k32) {
    const uint64_t zip64_eocd = s.written;
    end.u32(kZip64EocdSignature);
    end.u64(kZip64EocdSize - 12);
    end.u16((3 << 8) | 45);
    end.u16(45);
    end.u32(0);
    end.u32(0);
    end.u64(count);
    end.u64(count);
    end.u64(cd_size);
    end.u64(cd_offset);
    end.u32(kZip64LocatorSignature);
    end.u32(0);
    end.u64(zip64_eocd);
    end.u32(1);
  }
  end.u32(kEocdSignature);
  end.u16(0);
  end.u16(0);
  end.u16(count >= 0xFFFF ? 0xFFFF : static_cast<uint16_t>(count));
  end.u16(count >= 0xFFFF ? 0xFFFF : static_cast<uint16_t>(count));
  end.u32(saturate(cd_size));
  end.u32(saturate(cd_offset));
  end.u16(0);
  s.write(end.span());

  if (s.file) s.file->commit();
  s.finished = true;
}

std::vector<std::byte> ZipWriter::take_bytes() {
  State& s = *state_;
  if (s.file || !s.finished) {
    fail("{}: take_bytes() needs an in-memory writer after finish()", s.where());
  }
  return std::move(s.memory);
}

uint64_t ZipWriter::size() const {
  return state_->written;
}

}  // namespace torchless::formats
