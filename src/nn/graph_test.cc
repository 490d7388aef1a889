#include "torchless/nn/graph.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "formats/onnx/onnx_fixture.h"
#include "test_support.h"
#include "torchless/formats/onnx_model.h"

namespace torchless::nn {
namespace {

using torchless::testing::error_of;
using torchless::testing::fixture;
using torchless::testing::onnx_fixture_array;
using torchless::testing::onnx_fixture_json;
using torchless::testing::tensors_close;

// The inputs gen_onnx.py fed PyTorch for <stem>, by name.
std::vector<NamedTensor> fixture_inputs(const nlohmann::json& meta) {
  std::vector<NamedTensor> inputs;
  for (const auto& entry : meta.at("inputs")) {
    inputs.push_back({entry.at("name"), onnx_fixture_array(entry)});
  }
  return inputs;
}

// Runs <stem>.onnx on PyTorch's inputs and compares every output with PyTorch's.
void expect_matches_pytorch(const std::string& stem, const GraphOptions& options = {}) {
  SCOPED_TRACE(stem);
  auto meta = onnx_fixture_json(stem + ".json");
  auto graph = Graph::load(fixture("onnx", stem + ".onnx"), options);
  auto outputs = graph.run(fixture_inputs(meta));
  ASSERT_EQ(outputs.size(), meta.at("outputs").size());
  for (const auto& entry : meta.at("outputs")) {
    size_t i = graph.output_index(entry.at("name").get<std::string>());
    EXPECT_TRUE(tensors_close(outputs[i], onnx_fixture_array(entry)));
  }
}

std::string run_error(const Graph& graph, const std::vector<NamedTensor>& inputs) {
  try {
    graph.run(inputs);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

Tensor zeros(Shape shape, DType dtype = DType::kFloat32) {
  return Tensor::zeros(dtype, shape);
}

TEST(Graph, ConvMixMatchesPyTorch) {
  expect_matches_pytorch("conv_mix");
}

TEST(Graph, DynamicPointAxisRunsAnotherPointCount) {
  auto graph = Graph::load(fixture("onnx", "conv_mix.onnx"));
  Tensor x = onnx_fixture_array(
      {{"dtype", "float32"}, {"shape", {1, 8, 101}}, {"file", "conv_mix_n101.x.bin"}});
  Tensor y = onnx_fixture_array(
      {{"dtype", "float32"}, {"shape", {1, 101, 16}}, {"file", "conv_mix_n101.y.bin"}});
  auto outputs = graph.run({{"x", x}});
  EXPECT_TRUE(tensors_close(outputs[0], y));
}

TEST(Graph, TwoInputLatentDecoderMatchesPyTorch) {
  expect_matches_pytorch("latent_decoder");
}

TEST(Graph, ConvBnReluMatchesPyTorchAtEveryOptimisationLevel) {
  for (auto level : {OptimizationLevel::kDisable, OptimizationLevel::kBasic,
                     OptimizationLevel::kExtended, OptimizationLevel::kAll}) {
    SCOPED_TRACE(optimization_level_name(level));
    GraphOptions options;
    options.optimization = level;
    expect_matches_pytorch("conv_bn_relu", options);
  }
}

TEST(Graph, ParallelExecutionWithTwoThreadsMatchesPyTorch) {
  GraphOptions options;
  options.intra_op_threads = 2;
  options.inter_op_threads = 2;
  options.execution_mode = ExecutionMode::kParallel;
  expect_matches_pytorch("latent_decoder", options);
}

TEST(Graph, ExternalDataInitializersAreLoaded) {
  expect_matches_pytorch("external_data");
}

TEST(Graph, TypedFieldInitializersMatchNumpy) {
  expect_matches_pytorch("typed_initializers");
}

TEST(Graph, LoadsFromMemory) {
  auto meta = onnx_fixture_json("small.json");
  auto graph = Graph::load_from_memory(Buffer::read_file(fixture("onnx", "small.onnx")), "small");
  auto outputs = graph.run(fixture_inputs(meta));
  EXPECT_TRUE(tensors_close(outputs[0], onnx_fixture_array(meta.at("outputs")[0])));
}

TEST(Graph, ListsInputsAndOutputsWithSymbolicDims) {
  auto graph = Graph::load(fixture("onnx", "latent_decoder.onnx"));
  ASSERT_EQ(graph.inputs().size(), 2u);
  EXPECT_EQ(graph.inputs()[0].name, "latent_feats");
  EXPECT_EQ(graph.inputs()[0].describe(), "float32[1, 8, N]");
  EXPECT_EQ(graph.inputs()[1].describe(), "float32[1, 3, N]");
  EXPECT_EQ(graph.inputs()[1].shape, (std::vector<int64_t>{1, 3, -1}));
  EXPECT_EQ(graph.inputs()[1].dim_names[2], "N");
  ASSERT_EQ(graph.outputs().size(), 1u);
  EXPECT_EQ(graph.outputs()[0].name, "reconstructed");
  EXPECT_EQ(graph.outputs()[0].dtype, DType::kFloat32);
}

TEST(Graph, NonContiguousInputIsAccepted) {
  auto meta = onnx_fixture_json("small.json");
  Tensor x = onnx_fixture_array(meta.at("inputs")[0]);  // (1, 4, 5)
  // The same values, stored transposed: a (1, 4, 5) view with strides (20, 1, 4).
  auto values = x.to_vector<float>();
  std::vector<float> transposed(values.size());
  for (int c = 0; c < 4; ++c) {
    for (int n = 0; n < 5; ++n)
      transposed[static_cast<size_t>(n * 4 + c)] = values[static_cast<size_t>(c * 5 + n)];
  }
  Tensor storage = Tensor::from_vector(transposed, {20});
  Tensor view = Tensor::view(storage.storage(), DType::kFloat32, {1, 4, 5}, {20, 1, 4});
  ASSERT_FALSE(view.is_contiguous());
  auto graph = Graph::load(fixture("onnx", "small.onnx"));
  EXPECT_TRUE(
      tensors_close(graph.run({{"x", view}})[0], onnx_fixture_array(meta.at("outputs")[0])));
}

TEST(Graph, MissingInputIsNamedWithoutRunning) {
  auto graph = Graph::load(fixture("onnx", "latent_decoder.onnx"));
  auto message = run_error(graph, {{"latent_feats", zeros({1, 8, 10})}});
  EXPECT_NE(message.find("missing input 'latent_xyzs' (float32[1, 3, N])"), std::string::npos)
      << message;
  EXPECT_EQ(message.find("ONNX Runtime"), std::string::npos) << message;
}

TEST(Graph, UnknownInputNameIsRefused) {
  auto graph = Graph::load(fixture("onnx", "small.onnx"));
  auto message = run_error(graph, {{"x", zeros({1, 4, 5})}, {"feats", zeros({1, 4, 5})}});
  EXPECT_NE(message.find("unknown input 'feats'"), std::string::npos) << message;
}

TEST(Graph, WrongDtypeIsRefused) {
  auto graph = Graph::load(fixture("onnx", "small.onnx"));
  auto message = run_error(graph, {{"x", zeros({1, 4, 5}, DType::kFloat64)}});
  EXPECT_NE(message.find("input 'x': expected dtype float32"), std::string::npos) << message;
  EXPECT_NE(message.find("found float64"), std::string::npos) << message;
}

TEST(Graph, WrongRankIsRefused) {
  auto graph = Graph::load(fixture("onnx", "conv_mix.onnx"));
  auto message = run_error(graph, {{"x", zeros({8, 37})}});
  EXPECT_NE(message.find("input 'x': expected rank 3 (float32[1, 8, num_points]), found rank 2"),
            std::string::npos)
      << message;
}

TEST(Graph, WrongFixedDimIsRefused) {
  auto graph = Graph::load(fixture("onnx", "conv_mix.onnx"));
  auto message = run_error(graph, {{"x", zeros({1, 4, 37})}});
  EXPECT_NE(message.find("input 'x': dim 1 expected 8, found 4"), std::string::npos) << message;
}

TEST(Graph, SymbolicDimMustAgreeAcrossInputs) {
  auto graph = Graph::load(fixture("onnx", "latent_decoder.onnx"));
  auto message =
      run_error(graph, {{"latent_feats", zeros({1, 8, 50})}, {"latent_xyzs", zeros({1, 3, 40})}});
  EXPECT_NE(
      message.find("input 'latent_xyzs': dim 2 is N = 40, but input 'latent_feats' gave N = 50"),
      std::string::npos)
      << message;
}

TEST(Graph, OnnxRuntimeFailureNamesTheModelPath) {
  auto path = fixture("onnx", "garbage.onnx");
  try {
    Graph::load(path);
    FAIL() << "loaded garbage";
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find(path.string() + ": ONNX Runtime:"), std::string::npos) << message;
  }
}

TEST(Graph, ExternalDataOutsideTheModelFolderIsRefused) {
  auto path = fixture("onnx", "external_traversal.onnx");
  try {
    Graph::load(path);
    FAIL() << "loaded a model whose weights point at ../../etc/passwd";
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find("escapes model directory"), std::string::npos) << message;
  }
}

TEST(Graph, MissingModelFileIsNamed) {
  try {
    Graph::load("/nonexistent/model.onnx");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.onnx"), std::string::npos);
  }
}

TEST(Graph, OutputsAreViewsOfOrtMemoryReusedOnceReleased) {
  auto meta = onnx_fixture_json("conv_mix.json");
  auto expected = onnx_fixture_array(meta.at("outputs")[0]);
  auto graph = Graph::load(fixture("onnx", "conv_mix.onnx"));
  auto inputs = fixture_inputs(meta);
  const std::byte* first_data = nullptr;
  {
    auto first = graph.run(inputs);
    first_data = first[0].raw_data();
  }
  auto second = graph.run(inputs);
  EXPECT_EQ(graph.reused_output_runs(), 1u);
  EXPECT_EQ(second[0].raw_data(), first_data);
  EXPECT_TRUE(tensors_close(second[0], expected));
}

TEST(Graph, HeldOutputsAreNeverOverwritten) {
  auto meta = onnx_fixture_json("conv_mix.json");
  auto graph = Graph::load(fixture("onnx", "conv_mix.onnx"));
  auto first = graph.run(fixture_inputs(meta));
  auto before = first[0].to_vector<float>();
  auto other = graph.run({{"x", zeros({1, 8, 37})}});
  EXPECT_EQ(graph.reused_output_runs(), 0u);
  EXPECT_NE(other[0].raw_data(), first[0].raw_data());
  EXPECT_EQ(first[0].to_vector<float>(), before);
}

TEST(Graph, ConcurrentRunsGiveTheSameResults) {
  auto meta = onnx_fixture_json("latent_decoder.json");
  auto expected = onnx_fixture_array(meta.at("outputs")[0]);
  auto graph = Graph::load(fixture("onnx", "latent_decoder.onnx"));
  auto inputs = fixture_inputs(meta);
  std::vector<int> ok(4, 0);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < ok.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) ok[t] += tensors_close(graph.run(inputs)[0], expected) ? 1 : 0;
    });
  }
  for (auto& t : threads) t.join();
  for (int count : ok) EXPECT_EQ(count, 20);
}

