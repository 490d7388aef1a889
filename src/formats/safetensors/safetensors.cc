#include "torchless/formats/safetensors.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "formats/zip/atomic_file.h"
#include "torchless/core/byte_reader.h"
#include "torchless/core/checked.h"
#include "torchless/core/error.h"

namespace torchless::formats {
namespace {

struct DTypeName {
  std::string_view name;
  DType dtype;
};

// In the order of the reference implementation's Dtype enum, whose derived ordering its writer
// uses (largest first) to lay tensors out so that each stays aligned to its element size.
constexpr std::array<DTypeName, 16> kDTypes = {{
    {"BOOL", DType::kBool},
    {"U8", DType::kUInt8},
    {"I8", DType::kInt8},
    {"F8_E5M2", DType::kFloat8E5M2},
    {"F8_E4M3", DType::kFloat8E4M3FN},
    {"I16", DType::kInt16},
    {"U16", DType::kUInt16},
    {"F16", DType::kFloat16},
    {"BF16", DType::kBFloat16},
    {"I32", DType::kInt32},
    {"U32", DType::kUInt32},
    {"F32", DType::kFloat32},
    {"C64", DType::kComplex64},
    {"F64", DType::kFloat64},
    {"I64", DType::kInt64},
    {"U64", DType::kUInt64},
}};

size_t dtype_rank(DType dtype) {
  for (size_t i = 0; i < kDTypes.size(); ++i) {
    if (kDTypes[i].dtype == dtype) return i;
  }
  return 0;
}

uint64_t unsigned_of(const nlohmann::json& value, const std::string& where) {
  if (!value.is_number_unsigned() && !(value.is_number_integer() && value.get<int64_t>() >= 0)) {
    fail("{}: expected a non-negative integer, found {}", where, value.dump());
  }
  return value.get<uint64_t>();
}

constexpr int kMaxHeaderDepth = 8;

// Parses the header, refusing duplicate keys (JSON allows them; the format does not, and two
// readers could otherwise disagree on which tensor a name means).
nlohmann::json parse_header(std::string_view text, const std::string& what) {
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    // A valid header nests three levels deep; bounding it keeps hostile headers from building
    // (and recursively destroying) a million-level tree.
    if (depth > kMaxHeaderDepth) {
      fail("{}: header nests deeper than {} levels", what, kMaxHeaderDepth);
    }
    if (event == Event::object_start) keys.emplace_back();
    if (event == Event::object_end && !keys.empty()) keys.pop_back();
    if (event == Event::key && !keys.empty() && duplicate.empty()) {
      if (!keys.back().insert(parsed.get<std::string>()).second) {
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for huge numbers
    fail("{}: header is not valid JSON: {}", what, e.what());
  }
  if (!duplicate.empty()) fail("{}: header has the key '{}' twice", what, duplicate);
  return header;
}

}  // namespace

std::optional<DType> dtype_from_safetensors(std::string_view name) {
  for (const auto& d : kDTypes) {
    if (d.name == name) return d.dtype;
  }
  return std::nullopt;
}

std::optional<std::string_view> safetensors_dtype_name(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  return std::nullopt;
}

bool SafetensorsFile::looks_like_safetensors(std::span<const std::byte> bytes) {
  if (bytes.size() < 9) return false;
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  if constexpr (std::endian::native == std::endian::big) n = byteswap(n);
  return n >= 2 && n <= kMaxHeaderSize && n <= bytes.size() - 8 &&
         static_cast<char>(bytes[8]) == '{';
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path, const Limits& limits) {
  return parse(Buffer::map_file(path), path.string(), limits);
}

SafetensorsFile SafetensorsFile::parse(Buffer bytes, std::string name, const Limits& limits) {
  SafetensorsFile file;
  file.name_ = std::move(name);
  file.bytes_ = std::move(bytes);
  const std::string& what = file.name_;

  ByteReader reader(file.bytes_.bytes(), what);
  if (reader.size() < 8) {
    fail("{}: not a safetensors file: {} bytes, fewer than the 8-byte header length", what,
         reader.size());
  }
  uint64_t n = reader.u64();
  if (n > kMaxHeaderSize) {
    throw LimitError(fmt::format("{}: header length {} exceeds the format's limit of {} bytes",
                                 what, n, kMaxHeaderSize));
  }
  if (n > reader.remaining()) {
    fail("{}: header length {} runs past the end of the file ({} bytes after the length)", what, n,
         reader.remaining());
  }
  std::string_view text = reader.take_string(n);
  if (text.empty() || text.front() != '{') {
    fail("{}: header must start with '{{', found {}", what,
         text.empty() ? std::string("nothing") : fmt::format("byte 0x{:02x}", text.front()));
  }
  nlohmann::json header = parse_header(text, what);
  if (!header.is_object()) fail("{}: header must be a JSON object", what);
  file.header_size_ = n;

  const uint64_t data_start = 8 + n;
  Buffer data = file.bytes_.slice(data_start, file.bytes_.size() - data_start, what);
  if (header.size() > limits.max_items) {
    throw LimitError(fmt::format("{}: {} header entries exceed the limit of {} (Limits::max_items)",
                                 what, header.size(), limits.max_items));
  }
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail("{}: __metadata__ must be an object of strings", what);
      for (const auto& [meta_key, meta_value] : value.items()) {
        if (!meta_value.is_string()) {
          fail("{}: __metadata__['{}'] must be a string, found {}", what, meta_key,
               meta_value.dump());
        }
        file.metadata_[meta_key] = meta_value.get<std::string>();
      }
      continue;
    }
    std::string where = fmt::format("{}: tensor '{}'", what, key);
    if (!value.is_object()) fail("{}: expected an object, found {}", where, value.dump());
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!value.contains(field)) fail("{}: missing '{}'", where, field);
    }
    const auto& dtype_json = value["dtype"];
    if (!dtype_json.is_string()) fail("{}: dtype must be a string", where);
    std::string dtype_text = dtype_json.get<std::string>();
    auto dtype = dtype_from_safetensors(dtype_text);
    if (!dtype) {
      throw UnsupportedError(fmt::format("{}: dtype '{}' is not supported", where, dtype_text));
    }
    const auto& shape_json = value["shape"];
    if (!shape_json.is_array()) fail("{}: shape must be an array", where);
    if (shape_json.size() > limits.max_rank) {
      throw LimitError(fmt::format("{}: rank {} exceeds the limit of {} (Limits::max_rank)", where,
                                   shape_json.size(), limits.max_rank));
    }
    Shape shape;
    for (const auto& d : shape_json) {
      shape.push_back(checked_cast<int64_t>(unsigned_of(d, where + ": shape"), where + ": shape"));
    }
    const auto& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2) {
      fail("{}: data_offsets must be [begin, end], found {}", where, offsets.dump());
    }
    uint64_t begin = unsigned_of(offsets[0], where + ": data_offsets");
    uint64_t end = unsigned_of(offsets[1], where + ": data_offsets");
    if (begin > end || end > data.size()) {
      fail("{}: data_offsets [{}, {}] outside the {}-byte data buffer", where, begin, end,
           data.size());
    }
    uint64_t need =
        checked_mul(static_cast<uint64_t>(checked_numel(shape, where)), dtype_size(*dtype), where);
    if (need != end - begin) {
      fail("{}: {} {} needs {} bytes, data_offsets [{}, {}] give {}", where, dtype_text,
           shape_to_string(shape), need, begin, end, end - begin);
    }
    Tensor tensor =
        Tensor::contiguous_view(data.slice(begin, end - begin, where), *dtype, shape, where);
    file.tensors_.push_back({key, dtype_text, std::move(tensor), begin, end});
  }

  // The buffer must be exactly the tensors, back to back: no holes where data could hide, no
  // two tensors sharing bytes.
  std::stable_sort(file.tensors_.begin(), file.tensors_.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const auto& t : file.tensors_) {
    if (t.begin != expected) {
      fail("{}: tensor '{}' starts at byte {} of the data buffer, expected {} ({})", what, t.name,
           t.begin, expected,
           t.begin < expected ? "it overlaps the previous tensor" : "there is a hole before it");
    }
    expected = t.end;
  }
  if (expected != data.size()) {
    fail("{}: tensors cover {} bytes but the data buffer holds {}", what, expected, data.size());
  }
  for (size_t i = 0; i < file.tensors_.size(); ++i) file.index_[file.tensors_[i].name] = i;
  return file;
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const Tensor& SafetensorsFile::at(std::string_view name) const {
  const SafetensorsTensor* t = find(name);
  if (t == nullptr) fail("{}: no tensor named '{}'", name_, name);
  return t->tensor;
}

