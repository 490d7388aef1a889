// Fuzzes the rANS decoder on arbitrary bytes with valid tables: a short and a long table set
// (EntropyBottleneck-like and GaussianConditional-like). The first byte picks the table set and
// the symbol count; the rest is the stream. Decoding must either succeed or throw
// torchless::Error; it must never read outside the stream. When it succeeds, re-encoding the
// decoded symbols and decoding again must give them back (the coder is a bijection on what it
// accepts). The same bytes cut into three streams of different lengths must decode with
// decode_streams (interleaved lanes) exactly as each stream decodes alone: the same symbols, or
// an Error when any one of them fails.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "torchless/core/error.h"
#include "torchless/entropy/cdf.h"
#include "torchless/entropy/rans.h"

namespace {

using torchless::entropy::QuantizedCdfTable;

QuantizedCdfTable make_tables(bool gaussian) {
  std::vector<std::vector<int32_t>> rows;
  std::vector<int32_t> lengths;
  std::vector<int32_t> offsets;
  const int count = gaussian ? 12 : 4;
  for (int t = 0; t < count; ++t) {
    const double scale = gaussian ? 0.11 * std::pow(1.8, t) : 0.5 + t;
    const int center = static_cast<int>(std::ceil(scale * 6.1));
    std::vector<float> pmf;
    for (int k = -center; k <= center; ++k) {
      pmf.push_back(static_cast<float>(std::exp(-0.5 * (k / scale) * (k / scale))));
    }
    pmf.push_back(1e-6f);
    auto cdf = torchless::entropy::pmf_to_quantized_cdf(pmf);
    rows.emplace_back(cdf.begin(), cdf.end());
    lengths.push_back(static_cast<int32_t>(cdf.size()));
    offsets.push_back(-center);
  }
  return QuantizedCdfTable::from_rows(rows, lengths, offsets);
}

// decode_streams against decode_with_indexes, stream by stream.
void check_interleaved(std::string_view bytes, size_t count, const QuantizedCdfTable& tables) {
  constexpr size_t kStreams = 3;
  std::vector<std::string_view> parts;
  std::vector<std::vector<int32_t>> indexes(kStreams), out(kStreams);
  std::vector<std::optional<std::vector<int32_t>>> alone(kStreams);
  bool all_ok = true;
  for (size_t j = 0; j < kStreams; ++j) {
    parts.push_back(bytes.substr(j * bytes.size() / kStreams, bytes.size() / kStreams));
    const size_t n = (count * (j + 1)) / 2 + j;
    for (size_t i = 0; i < n; ++i) {
      indexes[j].push_back(static_cast<int32_t>((i * 5 + j) % tables.size()));
    }
    out[j].resize(n);
    try {
      alone[j] = torchless::entropy::decode_with_indexes(parts[j], indexes[j], tables);
    } catch (const torchless::Error&) {
      all_ok = false;
    }
  }
  std::vector<torchless::entropy::StreamToDecode> jobs;
  for (size_t j = 0; j < kStreams; ++j) jobs.push_back({parts[j], indexes[j], out[j]});
  try {
    torchless::entropy::decode_streams(jobs, tables);
  } catch (const torchless::Error&) {
    if (all_ok) __builtin_trap();  // failed where every stream decodes alone
    return;
  }
  if (!all_ok) __builtin_trap();  // succeeded where a stream fails alone
  for (size_t j = 0; j < kStreams; ++j) {
    if (out[j] != *alone[j]) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const QuantizedCdfTable kShort = make_tables(false);
  static const QuantizedCdfTable kLong = make_tables(true);
  if (size < 1) return 0;
  const bool gaussian = (data[0] & 1) != 0;
  const QuantizedCdfTable& tables = gaussian ? kLong : kShort;
  const size_t count = 1 + (data[0] >> 1) * 4;
  std::vector<int32_t> indexes(count);
  for (size_t i = 0; i < count; ++i) indexes[i] = static_cast<int32_t>((i * 7) % tables.size());
  std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    auto symbols = torchless::entropy::decode_with_indexes(stream, indexes, tables);
    auto again = torchless::entropy::encode_with_indexes(symbols, indexes, tables);
    if (torchless::entropy::decode_with_indexes(again, indexes, tables, {.check_end = true}) !=
        symbols) {
      __builtin_trap();
    }
  } catch (const torchless::Error&) {
  }
  check_interleaved(stream, count, tables);
  return 0;
}
