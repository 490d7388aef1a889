#include "torchless/formats/safetensors.h"

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

// A file with `header` as its JSON text and `data_size` bytes of buffer.
Buffer file_with(std::string_view header, size_t data_size, std::optional<uint64_t> length = {}) {
  std::string out(8, '\0');
  uint64_t n = length.value_or(header.size());
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  out += header;
  out += std::string(data_size, '\x01');
  return Buffer::copy_of(out);
}

std::string parse_error(std::string_view header, size_t data_size) {
  return error_of([&] { SafetensorsFile::parse(file_with(header, data_size), "bad.safetensors"); });
}

TEST(SafetensorsFile, ReadsEveryDTypeOfAFileWrittenFromTheSpecification) {
  auto file = SafetensorsFile::open(fixture("containers", "reference.safetensors"));
  auto expected = read_json(fixture("containers", "reference.safetensors.json"));
  ASSERT_EQ(file.tensors().size(), expected["tensors"].size());
  for (const auto& [name, facts] : expected["tensors"].items()) {
    SCOPED_TRACE(name);
    const Tensor& t = file.at(name);
    EXPECT_EQ(t.shape(), facts["shape"].get<Shape>());
    EXPECT_EQ(t.to_double_vector(), facts["values"].get<std::vector<double>>());
  }
  EXPECT_EQ(file.metadata(), (expected["metadata"].get<std::map<std::string, std::string>>()));
  EXPECT_EQ(file.at("bfloat16").dtype(), DType::kBFloat16);
  EXPECT_EQ(file.at("uint16").dtype(), DType::kUInt16);
}

TEST(SafetensorsFile, HandsOutViewsIntoTheMappedFile) {
  auto path = fixture("containers", "reference.safetensors");
  auto file = SafetensorsFile::open(path);
  const Tensor& t = file.at("float32");
  EXPECT_TRUE(t.storage().is_mapped());
  const SafetensorsTensor* info = file.find("float32");
  ASSERT_NE(info, nullptr);
  auto raw = read_text(path);
  EXPECT_EQ(std::memcmp(t.raw_data(), raw.data() + 8 + file.header_size() + info->begin, 48), 0);
}

TEST(SafetensorsFile, RejectsHeaderLengthPastTheEndOfFile) {
  auto message =
      error_of([&] { SafetensorsFile::parse(file_with("{}", 0, 1000), "bad.safetensors"); });
  EXPECT_NE(message.find("header length 1000 runs past the end of the file (2 bytes"),
            std::string::npos)
      << message;
}

TEST(SafetensorsFile, RejectsHeaderLongerThanTheFormatAllows) {
  auto message = error_of<LimitError>(
      [&] { SafetensorsFile::parse(file_with("{}", 0, 200'000'000), "bad.safetensors"); });
  EXPECT_NE(message.find("exceeds the format's limit of 100000000 bytes"), std::string::npos)
      << message;
}

TEST(SafetensorsFile, RejectsTruncatedLength) {
  auto message =
      error_of([&] { SafetensorsFile::parse(Buffer::copy_of(std::string("abc")), "x"); });
  EXPECT_NE(message.find("fewer than the 8-byte header length"), std::string::npos) << message;
}

TEST(SafetensorsFile, RejectsHeaderThatIsNotJson) {
  auto message = parse_error("{\"a\": {\"dtype\": \"F32\",", 0);
  EXPECT_NE(message.find("header is not valid JSON"), std::string::npos) << message;
}

// nlohmann reports a number too large for any JSON number type as out_of_range, not as a
// parse_error (found by the fuzzer); it must still be an Error, not an escaping exception.
TEST(SafetensorsFile, RejectsNumbersTooLargeForJson) {
  auto message =
      parse_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1e999], \"data_offsets\": [0, 4]}}", 4);
  EXPECT_NE(message.find("header is not valid JSON"), std::string::npos) << message;
}

TEST(SafetensorsFile, RejectsHeaderNotStartingWithABrace) {
  auto message = parse_error("[1, 2]", 0);
  EXPECT_NE(message.find("header must start with '{'"), std::string::npos) << message;
}

TEST(SafetensorsFile, RejectsOffsetsOutsideTheBuffer) {
  auto message = parse_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4);
  EXPECT_NE(message.find("tensor 'a': data_offsets [0, 8] outside the 4-byte data buffer"),
            std::string::npos)
      << message;
}

TEST(SafetensorsFile, RejectsOverlappingTensors) {
  auto message = parse_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                                 "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                             12);
  EXPECT_NE(message.find("tensor 'b' starts at byte 4 of the data buffer, expected 8 (it overlaps"),
            std::string::npos)
      << message;
}

TEST(SafetensorsFile, RejectsHolesInTheBuffer) {
  auto message = parse_error(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},
                                 "b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})",
                             8);
  EXPECT_NE(message.find("there is a hole before it"), std::string::npos) << message;
}

TEST(SafetensorsFile, RejectsBytesAfterTheLastTensor) {
  auto message = parse_error(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 10);
  EXPECT_NE(message.find("tensors cover 2 bytes but the data buffer holds 10"), std::string::npos)
      << message;
}

TEST(SafetensorsFile, RejectsShapeThatDoesNotMatchTheByteLength) {
  auto message = parse_error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  EXPECT_NE(message.find("tensor 'a': F32 [3] needs 12 bytes, data_offsets [0, 8] give 8"),
            std::string::npos)
      << message;
}

TEST(SafetensorsFile, RejectsDuplicateNames) {
  auto message = parse_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},
                                 "a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                             2);
  EXPECT_NE(message.find("header has the key 'a' twice"), std::string::npos) << message;
}

