#include "torchless/codec/container.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "torchless/core/byte_reader.h"
#include "torchless/core/checked.h"
#include "torchless/core/crc32.h"
#include "torchless/core/error.h"

namespace torchless::codec {
namespace {

// magic, version, flags, package_id_len.
constexpr uint64_t kFixedHeaderSize = 17;
// shift[3], min_coord, max_coord (f64), map_size, cube_size (u32), num_points (u64),
// num_blocks (u32).
constexpr uint64_t kGeometrySize = 3 * 8 + 8 + 8 + 4 + 4 + 8 + 4;
// Each directory entry is five varint32s of at least one byte.
constexpr uint64_t kMinEntrySize = 5;
constexpr uint32_t kMinStringLength = 8;

const char* const kEntryFields[5] = {"cube_index", "num_points", "n3", "feats_len", "xyzs_len"};

// LevelDB's varint32 decoder. Like the Python reader it accepts non-minimal encodings (they
// cannot be confused with anything else) and rejects a fifth byte with the continuation bit or
// a value above 2^32 - 1.
uint32_t read_varint32(ByteReader& reader, uint64_t limit, size_t entry, const char* field) {
  uint64_t start = reader.position();
  uint64_t result = 0;
  for (int shift = 0; shift <= 28; shift += 7) {
    if (reader.position() >= limit) {
      fail("{}: directory entry {} ({}) at offset {}: varint32 runs past the end of the file",
           reader.what(), entry, field, start);
    }
    uint8_t byte = reader.u8();
    result |= uint64_t{byte & 0x7Fu} << shift;
    if ((byte & 0x80) == 0) {
      if (result > UINT32_MAX) break;
      return static_cast<uint32_t>(result);
    }
  }
  fail(
      "{}: directory entry {} ({}) at offset {}: invalid varint32 (more than 5 bytes or above "
      "2^32 - 1)",
      reader.what(), entry, field, start);
}

void put_varint32(std::string& out, uint32_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

template <typename T>
void put_le(std::string& out, T value) {
  static_assert(std::is_unsigned_v<T>);
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}

void put_f64(std::string& out, double value) {
  put_le(out, std::bit_cast<uint64_t>(value));
}

uint32_t crc32_of(std::string_view bytes) {
  return crc32(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
}

uint64_t cubes_per_axis_of(uint32_t map_size, uint32_t cube_size) {
  return (uint64_t{map_size} + cube_size - 1) / cube_size;
}

// cube_index < D³ without overflowing: D ≥ 2048 makes D³ ≥ 2^33, above every u32.
bool cube_index_in_range(uint32_t cube_index, uint64_t d) {
  return d >= 2048 || cube_index < d * d * d;
}

// The checks shared by reader and writer on the normalisation and the grid; `where` says which.
void check_geometry(const Container& c, std::string_view where, uint64_t geometry_offset) {
  for (int a = 0; a < 3; ++a) {
    if (!std::isfinite(c.shift[a])) {
      fail("{}: shift[{}] at offset {}: expected a finite number, found {}", where, a,
           geometry_offset + 8 * a, c.shift[a]);
    }
  }
  if (!std::isfinite(c.min_coord) || !std::isfinite(c.max_coord) || !(c.max_coord > c.min_coord)) {
    fail(
        "{}: min_coord/max_coord at offset {}: expected finite values with max_coord > "
        "min_coord, found {} / {}",
        where, geometry_offset + 24, c.min_coord, c.max_coord);
  }
  if (c.map_size == 0 || c.cube_size == 0 || c.cube_size > c.map_size) {
    fail(
        "{}: map_size/cube_size at offset {}: expected 1 <= cube_size <= map_size, found "
        "map_size {} and cube_size {}",
        where, geometry_offset + 40, c.map_size, c.cube_size);
  }
}

void check_entry(const ContainerBlock& b, size_t index, uint64_t d, std::string_view where,
                 uint64_t entry_offset, uint64_t feats_len, uint64_t xyzs_len) {
  if (!cube_index_in_range(b.cube_index, d)) {
    fail(
        "{}: block {} (directory entry at offset {}): cube_index {} outside the {}^3 cubes of "
        "the grid",
        where, index, entry_offset, b.cube_index, d);
  }
  if (b.n3 == 0) {
    fail("{}: block {} (cube {}, directory entry at offset {}): n3 is 0, expected >= 1", where,
         index, b.cube_index, entry_offset);
  }
  for (auto [field, length] :
       {std::pair{"feats_len", feats_len}, std::pair{"xyzs_len", xyzs_len}}) {
    if (length < kMinStringLength || length % 4 != 0) {
      fail(
          "{}: block {} (cube {}, directory entry at offset {}): {} {} is not a multiple of 4 "
          ">= 8 (CompressAI rANS strings are 32-bit words, at least the two state words)",
          where, index, b.cube_index, entry_offset, field, length);
    }
  }
}

}  // namespace

uint32_t Container::cubes_per_axis() const {
  if (cube_size == 0) fail("container: cube_size is 0");
  return static_cast<uint32_t>(cubes_per_axis_of(map_size, cube_size));
}

std::array<uint32_t, 3> Container::cube_coordinates(uint32_t cube_index) const {
  uint64_t d = cubes_per_axis();
  uint64_t dd = d * d;  // < 2^64: d <= 2^32 - 1
  return {static_cast<uint32_t>(cube_index / dd), static_cast<uint32_t>((cube_index / d) % d),
          static_cast<uint32_t>(cube_index % d)};
}

std::vector<size_t> Container::damaged_blocks() const {
  std::vector<size_t> out;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (blocks[i].damaged) out.push_back(i);
  }
  return out;
}

Container Container::parse(Buffer bytes, std::string_view name,
                           const ContainerReadOptions& options) {
  std::string what(name);
  ByteReader reader(bytes.bytes(), what);
  if (bytes.size() < kFixedHeaderSize) {
    fail(
        "{}: {} bytes, shorter than the {}-byte fixed header (magic, version, flags, "
        "package_id_len)",
        what, bytes.size(), kFixedHeaderSize);
  }
  auto magic = reader.take_string(8);
  if (magic != kContainerMagic) {
    std::string found;
    for (char ch : magic) found += fmt::format("{:02x}", static_cast<unsigned char>(ch));
    fail(
        "{}: magic at offset 0: expected \"TLPCLOUD\", found bytes {} (not a torchless "
        "point-cloud container)",
        what, found);
  }
  uint32_t version = reader.u32();
  if (version != kContainerVersion) {
    throw UnsupportedError(fmt::format("{}: version at offset 8: expected {}, found {}", what,
                                       kContainerVersion, version));
  }
  uint32_t flags = reader.u32();
  if (flags != 0) {
    throw UnsupportedError(
        fmt::format("{}: flags at offset 12: expected 0, found 0x{:08x}", what, flags));
  }
  uint8_t id_length = reader.u8();
  if (reader.remaining() < id_length + 32 + kGeometrySize) {
    fail(
        "{}: truncated header at offset 17: package_id ({} bytes), manifest_sha256 and geometry "
        "need {} bytes, {} left",
        what, id_length, id_length + 32 + kGeometrySize, reader.remaining());
  }
  Container c;
  auto id = reader.take_string(id_length);
  for (size_t i = 0; i < id.size(); ++i) {
    auto ch = static_cast<unsigned char>(id[i]);
    if (ch < 0x20 || ch > 0x7E) {
      fail("{}: package_id at offset {}: byte {} is 0x{:02x}, expected printable ASCII", what, 17,
           i, ch);
    }
  }
  c.package_id = std::string(id);
  auto digest = reader.take(32);
  std::memcpy(c.manifest_sha256.data(), digest.data(), 32);
  uint64_t geometry_offset = reader.position();
  for (auto& s : c.shift) s = reader.f64();
  c.min_coord = reader.f64();
  c.max_coord = reader.f64();
  c.map_size = reader.u32();
  c.cube_size = reader.u32();
  c.num_points = reader.u64();
  uint64_t num_blocks_offset = reader.position();
  uint32_t num_blocks = reader.u32();
  check_geometry(c, what, geometry_offset);
  uint64_t d = cubes_per_axis_of(c.map_size, c.cube_size);

  // Bound the directory by the file before allocating for it.
  if (reader.remaining() < uint64_t{num_blocks} * kMinEntrySize + 4) {
    fail(
        "{}: num_blocks at offset {}: {} blocks need at least {} bytes of directory and CRC, "
        "only {} left (truncated?)",
        what, num_blocks_offset, num_blocks, uint64_t{num_blocks} * kMinEntrySize + 4,
        reader.remaining());
  }
  struct Entry {
    uint64_t offset;
    uint32_t values[5];
  };
  std::vector<Entry> entries(num_blocks);
  for (uint32_t i = 0; i < num_blocks; ++i) {
    entries[i].offset = reader.position();
    for (int f = 0; f < 5; ++f) {
      entries[i].values[f] = read_varint32(reader, bytes.size(), i, kEntryFields[f]);
    }
  }
  uint64_t header_end = reader.position();
  if (reader.remaining() < 4) {
    fail("{}: header_crc32 at offset {}: need 4 bytes, {} left (truncated?)", what, header_end,
         reader.remaining());
  }
  uint32_t stored_header_crc = reader.u32();
  uint32_t header_crc = crc32(bytes.bytes().subspan(0, header_end));
  if (header_crc != stored_header_crc) {
    fail(
        "{}: header_crc32 at offset {} does not match: stored 0x{:08x}, computed 0x{:08x} over "
        "bytes [0, {}) (the header or the block directory is damaged)",
        what, header_end, stored_header_crc, header_crc, header_end);
  }

  uint64_t expected_size = reader.position();
  c.blocks.resize(num_blocks);
  for (uint32_t i = 0; i < num_blocks; ++i) {
    auto& b = c.blocks[i];
    const auto* v = entries[i].values;
    b.cube_index = v[0];
    b.num_points = v[1];
    b.n3 = v[2];
    check_entry(b, i, d, what, entries[i].offset, v[3], v[4]);
    expected_size = checked_add(expected_size, uint64_t{v[3]} + v[4] + 4, what);
  }
  if (expected_size != bytes.size()) {
    fail("{}: the directory describes a file of {} bytes, the file has {} ({})", what,
         expected_size, bytes.size(),
         expected_size > bytes.size() ? "truncated" : "trailing bytes");
  }

  uint64_t offset = reader.position();
  for (uint32_t i = 0; i < num_blocks; ++i) {
    auto& b = c.blocks[i];
    uint64_t feats_len = entries[i].values[3];
    uint64_t xyzs_len = entries[i].values[4];
    b.offset = offset;
    auto payload = bytes.slice(offset, feats_len + xyzs_len, "block payload");
    b.feats = payload.slice(0, feats_len);
    b.xyzs = payload.slice(feats_len, xyzs_len);
    reader.seek(offset + feats_len + xyzs_len);
    b.stored_crc32 = reader.u32();
    uint32_t computed = crc32(payload.bytes());
    b.damaged = computed != b.stored_crc32;
    if (b.damaged && options.strict) {
      fail(
          "{}: block {} (cube {}) at offset {}: block_crc32 does not match: stored 0x{:08x}, "
          "computed 0x{:08x} (block damaged)",
          what, i, b.cube_index, offset, b.stored_crc32, computed);
    }
    offset += feats_len + xyzs_len + 4;
  }
  return c;
}

Container Container::read(const std::filesystem::path& path, const ContainerReadOptions& options) {
  return parse(Buffer::map_file(path), path.string(), options);
}

std::string Container::to_bytes() const {
  constexpr std::string_view where = "container writer";
  if (package_id.size() > kMaxPackageIdLength) {
    fail("{}: package_id is {} bytes, at most {} fit", where, package_id.size(),
         kMaxPackageIdLength);
  }
  for (char ch : package_id) {
    auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u > 0x7E)
      fail("{}: package_id holds byte 0x{:02x}, not printable ASCII", where, u);
  }
  check_geometry(*this, where, 0);
  if (blocks.size() > UINT32_MAX) fail("{}: {} blocks, at most 2^32 - 1 fit", where, blocks.size());
  uint64_t d = cubes_per_axis_of(map_size, cube_size);

