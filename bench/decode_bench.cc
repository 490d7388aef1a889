// End-to-end decode of a ~100k-point cloud (CGAL's building.ply, 100,000 points, compressed with
// packages/dpcc-high) by the C++ decoder (codec::DpccDecoder: rANS + ONNX Runtime + C++ glue),
// beside two anchors measured in the same run:
//
//   python  the Python reference pipeline (torchless_export.codec) in PyTorch eager, in one
//           python process with its own clock: only the networks and the glue (synthesis, per
//           stage upsample -> selection -> refine, un-normalisation, concatenation) are timed;
//           its (pure-Python) entropy decoding is done before the clock starts and left out.
//           torch uses all cores (torch.get_num_threads()). Best of 3 after one warm-up.
//   draco   Debian's draco_decoder on a Draco encoding of the same cloud at a comparable rate
//           (-qp 8, reported in bpp beside ours), process wall time (start and PLY write
//           included), median of 5; compared with `torchless decode` run the same way.
//
// The C++ benchmarks (sessions created once, outside the timing) report:
//   cxx_ms, python_ms, speedup_vs_python   in-process decode vs the Python network+glue time
// and lines printed at the end give the process-level comparison with Draco and the peak
// resident memory (VmHWM, from wait4's ru_maxrss) of a `torchless decode` process.
//
// The .tlc is made once with `python3 -m torchless_export compress` when missing
// (out/bench/building-<package_id>.tlc). Environment: TORCHLESS_PYTHON (default /usr/bin/python3),
// TORCHLESS_CLI (the torchless binary; default: beside this benchmark's build tree).
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "torchless/codec/container.h"
#include "torchless/codec/dpcc.h"
#include "torchless/codec/package.h"
#include "torchless/core/parallel.h"

namespace {

namespace fs = std::filesystem;
using torchless::codec::Container;
using torchless::codec::DpccDecoder;
using torchless::codec::Package;

const fs::path kRepo = fs::path(__FILE__).parent_path().parent_path();
const fs::path kPackage = kRepo / "packages" / "dpcc-high";
const fs::path kCloud = kRepo / "third_party" / "samples" / "cgal" / "building.ply";
const fs::path kWork = kRepo / "out" / "bench";
// The compressed cloud, named after the package so that a re-exported package (new id) gets a
// fresh file. Loaded once, on first use (not during static initialisation).
const fs::path& tlc_path() {
  static const fs::path path =
      kWork / ("building-" + Package::load(kPackage).package_id() + ".tlc");
  return path;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string python() {
  return env_or("TORCHLESS_PYTHON", "/usr/bin/python3");
}

std::string capture(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return out;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  if (::pclose(pipe) != 0) {
    std::fprintf(stderr, "decode_bench: command failed: %s\n%s\n", command.c_str(), out.c_str());
    std::exit(1);
  }
  return out;
}

void ensure_tlc() {
  if (fs::exists(tlc_path())) return;
  if (!fs::exists(kCloud)) capture((kRepo / "scripts" / "fetch_samples.sh").string() + " 2>&1");
  fs::create_directories(kWork);
  std::printf("decode_bench: compressing %s once (Python encoder)...\n", kCloud.c_str());
  capture(fmt::format(
      "cd {} && PYTHONPATH=python {} -m torchless_export compress --package {} "
      "--in {} --out {} 2>&1",
      kRepo.string(), python(), kPackage.string(), kCloud.string(), tlc_path().string()));
}

// The Python reference's network + glue time (entropy decoding done before the clock starts).
const char* kPythonScript = R"PY(
import json, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[1] + "/python")
from torchless_export.codec import Codec, decode_latent, unnormalize
from torchless_export.container import Container
from torchless_export.dpcc.model import select_xyzs_and_feats
from torchless_export.package import StageRefine, StageUpsample
codec = Codec(sys.argv[2])
c = Container.from_bytes(open(sys.argv[3], "rb").read())
latents = [(decode_latent(codec.feats_tables, b.feats, b.n3), decode_latent(codec.xyzs_tables, b.xyzs, b.n3))
           for b in c.blocks]
stages = [(StageUpsample(s), StageRefine(s)) for s in codec.model.decoder.decoder_layers]
d = -(-c.map_size // c.cube_size)
def decode():
    parts = []
    with torch.no_grad():
        for b, (feats, analyzed) in zip(c.blocks, latents):
            xyzs = codec.model.latent_xyzs_synthesis(analyzed)
            for up, refine in stages:
                cx, cf, un = up(xyzs, feats)
                xyzs, feats = select_xyzs_and_feats(cx, cf, un)
                xyzs, feats = refine(xyzs, feats)
            parts.append(unnormalize(xyzs[0].t().numpy(), b.cube_index, d, c))
    return np.concatenate(parts)
decode()
times = []
for _ in range(3):
    t = time.perf_counter(); pts = decode(); times.append(time.perf_counter() - t)
print(json.dumps({"seconds": min(times), "points": len(pts), "threads": torch.get_num_threads()}))
)PY";

struct Anchors {
  double python_s = 0;
  uint64_t python_points = 0;
  int python_threads = 0;
};

const Anchors& anchors() {
  static const Anchors a = [] {
    ensure_tlc();
    auto script = kWork / "python_decode_anchor.py";
    std::FILE* f = std::fopen(script.c_str(), "w");
    std::fputs(kPythonScript, f);
    std::fclose(f);
    auto out = capture(fmt::format("{} {} {} {} {}", python(), script.string(), kRepo.string(),
                                   kPackage.string(), tlc_path().string()));
    auto j = nlohmann::json::parse(out.substr(out.find('{')));
    Anchors r;
    r.python_s = j["seconds"];
    r.python_points = j["points"];
    r.python_threads = j["threads"];
    return r;
  }();
  return a;
}

void BM_CxxDecode(benchmark::State& state) {
  const auto& a = anchors();
  auto package = Package::load(kPackage);
  auto container = Container::read(tlc_path());
  torchless::codec::DpccDecoderOptions options;
  options.threads = static_cast<size_t>(state.range(0));
  options.intra_op_threads = static_cast<int>(state.range(1));
  DpccDecoder decoder(package, options);
  size_t points = 0;
  double seconds = 0;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    auto result = decoder.decode(container, tlc_path().string());
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    points = result.cloud.size();
    benchmark::DoNotOptimize(result.cloud.positions.data());
  }
  double per_decode =
      seconds / static_cast<double>(std::max<benchmark::IterationCount>(1, state.iterations()));
  state.counters["points"] = static_cast<double>(points);
  state.counters["cxx_ms"] = per_decode * 1e3;
  state.counters["python_ms"] = a.python_s * 1e3;
  state.counters["speedup_vs_python"] = a.python_s / per_decode;
  state.SetLabel(fmt::format("blocks x{} threads, ORT intra-op {}, python torch threads {}",
                             options.threads ? options.threads : torchless::hardware_threads(),
                             options.intra_op_threads, a.python_threads));
  if (points != a.python_points) {
    state.SkipWithError(
        fmt::format("C++ decoded {} points, Python {}", points, a.python_points).c_str());
  }
}

