#include "torchless/formats/onnx_model.h"

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "torchless/core/checked.h"

namespace torchless::formats {

struct OnnxModel::Proto {
  onnx::ModelProto model;
};

namespace {

struct ElemType {
  int32_t onnx;
  std::optional<DType> dtype;
  const char* name;
};

// ONNX TensorProto.DataType numbering (onnx.proto); numbers above 16 postdate Debian's libonnx
// enum, hence plain integers.
constexpr ElemType kElemTypes[] = {
    {1, DType::kFloat32, "float"},
    {2, DType::kUInt8, "uint8"},
    {3, DType::kInt8, "int8"},
    {4, DType::kUInt16, "uint16"},
    {5, DType::kInt16, "int16"},
    {6, DType::kInt32, "int32"},
    {7, DType::kInt64, "int64"},
    {8, std::nullopt, "string"},
    {9, DType::kBool, "bool"},
    {10, DType::kFloat16, "float16"},
    {11, DType::kFloat64, "double"},
    {12, DType::kUInt32, "uint32"},
    {13, DType::kUInt64, "uint64"},
    {14, DType::kComplex64, "complex64"},
    {15, DType::kComplex128, "complex128"},
    {16, DType::kBFloat16, "bfloat16"},
    {17, DType::kFloat8E4M3FN, "float8e4m3fn"},
    {18, DType::kFloat8E4M3FNUZ, "float8e4m3fnuz"},
    {19, DType::kFloat8E5M2, "float8e5m2"},
    {20, DType::kFloat8E5M2FNUZ, "float8e5m2fnuz"},
    {21, std::nullopt, "uint4"},
    {22, std::nullopt, "int4"},
    {23, std::nullopt, "float4e2m1"},
};

const ElemType* find_elem_type(int32_t elem_type) {
  for (const auto& e : kElemTypes) {
    if (e.onnx == elem_type) return &e;
  }
  return nullptr;
}

std::string quote_text(std::string_view s, size_t max = 40) {
  if (s.size() <= max) return fmt::format("\"{}\"", s);
  return fmt::format("\"{}...\"", s.substr(0, max));
}

template <typename Repeated, typename Format>
std::string list_summary(const Repeated& values, Format format) {
  constexpr int kShown = 8;
  std::string out = "[";
  for (int i = 0; i < values.size() && i < kShown; ++i) {
    if (i) out += ", ";
    out += format(values.Get(i));
  }
  if (values.size() > kShown) out += fmt::format(", ... ({} values)", values.size());
  return out + "]";
}

std::string dims_summary(const google::protobuf::RepeatedField<int64_t>& dims) {
  return list_summary(dims, [](int64_t d) { return std::to_string(d); });
}

std::string attribute_summary(const onnx::AttributeProto& a) {
  using A = onnx::AttributeProto;
  switch (a.type()) {
    case A::FLOAT:
      return fmt::format("{}", a.f());
    case A::INT:
      return std::to_string(a.i());
    case A::STRING:
      return quote_text(a.s());
    case A::TENSOR:
      return fmt::format("tensor {}{}", onnx_elem_type_name(a.t().data_type()),
                         dims_summary(a.t().dims()));
    case A::GRAPH:
      return fmt::format("graph {} ({} nodes)", quote_text(a.g().name()), a.g().node_size());
    case A::SPARSE_TENSOR:
      return "sparse tensor";
    case A::TYPE_PROTO:
      return "type";
    case A::FLOATS:
      return list_summary(a.floats(), [](float f) { return fmt::format("{}", f); });
    case A::INTS:
      return list_summary(a.ints(), [](int64_t i) { return std::to_string(i); });
    case A::STRINGS:
      return list_summary(a.strings(), [](const std::string& s) { return quote_text(s, 20); });
    case A::TENSORS:
      return fmt::format("{} tensors", a.tensors_size());
    case A::GRAPHS:
      return fmt::format("{} graphs", a.graphs_size());
    case A::SPARSE_TENSORS:
      return fmt::format("{} sparse tensors", a.sparse_tensors_size());
    case A::TYPE_PROTOS:
      return fmt::format("{} types", a.type_protos_size());
    default:
      return fmt::format("attribute type {}", static_cast<int>(a.type()));
  }
}

OnnxValueInfo convert_value_info(const onnx::ValueInfoProto& vi) {
  OnnxValueInfo out;
  out.name = vi.name();
  if (vi.type().has_tensor_type()) {
    const auto& tt = vi.type().tensor_type();
    out.elem_type = tt.elem_type();
    out.has_shape = tt.has_shape();
    for (const auto& d : tt.shape().dim()) {
      OnnxDim dim;
      if (d.has_dim_value()) dim.value = d.dim_value();
      if (d.has_dim_param()) dim.param = d.dim_param();
      out.shape.push_back(std::move(dim));
    }
  }
  return out;
}

// An external-data location must name a file inside the model's folder: relative, with no
// ".." component. ONNX Runtime refuses the same; checking here keeps inspection as strict.
std::filesystem::path checked_external_location(const std::string& location,
                                                const std::string& tensor) {
  if (location.empty()) fail("initializer '{}': external data without a location", tensor);
  if (location.find('\0') != std::string::npos) {
    fail("initializer '{}': external data location contains a NUL byte", tensor);
  }
  std::filesystem::path path(location);
  if (path.is_absolute() || path.has_root_name() || path.has_root_directory()) {
    fail(
        "initializer '{}': external data location '{}' is absolute; only files beside the "
        "model are read",
        tensor, location);
  }
  for (const auto& part : path) {
    if (part == "..") {
      fail("initializer '{}': external data location '{}' leaves the model's folder", tensor,
           location);
    }
  }
  return path;
}

OnnxInitializer convert_initializer(const onnx::TensorProto& t, size_t index) {
  OnnxInitializer out;
  out.name = t.name();
  std::string what = fmt::format("initializer '{}' (#{})", t.name(), index);
  if (t.name().empty()) fail("initializer #{} has no name", index);
  out.elem_type = t.data_type();
  for (int64_t d : t.dims()) {
    if (d < 0) fail("{}: negative dimension {} in {}", what, d, dims_summary(t.dims()));
    out.shape.push_back(d);
  }
  out.numel = checked_numel(out.shape, what);
  const ElemType* type = find_elem_type(t.data_type());
  if (type == nullptr) fail("{}: unknown element type {}", what, t.data_type());
  if (type->dtype) {
    out.nbytes = checked_mul(static_cast<uint64_t>(out.numel), dtype_size(*type->dtype), what);
  }
  if (t.has_segment()) throw UnsupportedError(what + ": segmented tensors are not supported");

  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    out.external = true;
    for (const auto& entry : t.external_data()) {
      if (entry.key() == "location") {
        out.external_location = entry.value();
      } else if (entry.key() == "offset" || entry.key() == "length") {
        uint64_t value = 0;
        auto [end, ec] = std::from_chars(entry.value().data(),
                                         entry.value().data() + entry.value().size(), value);
        if (ec != std::errc() || end != entry.value().data() + entry.value().size()) {
          fail("{}: external data {} '{}' is not a number", what, entry.key(), entry.value());
        }
        if (entry.key() == "offset") {
          out.external_offset = value;
        } else {
          out.external_length = value;
        }
      }
    }
    checked_external_location(out.external_location, out.name);
    if (out.external_length && type->dtype && *out.external_length != out.nbytes) {
      fail("{}: external data length {} but {}{} needs {} bytes", what, *out.external_length,
           type->name, shape_to_string(out.shape), out.nbytes);
    }
    return out;
  }
  if (t.has_raw_data()) {
    if (!type->dtype) fail("{}: raw_data for element type {}", what, type->name);
    if (t.raw_data().size() != out.nbytes) {
      fail("{}: raw_data holds {} bytes but {}{} needs {} bytes", what, t.raw_data().size(),
           type->name, shape_to_string(out.shape), out.nbytes);
    }
    return out;
  }
  // Typed fields: how many values each element type keeps, and where (onnx.proto's table).
  int64_t found = 0;
  int64_t per_element = 1;
  switch (t.data_type()) {
    case 1:
      found = t.float_data_size();
      break;
    case 14:
      found = t.float_data_size();
      per_element = 2;
      break;
    case 2:
    case 3:
    case 4:
    case 5:
    case 6:
    case 9:
    case 10:
    case 16:
    case 17:
    case 18:
    case 19:
    case 20:
      found = t.int32_data_size();
      break;
    case 7:
      found = t.int64_data_size();
      break;
    case 8:
      found = t.string_data_size();
      break;
    case 11:
      found = t.double_data_size();
      break;
    case 15:
      found = t.double_data_size();
      per_element = 2;
      break;
    case 12:
    case 13:
      found = t.uint64_data_size();
      break;
    default:
      throw UnsupportedError(fmt::format("{}: element type {} in typed fields", what, type->name));
  }
  if (found != out.numel * per_element) {
    fail("{}: {}{} needs {} values but the tensor holds {}", what, type->name,
         shape_to_string(out.shape), out.numel * per_element, found);
  }
  return out;
}

template <typename Out, typename Repeated>
Buffer narrow_into_buffer(const Repeated& values) {
  std::vector<std::byte> bytes(static_cast<size_t>(values.size()) * sizeof(Out));
  for (int i = 0; i < values.size(); ++i) {
    // int32_data keeps small types (and float16/bfloat16 bit patterns) in the low bits.
    Out v = static_cast<Out>(values.Get(i));
    std::memcpy(bytes.data() + static_cast<size_t>(i) * sizeof(Out), &v, sizeof(Out));
  }
  return Buffer::adopt(std::move(bytes));
}

}  // namespace

