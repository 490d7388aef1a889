#include "torchless/codec/dpcc.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <mutex>

#include "torchless/core/buffer.h"
#include "torchless/core/error.h"
#include "torchless/core/parallel.h"
#include "torchless/core/tensor.h"
#include "torchless/entropy/rans.h"
#include "torchless/entropy/tables.h"
#include "torchless/nn/graph.h"

namespace torchless::codec {
namespace {

using nlohmann::json;

// Index of the named output, with the graph and package in the message when it is absent.
size_t output_of(const nn::Graph& graph, std::string_view name) {
  return with_context(graph.name(), [&] { return graph.output_index(name); });
}

void require_inputs(const nn::Graph& graph, std::initializer_list<std::string_view> names) {
  for (auto name : names) {
    bool found = false;
    for (const auto& info : graph.inputs()) found = found || info.name == name;
    if (!found) {
      fail("{}: the graph has no input \"{}\" (package.md names its inputs and outputs)",
           graph.name(), name);
    }
  }
  if (graph.inputs().size() != names.size()) {
    fail("{}: the graph has {} inputs, package.md specifies {}", graph.name(),
         graph.inputs().size(), names.size());
  }
}

void require_shape(const Tensor& t, const Shape& expected, const nn::Graph& graph,
                   std::string_view output) {
  if (t.dtype() != DType::kFloat32 || t.shape() != expected) {
    fail("{}: output \"{}\" is {}, expected float32{}", graph.name(), output, t.describe(),
         shape_to_string(expected));
  }
}

// Latent points decoded together when the stage graphs are point-wise: enough to amortise
// ONNX Runtime's per-run cost, small enough to bound memory (the last stage sees up to 512
// times as many points) and to leave several chunks for the threads. Measured on building.ply
// (100k points, about 5,500 latent points): decode 285 / 243 / 221 ms on 1 thread with 64 / 128
// / 256, and 153 / 149 / 158 ms on 2 threads, where fewer chunks balance worse.
constexpr int64_t kChunkLatentPoints = 128;

struct Stage {
  int64_t max_upsample = 0;
  nn::Graph upsample;
  nn::Graph refine;
  size_t candidate_xyzs = 0, candidate_feats = 0, upsample_num = 0;
  size_t refined_xyzs = 0, refined_feats = 0;
};

}  // namespace

DpccConfig read_dpcc_config(const Package& package) {
  std::string where = (package.directory() / "manifest.json").string();
  if (package.family() != "dpcc") {
    throw UnsupportedError(fmt::format(
        "{}: package family \"{}\" is not supported by this decoder (supported: \"dpcc\")", where,
        package.family()));
  }
  json manifest = json::parse(package.manifest_text());
  auto it = manifest.find("hyperparameters");
  if (it == manifest.end() || !it->is_object()) {
    fail("{}: missing object \"hyperparameters\" (the dpcc family needs it)", where);
  }
  const json& hp = *it;
  std::string hp_where = where + ": hyperparameters";
  auto integer = [&](const char* key) {
    auto v = hp.find(key);
    if (v == hp.end() || !v->is_number_integer() || v->get<int64_t>() < 1) {
      fail("{}: \"{}\": expected a positive integer, found {}", hp_where, key,
           v == hp.end() ? "nothing" : v->dump());
    }
    return v->get<int64_t>();
  };
  auto boolean = [&](const char* key, bool fallback) {
    auto v = hp.find(key);
    if (v == hp.end()) return fallback;
    if (!v->is_boolean())
      fail("{}: \"{}\": expected true or false, found {}", hp_where, key, v->dump());
    return v->get<bool>();
  };
  DpccConfig config;
  config.dim = integer("dim");
  config.layer_num = integer("layer_num");
  if (config.layer_num > 16)
    fail("{}: \"layer_num\" {} is implausible (D-PCC uses 3)", hp_where, config.layer_num);
  auto u = hp.find("max_upsample_num");
  if (u == hp.end() || !u->is_array() || u->size() != static_cast<size_t>(config.layer_num)) {
    fail("{}: \"max_upsample_num\": expected an array of layer_num = {} integers, found {}",
         hp_where, config.layer_num, u == hp.end() ? "nothing" : u->dump());
  }
  for (const auto& v : *u) {
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 64) {
      fail("{}: \"max_upsample_num\": expected integers in [1, 64], found {}", hp_where, v.dump());
    }
    config.max_upsample_num.push_back(v.get<int64_t>());
  }
  auto mode = hp.find("sub_point_conv_mode");
  config.pointwise_stages = mode != hp.end() && mode->is_string() && *mode == "mlp";
  config.quantize_latent_xyzs = boolean("quantize_latent_xyzs", true);
  config.compress_normal = boolean("compress_normal", false);
  if (!config.quantize_latent_xyzs) {
    throw UnsupportedError(fmt::format(
        "{}: \"quantize_latent_xyzs\" is false (latent xyz sent as float16), which the .tlc "
        "container cannot carry",
        hp_where));
  }
  return config;
}

