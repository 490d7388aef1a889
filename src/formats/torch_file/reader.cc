// Reading torch.save files: detect the container, resolve persistent ids to storages (zip
// records or legacy stream slices), then bind every tensor to its storage's bytes.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <map>
#include <unordered_map>

#include "torchless/core/byte_reader.h"
#include "torchless/core/checked.h"
#include "torchless/core/error.h"
#include "torchless/formats/torch_file.h"
#include "torchless/formats/zip.h"

namespace torchless::torch_file {

using pickle::Kind;
using pickle::Value;
using pickle::ValuePtr;

std::string_view format_name(Format format) {
  switch (format) {
    case Format::kZip:
      return "zip";
    case Format::kLegacy:
      return "legacy";
    case Format::kPickle:
      return "pickle";
  }
  return "?";
}

namespace {

// torch/serialization.py MAGIC_NUMBER and PROTOCOL_VERSION of the legacy stream format.
constexpr std::string_view kLegacyMagic = "119547037146038801333356";
constexpr int64_t kLegacyProtocolVersion = 1001;
constexpr int kMaxNestedStreams = 4;

bool starts_with_ci(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
  }
  return true;
}

// Files that are not checkpoints but commonly carry a checkpoint's name.
void refuse_impostors(const Buffer& bytes, const std::string& name) {
  std::string_view head = bytes.view().substr(0, 512);
  if (head.starts_with("version https://git-lfs")) {
    throw UnsupportedError(fmt::format(
        "{}: is a Git LFS pointer file ({} bytes), not the checkpoint it stands for; fetch the "
        "real file with `git lfs pull`",
        name, bytes.size()));
  }
  std::string_view trimmed = head;
  while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.front()))) {
    trimmed.remove_prefix(1);
  }
  if (starts_with_ci(trimmed, "<!doctype html") || starts_with_ci(trimmed, "<html") ||
      starts_with_ci(trimmed, "<!doctype") || starts_with_ci(trimmed, "<head")) {
    throw UnsupportedError(fmt::format(
        "{}: is an HTML page, not a checkpoint (a download link that returned a web page, such "
        "as a sign-in or virus-scan warning); download the file itself",
        name));
  }
  if (head.starts_with("\x89PNG")) {
    throw UnsupportedError(fmt::format("{}: is a PNG image, not a checkpoint", name));
  }
  if (head.starts_with("PYTORCH1")) {
    throw UnsupportedError(fmt::format(
        "{}: uses the PyTorch 1.0 preview format (\"PYTORCH1\"), which torch itself no longer "
        "reads",
        name));
  }
  if (bytes.size() >= 262 && bytes.view().substr(257, 5) == "ustar") {
    throw UnsupportedError(fmt::format(
        "{}: is a tar archive: the pre-0.1.10 torch tar format is not supported (load it with "
        "an old torch and re-save it)",
        name));
  }
}

int64_t parse_int_record(std::string_view text, const std::string& what) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    fail("{}: expected a decimal number, found '{}'", what, std::string(text.substr(0, 40)));
  }
  return v;
}

const std::string& pid_str(const ValuePtr& v, const char* field) {
  if (v->kind != Kind::kStr) fail("persistent id field '{}' must be a str", field);
  return v->text;
}

}  // namespace

// Builds TorchCheckpoints; a friend so that it can fill in the fields.
class CheckpointLoader {
 public:
  CheckpointLoader(Buffer bytes, std::string name, const OpenOptions& options, int nesting)
      : bytes_(std::move(bytes)), name_(std::move(name)), options_(options), nesting_(nesting) {}

