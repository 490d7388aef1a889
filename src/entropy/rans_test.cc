#include "torchless/entropy/rans.h"

#include <gtest/gtest.h>

#include "entropy/test_vectors.h"
#include "torchless/core/error.h"

namespace torchless::entropy {
namespace {

using testing::compressai_vectors;
using testing::from_hex;
using testing::ints;
using testing::to_hex;

std::vector<std::vector<int32_t>> rows(const nlohmann::json& cdfs) {
  return cdfs.get<std::vector<std::vector<int32_t>>>();
}

QuantizedCdfTable table_of(const nlohmann::json& c) {
  return QuantizedCdfTable::from_rows(rows(c["cdfs"]), ints(c["cdfs_sizes"]), ints(c["offsets"]));
}

// The spec's own example (§1.3): a 4-entry table, no renormalisation word.
QuantizedCdfTable example_table() {
  return QuantizedCdfTable::from_rows({{0, 20000, 40000, 60000, 65536}}, std::vector<int32_t>{5},
                                      std::vector<int32_t>{0});
}

TEST(Rans, SpecExampleEncodesToDocumentedBytes) {
  std::vector<int32_t> symbols{0, 1, 2, 0, 1, 2};
  std::vector<int32_t> indexes(6, 0);
  EXPECT_EQ(to_hex(encode_with_indexes(symbols, indexes, example_table())), "202618f96a020000");
}

TEST(Rans, EncodesEveryCompressAIRawVectorByteForByte) {
  auto vectors = compressai_vectors("rans_raw.json");
  for (const auto& c : vectors["cases"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto symbols = ints(c["symbols"]);
    auto indexes = ints(c["indexes"]);
    std::string encoded = encode_with_indexes(symbols, indexes, table_of(c));
    EXPECT_EQ(to_hex(encoded), c["encoded_hex"].get<std::string>());
    EXPECT_EQ(encoded.size(), c["encoded_len"].get<size_t>());
  }
}

TEST(Rans, EncodesWithCompressAIArgumentLists) {
  auto c = compressai_vectors("rans_raw.json")["cases"][6];  // "mixed tables"
  auto symbols = ints(c["symbols"]);
  auto indexes = ints(c["indexes"]);
  auto sizes = ints(c["cdfs_sizes"]);
  auto offsets = ints(c["offsets"]);
  EXPECT_EQ(to_hex(encode_with_indexes(symbols, indexes, rows(c["cdfs"]), sizes, offsets)),
            c["encoded_hex"].get<std::string>());
  EXPECT_EQ(
      decode_with_indexes(from_hex(c["encoded_hex"]), indexes, rows(c["cdfs"]), sizes, offsets),
      symbols);
}

TEST(Rans, DecodesEveryCompressAIRawVectorToItsSymbolsAndEndsCleanly) {
  auto vectors = compressai_vectors("rans_raw.json");
  for (const auto& c : vectors["cases"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto indexes = ints(c["indexes"]);
    auto decoded = decode_with_indexes(from_hex(c["encoded_hex"]), indexes, table_of(c),
                                       DecodeOptions{.check_end = true});
    EXPECT_EQ(decoded, ints(c["symbols"]));
  }
}

TEST(Rans, BufferedEncoderOverChunksGivesCompressAIBytes) {
  auto vectors = compressai_vectors("rans_buffered.json");
  for (const auto& c : vectors["cases"]) {
    auto table = table_of(c);
    BufferedRansEncoder encoder;
    for (const auto& chunk : c["chunks"]) {
      encoder.encode_with_indexes(ints(chunk["symbols"]), ints(chunk["indexes"]), table);
    }
    EXPECT_EQ(to_hex(encoder.flush()), c["encoded_hex"].get<std::string>());
  }
}

TEST(Rans, BufferedEncoderIsReusableAfterFlush) {
  auto vectors = compressai_vectors("rans_buffered.json");
  for (const auto& c : vectors["cases"]) {
    auto table = table_of(c);
    BufferedRansEncoder encoder;
    for (const auto& chunk : c["chunks"]) {
      encoder.encode_with_indexes(ints(chunk["symbols"]), ints(chunk["indexes"]), table);
    }
    encoder.flush();
    const auto& first = c["chunks"][0];
    encoder.encode_with_indexes(ints(first["symbols"]), ints(first["indexes"]), table);
    EXPECT_EQ(to_hex(encoder.flush()), c["reuse_after_flush_hex"].get<std::string>());
  }
}

TEST(Rans, StreamDecoderResumesChunkByChunk) {
  auto vectors = compressai_vectors("rans_buffered.json");
  for (const auto& c : vectors["cases"]) {
    auto table = table_of(c);
    RansDecoder decoder;
    decoder.set_stream(from_hex(c["encoded_hex"]));
    for (const auto& chunk : c["chunks"]) {
      EXPECT_EQ(decoder.decode_stream(ints(chunk["indexes"]), table), ints(chunk["symbols"]));
    }
    EXPECT_TRUE(decoder.at_clean_end());
    EXPECT_NO_THROW(decoder.check_end());
  }
}

TEST(Rans, EmptySymbolListEncodesToTheInitialStateOnly) {
  // CompressAI crashes here (its output buffer has one word per symbol); the stream itself is
  // well defined: just the state L = 2^31.
  EXPECT_EQ(to_hex(encode_with_indexes({}, {}, example_table())), "0000008000000000");
  BufferedRansEncoder encoder;
  EXPECT_EQ(to_hex(encoder.flush()), "0000008000000000");
}

TEST(Rans, RejectsTableIndexOutsideTheTableSet) {
  std::vector<int32_t> symbols{0, 1};
  std::vector<int32_t> indexes{0, 1};
  try {
    encode_with_indexes(symbols, indexes, example_table());
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("symbol 1: table index 1 is outside [0, 1)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(
      decode_with_indexes(from_hex("202618f96a020000"), std::vector<int32_t>{-1}, example_table()),
      Error);
}

TEST(Rans, RejectsValuesBeyondTheLargestBypassEscape) {
  // max_value is 3; the codable range is [-2^27, 3 + 2^27 - 1] (raw < 2^28).
  const int32_t lowest = -(1 << 27);
  const int32_t highest = 3 + (1 << 27) - 1;
  std::vector<int32_t> indexes{0};
  for (int32_t ok : {lowest, highest}) {
    std::vector<int32_t> symbols{ok};
    auto encoded = encode_with_indexes(symbols, indexes, example_table());
    EXPECT_EQ(decode_with_indexes(encoded, indexes, example_table()), symbols);
  }
  for (int32_t bad : {lowest - 1, highest + 1, INT32_MIN, INT32_MAX}) {
    std::vector<int32_t> symbols{bad};
    EXPECT_THROW(encode_with_indexes(symbols, indexes, example_table()), Error) << bad;
    BufferedRansEncoder encoder;
    EXPECT_THROW(encoder.encode_with_indexes(symbols, indexes, example_table()), Error) << bad;
  }
}

TEST(Rans, RejectedBufferedCallLeavesTheBufferUnchanged) {
  BufferedRansEncoder encoder;
  std::vector<int32_t> good{0, 1, 2};
  std::vector<int32_t> bad{0, INT32_MAX, 2};
  std::vector<int32_t> indexes{0, 0, 0};
  encoder.encode_with_indexes(good, indexes, example_table());
  EXPECT_THROW(encoder.encode_with_indexes(bad, indexes, example_table()), Error);
  encoder.encode_with_indexes(good, indexes, example_table());
  std::vector<int32_t> both{0, 1, 2, 0, 1, 2};
  std::vector<int32_t> both_indexes(6, 0);
  EXPECT_EQ(encoder.flush(), encode_with_indexes(both, both_indexes, example_table()));
}

TEST(Rans, TruncatedStreamReportsExhaustion) {
  auto c = compressai_vectors("rans_raw.json")["cases"][8];  // k=11 m=20000
  auto encoded = from_hex(c["encoded_hex"]);
  auto table = table_of(c);
  auto indexes = ints(c["indexes"]);
  try {
    decode_with_indexes(encoded.substr(0, encoded.size() / 2), indexes, table);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("stream exhausted"), std::string::npos) << e.what();
  }
  EXPECT_THROW(decode_with_indexes(encoded.substr(0, 7), indexes, table), Error);
}

TEST(Rans, EndCheckDetectsTrailingWordsAndMissingSymbols) {
  auto c = compressai_vectors("rans_raw.json")["cases"][8];
  auto encoded = from_hex(c["encoded_hex"]);
  auto table = table_of(c);
  auto indexes = ints(c["indexes"]);
  // CompressAI's behaviour (no check) accepts trailing bytes; the end check does not.
  RansStats stats;
  EXPECT_NO_THROW(decode_with_indexes(encoded + std::string(4, '\0'), indexes, table, {}, &stats));
  EXPECT_EQ(stats.unclean_ends, 1u);
  EXPECT_THROW(decode_with_indexes(encoded + std::string(4, '\0'), indexes, table,
                                   DecodeOptions{.check_end = true}),
               Error);
  // Decoding fewer symbols than were encoded leaves words or state behind.
  std::vector<int32_t> fewer(indexes.begin(), indexes.end() - 1);
  RansDecoder decoder;
  decoder.set_stream(encoded);
  decoder.decode_stream(fewer, table);
  EXPECT_FALSE(decoder.at_clean_end());
  EXPECT_THROW(decoder.check_end(), Error);
}

TEST(Rans, RejectsBypassCountNoEncoderCanWrite) {
  // A hand-made state whose slot (65000) decodes to the escape of the example table (start
  // 60000, freq 5536) and whose next nibble, the bypass count, is above 7.
  auto table = example_table();
  std::vector<int32_t> indexes{0};
  uint64_t state = 0;
  for (uint64_t hi = 1; state == 0; ++hi) {
    const uint64_t candidate = (hi << 36) | 65000;
    const uint64_t after = 5536 * (candidate >> 16) + 65000 - 60000;  // >= L: no renorm
    if ((after & 15) > 7) state = candidate;
  }
  std::string bytes(16, '\0');
  for (int b = 0; b < 8; ++b) bytes[b] = static_cast<char>(state >> (8 * b));
  try {
    decode_with_indexes(bytes, indexes, table);
    FAIL() << "decoded a bypass count > 7";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bypass count"), std::string::npos) << e.what();
  }
}

// Cases from tests/fixtures/gen_entropy.py, whose plain-Python reference of CompressAI's coder
// (checked there against CompressAI's own vectors) wrote the expected bytes.
TEST(Rans, EncodesEveryPythonReferenceCaseByteForByte) {
  auto fixture = testing::load_json(torchless::testing::fixture("entropy", "coder_cases.json"));
  ASSERT_GE(fixture["cases"].size(), 7u);
  for (const auto& c : fixture["cases"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto table =
        QuantizedCdfTable::from_rows(rows(c["cdfs"]), ints(c["cdf_lengths"]), ints(c["offsets"]));
    auto symbols = ints(c["symbols"]);
    auto indexes = ints(c["indexes"]);
    EXPECT_EQ(to_hex(encode_with_indexes(symbols, indexes, table)),
              c["encoded_hex"].get<std::string>());
    EXPECT_EQ(decode_with_indexes(from_hex(c["encoded_hex"]), indexes, table,
                                  DecodeOptions{.check_end = true}),
              symbols);
  }
}

TEST(Rans, BufferedCallsAndResumedDecodingMatchThePythonReference) {
  auto fixture = testing::load_json(torchless::testing::fixture("entropy", "coder_cases.json"));
  int checked = 0;
  for (const auto& c : fixture["cases"]) {
    if (!c.contains("chunks")) continue;
    auto table =
        QuantizedCdfTable::from_rows(rows(c["cdfs"]), ints(c["cdf_lengths"]), ints(c["offsets"]));
    auto symbols = ints(c["symbols"]);
    auto indexes = ints(c["indexes"]);
    BufferedRansEncoder encoder;
    RansDecoder decoder;
    decoder.set_stream(from_hex(c["encoded_hex"]));
    size_t at = 0;
    for (size_t n : c["chunks"].get<std::vector<size_t>>()) {
      std::span<const int32_t> sym(symbols.data() + at, n);
      std::span<const int32_t> idx(indexes.data() + at, n);
      encoder.encode_with_indexes(sym, idx, table);
      auto decoded = decoder.decode_stream(idx, table);
      EXPECT_EQ(decoded, std::vector<int32_t>(sym.begin(), sym.end()));
      at += n;
    }
    EXPECT_EQ(to_hex(encoder.flush()), c["encoded_hex"].get<std::string>());
    EXPECT_TRUE(decoder.at_clean_end());
    ++checked;
  }
  EXPECT_EQ(checked, 1);
}

}  // namespace
}  // namespace torchless::entropy
