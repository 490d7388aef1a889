// Fuzzes the table loaders on arbitrary bytes: the binary sidecar (TLTABLES), the JSON sidecar,
// and tables in a safetensors file (a table dict, or module buffers by prefix). Each must either
// load valid tables or throw torchless::Error. Loaded tables must write back to bytes that load
// to equal tables.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "torchless/core/buffer.h"
#include "torchless/core/error.h"
#include "torchless/entropy/tables.h"
#include "torchless/formats/safetensors.h"

namespace {

void check_round_trip(const torchless::entropy::EntropyTables& t) {
  using namespace torchless::entropy;
  std::string again = write_tables_bin(t);
  if (!(read_tables_bin(std::as_bytes(std::span<const char>(again.data(), again.size()))) == t)) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  std::string_view text(reinterpret_cast<const char*>(data), size);
  using namespace torchless::entropy;
  try {
    check_round_trip(read_tables_bin(bytes));
  } catch (const torchless::Error&) {
  }
  try {
    EntropyTables t = read_tables_json(text);
    if (!(read_tables_json(write_tables_json(t)) == t)) __builtin_trap();
  } catch (const torchless::Error&) {
  }
  try {
    const auto file =
        torchless::formats::SafetensorsFile::parse(torchless::Buffer::copy_of(bytes), "fuzz");
    for (std::string_view prefix : {"", "feats_eblock."}) {
      try {
        check_round_trip(read_tables_safetensors(file, prefix));
      } catch (const torchless::Error&) {
      }
    }
  } catch (const torchless::Error&) {
  }
  return 0;
}
