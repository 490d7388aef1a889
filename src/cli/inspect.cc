// `torchless inspect FILE [--json] [--salvage]`: detects the format by content and prints what
// the file holds. See cli/inspect.h for the registry and the JSON schema.
#include "cli/inspect.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>

#include "cli/command.h"
#include "torchless/core/error.h"
#include "torchless/formats/npy.h"
#include "torchless/formats/pickle.h"
#include "torchless/formats/safetensors.h"
#include "torchless/formats/torch_file.h"
#include "torchless/formats/zip.h"

namespace torchless::cli {

std::map<std::string, Inspector>& inspector_registry() {
  static std::map<std::string, Inspector> registry;
  return registry;
}

namespace {

bool starts_with(const Buffer& bytes, std::string_view prefix) {
  return bytes.size() >= prefix.size() && bytes.view().substr(0, prefix.size()) == prefix;
}

// torch's legacy format starts with the pickled magic number 0x1950a86a20f9469cfc6c (LONG1).
constexpr std::string_view kLegacyMagic =
    "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

std::string count_text(uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string tensor_text(const InspectedTensor& t) {
  std::string out =
      fmt::format("{}{}  {}", dtype_name(t.dtype), shape_to_string(t.shape), size_text(t.bytes));
  if (!t.note.empty()) out += "  (" + t.note + ")";
  return out;
}

InspectedTensor describe_tensor(std::string name, const Tensor& tensor, std::string note = {}) {
  return {std::move(name), tensor.dtype(), tensor.shape(), tensor.nbytes(), std::move(note)};
}

// --- value trees (checkpoints, pickles) ---------------------------------------------------------

using pickle::Kind;
using pickle::ValuePtr;

InspectNode::Type node_type(const pickle::Value& v) {
  switch (v.kind) {
    case Kind::kDict:
    case Kind::kObject:
    case Kind::kSparseTensor:
      return InspectNode::Type::kDict;
    case Kind::kList:
    case Kind::kSet:
    case Kind::kFrozenSet:
      return InspectNode::Type::kList;
    case Kind::kTuple:
      return InspectNode::Type::kTuple;
    default:
      return InspectNode::Type::kValue;
  }
}

std::string container_label(const pickle::Value& v) {
  if (!v.type_name.empty()) return v.type_name;
  return std::string(pickle::kind_name(v.kind));
}

// Builds the tree from a walk that gives each node's '/'-separated path, parents first.
class TreeBuilder {
 public:
  void visit(const std::string& path, const ValuePtr& node,
             const std::unordered_map<const pickle::TensorInfo*, size_t>& tensor_index) {
    FlatNode flat;
    if ((node->kind == Kind::kTensor || node->kind == Kind::kScalar) && node->tensor) {
      auto it = tensor_index.find(node->tensor.get());
      if (it != tensor_index.end()) {
        flat.node.type = InspectNode::Type::kTensor;
        flat.node.tensor = it->second;
      } else {
        flat.node.value = node->repr(80);
      }
    } else {
      flat.node.type = node_type(*node);
      if (flat.node.type == InspectNode::Type::kValue) {
        flat.node.value = node->repr(80);
      } else {
        flat.node.value = container_label(*node);
      }
    }
    size_t index = nodes_.size();
    nodes_.push_back(std::move(flat));
    by_path_[path] = index;
    if (!path.empty()) {
      // Keys may themselves contain '/': the parent is the longest known prefix.
      std::string parent = path;
      while (true) {
        auto cut = parent.rfind('/');
        parent = cut == std::string::npos ? "" : parent.substr(0, cut);
        auto it = by_path_.find(parent);
        if (it != by_path_.end()) {
          nodes_[it->second].children.push_back(index);
          nodes_[index].node.name = parent.empty() ? path : path.substr(parent.size() + 1);
          break;
        }
        if (parent.empty()) break;
      }
    }
  }

  InspectNode build() { return assemble(0); }

 private:
  struct FlatNode {
    InspectNode node;
    std::vector<size_t> children;
  };

  InspectNode assemble(size_t index) {
    InspectNode node = std::move(nodes_[index].node);
    for (size_t child : nodes_[index].children) node.children.push_back(assemble(child));
    return node;
  }

  std::vector<FlatNode> nodes_;
  std::unordered_map<std::string, size_t> by_path_;
};

Inspection inspect_checkpoint(const InspectRequest& request) {
  torch_file::OpenOptions options;
  options.salvage = request.salvage;
  auto ckpt = torch_file::TorchCheckpoint::read(request.bytes, request.path.string(), options);
  Inspection out;
  out.format = ckpt.format() == torch_file::Format::kZip ? "pytorch-zip" : "pytorch-legacy";
  out.version = std::to_string(ckpt.version());
  if (ckpt.format() == torch_file::Format::kZip)
    out.details["archive_prefix"] = ckpt.archive_prefix();
  out.details["byteorder"] = ckpt.byteorder();
  out.details["pickle_protocol"] = ckpt.pickle_protocol();
  if (!ckpt.salvaged_globals().empty()) out.details["salvaged_globals"] = ckpt.salvaged_globals();
  out.globals = ckpt.globals();

  // Storages shared by several tensors (views, tied weights) are noted on each later user.
  std::unordered_map<const pickle::TensorInfo*, size_t> tensor_index;
  std::map<const void*, std::string> first_user;
  uint64_t storage_bytes = 0;
  for (const auto& named : ckpt.tensors()) {
    const auto& info = named.node->tensor;
    std::string note;
    const void* storage = info->storage ? static_cast<const void*>(info->storage.get()) : nullptr;
    if (storage != nullptr) {
      auto [it, first] = first_user.emplace(storage, named.path);
      if (first) {
        storage_bytes += info->storage->storage ? info->storage->storage->data.size() : 0;
      } else {
        note = "shares storage with " + it->second;
      }
    } else {
      storage_bytes += named.tensor.nbytes();
    }
    if (info->is_parameter) note = note.empty() ? "Parameter" : "Parameter, " + note;
    if (info->quantization) note = note.empty() ? "quantized" : "quantized, " + note;
    tensor_index[info.get()] = out.tensors.size();
    out.tensors.push_back(describe_tensor(named.path, named.tensor, note));
  }
  out.details["storage_bytes"] = storage_bytes;
  TreeBuilder builder;
  ckpt.walk([&](const std::string& path, const ValuePtr& node) {
    builder.visit(path, node, tensor_index);
  });
  out.tree = builder.build();
  return out;
}

// A plain pickle: no storages, but numpy arrays and scalars are tensors too.
void walk_pickle(const std::string& path, const ValuePtr& node,
                 std::set<const pickle::Value*>& seen,
                 const std::function<void(const std::string&, const ValuePtr&)>& visit) {
  if (!seen.insert(node.get()).second) return;
  visit(path, node);
  auto join = [&](const std::string& part) { return path.empty() ? part : path + "/" + part; };
  if (node->kind == Kind::kDict) {
    for (const auto& [k, v] : node->entries) {
      walk_pickle(join(k->kind == Kind::kStr ? k->text : k->repr(60)), v, seen, visit);
    }
  } else if (node->is_sequence() || node->kind == Kind::kSet || node->kind == Kind::kFrozenSet) {
    for (size_t i = 0; i < node->items.size(); ++i) {
      walk_pickle(join(std::to_string(i)), node->items[i], seen, visit);
    }
  } else if (node->kind == Kind::kObject && node->state && node->state->kind == Kind::kDict) {
    for (const auto& [k, v] : node->state->entries) {
      walk_pickle(join(k->kind == Kind::kStr ? k->text : k->repr(60)), v, seen, visit);
    }
  }
}

Inspection inspect_pickle(const InspectRequest& request) {
  pickle::ReadOptions options;
  options.salvage = request.salvage;
  options.what = request.path.string();
  auto result = pickle::read(request.bytes, options);
  Inspection out;
  out.format = "pickle";
  out.version = fmt::format("protocol {}", result.protocol);
  out.globals = result.globals;
  if (!result.salvaged.empty()) out.details["salvaged_globals"] = result.salvaged;
  std::unordered_map<const pickle::TensorInfo*, size_t> tensor_index;
  std::set<const pickle::Value*> seen;
  std::vector<std::pair<std::string, ValuePtr>> visited;
  walk_pickle("", result.value, seen, [&](const std::string& path, const ValuePtr& node) {
    visited.emplace_back(path, node);
  });
  for (const auto& [path, node] : visited) {
    if ((node->kind == Kind::kTensor || node->kind == Kind::kScalar) && node->tensor &&
        node->tensor->bound) {
      tensor_index[node->tensor.get()] = out.tensors.size();
      out.tensors.push_back(
          describe_tensor(path, node->tensor->tensor, node->tensor->from_numpy ? "numpy" : ""));
    }
  }
  TreeBuilder builder;
  for (const auto& [path, node] : visited) builder.visit(path, node, tensor_index);
  out.tree = builder.build();
  return out;
}

Inspection inspect_safetensors(const InspectRequest& request) {
  auto file = formats::SafetensorsFile::parse(request.bytes, request.path.string());
  Inspection out;
  out.format = "safetensors";
  out.details["header_bytes"] = file.header_size();
  out.details["metadata"] = file.metadata();
  for (const auto& t : file.tensors()) out.tensors.push_back(describe_tensor(t.name, t.tensor));
  return out;
}

Inspection inspect_npy(const InspectRequest& request) {
  auto array = formats::read_npy(request.bytes, request.path.string());
  Inspection out;
  out.format = "npy";
  out.version = fmt::format("{}.{}", array.major_version, array.minor_version);
  out.details["descr"] = array.descr;
  out.details["fortran_order"] = array.fortran_order;
  out.tensors.push_back(describe_tensor(request.path.stem().string(), array.tensor));
  return out;
}

Inspection inspect_npz(const InspectRequest& request) {
  auto npz = formats::NpzArchive::parse(request.bytes, request.path.string());
  Inspection out;
  out.format = "npz";
  size_t deflated = 0;
  for (const auto& e : npz.zip().entries()) deflated += e.is_stored() ? 0 : 1;
  out.details["records"] = npz.zip().entries().size();
  out.details["deflated_records"] = deflated;
  for (const auto& name : npz.names()) {
    auto array = npz.read(name);
    out.tensors.push_back(describe_tensor(name, array.tensor, array.descr));
  }
  return out;
}

Inspection inspect_zip(const InspectRequest& request) {
  auto zip = formats::ZipArchive::parse(request.bytes, request.path.string());
  Inspection out;
  out.format = "zip";
  auto records = nlohmann::ordered_json::array();
  for (const auto& e : zip.entries()) {
    nlohmann::ordered_json record = {{"name", e.name},
                                     {"method", e.is_stored() ? "stored" : "deflate"},
                                     {"size", e.uncompressed_size},
                                     {"compressed_size", e.compressed_size}};
    if (!e.name_problem.empty()) record["unsafe_name"] = e.name_problem;
    records.push_back(std::move(record));
  }
  out.details["records"] = std::move(records);
  if (zip.prefix_size() > 0) out.details["prefix_bytes"] = zip.prefix_size();
  return out;
}

InspectorRegistration kCheckpointZip{"pytorch-zip", inspect_checkpoint};
InspectorRegistration kCheckpointLegacy{"pytorch-legacy", inspect_checkpoint};
InspectorRegistration kPickle{"pickle", inspect_pickle};
InspectorRegistration kSafetensors{"safetensors", inspect_safetensors};
InspectorRegistration kNpy{"npy", inspect_npy};
InspectorRegistration kNpz{"npz", inspect_npz};
InspectorRegistration kZip{"zip", inspect_zip};

// --- output ---------------------------------------------------------------------------------

nlohmann::ordered_json node_json(const InspectNode& node, const Inspection& in) {
  static const char* kTypes[] = {"dict", "list", "tuple", "tensor", "value"};
  nlohmann::ordered_json j = {{"type", kTypes[static_cast<int>(node.type)]}, {"name", node.name}};
  if (node.type == InspectNode::Type::kTensor) {
    const auto& t = in.tensors.at(node.tensor);
    j["dtype"] = dtype_name(t.dtype);
    j["shape"] = t.shape;
    j["bytes"] = t.bytes;
  } else if (node.type == InspectNode::Type::kValue) {
    j["value"] = node.value;
  } else {
    j["class"] = node.value;
    auto children = nlohmann::ordered_json::array();
    for (const auto& c : node.children) children.push_back(node_json(c, in));
    j["children"] = std::move(children);
  }
  return j;
}

struct Totals {
  uint64_t tensors = 0, parameters = 0, bytes = 0;
};

Totals totals_of(const Inspection& in) {
  Totals t;
  for (const auto& tensor : in.tensors) {
    t.tensors += 1;
    t.parameters += static_cast<uint64_t>(checked_numel(tensor.shape, tensor.name));
    t.bytes += tensor.bytes;
  }
  return t;
}

void print_node(std::string& out, const InspectNode& node, const Inspection& in, int depth) {
  std::string indent(static_cast<size_t>(2 * depth), ' ');
  switch (node.type) {
    case InspectNode::Type::kTensor:
      out += fmt::format("{}{}: {}\n", indent, node.name, tensor_text(in.tensors.at(node.tensor)));
      return;
    case InspectNode::Type::kValue:
      out += fmt::format("{}{}: {}\n", indent, node.name, node.value);
      return;
    default: {
      std::string name = node.name.empty() ? "<root>" : node.name;
      bool scalars = node.type != InspectNode::Type::kDict && !node.children.empty();
      for (const auto& c : node.children) scalars = scalars && c.type == InspectNode::Type::kValue;
      if (scalars) {  // a list of plain values reads best on one line
        std::string items;
        for (const auto& c : node.children) {
          if (items.size() > 80) {
            items += ", ...";
            break;
          }
          items += (items.empty() ? "" : ", ") + c.value;
        }
        bool tuple = node.type == InspectNode::Type::kTuple;
        out += fmt::format("{}{}: {}{}{}\n", indent, name, tuple ? "(" : "[", items,
                           tuple ? ")" : "]");
        return;
      }
      out += fmt::format("{}{}: {} ({} items)\n", indent, name, node.value, node.children.size());
      for (const auto& c : node.children) print_node(out, c, in, depth + 1);
    }
  }
}

}  // namespace

std::string detect_format(const std::filesystem::path& path, const Buffer& bytes) {
  const std::string name = path.string();
  if (bytes.empty()) fail("{}: empty file", name);
  if (formats::ZipArchive::looks_like_zip(bytes.bytes())) {
    auto zip = formats::ZipArchive::parse(bytes, name);
    bool all_npy = !zip.entries().empty();
    for (const auto& e : zip.entries()) {
      if (e.name.ends_with("data.pkl")) return "pytorch-zip";
      all_npy = all_npy && e.name.ends_with(".npy");
    }
    return all_npy ? "npz" : "zip";
  }
  if (formats::looks_like_npy(bytes.bytes())) return "npy";
  if (formats::SafetensorsFile::looks_like_safetensors(bytes.bytes())) return "safetensors";
  if (starts_with(bytes, kLegacyMagic)) return "pytorch-legacy";
  if (bytes.size() > 262 && bytes.view().substr(257, 5) == "ustar") return "pytorch-legacy";
  if (bytes.u8()[0] == 0x80 && bytes.size() > 1 && bytes.u8()[1] <= 5) return "pickle";
  auto extension = path.extension().string();
  if (extension == ".pkl" || extension == ".pickle") return "pickle";
  if (extension == ".onnx" ||
      (bytes.u8()[0] == 0x08 && extension != ".pt" && extension != ".pth")) {
    return "onnx";
  }
  if (starts_with(bytes, "version https://git-lfs")) {
    fail("{}: this is a Git LFS pointer, not the file itself (run `git lfs pull`)", name);
  }
  if (starts_with(bytes, "<!DOCTYPE") || starts_with(bytes, "<html") ||
      starts_with(bytes, "<!doctype")) {
    fail("{}: this is an HTML page (a download link saved instead of the file?)", name);
  }
  std::string hex;
  for (size_t i = 0; i < std::min<size_t>(bytes.size(), 8); ++i) {
    hex += fmt::format("{:02x}", bytes.u8()[i]);
  }
  fail(
      "{}: unrecognised format (first bytes {}); expected a PyTorch checkpoint, pickle, "
      "safetensors, .npy/.npz or ONNX file",
      name, hex);
}

nlohmann::ordered_json inspection_json(const std::filesystem::path& path, const Inspection& in) {
  nlohmann::ordered_json j;
  j["schema"] = 1;
  j["file"] = path.string();
  j["format"] = in.format;
  j["version"] = in.version;
  j["details"] = in.details;
  j["globals"] = in.globals;
  if (in.tree) j["tree"] = node_json(*in.tree, in);
  auto tensors = nlohmann::ordered_json::array();
  for (const auto& t : in.tensors) {
    nlohmann::ordered_json tj = {
        {"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"bytes", t.bytes}};
    if (!t.note.empty()) tj["note"] = t.note;
    tensors.push_back(std::move(tj));
  }
  j["tensors"] = std::move(tensors);
  Totals totals = totals_of(in);
  j["totals"] = {
      {"tensors", totals.tensors}, {"parameters", totals.parameters}, {"bytes", totals.bytes}};
  return j;
}

std::string inspection_text(const std::filesystem::path& path, const Inspection& in) {
  std::string out = fmt::format("{}: {}", path.string(), in.format);
  if (!in.version.empty()) out += " (version " + in.version + ")";
  out += "\n";
  for (const auto& [key, value] : in.details.items()) {
    if (key == "records" && value.is_array()) {
      out += fmt::format("  records: {}\n", value.size());
      for (const auto& r : value) {
        out += fmt::format("    {}  {}  {}{}\n", r["name"].get<std::string>(),
                           r["method"].get<std::string>(), size_text(r["size"].get<uint64_t>()),
                           r.contains("unsafe_name")
                               ? "  (unsafe name: " + r["unsafe_name"].get<std::string>() + ")"
                               : "");
      }
      continue;
    }
    out +=
        fmt::format("  {}: {}\n", key, value.is_string() ? value.get<std::string>() : value.dump());
  }
  if (!in.globals.empty()) {
    out += "  globals:\n";
    for (const auto& g : in.globals) out += "    " + g + "\n";
  }
  if (in.tree) {
    print_node(out, *in.tree, in, 0);
  } else {
    size_t width = 4;
    for (const auto& t : in.tensors) width = std::max(width, t.name.size());
    for (const auto& t : in.tensors) {
      out += fmt::format("  {:<{}}  {}\n", t.name, width, tensor_text(t));
    }
  }
  Totals totals = totals_of(in);
  out += fmt::format("total: {} tensors, {} parameters, {}\n", count_text(totals.tensors),
                     count_text(totals.parameters), size_text(totals.bytes));
  return out;
}

namespace {

struct InspectOptions {
  std::string file;
  bool json = false;
  bool salvage = false;
};

int run_inspect(const InspectOptions& options) {
  InspectRequest request;
  request.path = options.file;
  request.bytes = Buffer::map_file(request.path);
  request.salvage = options.salvage;
  std::string format = detect_format(request.path, request.bytes);
  auto& registry = inspector_registry();
  auto it = registry.find(format);
  if (it == registry.end()) {
    throw UnsupportedError(
        fmt::format("{}: looks like {}, but no inspector for {} is built into this torchless",
                    options.file, format, format));
  }
  Inspection inspection = it->second(request);
  std::string text = options.json ? inspection_json(request.path, inspection).dump(1) + "\n"
                                  : inspection_text(request.path, inspection);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

CommandRegistration kInspect{
    "inspect", "Show what a checkpoint, pickle, safetensors, numpy or ONNX file holds",
    [](CLI::App& app) {
      auto options = std::make_shared<InspectOptions>();
      app.add_option("file", options->file, "The file (format detected from its content)")
          ->required();
      app.add_flag("--json", options->json,
                   "One JSON object (schema 1): format, version, details, globals, tree, "
                   "tensors [{name, dtype, shape, bytes}], totals {tensors, parameters, bytes}");
      app.add_flag("--salvage", options->salvage,
                   "Pickles: keep non-allowlisted objects as inert records (nothing executes)");
      app.footer(
          "Formats (detected from content): pytorch-zip, pytorch-legacy, pickle, safetensors, "
          "npy, npz, zip, onnx.\n"
          "--json schema 1:\n"
          "  {\"schema\": 1, \"file\", \"format\", \"version\": str,\n"
          "   \"details\": {format-specific},  \"globals\": [\"module.name\"],\n"
          "   \"tree\": node (checkpoints and pickles),\n"
          "   \"tensors\": [{\"name\", \"dtype\", \"shape\": [int], \"bytes\": int, \"note\"?}],\n"
          "   \"totals\": {\"tensors\", \"parameters\", \"bytes\": int}}\n"
          "  node: {\"type\": dict|list|tuple|tensor|value, \"name\", then \"class\" + "
          "\"children\" | \"dtype\" + \"shape\" + \"bytes\" | \"value\"}");
      return [options] { return run_inspect(*options); };
    }};

}  // namespace

std::string size_text(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024.0;
  int u = 0;
  while (v >= 1024.0 && u < 3) {
    v /= 1024.0;
    ++u;
  }
  return fmt::format("{:.1f} {}", v, units[u]);
}

}  // namespace torchless::cli
