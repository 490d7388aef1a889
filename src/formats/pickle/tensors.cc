// Binding: turning the tensors a pickle describes (storage + offset + size + stride) into Tensor
// views once the container has located each storage's bytes.
#include <fmt/format.h>

#include <cstring>

#include "torchless/core/checked.h"
#include "torchless/core/error.h"
#include "torchless/formats/pickle.h"

namespace torchless::pickle {
namespace {

// The bytes of a storage: its own, or for legacy view storages a slice of the base storage.
Buffer storage_bytes(const StorageInfo& s) {
  if (s.base) {
    if (!s.base->storage || !s.base->storage->bound) {
      fail("storage '{}': its base storage was never located", s.key);
    }
    uint64_t item = dtype_size(s.dtype);
    return s.base->storage->data.slice(checked_mul(s.view_offset, item, "storage view offset"),
                                       checked_mul(s.numel, item, "storage view size"),
                                       fmt::format("storage view '{}'", s.key));
  }
  if (!s.bound) fail("storage '{}' was never located in the file", s.key);
  return s.data;
}

// Big-endian element bytes into a little-endian copy; complex types swap each component.
Buffer byteswapped(const Buffer& in, DType dtype) {
  size_t unit = dtype_size(dtype);
  if (dtype_is_complex(dtype)) unit /= 2;
  std::vector<std::byte> out(in.size());
  const std::byte* src = in.data();
  for (size_t i = 0; i + unit <= in.size(); i += unit) {
    for (size_t k = 0; k < unit; ++k) out[i + k] = src[i + unit - 1 - k];
  }
  return Buffer::adopt(std::move(out));
}

std::vector<double> tensor_doubles(const ValuePtr& v, std::string_view what) {
  if (!v || !v->is_tensor() || !v->tensor->bound) fail("{}: tensor is not available", what);
  return v->tensor->tensor.to_double_vector();
}

}  // namespace

void bind_tensors(const std::vector<ValuePtr>& tensors) {
  for (const auto& node : tensors) {
    if (!node || !node->tensor) continue;
    TensorInfo& t = *node->tensor;
    if (t.bound) continue;
    if (!t.storage || !t.storage->storage) fail("tensor without storage");
    const StorageInfo& s = *t.storage->storage;
    std::string what = fmt::format("tensor on storage '{}'", s.key);
    Buffer bytes = storage_bytes(s);
    if (t.byteswap && dtype_size(t.dtype) > 1) bytes = byteswapped(bytes, t.dtype);
    Tensor tensor =
        Tensor::view(std::move(bytes), t.dtype, t.shape, t.strides, t.storage_offset, what);
    if (t.quantization) {
      Quantization q = *t.quantization;
      if (q.scheme == Quantization::Scheme::kPerChannelAffine) {
        q.scales = tensor_doubles(t.per_channel_scales, what + " scales");
        for (double z : tensor_doubles(t.per_channel_zero_points, what + " zero points")) {
          q.zero_points.push_back(static_cast<int64_t>(z));
        }
        if (q.axis < 0 || static_cast<size_t>(q.axis) >= t.shape.size() ||
            q.scales.size() != static_cast<size_t>(t.shape[static_cast<size_t>(q.axis)]) ||
            q.zero_points.size() != q.scales.size()) {
          fail("{}: per-channel quantization axis {} with {} scales does not fit shape {}", what,
               q.axis, q.scales.size(), shape_to_string(t.shape));
        }
      }
      tensor = tensor.with_quantization(std::move(q));
    }
    t.tensor = std::move(tensor);
    t.bound = true;
  }
}

}  // namespace torchless::pickle
