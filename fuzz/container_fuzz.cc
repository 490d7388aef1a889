// Fuzzes the `.tlc` container parser: any bytes must give a Container or a torchless::Error,
// never a crash, hang or unbounded allocation. What parses must write back and parse again to
// the same directory, and every intact block's strings go through the rANS decoder the way the
// dpcc decoder reads them (8·n3 symbols, channel-major), with small fixed tables, so that sizes
// from the file meet the entropy decoder too.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "torchless/codec/container.h"
#include "torchless/core/error.h"
#include "torchless/entropy/cdf.h"
#include "torchless/entropy/rans.h"

namespace {

const torchless::entropy::QuantizedCdfTable& tables() {
  // Eight channels, three symbols each (values -1, 0, 1) plus the escape symbol.
  static const auto table = [] {
    std::vector<int32_t> cdf;
    for (int c = 0; c < 8; ++c) {
      for (int32_t v : {0, 9000 + 1000 * c, 52000, 65000, 65536}) cdf.push_back(v);
    }
    return torchless::entropy::QuantizedCdfTable(cdf, 5, std::vector<int32_t>(8, 5),
                                                 std::vector<int32_t>(8, -1), "fuzz tables");
  }();
  return table;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using torchless::codec::Container;
  try {
    auto bytes =
        torchless::Buffer::copy_of(std::string_view(reinterpret_cast<const char*>(data), size));
    auto container = Container::parse(bytes, "fuzz");
    auto again = Container::parse(torchless::Buffer::copy_of(container.to_bytes()), "rewritten");
    if (again.blocks.size() != container.blocks.size() || !again.damaged_blocks().empty()) {
      std::abort();
    }
    for (const auto& block : container.blocks) {
      if (block.damaged || block.n3 > 4096) continue;
      std::vector<int32_t> indexes(8 * size_t{block.n3});
      for (size_t k = 0; k < indexes.size(); ++k) indexes[k] = static_cast<int32_t>(k / block.n3);
      for (const auto* string : {&block.feats, &block.xyzs}) {
        try {
          (void)torchless::entropy::decode_with_indexes(string->view(), indexes, tables(),
                                                        {.check_end = true});
        } catch (const torchless::Error&) {
        }
      }
    }
  } catch (const torchless::Error&) {
  }
  return 0;
}
