#include "entropy/coding_tables.h"

#include <algorithm>
#include <bit>

namespace torchless::entropy::detail {
namespace {

// Buckets per table: 8 to 16 per cdf entry for short tables (EntropyBottleneck-like, up to 128
// entries), so that few buckets hold a symbol boundary; 2 to 4 per entry for long ones (the
// GaussianConditional rows, up to thousands of entries), at most 2^12 (24 KiB with the symbol
// numbers). Long tables are where a smaller footprint pays more than fewer scan steps: the
// decoder is bound by the latency of the bucket load, and GaussianConditional indexes change
// from symbol to symbol, so the tables compete for L1. Measured (torchless_entropy_bench) on
// CompressAI's default GC tables with random indexes: 2-4 per entry decodes 5-10% faster than
// 4-8 or 8-16; on EB tables 8-16 per entry is 15% faster than 2-4.
uint32_t bucket_bits_for(int32_t length) {
  const int entry_bits = std::bit_width(static_cast<uint32_t>(length) - 1);
  const int extra = length <= 128 ? 3 : 1;
  return static_cast<uint32_t>(std::clamp(entry_bits + extra, 6, 12));
}

}  // namespace

EncSymbol make_enc_symbol(uint32_t start, uint32_t freq) {
  constexpr uint32_t kM = uint32_t{1} << kPrecision;
  EncSymbol s{};
  s.cmpl_freq = static_cast<uint16_t>(kM - freq);
  if (freq < 2) {
    s.rcp_freq = ~uint64_t{0};
    s.rcp_shift = 0;
    s.bias = start + kM - 1;
  } else {
    // shift = ceil(log2(freq)); rcp_freq = ceil(2^(shift + 63) / freq), computed as a long
    // division of the 96-bit dividend in two 64:64 steps (ryg's Rans64EncSymbolInit).
    uint32_t shift = 0;
    while (freq > (uint32_t{1} << shift)) ++shift;
    uint64_t x0 = freq - 1;
    const uint64_t x1 = uint64_t{1} << (shift + 31);
    const uint64_t t1 = x1 / freq;
    x0 += (x1 % freq) << 32;
    const uint64_t t0 = x0 / freq;
    s.rcp_freq = t0 + (t1 << 32);
    s.rcp_shift = static_cast<uint16_t>(shift - 1);
    s.bias = start;
  }
  return s;
}

CodingTables::CodingTables(const QuantizedCdfTable& table) {
  const size_t n = table.size();
  size_t total_buckets = 0;
  size_t total_symbols = 0;
  for (size_t i = 0; i < n; ++i) {
    total_buckets += size_t{1} << bucket_bits_for(table.cdf_lengths()[i]);
    total_symbols += static_cast<size_t>(table.cdf_lengths()[i]) - 1;
  }
  buckets.resize(total_buckets);
  bucket_symbols.resize(total_buckets);
  symbols.resize(total_symbols);
  enc.resize(total_symbols);
  rows.resize(n);

  size_t bucket_at = 0;
  size_t symbol_at = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto cdf = table.cdf(i);
    const auto num_symbols = cdf.size() - 1;  // max_value + 1 (direct symbols and the escape)
    const uint32_t bits = bucket_bits_for(static_cast<int32_t>(cdf.size()));
    const uint32_t shift = kPrecision - bits;
    for (size_t s = 0; s < num_symbols; ++s) {
      const auto start = static_cast<uint32_t>(cdf[s]);
      const auto freq = static_cast<uint32_t>(cdf[s + 1] - cdf[s]);  // in [1, 65535]
      symbols[symbol_at + s] = start | freq << 16;
      enc[symbol_at + s] = make_enc_symbol(start, freq);
    }
    // Bucket b holds the symbol containing slot b << shift: walk both in increasing order.
    size_t s = 0;
    for (size_t b = 0; b < (size_t{1} << bits); ++b) {
      const auto first_slot = static_cast<int32_t>(b << shift);
      while (cdf[s + 1] <= first_slot) ++s;
      buckets[bucket_at + b] = symbols[symbol_at + s];
      bucket_symbols[bucket_at + b] = static_cast<uint16_t>(s);  // s < 65536 (each freq >= 1)
    }
    rows[i] = DecodeRow{buckets.data() + bucket_at,
                        bucket_symbols.data() + bucket_at,
                        symbols.data() + symbol_at,
                        enc.data() + symbol_at,
                        shift,
                        table.max_value(i),
                        table.offsets()[i]};
    bucket_at += size_t{1} << bits;
    symbol_at += num_symbols;
  }
}

}  // namespace torchless::entropy::detail
