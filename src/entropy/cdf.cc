#include "torchless/entropy/cdf.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>

#include "entropy/coding_tables.h"
#include "torchless/core/error.h"

namespace torchless::entropy {
namespace {

// float -> uint32 as CompressAI's x86-64 build converts std::round's float result (cvttss2si
// into a 64-bit register, low 32 bits kept): values >= 2^32 wrap, and values >= 2^63 or inf
// give 0. Only reachable for pmf elements above 65536, which no probability is (UNVERIFIED
// against CompressAI's build; no reference vector has one).
uint32_t to_u32_like_x86(float r) {
  if (r >= 9223372036854775808.0f) return 0;
  return static_cast<uint32_t>(static_cast<uint64_t>(r));
}

}  // namespace

std::vector<uint32_t> pmf_to_quantized_cdf(std::span<const float> pmf, int precision) {
  if (precision < 1 || precision > 24) {
    fail("pmf_to_quantized_cdf: precision {} is outside [1, 24]", precision);
  }
  for (float p : pmf) {
    if (p < 0 || !std::isfinite(p)) {
      // CompressAI formats the element with std::to_string (%f).
      fail("Invalid `pmf`, non-finite or negative element found: {}",
           std::isnan(p)   ? std::string(std::signbit(p) ? "-nan" : "nan")
           : std::isinf(p) ? std::string(p < 0 ? "-inf" : "inf")
                           : fmt::format("{:f}", p));
    }
  }
  const uint32_t one = uint32_t{1} << precision;
  if (pmf.size() > one) {
    // CompressAI would find no frequency > 1 to steal from and return a corrupt cdf.
    fail("pmf_to_quantized_cdf: {} elements cannot all get a non-zero frequency out of 2^{}",
         pmf.size(), precision);
  }

  std::vector<uint32_t> cdf(pmf.size() + 1);
  cdf[0] = 0;
  for (size_t i = 0; i < pmf.size(); ++i) {
    // In float, as CompressAI: the product by a power of two is exact; std::round(float)
    // rounds half away from zero.
    cdf[i + 1] = to_u32_like_x86(std::round(pmf[i] * static_cast<float>(one)));
  }
  // std::accumulate(..., 0) with an int accumulator: the sum wraps modulo 2^32.
  uint32_t total = 0;
  for (uint32_t c : cdf) total += c;
  if (total == 0) {
    fail("Invalid `pmf`: at least one element must have a non-zero probability.");
  }
  for (uint32_t& c : cdf) {
    c = static_cast<uint32_t>((static_cast<uint64_t>(one) * c) / total);
  }
  for (size_t i = 1; i < cdf.size(); ++i) cdf[i] += cdf[i - 1];  // partial_sum, uint32
  cdf.back() = one;

  // Give every zero-frequency symbol one unit, stolen from the smallest frequency > 1 (the first
  // on ties), shifting the cdf entries in between. The scan runs over the live array, in order,
  // exactly as CompressAI's loop does.
  const size_t n = cdf.size() - 1;
  for (size_t i = 0; i < n; ++i) {
    if (cdf[i] != cdf[i + 1]) continue;
    uint32_t best_freq = std::numeric_limits<uint32_t>::max();
    size_t best_steal = n;  // none
    for (size_t j = 0; j < n; ++j) {
      uint32_t freq = cdf[j + 1] - cdf[j];
      if (freq > 1 && freq < best_freq) {
        best_freq = freq;
        best_steal = j;
      }
    }
    if (best_steal == n) {  // unreachable with pmf.size() <= 2^precision; kept as a guard
      fail("pmf_to_quantized_cdf: no frequency left to steal for symbol {}", i);
    }
    if (best_steal < i) {
      for (size_t j = best_steal + 1; j <= i; ++j) --cdf[j];
    } else {
      for (size_t j = i + 1; j <= best_steal; ++j) ++cdf[j];
    }
  }
  return cdf;
}

QuantizedCdfTable::QuantizedCdfTable(std::vector<int32_t> quantized_cdf, int64_t row_stride,
                                     std::vector<int32_t> cdf_lengths, std::vector<int32_t> offsets,
                                     std::string_view what)
    : quantized_cdf_(std::move(quantized_cdf)),
      row_stride_(row_stride),
      cdf_lengths_(std::move(cdf_lengths)),
      offsets_(std::move(offsets)) {
  const size_t n = cdf_lengths_.size();
  if (offsets_.size() != n) {
    fail("{}: {} cdf lengths but {} offsets (expected one of each per table)", what, n,
         offsets_.size());
  }
  if (row_stride_ < 0 ||
      (n > 0 && static_cast<uint64_t>(row_stride_) > quantized_cdf_.size() / n) ||
      quantized_cdf_.size() != n * static_cast<uint64_t>(row_stride_)) {
    fail("{}: quantized cdf has {} entries, expected {} tables x row stride {}", what,
         quantized_cdf_.size(), n, row_stride_);
  }
  for (size_t i = 0; i < n; ++i) {
    const int32_t length = cdf_lengths_[i];
    if (length < 3 || length > row_stride_) {
      fail(
          "{}: table {}: cdf length {} is outside [3, row stride {}] (a table needs at least "
          "one direct symbol and the escape symbol; length 2 means one symbol of frequency "
          "65536, which CompressAI's coder cannot code)",
          what, i, length, row_stride_);
    }
    if (static_cast<int64_t>(offsets_[i]) + length > std::numeric_limits<int32_t>::max()) {
      fail("{}: table {}: offset {} + cdf length {} overflows int32 symbol values", what, i,
           offsets_[i], length);
    }
    const int32_t* row = quantized_cdf_.data() + i * static_cast<size_t>(row_stride_);
    if (row[0] != 0) fail("{}: table {}: cdf[0] is {}, expected 0", what, i, row[0]);
    for (int32_t k = 1; k < length; ++k) {
      if (row[k] <= row[k - 1]) {
        fail(
            "{}: table {}: cdf[{}] = {} is not greater than cdf[{}] = {} (every symbol needs a "
            "frequency >= 1)",
            what, i, k, row[k], k - 1, row[k - 1]);
      }
    }
    if (row[length - 1] != static_cast<int32_t>(kCdfTotal)) {
      fail("{}: table {}: last cdf entry cdf[{}] is {}, expected {} (precision 16)", what, i,
           length - 1, row[length - 1], kCdfTotal);
    }
    for (int64_t k = length; k < row_stride_; ++k) {
      if (row[k] != 0) {
        fail("{}: table {}: padding entry {} is {}, expected 0 (after cdf length {})", what, i, k,
             row[k], length);
      }
    }
  }
  coding_ = std::make_shared<detail::LazyCodingTables>();
}

QuantizedCdfTable QuantizedCdfTable::from_rows(const std::vector<std::vector<int32_t>>& cdfs,
                                               std::span<const int32_t> cdf_lengths,
                                               std::span<const int32_t> offsets,
                                               std::string_view what) {
  if (cdfs.size() != cdf_lengths.size()) {
    fail("{}: {} cdf rows but {} cdf lengths", what, cdfs.size(), cdf_lengths.size());
  }
  size_t stride = 0;
  for (size_t i = 0; i < cdfs.size(); ++i) {
    if (cdf_lengths[i] < 0 || static_cast<size_t>(cdf_lengths[i]) > cdfs[i].size()) {
      fail("{}: table {}: cdf length {} exceeds its row of {} entries", what, i, cdf_lengths[i],
           cdfs[i].size());
    }
    stride = std::max(stride, static_cast<size_t>(cdf_lengths[i]));
  }
  // Re-pad with zeros: CompressAI ignores whatever follows a row's length.
  std::vector<int32_t> flat(cdfs.size() * stride, 0);
  for (size_t i = 0; i < cdfs.size(); ++i) {
    std::copy_n(cdfs[i].begin(), cdf_lengths[i], flat.begin() + i * stride);
  }
  return QuantizedCdfTable(std::move(flat), static_cast<int64_t>(stride),
                           std::vector<int32_t>(cdf_lengths.begin(), cdf_lengths.end()),
                           std::vector<int32_t>(offsets.begin(), offsets.end()), what);
}

const detail::CodingTables& QuantizedCdfTable::coding() const {
  if (!coding_) {
    static const detail::CodingTables kEmpty{QuantizedCdfTable()};
    return kEmpty;
  }
  std::call_once(coding_->once,
                 [this] { coding_->tables = std::make_unique<const detail::CodingTables>(*this); });
  return *coding_->tables;
}

}  // namespace torchless::entropy
