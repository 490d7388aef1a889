// PLY (Greg Turk's polygon file format), as point-cloud tools write it: see docs/formats/ply.md.
// The reader takes every element in order, decoding the one named "vertex" and stepping over
// the others (faces, edges, ...) row by row, so list properties are skipped exactly in all three
// encodings. A count declared in the header is never trusted for an allocation: it is first
// checked against the bytes that remain.
#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "formats/pointcloud/text_scanner.h"
#include "torchless/core/buffer.h"
#include "torchless/core/byte_reader.h"
#include "torchless/core/checked.h"
#include "torchless/core/error.h"
#include "torchless/formats/point_cloud.h"

namespace torchless::formats {
namespace {

enum class ScalarType : uint8_t {
  kInt8,
  kUint8,
  kInt16,
  kUint16,
  kInt32,
  kUint32,
  kFloat32,
  kFloat64
};

size_t scalar_size(ScalarType t) {
  switch (t) {
    case ScalarType::kInt8:
    case ScalarType::kUint8:
      return 1;
    case ScalarType::kInt16:
    case ScalarType::kUint16:
      return 2;
    case ScalarType::kInt32:
    case ScalarType::kUint32:
    case ScalarType::kFloat32:
      return 4;
    case ScalarType::kFloat64:
      return 8;
  }
  return 0;
}

std::optional<ScalarType> scalar_type(std::string_view name) {
  static constexpr std::pair<std::string_view, ScalarType> kNames[] = {
      {"char", ScalarType::kInt8},      {"int8", ScalarType::kInt8},
      {"uchar", ScalarType::kUint8},    {"uint8", ScalarType::kUint8},
      {"short", ScalarType::kInt16},    {"int16", ScalarType::kInt16},
      {"ushort", ScalarType::kUint16},  {"uint16", ScalarType::kUint16},
      {"int", ScalarType::kInt32},      {"int32", ScalarType::kInt32},
      {"uint", ScalarType::kUint32},    {"uint32", ScalarType::kUint32},
      {"float", ScalarType::kFloat32},  {"float32", ScalarType::kFloat32},
      {"double", ScalarType::kFloat64}, {"float64", ScalarType::kFloat64},
  };
  for (const auto& [n, t] : kNames) {
    if (n == name) return t;
  }
  return std::nullopt;
}

bool is_integer_type(ScalarType t) {
  return t != ScalarType::kFloat32 && t != ScalarType::kFloat64;
}

std::pair<double, double> integer_range(ScalarType t) {
  switch (t) {
    case ScalarType::kInt8:
      return {-128, 127};
    case ScalarType::kUint8:
      return {0, 255};
    case ScalarType::kInt16:
      return {-32768, 32767};
    case ScalarType::kUint16:
      return {0, 65535};
    case ScalarType::kInt32:
      return {-2147483648.0, 2147483647.0};
    case ScalarType::kUint32:
      return {0, 4294967295.0};
    default:
      return {0, 0};
  }
}

template <typename U>
U load(const std::byte* p, bool big_endian) {
  U v;
  std::memcpy(&v, p, sizeof(U));
  if (big_endian != (std::endian::native == std::endian::big)) v = byteswap(v);
  return v;
}

double decode_binary(const std::byte* p, ScalarType t, bool big_endian) {
  switch (t) {
    case ScalarType::kInt8:
      return static_cast<int8_t>(p[0]);
    case ScalarType::kUint8:
      return static_cast<uint8_t>(p[0]);
    case ScalarType::kInt16:
      return static_cast<int16_t>(load<uint16_t>(p, big_endian));
    case ScalarType::kUint16:
      return load<uint16_t>(p, big_endian);
    case ScalarType::kInt32:
      return static_cast<int32_t>(load<uint32_t>(p, big_endian));
    case ScalarType::kUint32:
      return load<uint32_t>(p, big_endian);
    case ScalarType::kFloat32:
      return std::bit_cast<float>(load<uint32_t>(p, big_endian));
    case ScalarType::kFloat64:
      return std::bit_cast<double>(load<uint64_t>(p, big_endian));
  }
  return 0;
}

struct Property {
  std::string name;
  ScalarType type = ScalarType::kFloat32;
  bool is_list = false;
  ScalarType count_type = ScalarType::kUint8;
};

struct Element {
  std::string name;
  uint64_t count = 0;
  std::vector<Property> properties;
  size_t header_line = 0;
};

enum class Encoding { kAscii, kLittle, kBig };

struct Header {
  Encoding encoding = Encoding::kAscii;
  std::vector<Element> elements;
  size_t data_offset = 0;
};

Header parse_header(std::span<const std::byte> bytes, const std::string& name) {
  std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  Header header;
  size_t pos = 0;
  size_t line_number = 0;
  bool have_format = false;
  while (true) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) {
      fail("{}: PLY header has no 'end_header' line (header ends at offset {}, line {})", name, pos,
           line_number + 1);
    }
    std::string_view line = text.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const size_t line_offset = pos;
    pos = eol + 1;
    ++line_number;
    if (line_number == 1) {
      if (line != "ply") {
        fail("{}: not a PLY file: first line is '{}', expected 'ply'", name, line.substr(0, 40));
      }
      continue;
    }
    auto words = detail::split_words(line);
    if (words.empty()) continue;
    const std::string_view keyword = words[0];
    auto where = [&] {
      return fmt::format("{}: PLY header line {} (offset {})", name, line_number, line_offset);
    };
    if (keyword == "comment" || keyword == "obj_info") continue;
    if (keyword == "end_header") {
      if (!have_format) fail("{}: PLY header has no 'format' line", where());
      header.data_offset = pos;
      return header;
    }
    if (keyword == "format") {
      if (words.size() != 3)
        fail("{}: expected 'format <encoding> 1.0', found '{}'", where(), line);
      if (words[1] == "ascii") {
        header.encoding = Encoding::kAscii;
      } else if (words[1] == "binary_little_endian") {
        header.encoding = Encoding::kLittle;
      } else if (words[1] == "binary_big_endian") {
        header.encoding = Encoding::kBig;
      } else {
        fail(
            "{}: unknown PLY format '{}' (expected ascii, binary_little_endian or "
            "binary_big_endian)",
            where(), words[1]);
      }
      if (words[2] != "1.0" && words[2] != "1") {
        fail("{}: unsupported PLY version '{}' (expected 1.0)", where(), words[2]);
      }
      have_format = true;
    } else if (keyword == "element") {
      if (words.size() != 3)
        fail("{}: expected 'element <name> <count>', found '{}'", where(), line);
      Element element;
      element.name = std::string(words[1]);
      element.header_line = line_number;
      auto [ptr, ec] =
          std::from_chars(words[2].data(), words[2].data() + words[2].size(), element.count);
      if (ec != std::errc() || ptr != words[2].data() + words[2].size()) {
        fail("{}: element '{}' count '{}' is not a non-negative integer", where(), words[1],
             words[2]);
      }
      header.elements.push_back(std::move(element));
    } else if (keyword == "property") {
      if (header.elements.empty()) fail("{}: 'property' before any 'element'", where());
      Property property;
      if (words.size() >= 2 && words[1] == "list") {
        if (words.size() != 5) {
          fail("{}: expected 'property list <count-type> <item-type> <name>', found '{}'", where(),
               line);
        }
        auto count_type = scalar_type(words[2]);
        auto item_type = scalar_type(words[3]);
        if (!count_type) fail("{}: unknown PLY type '{}'", where(), words[2]);
        if (!item_type) fail("{}: unknown PLY type '{}'", where(), words[3]);
        if (!is_integer_type(*count_type)) {
          fail("{}: list count type '{}' is not an integer type", where(), words[2]);
        }
        property.is_list = true;
        property.count_type = *count_type;
        property.type = *item_type;
        property.name = std::string(words[4]);
      } else {
        if (words.size() != 3)
          fail("{}: expected 'property <type> <name>', found '{}'", where(), line);
        auto type = scalar_type(words[1]);
        if (!type) fail("{}: unknown PLY type '{}' for property '{}'", where(), words[1], words[2]);
        property.type = *type;
        property.name = std::string(words[2]);
      }
      header.elements.back().properties.push_back(std::move(property));
    } else {
      fail("{}: unknown PLY header keyword '{}'", where(), keyword.substr(0, 40));
    }
  }
}

