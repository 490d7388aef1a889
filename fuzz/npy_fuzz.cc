// Fuzzes the .npy reader (and, for inputs that look like zips, the .npz reader), touching every
// element of what it returns.
#include <cstddef>
#include <cstdint>
#include <span>

#include "torchless/core/error.h"
#include "torchless/formats/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace torchless;
  Limits limits;
  limits.max_bytes = uint64_t{1} << 24;
  limits.max_allocation = uint64_t{1} << 24;
  auto bytes = Buffer::copy_of(std::as_bytes(std::span(data, size)));
  try {
    if (formats::ZipArchive::looks_like_zip(bytes.bytes())) {
      auto npz = formats::NpzArchive::parse(bytes, "fuzz.npz", limits);
      for (const auto& name : npz.names()) {
        try {
          (void)npz.read(name).tensor.to_bytes();
        } catch (const Error&) {
        }
      }
    } else {
      (void)formats::read_npy(bytes, "fuzz.npy", limits).tensor.to_bytes();
    }
  } catch (const Error&) {
  }
  return 0;
}
