// The pickle virtual machine, without the dangerous half: every opcode of protocols 0-5 is
// decoded, but GLOBAL/STACK_GLOBAL yield inert references, and REDUCE/NEWOBJ/BUILD/INST/OBJ
// dispatch to the C++ handlers of the allowlist (allowlist.h). Ownership: every container the
// machine builds is also kept in `containers_`, so that at the end (or on any error) the graph
// can be checked for cycles and depth iteratively, and torn down flat if refused.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "formats/pickle/allowlist.h"
#include "formats/pickle/opcodes.h"
#include "torchless/core/byte_reader.h"
#include "torchless/core/checked.h"
#include "torchless/core/error.h"
#include "torchless/formats/pickle.h"

namespace torchless::pickle {
namespace {

// Python 3.11 refuses int<->str conversions beyond 4300 digits
// (sys.int_info.default_max_str_digits); the same bound keeps our quadratic base conversion cheap.
constexpr size_t kMaxIntDigits = 4300;
constexpr size_t kMaxLongBytes = 1800;

// The decimal value of a little-endian two's-complement integer of any size.
std::string twos_complement_to_decimal(std::span<const std::byte> bytes) {
  std::vector<uint8_t> mag(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) mag[i] = static_cast<uint8_t>(bytes[i]);
  bool negative = !mag.empty() && (mag.back() & 0x80) != 0;
  if (negative) {  // magnitude = ~x + 1
    unsigned carry = 1;
    for (auto& b : mag) {
      unsigned v = static_cast<uint8_t>(~b) + carry;
      b = static_cast<uint8_t>(v);
      carry = v >> 8;
    }
  }
  // Repeated division by 10^9 of the big-endian magnitude.
  std::vector<uint32_t> chunks;
  std::vector<uint8_t> be(mag.rbegin(), mag.rend());
  while (!be.empty() && be.front() == 0) be.erase(be.begin());
  while (!be.empty()) {
    uint64_t rem = 0;
    std::vector<uint8_t> next;
    next.reserve(be.size());
    for (uint8_t b : be) {
      uint64_t cur = (rem << 8) | b;
      auto q = static_cast<uint8_t>(cur / 1000000000u);
      rem = cur % 1000000000u;
      if (!next.empty() || q != 0) next.push_back(q);
    }
    // rem < 10^9 so cur < 256 * 10^9: every quotient digit fits a byte.
    chunks.push_back(static_cast<uint32_t>(rem));
    be.swap(next);
  }
  std::string out = negative ? "-" : "";
  if (chunks.empty()) return "0";
  out += fmt::format("{}", chunks.back());
  for (size_t i = chunks.size() - 1; i-- > 0;) out += fmt::format("{:09}", chunks[i]);
  return out;
}

class Unpickler {
 public:
  Unpickler(const Buffer& bytes, const ReadOptions& options)
      : bytes_(bytes), in_(bytes.bytes(), options.what), options_(options) {
    allocation_budget_ =
        std::min<uint64_t>(options.limits.max_allocation, bytes.size() * 8 + (uint64_t{64} << 20));
  }

  ReadResult run() {
    try {
      ReadResult result = execute();
      check_graph();
      result.tensors = tensors_;
      result.globals = globals_;
      result.salvaged = salvaged_;
      bind_available();
      return result;
    } catch (...) {
      break_all();
      throw;
    }
  }

