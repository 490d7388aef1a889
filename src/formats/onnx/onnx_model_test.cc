#include "torchless/formats/onnx_model.h"

#include <gtest/gtest.h>

#include <fstream>

#include "formats/onnx/onnx_fixture.h"
#include "test_support.h"

namespace torchless::formats {
namespace {

using torchless::testing::fixture;
using torchless::testing::onnx_fixture_array;
using torchless::testing::onnx_fixture_json;

std::string error_of(const std::filesystem::path& path) {
  try {
    OnnxModel::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Every number the `onnx` package reported for the file, against our parse of it.
void expect_matches_onnx_report(const std::string& stem) {
  SCOPED_TRACE(stem);
  auto report = onnx_fixture_json(stem + ".json").at("report");
  auto model = OnnxModel::load(fixture("onnx", stem + ".onnx"));
  EXPECT_EQ(model.ir_version(), report.at("ir_version").get<int64_t>());
  EXPECT_EQ(model.producer_name(), report.at("producer_name").get<std::string>());
  EXPECT_EQ(model.producer_version(), report.at("producer_version").get<std::string>());
  EXPECT_EQ(model.graph_name(), report.at("graph_name").get<std::string>());
  EXPECT_EQ(model.opsets(), (report.at("opsets").get<std::map<std::string, int64_t>>()));
  EXPECT_EQ(model.nodes().size(), report.at("node_count").get<size_t>());
  EXPECT_EQ(model.edges().size(), report.at("edge_count").get<size_t>());
  EXPECT_EQ(model.op_histogram(),
            (report.at("op_histogram").get<std::map<std::string, int64_t>>()));
  EXPECT_EQ(model.initializers().size(), report.at("initializer_count").get<size_t>());
  EXPECT_EQ(model.parameter_count(), report.at("parameter_count").get<int64_t>());
  int64_t external = 0;
  for (const auto& i : model.initializers()) external += i.external;
  EXPECT_EQ(external, report.at("external_initializers").get<int64_t>());

  auto same_values = [](const std::vector<OnnxValueInfo>& ours, const nlohmann::json& theirs) {
    ASSERT_EQ(ours.size(), theirs.size());
    for (size_t i = 0; i < ours.size(); ++i) {
      EXPECT_EQ(ours[i].name, theirs[i].at("name").get<std::string>());
      EXPECT_EQ(ours[i].elem_type, theirs[i].at("elem_type").get<int32_t>());
      const auto& dims = theirs[i].at("shape");
      ASSERT_EQ(ours[i].shape.size(), dims.size());
      for (size_t k = 0; k < dims.size(); ++k) {
        if (dims[k].is_string()) {
          EXPECT_EQ(ours[i].shape[k].param, dims[k].get<std::string>());
        } else {
          EXPECT_EQ(ours[i].shape[k].value, dims[k].get<int64_t>());
        }
      }
    }
  };
  same_values(model.inputs(), report.at("inputs"));
  same_values(model.outputs(), report.at("outputs"));
}

TEST(OnnxModel, SummaryOfConvMixMatchesOnnxPackage) {
  expect_matches_onnx_report("conv_mix");
}
TEST(OnnxModel, SummaryOfLatentDecoderMatchesOnnxPackage) {
  expect_matches_onnx_report("latent_decoder");
}
TEST(OnnxModel, SummaryOfConvBnReluMatchesOnnxPackage) {
  expect_matches_onnx_report("conv_bn_relu");
}
TEST(OnnxModel, SummaryOfExternalDataModelMatchesOnnxPackage) {
  expect_matches_onnx_report("external_data");
}
TEST(OnnxModel, SummaryOfTypedInitializersMatchesOnnxPackage) {
  expect_matches_onnx_report("typed_initializers");
}

TEST(OnnxModel, SymbolicDimsKeepTheirNames) {
  auto model = OnnxModel::load(fixture("onnx", "conv_mix.onnx"));
  ASSERT_EQ(model.inputs().size(), 1u);
  EXPECT_EQ(model.inputs()[0].describe(), "float[1, 8, num_points]");
  EXPECT_EQ(model.outputs()[0].describe(), "float[1, num_points, 16]");
}

TEST(OnnxModel, EdgesJoinTheProducerOfATensorToItsConsumer) {
  auto model = OnnxModel::load(fixture("onnx", "conv_mix.onnx"));
  ASSERT_FALSE(model.edges().empty());
  for (const auto& e : model.edges()) {
    const auto& from = model.nodes().at(e.producer).outputs;
    const auto& to = model.nodes().at(e.consumer).inputs;
    EXPECT_NE(std::find(from.begin(), from.end(), e.tensor), from.end()) << e.tensor;
    EXPECT_NE(std::find(to.begin(), to.end(), e.tensor), to.end()) << e.tensor;
  }
}

// The graph's weights equal the module's state_dict that PyTorch exported them from.
void expect_initializers_equal_state(const std::string& model_file, const std::string& stem) {
  auto model = OnnxModel::load(fixture("onnx", model_file));
  auto state = onnx_fixture_json(stem + ".state.json");
  ASSERT_FALSE(state.empty());
  for (const auto& entry : state) {
    std::string name = entry.at("name");
    SCOPED_TRACE(name);
    ASSERT_NE(model.find_initializer(name), nullptr);
    Tensor ours = model.initializer_tensor(name);
    Tensor theirs = onnx_fixture_array(entry);
    EXPECT_EQ(ours.shape(), theirs.shape());
    EXPECT_EQ(ours.to_vector<float>(), theirs.to_vector<float>());
  }
}

TEST(OnnxModel, RawDataInitializersEqualTheExportedStateDict) {
  expect_initializers_equal_state("conv_bn_relu.onnx", "conv_bn_relu");
}

TEST(OnnxModel, ExternalInitializersAreReadFromTheFileBesideTheModel) {
  auto model = OnnxModel::load(fixture("onnx", "external_data.onnx"));
  const auto* weight = model.find_initializer("conv.weight");
  ASSERT_NE(weight, nullptr);
  EXPECT_TRUE(weight->external);
  EXPECT_EQ(weight->external_location, "external_data.weights");
  expect_initializers_equal_state("external_data.onnx", "small");
  EXPECT_TRUE(model.initializer_tensor("conv.weight").storage().is_mapped());
}

TEST(OnnxModel, TypedFieldInitializersAreConverted) {
  auto model = OnnxModel::load(fixture("onnx", "typed_initializers.onnx"));
  EXPECT_EQ(model.initializer_tensor("shape").to_vector<int64_t>(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(model.initializer_tensor("i32").to_vector<int32_t>(), (std::vector<int32_t>{1, -2, 3}));
  EXPECT_EQ(model.initializer_tensor("f64").to_vector<double>(), (std::vector<double>{0.5, -1.25}));
  EXPECT_EQ(model.initializer_tensor("f16").to_double_vector(), (std::vector<double>{1.5, -2.0}));
  EXPECT_EQ(model.initializer_tensor("u8").to_vector<uint8_t>(), (std::vector<uint8_t>{0, 7, 255}));
  // w = y - x, from what numpy computed for the graph.
  auto meta = onnx_fixture_json("typed_initializers.json");
  auto x = onnx_fixture_array(meta.at("inputs")[0]).to_vector<float>();
  auto y = onnx_fixture_array(meta.at("outputs")[0]).to_vector<float>();
  Tensor w = model.initializer_tensor("w");
  EXPECT_EQ(w.shape(), (Shape{2, 3}));
  auto wv = w.to_vector<float>();
  for (size_t i = 0; i < wv.size(); ++i) EXPECT_FLOAT_EQ(wv[i], y[i] - x[i]);
}

TEST(OnnxModel, RejectsTruncatedFile) {
  auto message = error_of(fixture("onnx", "truncated.onnx"));
  EXPECT_NE(message.find("truncated.onnx"), std::string::npos) << message;
  EXPECT_NE(message.find("protobuf parsing failed"), std::string::npos) << message;
}

TEST(OnnxModel, RejectsRandomBytes) {
  auto message = error_of(fixture("onnx", "garbage.onnx"));
  EXPECT_NE(message.find("garbage.onnx"), std::string::npos) << message;
}

TEST(OnnxModel, RejectsEmptyFile) {
  auto path = torchless::testing::temp_dir() / "empty.onnx";
  std::ofstream(path).close();
  EXPECT_NE(error_of(path).find("no graph"), std::string::npos) << error_of(path);
}

TEST(OnnxModel, RejectsNodeReadingATensorNothingProduces) {
  auto message = error_of(fixture("onnx", "dangling.onnx"));
  EXPECT_NE(message.find("node 'add' (#0, Add) reads tensor 'nowhere'"), std::string::npos)
      << message;
}

TEST(OnnxModel, RejectsTwoNodesWritingOneTensor) {
  auto message = error_of(fixture("onnx", "duplicate_output.onnx"));
  EXPECT_NE(message.find("tensor 'y' is written by node 'b' (#1, Relu)"), std::string::npos)
      << message;
}

TEST(OnnxModel, RejectsRawDataOfTheWrongSize) {
  auto message = error_of(fixture("onnx", "raw_size_mismatch.onnx"));
  EXPECT_NE(message.find("raw_data holds 8 bytes but float[4] needs 16 bytes"), std::string::npos)
      << message;
}

TEST(OnnxModel, RefusesExternalDataOutsideTheModelFolder) {
  auto message = error_of(fixture("onnx", "external_traversal.onnx"));
  EXPECT_NE(message.find("'../../etc/passwd' leaves the model's folder"), std::string::npos)
      << message;
}

TEST(OnnxModel, RefusesExternalDataWhenParsedFromMemory) {
  auto bytes = Buffer::read_file(fixture("onnx", "external_data.onnx"));
  auto model = OnnxModel::parse(bytes, "in-memory");
  try {
    model.initializer_tensor("conv.weight");
    FAIL() << "read external data without a folder";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not loaded from a file"), std::string::npos) << e.what();
  }
}

TEST(OnnxModel, RejectsExternalDataFileThatIsTooShort) {
  auto dir = torchless::testing::temp_dir();
  std::filesystem::copy_file(fixture("onnx", "external_data.onnx"), dir / "m.onnx");
  std::ofstream(dir / "external_data.weights", std::ios::binary) << "short";
  auto message = error_of(dir / "m.onnx");
  EXPECT_NE(message.find("beyond the end of"), std::string::npos) << message;
}

}  // namespace
}  // namespace torchless::formats
