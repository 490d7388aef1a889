// ONNX Runtime from C++ (nn::Graph) against PyTorch eager on a D-PCC-like decoder stage
// (bench/make_dpcc_stage.py; spec dpcc-pointcloud.md section 1.6) at 2,000 and 20,000 points.
//
// The anchor is measured in the same run: before the ORT benchmarks, one python process times
// PyTorch eager for every (points, threads) pair with its own clock (torch.set_num_threads, as
// ORT's intra-op threads here) and reports per-forward medians. Each ORT benchmark reports:
//   ort_ms            mean wall milliseconds per Graph::run
//   torch_ms          PyTorch eager median for the same points and threads
//   speedup_vs_torch  torch_ms / ort_ms
// over thread counts (1, 2; at 2 also with pool threads sleeping instead of spinning) and
// optimisation levels (disable, basic, all); a table of ratios
// (thread scaling, optimisation effect) is printed at the end.
//
// Environment: TORCHLESS_PYTHON (default /usr/bin/python3), TORCHLESS_BENCH_MODEL (a model to
// time instead; by default the script exports dpcc_stage.onnx into the working directory).
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <string>

#include "torchless/nn/graph.h"

namespace {

using torchless::Tensor;
using torchless::nn::Graph;
using torchless::nn::GraphOptions;
using torchless::nn::OptimizationLevel;

const std::filesystem::path kScript =
    std::filesystem::path(__FILE__).parent_path() / "make_dpcc_stage.py";

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string run_capture(const std::string& command) {
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run " + command);
  std::string out;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  int status = ::pclose(pipe);
  if (status != 0) throw std::runtime_error(fmt::format("'{}' failed ({})", command, status));
  return out;
}

// (points, threads) -> PyTorch eager median ms.
std::map<std::pair<int, int>, double> g_torch_ms;
// (points, threads, level) -> ORT mean ms, filled as the benchmarks run.
std::map<std::tuple<int, int, OptimizationLevel>, double> g_ort_ms;

Tensor random_tensor(torchless::Shape shape, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(torchless::checked_numel(shape, "input")));
  for (auto& x : v) x = normal(rng);
  return Tensor::from_vector(v, std::move(shape));
}

void BM_OrtDpccStage(benchmark::State& state, std::filesystem::path model, int points, int threads,
                     OptimizationLevel level, bool spinning) {
  GraphOptions options;
  options.allow_spinning = spinning;
  options.intra_op_threads = threads;
  options.inter_op_threads = 1;
  options.optimization = level;
  Graph graph = Graph::load(model, options);
  std::vector<torchless::nn::NamedTensor> inputs = {
      {"latent_feats", random_tensor({1, 8, points}, 1)},
      {"latent_xyzs", random_tensor({1, 3, points}, 2)}};
  for (int i = 0; i < 2; ++i) graph.run(inputs);  // warm-up: allocations, thread pool
  double total_ms = 0;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    auto outputs = graph.run(inputs);
    benchmark::DoNotOptimize(outputs[0].raw_data());
    total_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  double ort_ms = total_ms / static_cast<double>(state.iterations());
  if (spinning) g_ort_ms[{points, threads, level}] = ort_ms;
  state.counters["ort_ms"] = ort_ms;
  auto it = g_torch_ms.find({points, threads});
  if (it != g_torch_ms.end()) {
    state.counters["torch_ms"] = it->second;
    state.counters["speedup_vs_torch"] = it->second / ort_ms;
  }
  state.counters["reused_output_runs"] = static_cast<double>(graph.reused_output_runs());
}

