#include "torchless/codec/dpcc.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <bit>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "codec_fixtures.h"
#include "test_support.h"
#include "torchless/core/error.h"

namespace torchless::codec {
namespace {

using testing::codec_fixture;
using testing::codec_index;
using testing::reference_points;

// Sessions are the slow part; share one decoder per package across the tests of this file.
const DpccDecoder& decoder_for(const std::string& package_dir) {
  static std::map<std::string, std::unique_ptr<DpccDecoder>> decoders;
  auto& slot = decoders[package_dir];
  if (!slot) {
    DpccDecoderOptions options;
    options.threads = 2;
    slot = std::make_unique<DpccDecoder>(Package::load(codec_fixture(package_dir)), options);
  }
  return *slot;
}

DpccDecodeOptions strict_options() {
  DpccDecodeOptions options;
  options.strict = true;
  return options;
}

// Largest |a - b| over all coordinates; the counts must agree first.
double max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  }
  return worst;
}

TEST(DpccDecoder, MatchesPythonReferenceForEveryCloudAndRate) {
  auto index = codec_index();
  double tolerance = index["tolerance"].get<double>();
  ASSERT_GE(index["cases"].size(), 4u);
  for (const auto& cas : index["cases"]) {
    std::string name = cas["tlc"];
    auto container = Container::read(codec_fixture(name));
    auto result = decoder_for(cas["package"]).decode(container, name);
    auto expected = reference_points(cas["decoded_npy"]);
    ASSERT_EQ(result.cloud.size(), cas["num_decoded_points"].get<size_t>()) << name;
    ASSERT_EQ(result.cloud.positions.size(), expected.size()) << name;
    EXPECT_LE(max_abs_difference(result.cloud.positions, expected), tolerance) << name;
    EXPECT_TRUE(result.damaged.empty()) << name;
    ASSERT_EQ(result.block_points.size(), cas["blocks"].size());
    for (size_t i = 0; i < result.block_points.size(); ++i) {
      EXPECT_EQ(result.block_points[i], cas["blocks"][i]["decoded_points"].get<uint64_t>())
          << name << " block " << i;
    }
  }
}

TEST(DpccDecoder, OutputDoesNotDependOnThreadCount) {
  auto container = Container::read(codec_fixture("spheres-high.tlc"));
  auto package = Package::load(codec_fixture("dpcc-high"));
  DpccDecoder one(package, {.threads = 1});
  DpccDecoder three(package, {.threads = 3});
  auto a = one.decode(container, "spheres-high.tlc");
  auto b = three.decode(container, "spheres-high.tlc");
  EXPECT_EQ(a.cloud.positions, b.cloud.positions);
}

TEST(DpccDecoder, DamagedBlockIsReportedAndTheOthersDecoded) {
  auto index = codec_index();
  double tolerance = index["tolerance"].get<double>();
  ASSERT_FALSE(index["damaged"].empty());
  for (const auto& d : index["damaged"]) {
    std::string name = d["tlc"];
    auto container = Container::read(codec_fixture(name));
    size_t last_done = 0;
    DpccDecodeOptions options;
    options.progress = [&](size_t done, size_t total) {
      EXPECT_GT(done, last_done);
      EXPECT_EQ(total, container.blocks.size());
      last_done = done;
    };
    auto result = decoder_for(d["package"]).decode(container, name, options);
    EXPECT_EQ(last_done, container.blocks.size());
    ASSERT_EQ(result.damaged.size(), 1u) << name;
    EXPECT_EQ(result.damaged[0].index, 1u);
    EXPECT_EQ(result.damaged[0].cube_index, container.blocks[1].cube_index);
    EXPECT_NE(result.damaged[0].reason.find("block_crc32"), std::string::npos);
    // The reference with block 1's points cut out.
    auto expected = reference_points(d["intact_reference"]);
    size_t first = 3 * d["damaged_block_first_point"].get<size_t>();
    size_t count = 3 * d["damaged_block_decoded_points"].get<size_t>();
    expected.erase(expected.begin() + static_cast<ptrdiff_t>(first),
                   expected.begin() + static_cast<ptrdiff_t>(first + count));
    ASSERT_EQ(result.cloud.positions.size(), expected.size()) << name;
    EXPECT_LE(max_abs_difference(result.cloud.positions, expected), tolerance) << name;
  }
}

TEST(DpccDecoder, StrictDecodeNamesTheDamagedBlock) {
  auto container = Container::read(codec_fixture("hippo1-low.damaged.tlc"));
  try {
    decoder_for("dpcc-low").decode(container, "hippo1-low.damaged.tlc", strict_options());
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hippo1-low.damaged.tlc: block 1 (cube " +
                                         std::to_string(container.blocks[1].cube_index) + ")"),
              std::string::npos)
        << e.what();
  }
}

