#include "torchless/entropy/rans.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

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
  auto fixture =
      torchless::testing::read_json(torchless::testing::fixture("entropy", "coder_cases.json"));
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
  auto fixture =
      torchless::testing::read_json(torchless::testing::fixture("entropy", "coder_cases.json"));
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

// Tables with short (EntropyBottleneck-like) and long (GaussianConditional-like) rows, so that
// both bucket sizings are exercised.
QuantizedCdfTable mixed_length_table() {
  std::vector<std::vector<int32_t>> cdfs;
  std::vector<int32_t> lengths, offsets;
  for (int half : {1, 4, 30, 200, 900}) {
    std::vector<float> pmf;
    for (int k = -half; k <= half; ++k) {
      pmf.push_back(static_cast<float>(std::exp(-std::abs(k) * 3.0 / half)));
    }
    pmf.push_back(1e-3f);  // the escape's mass
    auto cdf = pmf_to_quantized_cdf(pmf);
    cdfs.emplace_back(cdf.begin(), cdf.end());
    lengths.push_back(static_cast<int32_t>(cdf.size()));
    offsets.push_back(-half);
  }
  size_t stride = 0;
  for (const auto& r : cdfs) stride = std::max(stride, r.size());
  for (auto& r : cdfs) r.resize(stride, 0);
  return QuantizedCdfTable::from_rows(cdfs, lengths, offsets);
}

struct TestStream {
  std::vector<int32_t> symbols, indexes;
  std::string encoded;
  RansStats stats;
};

// `count` streams of different lengths (0 to 400 symbols), random tables, with escapes.
std::vector<TestStream> test_streams(size_t count, const QuantizedCdfTable& table, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<TestStream> streams(count);
  for (auto& st : streams) {
    const size_t n = std::uniform_int_distribution<size_t>(0, 400)(rng);
    for (size_t i = 0; i < n; ++i) {
      const auto index = std::uniform_int_distribution<int32_t>(0, 4)(rng);
      const int32_t half = -table.offsets()[index];
      // Mostly inside the table, sometimes far outside it (escapes with up to 7 nibbles).
      const bool escape = std::uniform_int_distribution<int>(0, 30)(rng) == 0;
      const int32_t spread = escape ? (1 << 26) : half;
      st.indexes.push_back(index);
      st.symbols.push_back(std::uniform_int_distribution<int32_t>(-spread, spread)(rng));
    }
    st.encoded = encode_with_indexes(st.symbols, st.indexes, table, &st.stats);
  }
  return streams;
}

std::vector<StreamToDecode> jobs_for(const std::vector<TestStream>& streams,
                                     std::vector<std::vector<int32_t>>& out) {
  out.assign(streams.size(), {});
  std::vector<StreamToDecode> jobs;
  for (size_t j = 0; j < streams.size(); ++j) {
    out[j].assign(streams[j].indexes.size(), INT32_MIN);
    jobs.push_back({streams[j].encoded, streams[j].indexes, out[j]});
  }
  return jobs;
}

TEST(Rans, DecodeStreamsGivesEachStreamsSymbols) {
  const auto table = mixed_length_table();
  // 1 to 13 streams: groups of 8, 4, 2 and 1 lanes, each with unequal lengths.
  for (size_t count = 1; count <= 13; ++count) {
    SCOPED_TRACE(count);
    auto streams = test_streams(count, table, static_cast<unsigned>(count));
    std::vector<std::vector<int32_t>> out;
    auto jobs = jobs_for(streams, out);
    RansStats stats;
    decode_streams(jobs, table, DecodeOptions{.check_end = true}, &stats);
    RansStats expected;
    for (size_t j = 0; j < count; ++j) {
      EXPECT_EQ(out[j], streams[j].symbols) << "stream " << j;
      expected += streams[j].stats;
    }
    EXPECT_EQ(stats.symbols, expected.symbols);
    EXPECT_EQ(stats.escapes, expected.escapes);
    EXPECT_EQ(stats.bypass_nibbles, expected.bypass_nibbles);
    EXPECT_EQ(stats.unclean_ends, 0u);
  }
}