struct DpccDecoder::Impl {
  std::string package_dir;
  std::string package_id;
  Sha256Digest manifest_sha256{};
  Package package;
  DpccConfig config;
  DpccDecoderOptions options;
  entropy::EntropyTables feats_tables;
  entropy::EntropyTables xyzs_tables;
  nn::Graph synthesis;
  size_t latent_xyzs = 0;
  std::vector<Stage> stages;

  Impl(const Package& p, nn::Graph synthesis_graph)
      : package(p), synthesis(std::move(synthesis_graph)) {}

  std::vector<float> decode_latent(const entropy::EntropyTables& tables, const Buffer& string,
                                   uint32_t n3, std::string_view which) const;
  // latent_xyzs_synthesis of one block (its GroupNorm spans the block): (1, 3, n3).
  Tensor synthesize(std::vector<float> analyzed, uint32_t n3) const;
  // The decoder stages over several blocks' latent points laid side by side on the point axis
  // (xyzs (1, 3, N), feats (1, D, N), block b owning `sizes[b]` consecutive points). Returns
  // each block's points, x y z per point, in patch coordinates.
  std::vector<std::vector<float>> run_stages(Tensor xyzs, Tensor feats,
                                             std::vector<int64_t> sizes) const;
};

namespace {

entropy::EntropyTables load_eblock(const Package& package, std::string_view name, int64_t dim) {
  const auto& model = package.entropy_model(name);
  auto path = package.file(model.bin);
  auto tables = entropy::read_tables_bin(Buffer::map_file(path).bytes(), path.string());
  if (tables.kind != entropy::ModelKind::kEntropyBottleneck) {
    fail("{}: {} tables are {}, expected EntropyBottleneck", path.string(), name,
         entropy::kind_name(tables.kind));
  }
  if (static_cast<int64_t>(tables.cdfs.size()) != dim) {
    fail("{}: {} has {} tables, expected one per latent channel (dim = {})", path.string(), name,
         tables.cdfs.size(), dim);
  }
  with_context(path.string(), [&] { tables.validate(name); });
  return tables;
}

nn::Graph load_graph(const Package& package, std::string_view name,
                     const nn::GraphOptions& options) {
  const auto& spec = package.graph(name);
  auto graph = nn::Graph::load(package.file(spec.file), options);
  // The manifest and the graph must agree on the names the decoder binds to.
  for (const auto* list : {&spec.inputs, &spec.outputs}) {
    for (const auto& t : *list) {
      const auto& declared = list == &spec.inputs ? graph.inputs() : graph.outputs();
      bool found = false;
      for (const auto& info : declared) found = found || info.name == t.name;
      if (!found) {
        fail(
            "{}: manifest.json lists {} \"{}\" for graph \"{}\", the ONNX file does not declare "
            "it",
            graph.name(), list == &spec.inputs ? "input" : "output", t.name, name);
      }
    }
  }
  return graph;
}

}  // namespace

