// PyTorch checkpoint files (.pt, .pth, .bin) as torch.save writes them: the zip format
// (torch >= 1.6) and the legacy pickle-stream format (magic number, protocol, sys_info, object
// pickle, storage keys, raw storages). A TorchCheckpoint maps the file and holds the inert value
// tree of its pickle; tensors are views into the mapping (zero copy) for stored zip records and
// little-endian data, copies otherwise. TorchScript archives, Git LFS pointers, HTML pages and
// the pre-0.1.10 tar format are recognised and refused with a message saying what they are.
// Thread-safety: a TorchCheckpoint is immutable after open() and may be shared across threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torchless/core/buffer.h"
#include "torchless/core/limits.h"
#include "torchless/core/tensor.h"
#include "torchless/formats/pickle.h"

namespace torchless::torch_file {

// kPickle: a bare pickle (pickle.dump of a dict, no torch container); it holds no storages.
enum class Format { kZip, kLegacy, kPickle };
std::string_view format_name(Format format);  // "zip", "legacy", "pickle"

struct OpenOptions {
  Limits limits = Limits::defaults();
  // Non-allowlisted globals (whole pickled nn.Modules, argparse.Namespace, user classes) become
  // inert records and their tensors are still extracted. Default: strict, they are errors.
  bool salvage = false;
  // Check each zip record's CRC-32 (off by default: torch itself does not, and it reads every
  // byte).
  bool verify_crc32 = false;
};

// A tensor reachable from the root, named by its path: dict keys (str(key) for non-str keys)
// and list/tuple indexes joined with '/', e.g. "model_state_dict/fc1.weight",
// "optimizer_state_dict/state/0/exp_avg". Salvaged records are walked through their state in
// place; their constructor arguments appear under "__args__" / "__newargs__".
struct NamedTensor {
  std::string path;
  Tensor tensor;
  pickle::ValuePtr node;  // the kTensor node (requires_grad, is_parameter, storage key, ...)
};

struct StateDictEntry {
  std::string name;  // "conv1.weight"
  Tensor tensor;
};

// An ordered name -> tensor map (the order of the file).
class StateDict {
 public:
  std::vector<StateDictEntry> entries;

  size_t size() const { return entries.size(); }
  bool empty() const { return entries.empty(); }
  // The tensor named `name`, or null.
  const Tensor* find(std::string_view name) const;
  // The tensor named `name`; throws Error listing near names when absent.
  const Tensor& at(std::string_view name) const;
};

class TorchCheckpoint {
 public:
  // Maps `path` and reads it. Throws Error naming the file and the record/offset.
  static TorchCheckpoint open(const std::filesystem::path& path, const OpenOptions& options = {});
  // Reads from bytes already in memory; `name` names them in messages.
  static TorchCheckpoint read(Buffer bytes, std::string name, const OpenOptions& options = {});

  Format format() const { return format_; }
  // Zip: the number in the `version` record (3 for torch 1.6-2.x); legacy: 1001.
  int64_t version() const { return version_; }
  // Zip: the top-level folder every record lives under ("archive", "model", ...); legacy: "".
  const std::string& archive_prefix() const { return archive_prefix_; }
  // The `byteorder` record ("little"/"big"); "little" when absent.
  const std::string& byteorder() const { return byteorder_; }
  int pickle_protocol() const { return pickle_protocol_; }
  // Every global the object pickle names, "module.name", first-seen order.
  const std::vector<std::string>& globals() const { return globals_; }
  // Globals kept as inert records (salvage mode only).
  const std::vector<std::string>& salvaged_globals() const { return salvaged_; }
  const std::string& name() const { return name_; }
  const Buffer& bytes() const { return bytes_; }

  const pickle::ValuePtr& root() const { return root_; }
  // The node at `path` ('/'-separated, as in NamedTensor), or null. "" is the root.
  pickle::ValuePtr find(std::string_view path) const;
  // Every tensor reachable from the root, first reach order. A tensor object reached by
  // several paths is listed once, under its first path.
  std::vector<NamedTensor> tensors() const;
  // Visits every node reachable from the root once, parents before children, with the path of
  // its first reach (the root has path ""). Containers reached again are not re-entered.
  void walk(const std::function<void(const std::string& path, const pickle::ValuePtr& node)>& visit)
      const;

  // The state_dict at `path`:
  //  - "" picks the first of: the root if it is a dict of tensors, else the root's
  //    "state_dict", "model_state_dict", "model", "net", "module", "network" entry that is;
  //  - "model_state_dict" (any path) takes that dict;
  //  - a path whose last component ends with '.' ("feats_eblock." or
  //    "model_state_dict/feats_eblock.") takes the entries of the state_dict (as for the rest of
  //    the path) whose names start with it, with the prefix stripped.
  // Non-tensor entries are skipped. Throws Error when there is no such dict.
  StateDict state_dict(std::string_view path = "") const;

  // Training-checkpoint fields, when present at the root.
  std::optional<int64_t> epoch() const;
  std::optional<double> loss() const;  // a float, or a 0-d tensor
  // optimizer_state_dict (or "optimizer")'s "state" (dict param index -> dict) and
  // "param_groups" (list of dicts); null when absent.
  pickle::ValuePtr optimizer_state() const;
  pickle::ValuePtr param_groups() const;

 private:
  Format format_ = Format::kZip;
  int64_t version_ = 0;
  std::string archive_prefix_;
  std::string byteorder_ = "little";
  int pickle_protocol_ = 0;
  std::vector<std::string> globals_;
  std::vector<std::string> salvaged_;
  std::string name_;
  Buffer bytes_;
  pickle::ValuePtr root_;

  friend class CheckpointLoader;
};

struct SaveOptions {
  // The top-level folder of the records (torch uses the file name's stem, or "archive").
  std::string archive_name = "archive";
  int pickle_protocol = 2;
};

// Serialises `root` (dicts, lists, tuples, ints, floats, strings, bools, None, tensors; tensors
// sharing a storage stay shared) as a torch zip checkpoint that torch.load(weights_only=True)
// reads back: <name>/data.pkl, <name>/data/<key> (64-byte aligned, stored), <name>/version "3",
// <name>/byteorder "little". See docs/formats/torch-zip.md.
std::string save_to_bytes(const pickle::Value& root, const SaveOptions& options = {});
void save(const std::filesystem::path& path, const pickle::Value& root,
          const SaveOptions& options = {});
// An OrderedDict of the entries (what model.state_dict() is).
pickle::ValuePtr state_dict_value(const StateDict& state_dict);

}  // namespace torchless::torch_file