 private:
  // ---- errors -------------------------------------------------------------------------------
  std::string where() const {
    return fmt::format("{}: offset {} ({})", options_.what, op_offset_, opcode_name(op_));
  }
  template <typename... Args>
  [[noreturn]] void error(fmt::format_string<Args...> format, Args&&... args) const {
    throw Error(where() + ": " + fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  [[noreturn]] void limit(fmt::format_string<Args...> format, Args&&... args) const {
    throw LimitError(where() + ": " + fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  [[noreturn]] void unsupported(fmt::format_string<Args...> format, Args&&... args) const {
    throw UnsupportedError(where() + ": " + fmt::format(format, std::forward<Args>(args)...));
  }

  // ---- input --------------------------------------------------------------------------------
  std::span<const std::byte> take(uint64_t n) {
    if (n > in_.remaining()) {
      error("needs {} bytes of argument, only {} left (truncated or bad length)", n,
            in_.remaining());
    }
    return in_.take(n);
  }
  std::string take_string(uint64_t n) {
    if (n > options_.limits.max_bytes)
      limit("length {} exceeds the limit of {} bytes", n, options_.limits.max_bytes);
    auto s = take(n);
    return {reinterpret_cast<const char*>(s.data()), s.size()};
  }
  std::string_view take_line() {
    const auto* begin = reinterpret_cast<const char*>(bytes_.data()) + in_.position();
    const void* hit = std::memchr(begin, '\n', in_.remaining());
    if (hit == nullptr) error("expected a newline-terminated argument, found end of data");
    return in_.take_until('\n');
  }
  uint8_t u8() {
    take_check(1);
    return in_.u8();
  }
  uint16_t u16() {
    take_check(2);
    return in_.u16();
  }
  uint32_t u32() {
    take_check(4);
    return in_.u32();
  }
  uint64_t u64() {
    take_check(8);
    return in_.u64();
  }
  void take_check(uint64_t n) {
    if (n > in_.remaining()) {
      error("needs {} bytes of argument, only {} left (truncated)", n, in_.remaining());
    }
  }

  // ---- stack --------------------------------------------------------------------------------
  size_t fence() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(ValuePtr v) {
    if (stack_.size() >= options_.limits.max_items) {
      limit("stack holds more than {} items", options_.limits.max_items);
    }
    stack_.push_back(std::move(v));
  }
  ValuePtr pop() {
    if (stack_.size() <= fence()) {
      error("{}",
            marks_.empty() ? "stack underflow" : "stack underflow (reads past the last MARK)");
    }
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  ValuePtr& top() {
    if (stack_.size() <= fence()) {
      error("{}",
            marks_.empty() ? "stack underflow" : "stack underflow (reads past the last MARK)");
    }
    return stack_.back();
  }
  // The items since the last MARK, and the MARK removed.
  std::vector<ValuePtr> pop_mark() {
    if (marks_.empty()) error("no MARK on the stack");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> items(std::make_move_iterator(stack_.begin() + static_cast<ptrdiff_t>(m)),
                                std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }

  ValuePtr make(Kind kind) {
    auto v = std::make_shared<Value>();
    v->kind = kind;
    switch (kind) {
      case Kind::kList:
      case Kind::kTuple:
      case Kind::kDict:
      case Kind::kSet:
      case Kind::kFrozenSet:
      case Kind::kObject:
      case Kind::kTensor:
      case Kind::kScalar:
      case Kind::kSparseTensor:
        containers_.push_back(v);
        break;
      default:
        break;
    }
    return v;
  }
  ValuePtr make_tuple(std::vector<ValuePtr> items) {
    auto v = make(Kind::kTuple);
    v->items = std::move(items);
    return v;
  }
  void check_size(size_t n) const {
    if (n > options_.limits.max_items) {
      limit("container would hold {} items, more than the limit of {}", n,
            options_.limits.max_items);
    }
  }
  void charge(uint64_t bytes) {
    if (bytes > allocation_budget_ - allocated_) {
      limit("derived data would exceed the allocation budget of {} bytes", allocation_budget_);
    }
    allocated_ += bytes;
  }

  // ---- memo ---------------------------------------------------------------------------------
  void memo_put(uint64_t index) {
    const ValuePtr& v = top();
    if (memo_.size() >= options_.limits.max_items && memo_.find(index) == memo_.end()) {
      limit("memo holds more than {} entries", options_.limits.max_items);
    }
    memo_[index] = v;
  }
  void memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) error("memo key {} was never stored (PUT missing)", index);
    push(it->second);
  }

  // ---- scalars ------------------------------------------------------------------------------
  ValuePtr int_from_decimal(std::string_view text, bool allow_long_suffix) {
    std::string_view s = text;
    if (allow_long_suffix && !s.empty() && s.back() == 'L') s.remove_suffix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.remove_suffix(1);
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    bool negative = false;
    std::string_view digits = s;
    if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) {
      negative = digits[0] == '-';
      digits.remove_prefix(1);
    }
    if (digits.empty() ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      error("expected a decimal integer, found '{}'", std::string(text.substr(0, 40)));
    }
    if (digits.size() > kMaxIntDigits) {
      limit("integer of {} digits exceeds the limit of {}", digits.size(), kMaxIntDigits);
    }
    int64_t v = 0;
    std::string signed_text = (negative ? "-" : "") + std::string(digits);
    auto [ptr, ec] =
        std::from_chars(signed_text.data(), signed_text.data() + signed_text.size(), v);
    if (ec == std::errc() && ptr == signed_text.data() + signed_text.size()) {
      auto out = make(Kind::kInt);
      out->integer = v;
      return out;
    }
    while (digits.size() > 1 && digits[0] == '0') digits.remove_prefix(1);
    auto out = make(Kind::kBigInt);
    out->text = (negative ? "-" : "") + std::string(digits);
    return out;
  }
  ValuePtr int_from_bytes(std::span<const std::byte> bytes) {
    if (bytes.size() <= 8) {
      uint64_t u = 0;
      for (size_t i = 0; i < bytes.size(); ++i) {
        u |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
      }
      if (!bytes.empty() && bytes.size() < 8 && (static_cast<uint8_t>(bytes.back()) & 0x80)) {
        u |= ~uint64_t{0} << (8 * bytes.size());  // sign extension
      }
      auto out = make(Kind::kInt);
      out->integer = static_cast<int64_t>(u);
      return out;
    }
    auto text = twos_complement_to_decimal(bytes);
    return int_from_decimal(text, false);
  }
  ValuePtr float_from_text(std::string_view text) {
    std::string s(text);
    while (!s.empty() && (s.back() == '\r' || s.back() == ' ')) s.pop_back();
    double v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || ptr != s.data() + s.size()) {
      error("expected a float, found '{}'", s.substr(0, 40));
    }
    auto out = make(Kind::kFloat);
    out->real = v;
    return out;
  }
  ValuePtr str_value(std::string text) {
    auto v = make(Kind::kStr);
    v->text = std::move(text);
    return v;
  }
  ValuePtr bytes_value(std::string text, Kind kind = Kind::kBytes) {
    auto v = make(kind);
    v->text = std::move(text);
    return v;
  }

  static bool valid_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
      auto c = static_cast<unsigned char>(s[i]);
      size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
      if (n == 0 || i + n > s.size()) return false;
      for (size_t k = 1; k < n; ++k) {
        if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
      }
      i += n;
    }
    return true;
  }
  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  // STRING's argument: a Python 2 repr ('...' or "..."), escapes decoded as codecs.escape_decode.
  std::string decode_string_repr(std::string_view line) {
    std::string_view s = line;
    while (!s.empty() && s.back() == '\r') s.remove_suffix(1);
    if (s.size() < 2 || (s[0] != '\'' && s[0] != '"') || s.back() != s[0]) {
      error("the STRING argument must be quoted, found '{}'", std::string(s.substr(0, 40)));
    }
    s = s.substr(1, s.size() - 2);
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      char c = s[i];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (++i >= s.size()) error("STRING argument ends with a lone backslash");
      char e = s[i];
      switch (e) {
        case '\n':
          break;
        case '\\':
        case '\'':
        case '"':
          out += e;
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case 'x': {
          int h1 = i + 1 < s.size() ? hex_digit(s[i + 1]) : -1;
          int h2 = i + 2 < s.size() ? hex_digit(s[i + 2]) : -1;
          if (h1 < 0 || h2 < 0) error("invalid \\x escape in STRING argument");
          out += static_cast<char>(h1 * 16 + h2);
          i += 2;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            int v = e - '0';
            for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k) {
              v = v * 8 + (s[++i] - '0');
            }
            out += static_cast<char>(v & 0xFF);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    return out;
  }
  // UNICODE's argument: raw-unicode-escape (\uXXXX, \UXXXXXXXX; every other byte is Latin-1).
  std::string decode_raw_unicode_escape(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      auto c = static_cast<unsigned char>(s[i]);
      if (c == '\\' && i + 1 < s.size() && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
        size_t n = s[i + 1] == 'u' ? 4 : 8;
        if (i + 2 + n > s.size()) error("truncated \\u escape in UNICODE argument");
        uint32_t cp = 0;
        for (size_t k = 0; k < n; ++k) {
          int h = hex_digit(s[i + 2 + k]);
          if (h < 0) error("invalid \\u escape in UNICODE argument");
          cp = cp * 16 + static_cast<uint32_t>(h);
        }
        if (cp > 0x10FFFF) error("code point {:#x} out of range in UNICODE argument", cp);
        append_utf8(out, cp);
        i += 1 + n;
      } else {
        append_utf8(out, c);
      }
    }
    return out;
  }

  // ---- globals ------------------------------------------------------------------------------
  ValuePtr resolve_global(std::string module, std::string name) {
    std::string qualified = module + "." + name;
    bool first_use = global_names_.insert(qualified).second;
    if (first_use) {
      if (globals_.size() >= options_.limits.max_items) limit("too many distinct globals");
      globals_.push_back(qualified);
    }
    const GlobalSpec* spec = find_global(module, name);
    if (spec == nullptr) {
      if (options_.salvage && !is_dangerous_global(module, name)) {
        if (first_use) salvaged_.push_back(qualified);
        auto v = make(Kind::kGlobal);
        v->type_name = qualified;
        v->boolean = false;  // not allowlisted: an inert stand-in
        return v;
      }
      throw UnsupportedError(fmt::format(
          "{}: global '{}' (module '{}', name '{}') is not allowlisted{}; torchless never "
          "imports or calls code named by a pickle",
          where(), qualified, module, name,
          options_.salvage ? " and is refused even in salvage mode (it can run code)"
                           : " (salvage mode keeps unknown classes as inert records)"));
    }
    if (spec->handler == Handler::kDType) {
      auto v = make(Kind::kDType);
      v->dtype = spec->dtype;
      v->type_name = qualified;
      return v;
    }
    auto v = make(Kind::kGlobal);
    v->type_name = qualified;
    v->boolean = true;
    v->integer = static_cast<int64_t>(spec->handler);
    v->dtype = spec->dtype;
    return v;
  }
  static Handler handler_of(const Value& g) { return static_cast<Handler>(g.integer); }
  static bool is_allowed_global(const Value& v, Handler h) {
    return v.kind == Kind::kGlobal && v.boolean && handler_of(v) == h;
  }