DpccDecoder::DpccDecoder(const Package& package, const DpccDecoderOptions& options) {
  auto config = read_dpcc_config(package);
  size_t threads = options.threads == 0 ? hardware_threads() : options.threads;
  nn::GraphOptions graph_options;
  graph_options.intra_op_threads = options.intra_op_threads > 0
                                       ? options.intra_op_threads
                                       : (threads > 1 ? 1 : static_cast<int>(hardware_threads()));
  graph_options.allow_spinning = options.allow_spinning;
  auto graph_options_for = [&](std::string_view graph) {
    nn::GraphOptions o = graph_options;
    if (!options.profile_dir.empty()) o.profile_prefix = options.profile_dir / graph;
    return o;
  };
  if (!options.profile_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.profile_dir, ec);
    if (ec)
      fail("{}: cannot create the profile folder: {}", options.profile_dir.string(), ec.message());
  }
  impl_ = std::make_unique<Impl>(package, load_graph(package, "latent_xyzs_synthesis",
                                                     graph_options_for("latent_xyzs_synthesis")));
  auto& impl = *impl_;
  impl.config = config;
  impl.options = options;
  impl.options.threads = threads;
  impl.package_dir = package.directory().string();
  impl.feats_tables = load_eblock(package, "feats_eblock", config.dim);
  impl.xyzs_tables = load_eblock(package, "xyzs_eblock", config.dim);
  require_inputs(impl.synthesis, {"analyzed_xyzs"});
  impl.latent_xyzs = output_of(impl.synthesis, "latent_xyzs");
  for (int64_t i = 0; i < config.layer_num; ++i) {
    const auto upsample = fmt::format("stage{}_upsample", i);
    const auto refine = fmt::format("stage{}_refine", i);
    Stage stage{config.max_upsample_num[static_cast<size_t>(i)],
                load_graph(package, upsample, graph_options_for(upsample)),
                load_graph(package, refine, graph_options_for(refine))};
    require_inputs(stage.upsample, {"xyzs", "feats"});
    require_inputs(stage.refine, {"xyzs", "feats"});
    stage.candidate_xyzs = output_of(stage.upsample, "candidate_xyzs");
    stage.candidate_feats = output_of(stage.upsample, "candidate_feats");
    stage.upsample_num = output_of(stage.upsample, "upsample_num");
    stage.refined_xyzs = output_of(stage.refine, "refined_xyzs");
    stage.refined_feats = output_of(stage.refine, "refined_feats");
    impl.stages.push_back(std::move(stage));
  }
}

DpccDecoder::DpccDecoder(DpccDecoder&&) noexcept = default;
DpccDecoder& DpccDecoder::operator=(DpccDecoder&&) noexcept = default;
DpccDecoder::~DpccDecoder() = default;

const DpccConfig& DpccDecoder::config() const {
  return impl_->config;
}

DpccProfile DpccDecoder::end_profiling() {
  if (impl_->options.profile_dir.empty()) {
    fail("{}: end_profiling without DpccDecoderOptions::profile_dir", impl_->package_dir);
  }
  DpccProfile profile;
  auto add = [&](nn::Graph& graph) {
    profile.traces.push_back(graph.end_profiling());
    nn::merge_op_times(profile.ops, nn::summarize_profile(profile.traces.back()));
  };
  add(impl_->synthesis);
  for (auto& stage : impl_->stages) {
    add(stage.upsample);
    add(stage.refine);
  }
  return profile;
}

std::vector<float> DpccDecoder::Impl::decode_latent(const entropy::EntropyTables& tables,
                                                    const Buffer& string, uint32_t n3,
                                                    std::string_view which) const {
  // Channel-major symbol order k = c·n3 + i, the C order of CompressAI's (1, C, n3) latent.
  size_t channels = tables.cdfs.size();
  std::vector<int32_t> indexes(channels * n3);
  for (size_t c = 0; c < channels; ++c) {
    std::fill_n(indexes.begin() + static_cast<ptrdiff_t>(c * n3), n3, static_cast<int32_t>(c));
  }
  // check_end: a complete stream from CompressAI's encoder always ends with every word read and
  // the state back at L; requiring it catches truncation and corruption the CRC cannot (a
  // damaged file whose CRC was recomputed). CompressAI itself does not check.
  auto values = with_context(std::string(which), [&] {
    return entropy::decode_with_indexes(string.view(), indexes, tables.cdfs,
                                        entropy::DecodeOptions{.check_end = true});
  });
  std::vector<float> out(values.size());
  for (size_t c = 0; c < channels; ++c) {
    float median = tables.medians[c];
    for (size_t i = 0; i < n3; ++i) {
      // float32 addition, as CompressAI's dequantize (symbols.float() + medians).
      out[c * n3 + i] = static_cast<float>(values[c * n3 + i]) + median;
    }
  }
  return out;
}