// Wall seconds and peak RSS (KiB) of one child process.
std::pair<double, long> run_process(const std::vector<std::string>& argv) {
  auto start = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> args;
    for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
    args.push_back(nullptr);
    std::freopen("/dev/null", "w", stdout);
    ::execvp(args[0], args.data());
    std::_Exit(127);
  }
  int status = 0;
  rusage usage{};
  ::wait4(pid, &status, 0, &usage);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "decode_bench: %s failed\n", argv[0].c_str());
    std::exit(1);
  }
  return {seconds, usage.ru_maxrss};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void process_level_report() {
  ensure_tlc();
  std::string cli = env_or("TORCHLESS_CLI", (fs::path(::program_invocation_name).parent_path() /
                                             ".." / "src" / "cli" / "torchless")
                                                .string());
  // Draco at -qp 8 on the same 100k positions (binary PLY without normals or faces).
  auto positions = kWork / "building-positions.ply";
  auto drc = kWork / "building-qp8.drc";
  if (!fs::exists(drc)) {
    capture(fmt::format(
        "cd {} && {} -c 'import sys; sys.path.insert(0, \"scripts\"); import draco_anchor as d; "
        "x, _ = d.read_cloud(\"{}\"); d.write_ply(\"{}\", x)' && draco_encoder -point_cloud -i {} "
        "-o {} -qp 8 -cl 7 2>&1",
        kRepo.string(), python(), kCloud.string(), positions.string(), positions.string(),
        drc.string()));
  }
  uint64_t points = 100000;
  double tlc_bpp = 8.0 * static_cast<double>(fs::file_size(tlc_path())) / points;
  double drc_bpp = 8.0 * static_cast<double>(fs::file_size(drc)) / points;
  std::vector<double> ours, draco;
  long peak_kib = 0;
  for (int i = 0; i < 5; ++i) {
    auto [s, rss] =
        run_process({cli, "decode", tlc_path().string(), "--package", kPackage.string(), "-o",
                     (kWork / "building-high.decoded.ply").string(), "--no-progress"});
    ours.push_back(s);
    peak_kib = std::max(peak_kib, rss);
    draco.push_back(run_process({"draco_decoder", "-i", drc.string(), "-o",
                                 (kWork / "building-qp8.decoded.ply").string()})
                        .first);
  }
  const auto& a = anchors();
  std::printf("\nProcess level (median of 5, process start and PLY write included):\n");
  std::printf("  torchless decode  %.3f s  (%.3f bpp, %d points in)\n", median(ours), tlc_bpp,
              100000);
  std::printf("  draco_decoder     %.3f s  (%.3f bpp, -qp 8)\n", median(draco), drc_bpp);
  std::printf("  torchless / draco decode time: %.1fx\n", median(ours) / median(draco));
  std::printf("  peak RSS of torchless decode (VmHWM): %.1f MiB\n", peak_kib / 1024.0);
  std::printf("Python reference (PyTorch eager, networks + glue only, %d threads): %.3f s\n",
              a.python_threads, a.python_s);
}

}  // namespace

BENCHMARK(BM_CxxDecode)
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({1, 0})
    ->ArgNames({"threads", "intra_op"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  anchors();
  benchmark::RunSpecifiedBenchmarks();
  process_level_report();
  benchmark::Shutdown();
  return 0;
}
