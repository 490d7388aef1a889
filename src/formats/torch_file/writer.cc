// Writing torch zip checkpoints the way torch.save does (see docs/formats/torch-zip.md).
#include <fmt/format.h>

#include <map>

#include "torchless/core/error.h"
#include "torchless/formats/torch_file.h"
#include "torchless/formats/zip.h"

namespace torchless::torch_file {

namespace {

struct StorageRecord {
  std::string key;
  Buffer bytes;
  DType dtype;
};

// One record per distinct storage Buffer (same bytes, same extent): tensors viewing the same
// storage share one key, as in torch.
class StorageTable {
 public:
  pickle::StorageRef ref(const Tensor& t) {
    const Buffer& storage = t.storage();
    auto id = std::make_pair(static_cast<const void*>(storage.data()), storage.size());
    auto it = keys_.find(id);
    size_t item = dtype_size(t.dtype());
    if (storage.size() % item != 0) {
      fail("torch writer: storage of {} bytes is not a whole number of {} elements", storage.size(),
           dtype_name(t.dtype()));
    }
    if (it == keys_.end()) {
      std::string key = fmt::format("{}", records_.size());
      records_.push_back({key, storage, t.dtype()});
      it = keys_.emplace(id, records_.size() - 1).first;
    }
    const auto& rec = records_[it->second];
    if (dtype_size(rec.dtype) != item) {
      fail(
          "torch writer: one storage is viewed as {} and as {}; torch requires one element "
          "type per storage",
          dtype_name(rec.dtype), dtype_name(t.dtype()));
    }
    return pickle::StorageRef{rec.key, "cpu", storage.size() / item};
  }
  const std::vector<StorageRecord>& records() const { return records_; }

 private:
  std::map<std::pair<const void*, size_t>, size_t> keys_;
  std::vector<StorageRecord> records_;
};

void write_archive(formats::ZipWriter& zip, const pickle::Value& root, const SaveOptions& options) {
  if (options.archive_name.empty() || options.archive_name.find('/') != std::string::npos) {
    fail("torch writer: archive name '{}' must be one non-empty path component",
         options.archive_name);
  }
  StorageTable table;
  pickle::WriteOptions w;
  w.protocol = options.pickle_protocol;
  w.storage_ref = [&](const Tensor& t) { return table.ref(t); };
  std::string pkl = pickle::write(root, w);
  const std::string& a = options.archive_name;
  // torch 2.x order: data.pkl, byteorder, data/0..N (numeric order), version.
  zip.add(a + "/data.pkl", pkl);
  zip.add(a + "/byteorder", "little");
  for (const auto& rec : table.records()) zip.add(a + "/data/" + rec.key, rec.bytes.bytes());
  zip.add(a + "/version", "3\n");
  zip.finish();
}

}  // namespace

std::string save_to_bytes(const pickle::Value& root, const SaveOptions& options) {
  formats::ZipWriter zip;
  write_archive(zip, root, options);
  auto bytes = zip.take_bytes();
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void save(const std::filesystem::path& path, const pickle::Value& root,
          const SaveOptions& options) {
  formats::ZipWriter zip(path);
  write_archive(zip, root, options);
}

pickle::ValuePtr state_dict_value(const StateDict& state_dict) {
  auto dict = pickle::Value::dict("collections.OrderedDict");
  for (const auto& e : state_dict.entries) {
    dict->set_item(pickle::Value::from_str(e.name), pickle::Value::from_tensor(e.tensor));
  }
  return dict;
}

}  // namespace torchless::torch_file
