#include "torchless/entropy/tables.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "entropy/test_vectors.h"
#include "torchless/core/buffer.h"
#include "torchless/core/crc32.h"
#include "torchless/core/error.h"

namespace torchless::entropy {
namespace {

using torchless::testing::fixture;

EntropyTables eb_reference() {
  return testing::eb_tables_from_vectors(testing::compressai_vectors("eb_vectors.json"));
}
EntropyTables gc_reference() {
  return testing::gc_tables_from_vectors(testing::compressai_vectors("gc_vectors.json"));
}

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

std::string error_of_bin(const std::string& bytes) {
  try {
    read_tables_bin(bytes_of(bytes), "t.bin");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string error_of_json(const std::string& text) {
  try {
    read_tables_json(text, "t.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Re-seals a modified .bin with a correct CRC, so that only the modification is tested.
std::string reseal(std::string bytes) {
  bytes.resize(bytes.size() - 4);
  uint32_t crc = crc32(bytes_of(bytes));
  for (int b = 0; b < 4; ++b) bytes += static_cast<char>(crc >> (8 * b));
  return bytes;
}

void set_u32(std::string& bytes, size_t offset, uint32_t v) {
  for (int b = 0; b < 4; ++b) bytes[offset + b] = static_cast<char>(v >> (8 * b));
}

TEST(EntropyTablesBin, ReadsWhatPythonWroteForEntropyBottleneck) {
  EXPECT_EQ(load_tables(fixture("entropy", "eb_tables.bin")), eb_reference());
}

TEST(EntropyTablesBin, ReadsWhatPythonWroteForGaussianConditional) {
  EXPECT_EQ(load_tables(fixture("entropy", "gc_tables.bin")), gc_reference());
}

TEST(EntropyTablesBin, WritesTheBytesPythonWrote) {
  auto python = Buffer::map_file(fixture("entropy", "eb_tables.bin"));
  EXPECT_EQ(write_tables_bin(eb_reference()), python.view());
  auto python_gc = Buffer::map_file(fixture("entropy", "gc_tables.bin"));
  EXPECT_EQ(write_tables_bin(gc_reference()), python_gc.view());
}

TEST(EntropyTablesJson, ReadsWhatPythonWrote) {
  EXPECT_EQ(load_tables(fixture("entropy", "eb_tables.json")), eb_reference());
  EXPECT_EQ(load_tables(fixture("entropy", "gc_tables.json")), gc_reference());
}

TEST(EntropyTablesJson, RoundTripsFloat32Exactly) {
  for (const auto& t : {eb_reference(), gc_reference()}) {
    EXPECT_EQ(read_tables_json(write_tables_json(t)), t);
  }
}

TEST(EntropyTablesJson, PythonReadsBackTheSameTables) {
  auto dir = torchless::testing::temp_dir();
  auto path = dir / "eb.json";
  std::ofstream(path) << write_tables_json(eb_reference());
  std::string script =
      "import json,sys,torch; d=json.load(open(sys.argv[1])); "
      "sd=torch.load(sys.argv[2]); m=sd['quantiles'][:,0,1]; "
      "ok = d['format']=='torchless.entropy_tables' and d['kind']=='EntropyBottleneck' and "
      "d['quantized_cdf']==sd['_quantized_cdf'].tolist() and "
      "d['cdf_lengths']==sd['_cdf_length'].tolist() and d['offsets']==sd['_offset'].tolist() and "
      "torch.equal(torch.tensor(d['medians'],dtype=torch.float32), m); print('ok' if ok else "
      "'bad')";
  std::string output;
  int status = torchless::testing::run_command(
      torchless::testing::python() + " -c \"" + script + "\" " + path.string() + " " +
          (torchless::testing::shared_dir() / "vectors/compressai/eb.pt").string(),
      &output);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(output, "ok\n");
}

TEST(EntropyTablesBin, RejectsBadMagic) {
  std::string bytes = write_tables_bin(eb_reference());
  bytes[0] = 'X';
  EXPECT_NE(error_of_bin(bytes).find("not a torchless tables file"), std::string::npos);
}

TEST(EntropyTablesBin, RejectsUnknownVersionAndKind) {
  std::string bytes = write_tables_bin(eb_reference());
  std::string v2 = bytes;
  set_u32(v2, 8, 2);
  EXPECT_NE(error_of_bin(reseal(v2)).find("unsupported version 2"), std::string::npos);
  std::string k3 = bytes;
  set_u32(k3, 12, 3);
  EXPECT_NE(error_of_bin(reseal(k3)).find("unknown kind 3"), std::string::npos);
}

TEST(EntropyTablesBin, RejectsSizesInconsistentWithTheFile) {
  std::string bytes = write_tables_bin(eb_reference());
  EXPECT_NE(error_of_bin(bytes.substr(0, bytes.size() - 8)).find("the file has"),
            std::string::npos);
  std::string huge = bytes;
  set_u32(huge, 20, 0xFFFFFFFF);  // num_tables
  EXPECT_NE(error_of_bin(reseal(huge)).find("the file has"), std::string::npos);
}

TEST(EntropyTablesBin, RejectsCrcMismatch) {
  std::string bytes = write_tables_bin(eb_reference());
  bytes[100] ^= 1;
  EXPECT_NE(error_of_bin(bytes).find("CRC-32 mismatch"), std::string::npos);
}

TEST(EntropyTablesBin, RejectsInvalidTablesUnderAValidCrc) {
  std::string bytes = write_tables_bin(eb_reference());
  // The first cdf entry of table 0 (after the 36-byte header, 8 offsets and 8 lengths).
  set_u32(bytes, 36 + 8 * 4 * 2, 5);
  EXPECT_NE(error_of_bin(reseal(bytes)).find("table 0: cdf[0] is 5"), std::string::npos);
}

TEST(EntropyTablesJson, RejectsWrongFormatKindAndShapes) {
  auto doc = nlohmann::json::parse(write_tables_json(eb_reference()));
  auto with = [&](const char* key, nlohmann::json value) {
    auto d = doc;
    d[key] = std::move(value);
    return error_of_json(d.dump());
  };
  EXPECT_NE(with("format", "other").find("\"format\""), std::string::npos);
  EXPECT_NE(with("version", 2).find("unsupported version"), std::string::npos);
  EXPECT_NE(with("kind", "GMM").find("kind \"GMM\""), std::string::npos);
  EXPECT_NE(with("precision", 15).find("precision 15"), std::string::npos);
  EXPECT_NE(with("offsets", {1, 2}).find("offsets"), std::string::npos);
  EXPECT_NE(with("medians", {0.5}).find("1 medians"), std::string::npos);
  EXPECT_NE(with("medians", "x").find("not an array"), std::string::npos);
  auto d = doc;
  d.erase("cdf_lengths");
  EXPECT_NE(error_of_json(d.dump()).find("missing field \"cdf_lengths\""), std::string::npos);
  EXPECT_NE(error_of_json("{\"format\": ").find("not valid JSON"), std::string::npos);
}

TEST(EntropyTablesCheckpoint, ReadsCompressAIModuleStateDicts) {
  auto shared = torchless::testing::shared_dir() / "vectors" / "compressai";
  EXPECT_EQ(load_tables(shared / "eb.pt"), eb_reference());
  EXPECT_EQ(load_tables(shared / "gc.pt"), gc_reference());
}

TEST(EntropyTablesCheckpoint, ReadsModulesByPrefixInsideATrainingCheckpoint) {
  auto path = fixture("entropy", "model_checkpoint.pt");
  EXPECT_EQ(load_tables(path, "feats_eblock."), eb_reference());
  EXPECT_EQ(load_tables(path, "gaussian."), gc_reference());
}

TEST(EntropyTablesCheckpoint, NamesThePrefixesItFoundWhenThePrefixIsWrong) {
  try {
    load_tables(fixture("entropy", "model_checkpoint.pt"), "");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("feats_eblock., gaussian."), std::string::npos)
        << e.what();
  }
}

TEST(EntropyTablesCheckpoint, ReadsTorchSavedTableDicts) {
  EXPECT_EQ(load_tables(fixture("entropy", "eb_tables.pt")), eb_reference());
  EXPECT_EQ(load_tables(fixture("entropy", "gc_tables.pt")), gc_reference());
}

TEST(EntropyTables, EverySourceGivesIdenticalTables) {
  auto checkpoint = fixture("entropy", "model_checkpoint.pt");
  auto safetensors = fixture("entropy", "model_state_dict.safetensors");
  for (const auto& [prefix, stem] :
       {std::pair<std::string, std::string>{"feats_eblock.", "eb"}, {"gaussian.", "gc"}}) {
    auto from_module = load_tables(checkpoint, prefix);
    EXPECT_EQ(from_module, stem == "eb" ? eb_reference() : gc_reference());
    EXPECT_EQ(load_tables(safetensors, prefix), from_module) << stem;
    for (const char* ext : {"_tables.pt", "_tables.json", "_tables.bin", "_tables.safetensors"}) {
      EXPECT_EQ(load_tables(fixture("entropy", stem + ext)), from_module) << stem << ext;
    }
  }
}

TEST(EntropyTablesSafetensors, NamesThePrefixesItFoundWhenThePrefixIsWrong) {
  try {
    load_tables(fixture("entropy", "model_state_dict.safetensors"), "decoder.");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model_state_dict.safetensors (prefix 'decoder.'): no "
                                         "'decoder._quantized_cdf' buffer; entropy models found "
                                         "under the prefixes: feats_eblock., gaussian."),
              std::string::npos)
        << e.what();
  }
}

TEST(EntropyTablesSafetensors, RejectsTableFilesWithMissingOrWrongTensors) {
  const auto dir = torchless::testing::temp_dir();
  const auto gc = gc_reference();
  const auto& cdf = gc.cdfs;
  auto i32 = [](const std::vector<int32_t>& v, Shape shape) {
    return Tensor::from_vector(v, std::move(shape));
  };
  const auto n = static_cast<int64_t>(cdf.size());
  formats::NamedTensors good = {
      {"quantized_cdf", i32(cdf.quantized_cdf(), {n, cdf.row_stride()})},
      {"cdf_lengths", i32(cdf.cdf_lengths(), {n})},
      {"offsets", i32(cdf.offsets(), {n})},
      {"scale_table", Tensor::from_vector(gc.scale_table, Shape{n})},
      {"scale_bound", Tensor::from_vector(std::vector<float>{gc.scale_bound}, Shape{1})}};
  const std::map<std::string, std::string> meta{{"kind", "GaussianConditional"}};
  // What this project writes, it reads back to the same tables.
  formats::save_safetensors(dir / "good.safetensors", good, meta);
  EXPECT_EQ(load_tables(dir / "good.safetensors"), gc);

  auto expect_error = [&](const formats::NamedTensors& tensors,
                          const std::map<std::string, std::string>& metadata,
                          const std::string& needle) {
    formats::save_safetensors(dir / "bad.safetensors", tensors, metadata);
    try {
      load_tables(dir / "bad.safetensors");
      ADD_FAILURE() << "expected an Error containing: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto without = [&](std::string_view name) {
    formats::NamedTensors out;
    for (const auto& entry : good) {
      if (entry.first != name) out.push_back(entry);
    }
    return out;
  };
  expect_error(without("scale_table"), meta, "table file has no tensor \"scale_table\"");
  expect_error(without("scale_bound"), meta, "table file has no tensor \"scale_bound\"");
  expect_error(good, {{"kind", "Hyperprior"}}, "kind \"Hyperprior\" is neither");
  auto float_cdf = good;
  float_cdf[0].second = Tensor::from_vector(std::vector<float>(cdf.quantized_cdf().size(), 0.f),
                                            Shape{n, cdf.row_stride()});
  expect_error(float_cdf, meta, "quantized_cdf");
  auto broken_row = good;
  auto values = cdf.quantized_cdf();
  values[1] = 0;  // row 0 no longer strictly increasing
  broken_row[0].second = i32(values, {n, cdf.row_stride()});
  expect_error(broken_row, meta, "table 0: cdf[1] = 0 is not greater than cdf[0] = 0");
  // Without "kind" the file is a state_dict, and has no module buffers at the root.
  expect_error(good, {}, "no '_quantized_cdf' buffer");
}

// The training-side exporter (python/torchless_export/tables.py, another producer of the same
// formats) writes .bin/.json/.pt from CompressAI-shaped modules; all must load to the same tables.
TEST(EntropyTables, ReadsWhatThePythonExporterWrites) {
  auto dir = torchless::testing::temp_dir();
  std::ofstream(dir / "export.py")
      << "import sys, types, torch\n"
         "from torchless_export.tables import TableSet\n"
         "for name in ('eb', 'gc'):\n"
         "    sd = torch.load(sys.argv[1] + '/' + name + '.pt')\n"
         "    TableSet.from_module(types.SimpleNamespace(**sd)).write(sys.argv[2] + '/' + name)\n";
  ASSERT_EQ(torchless::testing::run_command(
                torchless::testing::python() + " " + (dir / "export.py").string() + " " +
                (torchless::testing::shared_dir() / "vectors" / "compressai").string() + " " +
                dir.string()),
            0);
  for (const char* ext : {".bin", ".json", ".pt"}) {
    EXPECT_EQ(load_tables(dir / (std::string("eb") + ext)), eb_reference()) << ext;
    EXPECT_EQ(load_tables(dir / (std::string("gc") + ext)), gc_reference()) << ext;
  }
}

TEST(EntropyTables, LoadRejectsUnknownContent) {
  auto path = torchless::testing::temp_dir() / "x.tables";
  std::ofstream(path) << "hello";
  EXPECT_THROW(load_tables(path), Error);
}

}  // namespace
}  // namespace torchless::entropy
