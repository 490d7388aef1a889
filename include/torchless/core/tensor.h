// A Tensor is a view (dtype, shape, strides, offset) over a shared, immutable Buffer. Loading a
// checkpoint maps the file and hands out Tensors that point into it; nothing is copied until a
// caller asks (contiguous(), to_vector()). Strides and offset count elements, as in PyTorch.
// Thread-safe: Tensors are immutable values.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "torchless/core/buffer.h"
#include "torchless/core/dtype.h"
#include "torchless/core/error.h"

namespace torchless {

using Shape = std::vector<int64_t>;

// Per-tensor or per-channel affine quantization parameters of a quantized tensor.
struct Quantization {
  enum class Scheme { kPerTensorAffine, kPerChannelAffine } scheme = Scheme::kPerTensorAffine;
  double scale = 1.0;                // per tensor
  int64_t zero_point = 0;            // per tensor
  std::vector<double> scales;        // per channel
  std::vector<int64_t> zero_points;  // per channel
  int64_t axis = 0;                  // per channel
};

class Tensor {
 public:
  Tensor() = default;

  // A view into `storage`. Validates, with overflow-checked arithmetic, that every element the
  // view can reach lies inside the storage, and throws Error (naming `what`) otherwise.
  static Tensor view(Buffer storage, DType dtype, Shape shape, std::vector<int64_t> strides,
                     int64_t storage_offset = 0, std::string_view what = "tensor");
  // A contiguous (row-major) view of the whole of `storage`, whose size must match exactly.
  static Tensor contiguous_view(Buffer storage, DType dtype, Shape shape,
                                std::string_view what = "tensor");
  // A new contiguous tensor owning a copy of `values`.
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, Shape shape);
  // Zero-filled.
  static Tensor zeros(DType dtype, Shape shape);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t storage_offset() const { return storage_offset_; }
  const Buffer& storage() const { return storage_; }
  size_t rank() const { return shape_.size(); }
  int64_t dim(size_t i) const { return shape_.at(i); }
  int64_t numel() const;
  // Bytes of the elements (numel * itemsize), not of the storage.
  uint64_t nbytes() const;
  bool is_contiguous() const;
  bool defined() const { return storage_.data() != nullptr || numel() == 0; }

  // Address of element 0 (the storage offset applied).
  const std::byte* raw_data() const;
  // Typed pointer to the first element; throws Error if T does not match dtype().
  template <typename T>
  const T* data() const;

  // The same elements laid out contiguously: this tensor if already contiguous, else a copy.
  Tensor contiguous() const;
  // The elements in row-major order, as bytes (always a fresh copy).
  std::vector<std::byte> to_bytes() const;
  // The elements in row-major order; T must match dtype().
  template <typename T>
  std::vector<T> to_vector() const;
  // The elements converted to double (bool, integers, float16/bfloat16/32/64); complex throws.
  std::vector<double> to_double_vector() const;

  Tensor reshape(Shape shape) const;  // requires contiguous; shares storage

  const std::optional<Quantization>& quantization() const { return quantization_; }
  Tensor with_quantization(Quantization q) const;

  // "float32[2, 3]"
  std::string describe() const;

 private:
  void require_dtype(DType expected) const;

  Buffer storage_;
  DType dtype_ = DType::kFloat32;
  Shape shape_;
  std::vector<int64_t> strides_;
  int64_t storage_offset_ = 0;
  std::optional<Quantization> quantization_;
};

// Row-major strides for `shape`.
std::vector<int64_t> contiguous_strides(const Shape& shape);
// Product of dims with overflow checking; throws Error naming `what`.
int64_t checked_numel(const Shape& shape, std::string_view what);
std::string shape_to_string(const Shape& shape);
// The elements of an int32 or int64 tensor as int32, row-major; an int64 value outside int32
// or another dtype throws Error naming `what` (and the element).
std::vector<int32_t> int32_values(const Tensor& t, std::string_view what);

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, Shape shape) {
  auto bytes = std::as_bytes(std::span<const T>(values));
  return contiguous_view(Buffer::copy_of(bytes), dtype_of<T>(), std::move(shape));
}

template <typename T>
const T* Tensor::data() const {
  require_dtype(dtype_of<T>());
  return reinterpret_cast<const T*>(raw_data());
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  require_dtype(dtype_of<T>());
  auto bytes = to_bytes();
  std::vector<T> out(bytes.size() / sizeof(T));
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

}  // namespace torchless
