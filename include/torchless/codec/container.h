// The torchless point-cloud container (`.tlc`, docs/formats/container.md): one point cloud
// compressed with a D-PCC model package. A header (package id, manifest hash, normalisation,
// a directory of every block's sizes) protected by one CRC-32, then each block's two CompressAI
// rANS strings followed by that block's own CRC-32.
//
// The reader (Container::parse) validates the whole header and every size against the file
// before handing out anything; a block whose CRC does not match is kept and marked `damaged`,
// because the directory still locates every other block. With ContainerReadOptions::strict a
// damaged block is an error instead. Every error names the file, the field or block, and the
// byte offset. The writer (Container::to_bytes) produces what the Python writer
// (python/torchless_export/container.py) produces, byte for byte.
//
// A Container is a value; block strings are slices of the parsed file (zero copy). Thread-
// compatible.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "torchless/core/buffer.h"
#include "torchless/core/sha256.h"

namespace torchless::codec {

inline constexpr std::string_view kContainerMagic = "TLPCLOUD";
inline constexpr uint32_t kContainerVersion = 1;
inline constexpr size_t kMaxPackageIdLength = 255;

struct ContainerBlock {
  uint32_t cube_index = 0;  // cx·D² + cy·D + cz
  uint32_t num_points = 0;  // input points in this block (statistics only)
  uint32_t n3 = 0;          // latent points; both latents are (1, 8, n3)
  Buffer feats;             // feats_eblock rANS string
  Buffer xyzs;              // xyzs_eblock rANS string

  // Set by the reader.
  uint64_t offset = 0;        // file offset of the payload (the feats string)
  uint32_t stored_crc32 = 0;  // block_crc32 as stored
  bool damaged = false;       // stored_crc32 != crc32(feats || xyzs)
};

struct ContainerReadOptions {
  // Any damaged block makes parse() throw instead of marking the block.
  bool strict = false;
};

struct Container {
  std::string package_id;  // ASCII, at most 255 bytes
  Sha256Digest manifest_sha256{};
  std::array<double, 3> shift{0, 0, 0};
  double min_coord = 0;
  double max_coord = 1;
  uint32_t map_size = 100;
  uint32_t cube_size = 100;
  uint64_t num_points = 0;  // points of the input cloud
  std::vector<ContainerBlock> blocks;

  // D = ceil(map_size / cube_size), cubes per axis.
  uint32_t cubes_per_axis() const;
  // (cx, cy, cz) of a cube index.
  std::array<uint32_t, 3> cube_coordinates(uint32_t cube_index) const;
  // Indices of the blocks marked damaged, ascending.
  std::vector<size_t> damaged_blocks() const;

  // Parses a whole file. `name` prefixes every error message.
  static Container parse(Buffer bytes, std::string_view name = "<bytes>",
                         const ContainerReadOptions& options = {});
  static Container read(const std::filesystem::path& path,
                        const ContainerReadOptions& options = {});

  // The file's bytes. Throws Error for anything a reader would reject (a package id that is
  // too long or not ASCII, cube_size outside [1, map_size], non-finite or empty normalisation,
  // a cube index outside D³, n3 = 0, string lengths not a multiple of 4 or below 8). The
  // `damaged`, `offset` and `stored_crc32` fields are ignored: CRCs are computed.
  std::string to_bytes() const;
  void write(const std::filesystem::path& path) const;
};

}  // namespace torchless::codec
