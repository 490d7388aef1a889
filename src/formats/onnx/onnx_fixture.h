// Test-only: reads what tests/fixtures/gen_onnx.py wrote for one model (<stem>.json: inputs and
// outputs as raw .bin arrays, and the `onnx` package's report) and compares tensors within a
// tolerance. Shared by the formats and nn tests. Thread-compatible.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "test_support.h"
#include "torchless/core/tensor.h"

namespace torchless::testing {

inline nlohmann::json onnx_fixture_json(const std::string& file) {
  return read_json(fixture("onnx", file));
}

// A float32 array written by gen_onnx.py's save_array (entry: name, dtype, shape, file).
inline Tensor onnx_fixture_array(const nlohmann::json& entry) {
  EXPECT_EQ(entry.at("dtype"), "float32");
  Shape shape = entry.at("shape").get<Shape>();
  return Tensor::contiguous_view(Buffer::map_file(fixture("onnx", entry.at("file"))),
                                 DType::kFloat32, shape, entry.at("file").get<std::string>());
}

// |actual - expected| <= rel * |expected| + abs_floor for every element, shapes equal.
inline ::testing::AssertionResult tensors_close(const Tensor& actual, const Tensor& expected,
                                                double rel = 1e-5, double abs_floor = 1e-6) {
  if (actual.shape() != expected.shape()) {
    return ::testing::AssertionFailure() << "shape " << shape_to_string(actual.shape())
                                         << " vs expected " << shape_to_string(expected.shape());
  }
  auto a = actual.to_double_vector();
  auto e = expected.to_double_vector();
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double err = std::abs(a[i] - e[i]);
    if (!(err <= rel * std::abs(e[i]) + abs_floor)) {
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs expected "
                                           << e[i] << " (error " << err << ")";
    }
    worst = std::max(worst, err);
  }
  return ::testing::AssertionSuccess() << "max abs error " << worst;
}

}  // namespace torchless::testing
