// ONNX inspection, in two places:
//  - `torchless inspect model.onnx [--json]`: the generic command (cli/inspect.h) hands ONNX files
//    to the inspector registered here, which fills the common Inspection (details: versions,
//    counts, inputs/outputs, op histogram; tensors: the initializers);
//  - `torchless onnx inspect model.onnx`: the ONNX-only view, for a person (a summary table, the
//    op histogram, --nodes), for a program (--json), for Graphviz (--dot FILE), and what ONNX
//    Runtime's optimiser makes of it (--optimized: both graphs side by side, fusions inferred).
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli/command.h"
#include "cli/inspect.h"
#include "torchless/formats/onnx_model.h"
#include "torchless/nn/graph.h"

namespace torchless::cli {
namespace {

using formats::OnnxModel;

struct OnnxInspectOptions {
  std::string file;
  bool json = false;
  bool list_nodes = false;
  std::string dot_file;
  bool optimized = false;
  std::string level = "all";
};

std::string dtype_label(int32_t elem_type) {
  return formats::onnx_elem_type_name(elem_type);
}

nlohmann::json value_info_json(const formats::OnnxValueInfo& v) {
  nlohmann::json shape = nlohmann::json::array();
  for (const auto& d : v.shape) {
    if (!d.param.empty()) {
      shape.push_back(d.param);
    } else if (d.value) {
      shape.push_back(*d.value);
    } else {
      shape.push_back(nullptr);
    }
  }
  return {{"name", v.name},
          {"elem_type", v.elem_type},
          {"dtype", dtype_label(v.elem_type)},
          {"shape", v.has_shape ? shape : nlohmann::json(nullptr)}};
}

nlohmann::json model_json(const OnnxModel& m, bool with_nodes) {
  nlohmann::json j;
  j["file"] = m.name();
  j["ir_version"] = m.ir_version();
  j["opsets"] = m.opsets();
  j["producer_name"] = m.producer_name();
  j["producer_version"] = m.producer_version();
  j["graph_name"] = m.graph_name();
  j["node_count"] = m.nodes().size();
  j["edge_count"] = m.edges().size();
  j["input_count"] = m.inputs().size();
  j["output_count"] = m.outputs().size();
  j["initializer_count"] = m.initializers().size();
  j["parameter_count"] = m.parameter_count();
  j["initializer_bytes"] = m.initializer_bytes();
  j["op_histogram"] = m.op_histogram();
  j["inputs"] = nlohmann::json::array();
  for (const auto& v : m.inputs()) j["inputs"].push_back(value_info_json(v));
  j["outputs"] = nlohmann::json::array();
  for (const auto& v : m.outputs()) j["outputs"].push_back(value_info_json(v));
  j["initializers"] = nlohmann::json::array();
  for (const auto& i : m.initializers()) {
    nlohmann::json e = {{"name", i.name},    {"dtype", dtype_label(i.elem_type)},
                        {"shape", i.shape},  {"numel", i.numel},
                        {"bytes", i.nbytes}, {"external", i.external}};
    if (i.external) {
      e["location"] = i.external_location;
      e["offset"] = i.external_offset;
    }
    j["initializers"].push_back(std::move(e));
  }
  if (with_nodes) {
    j["nodes"] = nlohmann::json::array();
    for (const auto& n : m.nodes()) {
      nlohmann::json attributes = nlohmann::json::object();
      for (const auto& a : n.attributes) attributes[a.name] = a.summary;
      j["nodes"].push_back({{"name", n.name},
                            {"op_type", n.op_type},
                            {"domain", n.domain},
                            {"inputs", n.inputs},
                            {"outputs", n.outputs},
                            {"attributes", attributes}});
    }
    j["edges"] = nlohmann::json::array();
    for (const auto& e : m.edges()) {
      j["edges"].push_back({{"from", e.producer}, {"to", e.consumer}, {"tensor", e.tensor}});
    }
  }
  return j;
}

std::string text_summary(const OnnxModel& m, bool list_nodes) {
  std::string out;
  auto line = [&out](std::string s) { out += s + "\n"; };
  std::string opsets;
  for (const auto& [domain, version] : m.opsets()) {
    opsets += fmt::format("{}{} {}", opsets.empty() ? "" : ", ", domain, version);
  }
  line(fmt::format("{}: ONNX model, IR version {}, opsets {}", m.name(), m.ir_version(), opsets));
  line(fmt::format("  producer  {} {}", m.producer_name(), m.producer_version()));
  line(fmt::format("  graph     {}", m.graph_name()));
  line("");
  line(fmt::format("  {:<14}{:>10}", "nodes", m.nodes().size()));
  line(fmt::format("  {:<14}{:>10}", "edges", m.edges().size()));
  line(fmt::format("  {:<14}{:>10}", "inputs", m.inputs().size()));
  line(fmt::format("  {:<14}{:>10}", "outputs", m.outputs().size()));
  line(fmt::format("  {:<14}{:>10}", "initializers", m.initializers().size()));
  line(fmt::format("  {:<14}{:>10}  ({})", "parameters", m.parameter_count(),
                   size_text(m.initializer_bytes())));
  line("");
  line("inputs");
  for (const auto& v : m.inputs()) line(fmt::format("  {:<24} {}", v.name, v.describe()));
  line("outputs");
  for (const auto& v : m.outputs()) line(fmt::format("  {:<24} {}", v.name, v.describe()));
  if (!m.initializers().empty()) {
    line("initializers");
    for (const auto& i : m.initializers()) {
      std::string where =
          i.external ? fmt::format("  external {}@{}", i.external_location, i.external_offset) : "";
      line(fmt::format("  {:<32} {:<8} {:<18} {:>10}{}", i.name, dtype_label(i.elem_type),
                       shape_to_string(i.shape), size_text(i.nbytes), where));
    }
  }
  line("op histogram");
  for (const auto& [op, count] : m.op_histogram()) line(fmt::format("  {:<32}{:>6}", op, count));
  if (list_nodes) {
    line("nodes");
    for (size_t k = 0; k < m.nodes().size(); ++k) {
      const auto& n = m.nodes()[k];
      std::string attributes;
      for (const auto& a : n.attributes) {
        attributes += fmt::format("{}{}={}", attributes.empty() ? "" : ", ", a.name, a.summary);
      }
      line(fmt::format("  #{:<4} {:<20} {:<24} ({}) -> ({}){}", k, n.qualified_op(), n.name,
                       fmt::join(n.inputs, ", "), fmt::join(n.outputs, ", "),
                       attributes.empty() ? "" : "  {" + attributes + "}"));
    }
  }
  return out;
}

// Graphviz strings: quotes and backslashes escaped, newlines as DOT's centred line break.
std::string dot_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string dot_graph(const OnnxModel& m) {
  std::string out;
  out += fmt::format("digraph \"{}\" {{\n",
                     dot_escape(m.graph_name().empty() ? "onnx" : m.graph_name()));
  out += "  rankdir=TB;\n";
  out += "  node [fontname=\"Helvetica\", fontsize=10];\n";
  out += "  edge [fontname=\"Helvetica\", fontsize=8, color=\"#555555\"];\n";
  // Where each tensor comes from: a node, a graph input, or an initializer.
  std::map<std::string, std::string> source;
  for (size_t k = 0; k < m.inputs().size(); ++k) {
    const auto& v = m.inputs()[k];
    std::string id = fmt::format("input{}", k);
    source[v.name] = id;
    out += fmt::format(
        "  {} [shape=ellipse, style=filled, fillcolor=\"#c8e6c9\", label=\"{}\\n{}\"];\n", id,
        dot_escape(v.name), dot_escape(v.describe()));
  }
  for (size_t k = 0; k < m.initializers().size(); ++k) {
    const auto& i = m.initializers()[k];
    std::string id = fmt::format("init{}", k);
    source[i.name] = id;
    out += fmt::format(
        "  {} [shape=note, style=filled, fillcolor=\"#fff3c4\", fontsize=8, "
        "label=\"{}\\n{}{}\"];\n",
        id, dot_escape(i.name), dot_escape(dtype_label(i.elem_type)),
        dot_escape(shape_to_string(i.shape)));
  }
  for (size_t k = 0; k < m.nodes().size(); ++k) {
    const auto& n = m.nodes()[k];
    for (const auto& o : n.outputs) {
      if (!o.empty()) source[o] = fmt::format("node{}", k);
    }
    out += fmt::format(
        "  node{} [shape=box, style=\"rounded,filled\", fillcolor=\"#dbe7f5\", "
        "label=\"{}\\n{}\"];\n",
        k, dot_escape(n.qualified_op()), dot_escape(n.name));
  }
  for (size_t k = 0; k < m.outputs().size(); ++k) {
    const auto& v = m.outputs()[k];
    out += fmt::format(
        "  output{} [shape=ellipse, style=filled, fillcolor=\"#ffcdd2\", label=\"{}\\n{}\"];\n", k,
        dot_escape(v.name), dot_escape(v.describe()));
  }
  for (size_t k = 0; k < m.nodes().size(); ++k) {
    for (const auto& in : m.nodes()[k].inputs) {
      auto it = source.find(in);
      if (in.empty() || it == source.end()) continue;
      out += fmt::format("  {} -> node{} [label=\"{}\"];\n", it->second, k, dot_escape(in));
    }
  }
  for (size_t k = 0; k < m.outputs().size(); ++k) {
    auto it = source.find(m.outputs()[k].name);
    if (it == source.end()) continue;
    out += fmt::format("  {} -> output{} [label=\"{}\"];\n", it->second, k,
                       dot_escape(m.outputs()[k].name));
  }
  out += "}\n";
  return out;
}

// What ONNX Runtime's optimiser did, read from the op histograms before and after and from the
// fused nodes' names and attributes. ORT does not report its rewrites; these are inferences.
std::vector<std::string> infer_fusions(const OnnxModel& before, const OnnxModel& after) {
  auto b = before.op_histogram();
  auto a = after.op_histogram();
  auto count = [](const std::map<std::string, int64_t>& h, const std::string& op) {
    auto it = h.find(op);
    return it == h.end() ? int64_t{0} : it->second;
  };
  auto delta = [&](const std::string& op) { return count(a, op) - count(b, op); };
  std::vector<std::string> found;
  std::set<std::string> explained;

  if (delta("BatchNormalization") < 0 && count(b, "Conv") > 0) {
    found.push_back(
        fmt::format("Conv+BatchNormalization: {} BatchNormalization folded into the "
                    "preceding Conv's weights and bias",
                    -delta("BatchNormalization")));
    explained.insert("BatchNormalization");
  }
  for (const char* fused : {"com.microsoft.FusedConv", "com.microsoft.nchwc.Conv"}) {
    if (count(a, fused) == 0) continue;
    std::map<std::string, int64_t> by_activation;
    for (const auto& n : after.nodes()) {
      if (n.qualified_op() != fused) continue;
      std::string activation = "none";
      for (const auto& attr : n.attributes) {
        if (attr.name != "activation") continue;
        activation = attr.summary;  // a quoted string attribute
        if (activation.size() >= 2 && activation.front() == '"') {
          activation = activation.substr(1, activation.size() - 2);
        }
      }
      ++by_activation[activation];
    }
    for (const auto& [activation, n] : by_activation) {
      if (activation == "none") continue;
      found.push_back(
          fmt::format("Conv+{} -> {} (activation={}) x{}", activation, fused, activation, n));
      explained.insert(activation);
    }
    explained.insert(fused);
    explained.insert("Conv");
  }
  if (count(a, "com.microsoft.nchwc.Conv") > 0 ||
      count(a, "com.microsoft.nchwc.ReorderInput") > 0) {
    found.push_back(
        "NCHWc layout: Conv rewritten to com.microsoft.nchwc.Conv with ReorderInput/ReorderOutput "
        "around blocked tensors (CPU-specific; level 'all')");
    for (const auto& [op, n] : a) {
      if (op.rfind("com.microsoft.nchwc.", 0) == 0) explained.insert(op);
    }
  }
  if (delta("Gemm") > 0 && delta("MatMul") < 0 && delta("Add") < 0) {
    found.push_back(fmt::format("MatMul+Add -> Gemm x{}", delta("Gemm")));
    explained.insert({"Gemm", "MatMul", "Add"});
    if (delta("Transpose") < 0) {
      found.push_back(fmt::format("Transpose of a weight folded into Gemm (transA/transB) x{}",
                                  -delta("Transpose")));
      explained.insert("Transpose");
    }
    if (delta("Reshape") > 0) {
      // Gemm is 2-D only: ORT flattens a batched MatMul input around it.
      found.push_back(
          fmt::format("{} Reshape added to flatten Gemm's input to 2-D", delta("Reshape")));
      explained.insert("Reshape");
    }
  }
  if (count(a, "com.microsoft.FusedGemm") > count(b, "com.microsoft.FusedGemm")) {
    found.push_back(fmt::format("Gemm+activation -> com.microsoft.FusedGemm x{}",
                                delta("com.microsoft.FusedGemm")));
    explained.insert("com.microsoft.FusedGemm");
  }
  if (delta("com.microsoft.FusedMatMul") > 0) {
    found.push_back(fmt::format("MatMul with Transpose/scale -> com.microsoft.FusedMatMul x{}",
                                delta("com.microsoft.FusedMatMul")));
    explained.insert("com.microsoft.FusedMatMul");
  }
  // Nodes whose outputs only depend on initializers vanish by constant folding.
  int64_t folded = 0;
  std::string folded_ops;
  for (const char* op : {"Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast",
                         "ConstantOfShape", "Range"}) {
    if (delta(op) < 0) {
      folded -= delta(op);
      folded_ops += fmt::format("{}{} {}", folded_ops.empty() ? "" : ", ", -delta(op), op);
      explained.insert(op);
    }
  }
  if (folded > 0) {
    found.push_back(fmt::format("constant folding / shape propagation removed {} nodes ({})",
                                folded, folded_ops));
  }
  for (const auto& [op, n] : a) {
    if (explained.count(op) || count(b, op) >= n) continue;
    found.push_back(fmt::format("{} appeared (x{})", op, n - count(b, op)));
  }
  for (const auto& [op, n] : b) {
    if (explained.count(op) || count(a, op) >= n) continue;
    found.push_back(fmt::format("{} removed (x{})", op, n - count(a, op)));
  }
  return found;
}

std::filesystem::path temp_model_path() {
  auto dir = std::filesystem::temp_directory_path();
  return dir / fmt::format("torchless-optimized-{}-{}.onnx", ::getpid(),
                           reinterpret_cast<uintptr_t>(&dir));
}

struct OptimizedView {
  OnnxModel model;
  nn::OptimizationLevel level;
};

OptimizedView optimize(const std::string& file, const std::string& level_name) {
  nn::GraphOptions options;
  options.optimization = nn::parse_optimization_level(level_name);
  options.optimized_model_path = temp_model_path();
  struct Remove {
    std::filesystem::path path;
    ~Remove() {
      std::error_code ec;
      std::filesystem::remove(path, ec);
      std::filesystem::remove(path.string() + ".data", ec);
    }
  } cleanup{options.optimized_model_path};
  nn::Graph::load(file, options);
  auto model = OnnxModel::parse(Buffer::read_file(options.optimized_model_path),
                                fmt::format("{} (optimized, level {})", file, level_name),
                                std::filesystem::path(file).parent_path());
  return {std::move(model), options.optimization};
}

std::string side_by_side(const OnnxModel& before, const OnnxModel& after, std::string_view level,
                         const std::vector<std::string>& fusions) {
  std::string out = fmt::format("\nONNX Runtime optimiser (level {}): before | after\n", level);
  out += fmt::format("  {:<40}{:>8}{:>8}\n", "nodes", before.nodes().size(), after.nodes().size());
  out += fmt::format("  {:<40}{:>8}{:>8}\n", "edges", before.edges().size(), after.edges().size());
  out += fmt::format("  {:<40}{:>8}{:>8}\n", "initializers", before.initializers().size(),
                     after.initializers().size());
  auto b = before.op_histogram();
  auto a = after.op_histogram();
  std::set<std::string> ops;
  for (const auto& [op, n] : b) ops.insert(op);
  for (const auto& [op, n] : a) ops.insert(op);
  out += "  op histogram\n";
  for (const auto& op : ops) {
    int64_t nb = b.count(op) ? b.at(op) : 0;
    int64_t na = a.count(op) ? a.at(op) : 0;
    out += fmt::format("    {:<38}{:>8}{:>8}{}\n", op, nb, na, nb == na ? "" : "  *");
  }
  out += "  inferred rewrites\n";
  if (fusions.empty()) out += "    (none)\n";
  for (const auto& f : fusions) out += "    " + f + "\n";
  return out;
}

int run_onnx_inspect(const OnnxInspectOptions& options) {
  auto model = OnnxModel::load(options.file);
  std::optional<OptimizedView> optimized;
  std::vector<std::string> fusions;
  if (options.optimized) {
    optimized = optimize(options.file, options.level);
    fusions = infer_fusions(model, optimized->model);
  }
  if (!options.dot_file.empty()) write_file_atomic(options.dot_file, dot_graph(model));
  if (options.json) {
    auto j = model_json(model, options.list_nodes);
    if (optimized) {
      j["optimized"] = model_json(optimized->model, options.list_nodes);
      j["optimized"]["level"] = std::string(nn::optimization_level_name(optimized->level));
      j["optimized"]["rewrites"] = fusions;
    }
    std::fputs((j.dump(1) + "\n").c_str(), stdout);
    return 0;
  }
  std::string text = text_summary(model, options.list_nodes);
  if (optimized) {
    text += side_by_side(model, optimized->model, nn::optimization_level_name(optimized->level),
                         fusions);
  }
  if (!options.dot_file.empty()) {
    text += fmt::format("\ngraph written to {} (render: dot -Tsvg {} -o graph.svg)\n",
                        options.dot_file, options.dot_file);
  }
  std::fputs(text.c_str(), stdout);
  return 0;
}

Inspection inspect_onnx(const InspectRequest& request) {
  auto base = request.path.parent_path();
  auto m = OnnxModel::parse(request.bytes, request.path.string(),
                            base.empty() ? std::filesystem::path(".") : base);
  Inspection out;
  out.format = "onnx";
  out.version = fmt::format("IR {}", m.ir_version());
  std::string opsets;
  for (const auto& [domain, version] : m.opsets()) {
    opsets += fmt::format("{}{} {}", opsets.empty() ? "" : ", ", domain, version);
  }
  auto& d = out.details;
  d["opsets"] = opsets;
  d["producer"] = fmt::format("{} {}", m.producer_name(), m.producer_version());
  d["graph"] = m.graph_name();
  d["nodes"] = m.nodes().size();
  d["edges"] = m.edges().size();
  d["inputs"] = nlohmann::ordered_json::array();
  for (const auto& v : m.inputs()) d["inputs"].push_back(v.name + ": " + v.describe());
  d["outputs"] = nlohmann::ordered_json::array();
  for (const auto& v : m.outputs()) d["outputs"].push_back(v.name + ": " + v.describe());
  d["initializers"] = m.initializers().size();
  d["op_histogram"] = m.op_histogram();
  d["more"] = "torchless onnx inspect FILE [--nodes] [--dot FILE] [--optimized]";
  for (const auto& i : m.initializers()) {
    InspectedTensor t;
    t.name = i.name;
    auto dtype = formats::dtype_from_onnx(i.elem_type);
    t.dtype = dtype.value_or(DType::kUInt8);
    if (!dtype) t.note = "element type " + dtype_label(i.elem_type);
    t.shape = i.shape;
    t.bytes = i.nbytes;
    if (i.external) {
      t.note += fmt::format("{}external {}@{}", t.note.empty() ? "" : "; ", i.external_location,
                            i.external_offset);
    }
    out.tensors.push_back(std::move(t));
  }
  return out;
}

InspectorRegistration kOnnxInspector{"onnx", inspect_onnx};

void add_options(CLI::App& app, OnnxInspectOptions& o) {
  app.add_option("file", o.file, "ONNX model (.onnx)")->required()->check(CLI::ExistingFile);
  app.add_flag("--json", o.json, "print the summary as JSON");
  app.add_flag("--nodes", o.list_nodes, "list every node (and edges, with --json)");
  app.add_option("--dot", o.dot_file, "write the graph for Graphviz to FILE");
  app.add_flag("--optimized", o.optimized,
               "also run ONNX Runtime's optimiser and compare the graphs");
  app.add_option("--level", o.level, "optimisation level for --optimized")
      ->check(CLI::IsMember({"disable", "basic", "extended", "all"}));
}

// The generic `inspect` has no per-format flags; the ONNX-only ones live here.
CommandRegistration kOnnx{
    "onnx", "ONNX graphs: inspect", [](CLI::App& app) -> CommandRunner {
      auto options = std::make_shared<OnnxInspectOptions>();
      app.require_subcommand(1);
      CLI::App* inspect =
          app.add_subcommand("inspect", "Show an ONNX graph: summary, --json, --dot, --optimized");
      add_options(*inspect, *options);
      return [options] { return run_onnx_inspect(*options); };
    }};

}  // namespace
}  // namespace torchless::cli
