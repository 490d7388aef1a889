// A Graph is an ONNX model loaded into an ONNX Runtime session (CPU): named inputs and outputs
// with declared element types and shapes, checked before every run, and run on torchless
// Tensors without copying them in (inputs are wrapped in place) or out (outputs are views of
// the memory ONNX Runtime wrote).
//
// Thread-safety: run() may be called concurrently on one Graph from several threads (ONNX
// Runtime's Session::Run is thread-safe; the output-reuse cache below is guarded by a mutex,
// and a run that finds it busy allocates its own outputs). Construction, move and destruction
// must not overlap with runs. Tensors returned by run() are immutable and never written again.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torchless/core/buffer.h"
#include "torchless/core/tensor.h"

namespace torchless::nn {

enum class OptimizationLevel { kDisable, kBasic, kExtended, kAll };
enum class ExecutionMode { kSequential, kParallel };

std::string_view optimization_level_name(OptimizationLevel level);
// "disable", "basic", "extended", "all"; throws Error otherwise.
OptimizationLevel parse_optimization_level(std::string_view name);

struct GraphOptions {
  int intra_op_threads = 0;  // 0: ONNX Runtime's default (one per physical core)
  int inter_op_threads = 0;  // used by ExecutionMode::kParallel; 0: default
  OptimizationLevel optimization = OptimizationLevel::kAll;
  ExecutionMode execution_mode = ExecutionMode::kSequential;
  // When set, ONNX Runtime writes the optimised graph there while loading (for inspection).
  std::filesystem::path optimized_model_path;
  // ONNX Runtime's pool threads spin while waiting for work: fastest on an idle machine,
  // wasteful when cores are shared (CI, several processes). false makes them sleep.
  bool allow_spinning = true;
  // Reuse output buffers across runs whose input shapes repeat (see run()).
  bool reuse_outputs = true;
  // When set, ONNX Runtime times every node of every run (its profiler) and end_profiling()
  // writes the record as a Chrome trace to "<profile_prefix>_<date>_<time>.json": events of
  // category "Node" carry the node name, args.op_name and dur (microseconds).
  std::filesystem::path profile_prefix{};
};

// A declared input or output. shape[k] == -1 marks a dim unknown until run time, whose
// symbolic name (dim_param, e.g. "N") is dim_names[k] when the graph gives one.
struct TensorInfo {
  std::string name;
  int32_t elem_type = 0;       // ONNX TensorProto.DataType
  std::optional<DType> dtype;  // nullopt for types a Tensor cannot hold (strings)
  std::vector<int64_t> shape;
  std::vector<std::string> dim_names;
  std::string describe() const;  // "float32[1, 8, N]"
};

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

class Graph {
 public:
  // Loads a model file; initializers stored as external data are read from beside it.
  // Errors (a missing file, an invalid model, an unsupported operator) name the path.
  static Graph load(const std::filesystem::path& path, const GraphOptions& options = {});
  // Loads a model held in memory (without external data); `name` is used in error messages.
  static Graph load_from_memory(const Buffer& model, std::string name,
                                const GraphOptions& options = {});

  Graph(Graph&&) noexcept;
  Graph& operator=(Graph&&) noexcept;
  ~Graph();

  const std::string& name() const;
  const std::vector<TensorInfo>& inputs() const;
  const std::vector<TensorInfo>& outputs() const;
  // Index into outputs() (and into what run() returns); throws Error for unknown names.
  size_t output_index(std::string_view name) const;

  // Checks `inputs` against the declared inputs without running: every input given once, no
  // unknown names, element types, ranks and fixed dims as declared, and a symbolic dim name
  // bound to one value across all inputs. Throws Error naming the input and the mismatch.
  void check_inputs(const std::vector<NamedTensor>& inputs) const;

  // Runs the graph and returns the outputs in outputs() order. Inputs are passed to ONNX
  // Runtime in place (a non-contiguous input is made contiguous first). When the input shapes
  // equal those of an earlier run and the caller has dropped every Tensor of that run's
  // outputs, their buffers are handed back to ONNX Runtime as preallocated outputs instead of
  // allocating new ones.
  std::vector<Tensor> run(const std::vector<NamedTensor>& inputs) const;

  // How many runs wrote into reused output buffers (for tests and benchmarks).
  uint64_t reused_output_runs() const;

  // With GraphOptions::profile_prefix: stops profiling and returns the trace file written.
  // Throws Error when profiling was not enabled or has already ended.
  std::filesystem::path end_profiling();

 private:
  struct Impl;
  explicit Graph(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Node time per operator type in an ONNX Runtime profile (Graph::end_profiling's trace).
struct OpTime {
  std::string op;             // ONNX op type, or the kernel ORT ran (e.g. "FusedConv")
  uint64_t microseconds = 0;  // summed over every run of every node of that type
  uint64_t executions = 0;    // node executions
};
// Sums a trace's "Node" kernel events by operator, most time first. Throws Error naming the
// file when it is not such a trace.
std::vector<OpTime> summarize_profile(const std::filesystem::path& trace);
// Adds `more` into `into` by operator, keeping most-time-first order.
void merge_op_times(std::vector<OpTime>& into, const std::vector<OpTime>& more);

}  // namespace torchless::nn
