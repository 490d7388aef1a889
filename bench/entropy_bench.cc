// Entropy coding speed: torchless::entropy against a straightforward implementation of
// CompressAI's own algorithm (rans_interface.cpp: RansSymbol buffering with per-symbol
// branching, Rans64EncPut with its integer division, and std::find_if's linear CDF search on
// decode), compiled here with the same flags. Both must produce the same bytes (checked before
// timing). Reported: symbols/s (items_per_second) and, after the run, the ratios.
//
// Tables:
//  - EB: EntropyBottleneck-like, 16 channels with cdf lengths 10..200 (Laplacian pmfs through
//    pmf_to_quantized_cdf), Laplacian symbols, channel-major (one channel's symbols together),
//    65536 symbols per stream, ~0.3% escapes;
//  - GC: CompressAI's default GaussianConditional tables (64 scales from 0.11 to 256,
//    log-spaced; rows up to 3133 entries), each symbol with a uniformly random table index and
//    a Gaussian value of that table's scale, 65536 symbols per stream (tables:1, the worst case
//    for a table lookup: every symbol may touch another table);
//  - the same tables with the indexes a hyperprior model's decoder sees (tables:2): 256
//    channels of 16x16 in channel-major order, each channel with its own typical scale that
//    varies smoothly in space (see build_gc_workload).
// Multi-stream: 2, 4 or 8 distinct streams of the same workload on one thread with
// decode_streams (which interleaves up to 4 at a time), and 64 split across threads as the
// models' decompress does.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "torchless/core/parallel.h"
#include "torchless/entropy/cdf.h"
#include "torchless/entropy/rans.h"

