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

// `where`: "symbol 17", or "stream 3, symbol 17" when several streams decode together.
[[noreturn, gnu::cold, gnu::noinline]] void bad_index(std::string_view where, int32_t index,
                                                      size_t n) {
  fail("rANS: {}: table index {} is outside [0, {})", where, index, n);
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

// A little-endian word of the stream.
inline uint32_t load_word(const unsigned char* p) {
  uint32_t w;
  std::memcpy(&w, p, 4);
  if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap32(w);
  return w;
}

// The decoder's view of a stream: words read forwards, every read bounds-checked.
struct Source {
  const unsigned char* data;
  size_t size;
  size_t position;  // byte offset of the next word
  uint64_t x;
  size_t stream;  // for messages: which of several streams decoded together (or kNoStream)

  static constexpr size_t kNoStream = ~size_t{0};

  uint32_t word(size_t symbol) {
    if (size - position < 4) [[unlikely]]
      report_exhausted(*this, symbol);
    const uint32_t w = load_word(data + position);
    position += 4;
    return w;
  }
  // "stream 3, symbol 17" or "symbol 17".
  std::string where(size_t symbol) const {
    return stream == kNoStream ? fmt::format("symbol {}", symbol)
                               : fmt::format("stream {}, symbol {}", stream, symbol);
  }
  [[noreturn, gnu::cold, gnu::noinline]] static void report_exhausted(const Source& src,
                                                                      size_t symbol) {
    fail(
        "rANS: stream exhausted: {} needs a word at byte offset {} but the stream has {} bytes "
        "(truncated or corrupt)",
        src.where(symbol), src.position, src.size);
  }
  // Rans64DecGetBits(4) and its renormalisation.
  uint32_t nibble(size_t symbol) {
    const auto val = static_cast<uint32_t>(x & kMaxBypassVal);
    x >>= kBypassBits;
    if (x < kL) x = (x << 32) | word(symbol);
    return val;
  }
};

Source open_source(std::string_view encoded, size_t stream = Source::kNoStream) {
  Source src{reinterpret_cast<const unsigned char*>(encoded.data()), encoded.size(), 0, 0, stream};
  if (encoded.size() < 8) {
    fail("rANS: {}stream of {} bytes is shorter than the 8-byte initial state",
         stream == Source::kNoStream ? std::string() : fmt::format("stream {}: ", stream),
         encoded.size());
  }
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
        "rANS: {}: corrupt stream: bypass count {} exceeds 7 (the most an encoder can write), at "
        "byte offset {}",
        src.where(i), n_bypass, src.position);
  }
  uint32_t raw = 0;
  for (uint32_t j = 0; j < n_bypass; ++j) raw |= src.nibble(i) << (kBypassBits * j);
  int64_t value = raw >> 1;
  value = (raw & 1) ? -value - 1 : value + row.max_value;
  const int64_t symbol = value + row.offset;
  if (symbol < std::numeric_limits<int32_t>::min() ||
      symbol > std::numeric_limits<int32_t>::max()) {
    fail("rANS: {}: corrupt stream: decoded value {} does not fit int32", src.where(i), symbol);
  }
  stats.escapes += 1;
  stats.bypass_nibbles += 1 + n_bypass;
  return static_cast<int32_t>(symbol);
}

// One symbol: finds s with start <= slot < start + freq (see DecodeRow) and applies
// Rans64DecAdvance, x = freq * (x >> scale_bits) + slot - start, without the renormalisation.
// The chain from x to the next x is a mask, a shift, a load, a multiply and an add; everything else
// (the symbol number, the scan for buckets that hold a boundary) is off it or rare.
inline uint32_t advance(uint64_t& x, const DecodeRow& row) {
  const uint32_t slot = static_cast<uint16_t>(x);
  const uint32_t bucket = slot >> row.bucket_shift;
  const uint32_t entry = row.buckets[bucket];
  uint32_t start = entry & 0xFFFF;
  uint32_t freq = entry >> 16;
  uint32_t s = row.bucket_symbols[bucket];
  if (slot - start >= freq) [[unlikely]] {
    // Forward scan (see DecodeRow); ends at the escape symbol at the latest.
    do {
      const uint32_t packed = row.symbols[++s];
      start = packed & 0xFFFF;
      freq = packed >> 16;
    } while (slot - start >= freq);
  }
  x = freq * (x >> kPrecision) + (slot - start);
  return s;
}

