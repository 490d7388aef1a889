#include "torchless/formats/point_cloud.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "torchless/core/buffer.h"
#include "torchless/core/error.h"

namespace torchless::formats {

float BoundingBox::largest_extent() const {
  if (empty) return 0.0f;
  return std::max({max[0] - min[0], max[1] - min[1], max[2] - min[2]});
}

const ScalarAttribute* PointCloud::attribute(std::string_view name) const {
  for (const auto& a : attributes) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

BoundingBox PointCloud::bounds() const {
  BoundingBox box;
  const size_t n = size();
  for (size_t i = 0; i < n; ++i) {
    for (int d = 0; d < 3; ++d) {
      float v = positions[3 * i + d];
      if (box.empty) {
        box.min[d] = box.max[d] = v;
      } else {
        box.min[d] = std::min(box.min[d], v);
        box.max[d] = std::max(box.max[d], v);
      }
    }
    box.empty = false;
  }
  return box;
}

void PointCloud::check_consistent() const {
  if (positions.size() % 3 != 0) {
    fail("point cloud: {} position values is not a multiple of 3", positions.size());
  }
  const size_t n = size();
  if (!normals.empty() && normals.size() != 3 * n) {
    fail("point cloud: {} points but {} normal values (expected {})", n, normals.size(), 3 * n);
  }
  if (!colors.empty() && colors.size() != 3 * n) {
    fail("point cloud: {} points but {} colour values (expected {})", n, colors.size(), 3 * n);
  }
  for (const auto& a : attributes) {
    if (a.values.size() != n) {
      fail("point cloud: {} points but attribute '{}' has {} values", n, a.name, a.values.size());
    }
  }
}

namespace {

std::string lower_extension(const std::string& name) {
  std::string ext = std::filesystem::path(name).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

bool starts_with_line(std::string_view text, std::string_view word) {
  if (text.substr(0, word.size()) != word) return false;
  if (text.size() == word.size()) return true;
  char next = text[word.size()];
  return next == '\n' || next == '\r' || next == ' ' || next == '\t';
}

}  // namespace

PointCloudFormat sniff_point_cloud_format(std::span<const std::byte> bytes,
                                          const std::string& name) {
  std::string_view text(reinterpret_cast<const char*>(bytes.data()),
                        std::min<size_t>(bytes.size(), 4096));
  if (starts_with_line(text, "ply")) return PointCloudFormat::kPly;
  // PCD files open with a "# .PCD" comment or directly with one of the header keywords.
  for (std::string_view word : {"# .PCD", "VERSION", "FIELDS", "COLUMNS"}) {
    if (text.substr(0, word.size()) == word) return PointCloudFormat::kPcd;
  }
  std::string ext = lower_extension(name);
  if (ext == ".ply") return PointCloudFormat::kPly;
  if (ext == ".pcd") return PointCloudFormat::kPcd;
  if (ext == ".xyz" || ext == ".xyzn" || ext == ".pts" || ext == ".txt" || ext == ".pwn") {
    return PointCloudFormat::kXyz;
  }
  // No magic and no known extension: XYZ text if the first byte could start one.
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    if (c == '#' || c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9')) {
      return PointCloudFormat::kXyz;
    }
    break;
  }
  fail(
      "{}: not a point cloud file this reader knows (PLY, PCD or XYZ text): no 'ply' or PCD "
      "header, extension '{}'",
      name, lower_extension(name));
}

PointCloud parse_point_cloud(std::span<const std::byte> bytes, const std::string& name,
                             const PointCloudReadOptions& options, PointCloudReadInfo* info) {
  switch (sniff_point_cloud_format(bytes, name)) {
    case PointCloudFormat::kPly:
      return parse_ply(bytes, name, options, info);
    case PointCloudFormat::kPcd:
      return parse_pcd(bytes, name, options, info);
    case PointCloudFormat::kXyz:
      return parse_xyz(bytes, name, options, info);
  }
  fail("{}: unknown point cloud format", name);
}

PointCloud read_point_cloud(const std::filesystem::path& path, const PointCloudReadOptions& options,
                            PointCloudReadInfo* info) {
  Buffer buffer = Buffer::map_file(path);
  return parse_point_cloud(buffer.bytes(), path.string(), options, info);
}

}  // namespace torchless::formats