namespace {

using torchless::entropy::QuantizedCdfTable;

// --- CompressAI's algorithm, straightforwardly ------------------------------------------------

namespace compressai_like {

constexpr uint64_t kL = uint64_t{1} << 31;
constexpr int kPrecision = 16;
constexpr int kBypassPrecision = 4;
constexpr int kMaxBypassVal = (1 << kBypassPrecision) - 1;

struct RansSymbol {
  uint16_t start;
  uint16_t range;
  bool bypass;
};

void enc_put(uint64_t* r, uint32_t** pptr, uint32_t start, uint32_t freq, uint32_t scale_bits) {
  uint64_t x = *r;
  uint64_t x_max = ((kL >> scale_bits) << 32) * freq;
  if (x >= x_max) {
    *pptr -= 1;
    **pptr = static_cast<uint32_t>(x);
    x >>= 32;
  }
  *r = ((x / freq) << scale_bits) + (x % freq) + start;
}

void enc_put_bits(uint64_t* r, uint32_t** pptr, uint32_t val, uint32_t nbits) {
  uint64_t x = *r;
  uint32_t freq = 1 << (16 - nbits);
  uint64_t x_max = ((kL >> 16) << 32) * freq;
  if (x >= x_max) {
    *pptr -= 1;
    **pptr = static_cast<uint32_t>(x);
    x >>= 32;
  }
  *r = (x << nbits) | val;
}

std::string encode_with_indexes(const std::vector<int32_t>& symbols,
                                const std::vector<int32_t>& indexes,
                                const std::vector<std::vector<int32_t>>& cdfs,
                                const std::vector<int32_t>& cdfs_sizes,
                                const std::vector<int32_t>& offsets) {
  std::vector<RansSymbol> syms;
  for (size_t i = 0; i < symbols.size(); ++i) {
    const int32_t cdf_idx = indexes[i];
    const auto& cdf = cdfs[cdf_idx];
    const int32_t max_value = cdfs_sizes[cdf_idx] - 2;
    int32_t value = symbols[i] - offsets[cdf_idx];
    uint32_t raw_val = 0;
    if (value < 0) {
      raw_val = -2 * value - 1;
      value = max_value;
    } else if (value >= max_value) {
      raw_val = 2 * (value - max_value);
      value = max_value;
    }
    syms.push_back({static_cast<uint16_t>(cdf[value]),
                    static_cast<uint16_t>(cdf[value + 1] - cdf[value]), false});
    if (value == max_value) {
      int32_t n_bypass = 0;
      while ((raw_val >> (n_bypass * kBypassPrecision)) != 0) ++n_bypass;
      int32_t val = n_bypass;
      while (val >= kMaxBypassVal) {
        syms.push_back({kMaxBypassVal, kMaxBypassVal + 1, true});
        val -= kMaxBypassVal;
      }
      syms.push_back({static_cast<uint16_t>(val), static_cast<uint16_t>(val + 1), true});
      for (int32_t j = 0; j < n_bypass; ++j) {
        const int32_t v = (raw_val >> (j * kBypassPrecision)) & kMaxBypassVal;
        syms.push_back({static_cast<uint16_t>(v), static_cast<uint16_t>(v + 1), true});
      }
    }
  }
  // flush(), with an output buffer large enough (CompressAI's is one word per op).
  uint64_t rans = kL;
  std::vector<uint32_t> output(syms.size() + 2, 0xCC);
  uint32_t* ptr = output.data() + output.size();
  while (!syms.empty()) {
    const RansSymbol sym = syms.back();
    if (!sym.bypass) {
      enc_put(&rans, &ptr, sym.start, sym.range, kPrecision);
    } else {
      enc_put_bits(&rans, &ptr, sym.start, kBypassPrecision);
    }
    syms.pop_back();
  }
  ptr -= 2;
  ptr[0] = static_cast<uint32_t>(rans);
  ptr[1] = static_cast<uint32_t>(rans >> 32);
  const int nbytes = static_cast<int>(std::distance(ptr, output.data() + output.size())) * 4;
  return std::string(reinterpret_cast<const char*>(ptr), nbytes);
}

uint32_t dec_get_bits(uint64_t* r, uint32_t** pptr, uint32_t n_bits) {
  uint64_t x = *r;
  uint32_t val = x & ((1u << n_bits) - 1);
  x = x >> n_bits;
  if (x < kL) {
    x = (x << 32) | **pptr;
    *pptr += 1;
  }
  *r = x;
  return val;
}

std::vector<int32_t> decode_with_indexes(const std::string& encoded,
                                         const std::vector<int32_t>& indexes,
                                         const std::vector<std::vector<int32_t>>& cdfs,
                                         const std::vector<int32_t>& cdfs_sizes,
                                         const std::vector<int32_t>& offsets) {
  std::vector<int32_t> output(indexes.size());
  std::vector<uint32_t> words(encoded.size() / 4 + 1);
  std::memcpy(words.data(), encoded.data(), encoded.size());
  uint32_t* ptr = words.data();
  uint64_t rans = ptr[0] | (static_cast<uint64_t>(ptr[1]) << 32);
  ptr += 2;
  for (size_t i = 0; i < indexes.size(); ++i) {
    const int32_t cdf_idx = indexes[i];
    const auto& cdf = cdfs[cdf_idx];
    const int32_t max_value = cdfs_sizes[cdf_idx] - 2;
    const int32_t offset = offsets[cdf_idx];
    const uint32_t cum_freq = static_cast<uint32_t>(rans & ((1u << kPrecision) - 1));
    const auto cdf_end = cdf.begin() + cdfs_sizes[cdf_idx];
    const auto it = std::find_if(cdf.begin(), cdf_end,
                                 [cum_freq](int v) { return static_cast<uint32_t>(v) > cum_freq; });
    const uint32_t s = static_cast<uint32_t>(std::distance(cdf.begin(), it) - 1);
    // Rans64DecAdvance
    uint64_t x = rans;
    x = (cdf[s + 1] - cdf[s]) * (x >> kPrecision) + (x & ((1u << kPrecision) - 1)) - cdf[s];
    if (x < kL) {
      x = (x << 32) | *ptr;
      ptr += 1;
    }
    rans = x;
    int32_t value = static_cast<int32_t>(s);
    if (value == max_value) {
      int32_t val = dec_get_bits(&rans, &ptr, kBypassPrecision);
      int32_t n_bypass = val;
      while (val == kMaxBypassVal) {
        val = dec_get_bits(&rans, &ptr, kBypassPrecision);
        n_bypass += val;
      }
      int32_t raw_val = 0;
      for (int j = 0; j < n_bypass; ++j) {
        val = dec_get_bits(&rans, &ptr, kBypassPrecision);
        raw_val |= val << (j * kBypassPrecision);
      }
      value = raw_val >> 1;
      if (raw_val & 1) {
        value = -value - 1;
      } else {
        value += max_value;
      }
    }
    output[i] = value + offset;
  }
  return output;
}

}  // namespace compressai_like

// --- workloads --------------------------------------------------------------------------------

struct Workload {
  std::vector<std::vector<int32_t>> cdfs;  // padded rows
  std::vector<int32_t> lengths;
  std::vector<int32_t> offsets;
  QuantizedCdfTable table;
  std::vector<int32_t> symbols;
  std::vector<int32_t> indexes;
  std::string encoded;
};

std::vector<int32_t> cdf_of(const std::vector<float>& pmf) {
  auto cdf = torchless::entropy::pmf_to_quantized_cdf(pmf);
  return std::vector<int32_t>(cdf.begin(), cdf.end());
}

void finish(Workload& w) {
  size_t stride = 0;
  for (const auto& r : w.cdfs) stride = std::max(stride, r.size());
  for (auto& r : w.cdfs) {
    w.lengths.push_back(static_cast<int32_t>(r.size()));
    r.resize(stride, 0);
  }
  w.table = QuantizedCdfTable::from_rows(w.cdfs, w.lengths, w.offsets);
  w.encoded = torchless::entropy::encode_with_indexes(w.symbols, w.indexes, w.table);
  auto reference =
      compressai_like::encode_with_indexes(w.symbols, w.indexes, w.cdfs, w.lengths, w.offsets);
  if (reference != w.encoded) {
    std::fprintf(stderr, "entropy_bench: torchless and the reference disagree\n");
    std::abort();
  }
}

const Workload& eb_workload() {
  static const Workload built = [] {
    Workload w;
    std::mt19937 rng(1234);
    constexpr int kChannels = 16;
    constexpr int kPerChannel = 4096;
    std::vector<double> b(kChannels);
    for (int c = 0; c < kChannels; ++c) {
      const int direct = 8 + c * 190 / (kChannels - 1);  // cdf lengths 10 .. 200
      const int centre = direct / 2;
      b[c] = 0.5 + direct / 12.0;
      std::vector<float> pmf;
      double sum = 0;
      for (int k = 0; k < direct; ++k) sum += std::exp(-std::abs(k - centre) / b[c]);
      for (int k = 0; k < direct; ++k) {
        pmf.push_back(
            static_cast<float>(std::exp(-std::abs(k - centre) / b[c]) / sum * (1 - 1e-4)));
      }
      pmf.push_back(1e-4f);
      w.cdfs.push_back(cdf_of(pmf));
      w.offsets.push_back(-centre);
    }
    for (int c = 0; c < kChannels; ++c) {
      std::exponential_distribution<double> mag(1.0 / b[c]);
      std::bernoulli_distribution sign(0.5);
      for (int i = 0; i < kPerChannel; ++i) {
        const double v = mag(rng);
        w.symbols.push_back(static_cast<int32_t>(std::lround(sign(rng) ? v : -v)));
        w.indexes.push_back(c);
      }
    }
    finish(w);
    return w;
  }();
  return built;
}

// CompressAI's default GaussianConditional tables; `hyperprior` picks the index pattern:
//  - false: a uniformly random table for every symbol (the worst case for any table lookup);
//  - true: as a hyperprior model's decoder sees them: 256 channels of 16x16, channel-major, each
//    channel with its own typical scale (log-uniform in [0.11, 32]) varying smoothly in space,
//    indexes from those scales by CompressAI's build_indexes.
Workload build_gc_workload(bool hyperprior) {
  Workload w;
  std::mt19937 rng(5678);
  std::vector<double> scales;
  for (int i = 0; i < 64; ++i) {
    scales.push_back(std::exp(std::log(0.11) + (std::log(256.0) - std::log(0.11)) * i / 63));
  }
  const double mult = 6.1094102048693975;
  for (double s : scales) {
    const int center = static_cast<int>(std::ceil(s * mult));
    auto phi = [](double t) { return 0.5 * std::erfc(-t / std::sqrt(2.0)); };
    std::vector<float> pmf;
    for (int k = -center; k <= center; ++k) {
      const double a = std::abs(k);
      pmf.push_back(static_cast<float>(phi((0.5 - a) / s) - phi((-0.5 - a) / s)));
    }
    pmf.push_back(static_cast<float>(2 * phi((-0.5 - center) / s)));
    w.cdfs.push_back(cdf_of(pmf));
    w.offsets.push_back(-center);
  }
  auto add = [&](int index, double scale) {
    std::normal_distribution<double> g(0, scale);
    w.indexes.push_back(index);
    w.symbols.push_back(static_cast<int32_t>(std::lround(g(rng))));
  };
  if (!hyperprior) {
    std::uniform_int_distribution<int> pick(0, 63);
    for (int i = 0; i < 65536; ++i) {
      const int c = pick(rng);
      add(c, scales[c]);
    }
  } else {
    std::uniform_real_distribution<double> base(std::log(0.11), std::log(32.0));
    std::uniform_real_distribution<double> phase(0, 6.283);
    std::normal_distribution<double> jitter(0, 0.15);
    for (int c = 0; c < 256; ++c) {
      const double b = base(rng), p = phase(rng), q = phase(rng);
      for (int h = 0; h < 16; ++h) {
        for (int x = 0; x < 16; ++x) {
          const double scale = std::max(
              0.11,
              std::exp(b + 0.7 * std::sin(0.4 * h + p) * std::cos(0.3 * x + q) + jitter(rng)));
          // build_indexes: the number of scale_table[:-1] entries below the scale.
          int index = 0;
          while (index < 63 && scales[static_cast<size_t>(index)] < scale) ++index;
          add(index, scale);
        }
      }
    }
  }
  finish(w);
  return w;
}

const Workload& workload(int which) {
  const Workload& eb = eb_workload();
  static const Workload gc = build_gc_workload(false);
  static const Workload gc_hyperprior = build_gc_workload(true);
  return which == 0 ? eb : which == 1 ? gc : gc_hyperprior;
}

// --- benchmarks -------------------------------------------------------------------------------

void BM_Encode(benchmark::State& state) {
  const auto& w = workload(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        torchless::entropy::encode_with_indexes(w.symbols, w.indexes, w.table));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * w.symbols.size()));
}

