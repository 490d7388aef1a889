// `torchless decode FILE --package PKG -o out.ply`: a `.tlc` point-cloud container to a PLY file,
// through the package's ONNX graphs and entropy tables (codec/dpcc.h). Damaged blocks are
// reported on stderr (and in --json) and left out of the output; --strict makes them an error.
// A progress bar (blocks done / total) goes to stderr when it is a terminal, or with --progress.
// --profile DIR has ONNX Runtime time every node: one trace per graph in DIR (Chrome trace JSON)
// and a table of the time per operator after the summary (or "profile" in --json).
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cli/command.h"
#include "torchless/codec/container.h"
#include "torchless/codec/dpcc.h"
#include "torchless/codec/package.h"
#include "torchless/core/error.h"
#include "torchless/formats/point_cloud.h"

namespace torchless::cli {
namespace {

struct DecodeOptions {
  std::string input;
  std::string package;
  std::string output;
  bool ascii = false;
  bool strict = false;
  size_t threads = 0;
  bool json = false;
  bool progress = false;
  bool no_progress = false;
  std::string profile_dir;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A one-line bar redrawn in place; at most ~20 redraws per second so that thousands of small
// blocks do not flood the terminal.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}
  void update(size_t done, size_t total) {
    if (!enabled_ || total == 0) return;
    auto now = std::chrono::steady_clock::now();
    if (done != total && now - last_ < std::chrono::milliseconds(50)) return;
    last_ = now;
    constexpr size_t kWidth = 30;
    size_t filled = done * kWidth / total;
    std::fprintf(stderr, "\rdecoding [%s%s] %zu/%zu blocks", std::string(filled, '#').c_str(),
                 std::string(kWidth - filled, ' ').c_str(), done, total);
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  bool enabled_;
  std::chrono::steady_clock::time_point last_{};
};

int run_decode(const DecodeOptions& o) {
  auto start = std::chrono::steady_clock::now();
  auto package = codec::Package::load(o.package);
  auto container = codec::Container::read(o.input, {.strict = o.strict});
  // Refuse a mismatched package before paying for its sessions.
  package.check_container(container, o.input);
  codec::DpccDecoderOptions decoder_options;
  decoder_options.threads = o.threads;
  decoder_options.profile_dir = o.profile_dir;
  codec::DpccDecoder decoder(package, decoder_options);
  double load_seconds = seconds_since(start);

  auto decode_start = std::chrono::steady_clock::now();
  ProgressBar bar(!o.no_progress && (o.progress || ::isatty(STDERR_FILENO)));
  codec::DpccDecodeOptions options;
  options.strict = o.strict;
  options.progress = [&bar](size_t done, size_t total) { bar.update(done, total); };
  auto result = decoder.decode(container, o.input, options);
  double decode_seconds = seconds_since(decode_start);
  std::optional<codec::DpccProfile> profile;
  if (!o.profile_dir.empty()) profile = decoder.end_profiling();

  auto write_start = std::chrono::steady_clock::now();
  formats::write_ply(
      o.output, result.cloud,
      o.ascii ? formats::PlyEncoding::kAscii : formats::PlyEncoding::kBinaryLittleEndian);
  double write_seconds = seconds_since(write_start);
  double total_seconds = seconds_since(start);

  for (const auto& d : result.damaged) {
    std::fprintf(stderr,
                 "torchless decode: warning: %s: block %zu (cube %u) at offset %llu is damaged, "
                 "left out: %s\n",
                 o.input.c_str(), d.index, d.cube_index, static_cast<unsigned long long>(d.offset),
                 d.reason.c_str());
  }
  uint64_t file_bytes = std::filesystem::file_size(o.input);
  double bpp = container.num_points ? 8.0 * static_cast<double>(file_bytes) /
                                          static_cast<double>(container.num_points)
                                    : 0.0;
  if (o.json) {
    nlohmann::json damaged = nlohmann::json::array();
    for (const auto& d : result.damaged) {
      damaged.push_back({{"index", d.index},
                         {"cube_index", d.cube_index},
                         {"offset", d.offset},
                         {"reason", d.reason}});
    }
    nlohmann::json j = {{"input", o.input},
                        {"package", o.package},
                        {"package_id", package.package_id()},
                        {"output", o.output},
                        {"points_in", container.num_points},
                        {"points_out", result.cloud.size()},
                        {"blocks", result.blocks},
                        {"damaged_blocks", damaged},
                        {"bytes", file_bytes},
                        {"bpp", bpp},
                        {"seconds", total_seconds},
                        {"seconds_load", load_seconds},
                        {"seconds_decode", decode_seconds},
                        {"seconds_write", write_seconds},
                        {"threads", o.threads}};
    if (profile) {
      nlohmann::json ops = nlohmann::json::array();
      for (const auto& t : profile->ops) {
        ops.push_back({{"op", t.op}, {"ms", t.microseconds / 1e3}, {"executions", t.executions}});
      }
      nlohmann::json traces = nlohmann::json::array();
      for (const auto& t : profile->traces) traces.push_back(t.string());
      j["profile"] = {{"traces", traces}, {"ops", ops}};
    }
    std::puts(j.dump().c_str());
  } else {
    std::string out = fmt::format("{}: {} blocks, {} points in -> {} points out -> {} ({})\n",
                                  o.input, result.blocks, container.num_points, result.cloud.size(),
                                  o.output, o.ascii ? "ascii PLY" : "binary PLY");
    out += fmt::format("damaged blocks: {}\n", result.damaged.size());
    out += fmt::format("rate: {} bytes, {:.4f} bpp\n", file_bytes, bpp);
    out += fmt::format(
        "time: {:.3f} s (package and sessions {:.3f} s, decode {:.3f} s, write {:.3f} s)\n",
        total_seconds, load_seconds, decode_seconds, write_seconds);
    if (profile) {
      uint64_t total = 0;
      for (const auto& t : profile->ops) total += t.microseconds;
      out += fmt::format("ONNX Runtime node time by operator ({} traces in {}):\n",
                         profile->traces.size(), o.profile_dir);
      for (const auto& t : profile->ops) {
        out += fmt::format("  {:<28} {:>10.3f} ms {:>5.1f}%  {:>8} executions\n", t.op,
                           t.microseconds / 1e3, total ? 100.0 * t.microseconds / total : 0.0,
                           t.executions);
      }
    }
    std::fputs(out.c_str(), stdout);
  }
  return 0;
}

CommandRegistration kDecode{
    "decode", "Decode a .tlc compressed point cloud to PLY with its model package",
    [](CLI::App& app) {
      auto o = std::make_shared<DecodeOptions>();
      app.add_option("file", o->input, "Compressed point cloud (.tlc)")->required();
      app.add_option("--package", o->package, "Model package directory (manifest.json)")
          ->required();
      app.add_option("-o,--output", o->output, "Output PLY file")->required();
      app.add_flag("--ascii", o->ascii, "Write ASCII PLY (default: binary little-endian)");
      app.add_flag("--strict", o->strict, "Any damaged block is an error");
      app.add_option("--threads", o->threads, "Blocks decoded in parallel (0: all cores)");
      app.add_flag("--json", o->json, "One JSON object on stdout");
      app.add_option("--profile", o->profile_dir,
                     "ONNX Runtime profiling: one trace per graph in DIR, time per operator "
                     "printed after the summary");
      auto* on = app.add_flag("--progress", o->progress,
                              "Show the progress bar even when "
                              "stderr is not a terminal");
      app.add_flag("--no-progress", o->no_progress, "Never show the progress bar")->excludes(on);
      return [o] { return run_decode(*o); };
    }};

}  // namespace
}  // namespace torchless::cli