Tensor DpccDecoder::Impl::synthesize(std::vector<float> analyzed, uint32_t n3) const {
  int64_t n = n3;
  auto outs = synthesis.run({{"analyzed_xyzs", Tensor::from_vector(analyzed, {1, config.dim, n})}});
  Tensor xyzs = outs[latent_xyzs];
  require_shape(xyzs, {1, 3, n}, synthesis, "latent_xyzs");
  return xyzs;
}

std::vector<std::vector<float>> DpccDecoder::Impl::run_stages(Tensor xyzs, Tensor feats_t,
                                                              std::vector<int64_t> sizes) const {
  const int64_t dim = config.dim;
  int64_t n = 0;
  for (int64_t size : sizes) n += size;
  std::vector<std::vector<float>> blocks(sizes.size());
  for (const auto& stage : stages) {
    const int64_t u_max = stage.max_upsample;
    auto up = stage.upsample.run({{"xyzs", xyzs}, {"feats", feats_t}});
    const Tensor& cxyz = up[stage.candidate_xyzs];
    const Tensor& cfeats = up[stage.candidate_feats];
    const Tensor& unum = up[stage.upsample_num];
    require_shape(cxyz, {1, 3, n, u_max}, stage.upsample, "candidate_xyzs");
    require_shape(cfeats, {1, dim, n, u_max}, stage.upsample, "candidate_feats");
    require_shape(unum, {1, n}, stage.upsample, "upsample_num");

    // Selection (D-PCC's select_xyzs_and_feats): torch.round is round-half-to-even, which
    // std::nearbyint gives in the default rounding mode (std::round would round halves away
    // from zero and change point counts). The sigmoid keeps u in [1, U]; the clamp (and NaN ->
    // 0) only guards graphs that do not. Point-major order keeps each block's points together
    // and in order, so blocks laid side by side stay separable.
    auto counts = upsample_counts(std::span(unum.data<float>(), static_cast<size_t>(n)), u_max);
    int64_t m = 0;
    size_t j = 0;
    for (auto& size : sizes) {
      int64_t selected = 0;
      for (int64_t k = 0; k < size; ++k) selected += counts[j++];
      size = selected;
      m += selected;
    }
    if (m == 0) return blocks;
    auto gather = [&](const Tensor& candidates, int64_t channels) {
      // (1, C, n, U) -> (1, C, m), point-major: point j's first count_j candidates, then j+1's.
      std::vector<float> out(static_cast<size_t>(channels * m));
      const float* src = candidates.data<float>();
      for (int64_t c = 0; c < channels; ++c) {
        float* dst = out.data() + c * m;
        const float* row = src + c * n * u_max;
        for (int64_t p = 0; p < n; ++p) {
          int64_t count = counts[static_cast<size_t>(p)];
          std::copy_n(row + p * u_max, count, dst);
          dst += count;
        }
      }
      return Tensor::from_vector(out, {1, channels, m});
    };
    Tensor sel_xyzs = gather(cxyz, 3);
    Tensor sel_feats = gather(cfeats, dim);
    up.clear();
    auto refined = stage.refine.run({{"xyzs", sel_xyzs}, {"feats", sel_feats}});
    xyzs = refined[stage.refined_xyzs];
    feats_t = refined[stage.refined_feats];
    require_shape(xyzs, {1, 3, m}, stage.refine, "refined_xyzs");
    if (feats_t.rank() != 3 || feats_t.dim(0) != 1 || feats_t.dim(2) != m) {
      fail("{}: output \"refined_feats\" is {}, expected float32[1, F, {}]", stage.refine.name(),
           feats_t.describe(), m);
    }
    n = m;
  }
  // (1, 3, n) channel-major -> x y z per point, split by block.
  const float* src = xyzs.data<float>();
  int64_t first = 0;
  for (size_t b = 0; b < sizes.size(); ++b) {
    auto& points = blocks[b];
    points.resize(static_cast<size_t>(3 * sizes[b]));
    for (int64_t k = 0; k < sizes[b]; ++k) {
      for (int64_t a = 0; a < 3; ++a) {
        points[static_cast<size_t>(3 * k + a)] = src[a * n + first + k];
      }
    }
    first += sizes[b];
  }
  return blocks;
}

