// CompressAI's rANS wire format (compressai.ans: RansEncoder, BufferedRansEncoder, RansDecoder),
// both directions, byte for byte. The coder is ryg's Rans64 (rygorous/ryg_rans) as CompressAI
// uses it:
//
//   - The state x is a uint64 kept in the normalisation interval [L, 2^63) with L = 2^31, so
//     renormalisation moves exactly one 32-bit word at a time.
//   - A symbol with cumulative frequency `start` and frequency `freq` out of M = 2^16
//     (scale_bits = 16) maps x to C(s, x) = (x / freq) * M + (x % freq) + start. Before that the
//     encoder emits the low word of x while x >= x_max = ((L >> 16) << 32) * freq, which keeps
//     the result below 2^63. The decoder inverts it: slot = x mod M picks the symbol s with
//     start <= slot < start + freq, then x = freq * (x >> 16) + slot - start, and reads a word
//     while x < L.
//   - Values a table cannot code directly (outside [offset, offset + max_value)) are coded as
//     the escape symbol max_value followed by raw 4-bit "bypass" nibbles (x = x * 16 + nibble),
//     exactly as CompressAI does: n_bypass in unary base 15, then the nibbles of
//     raw = (value < 0 ? -2*value - 1 : 2*(value - max_value)), least significant first.
//   - rANS is last-in first-out: the encoder runs over the symbols in reverse and writes words
//     backwards, so the decoder reads the string forwards: [state_lo, state_hi, words...], each
//     a little-endian uint32. Nothing else is stored (no length, no symbol count).
//
// Differences from CompressAI, all on input CompressAI mishandles (documented, never on valid
// input): a table index outside [0, N) or a value outside the codable range
// [-2^27, max_value + 2^27) throws Error (CompressAI reads out of bounds or loops forever); a
// decoder that runs out of words throws Error "stream exhausted" (CompressAI reads past the
// string); a bypass count above 7 (which no encoder can produce) throws Error. CompressAI never
// checks that a stream ended where it should; `check_end` / DecodeOptions::check_end does.
//
// Encoders and decoders are not thread-safe; use one per thread. Independent streams (one per
// batch element, as CompressAI writes them) can be coded in parallel.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "torchless/entropy/cdf.h"

namespace torchless::entropy {

// Counts of what one coding call did, for summaries (bits per symbol, bypass use).
struct RansStats {
  uint64_t symbols = 0;         // symbols coded
  uint64_t escapes = 0;         // symbols coded with the escape symbol (max_value)
  uint64_t bypass_nibbles = 0;  // raw 4-bit nibbles, including the n_bypass ones
  // Decoding: streams that did not end cleanly (words left unread, or a final state other than
  // L) though they decoded; only counted when DecodeOptions::check_end is off (else an Error).
  uint64_t unclean_ends = 0;
  RansStats& operator+=(const RansStats& other) {
    symbols += other.symbols;
    escapes += other.escapes;
    bypass_nibbles += other.bypass_nibbles;
    unclean_ends += other.unclean_ends;
    return *this;
  }
};

struct DecodeOptions {
  // Also require that the decoder consumed every word of the string and ended in the initial
  // state L, as a decoder of a well-formed, complete stream always does. CompressAI does not
  // check this; with it, truncation and most corruption are detected.
  bool check_end = false;
};

// RansEncoder.encode_with_indexes: symbol i is coded with table indexes[i]. Returns the stream.
std::string encode_with_indexes(std::span<const int32_t> symbols, std::span<const int32_t> indexes,
                                const QuantizedCdfTable& tables, RansStats* stats = nullptr);
// The same with CompressAI's argument list (tables validated on each call).
std::string encode_with_indexes(std::span<const int32_t> symbols, std::span<const int32_t> indexes,
                                const std::vector<std::vector<int32_t>>& cdfs,
                                std::span<const int32_t> cdf_lengths,
                                std::span<const int32_t> offsets);

// RansDecoder.decode_with_indexes: decodes indexes.size() symbols from `encoded`.
std::vector<int32_t> decode_with_indexes(std::string_view encoded, std::span<const int32_t> indexes,
                                         const QuantizedCdfTable& tables,
                                         DecodeOptions options = {}, RansStats* stats = nullptr);
std::vector<int32_t> decode_with_indexes(std::string_view encoded, std::span<const int32_t> indexes,
                                         const std::vector<std::vector<int32_t>>& cdfs,
                                         std::span<const int32_t> cdf_lengths,
                                         std::span<const int32_t> offsets);

// One of several independent streams for decode_streams.
struct StreamToDecode {
  std::string_view encoded;
  std::span<const int32_t> indexes;
  std::span<int32_t> out;  // room for indexes.size() symbols
};

// decode_with_indexes on each stream, with the same results, but faster per thread: up to 4
// streams advance in lockstep, so that their serial dependency chains (each table lookup waits
// for the previous state) overlap. Use it for the batch elements of one model or the blocks of
// a file; split the streams across threads for more. Errors name the stream ("stream 3,
// symbol 17: ..."); the first error ends the call. `stats`, if given, gets the sum.
void decode_streams(std::span<const StreamToDecode> streams, const QuantizedCdfTable& tables,
                    DecodeOptions options = {}, RansStats* stats = nullptr);

// BufferedRansEncoder: collects the coding operations of several encode_with_indexes calls
// (each may use different tables) and writes one stream on flush(). The bytes equal one
// encode_with_indexes over the concatenated symbols. flush() empties the buffer, so the
// encoder can be reused for the next stream.
class BufferedRansEncoder {
 public:
  void encode_with_indexes(std::span<const int32_t> symbols, std::span<const int32_t> indexes,
                           const QuantizedCdfTable& tables);
  std::string flush();
  // What the calls since the last flush() buffered (read it before flushing).
  const RansStats& stats() const { return stats_; }

  // One buffered coding operation (a table symbol or a bypass nibble), in push order.
  struct Op {
    uint64_t rcp_freq;  // reciprocal of freq (ryg's Rans64EncSymbol)
    uint32_t bias;
    uint16_t cmpl_freq;  // 65536 - freq; 0 marks a bypass nibble, whose value is `bias`
    uint16_t rcp_shift;
  };

 private:
  std::vector<Op> ops_;
  RansStats stats_;
};

// RansDecoder for streams decoded in several steps (CompressAI's set_stream + decode_stream,
// used by autoregressive models): the state and read position persist between calls.
class RansDecoder {
 public:
  // Copies `encoded` and reads the initial state from its first 8 bytes (throws Error if
  // shorter).
  void set_stream(std::string_view encoded);
  // Decodes indexes.size() symbols, continuing where the previous call stopped.
  std::vector<int32_t> decode_stream(std::span<const int32_t> indexes,
                                     const QuantizedCdfTable& tables);
  void decode_stream(std::span<const int32_t> indexes, const QuantizedCdfTable& tables,
                     std::span<int32_t> out);
  // True when every word was read and the state is back to L (a complete, well-formed stream).
  bool at_clean_end() const;
  // Throws Error saying how the stream did not end cleanly (words left, or final state).
  void check_end() const;
  // What was decoded since set_stream().
  const RansStats& stats() const { return stats_; }

 private:
  std::string stream_;
  uint64_t x_ = 0;
  size_t position_ = 0;  // byte offset of the next word
  RansStats stats_;
};

}  // namespace torchless::entropy
