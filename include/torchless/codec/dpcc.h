// The `dpcc` codec family, decoder side: a `.tlc` container (codec/container.h) and the model
// package that wrote it (codec/package.h) in, a point cloud out, exactly as the Python reference
// (python/torchless_export/codec.py, Codec.decompress) computes it:
//
//   per block: rANS-decode the two latents (8·n3 symbols each, channel-major, + median[c] in
//   float32) -> latent_xyzs_synthesis -> for each stage: upsample graph -> selection in C++
//   (count = nearbyint(u), round half to even, clamped to [0, U]; point-major) -> refine graph;
//   then un-normalise in float64 (container.md's order of operations) and round to float32;
//   the cloud is the concatenation of the blocks in container order.
//
// The graphs run through ONNX Runtime (nn::Graph). Sessions are created once, in the
// constructor, and shared by every block. Entropy decoding and latent_xyzs_synthesis run per
// block, in parallel; the point-wise stage graphs then run over chunks of consecutive blocks
// laid side by side (chunking depends only on the file), chunks in parallel.
// A block whose CRC does not match or whose rANS strings do not decode is "damaged": reported by
// index and cube index, its points left out, every other block decoded (or, with `strict`, an
// error). A DpccDecoder is immutable after construction; decode() may be called from several
// threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "torchless/codec/container.h"
#include "torchless/codec/package.h"
#include "torchless/formats/point_cloud.h"
#include "torchless/nn/graph.h"

namespace torchless::codec {

// What the decoder needs from the manifest's `hyperparameters`.
struct DpccConfig {
  int64_t dim = 8;
  int64_t layer_num = 3;
  std::vector<int64_t> max_upsample_num;  // U of each stage
  bool quantize_latent_xyzs = true;
  bool compress_normal = false;
  // sub_point_conv_mode == "mlp": the stage graphs treat every point on its own, so several
  // blocks can run through them together.
  bool pointwise_stages = false;
};

// Reads and checks the dpcc part of a package's manifest. Throws Error for another family
// (naming it), UnsupportedError for configurations the package format cannot carry (float16
// latent xyzs).
DpccConfig read_dpcc_config(const Package& package);

struct DpccDecoderOptions {
  // Blocks decoded at once; 0: one per core.
  size_t threads = 0;
  // ONNX Runtime intra-op threads of each session. 0: 1 when blocks run in parallel (blocks are
  // many and small, so block-level parallelism wins and nested pools only contend), else all
  // cores.
  int intra_op_threads = 0;
  // Let ONNX Runtime pool threads spin (only matters with intra_op_threads > 1).
  bool allow_spinning = false;
  // Largest n3 a block may declare. Bounds memory: stage outputs grow up to U³ = 512 times n3.
  // The package's block policy (at most 1024 points per block) gives n3 of a few dozen.
  uint32_t max_block_latent_points = 1u << 16;
  // When set, ONNX Runtime profiles every graph's session; end_profiling() writes one trace per
  // graph into this folder (created if missing) and sums them by operator.
  std::filesystem::path profile_dir{};
};

// What end_profiling() found: the traces written and the node time per operator, most first.
struct DpccProfile {
  std::vector<std::filesystem::path> traces;
  std::vector<nn::OpTime> ops;
};

struct DpccDecodeOptions {
  // Any damaged block is an error instead of being reported and skipped.
  bool strict = false;
  // Called as blocks finish (from a worker thread, one call at a time) with the number of
  // blocks finished so far and the total; the last call has done == total.
  std::function<void(size_t done, size_t total)> progress;
};

struct DamagedBlock {
  size_t index = 0;
  uint32_t cube_index = 0;
  uint64_t offset = 0;  // file offset of the block's payload
  std::string reason;   // "block_crc32 mismatch ..." or the rANS decoder's error
};

struct DpccDecodeResult {
  formats::PointCloud cloud;
  size_t blocks = 0;
  std::vector<DamagedBlock> damaged;   // ascending index
  std::vector<uint64_t> block_points;  // decoded points per block (0 for a damaged block)
};

class DpccDecoder {
 public:
  // Loads the package's entropy tables and creates one ONNX Runtime session per graph; checks
  // that the graphs declare the inputs and outputs package.md names. Throws Error naming the
  // package file at fault.
  explicit DpccDecoder(const Package& package, const DpccDecoderOptions& options = {});
  DpccDecoder(DpccDecoder&&) noexcept;
  DpccDecoder& operator=(DpccDecoder&&) noexcept;
  ~DpccDecoder();

  const DpccConfig& config() const;

  // Decodes every block. Throws Error when the container was written with another package, and
  // (strict) on the first damaged block.
  DpccDecodeResult decode(const Container& container, std::string_view container_name,
                          const DpccDecodeOptions& options = {}) const;

  // With DpccDecoderOptions::profile_dir: ends profiling (once) and summarises the traces.
  DpccProfile end_profiling();

  // One block in patch coordinates ([-1, 1]³ for a well-trained model): 3·m floats, x y z of
  // point 0, then point 1, ... Throws Error (naming the block) when its strings do not decode.
  std::vector<float> decode_block_patch(const ContainerBlock& block) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// How many candidates of each point the selection keeps: nearbyint(u) (round half to even, as
// torch.round), clamped to [0, max_upsample]; NaN keeps none.
std::vector<int64_t> upsample_counts(std::span<const float> upsample_num, int64_t max_upsample);

// Patch coordinates (x y z per point, float32) of a block with `cube_index` to the input cloud's
// coordinates, in float64 in container.md's order of operations, rounded to float32; appended to
// `out`.
void unnormalize_block(const Container& container, uint32_t cube_index,
                       std::span<const float> patch_xyz, std::vector<float>& out);

}  // namespace torchless::codec
