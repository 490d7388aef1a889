// Helpers for the entropy tests: reading the shared CompressAI vectors and the project's own
// fixtures (JSON, hex strings, float32 hex twins). Test-only.
#pragma once

#include <nlohmann/json.hpp>

#include <bit>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.h"
#include "torchless/entropy/tables.h"

namespace torchless::entropy::testing {

inline nlohmann::json compressai_vectors(const std::string& file) {
  return torchless::testing::read_json(torchless::testing::shared_dir() / "vectors" / "compressai" /
                                       file);
}

inline std::string from_hex(const std::string& hex) {
  if (hex.size() % 2 != 0) throw std::runtime_error("odd hex length");
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

inline std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

// The vectors' "*_f32hex" fields: little-endian float32 values, concatenated.
inline std::vector<float> floats_from_hex(const std::string& hex) {
  std::string bytes = from_hex(hex);
  std::vector<float> out(bytes.size() / 4);
  for (size_t i = 0; i < out.size(); ++i) {
    uint32_t bits = 0;
    for (int b = 0; b < 4; ++b)
      bits |= uint32_t{static_cast<unsigned char>(bytes[4 * i + b])} << (8 * b);
    out[i] = std::bit_cast<float>(bits);
  }
  return out;
}

inline std::vector<int32_t> ints(const nlohmann::json& j) {
  return j.get<std::vector<int32_t>>();
}

// Flattens nested JSON arrays of numbers (row-major), e.g. a tensor written with .tolist().
template <typename T>
void flatten_into(const nlohmann::json& j, std::vector<T>& out) {
  if (j.is_array()) {
    for (const auto& e : j) flatten_into(e, out);
  } else {
    out.push_back(j.get<T>());
  }
}
template <typename T>
std::vector<T> flatten(const nlohmann::json& j) {
  std::vector<T> out;
  flatten_into(j, out);
  return out;
}

// EntropyBottleneck(8) tables as CompressAI wrote them into eb_vectors.json.
inline EntropyTables eb_tables_from_vectors(const nlohmann::json& v) {
  EntropyTables t;
  t.kind = ModelKind::kEntropyBottleneck;
  auto rows = v["_quantized_cdf"].get<std::vector<std::vector<int32_t>>>();
  std::vector<int32_t> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  t.cdfs = QuantizedCdfTable(std::move(flat), static_cast<int64_t>(rows.at(0).size()),
                             ints(v["_cdf_length"]), ints(v["_offset"]));
  t.medians = floats_from_hex(v["medians_f32hex"]);
  return t;
}

// GaussianConditional tables (default 64-entry scale table) from gc_vectors.json, whose rows
// are stored trimmed to their lengths: re-padded to the buffer's row stride.
inline EntropyTables gc_tables_from_vectors(const nlohmann::json& v) {
  EntropyTables t;
  t.kind = ModelKind::kGaussianConditional;
  const auto shape = v["_quantized_cdf_shape"].get<std::vector<int64_t>>();
  std::vector<int32_t> flat(static_cast<size_t>(shape.at(0) * shape.at(1)), 0);
  auto rows = v["_quantized_cdf_rows_trimmed"].get<std::vector<std::vector<int32_t>>>();
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy(rows[i].begin(), rows[i].end(), flat.begin() + static_cast<ptrdiff_t>(i * shape[1]));
  }
  t.cdfs = QuantizedCdfTable(std::move(flat), shape[1], ints(v["_cdf_length"]), ints(v["_offset"]));
  t.scale_table = floats_from_hex(v["scale_table_f32hex"]);
  t.scale_bound = v["scale_bound"][0].get<float>();
  return t;
}

}  // namespace torchless::entropy::testing
