// LZF (Marc Lehmann's liblzf), decompression only. The stream is a sequence of chunks, each
// opened by a control byte `ctrl`:
//   ctrl < 32            literal run: the next ctrl + 1 bytes are copied as they are;
//   ctrl >> 5 in 1..6    back reference of length (ctrl >> 5) + 2;
//   ctrl >> 5 == 7       back reference of length 7 + next byte + 2;
// a back reference's distance is ((ctrl & 0x1f) << 8) + next byte + 1 bytes back from the
// output position. References may overlap their own output (run-length style), so they are
// copied byte by byte. Every read and write is checked: the output is exactly `expected_size`.
#include <cstring>

#include "torchless/core/error.h"
#include "torchless/formats/point_cloud.h"

namespace torchless::formats {

std::vector<uint8_t> lzf_decompress(std::span<const uint8_t> input, size_t expected_size,
                                    const std::string& what) {
  std::vector<uint8_t> out(expected_size);
  size_t ip = 0, op = 0;
  const size_t in_size = input.size();
  while (ip < in_size) {
    const size_t chunk_at = ip;
    unsigned ctrl = input[ip++];
    if (ctrl < 32) {
      size_t length = ctrl + 1;
      if (length > in_size - ip) {
        fail("{}: LZF literal run at compressed offset {} needs {} bytes, only {} left", what,
             chunk_at, length, in_size - ip);
      }
      if (length > expected_size - op) {
        fail(
            "{}: LZF literal run at compressed offset {} writes past the declared "
            "uncompressed size {}",
            what, chunk_at, expected_size);
      }
      std::memcpy(out.data() + op, input.data() + ip, length);
      ip += length;
      op += length;
      continue;
    }
    size_t length = ctrl >> 5;
    if (length == 7) {
      if (ip >= in_size) fail("{}: LZF stream ends inside the chunk at offset {}", what, chunk_at);
      length += input[ip++];
    }
    if (ip >= in_size) fail("{}: LZF stream ends inside the chunk at offset {}", what, chunk_at);
    size_t distance = ((ctrl & 0x1fu) << 8) + input[ip++] + 1;
    length += 2;
    if (distance > op) {
      fail(
          "{}: LZF back reference at compressed offset {} points {} bytes back, before the "
          "start of the output (at {})",
          what, chunk_at, distance, op);
    }
    if (length > expected_size - op) {
      fail(
          "{}: LZF back reference at compressed offset {} writes past the declared "
          "uncompressed size {}",
          what, chunk_at, expected_size);
    }
    for (size_t k = 0; k < length; ++k, ++op) out[op] = out[op - distance];
  }
  if (op != expected_size) {
    fail("{}: LZF data decompresses to {} bytes, header declares {}", what, op, expected_size);
  }
  return out;
}

}  // namespace torchless::formats
