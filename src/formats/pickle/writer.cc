// The pickle writer: the value tree back to the opcodes CPython's Pickler emits for the same
// objects (protocol 2 as torch.save writes data.pkl; protocol 4 with frames), so that
// pickle.loads and torch.load read the result back to equal objects.
#include <fmt/format.h>

#include <bit>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "formats/pickle/opcodes.h"
#include "torchless/core/error.h"
#include "torchless/formats/pickle.h"

namespace torchless::pickle {
namespace {

std::string_view storage_class(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
      return "DoubleStorage";
    case DType::kFloat32:
      return "FloatStorage";
    case DType::kFloat16:
      return "HalfStorage";
    case DType::kBFloat16:
      return "BFloat16Storage";
    case DType::kInt64:
      return "LongStorage";
    case DType::kInt32:
      return "IntStorage";
    case DType::kInt16:
      return "ShortStorage";
    case DType::kInt8:
      return "CharStorage";
    case DType::kUInt8:
      return "ByteStorage";
    case DType::kBool:
      return "BoolStorage";
    case DType::kComplex128:
      return "ComplexDoubleStorage";
    case DType::kComplex64:
      return "ComplexFloatStorage";
    case DType::kQUInt8:
      return "QUInt8Storage";
    case DType::kQInt8:
      return "QInt8Storage";
    case DType::kQInt32:
      return "QInt32Storage";
    case DType::kQUInt4x2:
      return "QUInt4x2Storage";
    case DType::kQUInt2x4:
      return "QUInt2x4Storage";
    default:
      fail("pickle writer: dtype {} has no torch typed storage class (torch 1.13 cannot load it)",
           dtype_name(dtype));
  }
}

// Decimal text -> little-endian two's complement, minimal length (as pickle's encode_long).
std::string decimal_to_twos_complement(std::string_view text) {
  bool negative = !text.empty() && text[0] == '-';
  if (negative || (!text.empty() && text[0] == '+')) text.remove_prefix(1);
  std::vector<uint8_t> mag;  // little-endian magnitude
  for (char c : text) {
    if (c < '0' || c > '9') fail("pickle writer: bad integer text '{}'", text);
    unsigned carry = static_cast<unsigned>(c - '0');
    for (auto& b : mag) {
      unsigned v = b * 10u + carry;
      b = static_cast<uint8_t>(v);
      carry = v >> 8;
    }
    while (carry) {
      mag.push_back(static_cast<uint8_t>(carry));
      carry >>= 8;
    }
  }
  mag.push_back(0);  // room for the sign bit
  if (negative) {
    unsigned carry = 1;
    for (auto& b : mag) {
      unsigned v = static_cast<uint8_t>(~b) + carry;
      b = static_cast<uint8_t>(v);
      carry = v >> 8;
    }
  }
  // Trim redundant sign bytes.
  while (mag.size() > 1) {
    uint8_t last = mag.back();
    uint8_t prev = mag[mag.size() - 2];
    if ((last == 0 && !(prev & 0x80)) || (last == 0xFF && (prev & 0x80))) {
      mag.pop_back();
    } else {
      break;
    }
  }
  return std::string(mag.begin(), mag.end());
}

class Pickler {
 public:
  explicit Pickler(const WriteOptions& options) : options_(options) {
    if (options.protocol != 2 && options.protocol != 4) {
      fail("pickle writer: protocol {} is not supported (2 or 4)", options.protocol);
    }
  }

  std::string run(const Value& root) {
    op(Op::PROTO);
    byte(static_cast<uint8_t>(options_.protocol));
    commit_header();
    save(root);
    op(Op::STOP);
    commit_frame(true);
    return std::move(out_);
  }

 private:
  bool p4() const { return options_.protocol >= 4; }

