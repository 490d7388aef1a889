#include "torchless/core/tensor.h"

#include <fmt/ranges.h>

#include <bit>
#include <complex>
#include <cstring>
#include <utility>

#include "torchless/core/checked.h"

namespace torchless {

std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

int64_t checked_numel(const Shape& shape, std::string_view what) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail("{}: negative dimension {} in shape {}", what, d, shape_to_string(shape));
    n = checked_mul(n, static_cast<uint64_t>(d), what);
  }
  if (n > static_cast<uint64_t>(INT64_MAX)) fail("{}: element count overflows", what);
  return static_cast<int64_t>(n);
}

std::vector<int32_t> int32_values(const Tensor& t, std::string_view what) {
  if (t.dtype() == DType::kInt32) return t.to_vector<int32_t>();
  if (t.dtype() == DType::kInt64) {
    auto wide = t.to_vector<int64_t>();
    std::vector<int32_t> out(wide.size());
    for (size_t i = 0; i < wide.size(); ++i) {
      if (!std::in_range<int32_t>(wide[i])) {
        fail("{}: element {} = {} does not fit int32", what, i, wide[i]);
      }
      out[i] = static_cast<int32_t>(wide[i]);
    }
    return out;
  }
  fail("{}: expected an int32 or int64 tensor, found {}", what, t.describe());
}

std::string shape_to_string(const Shape& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

Tensor Tensor::view(Buffer storage, DType dtype, Shape shape, std::vector<int64_t> strides,
                    int64_t storage_offset, std::string_view what) {
  if (strides.size() != shape.size()) {
    fail("{}: shape {} has {} dims but strides have {}", what, shape_to_string(shape), shape.size(),
         strides.size());
  }
  if (storage_offset < 0) fail("{}: negative storage offset {}", what, storage_offset);
  int64_t n = checked_numel(shape, what);
  if (n > 0) {
    // The furthest element reachable is offset + sum((dim - 1) * stride); it must lie in storage.
    uint64_t last = static_cast<uint64_t>(storage_offset);
    for (size_t i = 0; i < shape.size(); ++i) {
      if (strides[i] < 0) fail("{}: negative stride {} in dim {}", what, strides[i], i);
      last = checked_add(
          last,
          checked_mul(static_cast<uint64_t>(shape[i] - 1), static_cast<uint64_t>(strides[i]), what),
          what);
    }
    uint64_t need = checked_mul(checked_add(last, 1, what), dtype_size(dtype), what);
    if (need > storage.size()) {
      fail(
          "{}: view {} with strides {} at offset {} reaches byte {} but its storage holds {} bytes",
          what, shape_to_string(shape), shape_to_string(strides), storage_offset, need,
          storage.size());
    }
  }
  Tensor t;
  t.storage_ = std::move(storage);
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.strides_ = std::move(strides);
  t.storage_offset_ = storage_offset;
  return t;
}

Tensor Tensor::contiguous_view(Buffer storage, DType dtype, Shape shape, std::string_view what) {
  uint64_t need =
      checked_mul(static_cast<uint64_t>(checked_numel(shape, what)), dtype_size(dtype), what);
  if (need != storage.size()) {
    fail("{}: {} {} needs {} bytes, found {}", what, dtype_name(dtype), shape_to_string(shape),
         need, storage.size());
  }
  auto strides = contiguous_strides(shape);
  return view(std::move(storage), dtype, std::move(shape), std::move(strides), 0, what);
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  uint64_t need =
      checked_mul(static_cast<uint64_t>(checked_numel(shape, "zeros")), dtype_size(dtype), "zeros");
  return contiguous_view(Buffer::adopt(std::vector<std::byte>(need)), dtype, std::move(shape));
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

uint64_t Tensor::nbytes() const {
  return static_cast<uint64_t>(numel()) * dtype_size(dtype_);
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] != 1 && strides_[i] != expected) return numel() == 0;
    expected *= shape_[i];
  }
  return true;
}

const std::byte* Tensor::raw_data() const {
  return storage_.data() + static_cast<size_t>(storage_offset_) * dtype_size(dtype_);
}

void Tensor::require_dtype(DType expected) const {
  if (dtype_ != expected) {
    fail("tensor {}: expected dtype {}, found {}", describe(), dtype_name(expected),
         dtype_name(dtype_));
  }
}

std::vector<std::byte> Tensor::to_bytes() const {
  const size_t item = dtype_size(dtype_);
  std::vector<std::byte> out(nbytes());
  if (out.empty()) return out;
  if (is_contiguous()) {
    std::memcpy(out.data(), raw_data(), out.size());
    return out;
  }
  // Odometer walk over the index space; the innermost dimension is copied element by element.
  std::vector<int64_t> index(shape_.size(), 0);
  const std::byte* base = raw_data();
  std::byte* dst = out.data();
  const int64_t n = numel();
  for (int64_t done = 0; done < n; ++done) {
    int64_t offset = 0;
    for (size_t d = 0; d < shape_.size(); ++d) offset += index[d] * strides_[d];
    std::memcpy(dst, base + static_cast<size_t>(offset) * item, item);
    dst += item;
    for (size_t d = shape_.size(); d-- > 0;) {
      if (++index[d] < shape_[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor t = contiguous_view(Buffer::adopt(to_bytes()), dtype_, shape_);
  t.quantization_ = quantization_;
  return t;
}

std::vector<double> Tensor::to_double_vector() const {
  auto bytes = to_bytes();
  const size_t n = static_cast<size_t>(numel());
  std::vector<double> out(n);
  const std::byte* p = bytes.data();
  auto load = [&]<typename T>(T /*tag*/) {
    for (size_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, p + i * sizeof(T), sizeof(T));
      out[i] = static_cast<double>(v);
    }
  };
  switch (dtype_) {
    case DType::kBool:
    case DType::kUInt8:
    case DType::kQUInt8:
      load(uint8_t{});
      break;
    case DType::kInt8:
    case DType::kQInt8:
      load(int8_t{});
      break;
    case DType::kInt16:
      load(int16_t{});
      break;
    case DType::kInt32:
    case DType::kQInt32:
      load(int32_t{});
      break;
    case DType::kInt64:
      load(int64_t{});
      break;
    case DType::kUInt16:
      load(uint16_t{});
      break;
    case DType::kUInt32:
      load(uint32_t{});
      break;
    case DType::kUInt64:
      load(uint64_t{});
      break;
    case DType::kFloat32:
      load(float{});
      break;
    case DType::kFloat64:
      load(double{});
      break;
    case DType::kFloat16:
    case DType::kBFloat16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, p + i * 2, 2);
        out[i] = dtype_ == DType::kFloat16 ? half_to_float(bits) : bfloat16_to_float(bits);
      }
      break;
    default:
      fail("tensor {}: cannot convert dtype {} to double", describe(), dtype_name(dtype_));
  }
  return out;
}

Tensor Tensor::reshape(Shape shape) const {
  if (!is_contiguous()) fail("tensor {}: reshape needs a contiguous tensor", describe());
  if (checked_numel(shape, "reshape") != numel()) {
    fail("tensor {}: cannot reshape to {}", describe(), shape_to_string(shape));
  }
  Tensor t = *this;
  t.strides_ = contiguous_strides(shape);
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::with_quantization(Quantization q) const {
  Tensor t = *this;
  t.quantization_ = std::move(q);
  return t;
}

std::string Tensor::describe() const {
  return fmt::format("{}{}", dtype_name(dtype_), shape_to_string(shape_));
}

}  // namespace torchless
