// libFuzzer target: the PCD reader (ascii, binary, binary_compressed with its LZF decoder) must
// turn any input into a PointCloud or a torchless::Error, never a crash, a hang or an
// allocation the input does not justify.
#include <cstddef>
#include <cstdint>
#include <span>

#include "torchless/core/error.h"
#include "torchless/formats/point_cloud.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bytes = std::as_bytes(std::span<const uint8_t>(data, size));
  torchless::formats::PointCloudReadOptions options;
  options.limits.max_allocation = uint64_t{64} << 20;  // keep the fuzzer's RSS small
  try {
    options.keep_nan_points = (size % 2) == 0;
    torchless::formats::parse_pcd(bytes, "fuzz.pcd", options).check_consistent();
  } catch (const torchless::Error&) {
  }
  return 0;
}
