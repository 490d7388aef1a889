// The allowlist: the only (module, name) pairs a pickle may name, each with the C++ handler that
// gives it meaning. Matching is on exact strings: no dotted-name resolution, no prefixes.
#pragma once

#include <cstdint>
#include <string_view>

#include "torchless/core/dtype.h"

namespace torchless::pickle {

enum class Handler : uint8_t {
  kRebuildTensor,     // torch._utils._rebuild_tensor
  kRebuildTensorV2,   // torch._utils._rebuild_tensor_v2
  kRebuildTensorV3,   // torch._utils._rebuild_tensor_v3
  kRebuildParameter,  // torch._utils._rebuild_parameter
  kRebuildParameterWithState,
  kRebuildQTensor,
  kRebuildSparseTensor,
  kRebuildSparseCsrTensor,
  kRebuildDeviceTensorFromNumpy,
  kRebuildMetaTensorNoStorage,
  kRebuildFromTypeV2,  // torch._tensor._rebuild_from_type_v2
  kLoadFromBytes,      // torch.storage._load_from_bytes
  kStorageClass,       // torch.FloatStorage, ...: a type tag for persistent ids
  kDType,              // torch.float32, ...: a value
  kSize,               // torch.Size
  kDevice,             // torch.device
  kQScheme,            // torch.per_tensor_affine, ...: a value
  kGetLayout,          // torch.serialization._get_layout
  kTensorClass,        // torch.Tensor: a type tag for _rebuild_from_type_v2
  kParameterClass,     // torch.nn.parameter.Parameter
  kOrderedDict,
  kCounter,
  kDefaultDict,
  kSet,
  kFrozenSet,
  kComplex,
  kByteArray,
  kSlice,
  kRange,
  kBuiltinType,  // builtins.list/dict/int/...: inert type tags (defaultdict factories)
  kCodecsEncode,
  kNumpyReconstruct,
  kNumpyNdarray,
  kNumpyDType,
  kNumpyScalar,
  kNumpyFromBuffer,
  kReconstructor,  // copyreg._reconstructor: only meaningful in salvage mode
};

struct GlobalSpec {
  Handler handler;
  DType dtype = DType::kUInt8;  // kStorageClass, kDType
};

// The spec of (module, name), or null when it is not allowlisted.
const GlobalSpec* find_global(std::string_view module, std::string_view name);
// True for modules whose globals are refused even in salvage mode (os, subprocess, builtins
// functions, ...): a pickle naming them is an attack, not a checkpoint to salvage.
bool is_dangerous_global(std::string_view module, std::string_view name);

}  // namespace torchless::pickle