// Decodes symbols [first, first + count) of `lanes` independent streams in lockstep: symbol i
// of every lane, then symbol i + 1. Each lane's state has its own serial dependency chain (the
// next table lookup needs the previous state), so one stream keeps the core mostly waiting on
// load latency; K chains side by side fill that time. For lanes = 1 this is the plain decoder.
template <size_t K>
void decode_lanes(Source* const* src, const int32_t* const* indexes, int32_t* const* out,
                  size_t first, size_t count, const DecodeRow* rows, size_t n, RansStats& stats) {
  // Each lane's state and read position as plain scalars, which the compiler keeps in
  // registers (a Source on the stack would put a store and a reload on the state's chain).
  // The cold paths work on a Source written back for them.
  uint64_t x[K];
  size_t position[K];
  const int32_t* idx[K];
  int32_t* dst[K];
  for (size_t k = 0; k < K; ++k) {
    x[k] = src[k]->x;
    position[k] = src[k]->position;
    idx[k] = indexes[k];
    dst[k] = out[k];
    // Table indexes are checked before decoding, off the loop.
    for (size_t i = first; i < first + count; ++i) {
      if (static_cast<uint32_t>(idx[k][i]) >= n) [[unlikely]]
        bad_index(src[k]->where(i), idx[k][i], n);
    }
  }
  auto sync = [&](size_t k) {
    src[k]->x = x[k];
    src[k]->position = position[k];
  };
  for (size_t i = first; i < first + count; ++i) {
    // Unrolled, so that every lane's state stays in a register.
#pragma GCC unroll 8
    for (size_t k = 0; k < K; ++k) {
      const DecodeRow& row = rows[idx[k][i]];
      const uint32_t s = advance(x[k], row);
      if constexpr (K == 1) {
        // One stream: a branch keeps the renormalisation off the state's chain when predicted.
        if (x[k] < kL) {
          if (src[k]->size - position[k] < 4) [[unlikely]] {
            sync(k);
            Source::report_exhausted(*src[k], i);
          }
          x[k] = (x[k] << 32) | load_word(src[k]->data + position[k]);
          position[k] += 4;
        }
      } else {
        // Several: without a branch. Whether a word is needed is close to random, and each
        // mispredicted branch would throw away every lane's work in flight.
        const bool need = x[k] < kL;
        uint32_t w = 0;
        if (src[k]->size - position[k] >= 4) [[likely]] {
          w = load_word(src[k]->data + position[k]);
        } else if (need) {
          sync(k);
          Source::report_exhausted(*src[k], i);
        }
        // As masks: the compiler turns a conditional expression back into a branch.
        const uint64_t take = uint64_t{0} - static_cast<uint64_t>(need);
        x[k] = (x[k] & ~take) | (((x[k] << 32) | w) & take);
        position[k] += static_cast<size_t>(need) << 2;
      }
      if (static_cast<int32_t>(s) == row.max_value) [[unlikely]] {
        sync(k);
        dst[k][i] = decode_escape(*src[k], row, i, stats);
        x[k] = src[k]->x;
        position[k] = src[k]->position;
      } else {
        dst[k][i] = static_cast<int32_t>(s) + row.offset;  // offset + length fits int32
      }
    }
  }
  for (size_t k = 0; k < K; ++k) sync(k);
}

void decode_into(Source& src, std::span<const int32_t> indexes, const QuantizedCdfTable& tables,
                 std::span<int32_t> out, RansStats& stats) {
  if (out.size() != indexes.size()) {
    fail("rANS: output has room for {} symbols, expected {}", out.size(), indexes.size());
  }
  const auto& rows = tables.coding().rows;
  Source* srcs[1] = {&src};
  const int32_t* idx[1] = {indexes.data()};
  int32_t* outs[1] = {out.data()};
  decode_lanes<1>(srcs, idx, outs, 0, indexes.size(), rows.data(), rows.size(), stats);
  stats.symbols += indexes.size();
}

