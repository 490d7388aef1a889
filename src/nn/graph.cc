#include "torchless/nn/graph.h"

#include <fmt/format.h>
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "torchless/core/buffer.h"
#include "torchless/formats/onnx_model.h"

// ONNX Runtime 1.30 leaks one 14-byte allocation when the first Ort::Env is created (seen with
// a program that only constructs and destroys an Env). Sanitizer builds would report it from
// every binary that runs a graph; LeakSanitizer reads this hook for its default suppressions.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TORCHLESS_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(TORCHLESS_ASAN)
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libonnxruntime.so\n";
}
#endif

namespace torchless::nn {
namespace {

// One Ort::Env per process: ONNX Runtime allows only one, and its global thread pools and
// logging belong to it. Created on first use, never destroyed before exit.
Ort::Env& shared_env() {
  static Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "torchless");
  return env;
}

const Ort::MemoryInfo& cpu_memory() {
  static const Ort::MemoryInfo info =
      Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  return info;
}

std::string dims_to_string(const TensorInfo& info) {
  std::string out = "[";
  for (size_t k = 0; k < info.shape.size(); ++k) {
    if (k) out += ", ";
    if (info.shape[k] >= 0) {
      out += std::to_string(info.shape[k]);
    } else {
      out += info.dim_names[k].empty() ? "?" : info.dim_names[k];
    }
  }
  return out + "]";
}

TensorInfo tensor_info(const std::string& name, const Ort::TypeInfo& type, const char* role) {
  if (type.GetONNXType() != ONNX_TYPE_TENSOR) {
    throw UnsupportedError(
        fmt::format("{} '{}' is not a tensor (sequence, map and optional values are not supported)",
                    role, name));
  }
  auto tensor = type.GetTensorTypeAndShapeInfo();
  TensorInfo info;
  info.name = name;
  info.elem_type = static_cast<int32_t>(tensor.GetElementType());
  info.dtype = formats::dtype_from_onnx(info.elem_type);
  info.shape = tensor.GetShape();
  auto symbolic = tensor.GetSymbolicDimensions();
  info.dim_names.resize(info.shape.size());
  for (size_t k = 0; k < info.shape.size() && k < symbolic.size(); ++k) {
    if (info.shape[k] < 0 && symbolic[k] != nullptr) info.dim_names[k] = symbolic[k];
  }
  return info;
}

GraphOptimizationLevel ort_level(OptimizationLevel level) {
  switch (level) {
    case OptimizationLevel::kDisable:
      return GraphOptimizationLevel::ORT_DISABLE_ALL;
    case OptimizationLevel::kBasic:
      return GraphOptimizationLevel::ORT_ENABLE_BASIC;
    case OptimizationLevel::kExtended:
      return GraphOptimizationLevel::ORT_ENABLE_EXTENDED;
    case OptimizationLevel::kAll:
      break;
  }
  return GraphOptimizationLevel::ORT_ENABLE_ALL;
}

Ort::SessionOptions session_options(const GraphOptions& options) {
  Ort::SessionOptions so;
  so.SetIntraOpNumThreads(options.intra_op_threads);
  so.SetInterOpNumThreads(options.inter_op_threads);
  so.SetGraphOptimizationLevel(ort_level(options.optimization));
  so.SetExecutionMode(options.execution_mode == ExecutionMode::kParallel ? ORT_PARALLEL
                                                                         : ORT_SEQUENTIAL);
  if (!options.allow_spinning) {
    so.AddConfigEntry("session.intra_op.allow_spinning", "0");
    so.AddConfigEntry("session.inter_op.allow_spinning", "0");
  }
  if (!options.optimized_model_path.empty()) {
    so.SetOptimizedModelFilePath(options.optimized_model_path.c_str());
  }
  if (!options.profile_prefix.empty()) so.EnableProfiling(options.profile_prefix.c_str());
  return so;
}

// ONNX Runtime reports failures as Ort::Exception; callers get an Error naming the model.
template <typename Body>
auto ort_guarded(const std::string& model, Body&& body) {
  try {
    return body();
  } catch (const Ort::Exception& e) {
    throw Error(fmt::format("{}: ONNX Runtime: {}", model, e.what()));
  }
}

// An output buffer ONNX Runtime allocated in an earlier run, kept for the next run with the
// same input shapes. `owner` is the Ort::Value that owns the memory; returned Tensors share it.
struct CachedOutput {
  std::shared_ptr<Ort::Value> owner;
  void* data = nullptr;
  size_t bytes = 0;
  std::vector<int64_t> shape;
};

}  // namespace

struct Graph::Impl {
  std::string name;
  GraphOptions options;
  std::unique_ptr<Ort::Session> session;
  std::vector<TensorInfo> inputs, outputs;
  std::vector<const char*> input_names, output_names;  // point into inputs/outputs

