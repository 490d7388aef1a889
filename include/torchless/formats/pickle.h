// A safe reader and a writer for Python pickles (protocols 0-5), as PyTorch checkpoints and
// training scripts write them. Reading builds an inert value tree: nothing is ever executed.
// GLOBAL/STACK_GLOBAL resolve only through an allowlist of exact (module, name) pairs, each
// mapped to a C++ handler (see docs/formats/pickle-allowlist.md); anything else is rejected
// with its name, or, in opt-in salvage mode, kept as an inert record.
//
// Values are shared the way the pickle memo shares them (shared_ptr, never deep copies).
// Reference cycles (a list containing itself) are refused: read() breaks them before throwing,
// so nothing leaks. Nesting deeper than Limits::max_depth is refused the same way.
// Thread-safety: a finished value tree is immutable by convention and may be read concurrently.
#pragma once

#include <complex>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "torchless/core/buffer.h"
#include "torchless/core/limits.h"
#include "torchless/core/tensor.h"

namespace torchless::pickle {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

enum class Kind : uint8_t {
  kNone,
  kBool,
  kInt,     // fits int64
  kBigInt,  // does not fit int64; exact decimal in Value::text
  kFloat,
  kComplex,
  kStr,        // UTF-8 in Value::text
  kBytes,      // raw bytes in Value::text
  kByteArray,  // raw bytes in Value::text
  kList,
  kTuple,  // type_name "torch.Size", "builtins.slice", "builtins.range" for those types
  kDict,   // type_name "collections.OrderedDict", "collections.Counter", "collections.defaultdict"
  kSet,
  kFrozenSet,
  kGlobal,        // an uncalled class/function/enum value, qualified name in type_name
                  // (torch.per_tensor_affine, torch.sparse_coo, numpy.ndarray, torch.FloatStorage)
  kDType,         // torch dtype (torch.float32) or numpy dtype; Value::dtype
  kDevice,        // torch.device; "cpu", "cuda:0" in Value::text
  kStorage,       // a torch storage from a persistent id; Value::storage
  kTensor,        // torch tensor, Parameter, quantized tensor, numpy array; Value::tensor
  kScalar,        // numpy scalar: a 0-d tensor in Value::tensor
  kSparseTensor,  // layout in type_name; components (indices, values | crow, col, values) in items
  kObject,        // salvage record of a non-allowlisted class (qualified name in type_name)
};

std::string_view kind_name(Kind kind);

// A torch storage named by a persistent id ('storage', torch.FloatStorage, key, location, numel).
// The container binds its bytes (zip record / legacy stream slice) before tensors are built.
struct StorageInfo {
  std::string key;
  std::string type_name;  // "torch.FloatStorage", "torch.UntypedStorage"
  DType dtype = DType::kUInt8;
  std::string location;  // "cpu", "cuda:0": metadata only
  uint64_t numel = 0;    // elements of dtype
  Buffer data;           // valid once bound
  bool bound = false;
  // Legacy view storages (6th pid element): a slice [view_offset, view_offset + numel) of base.
  ValuePtr base;
  uint64_t view_offset = 0;
};

// A tensor as the pickle describes it, and the Tensor view once its storage is bound.
struct TensorInfo {
  Tensor tensor;  // valid once bound
  bool bound = false;
  ValuePtr storage;  // kStorage node; null for tensors whose bytes came inside the pickle
  DType dtype = DType::kFloat32;
  Shape shape;
  std::vector<int64_t> strides;
  int64_t storage_offset = 0;
  bool requires_grad = false;
  bool is_parameter = false;
  bool from_numpy = false;
  std::optional<Quantization> quantization;
  // Per-channel quantization parameters arrive as tensors; resolved into `quantization` on bind.
  ValuePtr per_channel_scales;
  ValuePtr per_channel_zero_points;
  bool byteswap = false;  // bytes are big-endian: bind swaps them into a copy
};

// One node of the value tree. Fields that do not apply to `kind` are empty.
struct Value {
  Kind kind = Kind::kNone;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;  // kFloat; kComplex real part
  double imag = 0;  // kComplex imaginary part
  std::string text;
  std::string type_name;
  std::vector<ValuePtr> items;  // list, tuple, set, frozenset; record list items
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;  // dict (insertion order); record dict items
  ValuePtr args;        // kObject: constructor arguments (a tuple); null when none
  bool newobj = false;  // kObject: made by NEWOBJ (args are __new__ arguments)
  ValuePtr state;  // BUILD state: OrderedDict attributes (_metadata), record __setstate__ state
  DType dtype = DType::kFloat32;  // kDType
  std::shared_ptr<StorageInfo> storage;
  std::shared_ptr<TensorInfo> tensor;

