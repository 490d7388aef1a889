#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>

#include "test_support.h"
#include "torchless/core/byte_reader.h"
#include "torchless/core/error.h"
#include "torchless/formats/point_cloud.h"

namespace torchless::formats {
namespace {

std::span<const std::byte> as_bytes(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

std::string error_of(const std::string& bytes, const std::string& name = "t.ply") {
  try {
    parse_ply(as_bytes(bytes), name);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

template <typename T>
void put(std::string& out, T value, bool big_endian) {
  using U =
      std::conditional_t<sizeof(T) == 8, uint64_t,
                         std::conditional_t<sizeof(T) == 4, uint32_t,
                                            std::conditional_t<sizeof(T) == 2, uint16_t, uint8_t>>>;
  U bits = std::bit_cast<U>(value);
  if (big_endian) bits = byteswap(bits);
  char raw[sizeof(U)];
  std::memcpy(raw, &bits, sizeof(U));
  out.append(raw, sizeof(U));
}

PointCloud sample_cloud() {
  PointCloud c;
  c.positions = {0.1f, -2.5f, 3.25f, 1e-7f, 123456.78f, -0.0f, 7, 8, 9};
  c.normals = {0, 0, 1, 0.6f, 0.8f, 0, -1, 0, 0};
  c.colors = {255, 0, 10, 1, 2, 3, 128, 64, 32};
  c.attributes.push_back({"intensity", {0.5, 1e300, -42}});
  return c;
}

void expect_equal(const PointCloud& a, const PointCloud& b) {
  EXPECT_EQ(a.positions, b.positions);
  EXPECT_EQ(a.normals, b.normals);
  EXPECT_EQ(a.colors, b.colors);
  ASSERT_EQ(a.attributes.size(), b.attributes.size());
  for (size_t i = 0; i < a.attributes.size(); ++i) {
    EXPECT_EQ(a.attributes[i].name, b.attributes[i].name);
    EXPECT_EQ(a.attributes[i].values, b.attributes[i].values);
  }
}

TEST(Ply, RoundTripsAscii) {
  auto cloud = sample_cloud();
  auto text = to_ply(cloud, PlyEncoding::kAscii);
  PointCloudReadInfo info;
  expect_equal(parse_ply(as_bytes(text), "a.ply", {}, &info), cloud);
  EXPECT_EQ(info.encoding, "ascii");
}

TEST(Ply, RoundTripsBinaryLittleEndian) {
  auto cloud = sample_cloud();
  PointCloudReadInfo info;
  expect_equal(
      parse_ply(as_bytes(to_ply(cloud, PlyEncoding::kBinaryLittleEndian)), "b.ply", {}, &info),
      cloud);
  EXPECT_EQ(info.encoding, "binary_little_endian");
}

TEST(Ply, RoundTripsBinaryBigEndian) {
  auto cloud = sample_cloud();
  PointCloudReadInfo info;
  expect_equal(
      parse_ply(as_bytes(to_ply(cloud, PlyEncoding::kBinaryBigEndian)), "c.ply", {}, &info), cloud);
  EXPECT_EQ(info.encoding, "binary_big_endian");
}

TEST(Ply, WriteFileIsReadBackFromDisk) {
  auto dir = testing::temp_dir();
  auto cloud = sample_cloud();
  write_ply(dir / "w.ply", cloud, PlyEncoding::kBinaryLittleEndian);
  expect_equal(read_point_cloud(dir / "w.ply"), cloud);
}

// numpy (an independent reader) parses what we wrote: header by hand, data with frombuffer.
TEST(Ply, NumpyReadsBackBinaryLittleEndian) {
  auto dir = testing::temp_dir();
  auto cloud = sample_cloud();
  write_ply(dir / "w.ply", cloud, PlyEncoding::kBinaryLittleEndian);
  std::ofstream(dir / "read.py") << R"(
import sys, numpy as np
data = open(sys.argv[1], 'rb').read()
end = data.index(b'end_header\n') + len(b'end_header\n')
types = {'float': '<f4', 'uchar': 'u1', 'double': '<f8'}
props, n = [], 0
for line in data[:end].decode().splitlines():
    w = line.split()
    if w[:2] == ['element', 'vertex']: n = int(w[2])
    if w and w[0] == 'property': props.append((w[2], types[w[1]]))
assert data[:end].startswith(b'ply\nformat binary_little_endian 1.0\n')
rows = np.frombuffer(data, dtype=np.dtype(props), count=n, offset=end)
assert len(data) == end + rows.nbytes
for r in rows:
    print(' '.join(repr(float(r[name])) for name, _ in props))
)";
  std::string out;
  ASSERT_EQ(testing::run_command(testing::python() + " " + (dir / "read.py").string() + " " +
                                     (dir / "w.ply").string(),
                                 &out),
            0);
  std::istringstream lines(out);
  for (size_t i = 0; i < cloud.size(); ++i) {
    double v[10];
    for (double& x : v) lines >> x;
    ASSERT_TRUE(lines) << out;
    for (int d = 0; d < 3; ++d) EXPECT_EQ(static_cast<float>(v[d]), cloud.positions[3 * i + d]);
    for (int d = 0; d < 3; ++d) EXPECT_EQ(static_cast<float>(v[3 + d]), cloud.normals[3 * i + d]);
    for (int d = 0; d < 3; ++d) EXPECT_EQ(v[6 + d], cloud.colors[3 * i + d]);
    EXPECT_EQ(v[9], cloud.attributes[0].values[i]);
  }
}

// Every PLY scalar type under both of its names, in big-endian, with faces (lists) declared
// before and after the vertices.
TEST(Ply, ReadsEveryScalarTypeAndAliasBigEndian) {
  std::string f =
      "ply\nformat binary_big_endian 1.0\n"
      "element face 1\nproperty list uchar int vertex_indices\n"
      "element vertex 1\n"
      "property char a\nproperty int8 b\nproperty uchar c\nproperty uint8 d\n"
      "property short e\nproperty int16 f\nproperty ushort g\nproperty uint16 h\n"
      "property int i\nproperty int32 j\nproperty uint k\nproperty uint32 l\n"
      "property float32 m\nproperty float64 y\nproperty double z\nproperty float x\n"
      "element edge 1\nproperty list ushort uint32 ends\n"
      "end_header\n";
  const bool be = true;
  put<uint8_t>(f, 3, be);
  for (int32_t v : {7, 8, 9}) put(f, v, be);
  put<int8_t>(f, -5, be);
  put<int8_t>(f, 6, be);
  put<uint8_t>(f, 200, be);
  put<uint8_t>(f, 201, be);
  put<int16_t>(f, -300, be);
  put<int16_t>(f, 301, be);
  put<uint16_t>(f, 60000, be);
  put<uint16_t>(f, 60001, be);
  put<int32_t>(f, -70000, be);
  put<int32_t>(f, 70001, be);
  put<uint32_t>(f, 4000000000u, be);
  put<uint32_t>(f, 4000000001u, be);
  put<float>(f, 1.5f, be);
  put<double>(f, 2.25, be);
  put<double>(f, -3.125, be);
  put<float>(f, 0.5f, be);
  put<uint16_t>(f, 2, be);
  put<uint32_t>(f, 11, be);
  put<uint32_t>(f, 12, be);
  auto cloud = parse_ply(as_bytes(f), "types.ply");
  ASSERT_EQ(cloud.size(), 1u);
  EXPECT_EQ(cloud.positions, (std::vector<float>{0.5f, 2.25f, -3.125f}));
  std::vector<std::pair<std::string, double>> expected = {
      {"a", -5},  {"b", 6},       {"c", 200},   {"d", 201},    {"e", -300},
      {"f", 301}, {"g", 60000},   {"h", 60001}, {"i", -70000}, {"j", 70001},
      {"k", 4e9}, {"l", 4e9 + 1}, {"m", 1.5}};
  for (const auto& [name, value] : expected) {
    const auto* a = cloud.attribute(name);
    ASSERT_NE(a, nullptr) << name;
    EXPECT_EQ(a->values[0], value) << name;
  }
}

std::string with_faces_header(const char* format) {
  return std::string("ply\nformat ") + format +
         " 1.0\ncomment faces first\nelement face 2\nproperty list uchar int vertex_indices\n"
         "element vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
         "element face2 1\nproperty uchar flags\nproperty list int short idx\nend_header\n";
}

std::string faces_binary(bool be) {
  std::string f = with_faces_header(be ? "binary_big_endian" : "binary_little_endian");
  put<uint8_t>(f, 3, be);
  for (int32_t v : {0, 1, 2}) put(f, v, be);
  put<uint8_t>(f, 4, be);
  for (int32_t v : {0, 1, 2, 3}) put(f, v, be);
  for (float v : {1.f, 2.f, 3.f, 4.f, 5.f, 6.f}) put(f, v, be);
  put<uint8_t>(f, 9, be);
  put<int32_t>(f, 2, be);
  put<int16_t>(f, 1, be);
  put<int16_t>(f, 0, be);
  return f;
}

TEST(Ply, SkipsListElementsInAscii) {
  std::string f = with_faces_header("ascii") + "3 0 1 2\n4 0 1 2 3\n1 2 3\n4 5 6\n9 2 1 0\n";
  EXPECT_EQ(parse_ply(as_bytes(f), "f.ply").positions, (std::vector<float>{1, 2, 3, 4, 5, 6}));
}

TEST(Ply, SkipsListElementsInBinaryLittleEndian) {
  EXPECT_EQ(parse_ply(as_bytes(faces_binary(false)), "f.ply").positions,
            (std::vector<float>{1, 2, 3, 4, 5, 6}));
}

TEST(Ply, SkipsListElementsInBinaryBigEndian) {
  EXPECT_EQ(parse_ply(as_bytes(faces_binary(true)), "f.ply").positions,
            (std::vector<float>{1, 2, 3, 4, 5, 6}));
}

TEST(Ply, RejectsTruncatedListElement) {
  auto f = faces_binary(false);
  f.resize(f.size() - 2);
  auto message = error_of(f);
  EXPECT_NE(message.find("element 'face2' row 0"), std::string::npos) << message;
}

TEST(Ply, AcceptsCrlfHeaderCommentsAndObjInfo) {
  std::string f =
      "ply\r\nformat binary_little_endian 1.0\r\ncomment made on Windows\r\nobj_info scanner\r\n"
      "element vertex 1\r\nproperty float x\r\nproperty float y\r\nproperty float z\r\n"
      "end_header\r\n";
  for (float v : {1.f, 2.f, 3.f}) put(f, v, false);
  EXPECT_EQ(parse_ply(as_bytes(f), "crlf.ply").positions, (std::vector<float>{1, 2, 3}));
}

TEST(Ply, ReadsPositionsInAnyOrderAmongOtherProperties) {
  std::string f =
      "ply\nformat ascii 1.0\nelement vertex 2\nproperty uchar blue\nproperty double z\n"
      "property float nz\nproperty int label\nproperty double x\nproperty uchar red\n"
      "property float ny\nproperty double y\nproperty uchar green\nproperty float nx\n"
      "end_header\n"
      "3 0.1 1 7 10.5 1 0 20.25 2 0\n"
      "6 -1e3 0 8 11 4 1 21 5 0\n";
  auto c = parse_ply(as_bytes(f), "o.ply");
  EXPECT_EQ(c.positions, (std::vector<float>{10.5f, 20.25f, 0.1f, 11, 21, -1000}));
  EXPECT_EQ(c.normals, (std::vector<float>{0, 0, 1, 0, 1, 0}));
  EXPECT_EQ(c.colors, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6}));
  ASSERT_NE(c.attribute("label"), nullptr);
  EXPECT_EQ(c.attribute("label")->values, (std::vector<double>{7, 8}));
}

TEST(Ply, RejectsVertexCountLargerThanBinaryData) {
  std::string f =
      "ply\nformat binary_little_endian 1.0\nelement vertex 1000000000\nproperty float x\n"
      "property float y\nproperty float z\nend_header\n";
  const size_t data_at = f.size();
  for (float v : {1.f, 2.f, 3.f, 4.f, 5.f}) put(f, v, false);
  auto message = error_of(f, "short.ply");
  EXPECT_NE(message.find("short.ply: element 'vertex' row 1 of 1000000000"), std::string::npos)
      << message;
  EXPECT_NE(message.find(fmt::format("offset {}", data_at + 12)), std::string::npos) << message;
}

TEST(Ply, RejectsTruncatedAsciiVertex) {
  std::string f =
      "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
      "property float z\nend_header\n1 2 3\n4 5 6\n7 8\n";
  auto message = error_of(f);
  EXPECT_NE(message.find("element 'vertex' row 2 of 3"), std::string::npos) << message;
  EXPECT_NE(message.find("'z'"), std::string::npos) << message;
}

TEST(Ply, RejectsNonNumberInAscii) {
  std::string f =
      "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
      "property float z\nend_header\n1 two 3\n";
  EXPECT_NE(error_of(f).find("'two' is not a number"), std::string::npos) << error_of(f);
}

TEST(Ply, RejectsFileWithoutPlyMagic) {
  EXPECT_NE(error_of("plx\nformat ascii 1.0\nend_header\n").find("expected 'ply'"),
            std::string::npos);
}

TEST(Ply, RejectsHeaderWithoutEndHeader) {
  auto message = error_of("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n");
  EXPECT_NE(message.find("no 'end_header'"), std::string::npos) << message;
}

TEST(Ply, RejectsUnknownPropertyType) {
  auto message =
      error_of("ply\nformat ascii 1.0\nelement vertex 1\nproperty float128 x\nend_header\n");
  EXPECT_NE(message.find("unknown PLY type 'float128'"), std::string::npos) << message;
  EXPECT_NE(message.find("line 4"), std::string::npos) << message;
}

TEST(Ply, RejectsUnknownFormat) {
  auto message = error_of("ply\nformat binary_middle_endian 1.0\nend_header\n");
  EXPECT_NE(message.find("unknown PLY format"), std::string::npos) << message;
}

TEST(Ply, RejectsVertexWithoutPositions) {
  auto message = error_of(
      "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
      "end_header\n1 2\n");
  EXPECT_NE(message.find("lacks scalar properties x, y and z"), std::string::npos) << message;
}

TEST(Ply, RejectsColourOutOfRangeInAscii) {
  auto message = error_of(
      "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
      "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
      "end_header\n1 2 3 256 0 0\n");
  EXPECT_NE(message.find("not a valid integer"), std::string::npos) << message;
}

std::filesystem::path sample(const std::string& relative) {
  static const bool fetched = [] {
    return testing::run_command((testing::source_dir() / "scripts/fetch_samples.sh").string()) == 0;
  }();
  EXPECT_TRUE(fetched) << "scripts/fetch_samples.sh failed";
  return testing::source_dir() / "third_party/samples" / relative;
}

TEST(PlySamples, ReadsCgalBuildingAsciiWithNormals) {
  PointCloudReadInfo info;
  auto c = read_point_cloud(sample("cgal/building.ply"), {}, &info);
  EXPECT_EQ(info.encoding, "ascii");
  ASSERT_EQ(c.size(), 100000u);
  ASSERT_TRUE(c.has_normals());
  EXPECT_FALSE(c.has_colors());
  // First data line of the file: "8.19821 -21.7553 7.88123 0 0 1 16".
  EXPECT_EQ(c.positions[0], 8.19821f);
  EXPECT_EQ(c.positions[1], -21.7553f);
  EXPECT_EQ(c.positions[2], 7.88123f);
  EXPECT_EQ(c.normals[2], 1.0f);
  ASSERT_NE(c.attribute("segment_index"), nullptr);
  EXPECT_EQ(c.attribute("segment_index")->values[0], 16);
}

TEST(PlySamples, ReadsDracoBunnyBinaryLittleEndianWithFaces) {
  PointCloudReadInfo info;
  auto c = read_point_cloud(sample("bunny.ply"), {}, &info);
  EXPECT_EQ(info.encoding, "binary_little_endian");
  EXPECT_EQ(c.size(), 34834u);
  auto box = c.bounds();
  // The Stanford bunny is about 0.16 units wide.
  EXPECT_GT(box.largest_extent(), 0.1f);
  EXPECT_LT(box.largest_extent(), 0.3f);
}

}  // namespace
}  // namespace torchless::formats