void BM_EncodeCompressAIAlgorithm(benchmark::State& state) {
  const auto& w = workload(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        compressai_like::encode_with_indexes(w.symbols, w.indexes, w.cdfs, w.lengths, w.offsets));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * w.symbols.size()));
}

void BM_Decode(benchmark::State& state) {
  const auto& w = workload(static_cast<int>(state.range(0)));
  if (torchless::entropy::decode_with_indexes(w.encoded, w.indexes, w.table) != w.symbols) {
    state.SkipWithError("decode mismatch");
    return;
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        torchless::entropy::decode_with_indexes(w.encoded, w.indexes, w.table));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * w.symbols.size()));
}

void BM_DecodeCompressAIAlgorithm(benchmark::State& state) {
  const auto& w = workload(static_cast<int>(state.range(0)));
  if (compressai_like::decode_with_indexes(w.encoded, w.indexes, w.cdfs, w.lengths, w.offsets) !=
      w.symbols) {
    state.SkipWithError("reference decode mismatch");
    return;
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        compressai_like::decode_with_indexes(w.encoded, w.indexes, w.cdfs, w.lengths, w.offsets));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * w.symbols.size()));
}

// `streams` independent streams (one per batch element, or per block) on one thread with
// decode_streams, which interleaves up to 4 of them at a time. The streams are distinct: each is
// the workload's symbols rotated by a different amount, encoded on its own.
struct StreamSet {
  std::vector<std::vector<int32_t>> symbols, indexes;
  std::vector<std::string> encoded;
};