std::optional<DType> dtype_from_onnx(int32_t elem_type) {
  const ElemType* e = find_elem_type(elem_type);
  return e ? e->dtype : std::nullopt;
}

std::optional<int32_t> onnx_elem_type(DType dtype) {
  for (const auto& e : kElemTypes) {
    if (e.dtype == dtype) return e.onnx;
  }
  return std::nullopt;
}

std::string onnx_elem_type_name(int32_t elem_type) {
  const ElemType* e = find_elem_type(elem_type);
  return e ? e->name : fmt::format("type {}", elem_type);
}

std::string OnnxDim::to_string() const {
  if (!param.empty()) return param;
  if (value) return std::to_string(*value);
  return "?";
}

std::string OnnxValueInfo::describe() const {
  std::string type = elem_type ? onnx_elem_type_name(elem_type) : "?";
  if (!has_shape) return type;
  std::string out = type + "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += shape[i].to_string();
  }
  return out + "]";
}

std::string OnnxNode::qualified_op() const {
  if (domain.empty() || domain == "ai.onnx") return op_type;
  return domain + "." + op_type;
}

OnnxModel OnnxModel::load(const std::filesystem::path& path, const Limits& limits) {
  Buffer bytes = Buffer::map_file(path);
  auto base = path.parent_path();
  return parse(bytes, path.string(), base.empty() ? std::filesystem::path(".") : base, limits);
}

