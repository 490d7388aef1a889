// Fuzzes the ONNX inspection parser: any bytes must give an OnnxModel or a torchless::Error,
// never a crash, hang or unbounded allocation. Initializers are read back as Tensors too, since
// that is where sizes from the file meet memory.
#include <cstddef>
#include <cstdint>

#include "torchless/formats/onnx_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using torchless::formats::OnnxModel;
  try {
    auto bytes =
        torchless::Buffer::copy_of(std::string_view(reinterpret_cast<const char*>(data), size));
    // No base folder: external initializers are refused when read, never opened.
    auto model = OnnxModel::parse(bytes, "fuzz");
    (void)model.op_histogram();
    (void)model.parameter_count();
    (void)model.initializer_bytes();
    for (const auto& init : model.initializers()) {
      try {
        auto tensor = model.initializer_tensor(init.name);
        if (tensor.numel() > 0) (void)tensor.to_bytes();
      } catch (const torchless::Error&) {
      }
    }
    for (const auto& v : model.inputs()) (void)v.describe();
  } catch (const torchless::Error&) {
  }
  return 0;
}