const StreamSet& stream_set(int which) {
  static std::map<int, StreamSet> built;
  auto& set = built[which];
  if (!set.encoded.empty()) return set;
  const auto& w = workload(which);
  constexpr size_t kStreams = 64;
  for (size_t j = 0; j < kStreams; ++j) {
    const auto shift = static_cast<ptrdiff_t>(j * w.symbols.size() / kStreams);
    auto sym = w.symbols;
    auto idx = w.indexes;
    std::rotate(sym.begin(), sym.begin() + shift, sym.end());
    std::rotate(idx.begin(), idx.begin() + shift, idx.end());
    set.encoded.push_back(torchless::entropy::encode_with_indexes(sym, idx, w.table));
    set.symbols.push_back(std::move(sym));
    set.indexes.push_back(std::move(idx));
  }
  return set;
}

// Decodes streams [lo, hi) of the set with decode_streams into `out`.
void decode_range(const StreamSet& set, const QuantizedCdfTable& table, size_t lo, size_t hi,
                  std::vector<std::vector<int32_t>>& out) {
  std::vector<torchless::entropy::StreamToDecode> jobs;
  for (size_t j = lo; j < hi; ++j) jobs.push_back({set.encoded[j], set.indexes[j], out[j]});
  torchless::entropy::decode_streams(jobs, table);
}

