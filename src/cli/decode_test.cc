// `torchless decode`, run as the built binary (TORCHLESS_CLI) on the files the Python encoder
// wrote (tests/fixtures/gen_codec.py); its PLY is read back and compared with the Python
// reference decode.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <string>

#include "test_support.h"
#include "torchless/formats/npy.h"
#include "torchless/formats/point_cloud.h"

namespace torchless::cli {
namespace {

using torchless::testing::fixture;
using torchless::testing::fixture_dir;

std::string cli() {
  const char* path = std::getenv("TORCHLESS_CLI");
  return path ? path : "torchless";
}

struct Run {
  int code;
  std::string out;  // stdout and stderr
};

Run decode(const std::string& args) {
  Run r;
  r.code = torchless::testing::run_command(
      "cd " + fixture_dir("codec").string() + " && " + cli() + " decode " + args + " 2>&1", &r.out);
  return r;
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
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("damaged blocks: 0"), std::string::npos) << r.out;
  auto cloud = formats::read_point_cloud(out);
  auto expected =
      formats::load_npy(fixture("codec", "spheres-low.decoded.npy")).tensor.to_vector<float>();
  ASSERT_EQ(cloud.positions.size(), expected.size());
  EXPECT_LE(max_abs_difference(cloud.positions, expected), 1e-4);
}

TEST(DecodeCommand, AsciiOutputHoldsTheSamePoints) {
  auto out = torchless::testing::temp_dir() / "torus.ply";
  auto r = decode("torus-high.tlc --package dpcc-high --ascii -o " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
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
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("warning: hippo1-low.damaged.tlc: block 1 (cube"), std::string::npos)
      << r.out;
  auto json = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  ASSERT_EQ(json["damaged_blocks"].size(), 1u);
  EXPECT_EQ(json["damaged_blocks"][0]["index"], 1);
  EXPECT_EQ(json["points_in"], 6104);
  EXPECT_EQ(formats::read_point_cloud(out).size(), json["points_out"].get<size_t>());
}

TEST(DecodeCommand, StrictFailsNamingTheBlock) {
  auto out = torchless::testing::temp_dir() / "strict.ply";
  auto r = decode("hippo1-low.damaged.tlc --package dpcc-low --strict -o " + out.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("block 1 (cube"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(DecodeCommand, WrongPackageFailsNamingBothIds) {
  auto out = torchless::testing::temp_dir() / "wrong.ply";
  auto r = decode("torus-low.tlc --package dpcc-high -o " + out.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("written with package \"dpcc-low-"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("is \"dpcc-high-"), std::string::npos) << r.out;
}

TEST(DecodeCommand, MissingPackageFileFailsNamingIt) {
  auto dir = torchless::testing::temp_dir();
  std::filesystem::copy(fixture("codec", "dpcc-low"), dir / "pkg",
                        std::filesystem::copy_options::recursive);
  std::filesystem::remove(dir / "pkg" / "feats_eblock.bin");
  auto r = decode("torus-low.tlc --package " + (dir / "pkg").string() + " -o " +
                  (dir / "x.ply").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("\"feats_eblock.bin\" listed in manifest.json is missing"),
            std::string::npos)
      << r.out;
}

TEST(DecodeCommand, CutFileFailsWithOneLine) {
  auto dir = torchless::testing::temp_dir();
  auto bytes = torchless::testing::read_file(fixture("codec", "torus-low.tlc"));
  bytes.resize(bytes.size() / 2);
  torchless::testing::write_file(dir / "cut.tlc", bytes);
  auto r =
      decode((dir / "cut.tlc").string() + " --package dpcc-low -o " + (dir / "x.ply").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("truncated"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
}

}  // namespace
}  // namespace torchless::cli