void print_ratios() {
  std::printf("\nD-PCC stage, ONNX Runtime (nn::Graph) vs PyTorch eager %s, same process run\n",
              "(anchor timed inside python)");
  std::printf("%8s %7s %9s %10s %10s %9s\n", "points", "threads", "level", "ort_ms", "torch_ms",
              "speedup");
  for (const auto& [key, ort] : g_ort_ms) {
    auto [points, threads, level] = key;
    double torch = g_torch_ms.count({points, threads}) ? g_torch_ms.at({points, threads}) : 0;
    std::printf("%8d %7d %9s %10.3f %10.3f %8.2fx\n", points, threads,
                std::string(torchless::nn::optimization_level_name(level)).c_str(), ort, torch,
                torch > 0 ? torch / ort : 0.0);
  }
  std::printf("\nthread scaling (1 -> 2 threads, level all): ");
  for (int points : {2000, 20000}) {
    auto a = g_ort_ms.find({points, 1, OptimizationLevel::kAll});
    auto b = g_ort_ms.find({points, 2, OptimizationLevel::kAll});
    if (a != g_ort_ms.end() && b != g_ort_ms.end()) {
      double torch_scale = g_torch_ms.count({points, 2})
                               ? g_torch_ms.at({points, 1}) / g_torch_ms.at({points, 2})
                               : 0;
      std::printf("%d pts ORT %.2fx, torch %.2fx;  ", points, a->second / b->second, torch_scale);
    }
  }
  std::printf("\noptimisation effect (1 thread, time relative to 'disable'): ");
  for (int points : {2000, 20000}) {
    auto d = g_ort_ms.find({points, 1, OptimizationLevel::kDisable});
    if (d == g_ort_ms.end()) continue;
    std::printf("%d pts:", points);
    for (auto level : {OptimizationLevel::kBasic, OptimizationLevel::kAll}) {
      auto l = g_ort_ms.find({points, 1, level});
      if (l != g_ort_ms.end()) {
        std::printf(" %s %.2fx", std::string(torchless::nn::optimization_level_name(level)).c_str(),
                    d->second / l->second);
      }
    }
    std::printf(";  ");
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  std::string python = env_or("TORCHLESS_PYTHON", "/usr/bin/python3");
  // The stage is exported on every run (a second), so that it always matches the script.
  const char* given = std::getenv("TORCHLESS_BENCH_MODEL");
  std::filesystem::path model = given != nullptr && *given != '\0' ? given : "dpcc_stage.onnx";
  if (given == nullptr || *given == '\0') {
    std::fprintf(stderr, "exporting %s with %s\n", model.c_str(), kScript.c_str());
    run_capture(fmt::format("'{}' '{}' --export '{}' 2>/dev/null", python, kScript.string(),
                            model.string()));
  }
  std::fprintf(stderr, "timing PyTorch eager in one python process...\n");
  auto anchor = nlohmann::json::parse(run_capture(fmt::format(
      "'{}' '{}' --time --points 2000,20000 --threads 1,2 --iters 20", python, kScript.string())));
  for (const auto& r : anchor.at("results")) {
    g_torch_ms[{r.at("points").get<int>(), r.at("threads").get<int>()}] =
        r.at("median_ms").get<double>();
  }
  std::fprintf(stderr, "PyTorch %s timed\n", anchor.at("torch_version").get<std::string>().c_str());

  for (int points : {2000, 20000}) {
    for (int threads : {1, 2}) {
      for (auto level :
           {OptimizationLevel::kDisable, OptimizationLevel::kBasic, OptimizationLevel::kAll}) {
        auto name = fmt::format("ort_dpcc_stage/points:{}/threads:{}/opt:{}", points, threads,
                                torchless::nn::optimization_level_name(level));
        benchmark::RegisterBenchmark(name.c_str(), BM_OrtDpccStage, model, points, threads, level,
                                     true)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
      if (threads > 1) {
        // Pool threads that sleep instead of spinning: the fair setting on shared cores.
        auto name =
            fmt::format("ort_dpcc_stage/points:{}/threads:{}/opt:all/spin:0", points, threads);
        benchmark::RegisterBenchmark(name.c_str(), BM_OrtDpccStage, model, points, threads,
                                     OptimizationLevel::kAll, false)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  print_ratios();
  return 0;
}
