#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "formats/zip/zip_format.h"
#include "torchless/core/byte_reader.h"
#include "torchless/core/checked.h"
#include "torchless/core/crc32.h"
#include "torchless/core/error.h"
#include "torchless/formats/zip.h"

namespace torchless::formats {
namespace {

using namespace zip_format;

std::string describe_name_problem(std::string_view name) {
  if (name.find('\0') != std::string_view::npos) return "contains a NUL byte";
  if (name.find('\\') != std::string_view::npos) return "contains a backslash";
  if (!name.empty() && name.front() == '/') return "is an absolute path";
  if (name.size() >= 2 && name[1] == ':') return "starts with a drive letter";
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    if (name.substr(start, end - start) == "..") return "contains a '..' component";
    start = end + 1;
  }
  return {};
}

struct Zip64Fields {
  uint64_t uncompressed_size;
  uint64_t compressed_size;
  uint64_t local_header_offset;
};

// The zip64 extended information field holds, in this order, only those of (uncompressed size,
// compressed size, local header offset, disk) whose 32-bit (16-bit for disk) slot is saturated.
void apply_zip64_extra(std::span<const std::byte> extra, Zip64Fields& fields, bool usize_saturated,
                       bool csize_saturated, bool offset_saturated, const std::string& where) {
  ByteReader reader(extra, where + ": extra field");
  while (reader.remaining() >= 4) {
    uint16_t id = reader.u16();
    uint16_t length = reader.u16();
    if (length > reader.remaining()) {
      fail("{}: extra field 0x{:04x} declares {} bytes, only {} left", where, id, length,
           reader.remaining());
    }
    ByteReader block(reader.take(length), where + ": zip64 extra field");
    if (id != kZip64ExtraId) continue;
    if (usize_saturated) fields.uncompressed_size = block.u64();
    if (csize_saturated) fields.compressed_size = block.u64();
    if (offset_saturated) fields.local_header_offset = block.u64();
    return;
  }
  if (usize_saturated || csize_saturated || offset_saturated) {
    fail("{}: sizes or offset are 0xffffffff but there is no zip64 extra field", where);
  }
}

}  // namespace

bool ZipArchive::looks_like_zip(std::span<const std::byte> bytes) {
  return bytes.size() >= 4 && std::memcmp(bytes.data(), "PK\x03\x04", 4) == 0;
}

ZipArchive ZipArchive::open(const std::filesystem::path& path, const Limits& limits) {
  return parse(Buffer::map_file(path), path.string(), limits);
}

