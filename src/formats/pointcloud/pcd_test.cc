#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <string>

#include "test_support.h"
#include "torchless/core/error.h"
#include "torchless/formats/point_cloud.h"

namespace torchless::formats {
namespace {

std::span<const std::byte> as_bytes(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

std::string error_of(const std::string& bytes, const std::string& name = "t.pcd") {
  try {
    parse_point_cloud(as_bytes(bytes), name);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

template <typename T>
void put(std::string& out, T value) {
  char raw[sizeof(T)];
  std::memcpy(raw, &value, sizeof(T));
  out.append(raw, sizeof(T));
}

// An LZF stream of literal runs only (valid LZF: control byte n-1, then n <= 32 bytes).
std::string lzf_literals(const std::string& raw) {
  std::string out;
  for (size_t i = 0; i < raw.size(); i += 32) {
    size_t n = std::min<size_t>(32, raw.size() - i);
    out.push_back(static_cast<char>(n - 1));
    out.append(raw, i, n);
  }
  return out;
}

std::filesystem::path sample(const std::string& relative) {
  static const bool fetched = [] {
    return testing::run_command((testing::source_dir() / "scripts/fetch_samples.sh").string()) == 0;
  }();
  EXPECT_TRUE(fetched) << "scripts/fetch_samples.sh failed";
  return testing::source_dir() / "third_party/samples" / relative;
}

TEST(Lzf, DecodesLiteralsAndOverlappingBackReference) {
  // "abc" as a literal run, then a back reference of length 6 at distance 3:
  // ctrl = (6 - 2) << 5 | ((3 - 1) >> 8), next byte (3 - 1) & 0xff.
  std::vector<uint8_t> stream = {2, 'a', 'b', 'c', 0x80, 2};
  auto out = lzf_decompress(stream, 9, "test");
  EXPECT_EQ(std::string(out.begin(), out.end()), "abcabcabc");
}

TEST(Lzf, DecodesLongBackReference) {
  // Length 7 + 1 + 2 = 10 bytes at distance 1 (run of one byte): ctrl 0xE0, extra 1, offset 0.
  std::vector<uint8_t> stream = {0, 'z', 0xE0, 1, 0};
  auto out = lzf_decompress(stream, 11, "test");
  EXPECT_EQ(std::string(out.begin(), out.end()), std::string(11, 'z'));
}

TEST(Lzf, RejectsBackReferenceBeforeStart) {
  std::vector<uint8_t> stream = {0, 'a', 0x20, 5};
  try {
    lzf_decompress(stream, 4, "corrupt.pcd");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("before the start of the output"), std::string::npos)
        << e.what();
  }
}

TEST(Lzf, RejectsOutputLongerThanDeclared) {
  std::vector<uint8_t> stream = {3, 'a', 'b', 'c', 'd'};
  EXPECT_THROW(lzf_decompress(stream, 3, "t"), Error);
}

TEST(Lzf, RejectsOutputShorterThanDeclared) {
  std::vector<uint8_t> stream = {3, 'a', 'b', 'c', 'd'};
  EXPECT_THROW(lzf_decompress(stream, 5, "t"), Error);
}

TEST(Lzf, RejectsLiteralRunPastEndOfInput) {
  std::vector<uint8_t> stream = {9, 'a', 'b'};
  EXPECT_THROW(lzf_decompress(stream, 10, "t"), Error);
}

const char* kHeader2 =
    "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z rgb _ label\n"
    "SIZE 4 4 4 4 1 2\nTYPE F F F F U U\nCOUNT 1 1 1 1 1 1\nWIDTH 2\nHEIGHT 1\n"
    "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\n";

uint32_t rgb(uint8_t r, uint8_t g, uint8_t b) {
  return (uint32_t{r} << 16) | (g << 8) | b;
}

void expect_two_points(const PointCloud& c) {
  EXPECT_EQ(c.positions, (std::vector<float>{1, 2, 3, -4, 5.5f, 6}));
  EXPECT_EQ(c.colors, (std::vector<uint8_t>{10, 20, 30, 200, 100, 50}));
  ASSERT_EQ(c.attributes.size(), 1u);  // "_" padding is not an attribute
  EXPECT_EQ(c.attributes[0].name, "label");
  EXPECT_EQ(c.attributes[0].values, (std::vector<double>{7, 65535}));
}

TEST(Pcd, ReadsBinaryArrayOfStructures) {
  std::string f = std::string(kHeader2) + "DATA binary\n";
  float xyz[2][3] = {{1, 2, 3}, {-4, 5.5f, 6}};
  uint32_t colors[2] = {rgb(10, 20, 30), rgb(200, 100, 50)};
  uint16_t labels[2] = {7, 65535};
  for (int i = 0; i < 2; ++i) {
    for (float v : xyz[i]) put(f, v);
    put(f, colors[i]);
    put<uint8_t>(f, 0xEE);
    put(f, labels[i]);
  }
  PointCloudReadInfo info;
  auto c = parse_pcd(as_bytes(f), "b.pcd", {}, &info);
  EXPECT_EQ(info.encoding, "binary");
  expect_two_points(c);
}

TEST(Pcd, ReadsBinaryCompressedFieldMajor) {
  // After decompression: all x, all y, all z, all rgb, all padding, all labels.
  std::string raw;
  for (float v : {1.f, -4.f}) put(raw, v);
  for (float v : {2.f, 5.5f}) put(raw, v);
  for (float v : {3.f, 6.f}) put(raw, v);
  put(raw, rgb(10, 20, 30));
  put(raw, rgb(200, 100, 50));
  raw += "\xEE\xEE";
  put<uint16_t>(raw, 7);
  put<uint16_t>(raw, 65535);
  std::string compressed = lzf_literals(raw);
  std::string f = std::string(kHeader2) + "DATA binary_compressed\n";
  put(f, static_cast<uint32_t>(compressed.size()));
  put(f, static_cast<uint32_t>(raw.size()));
  f += compressed;
  PointCloudReadInfo info;
  auto c = parse_pcd(as_bytes(f), "c.pcd", {}, &info);
  EXPECT_EQ(info.encoding, "binary_compressed");
  expect_two_points(c);
}

TEST(Pcd, ReadsAsciiWithPackedFloatRgb) {
  float packed1 = std::bit_cast<float>(rgb(10, 20, 30));
  float packed2 = std::bit_cast<float>(rgb(200, 100, 50));
  std::string f = std::string(kHeader2) + "DATA ascii\n" +
                  fmt::format("1 2 3 {:.9g} 0 7\n-4 5.5 6 {:.9g} 0 65535\n", packed1, packed2);
  expect_two_points(parse_pcd(as_bytes(f), "a.pcd"));
}

const char* kOrganised =
    "VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 2\nHEIGHT 2\n"
    "POINTS 4\nDATA ascii\n1 2 3\nnan nan nan\n4 5 6\nnan nan nan\n";

TEST(Pcd, DropsNanPointsOfOrganisedCloudAndCountsThem) {
  PointCloudReadInfo info;
  auto c = parse_pcd(as_bytes(kOrganised), "o.pcd", {}, &info);
  EXPECT_EQ(c.positions, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(info.dropped_nan_points, 2u);
  EXPECT_EQ(info.height, 2u);
}

TEST(Pcd, KeepsNanPointsWhenAsked) {
  PointCloudReadOptions options;
  options.keep_nan_points = true;
  PointCloudReadInfo info;
  auto c = parse_pcd(as_bytes(kOrganised), "o.pcd", options, &info);
  ASSERT_EQ(c.size(), 4u);
  EXPECT_TRUE(std::isnan(c.positions[3]));
  EXPECT_EQ(info.dropped_nan_points, 0u);
}

TEST(Pcd, ReadsOldHeaderWithoutTypeAndCount) {
  std::string f = "FIELDS x y z\nSIZE 4 4 4\nWIDTH 1\nHEIGHT 1\nPOINTS 1\nDATA ascii\n1 2 3\n";
  EXPECT_EQ(parse_pcd(as_bytes(f), "old.pcd").positions, (std::vector<float>{1, 2, 3}));
}

TEST(Pcd, RejectsBinaryDataShorterThanDeclaredPoints) {
  std::string f =
      "VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1000000\nHEIGHT 1\n"
      "POINTS 1000000\nDATA binary\n";
  for (float v : {1.f, 2.f, 3.f, 4.f}) put(f, v);
  auto message = error_of(f, "short.pcd");
  EXPECT_NE(message.find("short.pcd: PCD binary data"), std::string::npos) << message;
  EXPECT_NE(message.find("point 1 is the first incomplete one"), std::string::npos) << message;
}

TEST(Pcd, RejectsCorruptedLzfPayload) {
  std::string f =
      "VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\nHEIGHT 1\n"
      "POINTS 1\nDATA binary_compressed\n";
  // A one-byte literal 'A', then a reference (31 << 8) + 0x10 + 1 bytes back.
  const std::string stream("\x00\x41\x3F\x10", 4);
  put<uint32_t>(f, 4);
  put<uint32_t>(f, 12);
  f += stream;
  auto message = error_of(f, "bad.pcd");
  EXPECT_NE(message.find("bad.pcd: PCD binary_compressed data: LZF back reference"),
            std::string::npos)
      << message;
}

TEST(Pcd, RejectsUncompressedSizeThatDisagreesWithHeader) {
  std::string f =
      "VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\nHEIGHT 1\n"
      "POINTS 1\nDATA binary_compressed\n";
  put<uint32_t>(f, 1);
  put<uint32_t>(f, 4000000000u);
  f += "x";
  auto message = error_of(f);
  EXPECT_NE(message.find("declares 4000000000 uncompressed bytes"), std::string::npos) << message;
}

TEST(Pcd, RejectsMismatchedFieldAndSizeCounts) {
  auto message = error_of("FIELDS x y z\nSIZE 4 4\nPOINTS 0\nDATA ascii\n");
  EXPECT_NE(message.find("3 FIELDS but 2 SIZEs"), std::string::npos) << message;
}

TEST(Pcd, RejectsUnknownDataEncoding) {
  auto message = error_of("FIELDS x y z\nSIZE 4 4 4\nPOINTS 0\nDATA zip\n");
  EXPECT_NE(message.find("unknown DATA encoding 'zip'"), std::string::npos) << message;
}

TEST(Pcd, RejectsTruncatedAscii) {
  auto message = error_of("FIELDS x y z\nSIZE 4 4 4\nPOINTS 2\nDATA ascii\n1 2 3\n4 5\n");
  EXPECT_NE(message.find("point 1 of 2"), std::string::npos) << message;
}

TEST(Pcd, RejectsNonIntegerInIntegerAsciiField) {
  auto message = error_of(
      "FIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nPOINTS 1\nDATA ascii\n"
      "1 2 3 nan\n");
  EXPECT_NE(message.find("field 'rgb' at offset"), std::string::npos) << message;
  EXPECT_NE(message.find("'nan' is not a U4 integer"), std::string::npos) << message;
}

TEST(PcdSamples, ReadsTableSceneBinaryCompressed) {
  PointCloudReadInfo info;
  auto c = read_point_cloud(sample("pcl/table_scene_lms400.pcd"), {}, &info);
  EXPECT_EQ(info.encoding, "binary_compressed");
  EXPECT_EQ(info.declared_points, 460400u);
  EXPECT_EQ(c.size() + info.dropped_nan_points, 460400u);
  EXPECT_EQ(c.size(), 460400u);
  ASSERT_NE(c.attribute("intensity"), nullptr);
  ASSERT_NE(c.attribute("distance"), nullptr);
  ASSERT_NE(c.attribute("sid"), nullptr);
  // A table-top scan at close range: metres, a couple of metres across.
  auto box = c.bounds();
  EXPECT_GT(box.largest_extent(), 0.5f);
  EXPECT_LT(box.largest_extent(), 10.0f);
}

TEST(PcdSamples, ReadsLamppostAscii) {
  PointCloudReadInfo info;
  auto c = read_point_cloud(sample("pcl/lamppost.pcd"), {}, &info);
  EXPECT_EQ(info.encoding, "ascii");
  EXPECT_EQ(c.size(), 1771u);
}

TEST(PcdSamples, ReadsMilkBinaryCompressedWithColours) {
  PointCloudReadInfo info;
  auto c = read_point_cloud(sample("pcl/milk.pcd"), {}, &info);
  EXPECT_EQ(info.encoding, "binary_compressed");
  EXPECT_EQ(c.size(), 12575u);
  EXPECT_TRUE(c.has_colors());
}

TEST(XyzSamples, ReadsKittenWithNormals) {
  PointCloudReadInfo info;
  auto c = read_point_cloud(sample("cgal/kitten.xyz"), {}, &info);
  ASSERT_EQ(c.size(), 5210u);
  ASSERT_TRUE(c.has_normals());
  // First line: "-0.0721898 -0.159749 -0.108444 0.340472 0.937712 -0.0690972".
  EXPECT_EQ(c.positions[0], -0.0721898f);
  EXPECT_EQ(c.normals[2], -0.0690972f);
}

TEST(Xyz, SkipsCommentsAndBlankLines) {
  std::string f = "# a comment\n\n1 2 3\n  # indented comment\n4 5 6\n";
  EXPECT_EQ(parse_xyz(as_bytes(f), "c.xyz").positions, (std::vector<float>{1, 2, 3, 4, 5, 6}));
}

TEST(Xyz, RejectsLineWithDifferentColumnCount) {
  std::string f = "1 2 3 0 0 1\n4 5 6\n";
  try {
    parse_xyz(as_bytes(f), "m.xyz");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m.xyz: line 2"), std::string::npos) << e.what();
  }
}

TEST(Sniff, ReadsByContentWhateverTheExtension) {
  std::string ply =
      "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
      "property float z\nend_header\n1 2 3\n";
  EXPECT_EQ(sniff_point_cloud_format(as_bytes(ply), "cloud.xyz"), PointCloudFormat::kPly);
  EXPECT_EQ(sniff_point_cloud_format(as_bytes(kOrganised), "cloud.bin"), PointCloudFormat::kPcd);
  EXPECT_EQ(sniff_point_cloud_format(as_bytes(std::string("1 2 3\n")), "noext"),
            PointCloudFormat::kXyz);
  EXPECT_EQ(parse_point_cloud(as_bytes(ply), "cloud.xyz").positions, (std::vector<float>{1, 2, 3}));
}

TEST(Sniff, RejectsUnknownContent) {
  EXPECT_NE(error_of("\x89PNG\r\n", "image.png").find("not a point cloud file"), std::string::npos);
}

}  // namespace
}  // namespace torchless::formats