  // ---- argument helpers ---------------------------------------------------------------------
  const std::vector<ValuePtr>& args_of(const ValuePtr& args, std::string_view callee) {
    if (args->kind != Kind::kTuple) {
      error("{} expects an argument tuple, found {}", callee, kind_name(args->kind));
    }
    return args->items;
  }
  void expect_arity(const std::vector<ValuePtr>& a, size_t lo, size_t hi, std::string_view callee) {
    if (a.size() < lo || a.size() > hi) {
      if (lo == hi) error("{} takes {} arguments, found {}", callee, lo, a.size());
      error("{} takes {} to {} arguments, found {}", callee, lo, hi, a.size());
    }
  }
  int64_t int_arg(const ValuePtr& v, std::string_view what) {
    if (v->kind == Kind::kInt) return v->integer;
    if (v->kind == Kind::kBool) return v->boolean ? 1 : 0;
    error("{}: expected an int, found {}", what, kind_name(v->kind));
  }
  double float_arg(const ValuePtr& v, std::string_view what) {
    if (v->kind == Kind::kFloat) return v->real;
    if (v->kind == Kind::kInt) return static_cast<double>(v->integer);
    error("{}: expected a float, found {}", what, kind_name(v->kind));
  }
  bool bool_arg(const ValuePtr& v, std::string_view what) {
    if (v->kind == Kind::kBool) return v->boolean;
    if (v->kind == Kind::kInt) return v->integer != 0;
    if (v->kind == Kind::kNone) return false;
    error("{}: expected a bool, found {}", what, kind_name(v->kind));
  }
  const std::string& str_arg(const ValuePtr& v, std::string_view what) {
    if (v->kind != Kind::kStr) error("{}: expected a str, found {}", what, kind_name(v->kind));
    return v->text;
  }
  std::vector<int64_t> int_tuple_arg(const ValuePtr& v, std::string_view what) {
    if (v->kind != Kind::kTuple && v->kind != Kind::kList) {
      error("{}: expected a tuple of ints, found {}", what, kind_name(v->kind));
    }
    if (v->items.size() > options_.limits.max_rank) {
      limit("{}: {} dimensions exceed the limit of {}", what, v->items.size(),
            options_.limits.max_rank);
    }
    std::vector<int64_t> out;
    out.reserve(v->items.size());
    for (const auto& item : v->items) out.push_back(int_arg(item, what));
    return out;
  }

  // ---- tensors ------------------------------------------------------------------------------
  ValuePtr new_tensor(ValuePtr storage, DType dtype, int64_t offset, std::vector<int64_t> size,
                      std::vector<int64_t> stride, std::string_view callee) {
    if (storage->kind != Kind::kStorage || !storage->storage) {
      error("{}: expected a storage (persistent id) as first argument, found {}", callee,
            kind_name(storage->kind));
    }
    if (size.size() != stride.size()) {
      error("{}: size has {} dims but stride has {}", callee, size.size(), stride.size());
    }
    auto v = make(Kind::kTensor);
    v->tensor = std::make_shared<TensorInfo>();
    v->tensor->storage = std::move(storage);
    v->tensor->dtype = dtype;
    v->tensor->shape = std::move(size);
    v->tensor->strides = std::move(stride);
    v->tensor->storage_offset = offset;
    tensors_.push_back(v);
    return v;
  }

  ValuePtr rebuild_tensor(const std::vector<ValuePtr>& a, Handler h, std::string_view callee) {
    size_t lo = h == Handler::kRebuildTensor ? 4 : h == Handler::kRebuildTensorV2 ? 6 : 7;
    size_t hi = h == Handler::kRebuildTensor ? 4 : lo + 1;
    expect_arity(a, lo, hi, callee);
    const auto& storage = a[0];
    if (storage->kind != Kind::kStorage || !storage->storage) {
      error("{}: expected a storage (persistent id) as first argument, found {}", callee,
            kind_name(storage->kind));
    }
    DType dtype = storage->storage->dtype;
    if (h == Handler::kRebuildTensorV3) {
      if (a[6]->kind != Kind::kDType) error("{}: argument 7 must be a dtype", callee);
      dtype = a[6]->dtype;
    }
    auto v = new_tensor(storage, dtype, int_arg(a[1], "storage_offset"),
                        int_tuple_arg(a[2], "size"), int_tuple_arg(a[3], "stride"), callee);
    if (h != Handler::kRebuildTensor) v->tensor->requires_grad = bool_arg(a[4], "requires_grad");
    return v;
  }

  ValuePtr rebuild_qtensor(const std::vector<ValuePtr>& a, std::string_view callee) {
    expect_arity(a, 7, 7, callee);
    const auto& params = a[4];
    if (params->kind != Kind::kTuple || params->items.empty() ||
        params->items[0]->kind != Kind::kGlobal) {
      error("{}: quantizer_params must be a tuple starting with a qscheme", callee);
    }
    const std::string& scheme = params->items[0]->type_name;
    auto v =
        rebuild_tensor({a[0], a[1], a[2], a[3], a[5], a[6]}, Handler::kRebuildTensorV2, callee);
    Quantization q;
    if (scheme == "torch.per_tensor_affine") {
      if (params->items.size() != 3)
        error("{}: per_tensor_affine takes (scale, zero_point)", callee);
      q.scheme = Quantization::Scheme::kPerTensorAffine;
      q.scale = float_arg(params->items[1], "scale");
      q.zero_point = int_arg(params->items[2], "zero_point");
      v->tensor->quantization = q;
    } else if (scheme == "torch.per_channel_affine") {
      if (params->items.size() != 4) {
        error("{}: per_channel_affine takes (scales, zero_points, axis)", callee);
      }
      if (!params->items[1]->is_tensor() || !params->items[2]->is_tensor()) {
        error("{}: per-channel scales and zero points must be tensors", callee);
      }
      q.scheme = Quantization::Scheme::kPerChannelAffine;
      q.axis = int_arg(params->items[3], "axis");
      v->tensor->quantization = q;
      v->tensor->per_channel_scales = params->items[1];
      v->tensor->per_channel_zero_points = params->items[2];
    } else {
      unsupported("{}: quantization scheme {} is not supported", callee, scheme);
    }
    return v;
  }

