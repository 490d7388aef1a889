// Speed of the geometry metrics on a 100k-point cloud (a noisy sphere and a perturbed copy),
// D1 only and D1 + D2, against an anchor measured in the same run: symmetric D1 with SciPy's
// cKDTree (numpy/scipy under /usr/bin/python3), the usual quick Python replacement for pc_error.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "torchless/codec/metrics.h"
#include "torchless/formats/point_cloud.h"

namespace {

using torchless::formats::PointCloud;

struct Pair {
  PointCloud reference, decoded;
};

const Pair& pair() {
  static const Pair p = [] {
    Pair out;
    std::mt19937 rng(1);
    std::normal_distribution<float> g(0, 1);
    std::uniform_real_distribution<float> noise(-0.5f, 0.5f);
    for (int i = 0; i < 100000; ++i) {
      float x = g(rng), y = g(rng), z = g(rng);
      float r = std::sqrt(x * x + y * y + z * z);
      float px = 500 * x / r, py = 500 * y / r, pz = 500 * z / r;
      out.reference.positions.insert(out.reference.positions.end(), {px, py, pz});
      out.reference.normals.insert(out.reference.normals.end(), {x / r, y / r, z / r});
      out.decoded.positions.insert(out.decoded.positions.end(),
                                   {px + noise(rng), py + noise(rng), pz + noise(rng)});
    }
    return out;
  }();
  return p;
}

void BM_D1(benchmark::State& state) {
  torchless::codec::MetricOptions options;
  options.peak = 1023;
  options.normals = torchless::codec::NormalSource::kNone;
  options.threads = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        torchless::codec::measure_geometry(pair().reference, pair().decoded, options));
  }
  state.counters["points"] = 100000;
}
BENCHMARK(BM_D1)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_D1D2(benchmark::State& state) {
  torchless::codec::MetricOptions options;
  options.peak = 1023;
  options.threads = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        torchless::codec::measure_geometry(pair().reference, pair().decoded, options));
  }
}
BENCHMARK(BM_D1D2)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

// The anchor: scipy's cKDTree, symmetric D1 (1 worker), CPU time inside Python (not counting the
// interpreter start and file reading).
void BM_ScipyD1Anchor(benchmark::State& state) {
  auto dir = std::filesystem::temp_directory_path() / "torchless-metrics-bench";
  std::filesystem::create_directories(dir);
  torchless::formats::PointCloud a = pair().reference;
  a.normals.clear();
  torchless::formats::write_ply(dir / "a.ply", a);
  torchless::formats::write_ply(dir / "b.ply", pair().decoded);
  std::ofstream(dir / "d1.py") << R"(
import sys, time, numpy as np
from scipy.spatial import cKDTree
def load(p):
    d = open(p, 'rb').read(); e = d.index(b'end_header\n') + 11
    return np.frombuffer(d, '<f4', offset=e).reshape(-1, 3).astype(np.float64)
a, b = load(sys.argv[1]), load(sys.argv[2])
t = time.process_time()
da, _ = cKDTree(b).query(a); db, _ = cKDTree(a).query(b)
mse = max((da ** 2).mean(), (db ** 2).mean())
print(time.process_time() - t, mse)
)";
  std::string command = "/usr/bin/python3 " + (dir / "d1.py").string() + " " +
                        (dir / "a.ply").string() + " " + (dir / "b.ply").string();
  for (auto _ : state) {
    FILE* pipe = popen(command.c_str(), "r");
    double seconds = 0, mse = 0;
    if (pipe == nullptr || std::fscanf(pipe, "%lf %lf", &seconds, &mse) != 2) {
      state.SkipWithError("scipy anchor failed (python3-scipy installed?)");
      if (pipe != nullptr) pclose(pipe);
      return;
    }
    pclose(pipe);
    state.SetIterationTime(seconds);
    state.counters["mse"] = mse;
  }
}
BENCHMARK(BM_ScipyD1Anchor)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
