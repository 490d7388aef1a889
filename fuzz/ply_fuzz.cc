// libFuzzer target: the PLY reader must turn any input into a PointCloud or a torchless::Error,
// never a crash, a hang or an allocation the input does not justify.
#include <cstddef>
#include <cstdint>
#include <span>

#include "torchless/core/error.h"
#include "torchless/formats/point_cloud.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bytes = std::as_bytes(std::span<const uint8_t>(data, size));
  torchless::formats::PointCloudReadOptions options;
  try {
    auto cloud = torchless::formats::parse_ply(bytes, "fuzz.ply", options);
    cloud.check_consistent();
    // What was read must write and read back.
    auto text =
        torchless::formats::to_ply(cloud, torchless::formats::PlyEncoding::kBinaryBigEndian);
    torchless::formats::parse_ply(std::as_bytes(std::span<const char>(text.data(), text.size())),
                                  "roundtrip.ply", options);
  } catch (const torchless::Error&) {
  }
  return 0;
}
