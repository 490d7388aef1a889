#include "torchless/entropy/entropy_models.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "entropy/test_vectors.h"
#include "torchless/core/error.h"

namespace torchless::entropy {
namespace {

using testing::compressai_vectors;
using testing::floats_from_hex;
using testing::from_hex;
using testing::ints;
using testing::to_hex;

const nlohmann::json& eb_vectors() {
  static const nlohmann::json v = compressai_vectors("eb_vectors.json");
  return v;
}
const nlohmann::json& gc_vectors() {
  static const nlohmann::json v = compressai_vectors("gc_vectors.json");
  return v;
}

Tensor f32(const std::string& hex, const nlohmann::json& shape) {
  return Tensor::from_vector(floats_from_hex(hex), shape.get<Shape>());
}

std::vector<std::string> strings_of(const nlohmann::json& c) {
  std::vector<std::string> out;
  for (const auto& h : c["strings_hex"]) out.push_back(from_hex(h));
  return out;
}

std::vector<uint32_t> bits_of(const std::vector<float>& v) {
  std::vector<uint32_t> out;
  for (float f : v) out.push_back(std::bit_cast<uint32_t>(f));
  return out;
}

TEST(EntropyBottleneck, QuantizesEveryCompressAICaseToItsSymbols) {
  EntropyBottleneck eb(testing::eb_tables_from_vectors(eb_vectors()));
  for (const auto& c : eb_vectors()["cases"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto symbols = eb.symbols(f32(c["x_f32hex"], c["shape"]));
    EXPECT_EQ(symbols.to_vector<int32_t>(), ints(c["symbols"]));
  }
}

TEST(EntropyBottleneck, CompressesEveryCompressAICaseByteForByte) {
  EntropyBottleneck eb(testing::eb_tables_from_vectors(eb_vectors()));
  for (const auto& c : eb_vectors()["cases"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto strings = eb.compress(f32(c["x_f32hex"], c["shape"]));
    ASSERT_EQ(strings.size(), c["strings_hex"].size());
    for (size_t b = 0; b < strings.size(); ++b) {
      EXPECT_EQ(to_hex(strings[b]), c["strings_hex"][b].get<std::string>()) << "element " << b;
    }
  }
}

TEST(EntropyBottleneck, DecompressesEveryCompressAICaseToItsXHat) {
  EntropyBottleneck eb(testing::eb_tables_from_vectors(eb_vectors()));
  for (const auto& c : eb_vectors()["cases"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto size = c["decompress_size_arg"].get<Shape>();
    auto x_hat = eb.decompress(strings_of(c), size, CodingOptions{.check_end = true});
    EXPECT_EQ(x_hat.shape(), c["shape"].get<Shape>());
    EXPECT_EQ(bits_of(x_hat.to_vector<float>()), bits_of(floats_from_hex(c["x_hat_f32hex"])));
    EXPECT_EQ(eb.decompress_symbols(strings_of(c), size).to_vector<int32_t>(), ints(c["symbols"]));
  }
}

TEST(EntropyBottleneck, SingleThreadedAndParallelGiveTheSameStrings) {
  EntropyBottleneck eb(testing::eb_tables_from_vectors(eb_vectors()));
  const auto& c = eb_vectors()["cases"][4];  // (3, 8): three strings
  auto x = f32(c["x_f32hex"], c["shape"]);
  EXPECT_EQ(eb.compress(x, CodingOptions{.threads = 1}),
            eb.compress(x, CodingOptions{.threads = 3}));
}

TEST(EntropyBottleneck, RejectsNonFiniteAndHugeInputs) {
  EntropyBottleneck eb(testing::eb_tables_from_vectors(eb_vectors()));
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    3e9f, 2e8f /* an int32, but beyond the escape coding's 2^27 reach */}) {
    std::vector<float> values(8, 0.0f);
    values[5] = bad;
    EXPECT_THROW(eb.compress(Tensor::from_vector(values, {1, 8})), Error) << bad;
  }
}

TEST(EntropyBottleneck, RejectsInputWithOtherChannelCount) {
  EntropyBottleneck eb(testing::eb_tables_from_vectors(eb_vectors()));
  EXPECT_THROW(eb.compress(Tensor::from_vector(std::vector<float>(7, 0.0f), {1, 7})), Error);
}

TEST(EntropyBottleneck, RefusesGaussianConditionalTables) {
  EXPECT_THROW(EntropyBottleneck(testing::gc_tables_from_vectors(gc_vectors())), Error);
}

TEST(GaussianConditional, BuildIndexesMatchesCompressAI) {
  GaussianConditional gc(testing::gc_tables_from_vectors(gc_vectors()));
  for (const auto& c : gc_vectors()["cases"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto indexes = gc.build_indexes(f32(c["scales_f32hex"], c["shape"]));
    EXPECT_EQ(indexes.to_vector<int32_t>(), ints(c["indexes"]));
  }
}

TEST(GaussianConditional, BuildIndexesMapsNaNToTheLastTable) {
  GaussianConditional gc(testing::gc_tables_from_vectors(gc_vectors()));
  auto scales = Tensor::from_vector(
      std::vector<float>{std::numeric_limits<float>::quiet_NaN(), 0.0f, -1.0f, 1e30f}, {1, 4});
  EXPECT_EQ(gc.build_indexes(scales).to_vector<int32_t>(), (std::vector<int32_t>{63, 0, 0, 63}));
}

TEST(GaussianConditional, CompressesEveryCompressAICaseByteForByte) {
  GaussianConditional gc(testing::gc_tables_from_vectors(gc_vectors()));
  for (const auto& c : gc_vectors()["cases"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto x = f32(c["x_f32hex"], c["shape"]);
    auto indexes = Tensor::from_vector(ints(c["indexes"]), c["shape"].get<Shape>());
    std::optional<Tensor> means;
    if (!c["means_f32hex"].is_null()) means = f32(c["means_f32hex"], c["shape"]);
    EXPECT_EQ(gc.symbols(x, means ? &*means : nullptr).to_vector<int32_t>(), ints(c["symbols"]));
    auto strings = gc.compress(x, indexes, means ? &*means : nullptr);
    ASSERT_EQ(strings.size(), c["strings_hex"].size());
    for (size_t b = 0; b < strings.size(); ++b) {
      EXPECT_EQ(to_hex(strings[b]), c["strings_hex"][b].get<std::string>()) << "element " << b;
    }
  }
}

TEST(GaussianConditional, DecompressesEveryCompressAICaseToItsXHat) {
  GaussianConditional gc(testing::gc_tables_from_vectors(gc_vectors()));
  for (const auto& c : gc_vectors()["cases"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto indexes = Tensor::from_vector(ints(c["indexes"]), c["shape"].get<Shape>());
    std::optional<Tensor> means;
    if (!c["means_f32hex"].is_null()) means = f32(c["means_f32hex"], c["shape"]);
    auto x_hat = gc.decompress(strings_of(c), indexes, means ? &*means : nullptr,
                               CodingOptions{.check_end = true});
    EXPECT_EQ(bits_of(x_hat.to_vector<float>()), bits_of(floats_from_hex(c["x_hat_f32hex"])));
  }
}

TEST(GaussianConditional, BroadcastsMeansOverSizeOneDims) {
  GaussianConditional gc(testing::gc_tables_from_vectors(gc_vectors()));
  auto x = Tensor::from_vector(std::vector<float>{0.4f, 1.6f, 2.5f, 3.5f}, {1, 2, 2});
  auto means = Tensor::from_vector(std::vector<float>{0.5f, 1.0f}, {1, 2, 1});
  // round(x - mean), half to even: round(-0.1)=0, round(1.1)=1, round(1.5)=2, round(2.5)=2.
  EXPECT_EQ(gc.symbols(x, &means).to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 2, 2}));
}

TEST(GaussianConditional, RejectsIndexesOfAnotherShape) {
  GaussianConditional gc(testing::gc_tables_from_vectors(gc_vectors()));
  auto x = Tensor::from_vector(std::vector<float>(4, 0.0f), {1, 4});
  auto indexes = Tensor::from_vector(std::vector<int32_t>(4, 0), {2, 2});
  EXPECT_THROW(gc.compress(x, indexes), Error);
}

TEST(GaussianConditional, RejectsStringCountOtherThanBatch) {
  GaussianConditional gc(testing::gc_tables_from_vectors(gc_vectors()));
  auto indexes = Tensor::from_vector(std::vector<int32_t>(4, 0), {2, 2});
  EXPECT_THROW(gc.decompress({std::string(8, '\0')}, indexes), Error);
}

// Cases from tests/fixtures/gen_entropy.py: quantisation by torch, bytes by its Python reference
// coder, tables from the shared eb.pt / gc.pt.
const nlohmann::json& module_cases() {
  static const nlohmann::json v =
      torchless::testing::read_json(torchless::testing::fixture("entropy", "module_cases.json"));
  return v;
}

TEST(EntropyBottleneck, MatchesThePythonReferenceOnGeneratedTensors) {
  EntropyBottleneck eb(testing::eb_tables_from_vectors(eb_vectors()));
  for (const auto& c : module_cases()["eb"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto x = f32(c["x_f32hex"], c["shape"]);
    EXPECT_EQ(eb.symbols(x).to_vector<int32_t>(), ints(c["symbols"]));
    auto strings = eb.compress(x);
    ASSERT_EQ(strings.size(), c["strings_hex"].size());
    for (size_t b = 0; b < strings.size(); ++b) {
      EXPECT_EQ(to_hex(strings[b]), c["strings_hex"][b].get<std::string>());
    }
    auto shape = c["shape"].get<Shape>();
    auto x_hat = eb.decompress(strings_of(c), Shape(shape.begin() + 2, shape.end()));
    EXPECT_EQ(bits_of(x_hat.to_vector<float>()), bits_of(floats_from_hex(c["x_hat_f32hex"])));
  }
}

TEST(GaussianConditional, MatchesThePythonReferenceOnGeneratedTensors) {
  GaussianConditional gc(testing::gc_tables_from_vectors(gc_vectors()));
  for (const auto& c : module_cases()["gc"]) {
    SCOPED_TRACE(c["note"].get<std::string>());
    auto x = f32(c["x_f32hex"], c["shape"]);
    auto indexes = gc.build_indexes(f32(c["scales_f32hex"], c["shape"]));
    EXPECT_EQ(indexes.to_vector<int32_t>(), ints(c["indexes"]));
    std::optional<Tensor> means;
    if (!c["means_f32hex"].is_null()) means = f32(c["means_f32hex"], c["shape"]);
    auto strings = gc.compress(x, indexes, means ? &*means : nullptr);
    ASSERT_EQ(strings.size(), c["strings_hex"].size());
    for (size_t b = 0; b < strings.size(); ++b) {
      EXPECT_EQ(to_hex(strings[b]), c["strings_hex"][b].get<std::string>());
    }
    auto x_hat = gc.decompress(strings_of(c), indexes, means ? &*means : nullptr);
    EXPECT_EQ(bits_of(x_hat.to_vector<float>()), bits_of(floats_from_hex(c["x_hat_f32hex"])));
  }
}

TEST(GaussianConditional, LargeBatchesDecodeLikeSingleElementsOnAnyThreadCount) {
  // 11 batch elements (interleaved in groups of 8, 2 and 1 per thread) against each element
  // compressed and decompressed alone; then a damaged element is named by its batch index.
  GaussianConditional gc(testing::gc_tables_from_vectors(gc_vectors()));
  const int64_t batch = 11, channels = 3, spatial = 40;
  std::vector<float> x, scales;
  for (int64_t i = 0; i < batch * channels * spatial; ++i) {
    scales.push_back(0.2f + static_cast<float>(i % 97) * 0.7f);
    x.push_back(static_cast<float>(std::sin(static_cast<double>(i)) * (i % 97) * 0.9));
  }
  const Shape shape{batch, channels, spatial};
  auto xt = Tensor::from_vector(x, shape);
  auto indexes = gc.build_indexes(Tensor::from_vector(scales, shape));
  auto strings = gc.compress(xt, indexes);
  ASSERT_EQ(strings.size(), static_cast<size_t>(batch));
  const auto all_indexes = indexes.to_vector<int32_t>();
  const auto per = static_cast<size_t>(channels * spatial);
  std::vector<int32_t> alone;
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int32_t> idx(all_indexes.begin() + b * per, all_indexes.begin() + (b + 1) * per);
    auto one =
        gc.decompress_symbols({strings[b]}, Tensor::from_vector(idx, Shape{1, channels, spatial}));
    auto v = one.to_vector<int32_t>();
    alone.insert(alone.end(), v.begin(), v.end());
  }
  for (size_t threads : {1, 2, 3}) {
    auto together = gc.decompress_symbols(strings, indexes, CodingOptions{.threads = threads});
    EXPECT_EQ(together.to_vector<int32_t>(), alone) << threads << " threads";
  }
  strings[9].resize(strings[9].size() / 2);
  try {
    gc.decompress_symbols(strings, indexes, CodingOptions{.threads = 2});
    FAIL() << "decoded a truncated string";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("string 9"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace torchless::entropy