// Where each vertex property goes.
enum class Role : uint8_t { kSkip, kPosition, kNormal, kColor, kAttribute };

struct Slot {
  Role role = Role::kSkip;
  int axis = 0;          // for positions, normals, colours
  size_t attribute = 0;  // index into PointCloud::attributes
};

class PlyReader {
 public:
  PlyReader(std::span<const std::byte> bytes, const std::string& name,
            const PointCloudReadOptions& options)
      : bytes_(bytes), name_(name), options_(options) {}

  PointCloud read(PointCloudReadInfo* info) {
    header_ = parse_header(bytes_, name_);
    const Element* vertex = nullptr;
    for (const auto& e : header_.elements) {
      if (e.name == "vertex") {
        if (vertex != nullptr) fail("{}: PLY header declares element 'vertex' twice", name_);
        vertex = &e;
      }
    }
    if (vertex == nullptr) fail("{}: PLY file has no 'vertex' element", name_);
    plan_vertex(*vertex);

    if (info != nullptr) {
      info->format = PointCloudFormat::kPly;
      info->encoding = header_.encoding == Encoding::kAscii    ? "ascii"
                       : header_.encoding == Encoding::kLittle ? "binary_little_endian"
                                                               : "binary_big_endian";
      info->declared_points = vertex->count;
      info->dropped_nan_points = 0;
      info->width = vertex->count;
      info->height = 1;
    }

    pos_ = header_.data_offset;
    if (header_.encoding == Encoding::kAscii) {
      detail::TextScanner scanner(bytes_, pos_);
      for (const auto& e : header_.elements) read_ascii_element(e, scanner);
    } else {
      for (const auto& e : header_.elements) read_binary_element(e);
    }
    cloud_.check_consistent();
    return std::move(cloud_);
  }

