// A model package (docs/formats/package.md): a directory holding `manifest.json` and the files
// it lists (ONNX graphs, entropy-table sidecars, the encoder checkpoint), each with its size and
// SHA-256. Package::load reads the manifest, rejects an unknown format or version, and checks
// every listed file's size and SHA-256 before anything uses it; the files the decoder opens
// (graphs, tables) must be listed. A compressed file names its package by `package_id` and by the
// SHA-256 of `manifest.json`; check_container refuses a file written with another package.
//
// The family-specific parts of the manifest (`hyperparameters`, `blocks`) are read by the codec
// family (codec/dpcc.h) from manifest_text(). A Package is an immutable value; thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torchless/core/sha256.h"

namespace torchless::codec {

struct Container;

inline constexpr std::string_view kPackageFormat = "torchless.package";
inline constexpr int64_t kPackageFormatVersion = 1;

struct PackageFile {
  std::string path;  // relative to the package directory
  uint64_t size = 0;
  std::string sha256;  // lower-case hex
};

// One declared input or output of a graph. shape[k] == -1 marks the dynamic point axis, whose
// name ("n", "m") is dim_names[k].
struct PackageTensorSpec {
  std::string name;
  std::string dtype;  // "float32"
  std::vector<int64_t> shape;
  std::vector<std::string> dim_names;
};

struct PackageGraph {
  std::string name;  // "latent_xyzs_synthesis", "stage0_upsample", ...
  std::string file;
  std::vector<PackageTensorSpec> inputs;
  std::vector<PackageTensorSpec> outputs;
  std::optional<int64_t> stage;
};

struct PackageEntropyModel {
  std::string name;  // "feats_eblock", "xyzs_eblock"
  std::string kind;  // "EntropyBottleneck" | "GaussianConditional"
  int64_t channels = 0;
  int64_t precision = 0;
  std::string bin;  // sidecar file names
  std::string json;
  std::string pt;
};

struct PackageLoadOptions {
  // Check every listed file's size and SHA-256 (package.md requires it; tests of the loader
  // itself may turn it off).
  bool verify_files = true;
};

class Package {
 public:
  // Throws Error naming the directory and the file/field: a missing or invalid manifest.json,
  // an unsupported format or format_version (UnsupportedError), a missing listed file, a size or
  // SHA-256 mismatch, a graph or table file that is not listed.
  static Package load(const std::filesystem::path& directory,
                      const PackageLoadOptions& options = {});

  const std::filesystem::path& directory() const { return directory_; }
  const std::string& family() const { return family_; }
  const std::string& package_id() const { return package_id_; }
  const std::string& rate() const { return rate_; }
  // SHA-256 of the exact bytes of manifest.json.
  const Sha256Digest& manifest_sha256() const { return manifest_sha256_; }
  const std::string& manifest_text() const { return manifest_text_; }
  const std::vector<PackageFile>& files() const { return files_; }
  const std::vector<PackageGraph>& graphs() const { return graphs_; }
  const std::vector<PackageEntropyModel>& entropy_models() const { return entropy_models_; }

  // Throws Error naming what is missing.
  const PackageGraph& graph(std::string_view name) const;
  const PackageEntropyModel& entropy_model(std::string_view name) const;
  // Path of a listed file; throws Error for a file the manifest does not list.
  std::filesystem::path file(std::string_view path) const;

  // Throws Error unless `container` was written with this package: same package_id and same
  // manifest SHA-256. `container_name` names the file in the message.
  void check_container(const Container& container, std::string_view container_name) const;

 private:
  std::filesystem::path directory_;
  std::string family_;
  std::string package_id_;
  std::string rate_;
  Sha256Digest manifest_sha256_{};
  std::string manifest_text_;
  std::vector<PackageFile> files_;
  std::vector<PackageGraph> graphs_;
  std::vector<PackageEntropyModel> entropy_models_;
};

}  // namespace torchless::codec
