#include "torchless/codec/package.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

#include "torchless/codec/container.h"
#include "torchless/core/buffer.h"
#include "torchless/core/error.h"

namespace torchless::codec {
namespace {

using nlohmann::json;

// A manifest is a few kB; anything far larger is not one.
constexpr uint64_t kMaxManifestBytes = uint64_t{64} << 20;

const char* type_name(const json& value) {
  return value.type_name();
}

const json& member(const json& object, std::string_view key, std::string_view where) {
  auto it = object.find(key);
  if (it == object.end()) fail("{}: missing key \"{}\"", where, key);
  return *it;
}

std::string string_member(const json& object, std::string_view key, std::string_view where) {
  const auto& value = member(object, key, where);
  if (!value.is_string()) {
    fail("{}: \"{}\": expected a string, found {}", where, key, type_name(value));
  }
  return value.get<std::string>();
}

int64_t int_member(const json& object, std::string_view key, std::string_view where) {
  const auto& value = member(object, key, where);
  if (!value.is_number_integer()) {
    fail("{}: \"{}\": expected an integer, found {} {}", where, key, type_name(value),
         value.dump());
  }
  return value.get<int64_t>();
}

const json& object_member(const json& object, std::string_view key, std::string_view where) {
  const auto& value = member(object, key, where);
  if (!value.is_object())
    fail("{}: \"{}\": expected an object, found {}", where, key, type_name(value));
  return value;
}

const json& array_member(const json& object, std::string_view key, std::string_view where) {
  const auto& value = member(object, key, where);
  if (!value.is_array())
    fail("{}: \"{}\": expected an array, found {}", where, key, type_name(value));
  return value;
}

// Listed paths stay inside the package: relative, no "..", no empty or "." components.
void check_relative_path(const std::string& path, std::string_view where) {
  std::filesystem::path p(path);
  bool bad = path.empty() || p.is_absolute() || path.find('\\') != std::string::npos;
  for (const auto& part : p) {
    if (part == ".." || part == "." || part.empty()) bad = true;
  }
  if (bad) fail("{}: path \"{}\" is not a plain relative path inside the package", where, path);
}

bool is_sha256_hex(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::vector<PackageTensorSpec> tensor_specs(const json& graph, std::string_view key,
                                            const std::string& where) {
  std::vector<PackageTensorSpec> out;
  const auto& list = array_member(graph, key, where);
  for (size_t i = 0; i < list.size(); ++i) {
    std::string item_where = fmt::format("{}: {}[{}]", where, key, i);
    const auto& item = list[i];
    if (!item.is_object()) fail("{}: expected an object, found {}", item_where, type_name(item));
    PackageTensorSpec spec;
    spec.name = string_member(item, "name", item_where);
    spec.dtype = string_member(item, "dtype", item_where);
    const auto& shape = array_member(item, "shape", item_where);
    for (const auto& dim : shape) {
      if (dim.is_number_integer() && dim.get<int64_t>() >= 0) {
        spec.shape.push_back(dim.get<int64_t>());
        spec.dim_names.emplace_back();
      } else if (dim.is_string()) {
        spec.shape.push_back(-1);
        spec.dim_names.push_back(dim.get<std::string>());
      } else {
        fail("{}: shape: expected non-negative integers or dimension names, found {}", item_where,
             dim.dump());
      }
    }
    out.push_back(std::move(spec));
  }
  return out;
}

}  // namespace

Package Package::load(const std::filesystem::path& directory, const PackageLoadOptions& options) {
  Package p;
  p.directory_ = directory;
  std::string dir = directory.string();
  auto manifest_path = directory / "manifest.json";
  std::string where = manifest_path.string();
  if (!std::filesystem::is_directory(directory)) {
    fail("{}: not a package directory (it does not exist or is not a directory)", dir);
  }
  if (!std::filesystem::exists(manifest_path)) {
    fail("{}: no manifest.json: not a model package (expected {})", dir, where);
  }
  auto bytes = Buffer::map_file(manifest_path);
  if (bytes.size() > kMaxManifestBytes) {
    throw LimitError(fmt::format("{}: {} bytes, more than the {} a manifest may have", where,
                                 bytes.size(), kMaxManifestBytes));
  }
  p.manifest_text_ = std::string(bytes.view());
  p.manifest_sha256_ = sha256(bytes.bytes());

  json manifest;
  try {
    manifest = json::parse(p.manifest_text_);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", where, e.what());
  }
  if (!manifest.is_object())
    fail("{}: expected a JSON object, found {}", where, type_name(manifest));

  auto format = manifest.find("format");
  if (format == manifest.end() || !format->is_string() || *format != kPackageFormat) {
    throw UnsupportedError(fmt::format("{}: \"format\": expected \"{}\", found {}", where,
                                       kPackageFormat,
                                       format == manifest.end() ? "nothing" : format->dump()));
  }
  auto version = manifest.find("format_version");
  if (version == manifest.end() || !version->is_number_integer() ||
      version->get<int64_t>() != kPackageFormatVersion) {
    throw UnsupportedError(fmt::format(
        "{}: \"format_version\": this reader supports version {}, found {}", where,
        kPackageFormatVersion, version == manifest.end() ? "nothing" : version->dump()));
  }
  p.family_ = string_member(manifest, "family", where);
  p.package_id_ = string_member(manifest, "package_id", where);
  if (manifest.contains("rate")) p.rate_ = string_member(manifest, "rate", where);

  const auto& files = array_member(manifest, "files", where);
  std::set<std::string> listed;
  for (size_t i = 0; i < files.size(); ++i) {
    std::string item_where = fmt::format("{}: files[{}]", where, i);
    const auto& item = files[i];
    if (!item.is_object()) fail("{}: expected an object, found {}", item_where, type_name(item));
    PackageFile f;
    f.path = string_member(item, "path", item_where);
    check_relative_path(f.path, item_where);
    int64_t size = int_member(item, "size", item_where);
    if (size < 0) fail("{}: \"size\": expected >= 0, found {}", item_where, size);
    f.size = static_cast<uint64_t>(size);
    f.sha256 = string_member(item, "sha256", item_where);
    if (!is_sha256_hex(f.sha256)) {
      fail("{}: \"sha256\": expected 64 lower-case hex digits, found \"{}\"", item_where, f.sha256);
    }
    if (f.path == "manifest.json") fail("{}: the manifest cannot list itself", item_where);
    if (!listed.insert(f.path).second) fail("{}: \"{}\" is listed twice", item_where, f.path);
    p.files_.push_back(std::move(f));
  }

  if (options.verify_files) {
    for (const auto& f : p.files_) {
      auto path = directory / f.path;
      std::error_code ec;
      if (!std::filesystem::is_regular_file(path, ec)) {
        fail("{}: file \"{}\" listed in manifest.json is missing", dir, f.path);
      }
      auto data = Buffer::map_file(path);
      if (data.size() != f.size) {
        fail(
            "{}: file \"{}\" has {} bytes, manifest.json says {} (the package was modified or "
            "copied incompletely)",
            dir, f.path, data.size(), f.size);
      }
      auto digest = to_hex(sha256(data.bytes()));
      if (digest != f.sha256) {
        fail("{}: file \"{}\" has SHA-256 {}, manifest.json says {} (the package was modified)",
             dir, f.path, digest, f.sha256);
      }
    }
  }

  auto require_listed = [&](const std::string& file, const std::string& what) {
    if (!listed.count(file)) {
      fail("{}: {} names file \"{}\", which \"files\" does not list (it would not be checked)",
           where, what, file);
    }
  };

  if (manifest.contains("graphs")) {
    const auto& graphs = array_member(manifest, "graphs", where);
    for (size_t i = 0; i < graphs.size(); ++i) {
      std::string item_where = fmt::format("{}: graphs[{}]", where, i);
      const auto& item = graphs[i];
      if (!item.is_object()) fail("{}: expected an object, found {}", item_where, type_name(item));
      PackageGraph g;
      g.name = string_member(item, "name", item_where);
      item_where += " (" + g.name + ")";
      g.file = string_member(item, "file", item_where);
      require_listed(g.file, "graph \"" + g.name + "\"");
      g.inputs = tensor_specs(item, "inputs", item_where);
      g.outputs = tensor_specs(item, "outputs", item_where);
      if (item.contains("stage")) g.stage = int_member(item, "stage", item_where);
      p.graphs_.push_back(std::move(g));
    }
  }
  if (manifest.contains("entropy_models")) {
    const auto& models = object_member(manifest, "entropy_models", where);
    for (const auto& [name, item] : models.items()) {
      std::string item_where = fmt::format("{}: entropy_models.{}", where, name);
      if (!item.is_object()) fail("{}: expected an object, found {}", item_where, type_name(item));
      PackageEntropyModel m;
      m.name = name;
      m.kind = string_member(item, "kind", item_where);
      m.channels = int_member(item, "channels", item_where);
      m.precision = int_member(item, "precision", item_where);
      const auto& tables = object_member(item, "tables", item_where);
      m.bin = string_member(tables, "bin", item_where + ".tables");
      require_listed(m.bin, "entropy model \"" + name + "\"");
      if (tables.contains("json")) m.json = string_member(tables, "json", item_where + ".tables");
      if (tables.contains("pt")) m.pt = string_member(tables, "pt", item_where + ".tables");
      p.entropy_models_.push_back(std::move(m));
    }
  }
  return p;
}

const PackageGraph& Package::graph(std::string_view name) const {
  for (const auto& g : graphs_) {
    if (g.name == name) return g;
  }
  fail("{}: manifest.json lists no graph \"{}\"", directory_.string(), name);
}

const PackageEntropyModel& Package::entropy_model(std::string_view name) const {
  for (const auto& m : entropy_models_) {
    if (m.name == name) return m;
  }
  fail("{}: manifest.json lists no entropy model \"{}\"", directory_.string(), name);
}

std::filesystem::path Package::file(std::string_view path) const {
  for (const auto& f : files_) {
    if (f.path == path) return directory_ / f.path;
  }
  fail("{}: manifest.json does not list a file \"{}\"", directory_.string(), path);
}

void Package::check_container(const Container& container, std::string_view container_name) const {
  if (container.package_id != package_id_) {
    fail("{}: written with package \"{}\", but the package given ({}) is \"{}\"", container_name,
         container.package_id, directory_.string(), package_id_);
  }
  if (container.manifest_sha256 != manifest_sha256_) {
    fail(
        "{}: manifest_sha256 {} does not match the SHA-256 {} of {}/manifest.json (same "
        "package_id \"{}\", different package contents)",
        container_name, to_hex(container.manifest_sha256), to_hex(manifest_sha256_),
        directory_.string(), package_id_);
  }
}

}  // namespace torchless::codec
