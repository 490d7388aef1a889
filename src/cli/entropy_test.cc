// `torchless entropy`, run as the built binary (TORCHLESS_CLI) on the shared CompressAI vectors:
// inputs written by numpy, outputs compared with CompressAI's bytes and read back by numpy.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"

namespace torchless::cli {
namespace {

using torchless::testing::CliRun;
using torchless::testing::python;
using torchless::testing::run_command;
using torchless::testing::run_torchless;
using torchless::testing::shared_dir;
using torchless::testing::temp_dir;

std::string vectors() {
  return (shared_dir() / "vectors" / "compressai").string();
}

// Writes the inputs of the first case of eb_vectors.json / rans_raw.json case 8 as .npy, and a
// checker that compares files with the vectors.
std::filesystem::path prepare() {
  auto dir = temp_dir();
  std::string script =
      "import json,sys,numpy as np\n"
      "v, d = sys.argv[1], sys.argv[2]\n"
      "c = json.load(open(v + '/eb_vectors.json'))['cases'][0]\n"
      "np.save(d + '/x.npy', np.frombuffer(bytes.fromhex(c['x_f32hex']), "
      "'<f4').reshape(c['shape']))\n"
      "r = json.load(open(v + '/rans_raw.json'))['cases'][8]\n"
      "np.save(d + '/symbols.npy', np.array(r['symbols'], np.int32))\n"
      "np.save(d + '/indexes.npy', np.array(r['indexes'], np.int32))\n"
      "open(d + '/table.json', 'w').write(json.dumps({'format': 'torchless.entropy_tables', "
      "'version': 1, 'kind': 'EntropyBottleneck', 'precision': 16, 'offsets': r['offsets'], "
      "'cdf_lengths': r['cdfs_sizes'], 'quantized_cdf': r['cdfs'], "
      "'medians': [0.0] * len(r['offsets'])}))\n";
  std::ofstream(dir / "prepare.py") << script;
  EXPECT_EQ(run_command(python() + " " + (dir / "prepare.py").string() + " " + vectors() + " " +
                        dir.string()),
            0);
  return dir;
}

std::string python_check(const std::filesystem::path& dir, const std::string& expression) {
  std::ofstream(dir / "check.py")
      << "import json,sys,numpy as np\nv, d = sys.argv[1], sys.argv[2]\n"
      << "print('ok' if " << expression << " else 'mismatch')\n";
  std::string output;
  run_command(python() + " " + (dir / "check.py").string() + " " + vectors() + " " + dir.string(),
              &output);
  return output;
}

TEST(EntropyCli, EncodeWritesCompressAIBytesAndDecodeGivesTheSymbolsBack) {
  auto dir = prepare();
  auto d = dir.string();
  auto enc =
      run_torchless("entropy encode --tables " + d + "/table.json --symbols " + d +
                    "/symbols.npy --indexes " + d + "/indexes.npy -o " + d + "/s.bin --json");
  ASSERT_EQ(enc.status, 0) << enc.output;
  auto summary = nlohmann::json::parse(enc.output);
  EXPECT_EQ(summary["symbols"], 20000);
  EXPECT_EQ(python_check(dir,
                         "open(d + '/s.bin', 'rb').read().hex() == "
                         "json.load(open(v + '/rans_raw.json'))['cases'][8]['encoded_hex']"),
            "ok\n");
  auto dec = run_torchless("entropy decode --tables " + d + "/table.json --indexes " + d +
                           "/indexes.npy " + d + "/s.bin -o " + d + "/decoded.npy --strict --json");
  ASSERT_EQ(dec.status, 0) << dec.output;
  EXPECT_EQ(nlohmann::json::parse(dec.output)["unclean_ends"], 0);
  EXPECT_EQ(python_check(dir,
                         "np.array_equal(np.load(d + '/decoded.npy'), np.load(d + "
                         "'/symbols.npy'))"),
            "ok\n");
}

TEST(EntropyCli, CompressAndDecompressMatchCompressAIForTheEntropyBottleneck) {
  auto dir = prepare();
  auto d = dir.string();
  auto run = run_torchless("entropy compress --module eb --tables " + vectors() + "/eb.pt " + d +
                           "/x.npy -o " + d + "/strings");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_EQ(python_check(dir,
                         "[open(d + '/strings/%d.bin' % b, 'rb').read().hex() for b in "
                         "range(2)] == json.load(open(v + '/eb_vectors.json'))['cases'][0]"
                         "['strings_hex']"),
            "ok\n");
  run = run_torchless("entropy decompress --module eb --tables " + vectors() + "/eb.pt " + d +
                      "/strings/0.bin " + d + "/strings/1.bin --size 16,16 -o " + d + "/x_hat.npy");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_EQ(python_check(dir,
                         "np.load(d + '/x_hat.npy').tobytes().hex() == json.load(open(v + "
                         "'/eb_vectors.json'))['cases'][0]['x_hat_f32hex']"),
            "ok\n");
}

TEST(EntropyCli, ReportsTruncatedStringsAsAnError) {
  auto dir = prepare();
  auto d = dir.string();
  ASSERT_EQ(run_torchless("entropy compress --module eb --tables " + vectors() + "/eb.pt " + d +
                          "/x.npy -o " + d + "/strings")
                .status,
            0);
  std::filesystem::resize_file(dir / "strings" / "0.bin", 100);
  auto run = run_torchless("entropy decompress --module eb --tables " + vectors() + "/eb.pt " + d +
                           "/strings/0.bin --size 16,16 -o " + d + "/x_hat.npy");
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("stream exhausted"), std::string::npos) << run.output;
}

TEST(EntropyCli, RefusesTablesOfTheOtherModule) {
  auto dir = prepare();
  auto run =
      run_torchless("entropy compress --module gc --scales " + dir.string() + "/x.npy --tables " +
                    vectors() + "/eb.pt " + dir.string() + "/x.npy -o " + dir.string() + "/s");
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("holds EntropyBottleneck tables, but --module is gc"),
            std::string::npos)
      << run.output;
}

}  // namespace
}  // namespace torchless::cli