  // ---- output, with protocol-4 framing --------------------------------------------------------
  void op(uint8_t code) { cur_ += static_cast<char>(code); }
  void byte(uint8_t b) { cur_ += static_cast<char>(b); }
  void raw(std::string_view s) { cur_.append(s); }
  template <typename T>
  void le(T v) {
    for (size_t i = 0; i < sizeof(T); ++i) cur_ += static_cast<char>((v >> (8 * i)) & 0xFF);
  }
  void commit_header() {
    out_ += cur_;
    cur_.clear();
  }
  // Frames close at opcode boundaries once they reach 64 KiB, as CPython's _Framer does.
  void commit_frame(bool force) {
    if (cur_.empty()) return;
    if (!force && cur_.size() < 65536) return;
    if (p4()) {
      out_ += static_cast<char>(Op::FRAME);
      uint64_t n = cur_.size();
      for (size_t i = 0; i < 8; ++i) out_ += static_cast<char>((n >> (8 * i)) & 0xFF);
    }
    out_ += cur_;
    cur_.clear();
  }

  // ---- memo ---------------------------------------------------------------------------------
  void memoize(const Value* v) {
    uint32_t index = next_memo_++;
    memo_[v] = index;
    emit_put(index);
  }
  void emit_put(uint32_t index) {
    if (p4()) {
      op(Op::MEMOIZE);
    } else if (index < 256) {
      op(Op::BINPUT);
      byte(static_cast<uint8_t>(index));
    } else {
      op(Op::LONG_BINPUT);
      le<uint32_t>(index);
    }
  }
  bool get_memo(const Value* v) {
    auto it = memo_.find(v);
    if (it == memo_.end()) return false;
    if (it->second < 256) {
      op(Op::BINGET);
      byte(static_cast<uint8_t>(it->second));
    } else {
      op(Op::LONG_BINGET);
      le<uint32_t>(it->second);
    }
    return true;
  }

