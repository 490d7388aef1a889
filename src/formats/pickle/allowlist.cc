#include "formats/pickle/allowlist.h"

#include <array>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace torchless::pickle {
namespace {

using H = Handler;

// Legacy typed storage classes (torch.storage._dtype_to_storage_type_map) and their dtypes.
struct StorageName {
  std::string_view name;
  DType dtype;
};
constexpr std::array kStorageClasses = {
    StorageName{"DoubleStorage", DType::kFloat64},
    StorageName{"FloatStorage", DType::kFloat32},
    StorageName{"HalfStorage", DType::kFloat16},
    StorageName{"BFloat16Storage", DType::kBFloat16},
    StorageName{"LongStorage", DType::kInt64},
    StorageName{"IntStorage", DType::kInt32},
    StorageName{"ShortStorage", DType::kInt16},
    StorageName{"CharStorage", DType::kInt8},
    StorageName{"ByteStorage", DType::kUInt8},
    StorageName{"BoolStorage", DType::kBool},
    StorageName{"ComplexDoubleStorage", DType::kComplex128},
    StorageName{"ComplexFloatStorage", DType::kComplex64},
    StorageName{"QUInt8Storage", DType::kQUInt8},
    StorageName{"QInt8Storage", DType::kQInt8},
    StorageName{"QInt32Storage", DType::kQInt32},
    StorageName{"QUInt4x2Storage", DType::kQUInt4x2},
    StorageName{"QUInt2x4Storage", DType::kQUInt2x4},
    StorageName{"UntypedStorage", DType::kUInt8},
};

constexpr std::array<DType, 25> kAllDTypes = {
    DType::kBool,          DType::kUInt8,      DType::kInt8,         DType::kInt16,
    DType::kInt32,         DType::kInt64,      DType::kUInt16,       DType::kUInt32,
    DType::kUInt64,        DType::kFloat16,    DType::kBFloat16,     DType::kFloat32,
    DType::kFloat64,       DType::kComplex32,  DType::kComplex64,    DType::kComplex128,
    DType::kQUInt8,        DType::kQInt8,      DType::kQInt32,       DType::kQUInt4x2,
    DType::kQUInt2x4,      DType::kFloat8E5M2, DType::kFloat8E4M3FN, DType::kFloat8E5M2FNUZ,
    DType::kFloat8E4M3FNUZ};

struct Table {
  std::unordered_map<std::string, GlobalSpec> by_key;

  void add(std::string module, std::string name, Handler handler, DType dtype = DType::kUInt8) {
    std::string key = module + '\n' + name;
    by_key[key] = GlobalSpec{handler, dtype};
  }

