#include "torchless/entropy/cdf.h"

#include <gtest/gtest.h>

#include "entropy/test_vectors.h"
#include "torchless/core/error.h"

namespace torchless::entropy {
namespace {

using testing::compressai_vectors;
using testing::floats_from_hex;

TEST(PmfToQuantizedCdf, MatchesEveryCompressAICase) {
  auto vectors = compressai_vectors("pmf_cdf.json");
  ASSERT_EQ(vectors["precision"].get<int>(), 16);
  for (const auto& c : vectors["cases"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto pmf = floats_from_hex(c["pmf_f32hex"]);
    ASSERT_EQ(pmf.size(), c["pmf"].size());
    EXPECT_EQ(pmf_to_quantized_cdf(pmf), c["cdf"].get<std::vector<uint32_t>>());
  }
}

TEST(PmfToQuantizedCdf, RaisesCompressAIErrorsWithItsMessages) {
  auto vectors = compressai_vectors("pmf_cdf.json");
  for (const auto& c : vectors["error_cases"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    std::vector<float> pmf;
    for (const auto& p : c["pmf"]) pmf.push_back(std::stof(p.get<std::string>()));
    try {
      pmf_to_quantized_cdf(pmf);
      ADD_FAILURE() << "expected an Error";
    } catch (const Error& e) {
      // CompressAI's message after "ValueError: ".
      EXPECT_EQ("ValueError: " + std::string(e.what()), c["error"].get<std::string>());
    }
  }
}

TEST(PmfToQuantizedCdf, SpecExamples) {
  EXPECT_EQ(pmf_to_quantized_cdf(std::vector<float>{1, 0}),
            (std::vector<uint32_t>{0, 65535, 65536}));
  const float tiny = 1.0f / 131072;
  EXPECT_EQ(pmf_to_quantized_cdf(std::vector<float>{tiny, tiny, 1}),
            (std::vector<uint32_t>{0, 1, 2, 65536}));
  EXPECT_EQ(pmf_to_quantized_cdf(std::vector<float>{0.3f, 0.3f, 0.3f}),
            (std::vector<uint32_t>{0, 21845, 43690, 65536}));
  EXPECT_EQ(pmf_to_quantized_cdf(std::vector<float>{1}), (std::vector<uint32_t>{0, 65536}));
}

TEST(PmfToQuantizedCdf, MatchesThePythonReferenceOnGeneratedPmfs) {
  auto fixture =
      torchless::testing::read_json(torchless::testing::fixture("entropy", "pmf_cases.json"));
  ASSERT_FALSE(fixture["cases"].empty());
  for (const auto& c : fixture["cases"]) {
    EXPECT_EQ(pmf_to_quantized_cdf(floats_from_hex(c["pmf_f32hex"])),
              c["cdf"].get<std::vector<uint32_t>>());
  }
}

TEST(PmfToQuantizedCdf, RejectsMoreSymbolsThanSlots) {
  std::vector<float> pmf(65537, 1.0f / 65537);
  EXPECT_THROW(pmf_to_quantized_cdf(pmf), Error);
}

QuantizedCdfTable one_row(std::vector<int32_t> row, int32_t length) {
  const auto stride = static_cast<int64_t>(row.size());
  return QuantizedCdfTable(std::move(row), stride, {length}, {0});
}

std::string error_of(std::vector<int32_t> row, int32_t length) {
  try {
    one_row(std::move(row), length);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(QuantizedCdfTable, AcceptsCompressAIShapedRows) {
  auto t = one_row({0, 1, 65536, 0, 0}, 3);
  EXPECT_EQ(t.size(), 1u);
  EXPECT_EQ(t.max_value(0), 1);
  EXPECT_EQ(std::vector<int32_t>(t.cdf(0).begin(), t.cdf(0).end()),
            (std::vector<int32_t>{0, 1, 65536}));
}

TEST(QuantizedCdfTable, RejectsRowNotStartingAtZero) {
  EXPECT_NE(error_of({1, 2, 65536}, 3).find("cdf[0] is 1, expected 0"), std::string::npos);
}

TEST(QuantizedCdfTable, RejectsRowNotEndingAt65536) {
  EXPECT_NE(error_of({0, 2, 65535}, 3).find("expected 65536"), std::string::npos);
}

TEST(QuantizedCdfTable, RejectsZeroFrequency) {
  EXPECT_NE(error_of({0, 5, 5, 65536}, 4).find("cdf[2] = 5 is not greater than cdf[1] = 5"),
            std::string::npos);
}

TEST(QuantizedCdfTable, RejectsSingleSymbolOfFrequency65536) {
  EXPECT_NE(error_of({0, 65536}, 2).find("frequency 65536"), std::string::npos);
}

TEST(QuantizedCdfTable, RejectsLengthBeyondRowStride) {
  EXPECT_NE(error_of({0, 1, 65536}, 4).find("outside [3, row stride 3]"), std::string::npos);
}

TEST(QuantizedCdfTable, RejectsNonZeroPadding) {
  EXPECT_NE(error_of({0, 1, 65536, 7}, 3).find("padding entry 3 is 7"), std::string::npos);
}

TEST(QuantizedCdfTable, RejectsInconsistentSizes) {
  EXPECT_THROW(QuantizedCdfTable({0, 1, 65536}, 3, {3, 3}, {0, 0}), Error);
  EXPECT_THROW(QuantizedCdfTable({0, 1, 65536}, 3, {3}, {0, 0}), Error);
}

TEST(QuantizedCdfTable, RejectsOffsetsWhoseSymbolsOverflowInt32) {
  EXPECT_THROW(QuantizedCdfTable({0, 1, 65536}, 3, {3}, {INT32_MAX - 2}), Error);
}

}  // namespace
}  // namespace torchless::entropy
