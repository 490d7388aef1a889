// Fuzzes the table loaders on arbitrary bytes: the binary sidecar (TLTABLES) and the JSON
// sidecar. Each must either load valid tables or throw torchless::Error. Loaded tables must
// write back to bytes that load to equal tables.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "torchless/core/error.h"
#include "torchless/entropy/tables.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  std::string_view text(reinterpret_cast<const char*>(data), size);
  using namespace torchless::entropy;
  try {
    EntropyTables t = read_tables_bin(bytes);
    std::string again = write_tables_bin(t);
    if (!(read_tables_bin(std::as_bytes(std::span<const char>(again.data(), again.size()))) == t)) {
      __builtin_trap();
    }
  } catch (const torchless::Error&) {
  }
  try {
    EntropyTables t = read_tables_json(text);
    if (!(read_tables_json(write_tables_json(t)) == t)) __builtin_trap();
  } catch (const torchless::Error&) {
  }
  return 0;
}