TEST(Graph, SavesTheOptimisedModelWithBatchNormFolded) {
  auto path = torchless::testing::temp_dir() / "optimized.onnx";
  GraphOptions options;
  options.optimization = OptimizationLevel::kExtended;
  options.optimized_model_path = path;
  Graph::load(fixture("onnx", "conv_bn_relu.onnx"), options);
  auto before = formats::OnnxModel::load(fixture("onnx", "conv_bn_relu.onnx")).op_histogram();
  auto after = formats::OnnxModel::load(path).op_histogram();
  EXPECT_EQ(before["BatchNormalization"], 2);
  EXPECT_EQ(after.count("BatchNormalization"), 0u);
}

TEST(Graph, ProfilesEveryNodeOfEveryRunWhenAsked) {
  const auto dir = torchless::testing::temp_dir();
  GraphOptions options;
  options.profile_prefix = dir / "conv_mix";
  auto graph = Graph::load(fixture("onnx", "conv_mix.onnx"), options);
  for (int i = 0; i < 3; ++i) graph.run({{"x", zeros({1, 8, 37})}});
  const auto trace = graph.end_profiling();
  EXPECT_EQ(trace.parent_path(), dir);
  EXPECT_TRUE(trace.filename().string().starts_with("conv_mix_")) << trace;
  // Read independently of summarize_profile: every kernel event, counted by operator.
  auto events = torchless::testing::read_json(trace);
  std::map<std::string, uint64_t> executions, microseconds;
  for (const auto& e : events) {
    if (e.value("cat", "") == "Node" && e.value("name", "").ends_with("_kernel_time")) {
      executions[e["args"]["op_name"].get<std::string>()] += 1;
      microseconds[e["args"]["op_name"].get<std::string>()] += e["dur"].get<uint64_t>();
    }
  }
  ASSERT_FALSE(executions.empty()) << trace;
  for (const auto& [op, runs] : executions) EXPECT_EQ(runs % 3, 0) << op;  // every node, 3 runs
  const auto summary = summarize_profile(trace);
  ASSERT_EQ(summary.size(), executions.size());
  for (size_t i = 0; i < summary.size(); ++i) {
    EXPECT_EQ(summary[i].executions, executions[summary[i].op]) << summary[i].op;
    EXPECT_EQ(summary[i].microseconds, microseconds[summary[i].op]) << summary[i].op;
    if (i > 0) {
      EXPECT_GE(summary[i - 1].microseconds, summary[i].microseconds);
    }
  }
  EXPECT_THROW(graph.end_profiling(), Error);  // once only

  auto plain = Graph::load(fixture("onnx", "conv_mix.onnx"));
  EXPECT_THROW(plain.end_profiling(), Error);
}

