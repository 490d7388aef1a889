// `torchless inspect`, run as the built binary (TORCHLESS_CLI) on files written by torch,
// numpy and the safetensors fixture writer.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"

namespace torchless::cli {
namespace {

using torchless::testing::CliRun;
using torchless::testing::fixture;
using torchless::testing::read_json;
using torchless::testing::run_command;
using torchless::testing::run_torchless;
using torchless::testing::temp_dir;

nlohmann::json inspect_json(const std::filesystem::path& file) {
  CliRun run = run_torchless("inspect --json '" + file.string() + "'");
  EXPECT_EQ(run.status, 0) << run.output;
  return nlohmann::json::parse(run.output);
}

TEST(Inspect, ListsEveryTensorOfATrainingCheckpointAsTorchSeesIt) {
  auto file = fixture("containers", "checkpoint.pth");
  auto expected = read_json(fixture("containers", "checkpoint.pth.json"));
  auto seen = inspect_json(file);
  EXPECT_EQ(seen["schema"], 1);
  EXPECT_EQ(seen["format"], "pytorch-zip");
  EXPECT_EQ(seen["version"], "3");
  EXPECT_EQ(seen["details"]["archive_prefix"], "checkpoint");
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& t : seen["tensors"]) {
    std::string name = t["name"];
    std::replace(name.begin(), name.end(), '/', '.');
    by_name[name] = t;
  }
  ASSERT_EQ(by_name.size(), expected["all_tensors"].size());
  for (const auto& [name, facts] : expected["all_tensors"].items()) {
    ASSERT_TRUE(by_name.contains(name)) << name;
    EXPECT_EQ(by_name[name]["dtype"], facts["dtype"]) << name;
    EXPECT_EQ(by_name[name]["shape"], facts["shape"]) << name;
  }
  EXPECT_EQ(seen["totals"]["tensors"], expected["all_tensors"].size());
  EXPECT_EQ(seen["totals"]["parameters"], expected["parameters"]);
  std::vector<std::string> globals = seen["globals"];
  EXPECT_NE(std::find(globals.begin(), globals.end(), "collections.OrderedDict"), globals.end());
}

TEST(Inspect, ShowsTheCheckpointTreeWithTrainingFields) {
  CliRun run = run_torchless("inspect '" + fixture("containers", "checkpoint.pth").string() + "'");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("  epoch: 3\n"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("    0.weight: float32[8, 3, 3, 3]  864 B\n"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("total: 27 tensors, 1,400 parameters"), std::string::npos)
      << run.output;
}

TEST(Inspect, DescribesSafetensorsHeaderAndMetadata) {
  auto expected = read_json(fixture("containers", "reference.safetensors.json"));
  auto seen = inspect_json(fixture("containers", "reference.safetensors"));
  EXPECT_EQ(seen["format"], "safetensors");
  EXPECT_EQ(seen["details"]["metadata"], expected["metadata"]);
  ASSERT_EQ(seen["tensors"].size(), expected["tensors"].size());
  for (const auto& t : seen["tensors"]) {
    EXPECT_EQ(t["shape"], expected["tensors"][t["name"].get<std::string>()]["shape"]) << t;
  }
}

TEST(Inspect, DetectsTheFormatByContentNotByExtension) {
  auto dir = temp_dir();
  std::filesystem::copy_file(fixture("containers", "reference.safetensors"), dir / "weights.pt");
  std::filesystem::copy_file(fixture("containers", "f4.npy"), dir / "array.bin");
  std::filesystem::copy_file(fixture("containers", "arrays_compressed.npz"), dir / "x.pth");
  EXPECT_EQ(inspect_json(dir / "weights.pt")["format"], "safetensors");
  EXPECT_EQ(inspect_json(dir / "array.bin")["format"], "npy");
  EXPECT_EQ(inspect_json(dir / "x.pth")["format"], "npz");
}

TEST(Inspect, ReadsNumpyArraysAndArchives) {
  auto npy = inspect_json(fixture("containers", "f8_fortran.npy"));
  EXPECT_EQ(npy["version"], "1.0");
  EXPECT_EQ(npy["details"]["fortran_order"], true);
  EXPECT_EQ(npy["tensors"][0]["shape"], nlohmann::json::parse("[4, 3, 2]"));
  auto npz = inspect_json(fixture("containers", "arrays_compressed.npz"));
  EXPECT_EQ(npz["details"]["deflated_records"], 3);
  EXPECT_EQ(npz["totals"]["tensors"], 3);
}

TEST(Inspect, SaysWhatAGitLfsPointerIs) {
  auto file = temp_dir() / "model.pt";
  std::ofstream(file) << "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n";
  CliRun run = run_torchless("inspect '" + file.string() + "'");
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("model.pt: this is a Git LFS pointer"), std::string::npos)
      << run.output;
}

TEST(Inspect, RefusesObjectArraysWithOneLineError) {
  CliRun run = run_torchless("inspect '" + fixture("containers", "object.npy").string() + "'");
  EXPECT_EQ(run.status, 1);
  EXPECT_EQ(std::count(run.output.begin(), run.output.end(), '\n'), 1) << run.output;
  EXPECT_NE(run.output.find("object arrays ('|O') hold pickled Python objects"), std::string::npos)
      << run.output;
}

}  // namespace
}  // namespace torchless::cli
