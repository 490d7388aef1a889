#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <regex>

#include "cli/command.h"
#include "formats/onnx/onnx_fixture.h"
#include "test_support.h"

namespace torchless::cli {
namespace {

using torchless::testing::fixture;
using torchless::testing::onnx_fixture_json;

struct CliResult {
  int code;
  std::string out;
  std::string err;
};

CliResult inspect(std::vector<std::string> args) {
  args.insert(args.begin(), {"torchless", "onnx", "inspect"});
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  int code = run_cli(static_cast<int>(argv.size()), argv.data());
  std::string out = ::testing::internal::GetCapturedStdout();
  std::string err = ::testing::internal::GetCapturedStderr();
  return {code, out, err};
}

TEST(InspectOnnx, JsonSummaryMatchesOnnxPackage) {
  for (const std::string stem : {"conv_mix", "latent_decoder", "external_data"}) {
    SCOPED_TRACE(stem);
    auto r = inspect({fixture("onnx", stem + ".onnx").string(), "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    auto ours = nlohmann::json::parse(r.out);
    auto theirs = onnx_fixture_json(stem + ".json").at("report");
    for (const char* key : {"node_count", "edge_count", "initializer_count", "parameter_count",
                            "op_histogram", "opsets", "ir_version", "producer_name"}) {
      EXPECT_EQ(ours.at(key), theirs.at(key)) << key;
    }
    ASSERT_EQ(ours.at("inputs").size(), theirs.at("inputs").size());
    for (size_t i = 0; i < theirs.at("inputs").size(); ++i) {
      EXPECT_EQ(ours["inputs"][i]["name"], theirs["inputs"][i]["name"]);
      EXPECT_EQ(ours["inputs"][i]["shape"], theirs["inputs"][i]["shape"]);
    }
    EXPECT_EQ(ours["outputs"][0]["shape"], theirs["outputs"][0]["shape"]);
  }
}

TEST(InspectOnnx, TextSummaryShowsCountsAndHistogram) {
  auto r = inspect({fixture("onnx", "latent_decoder.onnx").string()});
  ASSERT_EQ(r.code, 0) << r.err;
  auto report = onnx_fixture_json("latent_decoder.json").at("report");
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex("nodes +" + std::to_string(report["node_count"].get<int>()) + "\n")))
      << r.out;
  EXPECT_TRUE(std::regex_search(
      r.out,
      std::regex("parameters +" + std::to_string(report["parameter_count"].get<int>()) + " ")))
      << r.out;
  EXPECT_NE(r.out.find("latent_xyzs              float[1, 3, N]"), std::string::npos) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\n  Conv +4\n"))) << r.out;
}

TEST(InspectOnnx, OptimizedShowsBatchNormFoldedAndConvReluFused) {
  auto r = inspect(
      {fixture("onnx", "conv_bn_relu.onnx").string(), "--optimized", "--level", "extended"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("2 BatchNormalization folded into the preceding Conv"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("Conv+Relu -> com.microsoft.FusedConv (activation=Relu) x2"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("MatMul+Add -> Gemm x1"), std::string::npos) << r.out;
}

TEST(InspectOnnx, OptimizedJsonCarriesBothGraphs) {
  auto r = inspect({fixture("onnx", "conv_bn_relu.onnx").string(), "--optimized", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("node_count"), 12);
  EXPECT_LT(j.at("optimized").at("node_count").get<int>(), 12);
  EXPECT_EQ(j.at("optimized").at("level"), "all");
  EXPECT_EQ(j.at("optimized").at("op_histogram").count("BatchNormalization"), 0u);
}

TEST(InspectOnnx, DotFileHasOneStatementPerNodeAndEdge) {
  auto dot = torchless::testing::temp_dir() / "graph.dot";
  auto r = inspect({fixture("onnx", "small.onnx").string(), "--dot", dot.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  std::ifstream in(dot);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.rfind("digraph \"torch_jit\" {", 0), 0u) << text;
  // small: x -> Conv(conv.weight, conv.bias) -> Relu -> y
  EXPECT_NE(text.find("input0 -> node0 [label=\"x\"]"), std::string::npos) << text;
  EXPECT_NE(text.find("init0 -> node0 [label=\"conv.weight\"]"), std::string::npos) << text;
  EXPECT_NE(text.find("node1 -> output0 [label=\"y\"]"), std::string::npos) << text;
  EXPECT_NE(text.find("label=\"Relu\\n"), std::string::npos) << text;
  EXPECT_EQ(text.back(), '\n');
}

TEST(InspectOnnx, TruncatedFileIsOneLineOnStderr) {
  auto r = inspect({fixture("onnx", "truncated.onnx").string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(r.out.empty());
  EXPECT_NE(r.err.find("truncated.onnx: not a valid ONNX protobuf"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(InspectOnnx, GenericInspectCommandSummarisesOnnx) {
  std::vector<std::string> args = {"torchless", "inspect",
                                   fixture("onnx", "conv_mix.onnx").string(), "--json"};
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  ::testing::internal::CaptureStdout();
  int code = run_cli(static_cast<int>(argv.size()), argv.data());
  std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(code, 0);
  auto j = nlohmann::json::parse(out);
  auto report = onnx_fixture_json("conv_mix.json").at("report");
  EXPECT_EQ(j.at("format"), "onnx");
  EXPECT_EQ(j.at("details").at("nodes"), report.at("node_count"));
  EXPECT_EQ(j.at("details").at("edges"), report.at("edge_count"));
  EXPECT_EQ(j.at("details").at("op_histogram"), report.at("op_histogram"));
  EXPECT_EQ(j.at("totals").at("tensors"), report.at("initializer_count"));
  EXPECT_EQ(j.at("totals").at("parameters"), report.at("parameter_count"));
  EXPECT_EQ(j.at("details").at("inputs")[0], "x: float[1, 8, num_points]");
}

}  // namespace
}  // namespace torchless::cli
