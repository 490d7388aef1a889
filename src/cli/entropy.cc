// `torchless entropy`: CompressAI-compatible entropy coding from the command line.
//
//   encode     --tables T --symbols S.npy --indexes I.npy -o STRING
//   decode     --tables T --indexes I.npy STRING -o SYMBOLS.npy
//   compress   --module eb|gc --tables T X.npy -o DIR [--scales S.npy] [--means M.npy]
//   decompress --module eb|gc --tables T STRING... -o X_HAT.npy
//              (eb: --size H,W,... the spatial shape; gc: --scales S.npy [--means M.npy])
//
// Tables come from any source load_tables accepts (--prefix picks a module inside a
// checkpoint or safetensors state_dict). Strings are raw files, one per batch element (compress
// writes DIR/0.bin, ...). Decoding reports whether each stream ended cleanly (every word read,
// final state L), which CompressAI never checks; --strict turns an unclean end into an error.
// --json prints a summary.
#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <optional>

#include "cli/command.h"
#include "torchless/core/buffer.h"
#include "torchless/core/checked.h"
#include "torchless/core/error.h"
#include "torchless/entropy/entropy_models.h"
#include "torchless/entropy/rans.h"
#include "torchless/entropy/tables.h"
#include "torchless/formats/npy.h"

namespace torchless::cli {
namespace {

using entropy::RansStats;

struct EntropyOptions {
  std::string tables;
  std::string prefix;
  std::string symbols;
  std::string indexes;
  std::string module;
  std::string scales;
  std::string means;
  std::vector<int64_t> size;
  std::vector<std::string> inputs;
  std::string output;
  size_t threads = 0;
  bool strict = false;
  bool json = false;
};

std::vector<int32_t> int32_array(const std::string& path, const char* what) {
  const Tensor t = formats::load_npy(path).tensor;
  if (t.dtype() == DType::kInt32) return t.to_vector<int32_t>();
  if (t.dtype() == DType::kInt64) {
    std::vector<int32_t> out;
    for (int64_t v : t.to_vector<int64_t>()) {
      out.push_back(checked_cast<int32_t>(v, fmt::format("{}: {}", path, what)));
    }
    return out;
  }
  fail("{}: {} must be int32 or int64, found {}", path, what, t.describe());
}

Tensor float_array(const std::string& path) {
  const Tensor t = formats::load_npy(path).tensor;
  if (t.dtype() != DType::kFloat32) fail("{}: expected float32, found {}", path, t.describe());
  return t.contiguous();
}

std::string read_string(const std::string& path) {
  return std::string(Buffer::read_file(path).view());
}

void report(const EntropyOptions& o, const char* command, uint64_t bytes, const RansStats& stats,
            size_t strings) {
  const double bits = stats.symbols == 0 ? 0.0 : 8.0 * static_cast<double>(bytes) / stats.symbols;
  const bool decoding = command[0] == 'd';
  if (o.json) {
    std::string out = fmt::format(
        "{{\"command\": \"{}\", \"strings\": {}, \"bytes\": {}, \"symbols\": {}, "
        "\"bits_per_symbol\": {:.6f}, \"escapes\": {}, \"bypass_nibbles\": {}",
        command, strings, bytes, stats.symbols, bits, stats.escapes, stats.bypass_nibbles);
    if (decoding) out += fmt::format(", \"unclean_ends\": {}", stats.unclean_ends);
    std::printf("%s}\n", out.c_str());
    return;
  }
  std::printf(
      "%s: %zu string(s), %llu bytes, %llu symbols, %.4f bits/symbol, %llu escapes "
      "(%llu bypass nibbles)\n",
      command, strings, static_cast<unsigned long long>(bytes),
      static_cast<unsigned long long>(stats.symbols), bits,
      static_cast<unsigned long long>(stats.escapes),
      static_cast<unsigned long long>(stats.bypass_nibbles));
  if (decoding && stats.unclean_ends > 0) {
    std::printf(
        "warning: %llu stream(s) did not end cleanly (words left or final state not L): "
        "truncated, corrupt, or decoded with other indexes/tables\n",
        static_cast<unsigned long long>(stats.unclean_ends));
  }
}

int run_encode(const EntropyOptions& o) {
  const auto tables = entropy::load_tables(o.tables, o.prefix);
  const auto symbols = int32_array(o.symbols, "symbols");
  const auto indexes = int32_array(o.indexes, "indexes");
  RansStats stats;
  const std::string encoded = entropy::encode_with_indexes(symbols, indexes, tables.cdfs, &stats);
  write_file_atomic(o.output, encoded);
  report(o, "encode", encoded.size(), stats, 1);
  return 0;
}

int run_decode(const EntropyOptions& o) {
  if (o.inputs.size() != 1) fail("decode takes one string file, got {}", o.inputs.size());
  const auto tables = entropy::load_tables(o.tables, o.prefix);
  const auto indexes = int32_array(o.indexes, "indexes");
  const std::string encoded = read_string(o.inputs[0]);
  RansStats stats;
  const auto symbols = with_context(o.inputs[0], [&] {
    return entropy::decode_with_indexes(encoded, indexes, tables.cdfs, {.check_end = o.strict},
                                        &stats);
  });
  formats::save_npy(o.output, Tensor::from_vector(symbols, {static_cast<int64_t>(symbols.size())}));
  report(o, "decode", encoded.size(), stats, 1);
  return 0;
}

entropy::ModelKind module_kind(const std::string& module) {
  if (module == "eb") return entropy::ModelKind::kEntropyBottleneck;
  if (module == "gc") return entropy::ModelKind::kGaussianConditional;
  fail("--module must be eb or gc, got '{}'", module);
}

entropy::EntropyTables module_tables(const EntropyOptions& o) {
  auto tables = entropy::load_tables(o.tables, o.prefix);
  if (tables.kind != module_kind(o.module)) {
    fail("{}: holds {} tables, but --module is {}", o.tables, entropy::kind_name(tables.kind),
         o.module);
  }
  return tables;
}

int run_compress(const EntropyOptions& o) {
  if (o.inputs.size() != 1) fail("compress takes one input .npy, got {}", o.inputs.size());
  const Tensor x = float_array(o.inputs[0]);
  const entropy::CodingOptions coding{.threads = o.threads};
  RansStats stats;
  std::vector<std::string> strings;
  if (module_kind(o.module) == entropy::ModelKind::kEntropyBottleneck) {
    strings = entropy::EntropyBottleneck(module_tables(o)).compress(x, coding, &stats);
  } else {
    if (o.scales.empty()) fail("compress --module gc needs --scales");
    entropy::GaussianConditional gc(module_tables(o));
    const Tensor indexes = gc.build_indexes(float_array(o.scales));
    std::optional<Tensor> means;
    if (!o.means.empty()) means = float_array(o.means);
    strings = gc.compress(x, indexes, means ? &*means : nullptr, coding, &stats);
  }
  std::filesystem::create_directories(o.output);
  uint64_t bytes = 0;
  for (size_t b = 0; b < strings.size(); ++b) {
    write_file_atomic(std::filesystem::path(o.output) / fmt::format("{}.bin", b), strings[b]);
    bytes += strings[b].size();
  }
  report(o, "compress", bytes, stats, strings.size());
  return 0;
}

int run_decompress(const EntropyOptions& o) {
  std::vector<std::string> strings;
  uint64_t bytes = 0;
  for (const auto& path : o.inputs) {
    strings.push_back(read_string(path));
    bytes += strings.back().size();
  }
  const entropy::CodingOptions coding{.threads = o.threads, .check_end = o.strict};
  RansStats stats;
  Tensor x_hat;
  if (module_kind(o.module) == entropy::ModelKind::kEntropyBottleneck) {
    x_hat =
        entropy::EntropyBottleneck(module_tables(o)).decompress(strings, o.size, coding, &stats);
  } else {
    if (o.scales.empty()) fail("decompress --module gc needs --scales");
    entropy::GaussianConditional gc(module_tables(o));
    const Tensor indexes = gc.build_indexes(float_array(o.scales));
    std::optional<Tensor> means;
    if (!o.means.empty()) means = float_array(o.means);
    x_hat = gc.decompress(strings, indexes, means ? &*means : nullptr, coding, &stats);
  }
  formats::save_npy(o.output, x_hat);
  report(o, "decompress", bytes, stats, strings.size());
  return 0;
}

void common(CLI::App* sub, EntropyOptions& o) {
  sub->add_option("--tables", o.tables,
                  "Entropy tables: .bin/.json sidecar, saved table dict (.pt or .safetensors), or "
                  "a checkpoint or safetensors state_dict")
      ->required();
  sub->add_option("--prefix", o.prefix,
                  "Inside a state_dict: the module's prefix, e.g. feats_eblock.");
  sub->add_flag("--json", o.json, "Print a JSON summary");
}

CommandRegistration kEntropy{
    "entropy",
    "CompressAI-compatible rANS coding (encode/decode symbols, compress/decompress tensors)",
    [](CLI::App& app) {
      auto o = std::make_shared<EntropyOptions>();
      app.require_subcommand(1);
      auto* encode = app.add_subcommand("encode", "Symbols + table indexes (.npy) to one string");
      common(encode, *o);
      encode->add_option("--symbols", o->symbols, "int32 symbols (.npy)")->required();
      encode->add_option("--indexes", o->indexes, "int32 table index per symbol (.npy)")
          ->required();
      encode->add_option("-o,--output", o->output, "The string file to write")->required();

      auto* decode = app.add_subcommand("decode", "One string + table indexes to symbols (.npy)");
      common(decode, *o);
      decode->add_option("string", o->inputs, "The string file")->required();
      decode->add_option("--indexes", o->indexes, "int32 table index per symbol (.npy)")
          ->required();
      decode->add_option("-o,--output", o->output, "The int32 symbols .npy to write")->required();
      decode->add_flag("--strict", o->strict, "Fail unless the stream ends cleanly");

      auto* compress =
          app.add_subcommand("compress", "A float32 tensor (.npy) to one string per batch element");
      common(compress, *o);
      compress
          ->add_option("--module", o->module, "eb (EntropyBottleneck) or gc (GaussianConditional)")
          ->required();
      compress->add_option("input", o->inputs, "float32 (B, C, ...) tensor (.npy)")->required();
      compress->add_option("--scales", o->scales, "gc: float32 scales (.npy), shape of the input");
      compress->add_option("--means", o->means, "gc: float32 means (.npy)");
      compress->add_option("--threads", o->threads, "Threads (0: all cores)");
      compress->add_option("-o,--output", o->output, "Folder for the strings (0.bin, 1.bin, ...)")
          ->required();

      auto* decompress = app.add_subcommand(
          "decompress", "Strings (one per batch element) to a float32 tensor (.npy)");
      common(decompress, *o);
      decompress->add_option("--module", o->module, "eb or gc")->required();
      decompress->add_option("strings", o->inputs, "String files, batch order")->required();
      decompress->add_option("--size", o->size, "eb: the spatial shape, e.g. --size 16 16")
          ->delimiter(',');
      decompress->add_option("--scales", o->scales, "gc: float32 scales (.npy)");
      decompress->add_option("--means", o->means, "gc: float32 means (.npy)");
      decompress->add_option("--threads", o->threads, "Threads (0: all cores)");
      decompress->add_option("-o,--output", o->output, "The float32 .npy to write")->required();
      decompress->add_flag("--strict", o->strict, "Fail unless every stream ends cleanly");

      return [o, encode, decode, compress, decompress] {
        if (encode->parsed()) return run_encode(*o);
        if (decode->parsed()) return run_decode(*o);
        if (compress->parsed()) return run_compress(*o);
        if (decompress->parsed()) return run_decompress(*o);
        fail("entropy: expected a subcommand: encode, decode, compress or decompress");
      };
    }};

}  // namespace
}  // namespace torchless::cli
