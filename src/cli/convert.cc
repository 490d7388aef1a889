// `torchless convert IN OUT`: moves tensors between PyTorch checkpoints (.pt/.pth/.bin),
// safetensors and numpy archives (.npz). The input format comes from IN's content, the output
// format from OUT's extension. From a checkpoint, the state_dict is taken (auto-detected inside
// full training checkpoints, or chosen with --key), or with --all every tensor in the file,
// named by its dotted path. OUT is written atomically and never replaced without --force.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <set>

#include "cli/command.h"
#include "cli/inspect.h"
#include "torchless/core/error.h"
#include "torchless/formats/npy.h"
#include "torchless/formats/safetensors.h"
#include "torchless/formats/torch_file.h"

namespace torchless::cli {
namespace {

struct ConvertOptions {
  std::string input;
  std::string output;
  std::string key;
  bool all = false;
  bool salvage = false;
  bool force = false;
};

struct Loaded {
  formats::NamedTensors tensors;
  std::map<std::string, std::string> metadata;
};

std::string dotted(std::string path) {
  std::replace(path.begin(), path.end(), '/', '.');
  return path;
}

Loaded load_checkpoint(const std::filesystem::path& path, const ConvertOptions& options) {
  torch_file::OpenOptions open_options;
  open_options.salvage = options.salvage;
  auto ckpt = torch_file::TorchCheckpoint::open(path, open_options);
  Loaded out;
  if (options.all) {
    std::set<std::string> names;
    for (const auto& named : ckpt.tensors()) {
      std::string name = dotted(named.path);
      if (!names.insert(name).second) {
        fail("{}: two tensors flatten to the name '{}'", path.string(), name);
      }
      out.tensors.emplace_back(std::move(name), named.tensor);
    }
  } else {
    torch_file::StateDict state_dict;
    try {
      state_dict = ckpt.state_dict(options.key);
    } catch (const Error& e) {
      throw Error(std::string(e.what()) +
                  " (choose one with --key PATH, or take every tensor with --all)");
    }
    for (auto& entry : state_dict.entries) {
      out.tensors.emplace_back(std::move(entry.name), std::move(entry.tensor));
    }
  }
  out.metadata["format"] = "pt";
  return out;
}

Loaded load(const std::filesystem::path& path, const ConvertOptions& options) {
  Buffer bytes = Buffer::map_file(path);
  std::string format = detect_format(path, bytes);
  if (format != "pytorch-zip" && format != "pytorch-legacy" &&
      (!options.key.empty() || options.all || options.salvage)) {
    fail("{}: --key, --all and --salvage apply to PyTorch checkpoints, this is {}", path.string(),
         format);
  }
  if (format == "pytorch-zip" || format == "pytorch-legacy") return load_checkpoint(path, options);
  Loaded out;
  if (format == "safetensors") {
    auto file = formats::SafetensorsFile::parse(bytes, path.string());
    for (const auto& t : file.tensors()) out.tensors.emplace_back(t.name, t.tensor);
    out.metadata = file.metadata();
  } else if (format == "npz") {
    auto npz = formats::NpzArchive::parse(bytes, path.string());
    for (const auto& name : npz.names()) out.tensors.emplace_back(name, npz.read(name).tensor);
  } else if (format == "npy") {
    out.tensors.emplace_back(path.stem().string(), formats::read_npy(bytes, path.string()).tensor);
  } else {
    throw UnsupportedError(fmt::format(
        "{}: cannot convert from {} (inputs: PyTorch checkpoints, safetensors, .npz, .npy)",
        path.string(), format));
  }
  return out;
}

void save(const std::filesystem::path& path, const Loaded& loaded) {
  std::string extension = path.extension().string();
  if (extension == ".safetensors") {
    formats::save_safetensors(path, loaded.tensors, loaded.metadata);
  } else if (extension == ".npz") {
    formats::save_npz(path, loaded.tensors);
  } else if (extension == ".pt" || extension == ".pth" || extension == ".bin") {
    torch_file::StateDict state_dict;
    for (const auto& [name, tensor] : loaded.tensors) state_dict.entries.push_back({name, tensor});
    torch_file::SaveOptions options;
    // torch names the top-level folder after the file, as torch.save(path) does.
    options.archive_name = path.stem().string();
    if (options.archive_name.empty()) options.archive_name = "archive";
    std::string bytes =
        torch_file::save_to_bytes(*torch_file::state_dict_value(state_dict), options);
    write_file_atomic(path, bytes);
  } else {
    fail(
        "{}: cannot tell the output format from the extension '{}' (use .safetensors, .pt, "
        ".pth, .bin or .npz)",
        path.string(), extension);
  }
}

int run_convert(const ConvertOptions& options) {
  std::filesystem::path input = options.input, output = options.output;
  if (std::filesystem::exists(output) && !options.force) {
    fail("{}: already exists; pass --force to replace it", output.string());
  }
  std::error_code ec;
  if (std::filesystem::equivalent(input, output, ec)) {
    fail("{}: input and output are the same file", output.string());
  }
  Loaded loaded = load(input, options);
  if (loaded.tensors.empty()) fail("{}: no tensors to convert", input.string());
  save(output, loaded);
  uint64_t parameters = 0, bytes = 0;
  for (const auto& [name, tensor] : loaded.tensors) {
    parameters += static_cast<uint64_t>(tensor.numel());
    bytes += tensor.nbytes();
  }
  std::printf("%s: %zu tensors, %llu parameters, %llu bytes of tensor data\n",
              output.string().c_str(), loaded.tensors.size(),
              static_cast<unsigned long long>(parameters), static_cast<unsigned long long>(bytes));
  return 0;
}

CommandRegistration kConvert{
    "convert", "Convert tensors between .pt/.pth, .safetensors and .npz files", [](CLI::App& app) {
      auto options = std::make_shared<ConvertOptions>();
      app.add_option("input", options->input, "The file to read (format detected from content)")
          ->required();
      app.add_option("output", options->output,
                     "The file to write (.safetensors, .pt/.pth/.bin, .npz)")
          ->required();
      app.add_option("--key", options->key,
                     "Checkpoints: the state_dict to take, e.g. model_state_dict (default: "
                     "auto-detected)");
      app.add_flag("--all", options->all,
                   "Checkpoints: every tensor in the file, named by its dotted path");
      app.add_flag("--salvage", options->salvage,
                   "Checkpoints: keep non-allowlisted objects (pickled nn.Modules) as inert "
                   "records so their tensors can be taken with --all (nothing executes)");
      app.add_flag("--force", options->force, "Replace OUTPUT if it exists");
      return [options] { return run_convert(*options); };
    }};

}  // namespace
}  // namespace torchless::cli