  // ---- numpy --------------------------------------------------------------------------------
  // numpy dtype descr ('f4', 'i8', 'b1', 'c16', ...) and byte order -> DType.
  DType numpy_dtype(const Value& d, bool* big_endian) {
    if (d.kind != Kind::kDType || d.type_name != "numpy.dtype") {
      error("expected a numpy dtype, found {}", kind_name(d.kind));
    }
    std::string_view t = d.text;
    char order = static_cast<char>(d.integer);
    *big_endian = order == '>';
    static const std::pair<std::string_view, DType> kMap[] = {
        {"b1", DType::kBool},      {"u1", DType::kUInt8},      {"i1", DType::kInt8},
        {"i2", DType::kInt16},     {"i4", DType::kInt32},      {"i8", DType::kInt64},
        {"u2", DType::kUInt16},    {"u4", DType::kUInt32},     {"u8", DType::kUInt64},
        {"f2", DType::kFloat16},   {"f4", DType::kFloat32},    {"f8", DType::kFloat64},
        {"c8", DType::kComplex64}, {"c16", DType::kComplex128}};
    for (const auto& [name, dtype] : kMap) {
      if (t == name) return dtype;
    }
    unsupported(
        "numpy dtype '{}' is not supported (object, string, record and datetime arrays "
        "hold no plain numbers)",
        std::string(t));
  }
  void make_numpy_tensor(Value& target, const std::vector<int64_t>& shape, const Value& dtype,
                         bool fortran, const Value& data, Kind kind) {
    bool big = false;
    DType dt = numpy_dtype(dtype, &big);
    if (data.kind != Kind::kBytes && data.kind != Kind::kStr && data.kind != Kind::kByteArray) {
      unsupported("numpy array data is a {}, not raw bytes (object arrays are not supported)",
                  kind_name(data.kind));
    }
    Shape s(shape.begin(), shape.end());
    uint64_t need = checked_mul(static_cast<uint64_t>(checked_numel(s, "numpy array")),
                                dtype_size(dt), "numpy array");
    if (need != data.text.size()) {
      error("numpy array {} of {} needs {} bytes, found {}", shape_to_string(s), dtype.text, need,
            data.text.size());
    }
    charge(need);
    auto info = std::make_shared<TensorInfo>();
    info->dtype = dt;
    info->shape = s;
    info->strides = contiguous_strides(s);
    if (fortran) {  // column-major: strides grow from the first dimension
      int64_t st = 1;
      for (size_t i = 0; i < s.size(); ++i) {
        info->strides[i] = st;
        st *= std::max<int64_t>(s[i], 1);
      }
    }
    info->from_numpy = true;
    info->byteswap = big && dtype_size(dt) > 1;
    auto storage = std::make_shared<Value>();
    storage->kind = Kind::kStorage;
    storage->storage = std::make_shared<StorageInfo>();
    storage->storage->key = "(numpy data)";
    storage->storage->type_name = "numpy.ndarray";
    storage->storage->dtype = dt;
    storage->storage->numel = need / std::max<size_t>(dtype_size(dt), 1);
    storage->storage->data = Buffer::copy_of(data.text);
    storage->storage->bound = true;
    info->storage = storage;
    target.kind = kind;
    target.tensor = info;
    target.type_name = kind == Kind::kScalar ? "numpy." + std::string(dtype_name(dt)) : "";
    target.items.clear();
    target.args.reset();
  }

  // ---- calls --------------------------------------------------------------------------------
  ValuePtr salvage_record(const ValuePtr& callee, ValuePtr args, bool newobj) {
    auto v = make(Kind::kObject);
    v->type_name = callee->type_name;
    v->args = std::move(args);
    v->newobj = newobj;
    return v;
  }

