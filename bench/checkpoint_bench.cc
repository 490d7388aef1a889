// Checkpoint reading speed and memory against torch.load, measured in the same run.
//
// Creates (once, with /usr/bin/python3 torch.save) a 256 MiB state_dict of 64 float32 tensors
// of 1024x1024 in the temp dir, then measures:
//   (a) open + reach the first tensor (TorchCheckpoint::open, state_dict, first element),
//   (b) open + sum every element of every tensor,
//   (c) resident memory (VmRSS) after open minus before,
// and the anchors, timed inside one python process (startup excluded): torch.load, and
// torch.load + sum of every tensor. Prints the ratios. Targets: open >= 50x faster than
// torch.load; RSS after open <= 16 MiB beyond the index; full sum no slower than torch.load.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "torchless/core/parallel.h"
#include "torchless/formats/torch_file.h"

namespace {

using torchless::torch_file::TorchCheckpoint;

std::filesystem::path bench_file() {
  auto dir = std::filesystem::temp_directory_path() / "torchless-bench";
  std::filesystem::create_directories(dir);
  auto path = dir / "state_dict_256m.pt";
  if (!std::filesystem::exists(path)) {
    std::string cmd =
        "/usr/bin/python3 -c \"import torch,collections; torch.manual_seed(0); "
        "sd=collections.OrderedDict(('layer%d.weight'%i, torch.randn(1024,1024)) for i in "
        "range(64)); torch.save(sd, '" +
        path.string() + ".tmp')\" && mv " + path.string() + ".tmp " + path.string();
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "could not create %s with torch\n", path.c_str());
      std::exit(1);
    }
  }
  return path;
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

double sum_all(const TorchCheckpoint& ckpt) {
  auto tensors = ckpt.tensors();
  std::vector<double> partial(tensors.size());
  torchless::parallel_for(tensors.size(), 0, [&](size_t i) {
    const auto& t = tensors[i].tensor;
    const float* p = t.data<float>();
    const int64_t n = t.numel();
    float acc[8] = {};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
      for (int j = 0; j < 8; ++j) acc[j] += p[k + j];
    }
    double s = 0;
    for (; k < n; ++k) s += p[k];
    for (float a : acc) s += a;
    partial[i] = s;
  });
  double s = 0;
  for (double p : partial) s += p;
  return s;
}

void BM_OpenAndFirstTensor(benchmark::State& state) {
  auto path = bench_file();
  for (auto _ : state) {
    auto ckpt = TorchCheckpoint::open(path);
    auto sd = ckpt.state_dict();
    benchmark::DoNotOptimize(sd.entries.front().tensor.data<float>()[0]);
  }
}
BENCHMARK(BM_OpenAndFirstTensor)->Unit(benchmark::kMillisecond);

void BM_OpenAndSumEveryTensor(benchmark::State& state) {
  auto path = bench_file();
  for (auto _ : state) {
    auto ckpt = TorchCheckpoint::open(path);
    benchmark::DoNotOptimize(sum_all(ckpt));
  }
}
BENCHMARK(BM_OpenAndSumEveryTensor)->Unit(benchmark::kMillisecond);

template <typename F>
double best_seconds(int runs, F&& f) {
  double best = 1e30;
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

void report_against_torch() {
  auto path = bench_file();
  // Anchor: python's own timings, best of 3, process startup and imports excluded.
  std::string cmd =
      "/usr/bin/python3 -c \"import time,torch,sys; p=sys.argv[1]; "
      "L=[];S=[]\n"
      "for _ in range(3):\n"
      "  t=time.perf_counter(); sd=torch.load(p); L.append(time.perf_counter()-t)\n"
      "  t=time.perf_counter(); sd=torch.load(p); s=sum(float(v.sum()) for v in sd.values()); "
      "S.append(time.perf_counter()-t)\n"
      "print(min(L), min(S))\" " +
      path.string();
  FILE* pipe = popen(cmd.c_str(), "r");
  double torch_load = 0, torch_sum = 0;
  if (pipe == nullptr || std::fscanf(pipe, "%lf %lf", &torch_load, &torch_sum) != 2) {
    std::fprintf(stderr, "torch anchor failed\n");
  }
  if (pipe) pclose(pipe);

  long before = rss_kib();
  auto ckpt = TorchCheckpoint::open(path);
  auto sd = ckpt.state_dict();
  long after = rss_kib();
  benchmark::DoNotOptimize(sd.entries.front().tensor.data<float>()[0]);

  double open_s = best_seconds(5, [&] {
    auto c = TorchCheckpoint::open(path);
    auto s = c.state_dict();
    benchmark::DoNotOptimize(s.entries.front().tensor.data<float>()[0]);
  });
  double sum_s = best_seconds(3, [&] {
    auto c = TorchCheckpoint::open(path);
    benchmark::DoNotOptimize(sum_all(c));
  });
  std::printf("\n== checkpoint_bench: %s (%zu tensors, %.0f MiB)\n", path.c_str(), sd.size(),
              std::filesystem::file_size(path) / 1048576.0);
  std::printf("torch.load                    %9.3f ms (anchor)\n", torch_load * 1e3);
  std::printf("torch.load + sum              %9.3f ms (anchor)\n", torch_sum * 1e3);
  std::printf(
      "torchless open + first tensor %9.3f ms  -> %.0fx faster than torch.load "
      "(target >= 50x)\n",
      open_s * 1e3, torch_load / open_s);
  std::printf(
      "torchless open + sum all      %9.3f ms  -> %.2fx torch.load time (target <= 1), "
      "%.2fx faster than torch.load + sum\n",
      sum_s * 1e3, sum_s / torch_load, torch_sum / sum_s);
  std::printf("RSS after open - before       %9.3f MiB (target <= 16 MiB beyond the index)\n",
              (after - before) / 1024.0);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  report_against_torch();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
