#include "torchless/formats/npy.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <set>

#include "formats/zip/atomic_file.h"
#include "torchless/core/byte_reader.h"
#include "torchless/core/checked.h"
#include "torchless/core/error.h"

namespace torchless::formats {
namespace {

constexpr std::string_view kMagic = "\x93NUMPY";
// numpy itself refuses headers over 10000 bytes unless told to trust the file; real headers
// are under 200 bytes. This bound only keeps hostile files from making the parser work hard.
constexpr uint64_t kMaxHeaderLength = 1 << 20;
constexpr int kMaxLiteralDepth = 16;

// The subset of Python literals an .npy header uses: a dict of str keys whose values are str,
// bool, None, int, or tuples/lists of those. Parsed, never evaluated.
struct Literal {
  enum class Kind { kStr, kBool, kNone, kInt, kTuple, kList, kDict } kind = Kind::kNone;
  std::string text;
  bool boolean = false;
  uint64_t integer = 0;
  std::vector<Literal> items;     // tuple, list; dict values
  std::vector<std::string> keys;  // dict keys, parallel to items
};

class LiteralParser {
 public:
  LiteralParser(std::string_view text, std::string_view what) : text_(text), what_(what) {}

  Literal parse_all() {
    Literal value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) error("unexpected text after the header dict");
    return value;
  }

 private:
  [[noreturn]] void error(std::string_view message) const {
    fail("{}: header at character {}: {} (header: {})", what_, pos_, message, text_.substr(0, 200));
  }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool consume(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool consume_word(std::string_view word) {
    skip_space();
    if (text_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }

  Literal parse_value(int depth) {
    if (depth > kMaxLiteralDepth) error("nested too deeply");
    skip_space();
    if (pos_ >= text_.size()) error("unexpected end of header");
    char c = text_[pos_];
    Literal v;
    if (c == '\'' || c == '"') {
      v.kind = Literal::Kind::kStr;
      v.text = parse_string();
    } else if (c == '{') {
      ++pos_;
      v.kind = Literal::Kind::kDict;
      while (!consume('}')) {
        skip_space();
        if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
          error("expected a string key");
        }
        std::string key = parse_string();
        if (!consume(':')) error("expected ':' after a key");
        v.keys.push_back(std::move(key));
        v.items.push_back(parse_value(depth + 1));
        if (!consume(',')) {
          if (!consume('}')) error("expected ',' or '}'");
          break;
        }
      }
    } else if (c == '(' || c == '[') {
      char close = c == '(' ? ')' : ']';
      ++pos_;
      v.kind = c == '(' ? Literal::Kind::kTuple : Literal::Kind::kList;
      while (!consume(close)) {
        v.items.push_back(parse_value(depth + 1));
        if (!consume(',')) {
          if (!consume(close)) error(fmt::format("expected ',' or '{}'", close));
          break;
        }
      }
    } else if (consume_word("True")) {
      v.kind = Literal::Kind::kBool;
      v.boolean = true;
    } else if (consume_word("False")) {
      v.kind = Literal::Kind::kBool;
    } else if (consume_word("None")) {
      v.kind = Literal::Kind::kNone;
    } else if (c >= '0' && c <= '9') {
      v.kind = Literal::Kind::kInt;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
        uint64_t digit = static_cast<uint64_t>(text_[pos_] - '0');
        if (v.integer > (UINT64_MAX - digit) / 10) error("integer too large");
        v.integer = v.integer * 10 + digit;
        ++pos_;
      }
      if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;  // Python 2 long
    } else {
      error(fmt::format("unexpected character '{}'", c));
    }
    return v;
  }

  std::string parse_string() {
    char quote = text_[pos_++];
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) error("unterminated string");
      char c = text_[pos_++];
      if (c == quote) break;
      if (c == '\\') {
        if (pos_ >= text_.size()) error("unterminated string");
        out.push_back(text_[pos_++]);
      } else {
        out.push_back(c);
      }
    }
    return out;
  }

  std::string_view text_;
  std::string_view what_;
  size_t pos_ = 0;
};

struct ParsedDescr {
  DType dtype;
  bool big_endian;
};

ParsedDescr parse_descr(const std::string& descr, std::string_view what) {
  if (descr.size() < 2) fail("{}: unknown dtype descr '{}'", what, descr);
  char order = descr[0];
  std::string_view type = std::string_view(descr).substr(1);
  if (order != '<' && order != '>' && order != '|' && order != '=') {
    fail("{}: dtype descr '{}' must start with a byte order (<, >, |, =)", what, descr);
  }
  if (type == "O" || type.starts_with("O")) {
    throw UnsupportedError(fmt::format(
        "{}: object arrays ('{}') hold pickled Python objects; refusing to load them (torchless "
        "never unpickles numpy object arrays)",
        what, descr));
  }
  static const std::map<std::string_view, DType> kTypes = {
      {"b1", DType::kBool},    {"?", DType::kBool},       {"u1", DType::kUInt8},
      {"i1", DType::kInt8},    {"i2", DType::kInt16},     {"i4", DType::kInt32},
      {"i8", DType::kInt64},   {"u2", DType::kUInt16},    {"u4", DType::kUInt32},
      {"u8", DType::kUInt64},  {"f2", DType::kFloat16},   {"f4", DType::kFloat32},
      {"f8", DType::kFloat64}, {"c8", DType::kComplex64}, {"c16", DType::kComplex128},
  };
  auto it = kTypes.find(type);
  if (it == kTypes.end()) {
    throw UnsupportedError(fmt::format(
        "{}: dtype '{}' is not supported (only bool, integers, float16/32/64, complex64/128)", what,
        descr));
  }
  return {it->second, order == '>' && dtype_size(it->second) > 1};
}