 private:
  void plan_vertex(const Element& vertex) {
    int found_position = 0, found_normal = 0, found_color = 0;
    std::array<bool, 3> have_pos{}, have_normal{}, have_color{};
    slots_.assign(vertex.properties.size(), Slot{});
    for (size_t p = 0; p < vertex.properties.size(); ++p) {
      const Property& prop = vertex.properties[p];
      if (prop.is_list) continue;
      static constexpr std::string_view kPos[] = {"x", "y", "z"};
      static constexpr std::string_view kNormal[] = {"nx", "ny", "nz"};
      static constexpr std::string_view kColor[] = {"red", "green", "blue"};
      bool assigned = false;
      for (int a = 0; a < 3 && !assigned; ++a) {
        if (prop.name == kPos[a]) {
          if (have_pos[a]) fail("{}: vertex property '{}' declared twice", name_, prop.name);
          have_pos[a] = true;
          slots_[p] = {Role::kPosition, a, 0};
          ++found_position;
          assigned = true;
        } else if (prop.name == kNormal[a]) {
          if (have_normal[a]) fail("{}: vertex property '{}' declared twice", name_, prop.name);
          have_normal[a] = true;
          slots_[p] = {Role::kNormal, a, 0};
          ++found_normal;
          assigned = true;
        } else if (prop.name == kColor[a] && prop.type == ScalarType::kUint8) {
          if (have_color[a]) fail("{}: vertex property '{}' declared twice", name_, prop.name);
          have_color[a] = true;
          slots_[p] = {Role::kColor, a, 0};
          ++found_color;
          assigned = true;
        }
      }
      if (!assigned && options_.keep_attributes) {
        for (const auto& a : cloud_.attributes) {
          if (a.name == prop.name)
            fail("{}: vertex property '{}' declared twice", name_, prop.name);
        }
        slots_[p] = {Role::kAttribute, 0, cloud_.attributes.size()};
        cloud_.attributes.push_back({prop.name, {}});
      }
    }
    if (found_position != 3) {
      fail("{}: PLY element 'vertex' (header line {}) lacks scalar properties x, y and z", name_,
           vertex.header_line);
    }
    // A partial set (say nx without ny) is kept as plain attributes rather than guessed at.
    for (size_t p = 0; p < slots_.size(); ++p) {
      if ((slots_[p].role == Role::kNormal && found_normal != 3) ||
          (slots_[p].role == Role::kColor && found_color != 3)) {
        if (options_.keep_attributes) {
          slots_[p] = {Role::kAttribute, 0, cloud_.attributes.size()};
          cloud_.attributes.push_back({vertex.properties[p].name, {}});
        } else {
          slots_[p] = {};
        }
      }
    }
    with_normals_ = found_normal == 3;
    with_colors_ = found_color == 3;
  }