ZipArchive ZipArchive::parse(Buffer bytes, std::string name, const Limits& limits) {
  ZipArchive archive;
  archive.name_ = std::move(name);
  archive.buffer_ = std::move(bytes);
  archive.limits_ = limits;
  const std::string& what = archive.name_;
  const Buffer& buffer = archive.buffer_;
  const uint64_t file_size = buffer.size();

  if (file_size < kEocdSize) {
    fail("{}: not a zip archive: {} bytes, fewer than the {}-byte end-of-central-directory record",
         what, file_size, kEocdSize);
  }
  // The EOCD record ends the archive, followed only by its comment (at most 65535 bytes), so
  // it is searched for backwards within that window, as every zip reader does.
  uint64_t eocd = file_size;
  {
    uint64_t lowest = file_size - kEocdSize > 0xFFFF ? file_size - kEocdSize - 0xFFFF : 0;
    for (uint64_t pos = file_size - kEocdSize + 1; pos-- > lowest;) {
      const auto* p = buffer.u8() + pos;
      if (p[0] == 'P' && p[1] == 'K' && p[2] == 5 && p[3] == 6) {
        uint16_t comment_length = static_cast<uint16_t>(p[20] | (p[21] << 8));
        if (pos + kEocdSize + comment_length <= file_size) {
          eocd = pos;
          break;
        }
      }
    }
  }
  if (eocd == file_size) {
    fail(
        "{}: not a zip archive (or truncated): no end-of-central-directory record (PK\\5\\6) "
        "in the last {} bytes",
        what, std::min<uint64_t>(file_size, kEocdSize + 0xFFFF));
  }

  ByteReader eocd_reader(buffer.bytes().subspan(eocd), what + ": end-of-central-directory record");
  eocd_reader.skip(4);
  uint64_t disk = eocd_reader.u16();
  uint64_t cd_disk = eocd_reader.u16();
  uint64_t entries_on_disk = eocd_reader.u16();
  uint64_t entry_count = eocd_reader.u16();
  uint64_t cd_size = eocd_reader.u32();
  uint64_t cd_offset = eocd_reader.u32();
  uint16_t comment_length = eocd_reader.u16();
  archive.comment_ = std::string(eocd_reader.take_string(comment_length));

  // Where the central directory must end: right before the zip64 EOCD record if there is one,
  // else right before the EOCD. The difference to the offsets the records declare is the size
  // of whatever was prepended to the archive.
  uint64_t cd_end = eocd;
  bool has_locator = eocd >= kZip64LocatorSize &&
                     std::memcmp(buffer.u8() + eocd - kZip64LocatorSize, "PK\x06\x07", 4) == 0;
  if (has_locator) {
    ByteReader locator(buffer.bytes().subspan(eocd - kZip64LocatorSize, kZip64LocatorSize),
                       what + ": zip64 end-of-central-directory locator");
    locator.skip(4);
    uint32_t zip64_disk = locator.u32();
    uint64_t zip64_eocd_offset = locator.u64();
    uint32_t total_disks = locator.u32();
    if (zip64_disk != 0 || total_disks > 1) {
      throw UnsupportedError(
          fmt::format("{}: multi-disk (split) zip archives are not supported: zip64 locator names "
                      "disk {} of {}",
                      what, zip64_disk, total_disks));
    }
    // The zip64 EOCD record normally sits right before the locator; its declared offset is
    // relative to the archive start, which may differ from the file start by a prefix.
    uint64_t expected = eocd - kZip64LocatorSize;
    if (expected < kZip64EocdSize) {
      fail(
          "{}: zip64 locator at offset {} leaves no room for the zip64 end-of-central-directory "
          "record before it",
          what, expected);
    }
    uint64_t record = expected - kZip64EocdSize;
    if (std::memcmp(buffer.u8() + record, "PK\x06\x06", 4) != 0) {
      // A zip64 EOCD with extensible data is longer; follow the declared offset instead.
      record = zip64_eocd_offset;
      if (record > file_size - 4 || std::memcmp(buffer.u8() + record, "PK\x06\x06", 4) != 0) {
        fail(
            "{}: zip64 end-of-central-directory record not found: expected signature PK\\6\\6 "
            "at offset {} (locator says {})",
            what, expected - kZip64EocdSize, zip64_eocd_offset);
      }
    }
    ByteReader z(buffer.bytes().subspan(record), what + ": zip64 end-of-central-directory record");
    z.skip(4);
    uint64_t record_size = z.u64();
    if (record_size < kZip64EocdSize - 12 || record_size > eocd - record) {
      fail(
          "{}: zip64 end-of-central-directory record at offset {} declares size {}, expected "
          "between {} and {}",
          what, record, record_size, kZip64EocdSize - 12, eocd - record);
    }
    z.skip(4);  // version made by, version needed
    disk = z.u32();
    cd_disk = z.u32();
    entries_on_disk = z.u64();
    entry_count = z.u64();
    cd_size = z.u64();
    cd_offset = z.u64();
    cd_end = record;
    if (record < zip64_eocd_offset) {
      fail("{}: zip64 locator points at offset {}, past the zip64 record found at {}", what,
           zip64_eocd_offset, record);
    }
  } else if (entry_count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
    fail(
        "{}: end-of-central-directory record at offset {} has saturated fields (entries {}, "
        "size {}, offset {}) but no zip64 locator precedes it",
        what, eocd, entry_count, cd_size, cd_offset);
  }
  if (disk != 0 || cd_disk != 0 || entries_on_disk != entry_count) {
    throw UnsupportedError(fmt::format(
        "{}: multi-disk (split) zip archives are not supported: disk {}, central directory on "
        "disk {}, {} of {} entries on this disk",
        what, disk, cd_disk, entries_on_disk, entry_count));
  }
  uint64_t cd_declared_end = checked_add(cd_offset, cd_size, what + ": central directory end");
  if (cd_declared_end > cd_end) {
    fail("{}: central directory (offset {}, size {}) would end at {}, past its end record at {}",
         what, cd_offset, cd_size, cd_declared_end, cd_end);
  }
  archive.prefix_size_ = cd_end - cd_declared_end;
  const uint64_t prefix = archive.prefix_size_;
  const uint64_t cd_start = prefix + cd_offset;

  if (entry_count > limits.max_items) {
    throw LimitError(fmt::format("{}: {} entries exceed the limit of {} (Limits::max_items)", what,
                                 entry_count, limits.max_items));
  }
  if (entry_count > cd_size / kCentralHeaderSize) {
    fail("{}: {} entries declared, but the {}-byte central directory holds at most {}", what,
         entry_count, cd_size, cd_size / kCentralHeaderSize);
  }

  ByteReader cd(buffer.bytes().subspan(cd_start, cd_size), what + ": central directory");
  archive.entries_.reserve(entry_count);
  for (uint64_t index = 0; index < entry_count; ++index) {
    const uint64_t header_offset = cd_start + cd.position();
    std::string where =
        fmt::format("{}: central directory entry {} at offset {}", what, index, header_offset);
    if (cd.remaining() < kCentralHeaderSize) {
      fail("{}: truncated: {} bytes left in the central directory, a header needs {}", where,
           cd.remaining(), kCentralHeaderSize);
    }
    uint32_t signature = cd.u32();
    if (signature != kCentralHeaderSignature) {
      fail("{}: expected signature PK\\1\\2 (0x{:08x}), found 0x{:08x}", where,
           kCentralHeaderSignature, signature);
    }
    ZipEntry entry;
    cd.skip(4);  // version made by, version needed
    entry.flags = cd.u16();
    entry.method = cd.u16();
    cd.skip(4);  // time, date
    entry.crc32 = cd.u32();
    uint32_t csize32 = cd.u32();
    uint32_t usize32 = cd.u32();
    uint16_t name_length = cd.u16();
    uint16_t extra_length = cd.u16();
    uint16_t comment_length_entry = cd.u16();
    uint16_t disk_start = cd.u16();
    cd.skip(6);  // internal and external attributes
    uint32_t offset32 = cd.u32();
    if (uint64_t{name_length} + extra_length + comment_length_entry > cd.remaining()) {
      fail(
          "{}: name, extra field and comment ({} + {} + {} bytes) run past the central "
          "directory ({} bytes left)",
          where, name_length, extra_length, comment_length_entry, cd.remaining());
    }
    entry.name = std::string(cd.take_string(name_length));
    where = fmt::format("{}: record '{}' (central directory entry {} at offset {})", what,
                        entry.name, index, header_offset);
    auto extra = cd.take(extra_length);
    cd.skip(comment_length_entry);

    Zip64Fields fields{usize32, csize32, offset32};
    apply_zip64_extra(extra, fields, usize32 == 0xFFFFFFFF, csize32 == 0xFFFFFFFF,
                      offset32 == 0xFFFFFFFF, where);
    entry.uncompressed_size = fields.uncompressed_size;
    entry.compressed_size = fields.compressed_size;
    if (disk_start != 0 && disk_start != 0xFFFF) {
      throw UnsupportedError(fmt::format("{}: starts on disk {}; split archives are not supported",
                                         where, disk_start));
    }
    if (name_length == 0) fail("{}: empty record name", where);
    if ((entry.flags & kEncryptionFlags) != 0) {
      throw UnsupportedError(
          fmt::format("{}: encrypted records are not supported (general purpose flags 0x{:04x})",
                      where, entry.flags));
    }
    if ((entry.flags & ~kAcceptedFlags) != 0) {
      throw UnsupportedError(
          fmt::format("{}: unsupported general purpose flags 0x{:04x} (accepted: 0x{:04x})", where,
                      entry.flags, kAcceptedFlags));
    }
    if (entry.method != ZipEntry::kStored && entry.method != ZipEntry::kDeflated) {
      throw UnsupportedError(
          fmt::format("{}: compression method {} is not supported (only 0 stored, 8 deflate)",
                      where, entry.method));
    }
    if (entry.is_stored() && entry.compressed_size != entry.uncompressed_size) {
      fail("{}: stored record with compressed size {} != uncompressed size {}", where,
           entry.compressed_size, entry.uncompressed_size);
    }
    entry.name_problem = describe_name_problem(entry.name);

    // The local header: the data starts after *its* name and extra field (torch pads there),
    // and its name must be the central directory's (a mismatch hides content from scanners).
    uint64_t local = checked_add(prefix, fields.local_header_offset, where + ": local header");
    entry.local_header_offset = local;
    if (local < prefix || local > cd_start || cd_start - local < kLocalHeaderSize) {
      fail("{}: local header offset {} is outside the archive's records [{}, {})", where,
           fields.local_header_offset, 0, cd_offset);
    }
    ByteReader lh(buffer.bytes().subspan(local, cd_start - local), where + ": local header");
    uint32_t local_signature = lh.u32();
    if (local_signature != kLocalHeaderSignature) {
      fail("{}: expected local header signature PK\\3\\4 (0x{:08x}) at offset {}, found 0x{:08x}",
           where, kLocalHeaderSignature, local, local_signature);
    }
    lh.skip(2);
    uint16_t local_flags = lh.u16();
    uint16_t local_method = lh.u16();
    lh.skip(4);
    uint32_t local_crc = lh.u32();
    uint32_t local_csize = lh.u32();
    uint32_t local_usize = lh.u32();
    uint16_t local_name_length = lh.u16();
    uint16_t local_extra_length = lh.u16();
    if (uint64_t{local_name_length} + local_extra_length > lh.remaining()) {
      fail("{}: local header name and extra field ({} + {} bytes) run past the records", where,
           local_name_length, local_extra_length);
    }
    std::string_view local_name = lh.take_string(local_name_length);
    if (local_name != entry.name) {
      fail("{}: local header at offset {} names '{}', the central directory '{}'", where, local,
           local_name, entry.name);
    }
    if (local_method != entry.method) {
      fail("{}: local header method {} differs from the central directory's {}", where,
           local_method, entry.method);
    }
    if ((local_flags & kEncryptionFlags) != 0) {
      throw UnsupportedError(fmt::format(
          "{}: local header marks the record encrypted (flags 0x{:04x})", where, local_flags));
    }
    if ((local_flags & kDataDescriptorFlag) == 0) {
      // Without a data descriptor the local header carries the real values (or zip64 markers).
      if (local_crc != entry.crc32) {
        fail("{}: local header CRC-32 0x{:08x} differs from the central directory's 0x{:08x}",
             where, local_crc, entry.crc32);
      }
      if ((local_csize != 0xFFFFFFFF && local_csize != entry.compressed_size) ||
          (local_usize != 0xFFFFFFFF && local_usize != entry.uncompressed_size)) {
        fail("{}: local header sizes {}/{} differ from the central directory's {}/{}", where,
             local_csize, local_usize, entry.compressed_size, entry.uncompressed_size);
      }
    }
    lh.skip(local_extra_length);
    entry.data_offset = local + lh.position();
    uint64_t data_end = checked_add(entry.data_offset, entry.compressed_size, where + ": data");
    if (data_end > cd_start) {
      fail(
          "{}: {} bytes of data at offset {} run past the start of the central directory at {} "
          "(file size {})",
          where, entry.compressed_size, entry.data_offset, cd_start, file_size);
    }
    archive.entries_.push_back(std::move(entry));
  }
  if (!cd.at_end()) {
    fail("{}: {} unexplained bytes after the {} central directory entries", what, cd.remaining(),
         entry_count);
  }

  // Records must not overlap: a zip whose entries share bytes is a classic scanner bypass and
  // zip bomb construction.
  std::vector<size_t> by_offset(archive.entries_.size());
  std::iota(by_offset.begin(), by_offset.end(), size_t{0});
  std::sort(by_offset.begin(), by_offset.end(), [&](size_t a, size_t b) {
    return archive.entries_[a].local_header_offset < archive.entries_[b].local_header_offset;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const ZipEntry& previous = archive.entries_[by_offset[i - 1]];
    const ZipEntry& current = archive.entries_[by_offset[i]];
    uint64_t previous_end = previous.data_offset + previous.compressed_size;
    if (current.local_header_offset < previous_end) {
      fail("{}: records '{}' [{}, {}) and '{}' (local header at {}) overlap", what, previous.name,
           previous.local_header_offset, previous_end, current.name, current.local_header_offset);
    }
  }

  archive.sorted_by_name_.resize(archive.entries_.size());
  std::iota(archive.sorted_by_name_.begin(), archive.sorted_by_name_.end(), size_t{0});
  std::sort(
      archive.sorted_by_name_.begin(), archive.sorted_by_name_.end(),
      [&](size_t a, size_t b) { return archive.entries_[a].name < archive.entries_[b].name; });
  for (size_t i = 1; i < archive.sorted_by_name_.size(); ++i) {
    const std::string& a = archive.entries_[archive.sorted_by_name_[i - 1]].name;
    if (a == archive.entries_[archive.sorted_by_name_[i]].name) {
      fail("{}: duplicate record name '{}'", what, a);
    }
  }
  return archive;
}

const ZipEntry* ZipArchive::find(std::string_view name) const {
  auto it = std::lower_bound(sorted_by_name_.begin(), sorted_by_name_.end(), name,
                             [&](size_t i, std::string_view n) { return entries_[i].name < n; });
  if (it == sorted_by_name_.end() || entries_[*it].name != name) return nullptr;
  return &entries_[*it];
}

const ZipEntry& ZipArchive::at(std::string_view name) const {
  const ZipEntry* entry = find(name);
  if (entry == nullptr) fail("{}: no record named '{}'", name_, name);
  return *entry;
}

Buffer ZipArchive::read(const ZipEntry& entry) const {
  std::string where = fmt::format("{}: record '{}'", name_, entry.name);
  Buffer data = buffer_.slice(entry.data_offset, entry.compressed_size, where);
  if (entry.is_stored()) return data;

  if (entry.uncompressed_size > limits_.max_bytes ||
      entry.uncompressed_size > limits_.max_allocation) {
    throw LimitError(fmt::format(
        "{}: inflates to {} bytes, over the limit of {} (Limits::max_bytes/max_allocation)", where,
        entry.uncompressed_size, std::min(limits_.max_bytes, limits_.max_allocation)));
  }
  uint64_t ratio_bound =
      checked_mul(std::max<uint64_t>(entry.compressed_size, 1), limits_.max_compression_ratio,
                  where + ": compression ratio bound");
  if (entry.uncompressed_size > ratio_bound) {
    throw LimitError(fmt::format(
        "{}: {} compressed bytes declare {} inflated bytes, a ratio over the limit of {} "
        "(Limits::max_compression_ratio; zip bomb?)",
        where, entry.compressed_size, entry.uncompressed_size, limits_.max_compression_ratio));
  }

  std::vector<std::byte> out(entry.uncompressed_size);
  z_stream stream{};
  if (inflateInit2(&stream, -MAX_WBITS) != Z_OK) fail("{}: cannot initialise zlib", where);
  const auto* in = reinterpret_cast<const Bytef*>(data.data());
  uint64_t in_left = data.size();
  auto* out_ptr = reinterpret_cast<Bytef*>(out.data());
  uint64_t out_left = out.size();
  // One spare byte of output space detects data that inflates to more than declared.
  std::byte spare{};
  bool using_spare = false;
  int status = Z_OK;
  while (true) {
    if (stream.avail_in == 0 && in_left > 0) {
      auto n = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
      stream.next_in = const_cast<Bytef*>(in);
      stream.avail_in = n;
      in += n;
      in_left -= n;
    }
    if (stream.avail_out == 0) {
      if (out_left > 0) {
        auto n = static_cast<uInt>(std::min<uint64_t>(out_left, 1u << 30));
        stream.next_out = out_ptr;
        stream.avail_out = n;
        out_ptr += n;
        out_left -= n;
      } else if (!using_spare) {
        stream.next_out = reinterpret_cast<Bytef*>(&spare);
        stream.avail_out = 1;
        using_spare = true;
      } else {
        break;
      }
    }
    status = inflate(&stream, Z_NO_FLUSH);
    if (status == Z_STREAM_END) break;
    if (status == Z_BUF_ERROR && stream.avail_in == 0 && in_left == 0) break;
    if (status != Z_OK && status != Z_BUF_ERROR) break;
  }
  uint64_t produced = stream.total_out;
  uint64_t consumed = stream.total_in;
  std::string message = stream.msg != nullptr ? stream.msg : "";
  inflateEnd(&stream);
  if (status != Z_STREAM_END) {
    if (produced > entry.uncompressed_size) {
      throw LimitError(fmt::format("{}: inflates to more than the declared {} bytes", where,
                                   entry.uncompressed_size));
    }
    fail("{}: corrupt deflate data after {} of {} compressed bytes ({} of {} inflated): {}", where,
         consumed, entry.compressed_size, produced, entry.uncompressed_size,
         message.empty() ? std::string("stream ends early") : message);
  }
  if (produced != entry.uncompressed_size) {
    fail("{}: inflates to {} bytes, the central directory declares {}", where, produced,
         entry.uncompressed_size);
  }
  uint32_t crc = crc32(out);
  if (crc != entry.crc32) {
    fail("{}: CRC-32 mismatch: central directory says 0x{:08x}, inflated data has 0x{:08x}", where,
         entry.crc32, crc);
  }
  return Buffer::adopt(std::move(out));
}

void ZipArchive::verify_crc(const ZipEntry& entry) const {
  Buffer data = read(entry);  // inflating already checks deflated records
  if (!entry.is_stored()) return;
  uint32_t crc = crc32(data.bytes());
  if (crc != entry.crc32) {
    fail("{}: record '{}': CRC-32 mismatch: central directory says 0x{:08x}, data has 0x{:08x}",
         name_, entry.name, entry.crc32, crc);
  }
}

std::filesystem::path ZipArchive::extraction_path(const ZipEntry& entry,
                                                  const std::filesystem::path& root) const {
  if (!entry.name_problem.empty()) {
    fail("{}: record '{}' cannot be extracted: its name {}", name_, entry.name, entry.name_problem);
  }
  return root / std::filesystem::path(entry.name);
}

}  // namespace torchless::formats
