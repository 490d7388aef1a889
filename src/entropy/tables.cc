// EntropyTables: validation and the two sidecar formats (docs/formats/entropy-tables.md).
#include "torchless/entropy/tables.h"

#include <nlohmann/json.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "torchless/core/byte_reader.h"
#include "torchless/core/checked.h"
#include "torchless/core/crc32.h"
#include "torchless/core/error.h"

namespace torchless::entropy {
namespace {

constexpr std::string_view kJsonFormat = "torchless.entropy_tables";
constexpr std::string_view kBinMagic = "TLTABLES";
constexpr uint32_t kVersion = 1;
// magic, version, kind, precision, num_tables, row_stride, num_params, scale_bound
constexpr uint64_t kBinHeaderSize = 8 + 7 * 4;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

void require_finite(const std::vector<float>& values, std::string_view what,
                    std::string_view field) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i]))
      fail("{}: {}[{}] is {}, expected a finite float", what, field, i, values[i]);
  }
}

ModelKind kind_from_name(std::string_view name, std::string_view what) {
  if (name == "EntropyBottleneck") return ModelKind::kEntropyBottleneck;
  if (name == "GaussianConditional") return ModelKind::kGaussianConditional;
  fail("{}: kind \"{}\" is neither \"EntropyBottleneck\" nor \"GaussianConditional\"", what, name);
}

// --- JSON -------------------------------------------------------------------------------------

const nlohmann::json& member(const nlohmann::json& j, const char* key, std::string_view what) {
  auto it = j.find(key);
  if (it == j.end()) fail("{}: missing field \"{}\"", what, key);
  return *it;
}

int32_t json_int32(const nlohmann::json& v, std::string_view what, std::string_view field) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned()) {
      auto u = v.get<uint64_t>();
      if (u <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max()))
        return static_cast<int32_t>(u);
    } else {
      auto s = v.get<int64_t>();
      if (std::in_range<int32_t>(s)) return static_cast<int32_t>(s);
    }
  }
  fail("{}: {} is {}, expected an int32", what, field, v.dump());
}

std::vector<int32_t> json_int32s(const nlohmann::json& j, std::string_view what,
                                 std::string_view field) {
  if (!j.is_array()) fail("{}: \"{}\" is not an array", what, field);
  std::vector<int32_t> out;
  out.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    out.push_back(json_int32(j[i], what, fmt::format("{}[{}]", field, i)));
  }
  return out;
}

float json_float(const nlohmann::json& v, std::string_view what, std::string_view field) {
  if (!v.is_number()) fail("{}: {} is {}, expected a number", what, field, v.dump());
  // Decimal -> double -> float: a 9-digit decimal of a float lies far closer to it than to the
  // midpoint between floats, so the double rounding cannot change the float.
  return static_cast<float>(v.get<double>());
}

std::vector<float> json_floats(const nlohmann::json& j, std::string_view what,
                               std::string_view field) {
  if (!j.is_array()) fail("{}: \"{}\" is not an array", what, field);
  std::vector<float> out;
  out.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i)
    out.push_back(json_float(j[i], what, fmt::format("{}[{}]", field, i)));
  return out;
}

std::string float_text(float v) {
  return fmt::format("{:.9g}", v);
}

template <typename T, typename F>
void append_list(std::string& out, const std::vector<T>& values, F&& format) {
  out += '[';
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ", ";
    out += format(values[i]);
  }
  out += ']';
}

// --- binary -----------------------------------------------------------------------------------

void put_u32(std::string& out, uint32_t v) {
  for (int b = 0; b < 4; ++b) out += static_cast<char>(v >> (8 * b));
}

}  // namespace

std::string_view kind_name(ModelKind kind) {
  switch (kind) {
    case ModelKind::kEntropyBottleneck:
      return "EntropyBottleneck";
    case ModelKind::kGaussianConditional:
      return "GaussianConditional";
  }
  return "unknown";
}

void EntropyTables::validate(std::string_view what) const {
  if (cdfs.empty()) fail("{}: no tables (empty _quantized_cdf)", what);
  const size_t n = cdfs.size();
  if (kind == ModelKind::kEntropyBottleneck) {
    if (medians.size() != n) {
      fail("{}: EntropyBottleneck has {} tables but {} medians (expected one per channel)", what, n,
           medians.size());
    }
    if (!scale_table.empty()) fail("{}: EntropyBottleneck tables carry a scale table", what);
    require_finite(medians, what, "medians");
  } else if (kind == ModelKind::kGaussianConditional) {
    if (scale_table.size() != n) {
      fail(
          "{}: GaussianConditional has {} tables but a scale table of {} entries (expected one "
          "table per scale)",
          what, n, scale_table.size());
    }
    if (!medians.empty()) fail("{}: GaussianConditional tables carry medians", what);
    require_finite(scale_table, what, "scale_table");
    if (!std::isfinite(scale_bound))
      fail("{}: scale_bound is {}, expected a finite float", what, scale_bound);
  } else {
    fail("{}: unknown model kind {}", what, static_cast<uint32_t>(kind));
  }
}

