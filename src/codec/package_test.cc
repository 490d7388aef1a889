#include "torchless/codec/package.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>

#include "codec_fixtures.h"
#include "test_support.h"
#include "torchless/codec/container.h"
#include "torchless/codec/dpcc.h"
#include "torchless/core/error.h"

namespace torchless::codec {
namespace {

using torchless::testing::error_of;

namespace fs = std::filesystem;
using testing::codec_fixture;
using testing::codec_index;

// A private copy of the low-rate package that a test may damage.
fs::path copy_of_package(const std::string& rate = "low") {
  auto dir = torchless::testing::temp_dir() / ("dpcc-" + rate);
  fs::copy(codec_fixture("dpcc-" + rate), dir, fs::copy_options::recursive);
  return dir;
}

nlohmann::json read_manifest(const fs::path& dir) {
  return torchless::testing::read_json(dir / "manifest.json");
}

void write_manifest(const fs::path& dir, const nlohmann::json& manifest) {
  std::ofstream(dir / "manifest.json") << manifest.dump(1);
}

TEST(Package, LoadsFixturePackagesWithPythonIds) {
  auto index = codec_index();
  for (const std::string rate : {"low", "high"}) {
    auto package = Package::load(codec_fixture("dpcc-" + rate));
    EXPECT_EQ(package.package_id(), index["packages"][rate]["package_id"]);
    EXPECT_EQ(package.family(), "dpcc");
    EXPECT_EQ(package.rate(), rate);
    EXPECT_EQ(package.graphs().size(), 7u);
    EXPECT_EQ(package.entropy_models().size(), 2u);
    EXPECT_EQ(package.graph("stage2_refine").stage, 2);
    EXPECT_EQ(package.graph("stage0_upsample").outputs[0].name, "candidate_xyzs");
    EXPECT_EQ(package.graph("stage0_upsample").outputs[0].shape,
              (std::vector<int64_t>{1, 3, -1, 8}));
    EXPECT_EQ(package.graph("stage0_upsample").outputs[0].dim_names[2], "n");
  }
}

TEST(Package, ManifestHashEqualsWhatPythonWroteIntoContainers) {
  const auto index = codec_index();  // keep the json alive across the loop
  for (const auto& cas : index["cases"]) {
    auto package = Package::load(codec_fixture(cas["package"]));
    auto container = Container::read(codec_fixture(cas["tlc"]));
    EXPECT_EQ(container.manifest_sha256, package.manifest_sha256()) << cas["tlc"];
    EXPECT_NO_THROW(package.check_container(container, "x.tlc"));
  }
}

TEST(Package, MissingListedFileIsNamed) {
  auto dir = copy_of_package();
  fs::remove(dir / "stage1_refine.onnx");
  auto message = error_of([&] { Package::load(dir); });
  EXPECT_NE(message.find("\"stage1_refine.onnx\" listed in manifest.json is missing"),
            std::string::npos)
      << message;
}

TEST(Package, ModifiedFileIsAHashMismatch) {
  auto dir = copy_of_package();
  {
    std::fstream f(dir / "xyzs_eblock.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x55');
  }
  auto message = error_of([&] { Package::load(dir); });
  EXPECT_NE(message.find("\"xyzs_eblock.bin\" has SHA-256"), std::string::npos) << message;
}

TEST(Package, ResizedFileIsASizeMismatch) {
  auto dir = copy_of_package();
  std::ofstream(dir / "stage0_upsample.onnx", std::ios::app | std::ios::binary) << "x";
  auto message = error_of([&] { Package::load(dir); });
  EXPECT_NE(message.find("\"stage0_upsample.onnx\" has"), std::string::npos) << message;
  EXPECT_NE(message.find("manifest.json says"), std::string::npos) << message;
}

TEST(Package, MissingManifestSaysNotAPackage) {
  auto dir = torchless::testing::temp_dir();
  auto message = error_of([&] { Package::load(dir); });
  EXPECT_NE(message.find("no manifest.json"), std::string::npos) << message;
  auto missing = error_of([&] { Package::load(dir / "nope"); });
  EXPECT_NE(missing.find("not a package directory"), std::string::npos) << missing;
}

TEST(Package, InvalidJsonIsNamed) {
  auto dir = copy_of_package();
  std::ofstream(dir / "manifest.json") << "{\"format\": ";
  auto message = error_of([&] { Package::load(dir); });
  EXPECT_NE(message.find("manifest.json: invalid JSON"), std::string::npos) << message;
}

TEST(Package, RejectsUnknownFormatVersion) {
  auto dir = copy_of_package();
  auto manifest = read_manifest(dir);
  manifest["format_version"] = 2;
  write_manifest(dir, manifest);
  EXPECT_THROW(Package::load(dir), UnsupportedError);
  manifest["format_version"] = 1;
  manifest["format"] = "something.else";
  write_manifest(dir, manifest);
  auto message = error_of([&] { Package::load(dir); });
  EXPECT_NE(message.find("\"format\": expected \"torchless.package\""), std::string::npos)
      << message;
}

TEST(Package, DecoderRejectsAnotherFamily) {
  auto dir = copy_of_package();
  auto manifest = read_manifest(dir);
  manifest["family"] = "pcgc";
  write_manifest(dir, manifest);
  auto package = Package::load(dir);
  try {
    DpccDecoder decoder(package);
    FAIL() << "expected UnsupportedError";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("package family \"pcgc\" is not supported"),
              std::string::npos)
        << e.what();
  }
}

TEST(Package, RejectsGraphFileNotListed) {
  auto dir = copy_of_package();
  auto manifest = read_manifest(dir);
  manifest["graphs"][1]["file"] = "other.onnx";
  write_manifest(dir, manifest);
  auto message = error_of([&] { Package::load(dir); });
  EXPECT_NE(message.find("graph \"stage0_upsample\" names file \"other.onnx\""), std::string::npos)
      << message;
}

TEST(Package, RejectsPathsLeavingThePackage) {
  auto dir = copy_of_package();
  auto manifest = read_manifest(dir);
  manifest["files"][0]["path"] = "../escape.bin";
  write_manifest(dir, manifest);
  auto message = error_of([&] { Package::load(dir); });
  EXPECT_NE(message.find("not a plain relative path"), std::string::npos) << message;
}

TEST(Package, RefusesContainerOfAnotherPackage) {
  auto low = Package::load(codec_fixture("dpcc-low"));
  auto high_file = Container::read(codec_fixture("torus-high.tlc"));
  auto message = error_of([&] { low.check_container(high_file, "torus-high.tlc"); });
  EXPECT_NE(message.find("torus-high.tlc: written with package \"" + high_file.package_id + "\""),
            std::string::npos)
      << message;
}

TEST(Package, RefusesContainerWithAnotherManifestHash) {
  auto low = Package::load(codec_fixture("dpcc-low"));
  auto file = Container::read(codec_fixture("torus-low.tlc"));
  file.manifest_sha256[5] ^= 1;
  auto message = error_of([&] { low.check_container(file, "torus-low.tlc"); });
  EXPECT_NE(message.find("manifest_sha256"), std::string::npos) << message;
  EXPECT_NE(message.find("does not match"), std::string::npos) << message;
}

}  // namespace
}  // namespace torchless::codec