const Literal& field(const Literal& dict, std::string_view key, std::string_view what) {
  for (size_t i = 0; i < dict.keys.size(); ++i) {
    if (dict.keys[i] == key) return dict.items[i];
  }
  fail("{}: header has no '{}' key", what, key);
}

Buffer byteswapped(const Buffer& data, DType dtype) {
  size_t width = dtype_is_complex(dtype) ? dtype_size(dtype) / 2 : dtype_size(dtype);
  std::vector<std::byte> out(data.bytes().begin(), data.bytes().end());
  for (size_t i = 0; i + width <= out.size(); i += width) {
    std::reverse(out.begin() + static_cast<std::ptrdiff_t>(i),
                 out.begin() + static_cast<std::ptrdiff_t>(i + width));
  }
  return Buffer::adopt(std::move(out));
}

std::string_view npy_descr(DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return "|b1";
    case DType::kUInt8:
      return "|u1";
    case DType::kInt8:
      return "|i1";
    case DType::kInt16:
      return "<i2";
    case DType::kUInt16:
      return "<u2";
    case DType::kInt32:
      return "<i4";
    case DType::kUInt32:
      return "<u4";
    case DType::kInt64:
      return "<i8";
    case DType::kUInt64:
      return "<u8";
    case DType::kFloat16:
      return "<f2";
    case DType::kFloat32:
      return "<f4";
    case DType::kFloat64:
      return "<f8";
    case DType::kComplex64:
      return "<c8";
    case DType::kComplex128:
      return "<c16";
    default:
      throw UnsupportedError(fmt::format("npy: numpy has no dtype for {}", dtype_name(dtype)));
  }
}

std::string npy_header(const Tensor& tensor) {
  std::string shape = "(";
  for (size_t i = 0; i < tensor.rank(); ++i) {
    if (i > 0) shape += ", ";
    shape += std::to_string(tensor.dim(i));
  }
  if (tensor.rank() == 1) shape += ",";
  shape += ")";
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                                 npy_descr(tensor.dtype()), shape);
  // numpy pads with spaces and ends with '\n' so that the data starts at a multiple of 64.
  size_t total = kMagic.size() + 2 + 2 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::string out(kMagic);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xFF);
  out += static_cast<char>(dict.size() >> 8);
  out += dict;
  return out;
}

}  // namespace

bool looks_like_npy(std::span<const std::byte> bytes) {
  return bytes.size() >= kMagic.size() && std::memcmp(bytes.data(), kMagic.data(), 6) == 0;
}