bool EntropyTables::operator==(const EntropyTables& other) const {
  return kind == other.kind && cdfs == other.cdfs && same_bits(medians, other.medians) &&
         same_bits(scale_table, other.scale_table) &&
         std::bit_cast<uint32_t>(scale_bound) == std::bit_cast<uint32_t>(other.scale_bound);
}

EntropyTables read_tables_json(std::string_view text, std::string_view what) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", what, e.what());
  }
  if (!j.is_object()) fail("{}: expected a JSON object at the top level", what);
  const auto& format = member(j, "format", what);
  if (!format.is_string() || format.get<std::string>() != kJsonFormat) {
    fail("{}: \"format\" is {}, expected \"{}\"", what, format.dump(), kJsonFormat);
  }
  const auto& version = member(j, "version", what);
  if (!version.is_number_integer() || version.get<int64_t>() != kVersion) {
    fail("{}: unsupported version {} (this reader knows version {})", what, version.dump(),
         kVersion);
  }
  const auto& kind = member(j, "kind", what);
  if (!kind.is_string()) fail("{}: \"kind\" is {}, expected a string", what, kind.dump());
  const auto& precision = member(j, "precision", what);
  if (!precision.is_number_integer() || precision.get<int64_t>() != kPrecision) {
    fail("{}: precision {} is not supported (CompressAI's coder uses 16)", what, precision.dump());
  }

  EntropyTables t;
  t.kind = kind_from_name(kind.get<std::string>(), what);
  auto offsets = json_int32s(member(j, "offsets", what), what, "offsets");
  auto lengths = json_int32s(member(j, "cdf_lengths", what), what, "cdf_lengths");
  const auto& rows = member(j, "quantized_cdf", what);
  if (!rows.is_array()) fail("{}: \"quantized_cdf\" is not an array", what);
  if (rows.size() != lengths.size()) {
    fail("{}: {} quantized_cdf rows but {} cdf_lengths", what, rows.size(), lengths.size());
  }
  std::vector<int32_t> flat;
  size_t stride = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    auto row = json_int32s(rows[i], what, fmt::format("quantized_cdf[{}]", i));
    if (i == 0) stride = row.size();
    if (row.size() != stride) {
      fail("{}: quantized_cdf[{}] has {} entries, expected the row stride {} of row 0", what, i,
           row.size(), stride);
    }
    flat.insert(flat.end(), row.begin(), row.end());
  }
  t.cdfs = QuantizedCdfTable(std::move(flat), static_cast<int64_t>(stride), std::move(lengths),
                             std::move(offsets), what);
  if (t.kind == ModelKind::kEntropyBottleneck) {
    t.medians = json_floats(member(j, "medians", what), what, "medians");
  } else {
    t.scale_table = json_floats(member(j, "scale_table", what), what, "scale_table");
    t.scale_bound = json_float(member(j, "scale_bound", what), what, "scale_bound");
  }
  t.validate(what);
  return t;
}

std::string write_tables_json(const EntropyTables& t) {
  t.validate("write_tables_json");
  auto int_text = [](int32_t v) { return std::to_string(v); };
  std::string out = "{\n";
  out += fmt::format("  \"format\": \"{}\",\n  \"version\": {},\n", kJsonFormat, kVersion);
  out += fmt::format("  \"kind\": \"{}\",\n  \"precision\": {},\n", kind_name(t.kind), kPrecision);
  out += "  \"offsets\": ";
  append_list(out, t.cdfs.offsets(), int_text);
  out += ",\n  \"cdf_lengths\": ";
  append_list(out, t.cdfs.cdf_lengths(), int_text);
  out += ",\n  \"quantized_cdf\": [";
  const auto stride = static_cast<size_t>(t.cdfs.row_stride());
  for (size_t i = 0; i < t.cdfs.size(); ++i) {
    out += i == 0 ? "\n    " : ",\n    ";
    std::vector<int32_t> row(t.cdfs.quantized_cdf().begin() + i * stride,
                             t.cdfs.quantized_cdf().begin() + (i + 1) * stride);
    append_list(out, row, int_text);
  }
  out += "\n  ],\n";
  if (t.kind == ModelKind::kEntropyBottleneck) {
    out += "  \"medians\": ";
    append_list(out, t.medians, float_text);
  } else {
    out += "  \"scale_table\": ";
    append_list(out, t.scale_table, float_text);
    out += ",\n  \"scale_bound\": " + float_text(t.scale_bound);
  }
  out += "\n}\n";
  return out;
}

