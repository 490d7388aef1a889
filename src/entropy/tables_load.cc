// load_tables: recognises the source by its content, not its extension.
#include <cctype>

#include "torchless/core/buffer.h"
#include "torchless/core/error.h"
#include "torchless/entropy/tables.h"
#include "torchless/formats/safetensors.h"

namespace torchless::entropy {

EntropyTables load_tables(const std::filesystem::path& path, std::string_view prefix) {
  const Buffer bytes = Buffer::map_file(path);
  const std::string what = path.string();
  const std::string_view head = bytes.view().substr(0, 8);
  if (head == "TLTABLES") return read_tables_bin(bytes.bytes(), what);
  // Before JSON: a safetensors header length can start with a '{' or whitespace byte, while a
  // JSON file's first 8 bytes are never a plausible header length.
  if (formats::SafetensorsFile::looks_like_safetensors(bytes.bytes())) {
    return read_tables_safetensors(formats::SafetensorsFile::parse(bytes, what), prefix);
  }
  for (char c : bytes.view()) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    if (c == '{') return read_tables_json(bytes.view(), what);
    break;
  }
  if (head.starts_with("PK\x03\x04") || (!head.empty() && head[0] == '\x80')) {
    return read_tables_checkpoint(torch_file::TorchCheckpoint::read(bytes, what), prefix);
  }
  fail(
      "{}: not an entropy tables file (expected a TLTABLES binary sidecar, a JSON sidecar, a "
      "PyTorch checkpoint or a safetensors file)",
      what);
}

}  // namespace torchless::entropy
