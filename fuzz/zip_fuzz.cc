// Fuzzes ZipArchive: parsing the directory, then reading (inflating) and CRC-checking every
// record. Any input must give an archive or a torchless::Error, within the limits below.
#include <cstddef>
#include <cstdint>
#include <span>

#include "torchless/core/error.h"
#include "torchless/formats/zip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace torchless;
  Limits limits;
  limits.max_bytes = uint64_t{1} << 24;
  limits.max_allocation = uint64_t{1} << 24;
  try {
    auto bytes = Buffer::copy_of(std::as_bytes(std::span(data, size)));
    auto archive = formats::ZipArchive::parse(bytes, "fuzz.zip", limits);
    for (const auto& entry : archive.entries()) {
      try {
        archive.verify_crc(entry);
      } catch (const Error&) {
      }
      (void)archive.find(entry.name);
    }
  } catch (const Error&) {
  }
  return 0;
}