  Table() {
    const std::string utils = "torch._utils";
    add(utils, "_rebuild_tensor", H::kRebuildTensor);
    add(utils, "_rebuild_tensor_v2", H::kRebuildTensorV2);
    add(utils, "_rebuild_tensor_v3", H::kRebuildTensorV3);
    add(utils, "_rebuild_parameter", H::kRebuildParameter);
    add(utils, "_rebuild_parameter_with_state", H::kRebuildParameterWithState);
    add(utils, "_rebuild_qtensor", H::kRebuildQTensor);
    add(utils, "_rebuild_sparse_tensor", H::kRebuildSparseTensor);
    add(utils, "_rebuild_sparse_csr_tensor", H::kRebuildSparseCsrTensor);
    add(utils, "_rebuild_device_tensor_from_numpy", H::kRebuildDeviceTensorFromNumpy);
    add(utils, "_rebuild_meta_tensor_no_storage", H::kRebuildMetaTensorNoStorage);
    add("torch._tensor", "_rebuild_from_type_v2", H::kRebuildFromTypeV2);
    // torch/serialization.py load_module_mapping: 'torch.tensor' -> 'torch._tensor'.
    add("torch.tensor", "_rebuild_from_type_v2", H::kRebuildFromTypeV2);
    add("torch.storage", "_load_from_bytes", H::kLoadFromBytes);
    for (const auto& s : kStorageClasses) {
      add("torch", std::string(s.name), H::kStorageClass, s.dtype);
      // Storages saved from GPU tensors by old torch name the CUDA classes.
      add("torch.cuda", std::string(s.name), H::kStorageClass, s.dtype);
    }
    add("torch.storage", "TypedStorage", H::kStorageClass, DType::kUInt8);
    add("torch.storage", "UntypedStorage", H::kStorageClass, DType::kUInt8);
    for (DType d : kAllDTypes) add("torch", std::string(dtype_name(d)), H::kDType, d);
    add("torch", "Size", H::kSize);
    add("torch", "device", H::kDevice);
    for (const char* q : {"per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
                          "per_channel_symmetric", "per_channel_affine_float_qparams"}) {
      add("torch", q, H::kQScheme);
    }
    add("torch.serialization", "_get_layout", H::kGetLayout);
    add("torch", "Tensor", H::kTensorClass);
    add("torch._tensor", "Tensor", H::kTensorClass);
    add("torch.nn.parameter", "Parameter", H::kParameterClass);
    add("collections", "OrderedDict", H::kOrderedDict);
    add("collections", "Counter", H::kCounter);
    add("collections", "defaultdict", H::kDefaultDict);
    // Python 2 names: protocol 0-2 pickles written by Python 3 still say __builtin__.
    for (const char* builtins : {"builtins", "__builtin__"}) {
      add(builtins, "set", H::kSet);
      add(builtins, "frozenset", H::kFrozenSet);
      add(builtins, "complex", H::kComplex);
      add(builtins, "bytearray", H::kByteArray);
      add(builtins, "slice", H::kSlice);
      add(builtins, "range", H::kRange);
      add(builtins, "xrange", H::kRange);
      for (const char* type : {"list", "dict", "int", "float", "str", "tuple", "bool", "bytes",
                               "object", "long", "unicode"}) {
        add(builtins, type, H::kBuiltinType);
      }
    }
    add("_codecs", "encode", H::kCodecsEncode);
    for (const char* core : {"numpy.core.multiarray", "numpy._core.multiarray"}) {
      add(core, "_reconstruct", H::kNumpyReconstruct);
      add(core, "scalar", H::kNumpyScalar);
    }
    add("numpy.core.numeric", "_frombuffer", H::kNumpyFromBuffer);
    add("numpy._core.numeric", "_frombuffer", H::kNumpyFromBuffer);
    add("numpy", "ndarray", H::kNumpyNdarray);
    add("numpy", "dtype", H::kNumpyDType);
    add("copyreg", "_reconstructor", H::kReconstructor);
    add("copy_reg", "_reconstructor", H::kReconstructor);
  }
};

const Table& table() {
  static const Table t;
  return t;
}

}  // namespace

const GlobalSpec* find_global(std::string_view module, std::string_view name) {
  std::string key;
  key.reserve(module.size() + name.size() + 1);
  key.append(module);
  key += '\n';
  key.append(name);
  const auto& t = table();
  auto it = t.by_key.find(key);
  return it == t.by_key.end() ? nullptr : &it->second;
}

bool is_dangerous_global(std::string_view module, std::string_view name) {
  auto root = module.substr(0, module.find('.'));
  static constexpr std::array<std::string_view, 40> kModules = {"os",
                                                                "posix",
                                                                "nt",
                                                                "subprocess",
                                                                "sys",
                                                                "socket",
                                                                "shutil",
                                                                "runpy",
                                                                "pty",
                                                                "ctypes",
                                                                "importlib",
                                                                "pickle",
                                                                "_pickle",
                                                                "marshal",
                                                                "types",
                                                                "code",
                                                                "codeop",
                                                                "webbrowser",
                                                                "asyncio",
                                                                "multiprocessing",
                                                                "pip",
                                                                "pydoc",
                                                                "operator",
                                                                "functools",
                                                                "commands",
                                                                "cProfile",
                                                                "profile",
                                                                "pdb",
                                                                "timeit",
                                                                "io",
                                                                "tempfile",
                                                                "platform",
                                                                "signal",
                                                                "threading",
                                                                "_thread",
                                                                "bdb",
                                                                "trace",
                                                                "_io",
                                                                "_posixsubprocess",
                                                                "popen2"};
  for (auto m : kModules) {
    if (root == m) return true;
  }
  if (root == "builtins" || root == "__builtin__") return find_global(module, name) == nullptr;
  if (module == "torch.serialization" && name != "_get_layout") return true;
  if (module.starts_with("torch._inductor") || module == "torch.hub" ||
      module.starts_with("torch.distributed")) {
    return true;
  }
  return false;
}

}  // namespace torchless::pickle