NpyArray read_npy(Buffer bytes, std::string_view name, const Limits& limits) {
  std::string what(name);
  ByteReader reader(bytes.bytes(), what);
  if (!looks_like_npy(bytes.bytes())) {
    fail("{}: not an .npy file: expected the magic \\x93NUMPY at offset 0", what);
  }
  reader.skip(kMagic.size());
  NpyArray array;
  array.major_version = reader.u8();
  array.minor_version = reader.u8();
  uint64_t header_length = 0;
  if (array.major_version == 1) {
    header_length = reader.u16();
  } else if (array.major_version == 2 || array.major_version == 3) {
    header_length = reader.u32();
  } else {
    throw UnsupportedError(
        fmt::format("{}: .npy format version {}.{} is not supported (1.0, 2.0, "
                    "3.0 are)",
                    what, array.major_version, array.minor_version));
  }
  if (header_length > kMaxHeaderLength) {
    throw LimitError(fmt::format("{}: header length {} exceeds the limit of {} bytes", what,
                                 header_length, kMaxHeaderLength));
  }
  if (header_length > reader.remaining()) {
    fail("{}: header length {} runs past the end of the file ({} bytes left)", what, header_length,
         reader.remaining());
  }
  std::string_view text = reader.take_string(header_length);
  Literal header = LiteralParser(text, what).parse_all();
  if (header.kind != Literal::Kind::kDict) fail("{}: header is not a dict: {}", what, text);
  std::set<std::string> keys;
  for (const auto& k : header.keys) {
    if (k != "descr" && k != "fortran_order" && k != "shape") {
      fail("{}: unexpected header key '{}' (expected descr, fortran_order, shape)", what, k);
    }
    if (!keys.insert(k).second) fail("{}: header key '{}' appears twice", what, k);
  }
  const Literal& descr = field(header, "descr", what);
  if (descr.kind != Literal::Kind::kStr) {
    throw UnsupportedError(
        fmt::format("{}: structured dtypes (descr is a list of fields) are not supported", what));
  }
  const Literal& fortran = field(header, "fortran_order", what);
  if (fortran.kind != Literal::Kind::kBool) fail("{}: fortran_order must be True or False", what);
  const Literal& shape_literal = field(header, "shape", what);
  if (shape_literal.kind != Literal::Kind::kTuple) fail("{}: shape must be a tuple", what);
  if (shape_literal.items.size() > limits.max_rank) {
    throw LimitError(fmt::format("{}: rank {} exceeds the limit of {} (Limits::max_rank)", what,
                                 shape_literal.items.size(), limits.max_rank));
  }
  Shape shape;
  for (const auto& d : shape_literal.items) {
    if (d.kind != Literal::Kind::kInt) fail("{}: shape must hold integers", what);
    shape.push_back(checked_cast<int64_t>(d.integer, what + ": shape"));
  }
  array.descr = descr.text;
  array.fortran_order = fortran.boolean;
  ParsedDescr parsed = parse_descr(descr.text, what);

  uint64_t need = checked_mul(static_cast<uint64_t>(checked_numel(shape, what)),
                              dtype_size(parsed.dtype), what);
  if (need != reader.remaining()) {
    fail("{}: {} {} needs {} bytes of data after the {}-byte header, found {}", what, descr.text,
         shape_to_string(shape), need, reader.position(), reader.remaining());
  }
  Buffer data = bytes.slice(reader.position(), need, what);
  if (parsed.big_endian) {
    data = byteswapped(data, parsed.dtype);
    array.byteswapped = true;
  }
  std::vector<int64_t> strides = contiguous_strides(shape);
  if (array.fortran_order) {
    int64_t stride = 1;
    for (size_t i = 0; i < shape.size(); ++i) {
      strides[i] = stride;
      stride *= std::max<int64_t>(shape[i], 1);
    }
  }
  array.tensor =
      Tensor::view(std::move(data), parsed.dtype, std::move(shape), std::move(strides), 0, what);
  return array;
}

NpyArray load_npy(const std::filesystem::path& path, const Limits& limits) {
  return read_npy(Buffer::map_file(path), path.string(), limits);
}

std::vector<std::byte> npy_to_bytes(const Tensor& tensor) {
  std::string header = npy_header(tensor);
  std::vector<std::byte> out;
  auto h = std::as_bytes(std::span<const char>(header.data(), header.size()));
  out.insert(out.end(), h.begin(), h.end());
  auto data = tensor.to_bytes();
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void save_npy(const std::filesystem::path& path, const Tensor& tensor) {
  std::string header = with_context(path.string(), [&] { return npy_header(tensor); });
  Tensor contiguous = tensor.contiguous();
  AtomicFile file(path);
  file.write(std::as_bytes(std::span<const char>(header.data(), header.size())));
  file.write({contiguous.raw_data(), static_cast<size_t>(contiguous.nbytes())});
  file.commit();
}

NpzArchive NpzArchive::open(const std::filesystem::path& path, const Limits& limits) {
  return parse(Buffer::map_file(path), path.string(), limits);
}

NpzArchive NpzArchive::parse(Buffer bytes, std::string name, const Limits& limits) {
  NpzArchive archive(ZipArchive::parse(std::move(bytes), std::move(name), limits));
  archive.limits_ = limits;
  for (const auto& entry : archive.zip_.entries()) {
    if (entry.name.size() > 4 && entry.name.ends_with(".npy")) {
      archive.names_.push_back(entry.name.substr(0, entry.name.size() - 4));
    }
  }
  return archive;
}

NpyArray NpzArchive::read(std::string_view name) const {
  const ZipEntry* entry = zip_.find(std::string(name) + ".npy");
  if (entry == nullptr) fail("{}: no array named '{}'", zip_.name(), name);
  return read_npy(zip_.read(*entry), zip_.name() + ": " + entry->name, limits_);
}

void save_npz(const std::filesystem::path& path,
              const std::vector<std::pair<std::string, Tensor>>& arrays) {
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<Tensor> contiguous;
  std::set<std::string> names;
  for (const auto& array : arrays) {
    const std::string& name = array.first;
    if (!names.insert(name).second) fail("{}: duplicate array name '{}'", path.string(), name);
    headers.emplace_back(name + ".npy", with_context(path.string() + ": " + name,
                                                     [&] { return npy_header(array.second); }));
    contiguous.push_back(array.second.contiguous());
  }
  ZipWriter writer(path);
  for (size_t i = 0; i < headers.size(); ++i) {
    const std::string& header = headers[i].second;
    std::span<const std::byte> pieces[] = {
        std::as_bytes(std::span<const char>(header.data(), header.size())),
        {contiguous[i].raw_data(), static_cast<size_t>(contiguous[i].nbytes())}};
    writer.add(headers[i].first, std::span<const std::span<const std::byte>>(pieces));
  }
  writer.finish();
}

}  // namespace torchless::formats
