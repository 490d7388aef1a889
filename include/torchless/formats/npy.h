// numpy's .npy files (NEP 1: magic "\x93NUMPY", version 1.0/2.0/3.0, a Python dict literal
// header {'descr', 'fortran_order', 'shape'}, then the raw array) and .npz archives (a zip of
// .npy files, stored or deflated).
//
// read_npy returns a Tensor: a zero-copy view of the bytes for little-endian data (Fortran-order
// arrays get column-major strides), a byte-swapped copy for big-endian data. Object arrays
// ('|O', which are pickles), structured, string and datetime dtypes are refused. The header is
// parsed by a small literal parser, never evaluated. Thread-safe: functions and immutable values.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "torchless/core/buffer.h"
#include "torchless/core/limits.h"
#include "torchless/core/tensor.h"
#include "torchless/formats/zip.h"

namespace torchless::formats {

struct NpyArray {
  Tensor tensor;
  int major_version = 1;
  int minor_version = 0;
  std::string descr;  // as in the header: "<f4", "|b1", ">i2"
  bool fortran_order = false;
  bool byteswapped = false;  // the data was big-endian and has been converted (copied)
};

// True when `bytes` starts with the .npy magic "\x93NUMPY".
bool looks_like_npy(std::span<const std::byte> bytes);

// `name` (usually the file name) prefixes every error message. The data must be exactly
// shape x itemsize bytes.
NpyArray read_npy(Buffer bytes, std::string_view name, const Limits& limits = Limits::defaults());
NpyArray load_npy(const std::filesystem::path& path, const Limits& limits = Limits::defaults());

// A version 1.0 .npy file of `tensor` (C order, little-endian; strided views are copied).
// Dtypes numpy lacks (bfloat16, float8, complex32, quantized) throw UnsupportedError.
std::vector<std::byte> npy_to_bytes(const Tensor& tensor);
// Writes atomically.
void save_npy(const std::filesystem::path& path, const Tensor& tensor);

// An .npz archive: arrays named by their record names without the ".npy" suffix.
class NpzArchive {
 public:
  static NpzArchive open(const std::filesystem::path& path,
                         const Limits& limits = Limits::defaults());
  static NpzArchive parse(Buffer bytes, std::string name,
                          const Limits& limits = Limits::defaults());

  const ZipArchive& zip() const { return zip_; }
  // Array names in archive order.
  const std::vector<std::string>& names() const { return names_; }
  // Reads (and for deflated records inflates) the array `name`; throws Error when absent.
  NpyArray read(std::string_view name) const;

 private:
  explicit NpzArchive(ZipArchive zip) : zip_(std::move(zip)) {}

  ZipArchive zip_;
  Limits limits_;
  std::vector<std::string> names_;
};

// Writes an .npz (stored, like np.savez) atomically. Names must be unique.
void save_npz(const std::filesystem::path& path,
              const std::vector<std::pair<std::string, Tensor>>& arrays);

}  // namespace torchless::formats
