// `torchless eval REF DEC`: geometry quality of a decoded point cloud against its reference,
// as MPEG pc_error 0.14.1 reports it (D1/D2 PSNR, symmetric), plus Chamfer distances, bits per
// point (given the compressed size) and point counts. Human-readable by default, one JSON object
// with --json (an infinite PSNR is written as the string "inf").
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/command.h"
#include "torchless/codec/metrics.h"
#include "torchless/core/error.h"
#include "torchless/formats/point_cloud.h"

namespace torchless::cli {
namespace {

struct EvalOptions {
  std::string reference;
  std::string decoded;
  std::optional<double> peak;
  std::optional<uint64_t> compressed_bytes;
  std::string compressed_file;
  bool json = false;
  size_t threads = 0;
  std::string normals = "auto";
  size_t k = 16;
  bool keep_duplicates = false;
  bool keep_nan = false;
};

nlohmann::json number(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (std::isnan(v)) return nullptr;
  return v;
}

std::string text(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{:.4f}", v);
}

int run_eval(const EvalOptions& o) {
  codec::MetricOptions options;
  options.peak = o.peak;
  options.threads = o.threads;
  options.merge_duplicates = !o.keep_duplicates;
  options.normal_estimation_k = o.k;
  if (o.normals == "auto") {
    options.normals = codec::NormalSource::kAuto;
  } else if (o.normals == "reference") {
    options.normals = codec::NormalSource::kReference;
  } else if (o.normals == "estimate") {
    options.normals = codec::NormalSource::kEstimate;
  } else if (o.normals == "none") {
    options.normals = codec::NormalSource::kNone;
  } else {
    fail("--normals must be auto, reference, estimate or none, got '{}'", o.normals);
  }
  std::optional<uint64_t> compressed = o.compressed_bytes;
  if (!o.compressed_file.empty()) {
    std::error_code ec;
    auto size = std::filesystem::file_size(o.compressed_file, ec);
    if (ec) fail("{}: cannot read its size: {}", o.compressed_file, ec.message());
    compressed = size;
  }

  formats::PointCloudReadOptions read_options;
  read_options.keep_nan_points = o.keep_nan;
  read_options.keep_attributes = false;
  formats::PointCloudReadInfo ref_info, dec_info;
  auto reference = formats::read_point_cloud(o.reference, read_options, &ref_info);
  auto decoded = formats::read_point_cloud(o.decoded, read_options, &dec_info);

  auto start = std::chrono::steady_clock::now();
  auto q = codec::measure_geometry(reference, decoded, options);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::optional<double> bpp;
  if (compressed) bpp = codec::bits_per_point(*compressed, q.reference_points);

  if (o.json) {
    auto direction = [&](const codec::DirectionalError& d) {
      nlohmann::json j{{"d1_mse", d.d1_mse}, {"d1_hausdorff", d.d1_hausdorff}};
      if (q.has_d2) {
        j["d2_mse"] = d.d2_mse;
        j["d2_hausdorff"] = d.d2_hausdorff;
      }
      return j;
    };
    nlohmann::json j{
        {"reference", o.reference},
        {"decoded", o.decoded},
        {"points_in", q.reference_points},
        {"points_out", q.decoded_points},
        {"points_in_unique", q.reference_unique},
        {"points_out_unique", q.decoded_unique},
        {"dropped_nan_points",
         {{"reference", ref_info.dropped_nan_points}, {"decoded", dec_info.dropped_nan_points}}},
        {"peak", q.peak},
        {"peak_rule", q.peak_rule},
        {"d1_mse", q.d1_mse},
        {"d1_psnr", number(q.d1_psnr)},
        {"normals", q.normals_used},
        {"reference_to_decoded", direction(q.reference_to_decoded)},
        {"decoded_to_reference", direction(q.decoded_to_reference)},
        {"chamfer",
         {{"squared_sum", q.chamfer.squared_sum},
          {"squared_average", q.chamfer.squared_average},
          {"squared_max", q.chamfer.squared_max},
          {"l1_sum", q.chamfer.l1_sum},
          {"l1_average", q.chamfer.l1_average}}},
        {"metric_seconds", seconds},
    };
    if (q.has_d2) {
      j["d2_mse"] = q.d2_mse;
      j["d2_psnr"] = number(q.d2_psnr);
    }
    if (compressed) {
      j["compressed_bytes"] = *compressed;
      j["bpp"] = *bpp;
    }
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }

  std::string out;
  out += fmt::format("reference  {}  ({} points, {} unique)\n", o.reference, q.reference_points,
                     q.reference_unique);
  out += fmt::format("decoded    {}  ({} points, {} unique)\n", o.decoded, q.decoded_points,
                     q.decoded_unique);
  for (auto [name, info] : {std::pair{"reference", &ref_info}, std::pair{"decoded", &dec_info}}) {
    if (info->dropped_nan_points > 0) {
      out += fmt::format("note       {} PCD: {} NaN points dropped ({}x{} organised)\n", name,
                         info->dropped_nan_points, info->width, info->height);
    }
  }
  out += fmt::format("peak       {} ({})\n", q.peak, q.peak_rule);
  out +=
      fmt::format("D1 (p2point)  mse {:.6g}  PSNR {} dB   [A->B {:.6g}, B->A {:.6g}]\n", q.d1_mse,
                  text(q.d1_psnr), q.reference_to_decoded.d1_mse, q.decoded_to_reference.d1_mse);
  if (q.has_d2) {
    out += fmt::format(
        "D2 (p2plane)  mse {:.6g}  PSNR {} dB   [A->B {:.6g}, B->A {:.6g}]  "
        "normals: {}\n",
        q.d2_mse, text(q.d2_psnr), q.reference_to_decoded.d2_mse, q.decoded_to_reference.d2_mse,
        q.normals_used);
  } else {
    out += "D2 (p2plane)  not computed (no normals)\n";
  }
  out += fmt::format(
      "Chamfer       squared, mean per cloud, summed (D-PCC): {:.6g}   L1 average: {:.6g}\n",
      q.chamfer.squared_sum, q.chamfer.l1_average);
  if (bpp) {
    out += fmt::format("bpp           {:.4f}  ({} bytes / {} input points)\n", *bpp, *compressed,
                       q.reference_points);
  }
  out += fmt::format("time          {:.3f} s (metrics only)\n", seconds);
  std::fputs(out.c_str(), stdout);
  return 0;
}

CommandRegistration kEval{
    "eval", "Point-cloud geometry quality: D1/D2 PSNR (MPEG pc_error), Chamfer, bpp",
    [](CLI::App& app) {
      auto o = std::make_shared<EvalOptions>();
      app.add_option("reference", o->reference, "Reference (original) cloud: PLY, PCD or XYZ")
          ->required();
      app.add_option("decoded", o->decoded, "Decoded cloud")->required();
      app.add_option("--peak", o->peak,
                     "PSNR peak (pc_error --resolution; e.g. 1023 for 10-bit voxels). Default: "
                     "the largest nearest-neighbour distance in the reference");
      auto* bytes = app.add_option("--compressed-bytes", o->compressed_bytes,
                                   "Compressed size in bytes, for bits per point");
      app.add_option("--compressed", o->compressed_file, "Compressed file, for bits per point")
          ->excludes(bytes);
      app.add_flag("--json", o->json, "One JSON object on stdout");
      app.add_option("--threads", o->threads, "Threads (0: all cores)");
      app.add_option("--normals", o->normals,
                     "D2 normals: auto (reference's, else estimated), reference, estimate, none");
      app.add_option("--k", o->k, "Neighbours for normal estimation (PCA)");
      app.add_flag("--keep-duplicates", o->keep_duplicates,
                   "Do not merge identical points (pc_error --dropdups=0)");
      app.add_flag("--keep-nan", o->keep_nan, "Keep NaN points of organised PCD clouds");
      return [o] { return run_eval(*o); };
    }};

}  // namespace
}  // namespace torchless::cli
