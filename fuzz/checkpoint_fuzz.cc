// Fuzzes whole-file checkpoint reading (zip, legacy stream, bare pickle detection) in strict and
// salvage mode, touching every byte of every tensor it hands out.
#include <cstddef>
#include <cstdint>
#include <span>

#include "torchless/core/error.h"
#include "torchless/formats/torch_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace torchless;
  auto bytes = Buffer::copy_of(std::as_bytes(std::span(data, size)));
  for (bool salvage : {false, true}) {
    torch_file::OpenOptions options;
    options.salvage = salvage;
    options.limits.max_bytes = uint64_t{1} << 24;
    options.limits.max_allocation = uint64_t{1} << 24;
    options.limits.max_items = uint64_t{1} << 20;
    options.limits.max_depth = 200;
    try {
      auto ckpt = torch_file::TorchCheckpoint::read(bytes, "fuzz.pt", options);
      for (const auto& t : ckpt.tensors()) {
        if (t.tensor.nbytes() <= (uint64_t{1} << 24)) (void)t.tensor.to_bytes();
      }
      (void)ckpt.state_dict();
    } catch (const Error&) {
    }
  }
  return 0;
}
