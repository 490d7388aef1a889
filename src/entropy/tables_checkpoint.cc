// Tables inside PyTorch checkpoints: a CompressAI module's buffers, or a torch.save'd table dict.
#include <fmt/ranges.h>

#include <set>

#include "torchless/core/error.h"
#include "torchless/entropy/tables.h"

namespace torchless::entropy {
namespace {

std::vector<float> float32_values(const Tensor& t, std::string_view what) {
  if (t.dtype() != DType::kFloat32)
    fail("{}: expected a float32 tensor, found {}", what, t.describe());
  return t.to_vector<float>();
}

void require_rank(const Tensor& t, size_t rank, std::string_view what) {
  if (t.rank() != rank) fail("{}: expected {} dims, found {}", what, rank, t.describe());
}

QuantizedCdfTable cdfs_from(const Tensor& cdf, const Tensor& lengths, const Tensor& offsets,
                            const std::string& what) {
  require_rank(cdf, 2, what + ": quantized_cdf");
  require_rank(lengths, 1, what + ": cdf_lengths");
  require_rank(offsets, 1, what + ": offsets");
  return QuantizedCdfTable(int32_values(cdf, what + ": quantized_cdf"), cdf.dim(1),
                           int32_values(lengths, what + ": cdf_lengths"),
                           int32_values(offsets, what + ": offsets"), what);
}

const Tensor& dict_tensor(const pickle::Value& dict, const char* key, const std::string& what) {
  auto v = dict.get(key);
  if (!v || !v->is_tensor()) fail("{}: table dict has no tensor \"{}\"", what, key);
  return v->tensor->tensor;
}

// Format (b): the dict written by torch.save({"kind": ..., "quantized_cdf": ..., ...}).
EntropyTables from_table_dict(const pickle::Value& dict, const std::string& what) {
  auto kind = dict.get("kind");
  if (!kind || kind->kind != pickle::Kind::kStr)
    fail("{}: table dict has no string \"kind\"", what);
  EntropyTables t;
  if (kind->text == "EntropyBottleneck") {
    t.kind = ModelKind::kEntropyBottleneck;
  } else if (kind->text == "GaussianConditional") {
    t.kind = ModelKind::kGaussianConditional;
  } else {
    fail("{}: kind \"{}\" is neither \"EntropyBottleneck\" nor \"GaussianConditional\"", what,
         kind->text);
  }
  t.cdfs =
      cdfs_from(dict_tensor(dict, "quantized_cdf", what), dict_tensor(dict, "cdf_lengths", what),
                dict_tensor(dict, "offsets", what), what);
  if (t.kind == ModelKind::kEntropyBottleneck) {
    t.medians = float32_values(dict_tensor(dict, "medians", what), what + ": medians");
  } else {
    t.scale_table = float32_values(dict_tensor(dict, "scale_table", what), what + ": scale_table");
    auto bound = dict.get("scale_bound");
    auto value = bound ? bound->as_double() : std::nullopt;
    if (!value) fail("{}: table dict has no number \"scale_bound\"", what);
    t.scale_bound = static_cast<float>(*value);
  }
  t.validate(what);
  return t;
}

// Format (a): a CompressAI module's registered buffers.
EntropyTables from_module_buffers(const torch_file::TorchCheckpoint& checkpoint,
                                  std::string_view prefix, const std::string& what) {
  const torch_file::StateDict sd = checkpoint.state_dict(prefix);
  const Tensor* cdf = sd.find("_quantized_cdf");
  if (cdf == nullptr) {
    std::set<std::string> prefixes;
    for (const auto& entry : checkpoint.state_dict().entries) {
      if (entry.name.ends_with("_quantized_cdf")) {
        prefixes.insert(entry.name.substr(0, entry.name.size() - 14));
      }
    }
    fail("{}: no '{}_quantized_cdf' buffer{}{}", what, prefix,
         prefixes.empty() ? "" : "; entropy models found under the prefixes: ",
         fmt::join(prefixes, ", "));
  }
  EntropyTables t;
  t.cdfs = cdfs_from(*cdf, sd.at("_cdf_length"), sd.at("_offset"), what);
  if (const Tensor* quantiles = sd.find("quantiles")) {
    t.kind = ModelKind::kEntropyBottleneck;
    if (quantiles->rank() != 3 || quantiles->dim(1) != 1 || quantiles->dim(2) != 3) {
      fail("{}: quantiles {} should be (C, 1, 3)", what, quantiles->describe());
    }
    auto q = float32_values(*quantiles, what + ": quantiles");
    for (size_t c = 0; c < q.size() / 3; ++c) t.medians.push_back(q[3 * c + 1]);
  } else if (const Tensor* scale_table = sd.find("scale_table")) {
    t.kind = ModelKind::kGaussianConditional;
    t.scale_table = float32_values(*scale_table, what + ": scale_table");
    const Tensor* bound = sd.find("scale_bound");
    if (bound == nullptr) bound = sd.find("lower_bound_scale.bound");
    if (bound == nullptr || bound->numel() != 1) {
      fail("{}: GaussianConditional without a one-element 'scale_bound' buffer", what);
    }
    t.scale_bound = float32_values(*bound, what + ": scale_bound")[0];
  } else {
    fail(
        "{}: '{}_quantized_cdf' has neither 'quantiles' (EntropyBottleneck) nor 'scale_table' "
        "(GaussianConditional) beside it",
        what, prefix);
  }
  t.validate(what);
  return t;
}

}  // namespace

EntropyTables read_tables_checkpoint(const torch_file::TorchCheckpoint& checkpoint,
                                     std::string_view prefix) {
  std::string what = checkpoint.name();
  if (!prefix.empty()) what += fmt::format(" (prefix '{}')", prefix);
  const auto& root = checkpoint.root();
  if (prefix.empty() && root && root->is_dict() && root->get("quantized_cdf") &&
      root->get("kind")) {
    return from_table_dict(*root, what);
  }
  return from_module_buffers(checkpoint, prefix, what);
}

}  // namespace torchless::entropy
