// Point clouds and the files they come in: PLY (ascii, binary little- and big-endian), PCD
// (PCL v0.5-0.7: ascii, binary, binary_compressed) and XYZ text.
//
// A PointCloud is plain data: float32 positions (N x 3, contiguous), optional float32 normals
// (N x 3), optional uint8 colours (N x 3) and any other per-point scalar properties kept by name
// as doubles. Readers validate every count against the bytes actually present before allocating,
// and throw torchless::Error naming the file, the element, the row and the byte offset. Thread-
// compatible: a PointCloud is a value; the read/write functions keep no state.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "torchless/core/limits.h"

namespace torchless::formats {

struct BoundingBox {
  std::array<float, 3> min{0, 0, 0};
  std::array<float, 3> max{0, 0, 0};
  bool empty = true;

  // Largest side length (0 for an empty or single-point box).
  float largest_extent() const;
};

// One extra per-point property ("intensity", "segment_index", "alpha", ...).
struct ScalarAttribute {
  std::string name;
  std::vector<double> values;  // one per point
};

struct PointCloud {
  std::vector<float> positions;  // x0 y0 z0 x1 y1 z1 ...
  std::vector<float> normals;    // empty, or N x 3 like positions
  std::vector<uint8_t> colors;   // empty, or N x 3 (red green blue)
  std::vector<ScalarAttribute> attributes;

  size_t size() const { return positions.size() / 3; }
  bool has_normals() const { return !normals.empty(); }
  bool has_colors() const { return !colors.empty(); }
  // nullptr when absent.
  const ScalarAttribute* attribute(std::string_view name) const;
  BoundingBox bounds() const;
  // Throws Error when the arrays disagree on the number of points.
  void check_consistent() const;
};

enum class PointCloudFormat { kPly, kPcd, kXyz };
enum class PlyEncoding { kAscii, kBinaryLittleEndian, kBinaryBigEndian };

struct PointCloudReadOptions {
  // PCD organised clouds mark missing returns with NaN coordinates. By default such points are
  // dropped (and counted in PointCloudReadInfo::dropped_nan_points); set this to keep them.
  bool keep_nan_points = false;
  // Keep properties other than positions, normals and colours as ScalarAttributes.
  bool keep_attributes = true;
  Limits limits = Limits::defaults();
};

// What a reader found besides the points themselves.
struct PointCloudReadInfo {
  PointCloudFormat format = PointCloudFormat::kPly;
  std::string encoding;          // "ascii", "binary_little_endian", "binary_compressed", ...
  uint64_t declared_points = 0;  // as the header says (lines, for XYZ)
  uint64_t dropped_nan_points = 0;
  uint64_t width = 0, height = 0;  // PCD organisation (height > 1: organised)
};

// Reads any supported file. The format comes from the content when it has a magic ("ply",
// a PCD header), else from the extension (.ply .pcd .xyz .xyzn .pts .txt), else XYZ text.
PointCloud read_point_cloud(const std::filesystem::path& path,
                            const PointCloudReadOptions& options = {},
                            PointCloudReadInfo* info = nullptr);
// Same, from bytes; `name` is used in error messages and for the extension.
PointCloud parse_point_cloud(std::span<const std::byte> bytes, const std::string& name,
                             const PointCloudReadOptions& options = {},
                             PointCloudReadInfo* info = nullptr);
PointCloudFormat sniff_point_cloud_format(std::span<const std::byte> bytes,
                                          const std::string& name);

PointCloud parse_ply(std::span<const std::byte> bytes, const std::string& name,
                     const PointCloudReadOptions& options = {}, PointCloudReadInfo* info = nullptr);
PointCloud parse_pcd(std::span<const std::byte> bytes, const std::string& name,
                     const PointCloudReadOptions& options = {}, PointCloudReadInfo* info = nullptr);
PointCloud parse_xyz(std::span<const std::byte> bytes, const std::string& name,
                     const PointCloudReadOptions& options = {}, PointCloudReadInfo* info = nullptr);

// PLY bytes for `cloud` (see docs/formats/ply.md): vertex x y z as float, then nx ny nz
// (float) and red green blue (uchar) when present, then each ScalarAttribute as double.
std::string to_ply(const PointCloud& cloud, PlyEncoding encoding);
// Writes to_ply(cloud, encoding) to `path` atomically.
void write_ply(const std::filesystem::path& path, const PointCloud& cloud,
               PlyEncoding encoding = PlyEncoding::kBinaryLittleEndian);

// Decompresses LZF (liblzf's format, as PCL's binary_compressed uses it) into exactly
// `expected_size` bytes; throws Error (naming `what`) on any malformed or short input.
std::vector<uint8_t> lzf_decompress(std::span<const uint8_t> input, size_t expected_size,
                                    const std::string& what);

}  // namespace torchless::formats
