// XYZ text: one point per line, "x y z" or "x y z nx ny nz", whitespace-separated. Blank lines
// and lines starting with '#' are skipped. Every data line must have the column count of the
// first one, so a truncated or mixed file is reported at the line where it goes wrong.
#include <string_view>

#include "formats/pointcloud/text_scanner.h"
#include "torchless/core/error.h"
#include "torchless/formats/point_cloud.h"

namespace torchless::formats {

PointCloud parse_xyz(std::span<const std::byte> bytes, const std::string& name,
                     const PointCloudReadOptions& options, PointCloudReadInfo* info) {
  (void)options;
  std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  PointCloud cloud;
  size_t columns = 0;
  size_t pos = 0, line_number = 0;
  uint64_t lines = 0;
  double row[6];
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    const size_t line_offset = pos;
    pos = eol + 1;
    ++line_number;
    size_t i = 0;
    while (i < line.size() && detail::is_space(line[i])) ++i;
    if (i == line.size() || line[i] == '#') continue;
    size_t found = 0;
    while (i < line.size()) {
      size_t b = i;
      while (i < line.size() && !detail::is_space(line[i])) ++i;
      std::string_view token = line.substr(b, i - b);
      if (found == 6) {
        fail("{}: line {} (offset {}): more than 6 values; XYZ lines hold x y z [nx ny nz]", name,
             line_number, line_offset);
      }
      if (!detail::parse_double(token, row[found])) {
        fail("{}: line {} (offset {}): '{}' is not a number", name, line_number, line_offset + b,
             token.substr(0, 40));
      }
      ++found;
      while (i < line.size() && detail::is_space(line[i])) ++i;
    }
    if (columns == 0) {
      if (found != 3 && found != 6) {
        fail("{}: line {} (offset {}): {} values; XYZ lines hold x y z [nx ny nz]", name,
             line_number, line_offset, found);
      }
      columns = found;
    } else if (found != columns) {
      fail("{}: line {} (offset {}): {} values where earlier lines have {}", name, line_number,
           line_offset, found, columns);
    }
    ++lines;
    for (int d = 0; d < 3; ++d) cloud.positions.push_back(static_cast<float>(row[d]));
    if (columns == 6) {
      for (int d = 3; d < 6; ++d) cloud.normals.push_back(static_cast<float>(row[d]));
    }
  }
  if (info != nullptr) {
    info->format = PointCloudFormat::kXyz;
    info->encoding = "ascii";
    info->declared_points = lines;
    info->dropped_nan_points = 0;
    info->width = lines;
    info->height = 1;
  }
  return cloud;
}

}  // namespace torchless::formats
