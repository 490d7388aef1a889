// safetensors files (huggingface/safetensors): an 8-byte little-endian header length N, N bytes
// of JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then a flat byte buffer holding every tensor, little-endian and row-major.
//
// A SafetensorsFile validates the whole header before handing out anything: JSON syntax,
// duplicate names, dtype and shape against the byte length, offsets inside the buffer, tensors
// contiguous, non-overlapping and covering the buffer exactly, header at most 100 MB. Tensors
// are zero-copy views into the (mapped) file. Thread-safe: immutable.
//
// save_safetensors writes what docs/formats/safetensors.md describes.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "torchless/core/buffer.h"
#include "torchless/core/limits.h"
#include "torchless/core/tensor.h"

namespace torchless::formats {

// safetensors dtype names ("F32", "BF16", "F8_E4M3", ...) <-> DType. Types safetensors has and
// DType lacks (F8_E8M0, F4, F6_*) give nullopt, as do DTypes safetensors lacks (complex128,
// quantized types).
std::optional<DType> dtype_from_safetensors(std::string_view name);
std::optional<std::string_view> safetensors_dtype_name(DType dtype);

struct SafetensorsTensor {
  std::string name;
  std::string dtype;   // as written in the header
  Tensor tensor;       // a view into the file's buffer
  uint64_t begin = 0;  // data_offsets, relative to the start of the byte buffer
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  static constexpr uint64_t kMaxHeaderSize = 100'000'000;

  // True when `bytes` starts like a safetensors file: a plausible header length followed by '{'.
  static bool looks_like_safetensors(std::span<const std::byte> bytes);

  static SafetensorsFile open(const std::filesystem::path& path,
                              const Limits& limits = Limits::defaults());
  // `name` (usually the file name) prefixes every error message.
  static SafetensorsFile parse(Buffer bytes, std::string name,
                               const Limits& limits = Limits::defaults());

  const std::string& name() const { return name_; }
  // Tensors in the order of their data in the file.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t header_size() const { return header_size_; }  // N, the JSON header's length

  const SafetensorsTensor* find(std::string_view name) const;
  // The tensor named `name`; throws Error naming the file when absent.
  const Tensor& at(std::string_view name) const;

 private:
  std::string name_;
  Buffer bytes_;
  uint64_t header_size_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, size_t, std::less<>> index_;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// The file save_safetensors writes, in memory. Names must be unique and not "__metadata__"; tensors
// need a safetensors dtype (UnsupportedError otherwise) and are written contiguous (strided views
// are copied, views sharing storage are written separately).
std::vector<std::byte> safetensors_to_bytes(
    const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {});
// Writes atomically: a failure never leaves a partial file or destroys an existing one.
void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace torchless::formats
