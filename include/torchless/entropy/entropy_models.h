// CompressAI's entropy models on loaded tables (compressai/entropy_models/entropy_models.py):
// EntropyBottleneck (factorized prior; one table per channel, symbols centred on the channel's
// median) and GaussianConditional (one table per scale; the table of each element chosen from
// its predicted scale). compress() gives one independent rANS stream per batch element, symbols
// in C order of (C, *spatial) (channel slowest), byte-equal to CompressAI's; decompress() gives
// the same float32 values CompressAI does.
//
// Rounding is torch.round's (half to even) on the float32 difference x - mean, as CompressAI's
// quantize(x, "symbols", means). Where CompressAI would hang or crash (NaN, inf, or values whose
// symbol lies beyond the escape coding's reach), these throw Error naming the element.
//
// Both classes are immutable after construction and thread-safe; batch elements are coded in
// parallel on up to CodingOptions::threads threads, and decompress() also interleaves the
// streams each thread decodes (decode_streams).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "torchless/core/tensor.h"
#include "torchless/entropy/rans.h"
#include "torchless/entropy/tables.h"

namespace torchless::entropy {

struct CodingOptions {
  size_t threads = 0;      // 0: all cores
  bool check_end = false;  // decoding: require every stream to end cleanly (DecodeOptions)
};

class EntropyBottleneck {
 public:
  // Throws Error unless `tables` are valid EntropyBottleneck tables.
  explicit EntropyBottleneck(EntropyTables tables);

  int64_t channels() const { return static_cast<int64_t>(tables_.cdfs.size()); }
  const EntropyTables& tables() const { return tables_; }

  // round(x - median[c]) as int32, for x float32 of shape (B, C, *spatial).
  Tensor symbols(const Tensor& x) const;
  // One string per batch element.
  std::vector<std::string> compress(const Tensor& x, const CodingOptions& options = {},
                                    RansStats* stats = nullptr) const;
  // CompressAI's decompress(strings, size): `size` is the spatial shape only; the result is
  // float32 (len(strings), C, *size), symbol + median[c].
  Tensor decompress(const std::vector<std::string>& strings, const Shape& size,
                    const CodingOptions& options = {}, RansStats* stats = nullptr) const;
  // The symbols only (int32, same shape).
  Tensor decompress_symbols(const std::vector<std::string>& strings, const Shape& size,
                            const CodingOptions& options = {}, RansStats* stats = nullptr) const;

 private:
  EntropyTables tables_;
};

class GaussianConditional {
 public:
  // Throws Error unless `tables` are valid GaussianConditional tables.
  explicit GaussianConditional(EntropyTables tables);

  const EntropyTables& tables() const { return tables_; }

  // CompressAI's build_indexes: scales are bounded below by scale_bound (NaN stays NaN), and
  // the index is the number of scale_table[:-1] entries strictly below the scale, i.e.
  // (L-1) - #{t in scale_table[:-1] : s <= t}; NaN maps to L-1. int32, the shape of `scales`.
  Tensor build_indexes(const Tensor& scales) const;
  // round(x - means) (or round(x) without means) as int32. `means` may be null or a float32
  // tensor of x's rank whose dims equal x's or are 1 (broadcast).
  Tensor symbols(const Tensor& x, const Tensor* means = nullptr) const;
  // x float32 (B, ...), rank >= 2; indexes int32 (or int64) of the same shape.
  std::vector<std::string> compress(const Tensor& x, const Tensor& indexes,
                                    const Tensor* means = nullptr,
                                    const CodingOptions& options = {},
                                    RansStats* stats = nullptr) const;
  // float32 of the shape of `indexes`: symbol (+ means when given).
  Tensor decompress(const std::vector<std::string>& strings, const Tensor& indexes,
                    const Tensor* means = nullptr, const CodingOptions& options = {},
                    RansStats* stats = nullptr) const;
  Tensor decompress_symbols(const std::vector<std::string>& strings, const Tensor& indexes,
                            const CodingOptions& options = {}, RansStats* stats = nullptr) const;

 private:
  EntropyTables tables_;
};

}  // namespace torchless::entropy