  ValuePtr call(const ValuePtr& callee, const ValuePtr& args, bool newobj) {
    if (callee->kind != Kind::kGlobal) {
      error("cannot call a {} (only allowlisted globals can be called)", kind_name(callee->kind));
    }
    if (!callee->boolean) return salvage_record(callee, args, newobj);
    const std::string& name = callee->type_name;
    Handler h = handler_of(*callee);
    const auto& a = args_of(args, name);
    switch (h) {
      case Handler::kRebuildTensor:
      case Handler::kRebuildTensorV2:
      case Handler::kRebuildTensorV3:
        return rebuild_tensor(a, h, name);
      case Handler::kRebuildParameter:
      case Handler::kRebuildParameterWithState: {
        expect_arity(a, h == Handler::kRebuildParameter ? 3 : 4,
                     h == Handler::kRebuildParameter ? 3 : 4, name);
        if (!a[0]->is_tensor()) error("{}: data must be a tensor", name);
        a[0]->tensor->is_parameter = true;
        a[0]->tensor->requires_grad = bool_arg(a[1], "requires_grad");
        if (h == Handler::kRebuildParameterWithState && a[3]->kind == Kind::kDict &&
            !a[3]->entries.empty()) {
          a[0]->state = a[3];
        }
        return a[0];
      }
      case Handler::kRebuildQTensor:
        return rebuild_qtensor(a, name);
      case Handler::kRebuildSparseTensor:
      case Handler::kRebuildSparseCsrTensor: {
        expect_arity(a, 2, 2, name);
        if (a[0]->kind != Kind::kGlobal || a[1]->kind != Kind::kTuple) {
          error("{}: expected (layout, (components...))", name);
        }
        auto v = make(Kind::kSparseTensor);
        v->type_name = a[0]->type_name;
        for (const auto& item : a[1]->items) {
          if (item->is_tensor()) {
            v->items.push_back(item);
          } else if (item->kind == Kind::kTuple) {
            v->args = item;  // torch.Size
          }
        }
        if (v->items.size() < 2) error("{}: expected index and value tensors", name);
        return v;
      }
      case Handler::kRebuildDeviceTensorFromNumpy: {
        expect_arity(a, 4, 4, name);
        if (!a[0]->is_tensor()) error("{}: data must be a numpy array", name);
        if (a[1]->kind == Kind::kDType && a[1]->dtype != a[0]->tensor->dtype) {
          unsupported("{}: numpy data of dtype {} for a {} tensor", name,
                      dtype_name(a[0]->tensor->dtype), dtype_name(a[1]->dtype));
        }
        a[0]->tensor->from_numpy = false;
        a[0]->tensor->requires_grad = bool_arg(a[3], "requires_grad");
        return a[0];
      }
      case Handler::kRebuildMetaTensorNoStorage:
        unsupported("{}: a meta tensor has no data to read (it was saved from device 'meta')",
                    name);
      case Handler::kRebuildFromTypeV2: {
        expect_arity(a, 4, 4, name);
        if (a[0]->kind != Kind::kGlobal || !a[0]->boolean) {
          error("{}: func must be an allowlisted rebuild function", name);
        }
        if (a[1]->kind != Kind::kGlobal ||
            !(is_allowed_global(*a[1], Handler::kTensorClass) ||
              is_allowed_global(*a[1], Handler::kParameterClass) || !a[1]->boolean)) {
          error("{}: new_type must be torch.Tensor or torch.nn.Parameter", name);
        }
        auto result = call(a[0], a[2], false);
        if (is_allowed_global(*a[1], Handler::kParameterClass) && result->is_tensor()) {
          result->tensor->is_parameter = true;
        }
        if (a[3]->kind == Kind::kDict && !a[3]->entries.empty()) result->state = a[3];
        return result;
      }
      case Handler::kLoadFromBytes: {
        expect_arity(a, 1, 1, name);
        if (a[0]->kind != Kind::kBytes) error("{}: expected bytes", name);
        if (!options_.load_from_bytes) {
          unsupported("{}: nested storage streams are only readable inside a torch file", name);
        }
        return options_.load_from_bytes(a[0]->text);
      }
      case Handler::kSize: {
        expect_arity(a, 0, 1, name);
        auto v = make(Kind::kTuple);
        v->type_name = "torch.Size";
        if (!a.empty()) {
          for (int64_t d : int_tuple_arg(a[0], name)) {
            auto item = make(Kind::kInt);
            item->integer = d;
            v->items.push_back(item);
          }
        }
        return v;
      }
      case Handler::kDevice: {
        expect_arity(a, 1, 2, name);
        auto v = make(Kind::kDevice);
        v->text = str_arg(a[0], name);
        if (a.size() == 2 && a[1]->kind != Kind::kNone) {
          v->text += fmt::format(":{}", int_arg(a[1], name));
        }
        return v;
      }
      case Handler::kGetLayout: {
        expect_arity(a, 1, 1, name);
        const auto& layout = str_arg(a[0], name);
        if (layout != "torch.sparse_coo" && layout != "torch.sparse_csr" &&
            layout != "torch.sparse_csc" && layout != "torch.sparse_bsr" &&
            layout != "torch.sparse_bsc" && layout != "torch.strided") {
          error("{}: unknown layout '{}'", name, layout);
        }
        auto v = make(Kind::kGlobal);
        v->type_name = layout;
        v->boolean = true;
        v->integer = static_cast<int64_t>(Handler::kQScheme);  // an inert value, not callable
        return v;
      }
      case Handler::kParameterClass: {
        // Python-2-era torch: Parameter(data[, requires_grad]) via REDUCE or NEWOBJ.
        expect_arity(a, 0, 2, name);
        if (a.empty() || !a[0]->is_tensor()) {
          unsupported("{}: a Parameter without tensor data", name);
        }
        a[0]->tensor->is_parameter = true;
        a[0]->tensor->requires_grad = a.size() == 2 ? bool_arg(a[1], "requires_grad") : true;
        return a[0];
      }
      case Handler::kOrderedDict:
      case Handler::kCounter:
      case Handler::kDefaultDict: {
        auto v = make(Kind::kDict);
        v->type_name = name;
        if (h == Handler::kDefaultDict) {
          expect_arity(a, 0, 2, name);
          if (!a.empty()) {
            const auto& f = a[0];
            if (f->kind != Kind::kNone &&
                !(f->kind == Kind::kGlobal && f->boolean &&
                  (handler_of(*f) == Handler::kBuiltinType || handler_of(*f) == Handler::kSet ||
                   handler_of(*f) == Handler::kOrderedDict || handler_of(*f) == Handler::kCounter ||
                   handler_of(*f) == Handler::kFrozenSet))) {
              error("{}: default_factory must be None or a builtin type, found {}", name,
                    f->kind == Kind::kGlobal ? f->type_name : std::string(kind_name(f->kind)));
            }
            v->args = make_tuple({f});
          }
          if (a.size() == 2) fill_dict(*v, a[1], name);
        } else {
          expect_arity(a, 0, 1, name);
          if (a.size() == 1) fill_dict(*v, a[0], name);
        }
        return v;
      }
      case Handler::kSet:
      case Handler::kFrozenSet: {
        expect_arity(a, 0, 1, name);
        auto v = make(h == Handler::kSet ? Kind::kSet : Kind::kFrozenSet);
        if (a.size() == 1) {
          if (a[0]->kind != Kind::kList && a[0]->kind != Kind::kTuple && a[0]->kind != Kind::kSet &&
              a[0]->kind != Kind::kFrozenSet) {
            error("{}: expected a list of items, found {}", name, kind_name(a[0]->kind));
          }
          for (const auto& item : a[0]->items) add_to_set(*v, item);
        }
        return v;
      }
      case Handler::kComplex: {
        expect_arity(a, 0, 2, name);
        auto v = make(Kind::kComplex);
        if (!a.empty()) v->real = float_arg(a[0], "complex real part");
        if (a.size() == 2) v->imag = float_arg(a[1], "complex imaginary part");
        return v;
      }
      case Handler::kByteArray: {
        expect_arity(a, 0, 2, name);
        if (a.empty()) return bytes_value("", Kind::kByteArray);
        if (a.size() == 2) {  // bytearray(latin1-decoded str, 'latin-1'): protocols 0-2
          return bytes_value(latin1_encode(str_arg(a[0], name), str_arg(a[1], name), name),
                             Kind::kByteArray);
        }
        if (a[0]->kind != Kind::kBytes && a[0]->kind != Kind::kByteArray) {
          error("{}: expected bytes, found {}", name, kind_name(a[0]->kind));
        }
        charge(a[0]->text.size());
        return bytes_value(a[0]->text, Kind::kByteArray);
      }
      case Handler::kSlice:
      case Handler::kRange: {
        expect_arity(a, 1, 3, name);
        auto v = make(Kind::kTuple);
        v->type_name = h == Handler::kSlice ? "builtins.slice" : "builtins.range";
        v->items = a;
        return v;
      }
      case Handler::kCodecsEncode: {
        expect_arity(a, 1, 2, name);
        std::string encoding = a.size() == 2 ? str_arg(a[1], name) : "utf-8";
        const auto& text = str_arg(a[0], name);
        if (encoding == "utf-8" || encoding == "utf8") {
          charge(text.size());
          return bytes_value(text);
        }
        return bytes_value(latin1_encode(text, encoding, name));
      }
      case Handler::kNumpyReconstruct: {
        // _reconstruct(ndarray, (0,), b'b'): an empty array that BUILD fills in.
        expect_arity(a, 3, 3, name);
        if (!is_allowed_global(*a[0], Handler::kNumpyNdarray)) {
          error("{}: only numpy.ndarray can be reconstructed, found {}", name,
                a[0]->kind == Kind::kGlobal ? a[0]->type_name : std::string(kind_name(a[0]->kind)));
        }
        auto v = make(Kind::kObject);
        v->type_name = "numpy.ndarray";
        v->boolean = true;  // an allowlisted placeholder awaiting BUILD, not a salvage record
        return v;
      }
      case Handler::kNumpyDType: {
        expect_arity(a, 1, 3, name);
        auto v = make(Kind::kDType);
        v->type_name = "numpy.dtype";
        v->text = str_arg(a[0], name);
        v->integer = '|';
        return v;
      }
      case Handler::kNumpyScalar: {
        expect_arity(a, 1, 2, name);
        if (a.size() != 2) unsupported("{}: object scalars are not supported", name);
        auto v = make(Kind::kScalar);
        make_numpy_tensor(*v, {}, *a[0], false, *a[1], Kind::kScalar);
        tensors_.push_back(v);
        return v;
      }
      case Handler::kNumpyFromBuffer: {
        expect_arity(a, 4, 4, name);
        auto shape = int_tuple_arg(a[2], "shape");
        const auto& order = str_arg(a[3], "order");
        auto v = make(Kind::kTensor);
        make_numpy_tensor(*v, shape, *a[1], order == "F", *a[0], Kind::kTensor);
        tensors_.push_back(v);
        return v;
      }
      case Handler::kReconstructor: {
        // copyreg._reconstructor(cls, base, state): how protocols 0-1 pickle plain objects.
        expect_arity(a, 2, 3, name);
        if (a[0]->kind == Kind::kGlobal && !a[0]->boolean) {
          return salvage_record(a[0], make_tuple({}), true);
        }
        unsupported("{}: reconstructing {} is not allowed", name, a[0]->repr(60));
      }
      case Handler::kStorageClass:
      case Handler::kQScheme:
      case Handler::kTensorClass:
      case Handler::kBuiltinType:
      case Handler::kNumpyNdarray:
      case Handler::kDType:
        break;
    }
    unsupported("{} is a type tag and cannot be called", name);
  }

  std::string latin1_encode(const std::string& text, const std::string& encoding,
                            std::string_view callee) {
    if (encoding != "latin1" && encoding != "latin-1" && encoding != "iso-8859-1" &&
        encoding != "iso8859-1") {
      unsupported("{}: encoding '{}' is not supported (torch and numpy use 'latin1')", callee,
                  encoding);
    }
    charge(text.size());
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      auto c = static_cast<unsigned char>(text[i]);
      if (c < 0x80) {
        out += static_cast<char>(c);
        i += 1;
      } else if ((c == 0xC2 || c == 0xC3) && i + 1 < text.size()) {
        out +=
            static_cast<char>(((c & 0x03) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3F));
        i += 2;
      } else {
        error("{}: character at byte {} is not Latin-1", callee, i);
      }
    }
    return out;
  }

