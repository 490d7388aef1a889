// EntropyTables: everything a CompressAI entropy model codes with, as data. The quantized CDFs
// (`_quantized_cdf`, `_cdf_length`, `_offset`) plus the medians of an EntropyBottleneck or the
// scale table of a GaussianConditional. They come from float32 torch ops that can differ by an
// ulp across machines (spec §3.4), so they are always loaded, never recomputed.
//
// Every source gives identical tables: a CompressAI module's buffers inside any checkpoint or
// safetensors file (found by prefix), a saved table dict (torch.save'd, or in safetensors), and
// the JSON and binary sidecars specified in docs/formats/entropy-tables.md. EntropyTables are
// values; immutable after loading and thread-safe to share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "torchless/entropy/cdf.h"
#include "torchless/formats/safetensors.h"
#include "torchless/formats/torch_file.h"

namespace torchless::entropy {

// The values are the `kind` field of the binary sidecar.
enum class ModelKind : uint32_t { kEntropyBottleneck = 1, kGaussianConditional = 2 };

// "EntropyBottleneck" / "GaussianConditional" (CompressAI's class names).
std::string_view kind_name(ModelKind kind);

struct EntropyTables {
  ModelKind kind = ModelKind::kEntropyBottleneck;
  QuantizedCdfTable cdfs;
  // EntropyBottleneck: quantiles[:, 0, 1], one per channel (= per table).
  std::vector<float> medians;
  // GaussianConditional: the scale of each table, and the lower bound build_indexes applies.
  std::vector<float> scale_table;
  float scale_bound = 0;

  // Checks the parts beyond the cdfs (which validate themselves): at least one table; EB has
  // one finite median per table and no scale table; GC has one finite scale per table and a
  // finite scale_bound. Throws Error naming `what`.
  void validate(std::string_view what) const;

  // Equal tables, floats compared bit for bit.
  bool operator==(const EntropyTables& other) const;
};

// The JSON sidecar (format "torchless.entropy_tables", version 1). Floats are written with 9
// significant digits, which read back to the same float32.
EntropyTables read_tables_json(std::string_view text, std::string_view what = "tables.json");
std::string write_tables_json(const EntropyTables& tables);

// The binary sidecar (magic "TLTABLES", version 1, CRC-32 at the end).
EntropyTables read_tables_bin(std::span<const std::byte> bytes,
                              std::string_view what = "tables.bin");
std::string write_tables_bin(const EntropyTables& tables);

// From a loaded PyTorch checkpoint: either a torch.save'd table dict ({"kind", "quantized_cdf",
// "cdf_lengths", "offsets", "medians" | "scale_table" + "scale_bound"}), or a CompressAI
// module's buffers (`<prefix>_quantized_cdf`, `_cdf_length`, `_offset`, and `quantiles` for an
// EntropyBottleneck, whose medians are quantiles[:, 0, 1], or `scale_table` and `scale_bound`
// for a GaussianConditional) in the checkpoint's state_dict (TorchCheckpoint::state_dict).
EntropyTables read_tables_checkpoint(const torch_file::TorchCheckpoint& checkpoint,
                                     std::string_view prefix = "");

// From a safetensors file: a state_dict holding a CompressAI module's buffers under `prefix` (as
// in read_tables_checkpoint), or, with "kind" in the file's metadata, the table dict's tensors
// ("quantized_cdf", "cdf_lengths", "offsets", and "medians" or "scale_table" + a one-element
// "scale_bound") as docs/formats/entropy-tables.md describes.
EntropyTables read_tables_safetensors(const formats::SafetensorsFile& file,
                                      std::string_view prefix = "");

// Loads tables from `path`, whatever it is (recognised by content): a binary or JSON sidecar, a
// torch.save'd table dict, or a PyTorch checkpoint or safetensors file holding a CompressAI
// module's buffers under `prefix` (e.g. "feats_eblock."; empty for a module's own state_dict).
// Sidecars ignore `prefix`. Throws Error naming the file.
EntropyTables load_tables(const std::filesystem::path& path, std::string_view prefix = "");

}  // namespace torchless::entropy
