// Record layouts of the zip format (PKWARE APPNOTE 6.3) shared by the reader and the writer.
#pragma once

#include <cstdint>

namespace torchless::formats::zip_format {

inline constexpr uint32_t kLocalHeaderSignature = 0x04034b50;    // "PK\3\4"
inline constexpr uint32_t kCentralHeaderSignature = 0x02014b50;  // "PK\1\2"
inline constexpr uint32_t kEocdSignature = 0x06054b50;           // "PK\5\6"
inline constexpr uint32_t kZip64EocdSignature = 0x06064b50;      // "PK\6\6"
inline constexpr uint32_t kZip64LocatorSignature = 0x07064b50;   // "PK\6\7"

inline constexpr uint64_t kLocalHeaderSize = 30;
inline constexpr uint64_t kCentralHeaderSize = 46;
inline constexpr uint64_t kEocdSize = 22;
inline constexpr uint64_t kZip64EocdSize = 56;
inline constexpr uint64_t kZip64LocatorSize = 20;

inline constexpr uint16_t kZip64ExtraId = 0x0001;
// torch's PyTorchStreamWriter pads local headers with this extra field ("FB" little-endian).
inline constexpr uint16_t kPaddingExtraId = 0x4246;

// Bit 0: encrypted, bit 6: strong encryption, bit 13: central directory encrypted.
inline constexpr uint16_t kEncryptionFlags = 0x0001 | 0x0040 | 0x2000;
inline constexpr uint16_t kDataDescriptorFlag = 0x0008;
// Deflate speed options (bits 1-2), data descriptor (bit 3), UTF-8 names (bit 11). Anything
// else changes how the record must be read, so it is refused rather than guessed at.
inline constexpr uint16_t kAcceptedFlags = 0x0002 | 0x0004 | 0x0008 | 0x0800;

// 1980-01-01 00:00:00, the earliest DOS date: written so that output is reproducible.
inline constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;
inline constexpr uint16_t kDosTime = 0;

}  // namespace torchless::formats::zip_format