  void reserve(uint64_t rows) {
    size_t n = static_cast<size_t>(rows);
    cloud_.positions.reserve(3 * n);
    if (with_normals_) cloud_.normals.reserve(3 * n);
    if (with_colors_) cloud_.colors.reserve(3 * n);
    for (auto& a : cloud_.attributes) a.values.reserve(n);
  }

  void begin_row() {
    row_position_ = {0, 0, 0};
    row_normal_ = {0, 0, 0};
    row_color_ = {0, 0, 0};
  }

  void store(size_t p, double value, uint64_t row, size_t offset) {
    const Slot& slot = slots_[p];
    switch (slot.role) {
      case Role::kSkip:
        return;
      case Role::kPosition:
        row_position_[slot.axis] = static_cast<float>(value);
        return;
      case Role::kNormal:
        row_normal_[slot.axis] = static_cast<float>(value);
        return;
      case Role::kColor:
        if (!(value >= 0 && value <= 255)) {
          fail("{}: element 'vertex' row {} at offset {}: colour value {} outside 0..255", name_,
               row, offset, value);
        }
        row_color_[slot.axis] = static_cast<uint8_t>(value);
        return;
      case Role::kAttribute:
        cloud_.attributes[slot.attribute].values.push_back(value);
        return;
    }
  }

  void end_row() {
    cloud_.positions.insert(cloud_.positions.end(), row_position_.begin(), row_position_.end());
    if (with_normals_) {
      cloud_.normals.insert(cloud_.normals.end(), row_normal_.begin(), row_normal_.end());
    }
    if (with_colors_)
      cloud_.colors.insert(cloud_.colors.end(), row_color_.begin(), row_color_.end());
  }

  // ----- binary -----

  size_t fixed_row_bytes(const Element& e, bool& has_lists) const {
    size_t bytes = 0;
    has_lists = false;
    for (const auto& p : e.properties) {
      if (p.is_list) {
        has_lists = true;
        bytes += scalar_size(p.count_type);
      } else {
        bytes += scalar_size(p.type);
      }
    }
    return bytes;
  }

  [[noreturn]] void truncated(const Element& e, uint64_t row, size_t offset, size_t need) const {
    fail(
        "{}: element '{}' row {} of {} at offset {}: need {} bytes, only {} left (file "
        "truncated?)",
        name_, e.name, row, e.count, offset, need, bytes_.size() - std::min(offset, bytes_.size()));
  }

