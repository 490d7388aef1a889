// Fuzzes SafetensorsFile::parse and reads every tensor it hands out; then writes the tensors
// back and parses the result, which must succeed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "torchless/core/error.h"
#include "torchless/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace torchless;
  formats::SafetensorsFile file;
  try {
    file = formats::SafetensorsFile::parse(Buffer::copy_of(std::as_bytes(std::span(data, size))),
                                           "fuzz.safetensors");
  } catch (const Error&) {
    return 0;
  }
  formats::NamedTensors tensors;
  for (const auto& t : file.tensors()) {
    (void)t.tensor.to_bytes();
    tensors.emplace_back(t.name, t.tensor);
  }
  // What the reader accepted, the writer must reproduce readably.
  auto written = formats::safetensors_to_bytes(tensors, file.metadata());
  auto again = formats::SafetensorsFile::parse(Buffer::adopt(std::move(written)), "rewritten");
  if (again.tensors().size() != tensors.size()) std::abort();
  return 0;
}