  // ---- scalars ------------------------------------------------------------------------------
  void save_int(int64_t v) {
    if (v >= 0 && v < 256) {
      op(Op::BININT1);
      byte(static_cast<uint8_t>(v));
    } else if (v >= 0 && v < 65536) {
      op(Op::BININT2);
      le<uint16_t>(static_cast<uint16_t>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op(Op::BININT);
      le<uint32_t>(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      save_long_bytes(decimal_to_twos_complement(fmt::format("{}", v)));
    }
  }
  void save_long_bytes(const std::string& bytes) {
    if (bytes.size() < 256) {
      op(Op::LONG1);
      byte(static_cast<uint8_t>(bytes.size()));
    } else {
      op(Op::LONG4);
      le<uint32_t>(static_cast<uint32_t>(bytes.size()));
    }
    raw(bytes);
  }
  void save_float(double v) {
    op(Op::BINFLOAT);
    uint64_t bits = std::bit_cast<uint64_t>(v);
    for (int i = 7; i >= 0; --i) byte(static_cast<uint8_t>((bits >> (8 * i)) & 0xFF));
  }
  void save_str_raw(std::string_view s) {
    if (p4() && s.size() < 256) {
      op(Op::SHORT_BINUNICODE);
      byte(static_cast<uint8_t>(s.size()));
    } else {
      if (s.size() > UINT32_MAX) fail("pickle writer: str of {} bytes is too long", s.size());
      op(Op::BINUNICODE);
      le<uint32_t>(static_cast<uint32_t>(s.size()));
    }
    raw(s);
  }
  void save_global(std::string_view module, std::string_view name) {
    std::string key = std::string(module) + "\n" + std::string(name);
    auto it = globals_memo_.find(key);
    if (it != globals_memo_.end()) {
      if (it->second < 256) {
        op(Op::BINGET);
        byte(static_cast<uint8_t>(it->second));
      } else {
        op(Op::LONG_BINGET);
        le<uint32_t>(it->second);
      }
      return;
    }
    op(Op::GLOBAL);
    raw(module);
    raw("\n");
    raw(name);
    raw("\n");
    // Globals share the memo index space with values.
    uint32_t index = next_memo_++;
    globals_memo_[key] = index;
    emit_put(index);
  }
  std::string_view builtins() const { return p4() ? "builtins" : "__builtin__"; }
  static std::string latin1_as_utf8(std::string_view bytes) {
    std::string out;
    for (char c : bytes) {
      auto u = static_cast<unsigned char>(c);
      if (u < 0x80) {
        out += c;
      } else {
        out += static_cast<char>(0xC0 | (u >> 6));
        out += static_cast<char>(0x80 | (u & 0x3F));
      }
    }
    return out;
  }
  void save_bytes(std::string_view text) {
    if (p4()) {
      if (text.size() < 256) {
        op(Op::SHORT_BINBYTES);
        byte(static_cast<uint8_t>(text.size()));
      } else if (text.size() <= UINT32_MAX) {
        op(Op::BINBYTES);
        le<uint32_t>(static_cast<uint32_t>(text.size()));
      } else {
        op(Op::BINBYTES8);
        le<uint64_t>(text.size());
      }
      raw(text);
    } else {
      // Protocol 2 has no bytes opcode: Python 3 writes _codecs.encode(latin1 text, 'latin1').
      save_global("_codecs", "encode");
      save_str_raw(latin1_as_utf8(text));
      save_str_raw("latin1");
      op(Op::TUPLE2);
      op(Op::REDUCE);
    }
  }

  // ---- containers ---------------------------------------------------------------------------
  void save_items(const std::vector<ValuePtr>& items, uint8_t batch_op) {
    for (size_t i = 0; i < items.size(); i += 1000) {
      size_t end = std::min(items.size(), i + 1000);
      if (end - i == 1 && batch_op == Op::APPENDS) {
        save(*items[i]);
        op(Op::APPEND);
        continue;
      }
      op(Op::MARK);
      for (size_t k = i; k < end; ++k) save(*items[k]);
      op(batch_op);
    }
  }
  void save_entries(const std::vector<std::pair<ValuePtr, ValuePtr>>& entries) {
    for (size_t i = 0; i < entries.size(); i += 1000) {
      size_t end = std::min(entries.size(), i + 1000);
      if (end - i == 1) {
        save(*entries[i].first);
        save(*entries[i].second);
        op(Op::SETITEM);
        continue;
      }
      op(Op::MARK);
      for (size_t k = i; k < end; ++k) {
        save(*entries[k].first);
        save(*entries[k].second);
      }
      op(Op::SETITEMS);
    }
  }
  void save_tuple_items(const std::vector<ValuePtr>& items) {
    if (items.empty()) {
      op(Op::EMPTY_TUPLE);
      return;
    }
    if (items.size() <= 3) {
      for (const auto& item : items) save(*item);
      op(static_cast<uint8_t>(Op::TUPLE1 + items.size() - 1));
      return;
    }
    op(Op::MARK);
    for (const auto& item : items) save(*item);
    op(Op::TUPLE);
  }
  void save_dict(const Value& v) {
    const std::string& t = v.type_name;
    if (t.empty()) {
      op(Op::EMPTY_DICT);
      memoize(&v);
    } else if (t == "collections.OrderedDict") {
      save_global("collections", "OrderedDict");
      op(Op::EMPTY_TUPLE);
      op(Op::REDUCE);
      memoize(&v);
    } else if (t == "collections.Counter") {
      save_global("collections", "Counter");
      op(Op::EMPTY_TUPLE);
      op(Op::REDUCE);
      memoize(&v);
    } else if (t == "collections.defaultdict") {
      save_global("collections", "defaultdict");
      if (v.args && !v.args->items.empty()) {
        save_tuple_items(v.args->items);
      } else {
        op(Op::EMPTY_TUPLE);
      }
      op(Op::REDUCE);
      memoize(&v);
    } else {
      fail("pickle writer: dict type {} is not supported", t);
    }
    save_entries(v.entries);
    if (v.state && v.state->kind == Kind::kDict && !v.state->entries.empty()) {
      save(*v.state);
      op(Op::BUILD);
    }
  }

  // ---- tensors ------------------------------------------------------------------------------
  void save_ordered_dict_empty() {
    save_global("collections", "OrderedDict");
    op(Op::EMPTY_TUPLE);
    op(Op::REDUCE);
  }
  void save_int_tuple(const std::vector<int64_t>& v) {
    std::vector<ValuePtr> items;
    for (int64_t x : v) items.push_back(Value::from_int(x));
    save_tuple_items(items);
  }
  void save_storage_pid(const Tensor& t) {
    if (!options_.storage_ref) {
      fail("pickle writer: a tensor needs a storage_ref to be pickled (use torch_file::save)");
    }
    StorageRef ref = options_.storage_ref(t);
    op(Op::MARK);
    save_str_raw("storage");
    save_global("torch", storage_class(t.dtype()));
    save_str_raw(ref.key);
    save_str_raw(ref.location);
    save_int(static_cast<int64_t>(ref.numel));
    op(Op::TUPLE);
    op(Op::BINPERSID);
  }
  void save_plain_tensor(const Tensor& t, bool requires_grad) {
    const auto& q = t.quantization();
    if (q) {
      save_global("torch._utils", "_rebuild_qtensor");
      op(Op::MARK);
      save_storage_pid(t);
      save_int(t.storage_offset());
      save_int_tuple(t.shape());
      save_int_tuple(t.strides());
      if (q->scheme == Quantization::Scheme::kPerTensorAffine) {
        save_global("torch", "per_tensor_affine");
        save_float(q->scale);
        save_int(q->zero_point);
        op(Op::TUPLE3);
      } else {
        op(Op::MARK);
        save_global("torch", "per_channel_affine");
        Tensor scales = Tensor::from_vector(q->scales, {static_cast<int64_t>(q->scales.size())});
        Tensor zps =
            Tensor::from_vector(q->zero_points, {static_cast<int64_t>(q->zero_points.size())});
        save_plain_tensor(scales, false);
        save_plain_tensor(zps, false);
        save_int(q->axis);
        op(Op::TUPLE);
      }
      save_bool(requires_grad);
      save_ordered_dict_empty();
      op(Op::TUPLE);
      op(Op::REDUCE);
      return;
    }
    save_global("torch._utils", "_rebuild_tensor_v2");
    op(Op::MARK);
    save_storage_pid(t);
    save_int(t.storage_offset());
    save_int_tuple(t.shape());
    save_int_tuple(t.strides());
    save_bool(requires_grad);
    save_ordered_dict_empty();
    op(Op::TUPLE);
    op(Op::REDUCE);
  }
  void save_bool(bool b) { op(b ? Op::NEWTRUE : Op::NEWFALSE); }
  void save_tensor(const Value& v) {
    if (!v.tensor || !v.tensor->bound) fail("pickle writer: tensor without data");
    const TensorInfo& info = *v.tensor;
    if (info.is_parameter) {
      save_global("torch._utils", "_rebuild_parameter");
      save_plain_tensor(info.tensor, false);
      save_bool(info.requires_grad);
      save_ordered_dict_empty();
      op(Op::TUPLE3);
      op(Op::REDUCE);
    } else {
      save_plain_tensor(info.tensor, info.requires_grad);
    }
    memoize(&v);
  }

  // ---- dispatch -----------------------------------------------------------------------------
  void save(const Value& v) {
    if (++depth_ > 1000) fail("pickle writer: values nested deeper than 1000 levels");
    save_inner(v);
    --depth_;
    commit_frame(false);
  }
  void save_inner(const Value& v) {
    switch (v.kind) {
      case Kind::kNone:
        op(Op::NONE);
        return;
      case Kind::kBool:
        save_bool(v.boolean);
        return;
      case Kind::kInt:
        save_int(v.integer);
        return;
      case Kind::kBigInt:
        save_long_bytes(decimal_to_twos_complement(v.text));
        return;
      case Kind::kFloat:
        save_float(v.real);
        return;
      default:
        break;
    }
    if (get_memo(&v)) return;
    if (!in_progress_.insert(&v).second) {
      fail("pickle writer: the value tree contains a reference cycle");
    }
    switch (v.kind) {
      case Kind::kComplex:
        save_global(builtins(), "complex");
        save_float(v.real);
        save_float(v.imag);
        op(Op::TUPLE2);
        op(Op::REDUCE);
        memoize(&v);
        break;
      case Kind::kStr:
        save_str_raw(v.text);
        memoize(&v);
        break;
      case Kind::kBytes:
        save_bytes(v.text);
        memoize(&v);
        break;
      case Kind::kByteArray:
        save_global(builtins(), "bytearray");
        if (p4()) {
          save_bytes(v.text);
          op(Op::TUPLE1);
        } else {
          save_str_raw(latin1_as_utf8(v.text));
          save_str_raw("latin-1");
          op(Op::TUPLE2);
        }
        op(Op::REDUCE);
        memoize(&v);
        break;
      case Kind::kList:
        op(Op::EMPTY_LIST);
        memoize(&v);
        save_items(v.items, Op::APPENDS);
        break;
      case Kind::kTuple:
        if (v.type_name == "torch.Size") {
          save_global("torch", "Size");
          save_tuple_items(v.items);
          op(Op::TUPLE1);
          op(Op::REDUCE);
        } else if (v.type_name == "builtins.slice" || v.type_name == "builtins.range") {
          save_global(builtins(), v.type_name == "builtins.slice" ? "slice" : "range");
          save_tuple_items(v.items);
          op(Op::REDUCE);
        } else {
          save_tuple_items(v.items);
        }
        memoize(&v);
        break;
      case Kind::kDict:
        save_dict(v);
        break;
      case Kind::kSet:
      case Kind::kFrozenSet:
        if (p4()) {
          if (v.kind == Kind::kSet) {
            op(Op::EMPTY_SET);
            memoize(&v);
            if (!v.items.empty()) {
              op(Op::MARK);
              for (const auto& item : v.items) save(*item);
              op(Op::ADDITEMS);
            }
          } else {
            op(Op::MARK);
            for (const auto& item : v.items) save(*item);
            op(Op::FROZENSET);
            memoize(&v);
          }
        } else {
          save_global(builtins(), v.kind == Kind::kSet ? "set" : "frozenset");
          op(Op::EMPTY_LIST);
          if (!v.items.empty()) {
            op(Op::MARK);
            for (const auto& item : v.items) save(*item);
            op(Op::APPENDS);
          }
          op(Op::TUPLE1);
          op(Op::REDUCE);
          memoize(&v);
        }
        break;
      case Kind::kGlobal: {
        if (!v.boolean) fail("pickle writer: cannot write the salvaged global {}", v.type_name);
        auto dot = v.type_name.rfind('.');
        if (dot == std::string::npos) fail("pickle writer: bad global name {}", v.type_name);
        save_global(std::string_view(v.type_name).substr(0, dot),
                    std::string_view(v.type_name).substr(dot + 1));
        break;
      }
      case Kind::kDType:
        if (v.type_name == "numpy.dtype") fail("pickle writer: numpy dtypes are not written");
        save_global("torch", dtype_name(v.dtype));
        break;
      case Kind::kDevice:
        save_global("torch", "device");
        save_str_raw(v.text);
        op(Op::TUPLE1);
        op(Op::REDUCE);
        memoize(&v);
        break;
      case Kind::kTensor:
        save_tensor(v);
        break;
      default:
        fail("pickle writer: a {} cannot be written", kind_name(v.kind));
    }
    in_progress_.erase(&v);
  }

  const WriteOptions& options_;
  std::string out_;
  std::string cur_;
  std::unordered_map<const Value*, uint32_t> memo_;
  std::unordered_map<std::string, uint32_t> globals_memo_;
  std::unordered_set<const Value*> in_progress_;
  uint32_t next_memo_ = 0;
  int depth_ = 0;
};

}  // namespace

std::string write(const Value& root, const WriteOptions& options) {
  Pickler pickler(options);
  return pickler.run(root);
}

}  // namespace torchless::pickle