TEST(Graph, ProfileSummaryRefusesFilesThatAreNotTraces) {
  const auto dir = torchless::testing::temp_dir();
  std::ofstream(dir / "a.json") << "{\"not\": \"a trace\"}";
  std::ofstream(dir / "b.json") << "[{\"cat\": \"Node\", \"name\": \"x_kernel_time\"}]";
  std::ofstream(dir / "c.json") << "[1, 2";
  for (const char* name : {"a.json", "b.json", "c.json"}) {
    auto message = error_of([&] { summarize_profile(dir / name); });
    EXPECT_NE(message.find(name), std::string::npos) << message;
  }
}

TEST(Graph, MergedOpTimesAddUpAndStaySortedByTime) {
  std::vector<OpTime> total{{"Conv", 50, 2}, {"Add", 10, 4}};
  merge_op_times(total, {{"Add", 45, 1}, {"Exp", 1, 1}});
  ASSERT_EQ(total.size(), 3u);
  EXPECT_EQ(total[0].op, "Add");
  EXPECT_EQ(total[0].microseconds, 55u);
  EXPECT_EQ(total[0].executions, 5u);
  EXPECT_EQ(total[1].op, "Conv");
  EXPECT_EQ(total[2].op, "Exp");
}

TEST(Graph, ParsesOptimisationLevelNames) {
  EXPECT_EQ(parse_optimization_level("basic"), OptimizationLevel::kBasic);
  EXPECT_EQ(parse_optimization_level("disable"), OptimizationLevel::kDisable);
  EXPECT_THROW(parse_optimization_level("fast"), Error);
}

}  // namespace
}  // namespace torchless::nn