  std::string out;
  out.append(kContainerMagic);
  put_le(out, kContainerVersion);
  put_le(out, uint32_t{0});
  out.push_back(static_cast<char>(package_id.size()));
  out.append(package_id);
  out.append(reinterpret_cast<const char*>(manifest_sha256.data()), manifest_sha256.size());
  for (double s : shift) put_f64(out, s);
  put_f64(out, min_coord);
  put_f64(out, max_coord);
  put_le(out, map_size);
  put_le(out, cube_size);
  put_le(out, num_points);
  put_le(out, static_cast<uint32_t>(blocks.size()));
  for (size_t i = 0; i < blocks.size(); ++i) {
    const auto& b = blocks[i];
    if (b.feats.size() > UINT32_MAX || b.xyzs.size() > UINT32_MAX) {
      fail("{}: block {}: a string longer than 2^32 - 1 bytes", where, i);
    }
    check_entry(b, i, d, where, out.size(), b.feats.size(), b.xyzs.size());
    for (uint32_t v : {b.cube_index, b.num_points, b.n3, static_cast<uint32_t>(b.feats.size()),
                       static_cast<uint32_t>(b.xyzs.size())}) {
      put_varint32(out, v);
    }
  }
  put_le(out, crc32_of(out));
  for (const auto& b : blocks) {
    size_t start = out.size();
    out.append(b.feats.view());
    out.append(b.xyzs.view());
    put_le(out, crc32_of(std::string_view(out).substr(start)));
  }
  return out;
}

void Container::write(const std::filesystem::path& path) const {
  write_file_atomic(path, to_bytes());
}

}  // namespace torchless::codec