  // Output reuse: valid for `cached_input_shapes`; disabled for good if a graph's output shapes
  // turn out not to follow from its input shapes.
  mutable std::mutex cache_mutex;
  mutable std::vector<std::vector<int64_t>> cached_input_shapes;
  mutable std::vector<CachedOutput> cached_outputs;
  mutable bool reuse_disabled = false;
  mutable uint64_t reused_runs = 0;
  bool profile_ended = false;

  // Fills inputs/outputs from the session.
  static std::unique_ptr<Impl> read_signature(std::unique_ptr<Impl> impl);

  template <typename Body>
  auto guarded(Body&& body) const {
    return ort_guarded(name, std::forward<Body>(body));
  }
};

std::string_view optimization_level_name(OptimizationLevel level) {
  switch (level) {
    case OptimizationLevel::kDisable:
      return "disable";
    case OptimizationLevel::kBasic:
      return "basic";
    case OptimizationLevel::kExtended:
      return "extended";
    case OptimizationLevel::kAll:
      break;
  }
  return "all";
}

OptimizationLevel parse_optimization_level(std::string_view name) {
  for (auto level : {OptimizationLevel::kDisable, OptimizationLevel::kBasic,
                     OptimizationLevel::kExtended, OptimizationLevel::kAll}) {
    if (optimization_level_name(level) == name) return level;
  }
  fail("unknown optimisation level '{}' (expected disable, basic, extended or all)", name);
}

std::string TensorInfo::describe() const {
  std::string type =
      dtype ? std::string(dtype_name(*dtype)) : formats::onnx_elem_type_name(elem_type);
  return type + dims_to_string(*this);
}

std::unique_ptr<Graph::Impl> Graph::Impl::read_signature(std::unique_ptr<Impl> impl) {
  Ort::AllocatorWithDefaultOptions allocator;
  const auto& s = *impl->session;
  for (size_t i = 0; i < s.GetInputCount(); ++i) {
    std::string name = s.GetInputNameAllocated(i, allocator).get();
    impl->inputs.push_back(tensor_info(name, s.GetInputTypeInfo(i), "input"));
  }
  for (size_t i = 0; i < s.GetOutputCount(); ++i) {
    std::string name = s.GetOutputNameAllocated(i, allocator).get();
    impl->outputs.push_back(tensor_info(name, s.GetOutputTypeInfo(i), "output"));
  }
  for (const auto& i : impl->inputs) impl->input_names.push_back(i.name.c_str());
  for (const auto& o : impl->outputs) impl->output_names.push_back(o.name.c_str());
  return impl;
}

