// Fuzzes the pickle reader in strict and salvage mode: any bytes must give a value tree or a
// torchless::Error, never a crash, hang, leak (cycles are broken) or unbounded allocation. The
// writer is exercised on whatever the reader accepts.
#include <cstddef>
#include <cstdint>
#include <span>

#include "torchless/core/error.h"
#include "torchless/formats/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace torchless;
  auto bytes = Buffer::copy_of(std::as_bytes(std::span(data, size)));
  for (bool salvage : {false, true}) {
    pickle::ReadOptions options;
    options.salvage = salvage;
    options.limits.max_bytes = uint64_t{1} << 24;
    options.limits.max_allocation = uint64_t{1} << 24;
    options.limits.max_items = uint64_t{1} << 20;
    options.limits.max_depth = 200;
    options.allow_trailing_data = true;
    try {
      auto result = pickle::read(bytes, options);
      (void)result.value->repr(1000);
      try {
        (void)pickle::write(*result.value);
      } catch (const Error&) {
      }
    } catch (const Error&) {
    }
  }
  return 0;
}