namespace {

struct Planned {
  std::string_view name;
  std::string_view dtype;
  Tensor tensor;  // contiguous
  uint64_t begin = 0;
  uint64_t end = 0;
};

// The header and the layout of the data buffer, as the reference writer makes them.
std::string plan(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata,
                 std::vector<Planned>& planned) {
  std::set<std::string_view> names;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") fail("safetensors: '__metadata__' is reserved, not a tensor name");
    if (!names.insert(name).second) fail("safetensors: duplicate tensor name '{}'", name);
    auto dtype = safetensors_dtype_name(tensor.dtype());
    if (!dtype) {
      throw UnsupportedError(
          fmt::format("safetensors: tensor '{}' has dtype {}, which safetensors "
                      "cannot represent",
                      name, dtype_name(tensor.dtype())));
    }
    planned.push_back({name, *dtype, tensor.contiguous(), 0, 0});
  }
  std::sort(planned.begin(), planned.end(), [](const Planned& a, const Planned& b) {
    size_t ra = dtype_rank(a.tensor.dtype()), rb = dtype_rank(b.tensor.dtype());
    return ra != rb ? ra > rb : a.name < b.name;
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (auto& p : planned) {
    p.begin = offset;
    p.end = offset + p.tensor.nbytes();
    offset = p.end;
    header[std::string(p.name)] = {
        {"dtype", p.dtype}, {"shape", p.tensor.shape()}, {"data_offsets", {p.begin, p.end}}};
  }
  std::string text = header.dump();
  // Padding with spaces to a multiple of 8 keeps the data buffer 8-byte aligned in the file.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

std::array<std::byte, 8> le64(uint64_t value) {
  std::array<std::byte, 8> out{};
  for (size_t i = 0; i < 8; ++i) out[i] = static_cast<std::byte>(value >> (8 * i));
  return out;
}

std::span<const std::byte> tensor_bytes(const Tensor& t) {
  return {t.raw_data(), static_cast<size_t>(t.nbytes())};
}

}  // namespace

std::vector<std::byte> safetensors_to_bytes(const NamedTensors& tensors,
                                            const std::map<std::string, std::string>& metadata) {
  std::vector<Planned> planned;
  std::string header = plan(tensors, metadata, planned);
  uint64_t data_size = planned.empty() ? 0 : planned.back().end;
  std::vector<std::byte> out(8 + header.size() + data_size);
  auto length = le64(header.size());
  std::memcpy(out.data(), length.data(), length.size());
  std::memcpy(out.data() + 8, header.data(), header.size());
  for (const auto& p : planned) {
    auto b = tensor_bytes(p.tensor);
    if (!b.empty()) std::memcpy(out.data() + 8 + header.size() + p.begin, b.data(), b.size());
  }
  return out;
}

void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<Planned> planned;
  std::string header =
      with_context(path.string(), [&] { return plan(tensors, metadata, planned); });
  AtomicFile file(path);
  auto length = le64(header.size());
  file.write(length);
  file.write(std::as_bytes(std::span<const char>(header.data(), header.size())));
  for (const auto& p : planned) file.write(tensor_bytes(p.tensor));
  file.commit();
}

}  // namespace torchless::formats