  void fill_dict(Value& dict, const ValuePtr& source, std::string_view callee) {
    if (source->kind == Kind::kDict) {
      for (const auto& [k, v] : source->entries) dict.set_item(k, v);
      check_size(dict.entries.size());
      return;
    }
    if (source->kind == Kind::kList || source->kind == Kind::kTuple) {
      for (const auto& pair : source->items) {
        if ((pair->kind != Kind::kList && pair->kind != Kind::kTuple) || pair->items.size() != 2) {
          error("{}: expected (key, value) pairs", callee);
        }
        set_item(dict, pair->items[0], pair->items[1]);
      }
      return;
    }
    error("{}: expected a dict or a list of pairs, found {}", callee, kind_name(source->kind));
  }

  void set_item(Value& dict, const ValuePtr& k, const ValuePtr& v) {
    try {
      dict.set_item(k, v);
    } catch (const LimitError&) {
      throw;
    } catch (const Error& e) {
      error("{}", e.what());
    }
    check_size(dict.entries.size());
  }
  void add_to_set(Value& set, const ValuePtr& item) {
    try {
      set.add_item(item);
    } catch (const LimitError&) {
      throw;
    } catch (const Error& e) {
      error("{}", e.what());
    }
    check_size(set.items.size());
  }

  // ---- BUILD --------------------------------------------------------------------------------
  void build(const ValuePtr& obj, const ValuePtr& state) {
    switch (obj->kind) {
      case Kind::kDict:
        // OrderedDict/Counter/defaultdict __dict__.update: state_dict()'s _metadata lives here.
        if (state->kind == Kind::kNone) return;
        if (state->kind != Kind::kDict) {
          error("BUILD on a {} expects a dict of attributes, found {}", obj->type_name,
                kind_name(state->kind));
        }
        merge_state(*obj, state);
        return;
      case Kind::kTensor:
        if (state->kind == Kind::kNone) return;
        if (state->kind == Kind::kDict) {
          merge_state(*obj, state);
          return;
        }
        // torch 0.3 Variable/Parameter: (requires_grad, volatile, backward_hooks).
        if (state->kind == Kind::kTuple && !state->items.empty() &&
            state->items[0]->kind == Kind::kBool && obj->tensor) {
          obj->tensor->requires_grad = state->items[0]->boolean;
          return;
        }
        error("BUILD on a tensor with an unexpected {} state", kind_name(state->kind));
      case Kind::kDType:
        if (obj->type_name == "numpy.dtype") {
          // (version, byteorder, subarray, names, fields, elsize, alignment, flags)
          if (state->kind != Kind::kTuple || state->items.size() < 2 ||
              state->items[1]->kind != Kind::kStr || state->items[1]->text.size() != 1) {
            error("BUILD on numpy.dtype expects (version, byteorder, ...)");
          }
          if (state->items.size() > 3 && state->items[3]->kind != Kind::kNone) {
            unsupported("numpy record dtypes (named fields) are not supported");
          }
          obj->integer = state->items[1]->text[0];
          return;
        }
        break;
      case Kind::kObject:
        if (obj->boolean && obj->type_name == "numpy.ndarray") {
          // (version, shape, dtype, is_fortran, data) or the older (shape, dtype, is_fortran, data)
          if (state->kind != Kind::kTuple || state->items.size() < 4) {
            error("BUILD on numpy.ndarray expects (version, shape, dtype, is_fortran, data)");
          }
          size_t base = state->items.size() == 5 ? 1 : 0;
          auto shape = int_tuple_arg(state->items[base], "numpy shape");
          make_numpy_tensor(*obj, shape, *state->items[base + 1],
                            bool_arg(state->items[base + 2], "is_fortran"), *state->items[base + 3],
                            Kind::kTensor);
          tensors_.push_back(obj);
          return;
        }
        if (!obj->boolean) {  // a salvage record keeps its state as data
          merge_state(*obj, state);
          return;
        }
        break;
      default:
        break;
    }
    error("BUILD on a {} ({}) is not allowed", kind_name(obj->kind), obj->type_name);
  }
  void merge_state(Value& obj, const ValuePtr& state) {
    if (obj.state && obj.state->kind == Kind::kDict && state->kind == Kind::kDict) {
      for (const auto& [k, v] : state->entries) set_item(*obj.state, k, v);
    } else {
      obj.state = state;
    }
  }

  // ---- the machine --------------------------------------------------------------------------
  ReadResult execute() {
    ReadResult result;
    bool first = true;
    uint64_t frame_end = 0;
    bool in_frame = false;
    while (true) {
      if (in_frame && in_.position() == frame_end) in_frame = false;
      op_offset_ = in_.position();
      op_ = 0;
      if (in_.at_end()) {
        throw Error(fmt::format("{}: offset {}: pickle ends without STOP (truncated?)",
                                options_.what, op_offset_));
      }
      op_ = in_.u8();
      dispatch(result, first, in_frame, frame_end);
      if (in_frame && in_.position() > frame_end) {
        error("opcode crosses the end of its FRAME (frame ends at offset {})", frame_end);
      }
      first = false;
      if (op_ == Op::STOP) break;
    }
    result.end_offset = in_.position();
    if (!options_.allow_trailing_data && !in_.at_end()) {
      throw Error(fmt::format("{}: offset {}: {} bytes of data after STOP", options_.what,
                              in_.position(), in_.remaining()));
    }
    return result;
  }

