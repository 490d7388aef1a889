// `torchless decode`, run as the built binary (TORCHLESS_CLI) on the files the Python encoder
// wrote (tests/fixtures/gen_codec.py); its PLY is read back and compared with the Python
// reference decode.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <set>
#include <string>

#include "test_support.h"
#include "torchless/formats/npy.h"
#include "torchless/formats/point_cloud.h"

namespace torchless::cli {
namespace {

using torchless::testing::CliRun;
using torchless::testing::fixture;
using torchless::testing::fixture_dir;

// `torchless decode ARGS` run in the codec fixture folder (files named relative to it).
CliRun decode(const std::string& args) {
  return torchless::testing::run_torchless("decode " + args, fixture_dir("codec"));
}

double max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
  return worst;
}

TEST(DecodeCommand, WritesThePythonReferencePoints) {
  auto out = torchless::testing::temp_dir() / "spheres.ply";
  auto r = decode("spheres-low.tlc --package dpcc-low --threads 2 -o " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("damaged blocks: 0"), std::string::npos) << r.output;
  auto cloud = formats::read_point_cloud(out);
  auto expected =
      formats::load_npy(fixture("codec", "spheres-low.decoded.npy")).tensor.to_vector<float>();
  ASSERT_EQ(cloud.positions.size(), expected.size());
  EXPECT_LE(max_abs_difference(cloud.positions, expected), 1e-4);
}

TEST(DecodeCommand, AsciiOutputHoldsTheSamePoints) {
  auto out = torchless::testing::temp_dir() / "torus.ply";
  auto r = decode("torus-high.tlc --package dpcc-high --ascii -o " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  formats::PointCloudReadInfo info;
  auto cloud = formats::read_point_cloud(out, {}, &info);
  EXPECT_EQ(info.encoding, "ascii");
  auto expected =
      formats::load_npy(fixture("codec", "torus-high.decoded.npy")).tensor.to_vector<float>();
  ASSERT_EQ(cloud.positions.size(), expected.size());
  EXPECT_LE(max_abs_difference(cloud.positions, expected), 1e-4);
}

TEST(DecodeCommand, JsonReportsDamagedBlockAndStillWrites) {
  auto out = torchless::testing::temp_dir() / "damaged.ply";
  auto r = decode("hippo1-low.damaged.tlc --package dpcc-low --json -o " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("warning: hippo1-low.damaged.tlc: block 1 (cube"), std::string::npos)
      << r.output;
  auto json = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  ASSERT_EQ(json["damaged_blocks"].size(), 1u);
  EXPECT_EQ(json["damaged_blocks"][0]["index"], 1);
  EXPECT_EQ(json["points_in"], 6104);
  EXPECT_EQ(formats::read_point_cloud(out).size(), json["points_out"].get<size_t>());
}

TEST(DecodeCommand, ProfileWritesOneTracePerGraphAndTimesEveryOperator) {
  const auto dir = torchless::testing::temp_dir();
  auto r = decode("spheres-low.tlc --package dpcc-low --json --profile " + (dir / "prof").string() +
                  " -o " + (dir / "out.ply").string());
  ASSERT_EQ(r.status, 0) << r.output;
  auto json = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  const auto& profile = json["profile"];
  ASSERT_EQ(profile["traces"].size(), 7u);  // latent_xyzs_synthesis and 3 x (upsample, refine)
  std::set<std::string> stems;
  for (const auto& t : profile["traces"]) {
    const std::filesystem::path trace = t.get<std::string>();
    EXPECT_TRUE(std::filesystem::exists(trace)) << trace;
    EXPECT_EQ(trace.parent_path(), dir / "prof");
    const auto name = trace.filename().string();
    stems.insert(name.substr(0, name.find("_20")));  // "<graph>_<date>_<time>.json"
  }
  EXPECT_EQ(stems, (std::set<std::string>{"latent_xyzs_synthesis", "stage0_upsample",
                                          "stage0_refine", "stage1_upsample", "stage1_refine",
                                          "stage2_upsample", "stage2_refine"}));
  std::set<std::string> ops;
  double previous = 1e300;
  for (const auto& op : profile["ops"]) {
    ops.insert(op["op"].get<std::string>());
    EXPECT_GT(op["executions"].get<uint64_t>(), 0u);
    EXPECT_LE(op["ms"].get<double>(), previous);  // most time first
    previous = op["ms"].get<double>();
  }
  // Every graph is convolutions; the upsample stages' lowered softmax shows as its reductions.
  EXPECT_TRUE(ops.count("Conv") || ops.count("FusedConv")) << profile.dump();
  EXPECT_TRUE(ops.count("ReduceMax")) << profile.dump();
  EXPECT_FALSE(ops.count("Softmax")) << profile.dump();

  auto text = decode("spheres-low.tlc --package dpcc-low --profile " + (dir / "prof2").string() +
                     " -o " + (dir / "out2.ply").string());
  ASSERT_EQ(text.status, 0) << text.output;
  EXPECT_NE(text.output.find("ONNX Runtime node time by operator (7 traces in"), std::string::npos)
      << text.output;
}

TEST(DecodeCommand, StrictFailsNamingTheBlock) {
  auto out = torchless::testing::temp_dir() / "strict.ply";
  auto r = decode("hippo1-low.damaged.tlc --package dpcc-low --strict -o " + out.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("block 1 (cube"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(DecodeCommand, WrongPackageFailsNamingBothIds) {
  auto out = torchless::testing::temp_dir() / "wrong.ply";
  auto r = decode("torus-low.tlc --package dpcc-high -o " + out.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("written with package \"dpcc-low-"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("is \"dpcc-high-"), std::string::npos) << r.output;
}

TEST(DecodeCommand, MissingPackageFileFailsNamingIt) {
  auto dir = torchless::testing::temp_dir();
  std::filesystem::copy(fixture("codec", "dpcc-low"), dir / "pkg",
                        std::filesystem::copy_options::recursive);
  std::filesystem::remove(dir / "pkg" / "feats_eblock.bin");
  auto r = decode("torus-low.tlc --package " + (dir / "pkg").string() + " -o " +
                  (dir / "x.ply").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("\"feats_eblock.bin\" listed in manifest.json is missing"),
            std::string::npos)
      << r.output;
}

TEST(DecodeCommand, CutFileFailsWithOneLine) {
  auto dir = torchless::testing::temp_dir();
  auto bytes = torchless::testing::read_file(fixture("codec", "torus-low.tlc"));
  bytes.resize(bytes.size() / 2);
  torchless::testing::write_file(dir / "cut.tlc", bytes);
  auto r =
      decode((dir / "cut.tlc").string() + " --package dpcc-low -o " + (dir / "x.ply").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("truncated"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

}  // namespace
}  // namespace torchless::cli
