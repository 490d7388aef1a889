#include "torchless/entropy/rans.h"

#include <bit>
#include <cstring>
#include <limits>

#include "entropy/coding_tables.h"
#include "torchless/core/error.h"

namespace torchless::entropy {
namespace {

using detail::DecodeRow;
using detail::EncSymbol;

__extension__ typedef unsigned __int128 u128;

// Lower bound of the normalisation interval [L, 2^63). L = 2^31 makes every renormalisation
// step exactly one 32-bit word.
constexpr uint64_t kL = uint64_t{1} << 31;
constexpr uint32_t kSlotMask = kCdfTotal - 1;
// Bypass coding: 4-bit nibbles; an n_bypass nibble of 15 means "15 more follow" (unary base 15).
constexpr uint32_t kBypassBits = 4;
constexpr uint32_t kMaxBypassVal = (1u << kBypassBits) - 1;
// raw < 2^28, i.e. at most 7 nibbles: beyond it CompressAI's n_bypass loop shifts by 32 (UB;
// an endless loop in its x86 -O3 build). So values must lie in
// [-2^27, max_value + 2^27 - 1] relative to the table's offset.
constexpr int64_t kMaxRaw = int64_t{1} << 28;
constexpr uint32_t kMaxBypassNibbles = 7;
// The most coding operations one symbol can produce: the escape, its n_bypass nibble, and up
// to 7 raw nibbles; each may emit one word.
constexpr size_t kMaxWordsPerSymbol = 2 + kMaxBypassNibbles;

// Words written backwards (rANS encodes in reverse), growing towards the front.
class WordSink {
 public:
  explicit WordSink(size_t capacity) : words_(capacity + 2), at_(words_.size()) {}
  void reserve_front(size_t n) {
    if (at_ < n) grow(n);
  }
  void put(uint32_t word) { words_[--at_] = word; }
  // Writes the final state as [lo, hi] in front of the words and returns the stream bytes.
  std::string finish(uint64_t x) {
    reserve_front(2);
    put(static_cast<uint32_t>(x >> 32));
    put(static_cast<uint32_t>(x));
    std::string out((words_.size() - at_) * 4, '\0');
    if constexpr (std::endian::native == std::endian::little) {
      std::memcpy(out.data(), words_.data() + at_, out.size());
    } else {
      for (size_t i = at_; i < words_.size(); ++i) {
        for (int b = 0; b < 4; ++b)
          out[(i - at_) * 4 + b] = static_cast<char>(words_[i] >> (8 * b));
      }
    }
    return out;
  }