  void dispatch(ReadResult& result, bool first, bool& in_frame, uint64_t& frame_end) {
    switch (op_) {
      case Op::PROTO: {
        uint8_t p = u8();
        if (!first) error("PROTO must be the first opcode");
        if (p > 5) unsupported("pickle protocol {} is newer than 5", p);
        result.protocol = p;
        return;
      }
      case Op::FRAME: {
        uint64_t n = u64();
        if (in_frame) error("a new FRAME starts before the current one ends");
        if (n > in_.remaining()) {
          error("FRAME of {} bytes but only {} bytes left (truncated?)", n, in_.remaining());
        }
        if (n > 0) {
          in_frame = true;
          frame_end = in_.position() + n;
        }
        return;
      }
      case Op::STOP: {
        result.value = pop();
        if (!marks_.empty()) error("STOP with {} unclosed MARK(s)", marks_.size());
        if (!stack_.empty()) error("STOP leaves {} item(s) on the stack", stack_.size());
        return;
      }
      case Op::MARK:
        if (marks_.size() >= options_.limits.max_items) limit("too many MARKs");
        marks_.push_back(stack_.size());
        return;
      case Op::POP:
        if (!marks_.empty() && marks_.back() == stack_.size()) {
          marks_.pop_back();  // pickle.py pops a MARK when the stack above it is empty
        } else {
          pop();
        }
        return;
      case Op::POP_MARK:
        pop_mark();
        return;
      case Op::DUP:
        push(top());
        return;
      case Op::NONE:
        push(make(Kind::kNone));
        return;
      case Op::NEWTRUE:
      case Op::NEWFALSE: {
        auto v = make(Kind::kBool);
        v->boolean = op_ == Op::NEWTRUE;
        push(v);
        return;
      }
      case Op::INT: {
        auto line = take_line();
        if (line == "00" || line == "01") {
          auto v = make(Kind::kBool);
          v->boolean = line == "01";
          push(v);
        } else {
          push(int_from_decimal(line, false));
        }
        return;
      }
      case Op::BININT: {
        auto v = make(Kind::kInt);
        v->integer = static_cast<int32_t>(u32());
        push(v);
        return;
      }
      case Op::BININT1: {
        auto v = make(Kind::kInt);
        v->integer = u8();
        push(v);
        return;
      }
      case Op::BININT2: {
        auto v = make(Kind::kInt);
        v->integer = u16();
        push(v);
        return;
      }
      case Op::LONG:
        push(int_from_decimal(take_line(), true));
        return;
      case Op::LONG1:
      case Op::LONG4: {
        uint64_t n = op_ == Op::LONG1 ? u8() : u32();
        if (op_ == Op::LONG4 && n > 0x7FFFFFFF) error("LONG4 with negative byte count");
        if (n > kMaxLongBytes)
          limit("integer of {} bytes exceeds the limit of {}", n, kMaxLongBytes);
        push(int_from_bytes(take(n)));
        return;
      }
      case Op::FLOAT:
        push(float_from_text(take_line()));
        return;
      case Op::BINFLOAT: {
        take_check(8);
        auto v = make(Kind::kFloat);
        v->real = in_.f64_be();
        push(v);
        return;
      }
      case Op::STRING:
      case Op::BINSTRING:
      case Op::SHORT_BINSTRING: {
        std::string s;
        if (op_ == Op::STRING) {
          s = decode_string_repr(take_line());
        } else {
          uint64_t n = op_ == Op::BINSTRING ? u32() : u8();
          if (op_ == Op::BINSTRING && n > 0x7FFFFFFF) error("BINSTRING with negative length");
          s = take_string(n);
        }
        // Python 2 str: text when it decodes, else bytes (numpy data); raw bytes kept either way.
        bool text = valid_utf8(s);
        push(text ? str_value(std::move(s)) : bytes_value(std::move(s)));
        return;
      }
      case Op::BINBYTES:
        push(bytes_value(take_string(u32())));
        return;
      case Op::SHORT_BINBYTES:
        push(bytes_value(take_string(u8())));
        return;
      case Op::BINBYTES8:
        push(bytes_value(take_string(u64())));
        return;
      case Op::BYTEARRAY8:
        push(bytes_value(take_string(u64()), Kind::kByteArray));
        return;
      case Op::NEXT_BUFFER:
        unsupported(
            "the pickle refers to out-of-band buffers (protocol 5 NEXT_BUFFER), "
            "which a file cannot carry");
      case Op::READONLY_BUFFER:
        unsupported("READONLY_BUFFER without an out-of-band buffer");
      case Op::UNICODE:
        push(str_value(decode_raw_unicode_escape(take_line())));
        return;
      case Op::SHORT_BINUNICODE:
        push(str_value(take_string(u8())));
        return;
      case Op::BINUNICODE:
        push(str_value(take_string(u32())));
        return;
      case Op::BINUNICODE8:
        push(str_value(take_string(u64())));
        return;
      case Op::EMPTY_LIST:
        push(make(Kind::kList));
        return;
      case Op::EMPTY_TUPLE:
        push(make(Kind::kTuple));
        return;
      case Op::EMPTY_DICT:
        push(make(Kind::kDict));
        return;
      case Op::EMPTY_SET:
        push(make(Kind::kSet));
        return;
      case Op::LIST: {
        auto v = make(Kind::kList);
        v->items = pop_mark();
        push(v);
        return;
      }
      case Op::TUPLE:
        push(make_tuple(pop_mark()));
        return;
      case Op::TUPLE1:
      case Op::TUPLE2:
      case Op::TUPLE3: {
        size_t n = op_ - Op::TUPLE1 + 1;
        std::vector<ValuePtr> items(n);
        for (size_t i = n; i-- > 0;) items[i] = pop();
        push(make_tuple(std::move(items)));
        return;
      }
      case Op::DICT: {
        auto items = pop_mark();
        if (items.size() % 2 != 0) error("DICT with an odd number ({}) of items", items.size());
        auto v = make(Kind::kDict);
        for (size_t i = 0; i < items.size(); i += 2) set_item(*v, items[i], items[i + 1]);
        push(v);
        return;
      }
      case Op::FROZENSET: {
        auto items = pop_mark();
        auto v = make(Kind::kFrozenSet);
        for (auto& item : items) add_to_set(*v, item);
        push(v);
        return;
      }
      case Op::APPEND: {
        auto item = pop();
        append_items(top(), {std::move(item)});
        return;
      }
      case Op::APPENDS: {
        auto items = pop_mark();
        append_items(top(), std::move(items));
        return;
      }
      case Op::SETITEM: {
        auto value = pop();
        auto key = pop();
        set_items(top(), {std::move(key), std::move(value)});
        return;
      }
      case Op::SETITEMS: {
        auto items = pop_mark();
        if (items.size() % 2 != 0) error("SETITEMS with an odd number ({}) of items", items.size());
        set_items(top(), std::move(items));
        return;
      }
      case Op::ADDITEMS: {
        auto items = pop_mark();
        auto& target = top();
        if (target->kind != Kind::kSet)
          error("ADDITEMS on a {}, expected a set", kind_name(target->kind));
        for (auto& item : items) add_to_set(*target, item);
        return;
      }
      case Op::GET:
        memo_get(parse_index(take_line()));
        return;
      case Op::BINGET:
        memo_get(u8());
        return;
      case Op::LONG_BINGET:
        memo_get(u32());
        return;
      case Op::PUT:
        memo_put(parse_index(take_line()));
        return;
      case Op::BINPUT:
        memo_put(u8());
        return;
      case Op::LONG_BINPUT:
        memo_put(u32());
        return;
      case Op::MEMOIZE:
        memo_put(memo_.size());
        return;
      case Op::EXT1:
      case Op::EXT2:
      case Op::EXT4: {
        uint64_t code = op_ == Op::EXT1 ? u8() : op_ == Op::EXT2 ? u16() : u32();
        unsupported(
            "extension code {} refers to the copyreg extension registry, which torchless "
            "does not have (no checkpoint uses it)",
            code);
      }
      case Op::GLOBAL: {
        std::string module(take_line());
        std::string name(take_line());
        push(resolve_global(std::move(module), std::move(name)));
        return;
      }
      case Op::STACK_GLOBAL: {
        auto name = pop();
        auto module = pop();
        if (module->kind != Kind::kStr || name->kind != Kind::kStr) {
          error("STACK_GLOBAL expects two str, found {} and {}", kind_name(module->kind),
                kind_name(name->kind));
        }
        push(resolve_global(module->text, name->text));
        return;
      }
      case Op::REDUCE: {
        auto args = pop();
        auto callee = pop();
        push(call(callee, args, false));
        return;
      }
      case Op::NEWOBJ: {
        auto args = pop();
        auto cls = pop();
        push(call(cls, args, true));
        return;
      }
      case Op::NEWOBJ_EX: {
        auto kwargs = pop();
        auto args = pop();
        auto cls = pop();
        if (kwargs->kind != Kind::kDict) error("NEWOBJ_EX kwargs must be a dict");
        if (!kwargs->entries.empty()) {
          if (cls->kind == Kind::kGlobal && !cls->boolean) {
            auto v = salvage_record(cls, args, true);
            v->state = kwargs;
            push(v);
            return;
          }
          unsupported("NEWOBJ_EX with keyword arguments for {}", cls->type_name);
        }
        push(call(cls, args, true));
        return;
      }
      case Op::BUILD: {
        auto state = pop();
        build(top(), state);
        return;
      }
      case Op::INST: {
        std::string module(take_line());
        std::string name(take_line());
        auto cls = resolve_global(std::move(module), std::move(name));
        auto args = make_tuple(pop_mark());
        push(call(cls, args, false));
        return;
      }
      case Op::OBJ: {
        auto items = pop_mark();
        if (items.empty()) error("OBJ without a class");
        auto cls = items[0];
        auto args = make_tuple(std::vector<ValuePtr>(items.begin() + 1, items.end()));
        push(call(cls, args, false));
        return;
      }
      case Op::PERSID:
      case Op::BINPERSID: {
        ValuePtr pid;
        if (op_ == Op::PERSID) {
          pid = str_value(std::string(take_line()));
        } else {
          pid = pop();
        }
        if (!options_.persistent_load) {
          unsupported(
              "persistent id {} but no persistent_load is available (a torch storage "
              "reference outside a torch file?)",
              pid->repr(80));
        }
        ValuePtr v;
        try {
          v = options_.persistent_load(pid, op_offset_);
        } catch (const LimitError& e) {
          throw LimitError(where() + ": " + e.what());
        } catch (const UnsupportedError& e) {
          throw UnsupportedError(where() + ": " + e.what());
        } catch (const Error& e) {
          throw Error(where() + ": " + e.what());
        }
        if (!v) error("persistent id {} resolved to nothing", pid->repr(80));
        if (v->kind != Kind::kStorage && v->kind != Kind::kGlobal) containers_.push_back(v);
        push(v);
        return;
      }
      default:
        error("unknown opcode byte 0x{:02x}", op_);
    }
  }

