// Tables inside state_dict files: a CompressAI module's buffers in a PyTorch checkpoint or a
// safetensors file, or a saved table dict (torch.save'd, or the same tensors in safetensors).
#include <fmt/ranges.h>

#include <set>

#include "torchless/core/error.h"
#include "torchless/entropy/tables.h"
#include "torchless/formats/safetensors.h"

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

ModelKind kind_from(std::string_view text, const std::string& what) {
  if (text == "EntropyBottleneck") return ModelKind::kEntropyBottleneck;
  if (text == "GaussianConditional") return ModelKind::kGaussianConditional;
  fail("{}: kind \"{}\" is neither \"EntropyBottleneck\" nor \"GaussianConditional\"", what, text);
}

// Format (b), whichever file holds it: `tensor(key)` gives the named tensor or fails.
template <class TensorOf>
EntropyTables from_table_tensors(ModelKind kind, const TensorOf& tensor, const std::string& what) {
  EntropyTables t;
  t.kind = kind;
  t.cdfs = cdfs_from(tensor("quantized_cdf"), tensor("cdf_lengths"), tensor("offsets"), what);
  if (t.kind == ModelKind::kEntropyBottleneck) {
    t.medians = float32_values(tensor("medians"), what + ": medians");
  } else {
    t.scale_table = float32_values(tensor("scale_table"), what + ": scale_table");
  }
  return t;
}

// Format (b): the dict written by torch.save({"kind": ..., "quantized_cdf": ..., ...}).
EntropyTables from_table_dict(const pickle::Value& dict, const std::string& what) {
  auto kind = dict.get("kind");
  if (!kind || kind->kind != pickle::Kind::kStr)
    fail("{}: table dict has no string \"kind\"", what);
  auto tensor = [&](const char* key) -> const Tensor& {
    auto v = dict.get(key);
    if (!v || !v->is_tensor()) fail("{}: table dict has no tensor \"{}\"", what, key);
    return v->tensor->tensor;
  };
  EntropyTables t = from_table_tensors(kind_from(kind->text, what), tensor, what);
  if (t.kind == ModelKind::kGaussianConditional) {
    auto bound = dict.get("scale_bound");
    auto value = bound ? bound->as_double() : std::nullopt;
    if (!value) fail("{}: table dict has no number \"scale_bound\"", what);
    t.scale_bound = static_cast<float>(*value);
  }
  t.validate(what);
  return t;
}

// Format (a): a CompressAI module's registered buffers. `module` holds the module's entries
// with `prefix` taken off; `all` is every entry of the file (to name the prefixes that would
// have worked).
EntropyTables from_module_buffers(const torch_file::StateDict& module,
                                  const torch_file::StateDict& all, std::string_view prefix,
                                  const std::string& what) {
  const Tensor* cdf = module.find("_quantized_cdf");
  if (cdf == nullptr) {
    std::set<std::string> prefixes;
    for (const auto& entry : all.entries) {
      if (entry.name.ends_with("_quantized_cdf")) {
        prefixes.insert(entry.name.substr(0, entry.name.size() - 14));
      }
    }
    fail("{}: no '{}_quantized_cdf' buffer{}{}", what, prefix,
         prefixes.empty() ? "" : "; entropy models found under the prefixes: ",
         fmt::join(prefixes, ", "));
  }
  EntropyTables t;
  t.cdfs = cdfs_from(*cdf, module.at("_cdf_length"), module.at("_offset"), what);
  if (const Tensor* quantiles = module.find("quantiles")) {
    t.kind = ModelKind::kEntropyBottleneck;
    if (quantiles->rank() != 3 || quantiles->dim(1) != 1 || quantiles->dim(2) != 3) {
      fail("{}: quantiles {} should be (C, 1, 3)", what, quantiles->describe());
    }
    auto q = float32_values(*quantiles, what + ": quantiles");
    for (size_t c = 0; c < q.size() / 3; ++c) t.medians.push_back(q[3 * c + 1]);
  } else if (const Tensor* scale_table = module.find("scale_table")) {
    t.kind = ModelKind::kGaussianConditional;
    t.scale_table = float32_values(*scale_table, what + ": scale_table");
    const Tensor* bound = module.find("scale_bound");
    if (bound == nullptr) bound = module.find("lower_bound_scale.bound");
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

std::string describe(std::string name, std::string_view prefix) {
  if (!prefix.empty()) name += fmt::format(" (prefix '{}')", prefix);
  return name;
}

}  // namespace

EntropyTables read_tables_checkpoint(const torch_file::TorchCheckpoint& checkpoint,
                                     std::string_view prefix) {
  const std::string what = describe(checkpoint.name(), prefix);
  const auto& root = checkpoint.root();
  if (prefix.empty() && root && root->is_dict() && root->get("quantized_cdf") &&
      root->get("kind")) {
    return from_table_dict(*root, what);
  }
  return from_module_buffers(checkpoint.state_dict(prefix), checkpoint.state_dict(), prefix, what);
}

EntropyTables read_tables_safetensors(const formats::SafetensorsFile& file,
                                      std::string_view prefix) {
  const std::string what = describe(file.name(), prefix);
  auto kind = file.metadata().find("kind");
  if (prefix.empty() && kind != file.metadata().end() && file.find("quantized_cdf") != nullptr) {
    auto tensor = [&](const char* key) -> const Tensor& {
      const auto* entry = file.find(key);
      if (entry == nullptr) fail("{}: table file has no tensor \"{}\"", what, key);
      return entry->tensor;
    };
    EntropyTables t = from_table_tensors(kind_from(kind->second, what), tensor, what);
    if (t.kind == ModelKind::kGaussianConditional) {
      const Tensor& bound = tensor("scale_bound");
      if (bound.numel() != 1)
        fail("{}: scale_bound {} should have one element", what, bound.describe());
      t.scale_bound = float32_values(bound, what + ": scale_bound")[0];
    }
    t.validate(what);
    return t;
  }
  torch_file::StateDict all, module;
  for (const auto& entry : file.tensors()) {
    all.entries.push_back({entry.name, entry.tensor});
    if (entry.name.starts_with(prefix)) {
      module.entries.push_back({entry.name.substr(prefix.size()), entry.tensor});
    }
  }
  return from_module_buffers(module, all, prefix, what);
}

}  // namespace torchless::entropy
