// Element types a Tensor can hold: every dtype PyTorch can save (including quantized and
// float8 types), plus the unsigned types of safetensors and numpy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace torchless {

enum class DType : uint8_t {
  kBool,
  kUInt8,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kUInt16,
  kUInt32,
  kUInt64,
  kFloat16,
  kBFloat16,
  kFloat32,
  kFloat64,
  kComplex32,   // torch.complex32 (chalf): two float16
  kComplex64,   // two float32
  kComplex128,  // two float64
  kQUInt8,      // quantized: raw uint8, with scale/zero point in Tensor::quantization()
  kQInt8,
  kQInt32,
  kQUInt4x2,  // two 4-bit values per byte
  kQUInt2x4,  // four 2-bit values per byte
  kFloat8E5M2,
  kFloat8E4M3FN,
  kFloat8E5M2FNUZ,
  kFloat8E4M3FNUZ,
};

// Bytes per element (quantized packed types report 1: one byte holds several values).
size_t dtype_size(DType dtype);
// PyTorch's name without the "torch." prefix: "float32", "bfloat16", "quint8", ...
std::string_view dtype_name(DType dtype);
std::optional<DType> dtype_from_name(std::string_view torch_name);
bool dtype_is_floating(DType dtype);
bool dtype_is_complex(DType dtype);
bool dtype_is_quantized(DType dtype);

// C++ type -> DType, for typed accessors.
template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<bool>() {
  return DType::kBool;
}
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::kUInt8;
}
template <>
constexpr DType dtype_of<int8_t>() {
  return DType::kInt8;
}
template <>
constexpr DType dtype_of<int16_t>() {
  return DType::kInt16;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::kInt32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::kInt64;
}
template <>
constexpr DType dtype_of<uint16_t>() {
  return DType::kUInt16;
}
template <>
constexpr DType dtype_of<uint32_t>() {
  return DType::kUInt32;
}
template <>
constexpr DType dtype_of<uint64_t>() {
  return DType::kUInt64;
}
template <>
constexpr DType dtype_of<float>() {
  return DType::kFloat32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::kFloat64;
}

// IEEE half and bfloat16 conversions (exact for every finite value, NaN preserved).
float half_to_float(uint16_t bits);
float bfloat16_to_float(uint16_t bits);
uint16_t float_to_half(float value);  // round to nearest even

}  // namespace torchless
