#include "torchless/formats/npy.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "test_support.h"
#include "torchless/core/error.h"

namespace torchless::formats {
namespace {

using torchless::testing::error_of;
using torchless::testing::read_text;

using torchless::testing::fixture;
using torchless::testing::python;
using torchless::testing::read_json;
using torchless::testing::run_command;
using torchless::testing::temp_dir;

std::string bytes_text(const std::vector<std::byte>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// An .npy file with the given version, header text and data.
Buffer npy_with(std::string_view header, std::string_view data, int major = 1) {
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  for (int i = 0; i < (major == 1 ? 2 : 4); ++i) {
    out += static_cast<char>(header.size() >> (8 * i));
  }
  out += header;
  out += data;
  return Buffer::copy_of(out);
}

void expect_matches_numpy(const NpyArray& array, const std::string& stem) {
  SCOPED_TRACE(stem);
  auto facts = read_json(fixture("containers", stem + ".json"));
  EXPECT_EQ(dtype_name(array.tensor.dtype()), facts["dtype"].get<std::string>());
  EXPECT_EQ(array.tensor.shape(), facts["shape"].get<Shape>());
  EXPECT_EQ(bytes_text(array.tensor.to_bytes()),
            read_text(fixture("containers", stem + ".expected")));
}

TEST(Npy, ReadsEveryDTypeAndLayoutNumpyWrites) {
  for (std::string name :
       {"f4", "f8_fortran", "f2", "i2_big_endian", "f8_big_endian_fortran", "i8", "u8", "u2", "u4",
        "i4", "i1", "u1", "bool", "c8", "c16", "scalar", "empty", "v2", "v3"}) {
    expect_matches_numpy(load_npy(fixture("containers", name + ".npy")), name + ".npy");
  }
}

TEST(Npy, GivesFortranOrderArraysColumnMajorStridesWithoutCopying) {
  auto array = load_npy(fixture("containers", "f8_fortran.npy"));
  EXPECT_TRUE(array.fortran_order);
  EXPECT_EQ(array.tensor.shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(array.tensor.strides(), (std::vector<int64_t>{1, 4, 12}));
  EXPECT_TRUE(array.tensor.storage().is_mapped());
}

TEST(Npy, ConvertsBigEndianDataToNative) {
  auto array = load_npy(fixture("containers", "i2_big_endian.npy"));
  EXPECT_EQ(array.descr, ">i2");
  EXPECT_TRUE(array.byteswapped);
  EXPECT_EQ(array.tensor.to_vector<int16_t>(),
            (std::vector<int16_t>{-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6}));
}

TEST(Npy, ReadsVersion2And3Headers) {
  EXPECT_EQ(load_npy(fixture("containers", "v2.npy")).major_version, 2);
  EXPECT_EQ(load_npy(fixture("containers", "v3.npy")).major_version, 3);
}

TEST(Npy, RefusesObjectArrays) {
  auto message = error_of<UnsupportedError>([&] { load_npy(fixture("containers", "object.npy")); });
  EXPECT_NE(message.find("object arrays ('|O') hold pickled Python objects"), std::string::npos)
      << message;
}

TEST(Npy, RejectsBadMagic) {
  auto message = error_of([&] { read_npy(Buffer::copy_of(std::string("PK\x03\x04....")), "x"); });
  EXPECT_NE(message.find("x: not an .npy file"), std::string::npos) << message;
}

TEST(Npy, RejectsHeaderLengthPastTheEndOfFile) {
  std::string data("\x93NUMPY\x01\x00\xff\x00{'descr'", 18);
  auto message = error_of([&] { read_npy(Buffer::copy_of(data), "x.npy"); });
  EXPECT_NE(message.find("header length 255 runs past the end of the file (8 bytes left)"),
            std::string::npos)
      << message;
}

TEST(Npy, RejectsHeaderLongerThanTheLimit) {
  std::string data("\x93NUMPY\x02\x00\x00\x00\x00\x40", 12);  // 1 GiB header
  auto message = error_of<LimitError>([&] { read_npy(Buffer::copy_of(data), "x.npy"); });
  EXPECT_NE(message.find("header length 1073741824 exceeds the limit"), std::string::npos)
      << message;
}

TEST(Npy, RejectsDataShorterThanTheShape) {
  auto message = error_of([&] {
    read_npy(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n",
                      std::string(20, '\0')),
             "x.npy");
  });
  EXPECT_NE(message.find("<f4 [2, 3] needs 24 bytes of data after the 70-byte header, found 20"),
            std::string::npos)
      << message;
}

TEST(Npy, RejectsMalformedHeaders) {
  auto unterminated =
      error_of([&] { read_npy(npy_with("{'descr': '<f4, 'shape': (1,)", ""), "x.npy"); });
  EXPECT_NE(unterminated.find("x.npy: header at character"), std::string::npos) << unterminated;
  auto extra_key = error_of([&] {
    read_npy(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}", "abcd"),
             "x.npy");
  });
  EXPECT_NE(extra_key.find("unexpected header key 'x'"), std::string::npos) << extra_key;
  auto code =
      error_of([&] { read_npy(npy_with("{'descr': __import__('os').system('x')}", ""), "x.npy"); });
  EXPECT_NE(code.find("unexpected character '_'"), std::string::npos) << code;
}

TEST(Npy, RefusesStructuredAndStringDTypes) {
  EXPECT_THROW(read_npy(npy_with("{'descr': [('a', '<f4')], 'fortran_order': False, "
                                 "'shape': (1,), }",
                                 "abcd"),
                        "x.npy"),
               UnsupportedError);
  EXPECT_THROW(read_npy(npy_with("{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }",
                                 std::string(12, 'a')),
                        "x.npy"),
               UnsupportedError);
}

TEST(Npz, ReadsArchivesFromSavezAndSavezCompressed) {
  for (std::string file : {"arrays.npz", "arrays_compressed.npz"}) {
    SCOPED_TRACE(file);
    auto npz = NpzArchive::open(fixture("containers", file));
    EXPECT_EQ(npz.names(), (std::vector<std::string>{"weights", "counts", "flags"}));
    for (const auto& name : npz.names()) expect_matches_numpy(npz.read(name), "npz." + name);
  }
  auto compressed = NpzArchive::open(fixture("containers", "arrays_compressed.npz"));
  EXPECT_EQ(compressed.zip().at("weights.npy").method, ZipEntry::kDeflated);
}

TEST(Npz, NamesTheArchiveAndArrayInErrors) {
  auto npz = NpzArchive::open(fixture("containers", "arrays.npz"));
  auto message = error_of([&] { npz.read("missing"); });
  EXPECT_NE(message.find("arrays.npz: no array named 'missing'"), std::string::npos) << message;
}

TEST(NpyWriter, RefusesDTypesNumpyLacks) {
  EXPECT_THROW(npy_to_bytes(Tensor::zeros(DType::kBFloat16, {2})), UnsupportedError);
}

// numpy must read back what the writer produces: values, dtype and shape.
TEST(NpyWriter, OutputIsReadByNumpy) {
  auto dir = temp_dir();
  auto base = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto transposed = Tensor::view(base.storage(), DType::kFloat32, {3, 2}, {1, 3});
  save_npy(dir / "transposed.npy", transposed);
  save_npy(dir / "scalar.npy", Tensor::from_vector<int64_t>({-42}, {}));
  save_npy(
      dir / "flags.npy",
      Tensor::contiguous_view(Buffer::copy_of(std::string("\x01\x00\x01", 3)), DType::kBool, {3}));
  save_npy(dir / "empty.npy", Tensor::zeros(DType::kFloat32, {0, 3}));
  save_npz(dir / "both.npz", {{"transposed", transposed},
                              {"halves", Tensor::from_vector<uint16_t>({0x3c00, 0xc000}, {2})}});
  auto script = dir / "check.py";
  std::ofstream(script) << R"(import json, sys, numpy as np
d = sys.argv[1]
out = {}
for name in ['transposed', 'scalar', 'flags', 'empty']:
    a = np.load(d + '/' + name + '.npy')
    out[name] = [a.dtype.str, list(a.shape), a.ravel().tolist()]
with np.load(d + '/both.npz') as z:
    out['npz'] = sorted(z.files)
    out['npz.transposed'] = z['transposed'].tolist()
print(json.dumps(out))
)";
  std::string output;
  ASSERT_EQ(run_command(python() + " " + script.string() + " " + dir.string(), &output), 0)
      << output;
  auto seen = nlohmann::json::parse(output);
  EXPECT_EQ(seen["transposed"], nlohmann::json::parse(R"(["<f4", [3, 2], [1, 4, 2, 5, 3, 6]])"));
  EXPECT_EQ(seen["scalar"], nlohmann::json::parse(R"(["<i8", [], [-42]])"));
  EXPECT_EQ(seen["flags"], nlohmann::json::parse(R"(["|b1", [3], [true, false, true]])"));
  EXPECT_EQ(seen["empty"], nlohmann::json::parse(R"(["<f4", [0, 3], []])"));
  EXPECT_EQ(seen["npz"], nlohmann::json::parse(R"(["halves", "transposed"])"));
  EXPECT_EQ(seen["npz.transposed"], nlohmann::json::parse("[[1, 4], [2, 5], [3, 6]]"));
}

TEST(NpyWriter, RoundTripsThroughTheReader) {
  auto t = Tensor::from_vector<double>({1.5, -2.5, 3.25}, {3, 1});
  auto array = read_npy(Buffer::adopt(npy_to_bytes(t)), "round-trip");
  EXPECT_EQ(array.descr, "<f8");
  EXPECT_EQ(array.tensor.shape(), (Shape{3, 1}));
  EXPECT_EQ(array.tensor.to_vector<double>(), (std::vector<double>{1.5, -2.5, 3.25}));
}

}  // namespace
}  // namespace torchless::formats
