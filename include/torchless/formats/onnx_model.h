// An OnnxModel is an ONNX file parsed for inspection: versions, the graph's inputs and outputs,
// its initializers (readable as Tensors, so that the weights in a graph can be compared with a
// checkpoint), its nodes and the edges between them. It never runs anything (nn::Graph does).
// Parsing checks what protobuf cannot: sizes of raw_data against dtype x shape, duplicate names,
// tensors read by a node that nothing produces, external data that would leave the model's folder.
// Thread-safe: an OnnxModel is immutable after load.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torchless/core/buffer.h"
#include "torchless/core/limits.h"
#include "torchless/core/tensor.h"

namespace torchless::formats {

// ONNX TensorProto.DataType numbers <-> DType. Types with no DType (string, int4, ...) give
// nullopt / are named "type <n>".
std::optional<DType> dtype_from_onnx(int32_t elem_type);
std::optional<int32_t> onnx_elem_type(DType dtype);
// ONNX's lower-case name ("float", "int64", "float16", ...), or "type <n>" for unknown numbers.
std::string onnx_elem_type_name(int32_t elem_type);

// One dimension of a declared shape: a fixed size, a symbolic name (dim_param), or unknown.
struct OnnxDim {
  std::optional<int64_t> value;
  std::string param;              // non-empty for symbolic dims ("N", "num_points")
  std::string to_string() const;  // "8", "N" or "?"
};

struct OnnxValueInfo {
  std::string name;
  int32_t elem_type = 0;  // 0 when the graph does not declare a tensor type
  bool has_shape = false;
  std::vector<OnnxDim> shape;
  std::string describe() const;  // "float[1, 8, N]"
};

struct OnnxInitializer {
  std::string name;
  int32_t elem_type = 0;
  Shape shape;
  int64_t numel = 0;
  uint64_t nbytes = 0;  // numel x element size (0 for types without a fixed size)
  bool external = false;
  std::string external_location;  // as written in the file, relative to the model's folder
  uint64_t external_offset = 0;
  std::optional<uint64_t> external_length;
};

struct OnnxAttribute {
  std::string name;
  std::string summary;  // "3", "[1, 1]", "\"relu\"", "tensor float[4]", "graph (5 nodes)"
};

struct OnnxNode {
  std::string name;
  std::string op_type;
  std::string domain;               // "" for the default ai.onnx domain
  std::vector<std::string> inputs;  // "" marks an omitted optional input
  std::vector<std::string> outputs;
  std::vector<OnnxAttribute> attributes;
  // "FusedConv" or "com.microsoft.FusedConv": the key of op_histogram().
  std::string qualified_op() const;
};

// `tensor` flows from nodes()[producer] to nodes()[consumer] (one edge per consuming input slot).
struct OnnxEdge {
  size_t producer = 0;
  size_t consumer = 0;
  std::string tensor;
};

class OnnxModel {
 public:
  // Maps `path` and parses it. External initializers are resolved against the file's folder
  // when read (initializer_tensor), and checked for existence and size at load.
  static OnnxModel load(const std::filesystem::path& path,
                        const Limits& limits = Limits::defaults());
  // Parses bytes already in memory; `name` is used in error messages, `base_dir` (optional)
  // is where external data files are looked up (without it, external initializers are refused
  // when read).
  static OnnxModel parse(const Buffer& bytes, std::string name,
                         std::optional<std::filesystem::path> base_dir = std::nullopt,
                         const Limits& limits = Limits::defaults());

  const std::string& name() const { return name_; }
  int64_t ir_version() const { return ir_version_; }
  // Domain ("" is reported as "ai.onnx") -> opset version.
  const std::map<std::string, int64_t>& opsets() const { return opsets_; }
  const std::string& producer_name() const { return producer_name_; }
  const std::string& producer_version() const { return producer_version_; }
  const std::string& graph_name() const { return graph_name_; }

  // Graph inputs that are not initializers (IR < 4 lists initializers among the inputs too).
  const std::vector<OnnxValueInfo>& inputs() const { return inputs_; }
  const std::vector<OnnxValueInfo>& outputs() const { return outputs_; }
  const std::vector<OnnxInitializer>& initializers() const { return initializers_; }
  const std::vector<OnnxNode>& nodes() const { return nodes_; }
  const std::vector<OnnxEdge>& edges() const { return edges_; }

  // Qualified op type -> node count.
  std::map<std::string, int64_t> op_histogram() const;
  // Elements in all initializers.
  int64_t parameter_count() const;
  uint64_t initializer_bytes() const;

  const OnnxInitializer* find_initializer(std::string_view name) const;
  // The initializer's values: a view of raw_data (no copy), a conversion of the typed fields
  // (float_data, int32_data, ...), or a view of the mapped external file. Throws Error for
  // unknown names, string tensors, and external data that is missing, too short, or outside
  // the model's folder.
  Tensor initializer_tensor(std::string_view name) const;

 private:
  struct Proto;
  std::shared_ptr<const Proto> proto_;
  std::string name_;
  std::optional<std::filesystem::path> base_dir_;
  int64_t ir_version_ = 0;
  std::map<std::string, int64_t> opsets_;
  std::string producer_name_, producer_version_, graph_name_;
  std::vector<OnnxValueInfo> inputs_, outputs_;
  std::vector<OnnxInitializer> initializers_;
  std::vector<OnnxNode> nodes_;
  std::vector<OnnxEdge> edges_;
};

}  // namespace torchless::formats
