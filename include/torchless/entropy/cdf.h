// Quantized CDFs as CompressAI builds and uses them: `pmf_to_quantized_cdf` (bit-exact with
// CompressAI's ops.cpp, including its error cases) and QuantizedCdfTable, the validated set of
// tables (`_quantized_cdf`, `_cdf_length`, `_offset`) that the rANS coder codes with.
// A QuantizedCdfTable is immutable and thread-safe; copies share the same data.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace torchless::entropy {

// CompressAI's coder is compiled with 16 bits of probability precision (scale_bits), so every
// table sums to 1 << 16. Any other precision breaks coding.
inline constexpr int kPrecision = 16;
inline constexpr uint32_t kCdfTotal = uint32_t{1} << kPrecision;

// CompressAI's `_CXX.pmf_to_quantized_cdf(pmf, precision)`: returns pmf.size() + 1 entries from 0
// to 1 << precision. Rounds p * 2^precision half away from zero in float, renormalises in
// integers, then steals one unit of frequency from the smallest frequency > 1 (the first one on
// ties) for every symbol left at zero. Throws Error (with CompressAI's message) for a negative or
// non-finite element and for an all-zero pmf. CompressAI returns a corrupt cdf when the pmf has
// more than 2^precision entries (no frequency can be stolen); this throws instead.
// `precision` must be in [1, 24].
std::vector<uint32_t> pmf_to_quantized_cdf(std::span<const float> pmf, int precision = kPrecision);

namespace detail {
struct CodingTables;      // fast-path tables of the coder (src/entropy)
struct LazyCodingTables;  // builds them once, on first use
}  // namespace detail

// A QuantizedCdfTable is N quantized CDFs in CompressAI's layout: a row-major int32 matrix of
// N rows padded to `row_stride` entries, the used length of each row (`cdf_lengths`), and the
// symbol offset of each row (`offsets`). Construction validates every row for what the coder
// needs (CompressAI only asserts this, and its release build skips the asserts):
//   - 3 <= cdf_lengths[i] <= row_stride: at least one direct symbol plus the escape symbol. A
//     row of length 2 ([0, 65536]) has one symbol of frequency 65536, which CompressAI stores in
//     a uint16 as 0 and then divides by (SIGFPE); so frequency 65536 is invalid;
//   - cdf[0] == 0, cdf[length-1] == 65536, and strictly increasing: every frequency >= 1, because
//     a symbol of frequency 0 can be neither encoded (division by zero) nor decoded;
//   - the padding after each row's length is zero, as in CompressAI's buffers (so that every
//     source of the same tables gives byte-identical tables).
class QuantizedCdfTable {
 public:
  QuantizedCdfTable() = default;
  // Throws Error naming `what`, the row and the entry when the tables are invalid.
  QuantizedCdfTable(std::vector<int32_t> quantized_cdf, int64_t row_stride,
                    std::vector<int32_t> cdf_lengths, std::vector<int32_t> offsets,
                    std::string_view what = "quantized cdf table");
  // From CompressAI's argument lists (`cdfs` rows may be padded; only the first
  // cdf_lengths[i] entries must be valid, the rest are ignored as CompressAI ignores them).
  static QuantizedCdfTable from_rows(const std::vector<std::vector<int32_t>>& cdfs,
                                     std::span<const int32_t> cdf_lengths,
                                     std::span<const int32_t> offsets,
                                     std::string_view what = "quantized cdf table");

  size_t size() const { return cdf_lengths_.size(); }  // N, the number of tables
  bool empty() const { return cdf_lengths_.empty(); }
  int64_t row_stride() const { return row_stride_; }
  const std::vector<int32_t>& quantized_cdf() const { return quantized_cdf_; }
  const std::vector<int32_t>& cdf_lengths() const { return cdf_lengths_; }
  const std::vector<int32_t>& offsets() const { return offsets_; }
  // Row `i` without its padding: cdf_lengths[i] entries, from 0 to 65536.
  std::span<const int32_t> cdf(size_t i) const {
    return {quantized_cdf_.data() + i * static_cast<size_t>(row_stride_),
            static_cast<size_t>(cdf_lengths_[i])};
  }
  // The escape symbol of row i (CompressAI's max_value): direct values are [0, max_value).
  int32_t max_value(size_t i) const { return cdf_lengths_[i] - 2; }

  bool operator==(const QuantizedCdfTable& other) const {
    return row_stride_ == other.row_stride_ && cdf_lengths_ == other.cdf_lengths_ &&
           offsets_ == other.offsets_ && quantized_cdf_ == other.quantized_cdf_;
  }

  // For the coder (src/entropy/rans.cc).
  const detail::CodingTables& coding() const;

 private:
  std::vector<int32_t> quantized_cdf_;
  int64_t row_stride_ = 0;
  std::vector<int32_t> cdf_lengths_;
  std::vector<int32_t> offsets_;
  std::shared_ptr<detail::LazyCodingTables> coding_;
};

}  // namespace torchless::entropy