TEST(Rans, DecodeStreamsDecodesCompressAIVectorsBesideOtherStreams) {
  // Case 6 ("mixed tables") as written by CompressAI, as lane 5 of 9 beside streams of its tables.
  auto c = compressai_vectors("rans_raw.json")["cases"][6];
  const auto table = table_of(c);
  const auto indexes = ints(c["indexes"]);
  const auto symbols = ints(c["symbols"]);
  const std::string vector_bytes = from_hex(c["encoded_hex"]);
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> sym(9), idx(9), out(9);
  std::vector<std::string> enc(9);
  std::vector<StreamToDecode> jobs;
  for (size_t j = 0; j < 9; ++j) {
    if (j == 5) {
      sym[j] = symbols;
      idx[j] = indexes;
      enc[j] = vector_bytes;
    } else {
      for (size_t i = 0; i < 50 + 10 * j; ++i) {
        const auto t =
            std::uniform_int_distribution<int32_t>(0, static_cast<int32_t>(table.size()) - 1)(rng);
        idx[j].push_back(t);
        sym[j].push_back(table.offsets()[t] +
                         std::uniform_int_distribution<int32_t>(-3, table.max_value(t) + 3)(rng));
      }
      enc[j] = encode_with_indexes(sym[j], idx[j], table);
    }
    out[j].resize(idx[j].size());
  }
  for (size_t j = 0; j < 9; ++j) jobs.push_back({enc[j], idx[j], out[j]});
  decode_streams(jobs, table, DecodeOptions{.check_end = true});
  for (size_t j = 0; j < 9; ++j) EXPECT_EQ(out[j], sym[j]) << "stream " << j;
}

TEST(Rans, DecodeStreamsNamesTheStreamThatFailed) {
  const auto table = mixed_length_table();
  auto expect_error = [&](const std::vector<TestStream>& streams, const std::string& needle,
                          DecodeOptions options = {}) {
    std::vector<std::vector<int32_t>> out;
    auto jobs = jobs_for(streams, out);
    try {
      decode_streams(jobs, table, options);
      ADD_FAILURE() << "expected an Error containing: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto streams = test_streams(6, table, 99);
  for (auto& st : streams) {
    while (st.symbols.size() < 50) {  // long enough to need words after the initial state
      st.symbols.push_back(st.symbols.size() % 7 == 0 ? 1 << 20 : 0);
      st.indexes.push_back(3);
    }
    st.encoded = encode_with_indexes(st.symbols, st.indexes, table);
  }

  auto truncated = streams;
  truncated[3].encoded.resize(truncated[3].encoded.size() - 4);
  expect_error(truncated, "stream exhausted: stream 3, symbol");

  auto bad_index = streams;
  bad_index[2].indexes[17] = 5;
  expect_error(bad_index, "stream 2, symbol 17: table index 5 is outside [0, 5)");

  auto short_stream = streams;
  short_stream[4].encoded = "abc";
  expect_error(short_stream, "stream 4: stream of 3 bytes");

  auto trailing = streams;
  trailing[1].encoded += std::string(4, '\0');
  expect_error(trailing, "stream 1 did not end cleanly", DecodeOptions{.check_end = true});
  std::vector<std::vector<int32_t>> out;
  auto jobs = jobs_for(trailing, out);
  RansStats stats;
  decode_streams(jobs, table, {}, &stats);  // CompressAI's behaviour: no end check
  EXPECT_EQ(stats.unclean_ends, 1u);
  EXPECT_EQ(out[1], trailing[1].symbols);

  jobs = jobs_for(streams, out);
  jobs[0].out = jobs[0].out.subspan(1);
  EXPECT_THROW(decode_streams(jobs, table), Error);
}

}  // namespace
}  // namespace torchless::entropy
