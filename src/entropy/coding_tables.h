// The fast-path tables the rANS coder derives from a QuantizedCdfTable (built once, on first
// use, and shared by copies of the table). Private to src/entropy.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "torchless/entropy/cdf.h"

namespace torchless::entropy::detail {

// ryg's Rans64EncSymbol: encoding with a reciprocal instead of a 64-bit division. With
//   q = mul_hi(x, rcp_freq) >> rcp_shift
// equal to floor(x / freq) for every x < 2^63 (Alverson, "Integer division using reciprocals";
// ryg's Rans64EncSymbolInit), the encoder's update
//   x' = (x / freq) * M + start + x % freq
// is x' = x + bias + q * cmpl_freq with cmpl_freq = M - freq and bias = start. freq == 1 has no
// fixed-point reciprocal below 1, so it uses rcp_freq = 2^64 - 1, rcp_shift = 0 (q = x - 1 for
// 1 <= x < 2^64) and bias = start + M - 1, which gives the same x'. So the bytes are exactly
// those of CompressAI's Rans64EncPut with its integer division.
struct EncSymbol {
  uint64_t rcp_freq;
  uint32_t bias;
  uint16_t cmpl_freq;
  uint16_t rcp_shift;
};

EncSymbol make_enc_symbol(uint32_t start, uint32_t freq);

// One table, as the decoder's inner loop sees it.
//
// Decoding must find the symbol s with cdf[s] <= slot < cdf[s+1]; CompressAI scans the cdf
// linearly from the front. Here the 2^16 slots are cut into 2^bits buckets, and bucket b holds
// the symbol that contains the bucket's *first* slot, b << bucket_shift: its start and freq in
// buckets[b] (start | freq << 16) and its number in bucket_symbols[b]. Since the cdf is strictly
// increasing and slot >= b << bucket_shift, the answer is that symbol or a later one, and a
// forward scan over `symbols` (start | freq << 16) stops at exactly CompressAI's answer: the
// first k with cdf[k] > slot, minus one. It stops at the latest at the escape symbol, whose
// cdf[k+1] = 65536 > slot. A bucket that holds no symbol boundary (the common case: the cdf's
// mass sits in few wide symbols) needs no scan at all.
//
// The state update needs only start and freq, so they sit alone in 4-byte entries (the decoder
// is bound by the latency of that one load; smaller entries mean more of the tables stay in
// L1); the symbol number is loaded beside it, off the state's dependency chain.
struct DecodeRow {
  const uint32_t* buckets;         // start | freq << 16
  const uint16_t* bucket_symbols;  // s, for each bucket
  const uint32_t* symbols;         // start | freq << 16, for s in [0, max_value]
  const EncSymbol* enc;            // for s in [0, max_value]
  uint32_t bucket_shift;
  int32_t max_value;
  int32_t offset;
};

struct CodingTables {
  explicit CodingTables(const QuantizedCdfTable& table);
  std::vector<DecodeRow> rows;
  std::vector<uint32_t> buckets;
  std::vector<uint16_t> bucket_symbols;
  std::vector<uint32_t> symbols;
  std::vector<EncSymbol> enc;
};

// Held by every copy of a QuantizedCdfTable; the tables are built by the first coder that needs
// them (loading and validating tables allocates nothing beyond the tables themselves).
struct LazyCodingTables {
  std::once_flag once;
  std::unique_ptr<const CodingTables> tables;
};

}  // namespace torchless::entropy::detail