  TorchCheckpoint load() {
    refuse_impostors(bytes_, name_);
    if (formats::ZipArchive::looks_like_zip(bytes_.bytes())) return load_zip();
    if (bytes_.empty()) fail("{}: is empty (0 bytes), not a checkpoint", name_);
    if (static_cast<uint8_t>(bytes_.data()[0]) == 0x80) return load_stream();
    // Protocol 0-1 pickles have no PROTO opcode: try one, but name the file's real problem if
    // it is not a pickle at all. Refusals (a disallowed global) stay refusals.
    try {
      return load_stream();
    } catch (const UnsupportedError&) {
      throw;
    } catch (const LimitError&) {
      throw;
    } catch (const Error& e) {
      std::string head;
      for (size_t i = 0; i < std::min<size_t>(8, bytes_.size()); ++i) {
        head += fmt::format("{:02x} ", static_cast<uint8_t>(bytes_.data()[i]));
      }
      fail(
          "{}: not a PyTorch checkpoint: expected a zip archive (PK\\3\\4) or a pickle, "
          "found bytes {}(as a pickle: {})",
          name_, head, e.what());
    }
  }

 private:
  pickle::ReadOptions pickle_options(std::string what) {
    pickle::ReadOptions o;
    o.limits = options_.limits;
    o.salvage = options_.salvage;
    o.what = std::move(what);
    o.load_from_bytes = [this](const std::string& b) { return load_nested_storage(b); };
    return o;
  }

  ValuePtr module_pid(const std::vector<ValuePtr>& pid) {
    // ('module', cls, source_file, source): a whole pickled nn.Module class (torch.save(model)).
    if (!options_.salvage) {
      throw UnsupportedError(
          "the file pickles a whole nn.Module (its class and source code), not a state_dict; "
          "re-save model.state_dict(), or open it in salvage mode to extract the tensors");
    }
    if (pid.size() < 2) fail("'module' persistent id without a class");
    return pid[1];
  }

  ValuePtr new_storage(const std::vector<ValuePtr>& pid) {
    if (pid.size() < 5) fail("storage persistent id has {} fields, expected 5", pid.size());
    const auto& type = pid[1];
    if (type->kind != Kind::kGlobal || !type->boolean) {
      fail("storage persistent id names {} where a torch storage class belongs", type->repr(60));
    }
    if (type->type_name.find("Storage") == std::string::npos) {
      fail("storage persistent id names {} where a torch storage class belongs", type->type_name);
    }
    auto v = std::make_shared<Value>();
    v->kind = Kind::kStorage;
    v->storage = std::make_shared<pickle::StorageInfo>();
    auto& s = *v->storage;
    s.type_name = type->type_name;
    s.dtype = type->dtype;
    s.key = pid_str(pid[2], "key");
    s.location = pid_str(pid[3], "location");
    auto numel = pid[4]->as_int();
    if (!numel || *numel < 0) fail("storage '{}': numel must be a non-negative int", s.key);
    s.numel = static_cast<uint64_t>(*numel);
    return v;
  }