std::vector<float> DpccDecoder::decode_block_patch(const ContainerBlock& block) const {
  auto& impl = *impl_;
  if (block.n3 > impl.options.max_block_latent_points) {
    throw LimitError(fmt::format(
        "block (cube {}): n3 = {} exceeds the decoder's limit of {} latent points per block",
        block.cube_index, block.n3, impl.options.max_block_latent_points));
  }
  auto feats = impl.decode_latent(impl.feats_tables, block.feats, block.n3, "feats string");
  auto analyzed = impl.decode_latent(impl.xyzs_tables, block.xyzs, block.n3, "xyzs string");
  auto xyzs = impl.synthesize(std::move(analyzed), block.n3);
  auto blocks = impl.run_stages(
      xyzs, Tensor::from_vector(feats, {1, impl.config.dim, int64_t{block.n3}}), {block.n3});
  return std::move(blocks[0]);
}

std::vector<int64_t> upsample_counts(std::span<const float> upsample_num, int64_t max_upsample) {
  std::vector<int64_t> counts(upsample_num.size());
  const auto upper = static_cast<float>(max_upsample);
  for (size_t j = 0; j < upsample_num.size(); ++j) {
    float r = std::nearbyint(upsample_num[j]);
    counts[j] = std::isnan(r) ? 0 : static_cast<int64_t>(std::clamp(r, 0.0f, upper));
  }
  return counts;
}

void unnormalize_block(const Container& c, uint32_t cube_index, std::span<const float> patch_xyz,
                       std::vector<float>& out) {
  auto cube = c.cube_coordinates(cube_index);
  const double cube_size = c.cube_size;
  const double half = cube_size / 2.0;
  const double map_size = c.map_size;
  const double range = c.max_coord - c.min_coord;
  double center[3];
  for (int a = 0; a < 3; ++a) center[a] = (static_cast<double>(cube[a]) + 0.5) * cube_size;
  out.reserve(out.size() + patch_xyz.size());
  // One IEEE operation per step, left to right, as container.md (and numpy) computes it. The
  // build targets baseline x86-64 and ISO C++ (-ffp-contract=off), so nothing is fused.
  for (size_t k = 0; k < patch_xyz.size(); ++k) {
    size_t a = k % 3;
    double m = static_cast<double>(patch_xyz[k]) * half + center[a];
    double u = m / map_size;
    double x = u * range + c.min_coord + c.shift[a];
    out.push_back(static_cast<float>(x));
  }
}