  static ValuePtr none();
  static ValuePtr from_bool(bool v);
  static ValuePtr from_int(int64_t v);
  static ValuePtr from_float(double v);
  static ValuePtr from_str(std::string v);
  static ValuePtr from_bytes(std::string v);
  static ValuePtr list(std::vector<ValuePtr> items = {});
  static ValuePtr tuple(std::vector<ValuePtr> items = {});
  static ValuePtr dict(std::string type_name = "");  // "collections.OrderedDict" for state_dicts
  static ValuePtr from_dtype(DType dtype);
  // A torch tensor (a Parameter when is_parameter). Its storage is the Tensor's Buffer.
  static ValuePtr from_tensor(Tensor t, bool requires_grad = false, bool is_parameter = false);

  bool is_dict() const { return kind == Kind::kDict; }
  bool is_sequence() const { return kind == Kind::kList || kind == Kind::kTuple; }
  bool is_tensor() const { return kind == Kind::kTensor && tensor != nullptr; }

  // dict[key] = value with Python semantics: an existing equal key keeps its position and its
  // original key object; the value is replaced. Throws Error for unhashable keys.
  void set_item(ValuePtr key, ValuePtr value);
  // set.add(item) with Python equality.
  void add_item(ValuePtr item);
  // The value of string key `key` in a dict (or record dict items), or null.
  ValuePtr get(std::string_view key) const;

  std::optional<int64_t> as_int() const;    // kInt, kBool
  std::optional<double> as_double() const;  // kFloat, kInt, kBool, 0-d numeric tensor/scalar
  // Python-like rendering, bounded in depth and length (for messages and `inspect`).
  std::string repr(size_t max_chars = 200) const;

 private:
  // Canonical key -> index into entries/items, for Python-equality lookups.
  std::unordered_map<std::string, size_t> index_;
};

// Python's notion of equal hashable keys (1 == 1.0 == True, tuples elementwise, ...) as a string.
// Throws Error for unhashable values (list, dict, set, bytearray).
std::string hash_key(const Value& value);

struct ReadOptions {
  Limits limits = Limits::defaults();
  // Unknown globals become kObject records instead of errors. Nothing executes either way.
  bool salvage = false;
  // Resolves PERSID/BINPERSID ids (`pid` is the id object; `offset` its opcode's position). Without
  // one, a persistent id is an error.
  std::function<ValuePtr(const ValuePtr& pid, uint64_t offset)> persistent_load;
  // torch.storage._load_from_bytes(b): a storage saved as a nested legacy torch stream.
  std::function<ValuePtr(const std::string& bytes)> load_from_bytes;
  // Stop at STOP and report where: legacy torch streams hold several pickles back to back.
  bool allow_trailing_data = false;
  // Names the input in messages ("model.pt: archive/data.pkl").
  std::string what = "pickle";
};

struct ReadResult {
  ValuePtr value;
  uint64_t end_offset = 0;            // just past STOP
  int protocol = 0;                   // from PROTO; 0 or 1 when absent
  std::vector<std::string> globals;   // "module.name", first-seen order, unique
  std::vector<std::string> salvaged;  // the subset of globals kept as inert records
  std::vector<ValuePtr> tensors;      // every tensor/scalar node built, in creation order
};

// Reads one pickle from `bytes`. Throws Error (offset and opcode name in the message),
// LimitError, or UnsupportedError. Tensors whose storages are bound are bound on return;
// others wait for bind_tensors().
ReadResult read(const Buffer& bytes, const ReadOptions& options = {});

// Builds the Tensor of every node in `tensors` (creation order) whose storage is now bound,
// validating each view against its storage. Throws Error naming the first bad one.
void bind_tensors(const std::vector<ValuePtr>& tensors);

// Where a tensor's storage goes when writing: torch's persistent id fields.
struct StorageRef {
  std::string key;
  std::string location = "cpu";
  uint64_t numel = 0;  // elements of the tensor's dtype in the whole storage
};

struct WriteOptions {
  int protocol = 2;  // 2 (torch.save's default) or 4 (framed, SHORT_BINUNICODE, MEMOIZE)
  // Maps a tensor to its storage's persistent id. Required when the tree holds tensors.
  std::function<StorageRef(const Tensor& tensor)> storage_ref;
};

// Serialises `root` so that Python's pickle.loads / torch.load read it back. Nodes reachable
// twice are written once and shared through the memo, as Python does.
std::string write(const Value& root, const WriteOptions& options = {});

}  // namespace torchless::pickle
