#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"
#include "torchless/formats/point_cloud.h"

namespace torchless::cli {
namespace {

// Reference: (0,0,0) and (10,0,0) with normals +y; decoded: (1,0,0) and (10,0,2).
// A->B: 1, 4 -> D1 2.5; B->A: 1, 4 -> 2.5. Along +y every error is 0: D2 = 0.
void write_pair(const std::filesystem::path& dir) {
  formats::PointCloud a, b;
  a.positions = {0, 0, 0, 10, 0, 0};
  a.normals = {0, 1, 0, 0, 1, 0};
  b.positions = {1, 0, 0, 10, 0, 2};
  formats::write_ply(dir / "ref.ply", a, formats::PlyEncoding::kAscii);
  std::ofstream(dir / "dec.xyz") << "1 0 0\n10 0 2\n";
}

TEST(EvalCommand, PrintsJsonWithD1D2ChamferAndBpp) {
  auto dir = testing::temp_dir();
  write_pair(dir);
  std::string out;
  ASSERT_EQ(testing::run_command(testing::cli() + " eval " + (dir / "ref.ply").string() + " " +
                                     (dir / "dec.xyz").string() +
                                     " --peak 10 --compressed-bytes 3 --json",
                                 &out),
            0)
      << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["points_in"], 2);
  EXPECT_EQ(j["points_out"], 2);
  EXPECT_DOUBLE_EQ(j["d1_mse"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(j["d1_psnr"].get<double>(), 10 * std::log10(300.0 / 2.5));
  EXPECT_EQ(j["d2_psnr"], "inf");
  EXPECT_EQ(j["normals"], "reference");
  EXPECT_DOUBLE_EQ(j["chamfer"]["squared_sum"].get<double>(), 5.0);
  EXPECT_DOUBLE_EQ(j["bpp"].get<double>(), 12.0);
  EXPECT_EQ(j["peak_rule"], "given");
}

TEST(EvalCommand, TakesBppFromCompressedFileSize) {
  auto dir = testing::temp_dir();
  write_pair(dir);
  std::ofstream(dir / "c.bin") << "12345";
  std::string out;
  ASSERT_EQ(testing::run_command(testing::cli() + " eval " + (dir / "ref.ply").string() + " " +
                                     (dir / "dec.xyz").string() + " --compressed " +
                                     (dir / "c.bin").string() + " --json",
                                 &out),
            0);
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(out)["bpp"].get<double>(), 20.0);
}

TEST(EvalCommand, PrintsReadableSummary) {
  auto dir = testing::temp_dir();
  write_pair(dir);
  std::string out;
  ASSERT_EQ(testing::run_command(testing::cli() + " eval " + (dir / "ref.ply").string() + " " +
                                     (dir / "dec.xyz").string() + " --peak 10",
                                 &out),
            0);
  EXPECT_NE(out.find("D1 (p2point)  mse 2.5  PSNR 20.7918 dB"), std::string::npos) << out;
  EXPECT_NE(out.find("D2 (p2plane)"), std::string::npos) << out;
}

TEST(EvalCommand, ReportsUnreadableInputAsOneLineError) {
  auto dir = testing::temp_dir();
  std::ofstream(dir / "bad.ply") << "ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\n"
                                    "property float y\nproperty float z\nend_header\n1 2 3\n";
  write_pair(dir);
  std::string out;
  int rc = testing::run_command(testing::cli() + " eval " + (dir / "bad.ply").string() + " " +
                                    (dir / "dec.xyz").string() + " 2>&1",
                                &out);
  EXPECT_EQ(rc, 1);
  EXPECT_EQ(out.find("torchless eval: "), 0u) << out;
  EXPECT_NE(out.find("element 'vertex' row 1 of 5"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

}  // namespace
}  // namespace torchless::cli