// Up to kMaxLanes streams side by side (see decode_lanes): their common length in lockstep, then
// what is left of the longer ones alone. Four, because eight measured slower: the lanes' state
// no longer fits in the registers.
constexpr size_t kMaxLanes = 4;

void decode_group(std::span<Source> src, std::span<const StreamToDecode> streams,
                  const std::vector<DecodeRow>& rows, RansStats& stats) {
  const size_t lanes = src.size();
  Source* srcs[kMaxLanes];
  const int32_t* idx[kMaxLanes];
  int32_t* outs[kMaxLanes];
  size_t common = std::numeric_limits<size_t>::max();
  for (size_t k = 0; k < lanes; ++k) {
    srcs[k] = &src[k];
    idx[k] = streams[k].indexes.data();
    outs[k] = streams[k].out.data();
    common = std::min(common, streams[k].indexes.size());
  }
  const DecodeRow* r = rows.data();
  switch (lanes) {
    case 4:
      decode_lanes<4>(srcs, idx, outs, 0, common, r, rows.size(), stats);
      break;
    case 2:
      decode_lanes<2>(srcs, idx, outs, 0, common, r, rows.size(), stats);
      break;
    default:
      decode_lanes<1>(srcs, idx, outs, 0, common, r, rows.size(), stats);
      break;
  }
  for (size_t k = 0; k < lanes; ++k) {
    const size_t rest = streams[k].indexes.size() - common;
    if (rest > 0) decode_lanes<1>(srcs + k, idx + k, outs + k, common, rest, r, rows.size(), stats);
  }
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
    if (static_cast<uint32_t>(index) >= n) bad_index(fmt::format("symbol {}", i), index, n);
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

void decode_streams(std::span<const StreamToDecode> streams, const QuantizedCdfTable& tables,
                    DecodeOptions options, RansStats* stats) {
  std::vector<Source> src;
  src.reserve(streams.size());
  size_t symbols = 0;
  for (size_t j = 0; j < streams.size(); ++j) {
    if (streams[j].out.size() != streams[j].indexes.size()) {
      fail("rANS: stream {}: output has room for {} symbols, expected {}", j, streams[j].out.size(),
           streams[j].indexes.size());
    }
    src.push_back(open_source(streams[j].encoded, j));
    symbols += streams[j].indexes.size();
  }
  const auto& rows = tables.coding().rows;
  RansStats local;
  for (size_t j = 0; j < streams.size();) {
    const size_t left = streams.size() - j;
    const size_t lanes = left >= 4 ? 4 : left >= 2 ? 2 : 1;
    decode_group(std::span(src).subspan(j, lanes), streams.subspan(j, lanes), rows, local);
    j += lanes;
  }
  for (size_t j = 0; j < streams.size(); ++j) {
    if (auto problem = end_problem(src[j]); !problem.empty()) {
      if (options.check_end) {
        fail("rANS: stream {} did not end cleanly after {} symbols: {}", j,
             streams[j].indexes.size(), problem);
      }
      local.unclean_ends += 1;
    }
  }
  local.symbols = symbols;
  if (stats != nullptr) *stats += local;
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
      if (static_cast<uint32_t>(index) >= n) bad_index(fmt::format("symbol {}", i), index, n);
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
  Source src{reinterpret_cast<const unsigned char*>(stream_.data()), stream_.size(), position_, x_,
             Source::kNoStream};
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
  Source src{reinterpret_cast<const unsigned char*>(stream_.data()), stream_.size(), position_, x_,
             Source::kNoStream};
  if (auto problem = end_problem(src); !problem.empty()) {
    fail("rANS: stream did not end cleanly after {} symbols: {}", stats_.symbols, problem);
  }
}

}  // namespace torchless::entropy