OnnxModel OnnxModel::parse(const Buffer& bytes, std::string name,
                           std::optional<std::filesystem::path> base_dir, const Limits& limits) {
  return with_context(name, [&] {
    // Protobuf messages are capped at 2 GiB; bigger models must keep weights as external data.
    if (bytes.size() > static_cast<size_t>(INT_MAX) || bytes.size() > limits.max_bytes) {
      throw LimitError(
          fmt::format("{} bytes is more than one ONNX protobuf may hold (2 GiB); "
                      "store initializers as external data",
                      bytes.size()));
    }
    auto proto = std::make_shared<Proto>();
    if (!proto->model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      fail(
          "not a valid ONNX protobuf ({} bytes): protobuf parsing failed (truncated or corrupt "
          "file?)",
          bytes.size());
    }
    const auto& m = proto->model;
    if (!m.has_graph()) fail("not an ONNX model: the ModelProto has no graph");
    if (m.ir_version() <= 0) fail("not an ONNX model: ir_version is {}", m.ir_version());

    OnnxModel out;
    out.proto_ = proto;
    out.name_ = name;
    out.base_dir_ = std::move(base_dir);
    out.ir_version_ = m.ir_version();
    for (const auto& op : m.opset_import()) {
      std::string domain = op.domain().empty() ? "ai.onnx" : op.domain();
      if (!out.opsets_.emplace(domain, op.version()).second) {
        fail("opset_import lists domain '{}' twice", domain);
      }
    }
    out.producer_name_ = m.producer_name();
    out.producer_version_ = m.producer_version();
    const auto& g = m.graph();
    out.graph_name_ = g.name();

    // Every tensor name visible in the graph, with who defines it (SIZE_MAX: not a node).
    constexpr size_t kNotANode = SIZE_MAX;
    std::unordered_map<std::string, size_t> defined;
    for (int i = 0; i < g.initializer_size(); ++i) {
      out.initializers_.push_back(convert_initializer(g.initializer(i), static_cast<size_t>(i)));
      if (!defined.emplace(g.initializer(i).name(), kNotANode).second) {
        fail("initializer '{}' appears twice", g.initializer(i).name());
      }
    }
    std::unordered_set<std::string> input_names;
    for (const auto& vi : g.input()) {
      if (vi.name().empty()) fail("a graph input has no name");
      if (!input_names.insert(vi.name()).second) fail("graph input '{}' appears twice", vi.name());
      if (defined.count(vi.name())) continue;  // an initializer listed as input (IR < 4)
      defined.emplace(vi.name(), kNotANode);
      out.inputs_.push_back(convert_value_info(vi));
    }
    for (const auto& vi : g.output()) out.outputs_.push_back(convert_value_info(vi));

    out.nodes_.reserve(static_cast<size_t>(g.node_size()));
    for (int i = 0; i < g.node_size(); ++i) {
      const auto& n = g.node(i);
      OnnxNode node;
      node.name = n.name();
      node.op_type = n.op_type();
      node.domain = n.domain();
      node.inputs.assign(n.input().begin(), n.input().end());
      node.outputs.assign(n.output().begin(), n.output().end());
      for (const auto& a : n.attribute())
        node.attributes.push_back({a.name(), attribute_summary(a)});
      if (node.op_type.empty()) fail("node #{} ('{}') has no op_type", i, node.name);
      out.nodes_.push_back(std::move(node));
    }
    auto describe_node = [&](size_t i) {
      const auto& n = out.nodes_[i];
      return fmt::format("node '{}' (#{}, {})", n.name, i, n.op_type);
    };
    for (size_t i = 0; i < out.nodes_.size(); ++i) {
      for (const auto& o : out.nodes_[i].outputs) {
        if (o.empty()) continue;  // an omitted optional output
        auto [it, inserted] = defined.emplace(o, i);
        if (!inserted) {
          std::string first =
              it->second == kNotANode ? "a graph input or initializer" : describe_node(it->second);
          fail("tensor '{}' is written by {} and by {} (ONNX graphs assign each name once)", o,
               describe_node(i), first);
        }
      }
    }
    for (size_t i = 0; i < out.nodes_.size(); ++i) {
      for (const auto& in : out.nodes_[i].inputs) {
        if (in.empty()) continue;
        auto it = defined.find(in);
        if (it == defined.end()) {
          fail("{} reads tensor '{}', which no node, graph input or initializer provides",
               describe_node(i), in);
        }
        if (it->second != kNotANode) out.edges_.push_back({it->second, i, in});
      }
    }
    for (const auto& o : out.outputs_) {
      if (!defined.count(o.name)) {
        fail("graph output '{}' is not produced by any node, input or initializer", o.name);
      }
    }
    if (out.base_dir_) {
      for (const auto& init : out.initializers_) {
        if (!init.external) continue;
        auto file = *out.base_dir_ / init.external_location;
        std::error_code ec;
        auto size = std::filesystem::file_size(file, ec);
        if (ec)
          fail("initializer '{}': external data file {} cannot be read: {}", init.name,
               file.string(), ec.message());
        uint64_t length = init.external_length.value_or(
            size >= init.external_offset ? size - init.external_offset : 0);
        if (checked_add(init.external_offset, length, init.name) > size) {
          fail("initializer '{}': external data [{}, {}) lies beyond the end of {} ({} bytes)",
               init.name, init.external_offset, init.external_offset + length, file.string(), size);
        }
      }
    }
    return out;
  });
}