// A string that passes its CRC (the C++ writer recomputes it) but is not a valid rANS stream.
Container with_corrupt_feats(size_t block) {
  auto container = Container::read(codec_fixture("torus-low.tlc"));
  std::string feats(container.blocks[block].feats.view());
  feats.resize(8);  // the state words only: 8·n3 symbols cannot all come from it
  container.blocks[block].feats = Buffer::copy_of(feats);
  return Container::parse(Buffer::copy_of(container.to_bytes()), "corrupt.tlc");
}

TEST(DpccDecoder, UndecodableStringIsReportedAsDamagedBlock) {
  auto container = with_corrupt_feats(2);
  ASSERT_TRUE(container.damaged_blocks().empty());
  auto result = decoder_for("dpcc-low").decode(container, "corrupt.tlc");
  ASSERT_EQ(result.damaged.size(), 1u);
  EXPECT_EQ(result.damaged[0].index, 2u);
  EXPECT_NE(result.damaged[0].reason.find("feats string"), std::string::npos)
      << result.damaged[0].reason;
  EXPECT_EQ(result.block_points[2], 0u);
  auto index = codec_index();
  for (const auto& cas : index["cases"]) {
    if (cas["tlc"] != "torus-low.tlc") continue;
    for (size_t i = 0; i < result.block_points.size(); ++i) {
      if (i == 2) continue;
      EXPECT_EQ(result.block_points[i], cas["blocks"][i]["decoded_points"].get<uint64_t>());
    }
  }
}

TEST(DpccDecoder, StrictDecodeRejectsUndecodableString) {
  auto container = with_corrupt_feats(0);
  try {
    decoder_for("dpcc-low").decode(container, "corrupt.tlc", strict_options());
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt.tlc: block 0 (cube"), std::string::npos)
        << e.what();
  }
}

TEST(DpccDecoder, RefusesContainerOfAnotherPackage) {
  auto container = Container::read(codec_fixture("torus-high.tlc"));
  EXPECT_THROW(decoder_for("dpcc-low").decode(container, "torus-high.tlc"), Error);
}

TEST(DpccDecoder, UpsampleCountsRoundHalfToEvenAndClamp) {
  const float nan = std::nanf("");
  std::vector<float> u = {1.0f, 1.49f, 1.5f, 2.5f, 3.5f, 4.5f, 7.5f, 8.0f, 9.7f, -2.0f, nan};
  // torch.round: halves go to the even neighbour (1.5 -> 2, 2.5 -> 2, 4.5 -> 4, 7.5 -> 8).
  EXPECT_EQ(upsample_counts(u, 8), (std::vector<int64_t>{1, 1, 2, 2, 4, 4, 8, 8, 8, 0, 0}));
}

TEST(DpccDecoder, UnnormalizeIsBitExactWithPythonReference) {
  Container c;
  c.shift = {612345.678, -4321.125, 0.1};
  c.min_coord = -17.3;
  c.max_coord = 45.9;
  c.map_size = 100;
  c.cube_size = 13;  // D = 8
  std::vector<float> patch;
  for (int i = 0; i < 60; ++i) patch.push_back(std::sin(static_cast<float>(i) * 1.7f) * 1.05f);
  std::vector<float> out;
  unnormalize_block(c, 301, patch, out);  // cube (4, 5, 5)

  auto dir = torchless::testing::temp_dir();
  {
    std::ofstream f(dir / "patch.f32", std::ios::binary);
    f.write(reinterpret_cast<const char*>(patch.data()),
            static_cast<std::streamsize>(patch.size() * 4));
  }
  std::string script =
      "import sys, numpy as np\n"
      "from types import SimpleNamespace\n"
      "from torchless_export.codec import unnormalize\n"
      "p = np.fromfile(sys.argv[1], dtype='<f4').reshape(-1, 3)\n"
      "c = SimpleNamespace(shift=[612345.678, -4321.125, 0.1], min_coord=-17.3, max_coord=45.9,\n"
      "                    map_size=100, cube_size=13)\n"
      "print(unnormalize(p, 301, 8, c).astype('<f4').tobytes().hex())\n";
  std::ofstream(dir / "u.py") << script;
  std::string hex;
  ASSERT_EQ(
      torchless::testing::run_command(torchless::testing::python() + " " + (dir / "u.py").string() +
                                          " " + (dir / "patch.f32").string(),
                                      &hex),
      0);
  std::string mine;
  for (float v : out) {
    uint32_t bits = std::bit_cast<uint32_t>(v);
    for (int b = 0; b < 4; ++b) mine += fmt::format("{:02x}", (bits >> (8 * b)) & 0xFF);
  }
  EXPECT_EQ(mine + "\n", hex);
}

}  // namespace
}  // namespace torchless::codec