  // ---- zip ----------------------------------------------------------------------------------
  TorchCheckpoint load_zip() {
    auto archive = formats::ZipArchive::parse(bytes_, name_, options_.limits);
    const auto& entries = archive.entries();
    if (entries.empty()) fail("{}: empty zip archive, not a torch checkpoint", name_);
    std::string prefix = entries.front().name.substr(0, entries.front().name.find('/'));
    if (prefix.size() == entries.front().name.size()) {
      fail(
          "{}: zip record '{}' is not in a folder; torch checkpoints keep every record under "
          "one top-level folder",
          name_, entries.front().name);
    }
    for (const auto& e : entries) {
      if (!e.name_problem.empty()) {
        fail("{}: zip record name '{}' is unsafe ({}); refusing the archive", name_, e.name,
             e.name_problem);
      }
      if (e.name.compare(0, prefix.size() + 1, prefix + "/") != 0) {
        fail("{}: zip record '{}' lies outside the archive folder '{}/'", name_, e.name, prefix);
      }
    }
    auto has = [&](std::string_view rec) { return archive.find(prefix + "/" + std::string(rec)); };
    bool has_code = std::any_of(entries.begin(), entries.end(), [&](const formats::ZipEntry& e) {
      return e.name.compare(0, prefix.size() + 6, prefix + "/code/") == 0;
    });
    if (has("constants.pkl") || has_code) {
      throw UnsupportedError(fmt::format(
          "{}: is a TorchScript archive (torch.jit.save: constants.pkl, code/), not a "
          "torch.save checkpoint; torchless does not run TorchScript. Load it in Python with "
          "torch.jit.load and torch.save(model.state_dict())",
          name_));
    }
    const formats::ZipEntry* pkl = has("data.pkl");
    if (pkl == nullptr) {
      fail("{}: zip archive has no '{}/data.pkl' record: not a torch.save checkpoint", name_,
           prefix);
    }
    TorchCheckpoint ckpt;
    ckpt.format_ = Format::kZip;
    ckpt.archive_prefix_ = prefix;
    const formats::ZipEntry* version = has(".data/version");
    if (version == nullptr) version = has("version");
    if (version != nullptr) {
      ckpt.version_ = parse_int_record(archive.read(*version).view(), name_ + ": " + version->name);
    }
    if (const auto* order = has("byteorder")) {
      std::string text(archive.read(*order).view());
      while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
        text.pop_back();
      if (text != "little" && text != "big") {
        fail("{}: {}: expected 'little' or 'big', found '{}'", name_, order->name,
             text.substr(0, 20));
      }
      ckpt.byteorder_ = text;
    }

    std::unordered_map<std::string, ValuePtr> storages;
    auto options = pickle_options(name_ + ": " + pkl->name);
    options.persistent_load = [&](const ValuePtr& pid, uint64_t) -> ValuePtr {
      if (pid->kind != Kind::kTuple || pid->items.empty() || pid->items[0]->kind != Kind::kStr) {
        fail("persistent id {} is not a ('storage', ...) tuple", pid->repr(80));
      }
      if (pid->items[0]->text == "module") return module_pid(pid->items);
      if (pid->items[0]->text != "storage") {
        fail("persistent id kind '{}' is not supported (expected 'storage')", pid->items[0]->text);
      }
      auto fresh = new_storage(pid->items);
      auto& s = *fresh->storage;
      auto it = storages.find(s.key);
      if (it != storages.end()) {
        if (dtype_size(it->second->storage->dtype) != dtype_size(s.dtype)) {
          fail("storage '{}' is used as {} and as {}", s.key, it->second->storage->type_name,
               s.type_name);
        }
        return it->second;
      }
      std::string record = prefix + "/data/" + s.key;
      const formats::ZipEntry* entry = archive.find(record);
      if (entry == nullptr) fail("storage '{}': record '{}' is missing", s.key, record);
      uint64_t need = checked_mul(s.numel, dtype_size(s.dtype), record);
      if (entry->uncompressed_size != need) {
        fail(
            "storage '{}': record '{}' holds {} bytes but the pickle declares {} elements of "
            "{} bytes ({} bytes)",
            s.key, record, entry->uncompressed_size, s.numel, dtype_size(s.dtype), need);
      }
      if (options_.verify_crc32 && entry->is_stored()) archive.verify_crc(*entry);
      s.data = archive.read(*entry);
      storages.emplace(s.key, fresh);
      return fresh;
    };
    // Storages stay unbound until the pickle is read, so that byte order applies to every tensor.
    auto result = pickle::read(archive.read(*pkl), options);
    finish(ckpt, result, ckpt.byteorder_ == "big");
    return ckpt;
  }

