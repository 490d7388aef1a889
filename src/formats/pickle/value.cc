#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "torchless/core/error.h"
#include "torchless/formats/pickle.h"

namespace torchless::pickle {

std::string_view kind_name(Kind kind) {
  switch (kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
    case Kind::kBigInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kComplex:
      return "complex";
    case Kind::kStr:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kByteArray:
      return "bytearray";
    case Kind::kList:
      return "list";
    case Kind::kTuple:
      return "tuple";
    case Kind::kDict:
      return "dict";
    case Kind::kSet:
      return "set";
    case Kind::kFrozenSet:
      return "frozenset";
    case Kind::kGlobal:
      return "global";
    case Kind::kDType:
      return "dtype";
    case Kind::kDevice:
      return "device";
    case Kind::kStorage:
      return "storage";
    case Kind::kTensor:
      return "tensor";
    case Kind::kScalar:
      return "numpy scalar";
    case Kind::kSparseTensor:
      return "sparse tensor";
    case Kind::kObject:
      return "object";
  }
  return "?";
}

ValuePtr Value::none() {
  return std::make_shared<Value>();
}

ValuePtr Value::from_bool(bool v) {
  auto p = std::make_shared<Value>();
  p->kind = Kind::kBool;
  p->boolean = v;
  return p;
}

ValuePtr Value::from_int(int64_t v) {
  auto p = std::make_shared<Value>();
  p->kind = Kind::kInt;
  p->integer = v;
  return p;
}

ValuePtr Value::from_float(double v) {
  auto p = std::make_shared<Value>();
  p->kind = Kind::kFloat;
  p->real = v;
  return p;
}

ValuePtr Value::from_str(std::string v) {
  auto p = std::make_shared<Value>();
  p->kind = Kind::kStr;
  p->text = std::move(v);
  return p;
}

ValuePtr Value::from_bytes(std::string v) {
  auto p = std::make_shared<Value>();
  p->kind = Kind::kBytes;
  p->text = std::move(v);
  return p;
}

ValuePtr Value::list(std::vector<ValuePtr> items) {
  auto p = std::make_shared<Value>();
  p->kind = Kind::kList;
  p->items = std::move(items);
  return p;
}

ValuePtr Value::tuple(std::vector<ValuePtr> items) {
  auto p = std::make_shared<Value>();
  p->kind = Kind::kTuple;
  p->items = std::move(items);
  return p;
}

ValuePtr Value::dict(std::string type_name) {
  auto p = std::make_shared<Value>();
  p->kind = Kind::kDict;
  p->type_name = std::move(type_name);
  return p;
}

ValuePtr Value::from_dtype(DType dtype) {
  auto p = std::make_shared<Value>();
  p->kind = Kind::kDType;
  p->dtype = dtype;
  p->type_name = fmt::format("torch.{}", dtype_name(dtype));
  return p;
}

ValuePtr Value::from_tensor(Tensor t, bool requires_grad, bool is_parameter) {
  auto p = std::make_shared<Value>();
  p->kind = Kind::kTensor;
  auto info = std::make_shared<TensorInfo>();
  info->dtype = t.dtype();
  info->shape = t.shape();
  info->strides = t.strides();
  info->storage_offset = t.storage_offset();
  info->quantization = t.quantization();
  info->requires_grad = requires_grad;
  info->is_parameter = is_parameter;
  info->tensor = std::move(t);
  info->bound = true;
  p->tensor = std::move(info);
  return p;
}

namespace {

std::string float_key(double v, const Value& value) {
  if (std::isnan(v)) return fmt::format("p{}", static_cast<const void*>(&value));
  // Python: hash(2.0) == hash(2) and 2.0 == 2, so integral floats share the int key.
  if (v == std::trunc(v) && std::fabs(v) < 9.2e18) {
    return fmt::format("i{}", static_cast<int64_t>(v));
  }
  return fmt::format("f{}", v);
}

// Keys longer than this are refused: it bounds the work of one dict/set insertion, which a
// hostile pickle could otherwise repeat with a huge (or exponentially shared) tuple key.
constexpr size_t kMaxKeyBytes = 64 * 1024;

void check_key_size(size_t size) {
  if (size > kMaxKeyBytes) {
    throw LimitError(fmt::format("dict key or set item larger than {} bytes", kMaxKeyBytes));
  }
}

std::string hash_key_at(const Value& value, uint32_t depth) {
  if (depth > 100) throw LimitError("dict key nested deeper than 100 levels");
  switch (value.kind) {
    case Kind::kNone:
      return "N";
    case Kind::kBool:
      return value.boolean ? "i1" : "i0";
    case Kind::kInt:
      return fmt::format("i{}", value.integer);
    case Kind::kBigInt:
      return "i" + value.text;
    case Kind::kFloat:
      return float_key(value.real, value);
    case Kind::kComplex:
      if (value.imag == 0) return float_key(value.real, value);
      return fmt::format("c{},{}", value.real, value.imag);
    case Kind::kStr:
    case Kind::kBytes: {
      if (value.text.size() > kMaxKeyBytes) check_key_size(value.text.size());
      return fmt::format("{}{}:", value.kind == Kind::kStr ? 's' : 'b', value.text.size()) +
             value.text;
    }
    case Kind::kTuple: {
      std::string key = "t(";
      for (const auto& item : value.items) {
        auto k = hash_key_at(*item, depth + 1);
        key += fmt::format("{}:", k.size());
        key += k;
        check_key_size(key.size());
      }
      return key + ")";
    }
    case Kind::kFrozenSet: {
      std::vector<std::string> keys;
      size_t total = 0;
      for (const auto& item : value.items) {
        keys.push_back(hash_key_at(*item, depth + 1));
        total += keys.back().size();
        if (total > kMaxKeyBytes) check_key_size(total);
      }
      std::sort(keys.begin(), keys.end());
      std::string key = "z(";
      for (const auto& k : keys) key += fmt::format("{}:", k.size()) + k;
      return key + ")";
    }
    case Kind::kGlobal:
    case Kind::kDType:
      return "g" + value.type_name;
    case Kind::kDevice:
      return "d" + value.text;
    case Kind::kList:
    case Kind::kDict:
    case Kind::kSet:
    case Kind::kByteArray:
      fail("unhashable type '{}' used as a dict key or set item", kind_name(value.kind));
    default:
      // Tensors, storages and records hash by identity in Python.
      return fmt::format("p{}", static_cast<const void*>(&value));
  }
}

}  // namespace

std::string hash_key(const Value& value) {
  return hash_key_at(value, 0);
}

void Value::set_item(ValuePtr key, ValuePtr value) {
  auto k = hash_key(*key);
  auto [it, inserted] = index_.try_emplace(std::move(k), entries.size());
  if (inserted) {
    entries.emplace_back(std::move(key), std::move(value));
  } else {
    entries[it->second].second = std::move(value);
  }
}

void Value::add_item(ValuePtr item) {
  auto k = hash_key(*item);
  auto [it, inserted] = index_.try_emplace(std::move(k), items.size());
  if (inserted) items.push_back(std::move(item));
}

ValuePtr Value::get(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k->kind == Kind::kStr && k->text == key) return v;
  }
  return nullptr;
}