  uint64_t parse_index(std::string_view line) {
    while (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    uint64_t v = 0;
    auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), v);
    if (ec != std::errc() || ptr != line.data() + line.size() || line.empty()) {
      error("expected a memo index, found '{}'", std::string(line.substr(0, 40)));
    }
    return v;
  }

  void append_items(const ValuePtr& target, std::vector<ValuePtr> items) {
    if (target->kind == Kind::kList || (target->kind == Kind::kObject && !target->boolean)) {
      check_size(target->items.size() + items.size());
      for (auto& item : items) target->items.push_back(std::move(item));
      return;
    }
    error("{} on a {}, expected a list", opcode_name(op_), kind_name(target->kind));
  }
  void set_items(const ValuePtr& target, std::vector<ValuePtr> items) {
    if (target->kind == Kind::kDict) {
      for (size_t i = 0; i < items.size(); i += 2) set_item(*target, items[i], items[i + 1]);
      return;
    }
    if (target->kind == Kind::kObject && !target->boolean) {
      for (size_t i = 0; i < items.size(); i += 2) {
        check_size(target->entries.size() + 1);
        target->entries.emplace_back(items[i], items[i + 1]);
      }
      return;
    }
    error("{} on a {}, expected a dict", opcode_name(op_), kind_name(target->kind));
  }

  // ---- graph checks -------------------------------------------------------------------------
  static void for_each_child(const Value& v, const std::function<void(const ValuePtr&)>& f) {
    for (const auto& item : v.items) f(item);
    for (const auto& [k, val] : v.entries) {
      f(k);
      f(val);
    }
    if (v.args) f(v.args);
    if (v.state) f(v.state);
    if (v.tensor) {
      if (v.tensor->per_channel_scales) f(v.tensor->per_channel_scales);
      if (v.tensor->per_channel_zero_points) f(v.tensor->per_channel_zero_points);
    }
  }

  // Refuses cycles and nesting deeper than max_depth over every container built (reachable or
  // not: unreachable ones are destroyed too, and destruction recurses).
  void check_graph() {
    op_ = 0;
    op_offset_ = in_.position();
    enum : uint8_t { kOpen = 1, kDone = 2 };
    std::unordered_map<const Value*, std::pair<uint8_t, uint32_t>> info;  // state, height
    info.reserve(containers_.size());
    struct Frame {
      const Value* node;
      std::vector<const Value*> children;
      size_t next = 0;
      uint32_t height = 0;
    };
    const uint32_t max_depth = options_.limits.max_depth;
    for (const auto& root : containers_) {
      if (info.count(root.get()) != 0) continue;
      std::vector<Frame> stack;
      auto open = [&](const Value* n) {
        Frame f{n, {}, 0, 0};
        for_each_child(*n, [&](const ValuePtr& c) { f.children.push_back(c.get()); });
        info[n] = {kOpen, 0};
        stack.push_back(std::move(f));
      };
      open(root.get());
      while (!stack.empty()) {
        Frame& f = stack.back();
        if (f.next < f.children.size()) {
          const Value* c = f.children[f.next++];
          auto it = info.find(c);
          if (it == info.end()) {
            if (stack.size() >= max_depth) {
              throw LimitError(fmt::format("{}: values nested deeper than the limit of {} levels",
                                           options_.what, max_depth));
            }
            open(c);
          } else if (it->second.first == kOpen) {
            throw UnsupportedError(fmt::format(
                "{}: the pickle builds a reference cycle (a {} that contains itself); torchless "
                "refuses self-referencing values",
                options_.what, kind_name(c->kind)));
          } else {
            f.height = std::max(f.height, it->second.second + 1);
          }
          continue;
        }
        uint32_t h = f.height;
        if (h > max_depth) {
          throw LimitError(fmt::format("{}: values nested deeper than the limit of {} levels",
                                       options_.what, max_depth));
        }
        info[f.node] = {kDone, h};
        stack.pop_back();
        if (!stack.empty()) stack.back().height = std::max(stack.back().height, h + 1);
      }
    }
  }

  // Drops every edge between containers so that nothing is destroyed recursively and cycles
  // cannot leak.
  void break_all() noexcept {
    stack_.clear();
    memo_.clear();
    for (auto& c : containers_) {
      c->items.clear();
      c->entries.clear();
      c->args.reset();
      c->state.reset();
      if (c->tensor) {
        c->tensor->per_channel_scales.reset();
        c->tensor->per_channel_zero_points.reset();
      }
    }
    containers_.clear();
    tensors_.clear();
  }

  void bind_available() {
    for (const auto& t : tensors_) {
      auto& s = t->tensor->storage;
      if (s && s->storage &&
          (s->storage->bound ||
           (s->storage->base && s->storage->base->storage && s->storage->base->storage->bound))) {
        bind_tensors({t});
      }
    }
  }

  const Buffer& bytes_;
  ByteReader in_;
  const ReadOptions& options_;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, ValuePtr> memo_;
  std::vector<ValuePtr> containers_;
  std::vector<ValuePtr> tensors_;
  std::vector<std::string> globals_;
  std::unordered_set<std::string> global_names_;
  std::vector<std::string> salvaged_;
  uint64_t op_offset_ = 0;
  uint8_t op_ = 0;
  uint64_t allocated_ = 0;
  uint64_t allocation_budget_ = 0;
};

}  // namespace

ReadResult read(const Buffer& bytes, const ReadOptions& options) {
  Unpickler unpickler(bytes, options);
  return unpickler.run();
}

}  // namespace torchless::pickle
