// PCD, the Point Cloud Library's format (v0.5 to v0.7 headers). The header is text, one keyword
// per line (VERSION FIELDS SIZE TYPE COUNT WIDTH HEIGHT VIEWPOINT POINTS DATA), then:
//   DATA ascii              one point per line, the fields' values in FIELDS order;
//   DATA binary             points packed one after the other (array of structures);
//   DATA binary_compressed  uint32 compressed size, uint32 uncompressed size, then LZF data
//                           that decompresses to the fields one after the other (structure of
//                           arrays): every point's x, then every point's y, ...
// Packed colours ("rgb"/"rgba", 4 bytes, stored as a float or uint32) hold 0x00RRGGBB.
#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>

#include "formats/pointcloud/text_scanner.h"
#include "torchless/core/checked.h"
#include "torchless/core/error.h"
#include "torchless/formats/point_cloud.h"

namespace torchless::formats {
namespace {

struct Field {
  std::string name;
  size_t size = 4;
  char type = 'F';
  size_t count = 1;
  size_t offset = 0;  // within one point (binary) or one field block per point (compressed)
};

enum class Data { kAscii, kBinary, kCompressed };

uint64_t parse_count(std::string_view word, const std::string& where) {
  uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(word.data(), word.data() + word.size(), value);
  if (ec != std::errc() || ptr != word.data() + word.size()) {
    fail("{}: '{}' is not a non-negative integer", where, word.substr(0, 40));
  }
  return value;
}

double decode_value(const uint8_t* p, const Field& f) {
  switch (f.type) {
    case 'F':
      if (f.size == 4) {
        float v;
        std::memcpy(&v, p, 4);
        return v;
      } else {
        double v;
        std::memcpy(&v, p, 8);
        return v;
      }
    case 'U':
      switch (f.size) {
        case 1:
          return p[0];
        case 2: {
          uint16_t v;
          std::memcpy(&v, p, 2);
          return v;
        }
        case 4: {
          uint32_t v;
          std::memcpy(&v, p, 4);
          return v;
        }
        default: {
          uint64_t v;
          std::memcpy(&v, p, 8);
          return static_cast<double>(v);
        }
      }
    default:
      switch (f.size) {
        case 1:
          return static_cast<int8_t>(p[0]);
        case 2: {
          int16_t v;
          std::memcpy(&v, p, 2);
          return v;
        }
        case 4: {
          int32_t v;
          std::memcpy(&v, p, 4);
          return v;
        }
        default: {
          int64_t v;
          std::memcpy(&v, p, 8);
          return static_cast<double>(v);
        }
      }
  }
}

enum class Role : uint8_t { kSkip, kPosition, kNormal, kColor, kAttribute };

struct Slot {
  Role role = Role::kSkip;
  int axis = 0;
  size_t attribute = 0;
};

}  // namespace

PointCloud parse_pcd(std::span<const std::byte> bytes, const std::string& name,
                     const PointCloudReadOptions& options, PointCloudReadInfo* info) {
  static_assert(std::endian::native == std::endian::little,
                "PCD binary data is host-endian as PCL wrote it; only little-endian is supported");
  std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  std::vector<Field> fields;
  std::vector<size_t> sizes, counts;
  std::vector<char> types;
  bool have_fields = false, have_size = false, have_type = false, have_count = false;
  bool have_width = false, have_height = false, have_points = false;
  uint64_t width = 0, height = 1, points = 0;
  Data data = Data::kAscii;
  size_t pos = 0, line_number = 0, data_offset = 0;
  bool have_data = false;
  while (!have_data) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) {
      fail("{}: PCD header has no 'DATA' line (header ends at offset {}, line {})", name, pos,
           line_number + 1);
    }
    std::string_view line = text.substr(pos, eol - pos);
    const size_t line_offset = pos;
    pos = eol + 1;
    ++line_number;
    auto words = detail::split_words(line);
    if (words.empty() || words[0].front() == '#') continue;
    const std::string where =
        fmt::format("{}: PCD header line {} (offset {})", name, line_number, line_offset);
    const std::string_view key = words[0];
    std::vector<std::string_view> values(words.begin() + 1, words.end());
    if (key == "VERSION") {
      continue;
    } else if (key == "FIELDS" || key == "COLUMNS") {
      if (values.empty()) fail("{}: {} lists no fields", where, key);
      fields.clear();
      for (auto v : values) fields.push_back(Field{std::string(v)});
      have_fields = true;
    } else if (key == "SIZE") {
      sizes.clear();
      for (auto v : values) {
        uint64_t s = parse_count(v, where);
        if (s != 1 && s != 2 && s != 4 && s != 8)
          fail("{}: field size {} is not 1, 2, 4 or 8", where, s);
        sizes.push_back(static_cast<size_t>(s));
      }
      have_size = true;
    } else if (key == "TYPE") {
      types.clear();
      for (auto v : values) {
        if (v != "F" && v != "U" && v != "I")
          fail("{}: field type '{}' is not F, U or I", where, v);
        types.push_back(v[0]);
      }
      have_type = true;
    } else if (key == "COUNT") {
      counts.clear();
      for (auto v : values) {
        uint64_t c = parse_count(v, where);
        if (c == 0 || c > (1u << 20)) fail("{}: field count {} out of range 1..2^20", where, c);
        counts.push_back(static_cast<size_t>(c));
      }
      have_count = true;
    } else if (key == "WIDTH") {
      if (values.size() != 1) fail("{}: WIDTH takes one value", where);
      width = parse_count(values[0], where);
      have_width = true;
    } else if (key == "HEIGHT") {
      if (values.size() != 1) fail("{}: HEIGHT takes one value", where);
      height = parse_count(values[0], where);
      have_height = true;
    } else if (key == "POINTS") {
      if (values.size() != 1) fail("{}: POINTS takes one value", where);
      points = parse_count(values[0], where);
      have_points = true;
    } else if (key == "VIEWPOINT") {
      continue;
    } else if (key == "DATA") {
      if (values.size() != 1) fail("{}: DATA takes one value", where);
      if (values[0] == "ascii") {
        data = Data::kAscii;
      } else if (values[0] == "binary") {
        data = Data::kBinary;
      } else if (values[0] == "binary_compressed") {
        data = Data::kCompressed;
      } else {
        fail("{}: unknown DATA encoding '{}' (expected ascii, binary or binary_compressed)", where,
             values[0]);
      }
      have_data = true;
      data_offset = pos;
    } else {
      fail("{}: unknown PCD header keyword '{}'", where, key.substr(0, 40));
    }
  }
  if (!have_fields) fail("{}: PCD header has no FIELDS line", name);
  if (!have_size) fail("{}: PCD header has no SIZE line", name);
  const size_t nf = fields.size();
  if (sizes.size() != nf)
    fail("{}: PCD header lists {} FIELDS but {} SIZEs", name, nf, sizes.size());
  if (have_type && types.size() != nf) {
    fail("{}: PCD header lists {} FIELDS but {} TYPEs", name, nf, types.size());
  }
  if (have_count && counts.size() != nf) {
    fail("{}: PCD header lists {} FIELDS but {} COUNTs", name, nf, counts.size());
  }
  if (!have_points) {
    if (!have_width) fail("{}: PCD header has neither POINTS nor WIDTH", name);
    points = checked_mul(width, height, "PCD WIDTH*HEIGHT");
  }
  if (!have_width) width = points;
  if (!have_height) height = 1;
  if (have_width && have_points && checked_mul(width, height, "PCD WIDTH*HEIGHT") != points) {
    fail("{}: PCD header says WIDTH {} x HEIGHT {} but POINTS {}", name, width, height, points);
  }

  size_t stride = 0;
  for (size_t f = 0; f < nf; ++f) {
    Field& field = fields[f];
    field.size = sizes[f];
    // v0.5 headers have no TYPE: their fields were floats (or 1-byte unsigned).
    field.type = have_type ? types[f] : (field.size >= 4 ? 'F' : 'U');
    field.count = have_count ? counts[f] : 1;
    if (field.type == 'F' && field.size != 4 && field.size != 8) {
      fail("{}: PCD field '{}' is a float of {} bytes (expected 4 or 8)", name, field.name,
           field.size);
    }
    field.offset = stride;
    stride = checked_add(stride, checked_mul(field.size, field.count, "PCD point size"),
                         "PCD point size");
  }
  if (stride == 0) fail("{}: PCD points have no bytes", name);

  // Roles, in the names PCL gives them.
  std::vector<Slot> slots(nf);
  PointCloud cloud;
  std::array<int, 3> have_pos{-1, -1, -1}, have_normal{-1, -1, -1};
  int color_field = -1;
  for (size_t f = 0; f < nf; ++f) {
    const Field& field = fields[f];
    static constexpr std::string_view kPos[] = {"x", "y", "z"};
    static constexpr std::string_view kNormal[] = {"normal_x", "normal_y", "normal_z"};
    bool assigned = false;
    for (int a = 0; a < 3; ++a) {
      if (field.name == kPos[a] && field.count == 1) {
        if (have_pos[a] >= 0) fail("{}: PCD field '{}' appears twice", name, field.name);
        have_pos[a] = static_cast<int>(f);
        slots[f] = {Role::kPosition, a, 0};
        assigned = true;
      } else if (field.name == kNormal[a] && field.count == 1) {
        if (have_normal[a] >= 0) fail("{}: PCD field '{}' appears twice", name, field.name);
        have_normal[a] = static_cast<int>(f);
        slots[f] = {Role::kNormal, a, 0};
        assigned = true;
      }
    }
    if (!assigned && (field.name == "rgb" || field.name == "rgba") && field.size == 4 &&
        field.count == 1 && color_field < 0) {
      color_field = static_cast<int>(f);
      slots[f] = {Role::kColor, 0, 0};
      assigned = true;
    }
    // "_" marks padding; fields with COUNT > 1 (descriptors) are not per-point scalars.
    if (!assigned && options.keep_attributes && field.name != "_" && field.count == 1) {
      slots[f] = {Role::kAttribute, 0, cloud.attributes.size()};
      cloud.attributes.push_back({field.name, {}});
    }
  }
  if (have_pos[0] < 0 || have_pos[1] < 0 || have_pos[2] < 0) {
    fail("{}: PCD FIELDS lack x, y and z", name);
  }
  const bool with_normals = have_normal[0] >= 0 && have_normal[1] >= 0 && have_normal[2] >= 0;
  if (!with_normals) {
    for (auto& s : slots) {
      if (s.role == Role::kNormal) s = {};
    }
  }
  const bool with_colors = color_field >= 0;

  // Where point i's field f lives, and how many points the bytes can hold.
  const uint8_t* base = nullptr;
  std::vector<uint8_t> inflated;
  const bool field_major = data == Data::kCompressed;
  if (data == Data::kBinary) {
    uint64_t need = checked_mul(points, stride, "PCD binary data size");
    uint64_t have = bytes.size() - data_offset;
    if (need > have) {
      fail(
          "{}: PCD binary data at offset {}: {} points of {} bytes need {} bytes, only {} "
          "present (point {} is the first incomplete one; file truncated?)",
          name, data_offset, points, stride, need, have, have / stride);
    }
    base = reinterpret_cast<const uint8_t*>(bytes.data()) + data_offset;
  } else if (data == Data::kCompressed) {
    if (bytes.size() - data_offset < 8) {
      fail(
          "{}: PCD binary_compressed data at offset {}: need an 8-byte size header, only {} "
          "bytes left",
          name, data_offset, bytes.size() - data_offset);
    }
    uint32_t compressed_size = 0, uncompressed_size = 0;
    std::memcpy(&compressed_size, bytes.data() + data_offset, 4);
    std::memcpy(&uncompressed_size, bytes.data() + data_offset + 4, 4);
    uint64_t need = checked_mul(points, stride, "PCD data size");
    if (uncompressed_size != need) {
      fail(
          "{}: PCD binary_compressed header at offset {} declares {} uncompressed bytes, but "
          "{} points of {} bytes are {}",
          name, data_offset, uncompressed_size, points, stride, need);
    }
    if (compressed_size > bytes.size() - data_offset - 8) {
      fail(
          "{}: PCD binary_compressed data at offset {} declares {} compressed bytes, only {} "
          "present (file truncated?)",
          name, data_offset + 8, compressed_size, bytes.size() - data_offset - 8);
    }
    if (uncompressed_size > options.limits.max_allocation ||
        uncompressed_size >
            static_cast<uint64_t>(compressed_size) * options.limits.max_compression_ratio + 4096) {
      throw LimitError(fmt::format(
          "{}: PCD binary_compressed data declares {} uncompressed bytes from {} compressed "
          "(limit: ratio {}, {} bytes)",
          name, uncompressed_size, compressed_size, options.limits.max_compression_ratio,
          options.limits.max_allocation));
    }
    inflated = lzf_decompress(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()) + data_offset + 8,
                                 compressed_size),
        uncompressed_size, name + ": PCD binary_compressed data");
    base = inflated.data();
  }

  const size_t n = static_cast<size_t>(points);
  size_t reserve_points = n;
  if (data == Data::kAscii) {
    size_t tokens_per_point = 0;
    for (const auto& f : fields) tokens_per_point += f.count;
    reserve_points =
        std::min<uint64_t>(n, (bytes.size() - data_offset + 1) / (2 * tokens_per_point));
  }
  cloud.positions.reserve(3 * reserve_points);
  if (with_normals) cloud.normals.reserve(3 * reserve_points);
  if (with_colors) cloud.colors.reserve(3 * reserve_points);
  for (auto& a : cloud.attributes) a.values.reserve(reserve_points);

  detail::TextScanner scanner(bytes, data_offset);
  std::vector<double> values(nf);
  uint32_t packed_color = 0;
  uint64_t dropped = 0;
  for (size_t i = 0; i < n; ++i) {
    for (size_t f = 0; f < nf; ++f) {
      const Field& field = fields[f];
      if (data == Data::kAscii) {
        for (size_t k = 0; k < field.count; ++k) {
          std::string_view token;
          if (!scanner.next(token)) {
            fail(
                "{}: PCD ascii point {} of {}: expected a value for field '{}' at offset {}, "
                "found end of data (file truncated?)",
                name, i, n, field.name, scanner.position());
          }
          double v = 0;
          if (!detail::parse_double(token, v)) {
            fail("{}: PCD ascii point {}: field '{}' at offset {}: '{}' is not a number", name, i,
                 field.name, scanner.token_offset(), token.substr(0, 40));
          }
          if (field.type != 'F') {
            // Integer fields must hold integers of their width (a NaN or 1e30 in a U4 column
            // would otherwise be converted with undefined behaviour).
            const double bits = 8.0 * static_cast<double>(field.size);
            const double lo =
                field.type == 'U' ? 0.0 : -std::ldexp(1.0, static_cast<int>(bits) - 1);
            const double hi = field.type == 'U' ? std::ldexp(1.0, static_cast<int>(bits)) - 1
                                                : std::ldexp(1.0, static_cast<int>(bits) - 1) - 1;
            if (!(v >= lo && v <= hi) || v != std::floor(v)) {
              fail("{}: PCD ascii point {}: field '{}' at offset {}: '{}' is not a {}{} integer",
                   name, i, field.name, scanner.token_offset(), token.substr(0, 40), field.type,
                   field.size);
            }
          }
          if (k == 0) values[f] = v;
          if (k == 0 && slots[f].role == Role::kColor) {
            // PCL prints a packed rgb float as the float; an integer TYPE prints the integer.
            packed_color = field.type == 'F' ? std::bit_cast<uint32_t>(static_cast<float>(v))
                                             : static_cast<uint32_t>(v);
          }
        }
      } else if (slots[f].role != Role::kSkip) {
        const uint8_t* p = field_major ? base + field.offset * n + i * field.size * field.count
                                       : base + i * stride + field.offset;
        if (slots[f].role == Role::kColor) {
          std::memcpy(&packed_color, p, 4);
        } else {
          values[f] = decode_value(p, field);
        }
      }
    }
    float x = static_cast<float>(values[have_pos[0]]);
    float y = static_cast<float>(values[have_pos[1]]);
    float z = static_cast<float>(values[have_pos[2]]);
    if (!options.keep_nan_points && !(std::isfinite(x) && std::isfinite(y) && std::isfinite(z))) {
      ++dropped;
      continue;
    }
    cloud.positions.insert(cloud.positions.end(), {x, y, z});
    if (with_normals) {
      for (int a = 0; a < 3; ++a)
        cloud.normals.push_back(static_cast<float>(values[have_normal[a]]));
    }
    if (with_colors) {
      cloud.colors.insert(cloud.colors.end(), {static_cast<uint8_t>(packed_color >> 16),
                                               static_cast<uint8_t>(packed_color >> 8),
                                               static_cast<uint8_t>(packed_color)});
    }
    for (size_t f = 0; f < nf; ++f) {
      if (slots[f].role == Role::kAttribute) {
        cloud.attributes[slots[f].attribute].values.push_back(values[f]);
      }
    }
  }
  if (info != nullptr) {
    info->format = PointCloudFormat::kPcd;
    info->encoding = data == Data::kAscii    ? "ascii"
                     : data == Data::kBinary ? "binary"
                                             : "binary_compressed";
    info->declared_points = points;
    info->dropped_nan_points = dropped;
    info->width = width;
    info->height = height;
  }
  cloud.check_consistent();
  return cloud;
}

}  // namespace torchless::formats
