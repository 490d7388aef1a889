// `torchless convert`, run as the built binary (TORCHLESS_CLI); what it writes is read back by
// torch and numpy.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"

namespace torchless::cli {
namespace {

using torchless::testing::read_text;

using torchless::testing::CliRun;
using torchless::testing::fixture;
using torchless::testing::python;
using torchless::testing::run_command;
using torchless::testing::run_torchless;
using torchless::testing::temp_dir;

// Runs a Python check script (written into `dir`) with `args`; expects it to print "ok".
void expect_python_ok(const std::filesystem::path& dir, const std::string& source,
                      const std::string& args) {
  auto script = dir / "check.py";
  std::ofstream(script) << source;
  std::string output;
  int status = run_command(python() + " " + script.string() + " " + args + " 2>&1", &output);
  EXPECT_EQ(status, 0) << output;
  EXPECT_EQ(output, "ok\n");
}

// An independent safetensors reader for the checks (the safetensors package is not installed).
constexpr const char* kReadSafetensors = R"(import json, struct, numpy as np, torch
NP = {'BOOL': '?', 'U8': 'u1', 'I8': 'i1', 'I16': '<i2', 'I32': '<i4', 'I64': '<i8',
      'F16': '<f2', 'F32': '<f4', 'F64': '<f8'}
def read_safetensors(path):
    raw = open(path, 'rb').read()
    n, = struct.unpack('<Q', raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop('__metadata__', None)
    out = {}
    for name, info in header.items():
        b, e = info['data_offsets']
        a = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=NP[info['dtype']])
        out[name] = torch.from_numpy(a.copy().reshape(info['shape']))
    return out
)";

TEST(Convert, CheckpointToSafetensorsAndBackPreservesEveryTensor) {
  auto dir = temp_dir();
  auto original = fixture("containers", "checkpoint.pth");
  CliRun to_st =
      run_torchless("convert '" + original.string() + "' " + (dir / "m.safetensors").string());
  ASSERT_EQ(to_st.status, 0) << to_st.output;
  CliRun to_pt =
      run_torchless("convert " + (dir / "m.safetensors").string() + " " + (dir / "m.pt").string());
  ASSERT_EQ(to_pt.status, 0) << to_pt.output;
  expect_python_ok(
      dir, std::string(kReadSafetensors) + R"(
import sys
sd = torch.load(sys.argv[1])['model_state_dict']
st = read_safetensors(sys.argv[2])
back = torch.load(sys.argv[3])
assert sorted(sd) == sorted(st) == sorted(back), (sorted(sd), sorted(st), sorted(back))
for k, v in sd.items():
    assert st[k].dtype == v.dtype and torch.equal(st[k], v), k
    assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
print('ok')
)",
      original.string() + " " + (dir / "m.safetensors").string() + " " + (dir / "m.pt").string());
}

TEST(Convert, AllFlattensEveryTensorOfTheCheckpointByDottedPath) {
  auto dir = temp_dir();
  auto original = fixture("containers", "checkpoint.pth");
  CliRun run = run_torchless("convert --all '" + original.string() + "' " +
                             (dir / "all.safetensors").string());
  ASSERT_EQ(run.status, 0) << run.output;
  expect_python_ok(dir, std::string(kReadSafetensors) + R"(
import sys
def flatten(value, path, out):
    if isinstance(value, torch.Tensor):
        out['.'.join(path)] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            flatten(v, path + [str(k)], out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            flatten(v, path + [str(i)], out)
expected = {}
flatten(torch.load(sys.argv[1]), [], expected)
st = read_safetensors(sys.argv[2])
assert sorted(expected) == sorted(st), (sorted(expected), sorted(st))
for k, v in expected.items():
    assert torch.equal(st[k], v), k
print('ok')
)",
                   original.string() + " " + (dir / "all.safetensors").string());
}

TEST(Convert, NpzToSafetensorsAndBackPreservesEveryArray) {
  auto dir = temp_dir();
  auto original = fixture("containers", "arrays_compressed.npz");
  ASSERT_EQ(
      run_torchless("convert " + original.string() + " " + (dir / "a.safetensors").string()).status,
      0);
  ASSERT_EQ(
      run_torchless("convert " + (dir / "a.safetensors").string() + " " + (dir / "b.npz").string())
          .status,
      0);
  expect_python_ok(dir, R"(import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert sorted(a.files) == sorted(b.files), (a.files, b.files)
for k in a.files:
    assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
print('ok')
)",
                   original.string() + " " + (dir / "b.npz").string());
}

TEST(Convert, NeverReplacesTheOutputWithoutForce) {
  auto dir = temp_dir();
  auto out = dir / "out.safetensors";
  { std::ofstream(out) << "precious"; }
  auto input = fixture("containers", "reference.safetensors");
  CliRun refused = run_torchless("convert " + input.string() + " " + out.string());
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.output.find("already exists; pass --force"), std::string::npos)
      << refused.output;
  EXPECT_EQ(read_text(out), "precious");
  CliRun forced = run_torchless("convert --force " + input.string() + " " + out.string());
  EXPECT_EQ(forced.status, 0) << forced.output;
  EXPECT_NE(read_text(out), "precious");
  EXPECT_GT(std::filesystem::file_size(out), 8u);
}

TEST(Convert, FailureLeavesNoPartialOutput) {
  auto dir = temp_dir();
  CliRun run = run_torchless("convert " + fixture("containers", "c16.npy").string() + " " +
                             (dir / "x.safetensors").string());
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("dtype complex128, which safetensors cannot represent"),
            std::string::npos)
      << run.output;
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

TEST(Convert, ChoosesTheStateDictNamedByKey) {
  auto dir = temp_dir();
  auto original = fixture("containers", "checkpoint.pth");
  CliRun bad = run_torchless("convert --key no_such_dict '" + original.string() + "' " +
                             (dir / "x.safetensors").string());
  EXPECT_EQ(bad.status, 1) << bad.output;
  CliRun good = run_torchless("convert --key model_state_dict '" + original.string() + "' " +
                              (dir / "y.safetensors").string());
  EXPECT_EQ(good.status, 0) << good.output;
  std::ifstream facts_file(fixture("containers", "checkpoint.pth.json"));
  auto facts = nlohmann::json::parse(facts_file)["model_state_dict"];
  int64_t parameters = 0;
  for (const auto& [name, t] : facts.items()) {
    int64_t n = 1;
    for (int64_t d : t["shape"]) n *= d;
    parameters += n;
  }
  EXPECT_NE(good.output.find(std::to_string(facts.size()) + " tensors, " +
                             std::to_string(parameters) + " parameters"),
            std::string::npos)
      << good.output;
}

}  // namespace
}  // namespace torchless::cli
