// Test-only access to the fixtures of tests/fixtures/gen_codec.py: the packages, the `.tlc`
// files the Python encoder wrote, and the Python reference decodes, described by index.json.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "test_support.h"
#include "torchless/formats/npy.h"

namespace torchless::codec::testing {

inline nlohmann::json codec_index() {
  return torchless::testing::read_json(torchless::testing::fixture("codec", "index.json"));
}

inline std::filesystem::path codec_fixture(const std::string& file) {
  return torchless::testing::fixture("codec", file);
}

// The Python reference decode: float32 (M, 3), x y z per point.
inline std::vector<float> reference_points(const std::string& npy) {
  auto array = formats::load_npy(codec_fixture(npy));
  return array.tensor.to_vector<float>();
}

inline std::vector<uint8_t> bytes_of(const std::string& s) {
  return {s.begin(), s.end()};
}

}  // namespace torchless::codec::testing