 private:
  void grow(size_t n) {
    const size_t used = words_.size() - at_;
    std::vector<uint32_t> bigger(std::max(words_.size() * 2, used + n + 64));
    std::memcpy(bigger.data() + bigger.size() - used, words_.data() + at_, used * 4);
    at_ = bigger.size() - used;
    words_ = std::move(bigger);
  }
  std::vector<uint32_t> words_;
  size_t at_;
};

// Rans64EncPut for symbol s, with the reciprocal instead of the division (see EncSymbol).
inline void put_symbol(uint64_t& x, WordSink& out, uint64_t rcp_freq, uint32_t bias,
                       uint32_t cmpl_freq, uint32_t rcp_shift) {
  const uint64_t freq = kCdfTotal - cmpl_freq;
  // x_max = ((L >> scale_bits) << 32) * freq: the largest x that stays below 2^63 after C(s, x).
  const uint64_t x_max = freq << (31 - kPrecision + 32);
  if (x >= x_max) {
    out.put(static_cast<uint32_t>(x));
    x >>= 32;
  }
  const uint64_t q = static_cast<uint64_t>((static_cast<u128>(x) * rcp_freq) >> 64) >> rcp_shift;
  x += bias + q * cmpl_freq;
}

inline void put_symbol(uint64_t& x, WordSink& out, const EncSymbol& s) {
  put_symbol(x, out, s.rcp_freq, s.bias, s.cmpl_freq, s.rcp_shift);
}

// Rans64EncPutBits(x, val, 4): the regular rule with scale_bits 4, freq 1, start val, whose
// bound is x_max = ((L >> 16) << 32) << 12 = 2^59 (CompressAI passes freq = 1 << (16 - nbits)).
inline void put_nibble(uint64_t& x, WordSink& out, uint32_t val) {
  if (x >= (uint64_t{1} << 59)) {
    out.put(static_cast<uint32_t>(x));
    x >>= 32;
  }
  x = (x << kBypassBits) | val;
}

[[noreturn, gnu::cold, gnu::noinline]] void bad_index(size_t i, int32_t index, size_t n) {
  fail("rANS: symbol {}: table index {} is outside [0, {})", i, index, n);
}

[[noreturn, gnu::cold, gnu::noinline]] void bad_value(size_t i, int32_t symbol, int32_t index,
                                                      const DecodeRow& row) {
  fail(
      "rANS: symbol {}: value {} with table {} (offset {}, max_value {}) is outside the codable "
      "range [{}, {}] (CompressAI's bypass coding would loop forever on it)",
      i, symbol, index, row.offset, row.max_value, static_cast<int64_t>(row.offset) - kMaxRaw / 2,
      static_cast<int64_t>(row.offset) + row.max_value + kMaxRaw / 2 - 1);
}

// The escape of a value outside [0, max_value): raw as CompressAI maps it (odd for negative
// values, even from max_value up) and its nibble count, the smallest n with raw >> 4n == 0.
struct Escape {
  uint32_t raw;
  uint32_t n_bypass;
};

inline bool escape_for(int64_t value, int32_t max_value, Escape& e) {
  int64_t raw = value < 0 ? -2 * value - 1 : 2 * (value - max_value);
  if (raw >= kMaxRaw) return false;
  e.raw = static_cast<uint32_t>(raw);
  e.n_bypass = e.raw == 0 ? 0 : (static_cast<uint32_t>(std::bit_width(e.raw)) + 3) / 4;
  return true;
}

// Encodes symbol i (in reverse: the decoder reads the escape's operations in push order
// regular, n_bypass, raw nibbles least significant first; so they are put in the opposite
// order).
[[gnu::cold, gnu::noinline]] void put_escape(uint64_t& x, WordSink& out, const DecodeRow& row,
                                             size_t i, int32_t symbol, int32_t index, int64_t value,
                                             RansStats& stats) {
  Escape e{};
  if (!escape_for(value, row.max_value, e)) bad_value(i, symbol, index, row);
  for (uint32_t j = e.n_bypass; j-- > 0;) put_nibble(x, out, (e.raw >> (kBypassBits * j)) & 15);
  put_nibble(x, out, e.n_bypass);  // < 15: the unary-base-15 prefix is this one nibble
  put_symbol(x, out, row.enc[row.max_value]);
  stats.escapes += 1;
  stats.bypass_nibbles += 1 + e.n_bypass;
}

void check_sizes(size_t symbols, size_t indexes) {
  if (symbols != indexes) {
    fail("rANS: {} symbols but {} indexes (expected one table index per symbol)", symbols, indexes);
  }
}

// The decoder's view of a stream: words read forwards, every read bounds-checked.
struct Source {
  const unsigned char* data;
  size_t size;
  size_t position;  // byte offset of the next word
  uint64_t x;

