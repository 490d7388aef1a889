#include "torchless/core/tensor.h"

#include <gtest/gtest.h>

#include "torchless/core/byte_reader.h"
#include "torchless/core/checked.h"
#include "torchless/core/parallel.h"

namespace torchless {
namespace {

TEST(Tensor, ContiguousViewSharesStorage) {
  auto t = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto r = t.reshape({3, 2});
  EXPECT_EQ(r.storage().data(), t.storage().data());
  EXPECT_EQ(r.to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
}

TEST(Tensor, TransposedViewCopiesInLogicalOrder) {
  auto base = Tensor::from_vector<int32_t>({0, 1, 2, 3, 4, 5}, {2, 3});
  auto t = Tensor::view(base.storage(), DType::kInt32, {3, 2}, {1, 3});
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.to_vector<int32_t>(), (std::vector<int32_t>{0, 3, 1, 4, 2, 5}));
  EXPECT_TRUE(t.contiguous().is_contiguous());
}

TEST(Tensor, StrideZeroBroadcastReadsOneElement) {
  auto base = Tensor::from_vector<double>({7.5}, {1});
  auto t = Tensor::view(base.storage(), DType::kFloat64, {4, 3}, {0, 0});
  EXPECT_EQ(t.to_vector<double>(), std::vector<double>(12, 7.5));
}

TEST(Tensor, RejectsViewReachingPastStorage) {
  auto base = Tensor::from_vector<float>({1, 2, 3, 4}, {4});
  EXPECT_THROW(Tensor::view(base.storage(), DType::kFloat32, {2, 2}, {2, 1}, 1), Error);
  EXPECT_THROW(Tensor::view(base.storage(), DType::kFloat32, {5}, {1}), Error);
}

TEST(Tensor, RejectsOverflowingShape) {
  auto base = Tensor::from_vector<float>({1}, {1});
  EXPECT_THROW(
      Tensor::view(base.storage(), DType::kFloat32, {int64_t{1} << 40, int64_t{1} << 40}, {1, 1}),
      Error);
  EXPECT_THROW(Tensor::view(base.storage(), DType::kFloat32, {2}, {int64_t{1} << 62}), Error);
}

TEST(Tensor, EmptyTensorNeedsNoStorage) {
  auto t = Tensor::view(Buffer{}, DType::kFloat32, {0, 5}, {5, 1}, 0);
  EXPECT_EQ(t.numel(), 0);
  EXPECT_TRUE(t.to_bytes().empty());
}

TEST(Tensor, TypedAccessRejectsWrongDType) {
  auto t = Tensor::from_vector<float>({1}, {1});
  EXPECT_THROW(t.data<int32_t>(), Error);
}

TEST(Tensor, HalfAndBFloat16ConvertToDouble) {
  std::vector<uint16_t> half = {0x3c00, 0xc000, 0x0001, 0x7bff};
  auto t = Tensor::contiguous_view(Buffer::copy_of(std::as_bytes(std::span(half))), DType::kFloat16,
                                   {4});
  auto v = t.to_double_vector();
  EXPECT_EQ(v[0], 1.0);
  EXPECT_EQ(v[1], -2.0);
  EXPECT_EQ(v[2], std::ldexp(1.0, -24));
  EXPECT_EQ(v[3], 65504.0);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(bfloat16_to_float(0x3f80), 1.0f);
}

TEST(ByteReader, ReportsTruncationWithOffset) {
  std::string data("\x01\x02\x03", 3);
  ByteReader r(data, "sample.bin");
  EXPECT_EQ(r.u16(), 0x0201);
  try {
    r.u32();
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample.bin: at offset 2: need 4 bytes, only 1 left"),
              std::string::npos)
        << e.what();
  }
}

TEST(Buffer, SliceOutsideRangeThrows) {
  auto b = Buffer::copy_of(std::string_view("abcdef"));
  EXPECT_EQ(b.slice(2, 3).view(), "cde");
  EXPECT_THROW(b.slice(4, 3), Error);
  EXPECT_THROW(b.slice(UINT64_MAX, 2), Error);
}

TEST(Checked, DetectsOverflow) {
  EXPECT_THROW(checked_mul(UINT64_MAX / 2, 3, "x"), Error);
  EXPECT_THROW(checked_add(UINT64_MAX, 1, "x"), Error);
  EXPECT_EQ(checked_mul(1u << 20, 1u << 20, "x"), uint64_t{1} << 40);
}

TEST(Parallel, RethrowsFirstError) {
  std::atomic<int> ran{0};
  EXPECT_THROW(parallel_for(100, 2,
                            [&](size_t i) {
                              ++ran;
                              if (i == 10) fail("item {}", i);
                            }),
               Error);
  EXPECT_GE(ran.load(), 1);
}

}  // namespace
}  // namespace torchless