  void read_binary_element(const Element& e) {
    const bool big = header_.encoding == Encoding::kBig;
    const bool is_vertex = e.name == "vertex";
    bool has_lists = false;
    const size_t min_row = fixed_row_bytes(e, has_lists);
    const size_t remaining = bytes_.size() - pos_;
    // Every row takes at least min_row bytes, so a count the data cannot hold is rejected here,
    // before anything is allocated for it.
    if (min_row > 0) {
      uint64_t rows_that_fit = remaining / min_row;
      if (e.count > rows_that_fit) {
        if (!has_lists) truncated(e, rows_that_fit, pos_ + rows_that_fit * min_row, min_row);
        // With lists the exact row is found while reading.
      }
      if (is_vertex) reserve(std::min<uint64_t>(e.count, rows_that_fit));
    } else if (e.count > 0 && is_vertex) {
      fail("{}: element 'vertex' has no properties but declares {} rows", name_, e.count);
    }
    const std::byte* data = bytes_.data();
    if (!has_lists && !is_vertex) {
      pos_ += static_cast<size_t>(e.count) * min_row;
      return;
    }
    for (uint64_t row = 0; row < e.count; ++row) {
      const size_t row_offset = pos_;
      if (is_vertex) begin_row();
      for (size_t p = 0; p < e.properties.size(); ++p) {
        const Property& prop = e.properties[p];
        if (prop.is_list) {
          size_t count_bytes = scalar_size(prop.count_type);
          if (count_bytes > bytes_.size() - pos_) truncated(e, row, row_offset, count_bytes);
          double count = decode_binary(data + pos_, prop.count_type, big);
          if (count < 0) {
            fail("{}: element '{}' row {} at offset {}: list '{}' has negative length {}", name_,
                 e.name, row, pos_, prop.name, count);
          }
          pos_ += count_bytes;
          uint64_t items = static_cast<uint64_t>(count);
          uint64_t item_bytes = checked_mul(items, scalar_size(prop.type), "PLY list");
          if (item_bytes > bytes_.size() - pos_) truncated(e, row, row_offset, item_bytes);
          pos_ += static_cast<size_t>(item_bytes);
        } else {
          size_t size = scalar_size(prop.type);
          if (size > bytes_.size() - pos_) truncated(e, row, row_offset, size);
          if (is_vertex && slots_[p].role != Role::kSkip) {
            store(p, decode_binary(data + pos_, prop.type, big), row, pos_);
          }
          pos_ += size;
        }
      }
      if (is_vertex) end_row();
    }
  }

  // ----- ascii -----

  double ascii_value(const Element& e, const Property& prop, std::string_view what,
                     detail::TextScanner& scanner, uint64_t row, ScalarType type) {
    std::string_view token;
    if (!scanner.next(token)) {
      fail(
          "{}: element '{}' row {} of {}: expected a value for {} '{}' at offset {}, found end "
          "of data (file truncated?)",
          name_, e.name, row, e.count, what, prop.name, scanner.position());
    }
    double value = 0;
    if (!detail::parse_double(token, value)) {
      fail("{}: element '{}' row {}: {} '{}' at offset {}: '{}' is not a number", name_, e.name,
           row, what, prop.name, scanner.token_offset(), token.substr(0, 40));
    }
    if (is_integer_type(type)) {
      auto [lo, hi] = integer_range(type);
      if (!(value >= lo && value <= hi) || value != std::floor(value)) {
        fail(
            "{}: element '{}' row {}: {} '{}' at offset {}: '{}' is not a valid integer of its "
            "type",
            name_, e.name, row, what, prop.name, scanner.token_offset(), token.substr(0, 40));
      }
    }
    return value;
  }

  void read_ascii_element(const Element& e, detail::TextScanner& scanner) {
    const bool is_vertex = e.name == "vertex";
    if (e.properties.empty()) return;  // rows without values take no text, however many
    if (is_vertex) {
      // Each value takes at least one character and one separator.
      uint64_t per_row = std::max<size_t>(e.properties.size(), 1);
      reserve(std::min<uint64_t>(e.count, (scanner.remaining() + 1) / (2 * per_row)));
    }
    for (uint64_t row = 0; row < e.count; ++row) {
      if (is_vertex) begin_row();
      for (size_t p = 0; p < e.properties.size(); ++p) {
        const Property& prop = e.properties[p];
        if (prop.is_list) {
          double count = ascii_value(e, prop, "list length of", scanner, row, prop.count_type);
          if (count < 0) {
            fail("{}: element '{}' row {}: list '{}' has negative length {}", name_, e.name, row,
                 prop.name, count);
          }
          for (uint64_t k = 0; k < static_cast<uint64_t>(count); ++k) {
            ascii_value(e, prop, "list item of", scanner, row, prop.type);
          }
        } else {
          double value = ascii_value(e, prop, "property", scanner, row, prop.type);
          const size_t offset = scanner.token_offset();
          if (is_vertex) store(p, value, row, offset);
        }
      }
      if (is_vertex) end_row();
    }
  }

  std::span<const std::byte> bytes_;
  const std::string& name_;
  const PointCloudReadOptions& options_;
  Header header_;
  PointCloud cloud_;
  std::vector<Slot> slots_;
  bool with_normals_ = false;
  bool with_colors_ = false;
  size_t pos_ = 0;
  std::array<float, 3> row_position_{}, row_normal_{};
  std::array<uint8_t, 3> row_color_{};
};

