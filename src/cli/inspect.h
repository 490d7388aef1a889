// `torchless inspect FILE`: what a file holds. The command detects the format from the file's
// content (detect_format) and hands the file to the Inspector registered under that format's
// name. Each Inspector fills one Inspection; the command prints it as a tree for people or as
// JSON (--json) for programs. A format's inspector can live in its own file:
//
//   static InspectorRegistration kOnnx{"onnx", [](const InspectRequest& request) {
//     Inspection out;
//     out.format = "onnx";
//     ...
//     return out;
//   }};
//
// JSON schema (version 1), stable:
//   {"schema": 1, "file": str, "format": str, "version": str,
//    "details": {format-specific key: value},
//    "globals": [str],                         // pickles: "module.name" in first-seen order
//    "tree": node,                             // the value tree, when the format has one
//    "tensors": [{"name": str, "dtype": str, "shape": [int], "bytes": int, "note"?: str}],
//    "totals": {"tensors": int, "parameters": int, "bytes": int}}
//   node: {"type": "dict"|"list"|"tuple"|"tensor"|"value", "name": str, then
//          containers: "class": str, "children": [node]; tensors: "dtype", "shape", "bytes";
//          values: "value": str (a short Python-like repr)}
#pragma once

#include <climits>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "torchless/core/buffer.h"
#include "torchless/core/tensor.h"

namespace torchless::cli {

struct InspectRequest {
  std::filesystem::path path;
  Buffer bytes;          // the mapped file
  bool salvage = false;  // pickles: keep non-allowlisted objects as inert records
};

struct InspectedTensor {
  std::string name;  // dotted or '/'-separated path
  DType dtype = DType::kFloat32;
  Shape shape;
  uint64_t bytes = 0;  // numel x itemsize
  std::string note;    // "shares storage with x", "Parameter", "fortran order", ...
};

// A node of the value tree (checkpoints and pickles hold more than tensors).
struct InspectNode {
  enum class Type { kDict, kList, kTuple, kTensor, kValue } type = Type::kValue;
  std::string name;          // key or index in its parent
  std::string value;         // kValue: a short repr
  size_t tensor = SIZE_MAX;  // kTensor: index into Inspection::tensors
  std::vector<InspectNode> children;
};

struct Inspection {
  std::string format;   // "pytorch-zip", "pytorch-legacy", "pickle", "safetensors", "npy", ...
  std::string version;  // the format's own version string, "" if it has none
  nlohmann::ordered_json details = nlohmann::ordered_json::object();
  std::vector<std::string> globals;
  std::vector<InspectedTensor> tensors;
  std::optional<InspectNode> tree;  // absent: the tensors are the whole content
};

using Inspector = std::function<Inspection(const InspectRequest&)>;

std::map<std::string, Inspector>& inspector_registry();

struct InspectorRegistration {
  InspectorRegistration(const std::string& format, Inspector inspector) {
    inspector_registry()[format] = std::move(inspector);
  }
};

// The format name of `bytes` ("pytorch-zip", "npz", "zip", "safetensors", "npy",
// "pytorch-legacy", "pickle", "onnx"), judged by content (the extension only breaks the tie for
// ONNX, whose protobuf has no magic number). Throws Error saying what the file looks like
// when it is none of them (Git LFS pointer, HTML, empty file, ...).
std::string detect_format(const std::filesystem::path& path, const Buffer& bytes);

// The Inspection as JSON (the schema above) and as text.
nlohmann::ordered_json inspection_json(const std::filesystem::path& path, const Inspection& in);
std::string inspection_text(const std::filesystem::path& path, const Inspection& in);

// "512 B", "1.5 MiB": the byte sizes every inspector prints.
std::string size_text(uint64_t bytes);

}  // namespace torchless::cli