Graph::Graph(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Graph::Graph(Graph&&) noexcept = default;
Graph& Graph::operator=(Graph&&) noexcept = default;
Graph::~Graph() = default;

Graph Graph::load(const std::filesystem::path& path, const GraphOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->name = path.string();
  impl->options = options;
  if (!std::filesystem::is_regular_file(path)) fail("{}: no such model file", path.string());
  return Graph(ort_guarded(path.string(), [&] {
    impl->session =
        std::make_unique<Ort::Session>(shared_env(), path.c_str(), session_options(options));
    return Impl::read_signature(std::move(impl));
  }));
}

Graph Graph::load_from_memory(const Buffer& model, std::string name, const GraphOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->options = options;
  return Graph(ort_guarded(name, [&] {
    impl->session = std::make_unique<Ort::Session>(shared_env(), model.data(), model.size(),
                                                   session_options(options));
    return Impl::read_signature(std::move(impl));
  }));
}

const std::string& Graph::name() const {
  return impl_->name;
}
const std::vector<TensorInfo>& Graph::inputs() const {
  return impl_->inputs;
}
const std::vector<TensorInfo>& Graph::outputs() const {
  return impl_->outputs;
}

size_t Graph::output_index(std::string_view name) const {
  for (size_t i = 0; i < impl_->outputs.size(); ++i) {
    if (impl_->outputs[i].name == name) return i;
  }
  fail("{}: no output named '{}'", impl_->name, name);
}

uint64_t Graph::reused_output_runs() const {
  std::lock_guard lock(impl_->cache_mutex);
  return impl_->reused_runs;
}

std::filesystem::path Graph::end_profiling() {
  if (impl_->options.profile_prefix.empty()) {
    fail("{}: end_profiling without GraphOptions::profile_prefix", impl_->name);
  }
  if (impl_->profile_ended) fail("{}: profiling has already ended", impl_->name);
  impl_->profile_ended = true;
  return ort_guarded(impl_->name, [&] {
    Ort::AllocatorWithDefaultOptions allocator;
    return std::filesystem::path(impl_->session->EndProfilingAllocated(allocator).get());
  });
}

namespace {

std::string names_of(const std::vector<TensorInfo>& infos) {
  std::string out;
  for (const auto& i : infos)
    out += (out.empty() ? "" : ", ") + i.describe().insert(0, i.name + ": ");
  return out;
}

// The given tensors reordered as the graph declares its inputs; throws on any mismatch.
std::vector<const Tensor*> match_inputs(const std::string& graph,
                                        const std::vector<TensorInfo>& declared,
                                        const std::vector<NamedTensor>& given) {
  std::vector<const Tensor*> ordered(declared.size(), nullptr);
  for (const auto& g : given) {
    size_t k = 0;
    while (k < declared.size() && declared[k].name != g.name) ++k;
    if (k == declared.size()) {
      fail("{}: unknown input '{}' (the graph's inputs are {})", graph, g.name, names_of(declared));
    }
    if (ordered[k] != nullptr) fail("{}: input '{}' given twice", graph, g.name);
    ordered[k] = &g.tensor;
  }
  std::map<std::string, std::pair<int64_t, std::string>> symbols;  // dim name -> value, input
  for (size_t k = 0; k < declared.size(); ++k) {
    const TensorInfo& d = declared[k];
    if (ordered[k] == nullptr) {
      fail("{}: missing input '{}' ({})", graph, d.name, d.describe());
    }
    const Tensor& t = *ordered[k];
    if (!d.dtype) {
      throw UnsupportedError(
          fmt::format("{}: input '{}' has element type {}, which a Tensor "
                      "cannot hold",
                      graph, d.name, formats::onnx_elem_type_name(d.elem_type)));
    }
    if (t.dtype() != *d.dtype) {
      fail("{}: input '{}': expected dtype {} ({}), found {}", graph, d.name, dtype_name(*d.dtype),
           d.describe(), dtype_name(t.dtype()));
    }
    if (t.rank() != d.shape.size()) {
      fail("{}: input '{}': expected rank {} ({}), found rank {} {}", graph, d.name, d.shape.size(),
           d.describe(), t.rank(), shape_to_string(t.shape()));
    }
    for (size_t i = 0; i < d.shape.size(); ++i) {
      if (d.shape[i] >= 0 && t.dim(i) != d.shape[i]) {
        fail("{}: input '{}': dim {} expected {}, found {} (declared {}, given {})", graph, d.name,
             i, d.shape[i], t.dim(i), d.describe(), shape_to_string(t.shape()));
      }
      if (d.shape[i] < 0 && !d.dim_names[i].empty()) {
        auto [it, inserted] = symbols.emplace(d.dim_names[i], std::make_pair(t.dim(i), d.name));
        if (!inserted && it->second.first != t.dim(i)) {
          fail("{}: input '{}': dim {} is {} = {}, but input '{}' gave {} = {}", graph, d.name, i,
               d.dim_names[i], t.dim(i), it->second.second, d.dim_names[i], it->second.first);
        }
      }
    }
  }
  return ordered;
}

}  // namespace

void Graph::check_inputs(const std::vector<NamedTensor>& inputs) const {
  match_inputs(impl_->name, impl_->inputs, inputs);
}

std::vector<Tensor> Graph::run(const std::vector<NamedTensor>& inputs) const {
  const Impl& impl = *impl_;
  auto ordered = match_inputs(impl.name, impl.inputs, inputs);

  // Contiguous inputs are wrapped where they lie; ONNX Runtime only reads them (the const_cast
  // is what its C API asks for, not a licence to write).
  std::vector<Tensor> contiguous;
  contiguous.reserve(ordered.size());
  std::vector<std::vector<int64_t>> input_shapes;
  input_shapes.reserve(ordered.size());
  std::vector<Ort::Value> values;
  values.reserve(ordered.size());
  for (size_t k = 0; k < ordered.size(); ++k) {
    contiguous.push_back(ordered[k]->contiguous());
    const Tensor& t = contiguous.back();
    input_shapes.push_back(t.shape());
    values.push_back(impl.guarded([&] {
      return Ort::Value::CreateTensor(
          cpu_memory(), const_cast<std::byte*>(t.raw_data()), t.nbytes(), t.shape().data(),
          t.shape().size(), static_cast<ONNXTensorElementDataType>(impl.inputs[k].elem_type));
    }));
  }

  const size_t n_out = impl.outputs.size();
  std::vector<Ort::Value> outputs(n_out);
  for (auto& o : outputs) o = Ort::Value(nullptr);

  // Hand back last run's buffers when nobody holds them any more (use_count 1: only the cache).
  std::unique_lock lock(impl.cache_mutex, std::defer_lock);
  bool reusing = false;
  if (impl.options.reuse_outputs && lock.try_lock() && !impl.reuse_disabled &&
      impl.cached_input_shapes == input_shapes && impl.cached_outputs.size() == n_out) {
    reusing = true;
    for (const auto& c : impl.cached_outputs) reusing = reusing && c.owner.use_count() == 1;
    if (reusing) {
      for (size_t i = 0; i < n_out; ++i) {
        const auto& c = impl.cached_outputs[i];
        outputs[i] = impl.guarded([&] {
          return Ort::Value::CreateTensor(
              cpu_memory(), c.data, c.bytes, c.shape.data(), c.shape.size(),
              static_cast<ONNXTensorElementDataType>(impl.outputs[i].elem_type));
        });
      }
    }
  }

  Ort::RunOptions run_options{nullptr};
  try {
    impl.session->Run(run_options, impl.input_names.data(), values.data(), values.size(),
                      impl.output_names.data(), outputs.data(), n_out);
  } catch (const Ort::Exception& e) {
    if (!reusing) throw Error(fmt::format("{}: ONNX Runtime: {}", impl.name, e.what()));
    // Output shapes that do not follow from input shapes (NonZero, ...): stop reusing.
    impl.reuse_disabled = true;
    impl.cached_outputs.clear();
    lock.unlock();
    return run(inputs);
  }

  std::vector<Tensor> result;
  result.reserve(n_out);
  std::vector<CachedOutput> fresh;
  for (size_t i = 0; i < n_out; ++i) {
    const TensorInfo& info = impl.outputs[i];
    if (!info.dtype) {
      throw UnsupportedError(fmt::format("{}: output '{}' has element type {}", impl.name,
                                         info.name, formats::onnx_elem_type_name(info.elem_type)));
    }
    if (reusing) {
      const auto& c = impl.cached_outputs[i];
      result.push_back(Tensor::contiguous_view(
          Buffer::wrap(c.owner, static_cast<const std::byte*>(c.data), c.bytes), *info.dtype,
          c.shape, info.name));
      continue;
    }
    auto owner = std::make_shared<Ort::Value>(std::move(outputs[i]));
    auto shape = impl.guarded([&] { return owner->GetTensorTypeAndShapeInfo().GetShape(); });
    Shape tensor_shape(shape.begin(), shape.end());
    size_t bytes =
        static_cast<size_t>(checked_numel(tensor_shape, info.name)) * dtype_size(*info.dtype);
    void* data = bytes ? owner->GetTensorMutableRawData() : nullptr;
    result.push_back(
        Tensor::contiguous_view(Buffer::wrap(owner, static_cast<const std::byte*>(data), bytes),
                                *info.dtype, tensor_shape, info.name));
    fresh.push_back({owner, data, bytes, shape});
  }
  if (lock.owns_lock()) {
    if (reusing) {
      ++impl.reused_runs;
    } else if (!impl.reuse_disabled) {
      impl.cached_input_shapes = std::move(input_shapes);
      impl.cached_outputs = std::move(fresh);
    }
  }
  return result;
}

namespace {

void sort_most_time_first(std::vector<OpTime>& ops) {
  std::stable_sort(ops.begin(), ops.end(), [](const OpTime& a, const OpTime& b) {
    return a.microseconds > b.microseconds;
  });
}

}  // namespace

std::vector<OpTime> summarize_profile(const std::filesystem::path& trace) {
  const std::string what = trace.string();
  nlohmann::json events;
  try {
    events = nlohmann::json::parse(Buffer::map_file(trace).view());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not an ONNX Runtime profile: {}", what, e.what());
  }
  if (!events.is_array()) fail("{}: not an ONNX Runtime profile (expected a JSON array)", what);
  std::map<std::string, OpTime> by_op;
  for (const auto& e : events) {
    if (!e.is_object() || e.value("cat", "") != "Node") continue;
    const auto name = e.value("name", "");
    if (!name.ends_with("_kernel_time")) continue;
    const auto args = e.find("args");
    const auto dur = e.find("dur");
    if (args == e.end() || !args->is_object() || dur == e.end() || !dur->is_number_unsigned()) {
      fail("{}: node event \"{}\" without args or a duration", what, name);
    }
    const auto op = args->value("op_name", "?");
    OpTime& t = by_op.try_emplace(op, OpTime{op, 0, 0}).first->second;
    t.microseconds += dur->get<uint64_t>();
    t.executions += 1;
  }
  std::vector<OpTime> out;
  for (auto& [op, t] : by_op) out.push_back(std::move(t));
  sort_most_time_first(out);
  return out;
}

void merge_op_times(std::vector<OpTime>& into, const std::vector<OpTime>& more) {
  for (const auto& m : more) {
    auto it = std::find_if(into.begin(), into.end(), [&](const OpTime& t) { return t.op == m.op; });
    if (it == into.end()) {
      into.push_back(m);
    } else {
      it->microseconds += m.microseconds;
      it->executions += m.executions;
    }
  }
  sort_most_time_first(into);
}

}  // namespace torchless::nn