void BM_DecodeInterleaved(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  const auto streams = static_cast<size_t>(state.range(1));
  const auto& set = stream_set(which);
  const auto& table = workload(which).table;
  std::vector<std::vector<int32_t>> out(set.encoded.size());
  for (size_t j = 0; j < streams; ++j) out[j].resize(set.indexes[j].size());
  decode_range(set, table, 0, streams, out);
  for (size_t j = 0; j < streams; ++j) {
    if (out[j] != set.symbols[j]) {
      state.SkipWithError("interleaved decode mismatch");
      return;
    }
  }
  for (auto _ : state) {
    decode_range(set, table, 0, streams, out);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(
      static_cast<int64_t>(state.iterations() * streams * set.indexes[0].size()));
}

// 64 independent streams on `threads` threads: each thread decodes its contiguous share with
// decode_streams, as EntropyBottleneck / GaussianConditional decompress do.
void BM_DecodeStreams(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  const auto threads = static_cast<size_t>(state.range(1));
  const auto& set = stream_set(which);
  const auto& table = workload(which).table;
  const size_t streams = set.encoded.size();
  std::vector<std::vector<int32_t>> out(streams);
  for (size_t j = 0; j < streams; ++j) out[j].resize(set.indexes[j].size());
  for (auto _ : state) {
    torchless::parallel_for(threads, threads, [&](size_t t) {
      decode_range(set, table, streams * t / threads, streams * (t + 1) / threads, out);
    });
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(
      static_cast<int64_t>(state.iterations() * streams * set.indexes[0].size()));
}

void Tables(benchmark::internal::Benchmark* b) {
  b->ArgName("tables")->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_Encode)->Apply(Tables);
BENCHMARK(BM_EncodeCompressAIAlgorithm)->Apply(Tables);
BENCHMARK(BM_Decode)->Apply(Tables);
BENCHMARK(BM_DecodeCompressAIAlgorithm)->Apply(Tables);
BENCHMARK(BM_DecodeInterleaved)
    ->ArgNames({"tables", "streams"})
    ->ArgsProduct({{0, 1, 2}, {2, 4, 8}})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodeStreams)
    ->ArgNames({"tables", "threads"})
    ->ArgsProduct({{0, 1, 2}, {1, static_cast<int64_t>(torchless::hardware_threads())}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Collects items/s per run so that the ratios can be printed after the run.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& run : runs) {
      // With --benchmark_repetitions, the median stands for the benchmark.
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      auto it = run.counters.find("items_per_second");
      if (it != run.counters.end()) rate[run.run_name.str()] = it->second.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> rate;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  auto& r = reporter.rate;
  auto ratio = [&](const std::string& a, const std::string& b) {
    return r.count(a) && r.count(b) && r[b] > 0 ? r[a] / r[b] : 0.0;
  };
  std::printf("\n");
  for (const char* t : {"0", "1", "2"}) {
    const char* name = t[0] == '0' ? "EB" : t[0] == '1' ? "GC" : "GC (hyperprior-like indexes)";
    const std::string suffix = std::string("/tables:") + t;
    const std::string rt = "/real_time";
    std::printf("%s decode: %.1f M symbols/s, CompressAI algorithm %.1f M/s, ratio %.1fx\n", name,
                r["BM_Decode" + suffix] / 1e6, r["BM_DecodeCompressAIAlgorithm" + suffix] / 1e6,
                ratio("BM_Decode" + suffix, "BM_DecodeCompressAIAlgorithm" + suffix));
    std::printf("%s encode: %.1f M symbols/s, CompressAI algorithm %.1f M/s, ratio %.1fx\n", name,
                r["BM_Encode" + suffix] / 1e6, r["BM_EncodeCompressAIAlgorithm" + suffix] / 1e6,
                ratio("BM_Encode" + suffix, "BM_EncodeCompressAIAlgorithm" + suffix));
    const std::string four = "BM_DecodeInterleaved" + suffix + "/streams:4";
    std::printf(
        "%s decode, 4 streams interleaved on one thread: %.1f M symbols/s, %.1fx the CompressAI "
        "algorithm, %.2fx one stream\n",
        name, r[four] / 1e6, ratio(four, "BM_DecodeCompressAIAlgorithm" + suffix),
        ratio(four, "BM_Decode" + suffix));
    const std::string one = "BM_DecodeStreams" + suffix + "/threads:1" + rt;
    const std::string all = "BM_DecodeStreams" + suffix +
                            "/threads:" + std::to_string(torchless::hardware_threads()) + rt;
    std::printf("%s decode, 64 streams on %zu threads: %.1f M symbols/s, %.2fx one thread\n", name,
                torchless::hardware_threads(), r[all] / 1e6, ratio(all, one));
  }
  benchmark::Shutdown();
  return 0;
}
