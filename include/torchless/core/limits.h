// Limits bound what an input can make torchless do: how deep, how many, how large. Every
// parser takes a Limits; exceeding one throws LimitError naming the limit. The defaults fit
// real checkpoints with room to spare and keep hostile files from exhausting memory or time.
#pragma once

#include <cstdint>

namespace torchless {

struct Limits {
  // Nesting depth of containers in a pickle, and of any recursive structure.
  uint32_t max_depth = 1000;
  // Elements on the pickle stack/memo, items in one container, entries in a zip directory.
  uint64_t max_items = uint64_t{1} << 26;
  // One str/bytes value, or one record to inflate.
  uint64_t max_bytes = uint64_t{1} << 34;
  // Bytes a parser may allocate beyond the file itself (inflated records, copies).
  uint64_t max_allocation = uint64_t{1} << 35;
  // Number of dimensions of one tensor.
  uint32_t max_rank = 64;
  // Ratio of inflated to deflated size accepted for one compressed record (zip bomb guard).
  uint32_t max_compression_ratio = 1024;

  static const Limits& defaults() {
    static const Limits limits;
    return limits;
  }
};

}  // namespace torchless
