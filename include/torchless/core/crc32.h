// CRC-32 (ISO-HDLC, as zlib and zip compute it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace torchless {

uint32_t crc32(std::span<const std::byte> bytes, uint32_t seed = 0);

}  // namespace torchless
