#include "torchless/formats/torch_file.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <map>

#include "test_support.h"
#include "torchless/core/sha256.h"
#include "torchless/formats/zip.h"

namespace torchless::torch_file {
namespace {

using nlohmann::json;
using pickle::Kind;
using pickle::Value;
using pickle::ValuePtr;

std::string sha_of(const Tensor& t) {
  auto bytes = t.to_bytes();
  return to_hex(sha256(bytes));
}

// Every tensor torch saw is read with the same dtype, shape, strides, offset and bytes; every
// leaf value torch saw has the same value here.
void expect_matches(const TorchCheckpoint& ckpt, const json& expected) {
  std::map<std::string, NamedTensor> ours;
  for (auto& t : ckpt.tensors()) ours.emplace(t.path, t);
  ASSERT_EQ(ours.size(), expected["tensors"].size()) << ckpt.name();
  for (const auto& e : expected["tensors"]) {
    std::string path = e["path"];
    auto it = ours.find(path);
    ASSERT_NE(it, ours.end()) << ckpt.name() << ": no tensor at " << path;
    const Tensor& t = it->second.tensor;
    EXPECT_EQ(dtype_name(t.dtype()), e["dtype"].get<std::string>()) << path;
    EXPECT_EQ(t.shape(), e["shape"].get<Shape>()) << path;
    if (e.contains("stride") && t.numel() > 0) {
      EXPECT_EQ(t.strides(), e["stride"].get<std::vector<int64_t>>()) << path;
    }
    if (e.contains("storage_offset")) {
      EXPECT_EQ(t.storage_offset(), e["storage_offset"].get<int64_t>()) << path;
    }
    EXPECT_EQ(sha_of(t), e["sha256"].get<std::string>()) << ckpt.name() << ": " << path;
    if (e.contains("parameter")) {
      EXPECT_EQ(it->second.node->tensor->is_parameter, e["parameter"].get<bool>()) << path;
    }
    if (e.contains("requires_grad")) {
      EXPECT_EQ(it->second.node->tensor->requires_grad, e["requires_grad"].get<bool>()) << path;
    }
  }
  std::map<std::string, ValuePtr> nodes;
  ckpt.walk([&](const std::string& path, const ValuePtr& node) { nodes.emplace(path, node); });
  for (const auto& leaf : expected["leaves"]) {
    std::string path = leaf["path"];
    auto it = nodes.find(path);
    ASSERT_NE(it, nodes.end()) << ckpt.name() << ": no value at " << path;
    const Value& v = *it->second;
    std::string type = leaf["type"];
    const json& value = leaf["value"];
    if (type == "int") {
      if (value.is_string()) {
        EXPECT_EQ(v.kind, Kind::kBigInt) << path;
        EXPECT_EQ(v.text, value.get<std::string>()) << path;
      } else {
        EXPECT_EQ(v.as_int(), value.get<int64_t>()) << path;
      }
    } else if (type == "float" || type.starts_with("numpy.")) {
      auto d = v.as_double();
      ASSERT_TRUE(d.has_value()) << path << " is a " << pickle::kind_name(v.kind);
      if (value.is_string()) {
        std::string s = value;
        if (s == "nan") {
          EXPECT_TRUE(std::isnan(*d)) << path;
        } else {
          EXPECT_EQ(*d, s == "inf" ? INFINITY : -INFINITY) << path;
        }
      } else {
        EXPECT_EQ(*d, value.get<double>()) << path;
      }
    } else if (type == "bool") {
      EXPECT_EQ(v.kind, Kind::kBool) << path;
      EXPECT_EQ(v.boolean, value.get<bool>()) << path;
    } else if (type == "str") {
      EXPECT_EQ(v.kind, Kind::kStr) << path;
      EXPECT_EQ(v.text, value.get<std::string>()) << path;
    } else if (type == "bytes" || type == "bytearray") {
      EXPECT_EQ(v.kind, type == "bytes" ? Kind::kBytes : Kind::kByteArray) << path;
      std::string hex;
      for (unsigned char c : v.text) hex += fmt::format("{:02x}", c);
      EXPECT_EQ(hex, value.get<std::string>()) << path;
    } else if (type == "None" || type == "NoneType") {
      EXPECT_EQ(v.kind, Kind::kNone) << path;
    } else if (type == "complex") {
      EXPECT_EQ(v.kind, Kind::kComplex) << path;
      EXPECT_EQ(v.real, value[0].get<double>()) << path;
      EXPECT_EQ(v.imag, value[1].get<double>()) << path;
    }
  }
}

void expect_fixture_matches(const std::string& file, bool salvage = false) {
  OpenOptions options;
  options.salvage = salvage;
  auto ckpt = TorchCheckpoint::open(testing::fixture("torch", file), options);
  auto expected = testing::read_json(testing::fixture("torch", file + ".json"));
  EXPECT_EQ(format_name(ckpt.format()), expected["format"].get<std::string>()) << file;
  expect_matches(ckpt, expected);
}

TEST(TorchFile, ReadsStateDictOfLayerMix) {
  expect_fixture_matches("state_dict_mix.pt");
}
TEST(TorchFile, ReadsProtocol4StateDict) {
  expect_fixture_matches("state_dict_mix_p4.pt");
}
TEST(TorchFile, ReadsLegacyStateDict) {
  expect_fixture_matches("state_dict_mix_legacy.pt");
}
TEST(TorchFile, ReadsAdamCheckpoint) {
  expect_fixture_matches("checkpoint_adam.pth");
}
TEST(TorchFile, ReadsLegacyAdamCheckpoint) {
  expect_fixture_matches("checkpoint_adam_legacy.pth");
}
TEST(TorchFile, ReadsSharedStoragesAndViews) {
  expect_fixture_matches("shared_views.pt");
}
TEST(TorchFile, ReadsLegacySharedStoragesAndViews) {
  expect_fixture_matches("shared_views_legacy.pt");
}
TEST(TorchFile, ReadsEveryDtype) {
  expect_fixture_matches("dtypes.pt");
}
TEST(TorchFile, ReadsEveryDtypeLegacy) {
  expect_fixture_matches("dtypes_legacy.pt");
}
TEST(TorchFile, ReadsQuantizedTensors) {
  expect_fixture_matches("quantized.pt");
}
TEST(TorchFile, ReadsSparseCooComponents) {
  expect_fixture_matches("sparse.pt");
}
TEST(TorchFile, ReadsBareTensor) {
  expect_fixture_matches("bare_tensor.pt");
}
TEST(TorchFile, ReadsExtrasCounterDeviceSizeBytesComplex) {
  expect_fixture_matches("extras.pt");
}
TEST(TorchFile, SwapsBigEndianRecords) {
  expect_fixture_matches("big_endian.pt");
}
TEST(TorchFile, ReadsPlainPicklesOfEveryProtocol) {
  for (int p = 0; p <= 5; ++p) expect_fixture_matches(fmt::format("plain_p{}.pkl", p));
}
TEST(TorchFile, ReadsNumpyArraysProtocol2And5) {
  expect_fixture_matches("numpy_p2.pkl");
  expect_fixture_matches("numpy_p5.pkl");
}
TEST(TorchFile, SalvagesWholePickledModule) {
  expect_fixture_matches("whole_model.pt", /*salvage=*/true);
}
TEST(TorchFile, SalvagesArgparseNamespace) {
  expect_fixture_matches("namespace.pt", /*salvage=*/true);
}

TEST(TorchFile, RefusesWholePickledModuleInStrictMode) {
  try {
    TorchCheckpoint::open(testing::fixture("torch", "whole_model.pt"));
    FAIL() << "expected an error";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("Mix"), std::string::npos) << e.what();
  }
}

TEST(TorchFile, TensorsAreZeroCopyViewsIntoTheMappedFile) {
  auto ckpt = TorchCheckpoint::open(testing::fixture("torch", "state_dict_mix.pt"));
  auto sd = ckpt.state_dict();
  const Tensor& w = sd.at("feats_eblock.0.weight");
  EXPECT_TRUE(w.storage().is_mapped());
  EXPECT_GE(w.raw_data(), ckpt.bytes().data());
  EXPECT_LT(w.raw_data(), ckpt.bytes().data() + ckpt.bytes().size());
}

TEST(TorchFile, StateDictByPrefixStripsIt) {
  auto ckpt = TorchCheckpoint::open(testing::fixture("torch", "checkpoint_adam.pth"));
  auto block = ckpt.state_dict("model_state_dict/feats_eblock.");
  ASSERT_NE(block.find("0.weight"), nullptr);
  EXPECT_EQ(block.at("1.running_mean").shape(), Shape{8});
  auto auto_found = ckpt.state_dict("feats_eblock.");
  EXPECT_EQ(auto_found.size(), block.size());
  EXPECT_EQ(ckpt.state_dict("model_state_dict").size(), ckpt.state_dict().size());
}

TEST(TorchFile, ReadsTrainingFields) {
  auto ckpt = TorchCheckpoint::open(testing::fixture("torch", "checkpoint_adam.pth"));
  auto expected = testing::read_json(testing::fixture("torch", "checkpoint_adam.pth.json"));
  EXPECT_EQ(ckpt.epoch(), 7);
  for (const auto& leaf : expected["leaves"]) {
    if (leaf["path"] == "loss") {
      EXPECT_EQ(ckpt.loss(), leaf["value"].get<double>());
    }
  }
  auto state = ckpt.optimizer_state();
  ASSERT_TRUE(state && state->is_dict());
  EXPECT_EQ(state->entries.size(), 10u);  // one per parameter
  ASSERT_NE(state->entries[0].second->get("exp_avg"), nullptr);
  auto groups = ckpt.param_groups();
  ASSERT_TRUE(groups && groups->kind == Kind::kList);
  EXPECT_EQ(groups->items[0]->get("lr")->as_double(), 1e-3);
  EXPECT_EQ(ckpt.format(), Format::kZip);
  EXPECT_EQ(ckpt.version(), 3);
  EXPECT_EQ(ckpt.archive_prefix(), "checkpoint_adam");
}

TEST(TorchFile, RefusesCodeExecutionPickledByPython) {
  for (const char* file : {"evil_os_system.pt", "evil_os_system_legacy.pt"}) {
    for (bool salvage : {false, true}) {
      OpenOptions options;
      options.salvage = salvage;
      try {
        TorchCheckpoint::open(testing::fixture("torch", file), options);
        FAIL() << file << " was accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("posix.system"), std::string::npos) << e.what();
      }
    }
  }
  for (const char* name : {"os_system", "eval", "exec", "getattr", "popen", "webbrowser"}) {
    for (int p : {0, 2, 4}) {
      auto file = fmt::format("evil_{}_p{}.pkl", name, p);
      EXPECT_THROW(TorchCheckpoint::open(testing::fixture("torch", file)), UnsupportedError)
          << file;
    }
  }
}

// ---- the corpus of real third-party checkpoints ----------------------------------------------

TEST(TorchFileCorpus, ReadsOrRefusesEveryRealCheckpoint) {
  auto dir = testing::shared_dir() / "corpus" / "real-checkpoints";
  auto index = testing::read_json(dir / "INDEX.json");
  for (const auto& entry : index["files"]) {
    std::string name = entry["name"];
    auto expected = testing::read_json(dir / "expected" / (name + ".json"));
    auto path = dir / "files" / name;
    SCOPED_TRACE(name);
    if (expected["format"] == "torchscript") {
      try {
        TorchCheckpoint::open(path);
        FAIL() << "TorchScript archive accepted";
      } catch (const UnsupportedError& e) {
        EXPECT_NE(std::string(e.what()).find("TorchScript"), std::string::npos) << e.what();
      }
      continue;
    }
    bool needs_salvage = !expected["stubbed_globals"].empty();
    if (needs_salvage) {
      EXPECT_THROW(TorchCheckpoint::open(path), UnsupportedError);
    }
    OpenOptions options;
    options.salvage = needs_salvage;
    auto ckpt = TorchCheckpoint::open(path, options);
    EXPECT_EQ(ckpt.pickle_protocol(), expected["protocol"].get<int>());
    std::vector<std::string> globals = ckpt.globals();
    std::sort(globals.begin(), globals.end());
    EXPECT_EQ(globals, expected["globals"].get<std::vector<std::string>>());
    // The corpus hashes bfloat16 as int16 and lists numpy arrays apart from tensors.
    json want = expected;
    for (const auto& arr : expected["numpy_arrays"]) want["tensors"].push_back(arr);
    expect_matches(ckpt, want);
  }
}

// ---- refusals ----------------------------------------------------------------------------------

std::string message_of(const std::string& bytes) {
  try {
    TorchCheckpoint::read(Buffer::copy_of(bytes), "suspect.pt");
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(TorchFile, NamesGitLfsPointers) {
  auto m = message_of("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n");
  EXPECT_NE(m.find("Git LFS pointer"), std::string::npos) << m;
}

TEST(TorchFile, NamesHtmlPages) {
  auto m = message_of("\n<!DOCTYPE html><html><head><title>Google Drive</title>");
  EXPECT_NE(m.find("HTML page"), std::string::npos) << m;
}

TEST(TorchFile, RefusesTarLegacyFormat) {
  std::string tar(1024, '\0');
  tar.replace(0, 8, "sys_info");
  tar.replace(257, 5, "ustar");
  auto m = message_of(tar);
  EXPECT_NE(m.find("tar"), std::string::npos) << m;
}

TEST(TorchFile, RefusesUnknownBytes) {
  auto m = message_of("GARBAGE!");
  EXPECT_NE(m.find("not a PyTorch checkpoint"), std::string::npos) << m;
}

TEST(TorchFile, RefusesZipTricks) {
  std::map<std::string, std::string> expected = {
      {"zip_traversal.pt", "unsafe"},
      {"zip_name_mismatch.pt", "data.pkl"},
      {"zip_past_eof.pt", "bare_tensor/version"},
      {"zip_overlap.pt", "bare_tensor/data/0"},
  };
  for (const auto& [file, needle] : expected) {
    auto bytes = testing::read_file(testing::fixture("torch", file));
    auto m = message_of(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    EXPECT_NE(m, "(accepted)") << file;
    EXPECT_NE(m.find(needle), std::string::npos) << file << ": " << m;
  }
}

TEST(TorchFile, RefusesZipBombRecords) {
  OpenOptions options;
  options.limits.max_compression_ratio = 100;
  try {
    TorchCheckpoint::open(testing::fixture("torch", "zip_bomb.pt"), options);
    FAIL() << "zip bomb accepted";
  } catch (const LimitError& e) {
    EXPECT_NE(std::string(e.what()).find("data.pkl"), std::string::npos) << e.what();
  }
}

TEST(TorchFile, TruncatedFilesGiveErrors) {
  for (const char* file : {"state_dict_mix.pt", "state_dict_mix_legacy.pt"}) {
    auto bytes = testing::read_file(testing::fixture("torch", file));
    for (size_t cut : {bytes.size() - 1, bytes.size() / 2, bytes.size() / 3, size_t{40}}) {
      std::string part(reinterpret_cast<const char*>(bytes.data()), cut);
      EXPECT_NE(message_of(part), "(accepted)") << file << " cut at " << cut;
    }
  }
}

// ---- the writer --------------------------------------------------------------------------------

ValuePtr sample_checkpoint() {
  auto base = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  auto transposed = Tensor::view(base.storage(), DType::kFloat32, {4, 3}, {1, 4}, 0);
  auto slice = Tensor::view(base.storage(), DType::kFloat32, {2, 2}, {4, 1}, 5);
  auto sd = Value::dict("collections.OrderedDict");
  sd->set_item(Value::from_str("conv.weight"), Value::from_tensor(base, true, true));
  sd->set_item(Value::from_str("conv.weight_t"), Value::from_tensor(transposed));
  sd->set_item(Value::from_str("slice"), Value::from_tensor(slice));
  sd->set_item(Value::from_str("steps"), Value::from_tensor(Tensor::from_vector(
                                             std::vector<int64_t>{1, -2, 1LL << 40}, {3})));
  sd->set_item(Value::from_str("scalar"),
               Value::from_tensor(Tensor::from_vector(std::vector<double>{2.5}, {})));
  sd->set_item(Value::from_str("mask"),
               Value::from_tensor(Tensor::from_vector(std::vector<uint8_t>{1, 0, 1}, {3})));
  auto root = Value::dict();
  root->set_item(Value::from_str("model_state_dict"), sd);
  root->set_item(Value::from_str("epoch"), Value::from_int(12));
  root->set_item(Value::from_str("names"),
                 Value::list({Value::from_str("a"), Value::from_str("\u00e9"), Value::none(),
                              Value::from_bool(true), Value::from_int(-(1LL << 40))}));
  root->set_item(Value::from_str("pair"), Value::tuple({Value::from_int(1), Value::from_int(2)}));
  return root;
}

// Python loads what C++ wrote (torch.load(weights_only=True)) and compares it to the values the
// test built, printing a message on mismatch.
constexpr const char* kReadBack = R"PY(
import sys, torch
d = torch.load(sys.argv[1], weights_only=True)
sd = d["model_state_dict"]
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
checks = [
    (type(sd).__name__ == "OrderedDict", "state_dict type"),
    (torch.equal(sd["conv.weight"], base), "conv.weight"),
    (isinstance(sd["conv.weight"], torch.nn.Parameter) and sd["conv.weight"].requires_grad, "param"),
    (torch.equal(sd["conv.weight_t"], base.t()), "transposed view"),
    (sd["conv.weight_t"].storage().data_ptr() == sd["conv.weight"].storage().data_ptr(), "shared"),
    (torch.equal(sd["slice"], base.flatten()[5:].as_strided((2, 2), (4, 1))), "slice"),
    (sd["steps"].tolist() == [1, -2, 1 << 40] and sd["steps"].dtype == torch.int64, "int64"),
    (sd["scalar"].dim() == 0 and sd["scalar"].item() == 2.5 and sd["scalar"].dtype == torch.float64, "0-d"),
    (sd["mask"].dtype == torch.uint8 and sd["mask"].tolist() == [1, 0, 1], "uint8"),
    (d["epoch"] == 12, "epoch"),
    (d["names"] == ["a", "\u00e9", None, True, -(1 << 40)], "names"),
    (d["pair"] == (1, 2), "pair"),
]
bad = [name for ok, name in checks if not ok]
print("mismatch:", bad) if bad else print("ok")
sys.exit(1 if bad else 0)
)PY";

void expect_python_reads_back(const std::filesystem::path& pt) {
  auto script = pt.parent_path() / "read_back.py";
  std::ofstream(script) << kReadBack;
  std::string out;
  int rc = testing::run_command(
      testing::python() + " " + script.string() + " " + pt.string() + " 2>&1", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("ok"), std::string::npos) << out;
}

TEST(TorchFileWriter, TorchLoadsWhatWeWriteWithWeightsOnly) {
  auto dir = testing::temp_dir();
  auto path = dir / "written.pt";
  auto root = sample_checkpoint();
  save(path, *root);
  expect_python_reads_back(path);
}

TEST(TorchFileWriter, ReadsBackWhatItWrote) {
  auto root = sample_checkpoint();
  auto bytes = save_to_bytes(*root, {"mine", 2});
  auto ckpt = TorchCheckpoint::read(Buffer::copy_of(bytes), "mine.pt");
  EXPECT_EQ(ckpt.archive_prefix(), "mine");
  auto sd = ckpt.state_dict();
  EXPECT_EQ(sd.at("conv.weight").to_vector<float>()[5], 5.0f);
  EXPECT_EQ(sd.at("conv.weight_t").to_vector<float>(),
            (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  EXPECT_EQ(sd.at("slice").to_vector<float>(), (std::vector<float>{5, 6, 9, 10}));
  EXPECT_EQ(ckpt.epoch(), 12);
  // Records are 64-byte aligned, as torch writes them.
  auto archive = formats::ZipArchive::parse(Buffer::copy_of(bytes), "mine.pt");
  for (const auto& e : archive.entries()) EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
}

TEST(TorchFileWriter, RoundTripsARealStateDictThroughTorch) {
  auto in = TorchCheckpoint::open(testing::fixture("torch", "state_dict_mix.pt"));
  auto out = testing::temp_dir() / "copy.pt";
  save(out, *state_dict_value(in.state_dict()));
  auto copy = TorchCheckpoint::open(out);
  auto a = in.state_dict();
  auto b = copy.state_dict();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a.entries[i].name, b.entries[i].name);
    EXPECT_EQ(a.entries[i].tensor.to_bytes(), b.entries[i].tensor.to_bytes());
  }
  std::string output;
  int rc = testing::run_command(
      testing::python() +
          " -c \"import sys,torch; a=torch.load(sys.argv[1]); "
          "b=torch.load(sys.argv[2], weights_only=True); "
          "assert list(a)==list(b); "
          "assert all(torch.equal(a[k], b[k]) for k in a); print('same')\" " +
          testing::fixture("torch", "state_dict_mix.pt").string() + " " + out.string() + " 2>&1",
      &output);
  EXPECT_EQ(rc, 0) << output;
}

TEST(TorchFile, RefusesTensorViewOutsideItsStorage) {
  auto sd = Value::dict();
  sd->set_item(Value::from_str("w"),
               Value::from_tensor(Tensor::from_vector(std::vector<float>(10, 1.0f), {10})));
  std::string bytes = save_to_bytes(*sd);
  // Rewrite size (10,) -> (20,) in data.pkl: BININT1 10, TUPLE1 (same length, so offsets hold).
  auto at = bytes.find(std::string("K\x0a\x85", 3));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1] = 20;
  auto m = message_of(bytes);
  EXPECT_NE(m.find("reaches byte 80 but its storage holds 40 bytes"), std::string::npos) << m;
}

TEST(TorchFile, RefusesStorageRecordOfTheWrongSize) {
  auto sd = Value::dict();
  sd->set_item(Value::from_str("w"),
               Value::from_tensor(Tensor::from_vector(std::vector<float>(10, 1.0f), {10})));
  std::string bytes = save_to_bytes(*sd);
  // The storage numel in the persistent id (BININT1 10 just before TUPLE, BINPERSID).
  auto at = bytes.find(std::string("K\x0atQ", 4));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1] = 11;
  auto m = message_of(bytes);
  EXPECT_NE(m.find("holds 40 bytes but the pickle declares 11 elements"), std::string::npos) << m;
}

}  // namespace
}  // namespace torchless::torch_file