TEST(SafetensorsFile, RejectsDeeplyNestedHeaders) {
  std::string header = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  auto message = parse_error(header, 0);
  EXPECT_NE(message.find("header nests deeper than 8 levels"), std::string::npos) << message;
}

TEST(SafetensorsFile, RejectsNonStringMetadata) {
  auto message = parse_error(R"({"__metadata__":{"epoch":3}})", 0);
  EXPECT_NE(message.find("__metadata__['epoch'] must be a string, found 3"), std::string::npos)
      << message;
}

TEST(SafetensorsFile, RejectsUnknownDTypesAndNegativeDimensions) {
  auto unknown = error_of<UnsupportedError>([&] {
    SafetensorsFile::parse(file_with(R"({"a":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}})", 1),
                           "x");
  });
  EXPECT_NE(unknown.find("dtype 'F4' is not supported"), std::string::npos) << unknown;
  auto negative = parse_error(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1);
  EXPECT_NE(negative.find("expected a non-negative integer, found -1"), std::string::npos)
      << negative;
}

TEST(SafetensorsWriter, RoundTripsStridedAndSharedTensors) {
  auto base = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto transposed = Tensor::view(base.storage(), DType::kFloat32, {3, 2}, {1, 3});
  NamedTensors tensors = {{"base", base},
                          {"transposed", transposed},
                          {"ints", Tensor::from_vector<int64_t>({7, -8}, {2})},
                          {"scalar", Tensor::from_vector<double>({0.5}, {})}};
  auto bytes = safetensors_to_bytes(tensors, {{"format", "pt"}});
  auto file = SafetensorsFile::parse(Buffer::adopt(std::move(bytes)), "round-trip");
  EXPECT_EQ(file.at("transposed").to_vector<float>(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(file.at("base").to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(file.at("ints").to_vector<int64_t>(), (std::vector<int64_t>{7, -8}));
  EXPECT_EQ(file.at("scalar").shape(), Shape{});
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.header_size() % 8, 0u);
}

TEST(SafetensorsWriter, RefusesDTypesSafetensorsCannotRepresent) {
  auto c128 = Tensor::zeros(DType::kComplex128, {2});
  auto message = error_of<UnsupportedError>([&] { safetensors_to_bytes({{"z", c128}}); });
  EXPECT_NE(message.find("tensor 'z' has dtype complex128"), std::string::npos) << message;
}

TEST(SafetensorsWriter, RefusesDuplicateAndReservedNames) {
  auto t = Tensor::zeros(DType::kUInt8, {1});
  EXPECT_THROW(safetensors_to_bytes({{"a", t}, {"a", t}}), Error);
  EXPECT_THROW(safetensors_to_bytes({{"__metadata__", t}}), Error);
}

TEST(SafetensorsWriter, FailureLeavesAnExistingFileUntouched) {
  auto path = temp_dir() / "out.safetensors";
  { std::ofstream(path) << "precious"; }
  EXPECT_THROW(save_safetensors(path, {{"z", Tensor::zeros(DType::kComplex128, {1})}}), Error);
  EXPECT_EQ(read_text(path), "precious");
}

// Writes every tensor of the reference file back out; an independent reader written in the
// test (json + numpy/torch.frombuffer) must find the same tensors and the layout the reference
// implementation produces.
TEST(SafetensorsWriter, OutputIsReadByAnIndependentPythonReader) {
  auto reference = fixture("containers", "reference.safetensors");
  auto source = SafetensorsFile::open(reference);
  NamedTensors tensors;
  for (const auto& t : source.tensors()) tensors.emplace_back(t.name, t.tensor);
  auto dir = temp_dir();
  auto out = dir / "written.safetensors";
  save_safetensors(out, tensors, source.metadata());

  auto script = dir / "check.py";
  std::ofstream(script) << R"(import json, struct, sys
import numpy as np, torch
NP = {'BOOL': '?', 'U8': 'u1', 'I8': 'i1', 'I16': '<i2', 'U16': '<u2', 'I32': '<i4',
      'U32': '<u4', 'I64': '<i8', 'U64': '<u8', 'F16': '<f2', 'F32': '<f4', 'F64': '<f8'}
def load(path):
    raw = open(path, 'rb').read()
    n, = struct.unpack('<Q', raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop('__metadata__', {})
    out = {}
    for name, info in header.items():
        b, e = info['data_offsets']
        chunk = raw[8 + n + b:8 + n + e]
        if info['dtype'] == 'BF16':
            t = torch.frombuffer(bytearray(chunk), dtype=torch.bfloat16).float().numpy() if chunk else np.zeros(0)
        else:
            t = np.frombuffer(chunk, dtype=NP[info['dtype']])
        out[name] = (info['dtype'], t.reshape(info['shape']))
    return n, header, meta, out
n, header, meta, written = load(sys.argv[2])
_, _, ref_meta, ref = load(sys.argv[1])
assert n % 8 == 0, n
assert meta == ref_meta, (meta, ref_meta)
assert sorted(written) == sorted(ref)
for k in ref:
    assert written[k][0] == ref[k][0], k
    assert np.array_equal(written[k][1], ref[k][1]), k
ends = sorted((v['data_offsets'] for v in header.values()))
assert ends[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ends, ends[1:]))
print('ok', len(written))
)";
  std::string output;
  int status = run_command(
      python() + " " + script.string() + " " + reference.string() + " " + out.string() + " 2>&1",
      &output);
  EXPECT_EQ(status, 0) << output;
  EXPECT_EQ(output, "ok " + std::to_string(tensors.size()) + "\n");
}

}  // namespace
}  // namespace torchless::formats