DpccDecodeResult DpccDecoder::decode(const Container& container, std::string_view container_name,
                                     const DpccDecodeOptions& options) const {
  auto& impl = *impl_;
  impl.package.check_container(container, container_name);
  const size_t count = container.blocks.size();
  std::vector<std::vector<float>> parts(count);
  std::vector<std::string> damage(count);
  if (options.strict) {
    for (size_t i = 0; i < count; ++i) {
      const auto& b = container.blocks[i];
      if (b.damaged) {
        fail("{}: block {} (cube {}) at offset {}: block_crc32 mismatch (block damaged)",
             container_name, i, b.cube_index, b.offset);
      }
    }
  }
  std::mutex progress_mutex;
  size_t done = 0;
  auto report = [&](size_t finished) {
    if (!options.progress || finished == 0) return;
    std::lock_guard lock(progress_mutex);
    done += finished;
    options.progress(done, count);
  };

  // Phase 1, per block: entropy decoding and latent_xyzs_synthesis (whose GroupNorm spans the
  // block). A block that fails here is damaged.
  std::vector<Tensor> latent_xyzs(count);
  std::vector<std::vector<float>> latent_feats(count);
  parallel_for(count, impl.options.threads, [&](size_t i) {
    const auto& b = container.blocks[i];
    if (b.damaged) {
      damage[i] = fmt::format("block_crc32 mismatch (stored 0x{:08x})", b.stored_crc32);
      report(1);
      return;
    }
    if (b.n3 > impl.options.max_block_latent_points) {
      throw LimitError(fmt::format(
          "{}: block {} (cube {}): n3 = {} exceeds the decoder's limit of {} latent points per "
          "block",
          container_name, i, b.cube_index, b.n3, impl.options.max_block_latent_points));
    }
    std::vector<float> analyzed;
    try {
      latent_feats[i] = impl.decode_latent(impl.feats_tables, b.feats, b.n3, "feats string");
      analyzed = impl.decode_latent(impl.xyzs_tables, b.xyzs, b.n3, "xyzs string");
    } catch (const LimitError&) {
      throw;
    } catch (const Error& e) {
      if (options.strict) {
        fail("{}: block {} (cube {}) at offset {}: {}", container_name, i, b.cube_index, b.offset,
             e.what());
      }
      damage[i] = e.what();
      latent_feats[i].clear();
      report(1);
      return;
    }
    latent_xyzs[i] =
        with_context(fmt::format("{}: block {} (cube {})", container_name, i, b.cube_index),
                     [&] { return impl.synthesize(std::move(analyzed), b.n3); });
  });

  // Phase 2: the decoder stages. With D-PCC's 'mlp' sub-point convolutions every stage graph is
  // point-wise (1x1 convolutions, per-point softmax and normalisation), so consecutive blocks
  // are laid side by side and run together: a few large runs instead of six tiny ones per block
  // (ONNX Runtime's per-run cost dominates at D-PCC's ~20 latent points per block). Chunks
  // depend only on the file, never on the thread count, so the output does not either.
  std::vector<std::vector<size_t>> chunks;
  int64_t chunk_points = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!damage[i].empty()) continue;
    int64_t n3 = container.blocks[i].n3;
    if (chunks.empty() || !impl.config.pointwise_stages || chunk_points + n3 > kChunkLatentPoints) {
      chunks.emplace_back();
      chunk_points = 0;
    }
    chunks.back().push_back(i);
    chunk_points += n3;
  }
  const int64_t dim = impl.config.dim;
  parallel_for(chunks.size(), impl.options.threads, [&](size_t k) {
    const auto& members = chunks[k];
    std::vector<int64_t> sizes;
    int64_t n = 0;
    for (size_t i : members) {
      sizes.push_back(container.blocks[i].n3);
      n += sizes.back();
    }
    std::vector<float> xyzs(static_cast<size_t>(3 * n)), feats(static_cast<size_t>(dim * n));
    int64_t offset = 0;
    for (size_t i : members) {
      int64_t n3 = container.blocks[i].n3;
      const float* x = latent_xyzs[i].data<float>();
      for (int64_t c = 0; c < 3; ++c) std::copy_n(x + c * n3, n3, xyzs.data() + c * n + offset);
      const float* f = latent_feats[i].data();
      for (int64_t c = 0; c < dim; ++c) std::copy_n(f + c * n3, n3, feats.data() + c * n + offset);
      offset += n3;
      latent_xyzs[i] = Tensor();
      std::vector<float>().swap(latent_feats[i]);
    }
    auto blocks = with_context(
        fmt::format("{}: blocks {}..{}", container_name, members.front(), members.back()), [&] {
          return impl.run_stages(Tensor::from_vector(xyzs, {1, 3, n}),
                                 Tensor::from_vector(feats, {1, dim, n}), sizes);
        });
    for (size_t b = 0; b < members.size(); ++b) {
      size_t i = members[b];
      unnormalize_block(container, container.blocks[i].cube_index, blocks[b], parts[i]);
    }
    report(members.size());
  });

  DpccDecodeResult result;
  result.blocks = count;
  result.block_points.resize(count);
  size_t total = 0;
  for (const auto& p : parts) total += p.size();
  result.cloud.positions.reserve(total);
  for (size_t i = 0; i < count; ++i) {
    if (!damage[i].empty()) {
      result.damaged.push_back(
          {i, container.blocks[i].cube_index, container.blocks[i].offset, damage[i]});
    }
    result.block_points[i] = parts[i].size() / 3;
    result.cloud.positions.insert(result.cloud.positions.end(), parts[i].begin(), parts[i].end());
    std::vector<float>().swap(parts[i]);
  }
  return result;
}

}  // namespace torchless::codec