std::optional<int64_t> Value::as_int() const {
  if (kind == Kind::kInt) return integer;
  if (kind == Kind::kBool) return boolean ? 1 : 0;
  return std::nullopt;
}

std::optional<double> Value::as_double() const {
  switch (kind) {
    case Kind::kFloat:
      return real;
    case Kind::kInt:
      return static_cast<double>(integer);
    case Kind::kBool:
      return boolean ? 1.0 : 0.0;
    case Kind::kTensor:
    case Kind::kScalar:
      if (tensor && tensor->bound && tensor->tensor.numel() == 1 &&
          !dtype_is_complex(tensor->tensor.dtype())) {
        try {
          return tensor->tensor.to_double_vector().at(0);
        } catch (const Error&) {
          return std::nullopt;
        }
      }
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

namespace {

void quote_into(std::string& out, std::string_view text) {
  out += '\'';
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  out += '\'';
}

// Iterative-free but bounded: depth and output length cap the recursion and the work.
void repr_into(const Value& v, std::string& out, size_t max_chars, uint32_t depth,
               std::unordered_set<const Value*>& open) {
  if (out.size() > max_chars) return;
  if (depth > 20) {
    out += "...";
    return;
  }
  if (open.count(&v) != 0) {
    out += "[...]";
    return;
  }
  auto seq = [&](const char* l, const char* r, const std::vector<ValuePtr>& items) {
    open.insert(&v);
    out += l;
    for (size_t i = 0; i < items.size(); ++i) {
      if (out.size() > max_chars) {
        out += "...";
        break;
      }
      if (i) out += ", ";
      repr_into(*items[i], out, max_chars, depth + 1, open);
    }
    if (v.kind == Kind::kTuple && items.size() == 1) out += ",";
    out += r;
    open.erase(&v);
  };
  switch (v.kind) {
    case Kind::kNone:
      out += "None";
      return;
    case Kind::kBool:
      out += v.boolean ? "True" : "False";
      return;
    case Kind::kInt:
      out += fmt::format("{}", v.integer);
      return;
    case Kind::kBigInt:
      out += v.text;
      return;
    case Kind::kFloat:
      out += fmt::format("{}", v.real);
      return;
    case Kind::kComplex:
      out += fmt::format("({}{:+}j)", v.real, v.imag);
      return;
    case Kind::kStr:
      quote_into(out, v.text);
      return;
    case Kind::kBytes:
      out += 'b';
      quote_into(out, v.text);
      return;
    case Kind::kByteArray:
      out += "bytearray(b";
      quote_into(out, v.text);
      out += ")";
      return;
    case Kind::kList:
      seq("[", "]", v.items);
      return;
    case Kind::kTuple:
      if (!v.type_name.empty()) out += v.type_name;
      seq("(", ")", v.items);
      return;
    case Kind::kSet:
      seq("{", "}", v.items);
      return;
    case Kind::kFrozenSet:
      seq("frozenset({", "})", v.items);
      return;
    case Kind::kDict: {
      if (!v.type_name.empty()) out += v.type_name + "(";
      out += "{";
      open.insert(&v);
      for (size_t i = 0; i < v.entries.size(); ++i) {
        if (out.size() > max_chars) {
          out += "...";
          break;
        }
        if (i) out += ", ";
        repr_into(*v.entries[i].first, out, max_chars, depth + 1, open);
        out += ": ";
        repr_into(*v.entries[i].second, out, max_chars, depth + 1, open);
      }
      open.erase(&v);
      out += "}";
      if (!v.type_name.empty()) out += ")";
      return;
    }
    case Kind::kGlobal:
      out += v.type_name;
      return;
    case Kind::kDType:
      out += v.type_name;
      return;
    case Kind::kDevice:
      out += fmt::format("device('{}')", v.text);
      return;
    case Kind::kStorage:
      out += fmt::format("{}(key='{}', numel={})", v.storage ? v.storage->type_name : "storage",
                         v.storage ? v.storage->key : "", v.storage ? v.storage->numel : 0);
      return;
    case Kind::kTensor:
    case Kind::kScalar:
      if (v.tensor) {
        out += fmt::format("{}({}{})", v.kind == Kind::kScalar ? "scalar" : "tensor",
                           dtype_name(v.tensor->dtype), shape_to_string(v.tensor->shape));
      } else {
        out += "tensor(?)";
      }
      return;
    case Kind::kSparseTensor:
      out += fmt::format("sparse_tensor({})", v.type_name);
      return;
    case Kind::kObject:
      out += "<" + v.type_name + " object>";
      return;
  }
}

}  // namespace

std::string Value::repr(size_t max_chars) const {
  std::string out;
  std::unordered_set<const Value*> open;
  repr_into(*this, out, max_chars, 0, open);
  if (out.size() > max_chars + 3) {
    out.resize(max_chars);
    out += "...";
  }
  return out;
}

}  // namespace torchless::pickle