// ----- writer -----

template <typename T>
void append_binary(std::string& out, T value, bool big_endian) {
  using U = std::conditional_t<sizeof(T) == 8, uint64_t,
                               std::conditional_t<sizeof(T) == 4, uint32_t, uint8_t>>;
  U bits = std::bit_cast<U>(value);
  if (big_endian != (std::endian::native == std::endian::big)) bits = byteswap(bits);
  char raw[sizeof(U)];
  std::memcpy(raw, &bits, sizeof(U));
  out.append(raw, sizeof(U));
}

}  // namespace

PointCloud parse_ply(std::span<const std::byte> bytes, const std::string& name,
                     const PointCloudReadOptions& options, PointCloudReadInfo* info) {
  PlyReader reader(bytes, name, options);
  return reader.read(info);
}

std::string to_ply(const PointCloud& cloud, PlyEncoding encoding) {
  cloud.check_consistent();
  const size_t n = cloud.size();
  std::string out;
  out += "ply\n";
  out += encoding == PlyEncoding::kAscii                ? "format ascii 1.0\n"
         : encoding == PlyEncoding::kBinaryLittleEndian ? "format binary_little_endian 1.0\n"
                                                        : "format binary_big_endian 1.0\n";
  out += "comment written by torchless\n";
  out += fmt::format("element vertex {}\n", n);
  out += "property float x\nproperty float y\nproperty float z\n";
  if (cloud.has_normals()) out += "property float nx\nproperty float ny\nproperty float nz\n";
  if (cloud.has_colors()) out += "property uchar red\nproperty uchar green\nproperty uchar blue\n";
  for (const auto& a : cloud.attributes) {
    if (a.name.empty() || a.name.find_first_of(" \t\r\n") != std::string::npos) {
      fail("cannot write PLY property name '{}': it must be one word", a.name);
    }
    out += fmt::format("property double {}\n", a.name);
  }
  out += "end_header\n";
  if (encoding == PlyEncoding::kAscii) {
    fmt::memory_buffer line;
    for (size_t i = 0; i < n; ++i) {
      line.clear();
      // "{}" prints the shortest text that reads back to the same float: exact round trips.
      fmt::format_to(std::back_inserter(line), "{} {} {}", cloud.positions[3 * i],
                     cloud.positions[3 * i + 1], cloud.positions[3 * i + 2]);
      if (cloud.has_normals()) {
        fmt::format_to(std::back_inserter(line), " {} {} {}", cloud.normals[3 * i],
                       cloud.normals[3 * i + 1], cloud.normals[3 * i + 2]);
      }
      if (cloud.has_colors()) {
        fmt::format_to(std::back_inserter(line), " {} {} {}", cloud.colors[3 * i],
                       cloud.colors[3 * i + 1], cloud.colors[3 * i + 2]);
      }
      for (const auto& a : cloud.attributes)
        fmt::format_to(std::back_inserter(line), " {}", a.values[i]);
      line.push_back('\n');
      out.append(line.data(), line.size());
    }
    return out;
  }
  const bool big = encoding == PlyEncoding::kBinaryBigEndian;
  size_t row_bytes = 12 + (cloud.has_normals() ? 12 : 0) + (cloud.has_colors() ? 3 : 0) +
                     8 * cloud.attributes.size();
  out.reserve(out.size() + n * row_bytes);
  for (size_t i = 0; i < n; ++i) {
    for (int d = 0; d < 3; ++d) append_binary(out, cloud.positions[3 * i + d], big);
    if (cloud.has_normals()) {
      for (int d = 0; d < 3; ++d) append_binary(out, cloud.normals[3 * i + d], big);
    }
    if (cloud.has_colors()) {
      for (int d = 0; d < 3; ++d) out.push_back(static_cast<char>(cloud.colors[3 * i + d]));
    }
    for (const auto& a : cloud.attributes) append_binary(out, a.values[i], big);
  }
  return out;
}

void write_ply(const std::filesystem::path& path, const PointCloud& cloud, PlyEncoding encoding) {
  write_file_atomic(path, to_ply(cloud, encoding));
}

}  // namespace torchless::formats