  void finish(TorchCheckpoint& ckpt, pickle::ReadResult& result, bool big_endian) {
    for (const auto& t : result.tensors) {
      if (!t->tensor->bound && big_endian) t->tensor->byteswap = true;
      auto& s = t->tensor->storage;
      if (s && s->storage && !s->storage->data.empty()) s->storage->bound = true;
      if (s && s->storage && s->storage->numel == 0) s->storage->bound = true;
    }
    with_context(name_, [&] { pickle::bind_tensors(result.tensors); });
    ckpt.name_ = name_;
    ckpt.bytes_ = bytes_;
    ckpt.pickle_protocol_ = result.protocol;
    ckpt.globals_ = std::move(result.globals);
    ckpt.salvaged_ = std::move(result.salvaged);
    ckpt.root_ = std::move(result.value);
  }

  // ---- legacy stream ------------------------------------------------------------------------
  TorchCheckpoint load_stream() {
    pickle::ReadOptions first = pickle_options(name_ + ": pickle at offset 0");
    first.allow_trailing_data = true;
    auto magic = pickle::read(bytes_, first);
    bool is_magic = magic.value->kind == Kind::kBigInt && magic.value->text == kLegacyMagic;
    if (!is_magic) {
      // A bare pickle (pickle.dump of a dict of numbers, numpy arrays, ...): no storages.
      if (magic.end_offset != bytes_.size()) {
        fail(
            "{}: {} bytes after the pickle, and it is not a torch legacy stream (no magic "
            "number)",
            name_, bytes_.size() - magic.end_offset);
      }
      TorchCheckpoint ckpt;
      ckpt.format_ = Format::kPickle;
      finish(ckpt, magic, false);
      return ckpt;
    }
    uint64_t pos = magic.end_offset;
    auto next = [&](const std::string& part, bool with_storages,
                    pickle::ReadOptions* custom) -> pickle::ReadResult {
      pickle::ReadOptions o =
          custom ? *custom
                 : pickle_options(fmt::format("{}: {} pickle at offset {}", name_, part, pos));
      o.allow_trailing_data = true;
      if (!with_storages) o.persistent_load = nullptr;
      auto r = pickle::read(bytes_.slice(pos, bytes_.size() - pos, name_), o);
      pos += r.end_offset;
      return r;
    };
    auto version = next("protocol version", false, nullptr);
    if (version.value->as_int() != kLegacyProtocolVersion) {
      fail("{}: legacy stream protocol version {} is not {}", name_, version.value->repr(40),
           kLegacyProtocolVersion);
    }
    auto sys_info = next("sys_info", false, nullptr);
    bool big_endian = false;
    if (sys_info.value->is_dict()) {
      if (auto le = sys_info.value->get("little_endian")) {
        big_endian = le->kind == Kind::kBool && !le->boolean;
      }
    }

    // Root storages by key, in first-reference order; views point at their root.
    std::unordered_map<std::string, ValuePtr> storages;
    std::unordered_map<std::string, ValuePtr> views;
    auto options = pickle_options(fmt::format("{}: object pickle at offset {}", name_, pos));
    options.persistent_load = [&](const ValuePtr& pid, uint64_t) -> ValuePtr {
      if (pid->kind != Kind::kTuple || pid->items.empty() || pid->items[0]->kind != Kind::kStr) {
        fail("persistent id {} is not a ('storage', ...) tuple", pid->repr(80));
      }
      if (pid->items[0]->text == "module") return module_pid(pid->items);
      if (pid->items[0]->text != "storage") {
        fail("persistent id kind '{}' is not supported", pid->items[0]->text);
      }
      auto fresh = new_storage(pid->items);
      auto& s = *fresh->storage;
      ValuePtr root;
      auto it = storages.find(s.key);
      if (it == storages.end()) {
        storages.emplace(s.key, fresh);
        root = fresh;
      } else {
        root = it->second;
        if (dtype_size(root->storage->dtype) != dtype_size(s.dtype)) {
          fail("storage '{}' is used as {} and as {}", s.key, root->storage->type_name,
               s.type_name);
        }
      }
      if (pid->items.size() >= 6 && pid->items[5]->kind == Kind::kTuple) {
        // view_metadata = (view_key, offset, view_size) over the root storage.
        const auto& meta = pid->items[5]->items;
        if (meta.size() != 3) fail("storage view metadata must be (key, offset, size)");
        const std::string& view_key = pid_str(meta[0], "view key");
        auto vit = views.find(view_key);
        if (vit != views.end()) return vit->second;
        auto offset = meta[1]->as_int();
        auto size = meta[2]->as_int();
        if (!offset || !size || *offset < 0 || *size < 0) fail("bad storage view metadata");
        auto view = std::make_shared<Value>();
        view->kind = Kind::kStorage;
        view->storage = std::make_shared<pickle::StorageInfo>(*root->storage);
        view->storage->key = view_key;
        view->storage->base = root;
        view->storage->view_offset = static_cast<uint64_t>(*offset);
        view->storage->numel = static_cast<uint64_t>(*size);
        views.emplace(view_key, view);
        return view;
      }
      return root;
    };
    auto object = next("object", true, &options);
    auto keys = next("storage keys", false, nullptr);
    if (keys.value->kind != Kind::kList) {
      fail("{}: the storage key list is a {}, expected a list", name_,
           pickle::kind_name(keys.value->kind));
    }
    for (const auto& key_value : keys.value->items) {
      if (key_value->kind != Kind::kStr) fail("{}: storage key is not a str", name_);
      const std::string& key = key_value->text;
      auto it = storages.find(key);
      if (it == storages.end()) {
        fail("{}: storage '{}' at offset {} is not referenced by the pickle", name_, key, pos);
      }
      auto& s = *it->second->storage;
      ByteReader header(bytes_.bytes(), name_);
      header.seek(pos);
      if (header.remaining() < 8) {
        fail("{}: offset {}: storage '{}' size field truncated", name_, pos, key);
      }
      uint64_t numel = header.u64();
      uint64_t size = checked_mul(numel, dtype_size(s.dtype), "legacy storage size");
      if (size > header.remaining()) {
        fail(
            "{}: offset {}: storage '{}' declares {} elements ({} bytes) but only {} bytes "
            "remain (truncated?)",
            name_, pos, key, numel, size, header.remaining());
      }
      s.numel = numel;
      s.data = bytes_.slice(pos + 8, size, name_);
      s.bound = true;
      pos += 8 + size;
    }
    for (const auto& [key, s] : storages) {
      if (!s->storage->bound) fail("{}: storage '{}' has no data in the stream", name_, key);
    }
    TorchCheckpoint ckpt;
    ckpt.format_ = Format::kLegacy;
    ckpt.version_ = kLegacyProtocolVersion;
    ckpt.byteorder_ = big_endian ? "big" : "little";
    finish(ckpt, object, big_endian);
    return ckpt;
  }

  // torch.storage._load_from_bytes: a storage saved by itself as a nested torch stream.
  ValuePtr load_nested_storage(const std::string& bytes) {
    if (nesting_ >= kMaxNestedStreams) {
      throw LimitError(
          fmt::format("{}: storages nested more than {} streams deep", name_, kMaxNestedStreams));
    }
    CheckpointLoader inner(Buffer::copy_of(bytes), name_ + " (nested storage)", options_,
                           nesting_ + 1);
    auto ckpt = inner.load();
    if (!ckpt.root() || ckpt.root()->kind != Kind::kStorage) {
      fail("{}: _load_from_bytes data is not a storage", name_);
    }
    return ckpt.root();
  }

  Buffer bytes_;
  std::string name_;
  const OpenOptions& options_;
  int nesting_;
};

TorchCheckpoint TorchCheckpoint::open(const std::filesystem::path& path,
                                      const OpenOptions& options) {
  return read(Buffer::map_file(path), path.string(), options);
}

TorchCheckpoint TorchCheckpoint::read(Buffer bytes, std::string name, const OpenOptions& options) {
  CheckpointLoader loader(std::move(bytes), std::move(name), options, 0);
  return loader.load();
}

}  // namespace torchless::torch_file