std::map<std::string, int64_t> OnnxModel::op_histogram() const {
  std::map<std::string, int64_t> histogram;
  for (const auto& n : nodes_) ++histogram[n.qualified_op()];
  return histogram;
}

int64_t OnnxModel::parameter_count() const {
  uint64_t total = 0;
  for (const auto& i : initializers_) total = checked_add(total, i.numel, "parameter count");
  return static_cast<int64_t>(total);
}

uint64_t OnnxModel::initializer_bytes() const {
  uint64_t total = 0;
  for (const auto& i : initializers_) total = checked_add(total, i.nbytes, "initializer bytes");
  return total;
}

const OnnxInitializer* OnnxModel::find_initializer(std::string_view name) const {
  for (const auto& i : initializers_) {
    if (i.name == name) return &i;
  }
  return nullptr;
}

Tensor OnnxModel::initializer_tensor(std::string_view name) const {
  return with_context(name_, [&] {
    const OnnxInitializer* init = find_initializer(name);
    if (init == nullptr) fail("no initializer named '{}'", name);
    std::string what = fmt::format("initializer '{}'", name);
    std::optional<DType> dtype = dtype_from_onnx(init->elem_type);
    if (!dtype) {
      throw UnsupportedError(fmt::format("{}: element type {} has no tensor dtype", what,
                                         onnx_elem_type_name(init->elem_type)));
    }
    size_t index = static_cast<size_t>(init - initializers_.data());
    const onnx::TensorProto& t = proto_->model.graph().initializer(static_cast<int>(index));

    if (init->external) {
      if (!base_dir_) fail("{}: external data, but the model was not loaded from a file", what);
      auto location = checked_external_location(init->external_location, init->name);
      auto file = *base_dir_ / location;
      // A symlink beside the model could still point elsewhere: compare resolved paths.
      auto root = std::filesystem::weakly_canonical(*base_dir_);
      auto resolved = std::filesystem::weakly_canonical(file);
      auto rel = resolved.lexically_relative(root);
      if (rel.empty() || *rel.begin() == "..") {
        fail("{}: external data file {} resolves outside the model's folder", what, file.string());
      }
      Buffer mapped = Buffer::map_file(file);
      if (init->external_offset > mapped.size()) {
        fail("{}: external data offset {} is beyond the end of {} ({} bytes)", what,
             init->external_offset, file.string(), mapped.size());
      }
      uint64_t length = init->external_length.value_or(mapped.size() - init->external_offset);
      if (length != init->nbytes) {
        fail("{}: external data holds {} bytes but {}{} needs {}", what, length,
             onnx_elem_type_name(init->elem_type), shape_to_string(init->shape), init->nbytes);
      }
      return Tensor::contiguous_view(mapped.slice(init->external_offset, length, what), *dtype,
                                     init->shape, what);
    }
    if (t.has_raw_data()) {
      const std::string& raw = t.raw_data();
      auto* data = reinterpret_cast<const std::byte*>(raw.data());
      // raw_data is a heap string in the parsed message: share it, copying only when a short
      // (inline) string leaves it misaligned for the element type.
      if (reinterpret_cast<uintptr_t>(data) % dtype_size(*dtype) != 0) {
        return Tensor::contiguous_view(Buffer::copy_of(raw), *dtype, init->shape, what);
      }
      return Tensor::contiguous_view(Buffer::wrap(proto_, data, raw.size()), *dtype, init->shape,
                                     what);
    }
    Buffer values;
    switch (*dtype) {
      case DType::kFloat32:
      case DType::kComplex64:
        values = narrow_into_buffer<float>(t.float_data());
        break;
      case DType::kFloat64:
      case DType::kComplex128:
        values = narrow_into_buffer<double>(t.double_data());
        break;
      case DType::kInt64:
        values = narrow_into_buffer<int64_t>(t.int64_data());
        break;
      case DType::kUInt32:
        values = narrow_into_buffer<uint32_t>(t.uint64_data());
        break;
      case DType::kUInt64:
        values = narrow_into_buffer<uint64_t>(t.uint64_data());
        break;
      case DType::kInt32:
        values = narrow_into_buffer<int32_t>(t.int32_data());
        break;
      case DType::kInt16:
      case DType::kUInt16:
      case DType::kFloat16:
      case DType::kBFloat16:
        values = narrow_into_buffer<uint16_t>(t.int32_data());
        break;
      case DType::kBool:
      case DType::kInt8:
      case DType::kUInt8:
      case DType::kFloat8E4M3FN:
      case DType::kFloat8E4M3FNUZ:
      case DType::kFloat8E5M2:
      case DType::kFloat8E5M2FNUZ:
        values = narrow_into_buffer<uint8_t>(t.int32_data());
        break;
      default:
        throw UnsupportedError(
            fmt::format("{}: dtype {} in typed fields", what, dtype_name(*dtype)));
    }
    return Tensor::contiguous_view(values, *dtype, init->shape, what);
  });
}

}  // namespace torchless::formats