EntropyTables read_tables_bin(std::span<const std::byte> bytes, std::string_view what) {
  ByteReader r(bytes, std::string(what));
  if (bytes.size() < kBinHeaderSize + 4 || r.take_string(8) != kBinMagic) {
    fail("{}: not a torchless tables file (expected magic \"TLTABLES\" and at least {} bytes)",
         what, kBinHeaderSize + 4);
  }
  const uint32_t version = r.u32();
  if (version != kVersion) {
    fail("{}: unsupported version {} (this reader knows version {})", what, version, kVersion);
  }
  const uint32_t kind = r.u32();
  if (kind != 1 && kind != 2) {
    fail("{}: unknown kind {} at offset 12 (1 = EntropyBottleneck, 2 = GaussianConditional)", what,
         kind);
  }
  const uint32_t precision = r.u32();
  if (precision != kPrecision) {
    fail("{}: precision {} is not supported (CompressAI's coder uses 16)", what, precision);
  }
  const uint32_t n = r.u32();
  const uint32_t stride = r.u32();
  const uint32_t p = r.u32();
  const float scale_bound = r.f32();
  uint64_t expected = kBinHeaderSize;
  expected = checked_add(expected, checked_mul(8, n, what), what);
  expected = checked_add(expected, checked_mul(4, checked_mul(n, stride, what), what), what);
  expected = checked_add(expected, checked_mul(4, p, what), what);
  expected = checked_add(expected, 4, what);
  if (expected != bytes.size()) {
    fail(
        "{}: header says {} tables x row stride {} and {} params, which take {} bytes; the file "
        "has {} bytes",
        what, n, stride, p, expected, bytes.size());
  }
  const uint32_t stored_crc = [&] {
    ByteReader tail(bytes.subspan(bytes.size() - 4), std::string(what));
    return tail.u32();
  }();
  const uint32_t crc = crc32(bytes.first(bytes.size() - 4));
  if (crc != stored_crc) {
    fail("{}: CRC-32 mismatch: stored 0x{:08x}, computed 0x{:08x} (corrupt file)", what, stored_crc,
         crc);
  }
  auto read_i32s = [&](uint64_t count) {
    std::vector<int32_t> v(count);
    for (auto& e : v) e = r.i32();
    return v;
  };
  auto offsets = read_i32s(n);
  auto lengths = read_i32s(n);
  auto cdf = read_i32s(uint64_t{n} * stride);
  std::vector<float> params(p);
  for (auto& e : params) e = r.f32();

  EntropyTables t;
  t.kind = static_cast<ModelKind>(kind);
  t.cdfs = QuantizedCdfTable(std::move(cdf), stride, std::move(lengths), std::move(offsets), what);
  if (t.kind == ModelKind::kEntropyBottleneck) {
    t.medians = std::move(params);
    if (scale_bound != 0)
      fail("{}: EntropyBottleneck tables with scale_bound {} (expected 0)", what, scale_bound);
  } else {
    t.scale_table = std::move(params);
    t.scale_bound = scale_bound;
  }
  t.validate(what);
  return t;
}

std::string write_tables_bin(const EntropyTables& t) {
  t.validate("write_tables_bin");
  const auto& params = t.kind == ModelKind::kEntropyBottleneck ? t.medians : t.scale_table;
  std::string out(kBinMagic);
  put_u32(out, kVersion);
  put_u32(out, static_cast<uint32_t>(t.kind));
  put_u32(out, kPrecision);
  put_u32(out, checked_cast<uint32_t>(t.cdfs.size(), "write_tables_bin: num_tables"));
  put_u32(out, checked_cast<uint32_t>(t.cdfs.row_stride(), "write_tables_bin: row_stride"));
  put_u32(out, checked_cast<uint32_t>(params.size(), "write_tables_bin: num_params"));
  put_u32(out,
          std::bit_cast<uint32_t>(t.kind == ModelKind::kEntropyBottleneck ? 0.0f : t.scale_bound));
  for (int32_t v : t.cdfs.offsets()) put_u32(out, static_cast<uint32_t>(v));
  for (int32_t v : t.cdfs.cdf_lengths()) put_u32(out, static_cast<uint32_t>(v));
  for (int32_t v : t.cdfs.quantized_cdf()) put_u32(out, static_cast<uint32_t>(v));
  for (float v : params) put_u32(out, std::bit_cast<uint32_t>(v));
  put_u32(out, crc32(std::as_bytes(std::span<const char>(out.data(), out.size()))));
  return out;
}

}  // namespace torchless::entropy