  uint32_t word(size_t symbol) {
    if (size - position < 4) exhausted(symbol);
    uint32_t w;
    std::memcpy(&w, data + position, 4);
    if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap32(w);
    position += 4;
    return w;
  }
  [[noreturn, gnu::cold, gnu::noinline]] void exhausted(size_t symbol) const {
    fail(
        "rANS: stream exhausted: symbol {} needs a word at byte offset {} but the stream has "
        "{} bytes (truncated or corrupt)",
        symbol, position, size);
  }
  // Rans64DecGetBits(4) and its renormalisation.
  uint32_t nibble(size_t symbol) {
    const auto val = static_cast<uint32_t>(x & kMaxBypassVal);
    x >>= kBypassBits;
    if (x < kL) x = (x << 32) | word(symbol);
    return val;
  }
};

Source open_source(std::string_view encoded) {
  if (encoded.size() < 8) {
    fail("rANS: stream of {} bytes is shorter than the 8-byte initial state", encoded.size());
  }
  Source src{reinterpret_cast<const unsigned char*>(encoded.data()), encoded.size(), 0, 0};
  const uint64_t lo = src.word(0);
  const uint64_t hi = src.word(0);
  src.x = lo | hi << 32;
  return src;
}

[[gnu::cold, gnu::noinline]] int32_t decode_escape(Source& src, const DecodeRow& row, size_t i,
                                                   RansStats& stats) {
  const uint32_t n_bypass = src.nibble(i);
  if (n_bypass > kMaxBypassNibbles) {
    fail(
        "rANS: symbol {}: corrupt stream: bypass count {} exceeds 7 (the most an encoder can "
        "write), at byte offset {}",
        i, n_bypass, src.position);
  }
  uint32_t raw = 0;
  for (uint32_t j = 0; j < n_bypass; ++j) raw |= src.nibble(i) << (kBypassBits * j);
  int64_t value = raw >> 1;
  value = (raw & 1) ? -value - 1 : value + row.max_value;
  const int64_t symbol = value + row.offset;
  if (symbol < std::numeric_limits<int32_t>::min() ||
      symbol > std::numeric_limits<int32_t>::max()) {
    fail("rANS: symbol {}: corrupt stream: decoded value {} does not fit int32", i, symbol);
  }
  stats.escapes += 1;
  stats.bypass_nibbles += 1 + n_bypass;
  return static_cast<int32_t>(symbol);
}

void decode_into(Source& src, std::span<const int32_t> indexes, const QuantizedCdfTable& tables,
                 std::span<int32_t> out, RansStats& stats) {
  if (out.size() != indexes.size()) {
    fail("rANS: output has room for {} symbols, expected {}", out.size(), indexes.size());
  }
  const auto& rows = tables.coding().rows;
  const DecodeRow* row_data = rows.data();
  const size_t n = rows.size();
  uint64_t x = src.x;
  for (size_t i = 0; i < indexes.size(); ++i) {
    const int32_t index = indexes[i];
    if (static_cast<uint32_t>(index) >= n) bad_index(i, index, n);
    const DecodeRow& row = row_data[index];
    const auto slot = static_cast<uint32_t>(x & kSlotMask);
    const uint64_t entry = row.buckets[slot >> row.bucket_shift];
    auto start = static_cast<uint32_t>(entry & 0xFFFF);
    auto freq = static_cast<uint32_t>((entry >> 16) & 0xFFFF);
    auto s = static_cast<uint32_t>(entry >> 32);
    // Forward scan inside the bucket (see DecodeRow); ends at the escape symbol at the latest.
    while (slot - start >= freq) {
      const uint32_t packed = row.symbols[++s];
      start = packed & 0xFFFF;
      freq = packed >> 16;
    }
    // Rans64DecAdvance: x = freq * (x >> scale_bits) + slot - start, then renormalise.
    x = freq * (x >> kPrecision) + slot - start;
    if (x < kL) x = (x << 32) | src.word(i);
    if (static_cast<int32_t>(s) == row.max_value) {
      src.x = x;
      out[i] = decode_escape(src, row, i, stats);
      x = src.x;
    } else {
      out[i] = static_cast<int32_t>(s) + row.offset;  // offset + length fits int32 (validated)
    }
  }
  src.x = x;
  stats.symbols += indexes.size();
}

std::string end_problem(const Source& src) {
  if (src.position != src.size) {
    return fmt::format("{} of {} bytes left unread", src.size - src.position, src.size);
  }
  if (src.x != kL) {
    return fmt::format("final state 0x{:016x}, expected the initial state 0x{:016x}", src.x, kL);
  }
  return {};
}

}  // namespace

std::string encode_with_indexes(std::span<const int32_t> symbols, std::span<const int32_t> indexes,
                                const QuantizedCdfTable& tables, RansStats* stats) {
  check_sizes(symbols.size(), indexes.size());
  const auto& rows = tables.coding().rows;
  const DecodeRow* row_data = rows.data();
  const size_t n = rows.size();
  RansStats local;
  // Typical streams need well under a word per symbol; the sink grows when needed.
  WordSink out(symbols.size() / 2 + 16);
  uint64_t x = kL;
  for (size_t i = symbols.size(); i-- > 0;) {
    out.reserve_front(kMaxWordsPerSymbol);
    const int32_t index = indexes[i];
    if (static_cast<uint32_t>(index) >= n) bad_index(i, index, n);
    const DecodeRow& row = row_data[index];
    const int64_t value = static_cast<int64_t>(symbols[i]) - row.offset;
    if (static_cast<uint64_t>(value) < static_cast<uint64_t>(row.max_value)) {
      put_symbol(x, out, row.enc[value]);
    } else {
      put_escape(x, out, row, i, symbols[i], index, value, local);
    }
  }
  local.symbols = symbols.size();
  if (stats != nullptr) *stats += local;
  return out.finish(x);
}

std::string encode_with_indexes(std::span<const int32_t> symbols, std::span<const int32_t> indexes,
                                const std::vector<std::vector<int32_t>>& cdfs,
                                std::span<const int32_t> cdf_lengths,
                                std::span<const int32_t> offsets) {
  return encode_with_indexes(symbols, indexes,
                             QuantizedCdfTable::from_rows(cdfs, cdf_lengths, offsets));
}

std::vector<int32_t> decode_with_indexes(std::string_view encoded, std::span<const int32_t> indexes,
                                         const QuantizedCdfTable& tables, DecodeOptions options,
                                         RansStats* stats) {
  Source src = open_source(encoded);
  std::vector<int32_t> out(indexes.size());
  RansStats local;
  decode_into(src, indexes, tables, out, local);
  if (auto problem = end_problem(src); !problem.empty()) {
    if (options.check_end) {
      fail("rANS: stream did not end cleanly after {} symbols: {}", indexes.size(), problem);
    }
    local.unclean_ends += 1;
  }
  if (stats != nullptr) *stats += local;
  return out;
}

std::vector<int32_t> decode_with_indexes(std::string_view encoded, std::span<const int32_t> indexes,
                                         const std::vector<std::vector<int32_t>>& cdfs,
                                         std::span<const int32_t> cdf_lengths,
                                         std::span<const int32_t> offsets) {
  return decode_with_indexes(encoded, indexes,
                             QuantizedCdfTable::from_rows(cdfs, cdf_lengths, offsets));
}

void BufferedRansEncoder::encode_with_indexes(std::span<const int32_t> symbols,
                                              std::span<const int32_t> indexes,
                                              const QuantizedCdfTable& tables) {
  check_sizes(symbols.size(), indexes.size());
  const auto& rows = tables.coding().rows;
  const size_t n = rows.size();
  const size_t ops_before = ops_.size();
  RansStats local;
  auto push = [this](const EncSymbol& s) {
    ops_.push_back(Op{s.rcp_freq, s.bias, s.cmpl_freq, s.rcp_shift});
  };
  auto push_nibble = [this](uint32_t val) { ops_.push_back(Op{0, val, 0, 0}); };
  try {
    for (size_t i = 0; i < symbols.size(); ++i) {
      const int32_t index = indexes[i];
      if (static_cast<uint32_t>(index) >= n) bad_index(i, index, n);
      const DecodeRow& row = rows[index];
      const int64_t value = static_cast<int64_t>(symbols[i]) - row.offset;
      if (static_cast<uint64_t>(value) < static_cast<uint64_t>(row.max_value)) {
        push(row.enc[value]);
        continue;
      }
      Escape e{};
      if (!escape_for(value, row.max_value, e)) bad_value(i, symbols[i], index, row);
      push(row.enc[row.max_value]);
      push_nibble(e.n_bypass);
      for (uint32_t j = 0; j < e.n_bypass; ++j) push_nibble((e.raw >> (kBypassBits * j)) & 15);
      local.escapes += 1;
      local.bypass_nibbles += 1 + e.n_bypass;
    }
  } catch (...) {
    ops_.resize(ops_before);  // a rejected call leaves the buffer as it was
    throw;
  }
  local.symbols = symbols.size();
  stats_ += local;
}

std::string BufferedRansEncoder::flush() {
  // Each operation emits at most one word.
  WordSink out(ops_.size());
  uint64_t x = kL;
  for (size_t i = ops_.size(); i-- > 0;) {
    const Op& op = ops_[i];
    if (op.cmpl_freq == 0) {
      put_nibble(x, out, op.bias);
    } else {
      put_symbol(x, out, op.rcp_freq, op.bias, op.cmpl_freq, op.rcp_shift);
    }
  }
  ops_.clear();
  stats_ = {};
  return out.finish(x);
}

void RansDecoder::set_stream(std::string_view encoded) {
  Source src = open_source(encoded);
  stream_.assign(encoded);
  x_ = src.x;
  position_ = src.position;
  stats_ = {};
}

std::vector<int32_t> RansDecoder::decode_stream(std::span<const int32_t> indexes,
                                                const QuantizedCdfTable& tables) {
  std::vector<int32_t> out(indexes.size());
  decode_stream(indexes, tables, out);
  return out;
}

void RansDecoder::decode_stream(std::span<const int32_t> indexes, const QuantizedCdfTable& tables,
                                std::span<int32_t> out) {
  if (stream_.empty()) fail("rANS: decode_stream before set_stream");
  Source src{reinterpret_cast<const unsigned char*>(stream_.data()), stream_.size(), position_, x_};
  // On an error the decoder keeps its state from before this call.
  RansStats local;
  decode_into(src, indexes, tables, out, local);
  x_ = src.x;
  position_ = src.position;
  stats_ += local;
}

bool RansDecoder::at_clean_end() const {
  return !stream_.empty() && position_ == stream_.size() && x_ == kL;
}

void RansDecoder::check_end() const {
  if (stream_.empty()) fail("rANS: check_end before set_stream");
  Source src{reinterpret_cast<const unsigned char*>(stream_.data()), stream_.size(), position_, x_};
  if (auto problem = end_problem(src); !problem.empty()) {
    fail("rANS: stream did not end cleanly after {} symbols: {}", stats_.symbols, problem);
  }
}

}  // namespace torchless::entropy
