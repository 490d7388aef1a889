#include "torchless/codec/container.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>

#include "codec_fixtures.h"
#include "test_support.h"
#include "torchless/core/crc32.h"
#include "torchless/core/error.h"

namespace torchless::codec {
namespace {

using torchless::testing::error_of;

using testing::codec_fixture;
using testing::codec_index;

Buffer file_bytes(const std::string& name) {
  return Buffer::map_file(codec_fixture(name));
}

Container small_container() {
  Container c;
  c.package_id = "dpcc-test-0123456789abcdef";
  for (int i = 0; i < 32; ++i) c.manifest_sha256[i] = static_cast<uint8_t>(i * 7 + 1);
  c.shift = {1.5, -2.25, 6.0e5};
  c.min_coord = -3.125;
  c.max_coord = 4.5;
  c.map_size = 100;
  c.cube_size = 7;  // D = 15, D³ = 3375: cube indices need two varint bytes
  c.num_points = 123456789012;
  auto block = [](uint32_t cube, uint32_t points, uint32_t n3, size_t feats, size_t xyzs) {
    ContainerBlock b;
    b.cube_index = cube;
    b.num_points = points;
    b.n3 = n3;
    std::string f(feats, '\0'), x(xyzs, '\0');
    for (size_t i = 0; i < feats; ++i) f[i] = static_cast<char>(i * 13 + cube);
    for (size_t i = 0; i < xyzs; ++i) x[i] = static_cast<char>(i * 29 + 3);
    b.feats = Buffer::copy_of(f);
    b.xyzs = Buffer::copy_of(x);
    return b;
  };
  c.blocks.push_back(block(0, 1, 1, 8, 12));
  c.blocks.push_back(block(3374, 70000, 300, 400, 16));
  c.blocks.push_back(block(127, 128, 16384, 20000, 8));
  return c;
}

TEST(Container, ParsesEveryPythonWrittenFileAsIndexed) {
  auto index = codec_index();
  ASSERT_FALSE(index["cases"].empty());
  for (const auto& cas : index["cases"]) {
    auto c = Container::parse(file_bytes(cas["tlc"]), cas["tlc"].get<std::string>());
    EXPECT_EQ(c.package_id, index["packages"][cas["rate"].get<std::string>()]["package_id"]);
    EXPECT_EQ(c.num_points, cas["num_input_points"].get<uint64_t>());
    EXPECT_EQ(c.cube_size, cas["cube_size"].get<uint32_t>());
    const auto& blocks = cas["blocks"];
    ASSERT_EQ(c.blocks.size(), blocks.size()) << cas["tlc"];
    for (size_t i = 0; i < blocks.size(); ++i) {
      EXPECT_EQ(c.blocks[i].cube_index, blocks[i]["cube_index"].get<uint32_t>());
      EXPECT_EQ(c.blocks[i].num_points, blocks[i]["num_points"].get<uint32_t>());
      EXPECT_EQ(c.blocks[i].n3, blocks[i]["n3"].get<uint32_t>());
      EXPECT_EQ(c.blocks[i].feats.size(), blocks[i]["feats_len"].get<size_t>());
      EXPECT_EQ(c.blocks[i].xyzs.size(), blocks[i]["xyzs_len"].get<size_t>());
      EXPECT_FALSE(c.blocks[i].damaged);
    }
  }
}

TEST(Container, WriterReproducesPythonBytes) {
  const auto index = codec_index();  // keep the json alive across the loop
  for (const auto& cas : index["cases"]) {
    auto bytes = file_bytes(cas["tlc"]);
    auto c = Container::parse(bytes, cas["tlc"].get<std::string>());
    EXPECT_EQ(c.to_bytes(), std::string(bytes.view())) << cas["tlc"];
  }
}

TEST(Container, PythonReaderReadsCxxWrittenFile) {
  auto c = small_container();
  auto path = torchless::testing::temp_dir() / "written.tlc";
  c.write(path);
  std::string script =
      "import json, sys\n"
      "from torchless_export.container import Container\n"
      "c = Container.from_bytes(open(sys.argv[1], 'rb').read(), sys.argv[1])\n"
      "print(json.dumps({'package_id': c.package_id, 'sha': c.manifest_sha256.hex(),\n"
      "  'shift': c.shift, 'min': c.min_coord, 'max': c.max_coord, 'map_size': c.map_size,\n"
      "  'cube_size': c.cube_size, 'num_points': c.num_points, 'damaged': c.damaged,\n"
      "  'blocks': [[b.cube_index, b.num_points, b.n3, b.feats.hex(), b.xyzs.hex()]\n"
      "             for b in c.blocks]}))\n";
  auto script_path = path.parent_path() / "read.py";
  std::ofstream(script_path) << script;
  std::string out;
  ASSERT_EQ(
      torchless::testing::run_command(
          torchless::testing::python() + " " + script_path.string() + " " + path.string(), &out),
      0)
      << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["package_id"], c.package_id);
  EXPECT_EQ(j["sha"], to_hex(c.manifest_sha256));
  EXPECT_EQ(j["shift"][0].get<double>(), c.shift[0]);
  EXPECT_EQ(j["shift"][1].get<double>(), c.shift[1]);
  EXPECT_EQ(j["shift"][2].get<double>(), c.shift[2]);
  EXPECT_EQ(j["min"].get<double>(), c.min_coord);
  EXPECT_EQ(j["max"].get<double>(), c.max_coord);
  EXPECT_EQ(j["map_size"], c.map_size);
  EXPECT_EQ(j["cube_size"], c.cube_size);
  EXPECT_EQ(j["num_points"].get<uint64_t>(), c.num_points);
  EXPECT_TRUE(j["damaged"].empty());
  ASSERT_EQ(j["blocks"].size(), c.blocks.size());
  auto hex = [](const Buffer& b) {
    std::string s;
    for (auto byte : b.bytes()) s += fmt::format("{:02x}", static_cast<unsigned>(byte));
    return s;
  };
  for (size_t i = 0; i < c.blocks.size(); ++i) {
    const auto& b = j["blocks"][i];
    EXPECT_EQ(b[0], c.blocks[i].cube_index);
    EXPECT_EQ(b[1], c.blocks[i].num_points);
    EXPECT_EQ(b[2], c.blocks[i].n3);
    EXPECT_EQ(b[3], hex(c.blocks[i].feats));
    EXPECT_EQ(b[4], hex(c.blocks[i].xyzs));
  }
}

TEST(Container, RoundTripsThroughOwnWriter) {
  auto c = small_container();
  auto back = Container::parse(Buffer::copy_of(c.to_bytes()), "memory");
  EXPECT_EQ(back.package_id, c.package_id);
  EXPECT_EQ(back.manifest_sha256, c.manifest_sha256);
  EXPECT_EQ(back.shift, c.shift);
  EXPECT_EQ(back.num_points, c.num_points);
  ASSERT_EQ(back.blocks.size(), 3u);
  EXPECT_EQ(back.blocks[1].cube_index, 3374u);
  EXPECT_EQ(back.blocks[2].n3, 16384u);
  EXPECT_EQ(back.blocks[2].feats.view(), c.blocks[2].feats.view());
  EXPECT_EQ(back.cube_coordinates(3374), (std::array<uint32_t, 3>{14, 14, 14}));
  EXPECT_EQ(back.cube_coordinates(127), (std::array<uint32_t, 3>{0, 8, 7}));
}

TEST(Container, FlippedBlockByteMarksOnlyThatBlockDamaged) {
  auto bytes = std::string(file_bytes("hippo1-low.tlc").view());
  auto c = Container::parse(Buffer::copy_of(bytes), "hippo1-low.tlc");
  ASSERT_GE(c.blocks.size(), 3u);
  bytes[c.blocks[2].offset + c.blocks[2].feats.size() + 1] ^= 0x01;  // inside block 2's xyzs
  auto damaged = Container::parse(Buffer::copy_of(bytes), "flipped.tlc");
  EXPECT_EQ(damaged.damaged_blocks(), std::vector<size_t>{2});
  EXPECT_EQ(damaged.blocks.size(), c.blocks.size());
}

TEST(Container, PythonDamagedFixtureMarksBlockOne) {
  const auto index = codec_index();  // keep the json alive across the loop
  for (const auto& d : index["damaged"]) {
    auto c = Container::parse(file_bytes(d["tlc"]), d["tlc"].get<std::string>());
    EXPECT_EQ(c.damaged_blocks(), d["damaged_blocks"].get<std::vector<size_t>>()) << d["tlc"];
  }
}

TEST(Container, StrictModeNamesTheDamagedBlock) {
  auto c = Container::parse(file_bytes("hippo1-low.tlc"), "x");
  auto message = error_of([] {
    Container::parse(file_bytes("hippo1-low.damaged.tlc"), "hippo1-low.damaged.tlc",
                     {.strict = true});
  });
  EXPECT_NE(message.find("block 1 (cube " + std::to_string(c.blocks[1].cube_index) + ")"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("block_crc32"), std::string::npos) << message;
}

TEST(Container, FlippedHeaderByteIsHeaderCrcError) {
  auto bytes = std::string(file_bytes("torus-low.tlc").view());
  // A byte of shift[0] (offset 17 + L + 32): still a valid double, caught only by the CRC.
  size_t id_length = static_cast<uint8_t>(bytes[16]);
  bytes[17 + id_length + 32 + 3] ^= 0x10;
  auto message = error_of([&] { Container::parse(Buffer::copy_of(bytes), "torus-low.tlc"); });
  EXPECT_NE(message.find("torus-low.tlc: header_crc32 at offset"), std::string::npos) << message;
}

TEST(Container, FlippedDirectoryByteIsHeaderCrcError) {
  auto bytes = std::string(file_bytes("torus-low.tlc").view());
  size_t id_length = static_cast<uint8_t>(bytes[16]);
  bytes[109 + id_length + 2] ^= 0x01;  // n3 of block 0 (a small, one-byte varint)
  auto message = error_of([&] { Container::parse(Buffer::copy_of(bytes), "t.tlc"); });
  EXPECT_NE(message.find("header_crc32"), std::string::npos) << message;
}

TEST(Container, EveryTruncationIsAnErrorNamingTheFile) {
  auto bytes = std::string(file_bytes("torus-low.tlc").view());
  for (size_t length = 0; length < bytes.size(); ++length) {
    auto message = error_of([&] {
      Container::parse(Buffer::copy_of(std::string_view(bytes).substr(0, length)), "cut.tlc");
    });
    EXPECT_EQ(message.rfind("cut.tlc: ", 0), 0u) << length << ": " << message;
  }
}

TEST(Container, CutInsideBlocksSaysTruncated) {
  auto bytes = std::string(file_bytes("torus-low.tlc").view());
  auto message = error_of(
      [&] { Container::parse(Buffer::copy_of(bytes.substr(0, bytes.size() - 5)), "cut.tlc"); });
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  EXPECT_NE(message.find(std::to_string(bytes.size() - 5)), std::string::npos) << message;
}

TEST(Container, RejectsTrailingBytes) {
  auto bytes = std::string(file_bytes("torus-low.tlc").view()) + "x";
  auto message = error_of([&] { Container::parse(Buffer::copy_of(bytes), "t.tlc"); });
  EXPECT_NE(message.find("trailing bytes"), std::string::npos) << message;
}

TEST(Container, RejectsBadMagic) {
  auto bytes = small_container().to_bytes();
  bytes[0] = 'X';
  auto message = error_of([&] { Container::parse(Buffer::copy_of(bytes), "m.tlc"); });
  EXPECT_NE(message.find("magic at offset 0"), std::string::npos) << message;
}

TEST(Container, RejectsUnknownVersionAndFlags) {
  auto bytes = small_container().to_bytes();
  auto version = bytes;
  version[8] = 2;
  EXPECT_THROW(Container::parse(Buffer::copy_of(version), "v.tlc"), UnsupportedError);
  auto flags = bytes;
  flags[13] = 1;
  auto message = error_of([&] { Container::parse(Buffer::copy_of(flags), "f.tlc"); });
  EXPECT_NE(message.find("flags at offset 12"), std::string::npos) << message;
}

TEST(Container, HugeBlockCountIsRejectedBeforeAllocating) {
  auto bytes = small_container().to_bytes();
  size_t at = 17 + small_container().package_id.size() + 32 + 56;  // num_blocks
  bytes[at + 3] = 0x7F;                                            // ~2·10^9 blocks
  auto message = error_of([&] { Container::parse(Buffer::copy_of(bytes), "n.tlc"); });
  EXPECT_NE(message.find("num_blocks at offset " + std::to_string(at)), std::string::npos)
      << message;
}

// A header with a valid CRC but an invalid field: only a writer that skips the checks (or a
// tampered file with a recomputed CRC) produces one.
std::string with_header_crc(std::string bytes, size_t header_end) {
  uint32_t crc = torchless::crc32(std::as_bytes(std::span(bytes.data(), header_end)));
  for (int i = 0; i < 4; ++i) bytes[header_end + i] = static_cast<char>(crc >> (8 * i));
  return bytes;
}

TEST(Container, RejectsCubeIndexOutsideTheGrid) {
  auto c = small_container();
  c.blocks.resize(1);
  auto bytes = c.to_bytes();
  size_t dir = 17 + c.package_id.size() + 32 + 60;
  bytes[dir] = 0x7F;  // cube_index 0 -> 127; D = 15 allows < 3375, so make D smaller:
  size_t cube_size_at = 17 + c.package_id.size() + 32 + 44;
  bytes[cube_size_at] = 50;  // D = 2, D³ = 8
  bytes = with_header_crc(bytes, dir + 5);
  auto message = error_of([&] { Container::parse(Buffer::copy_of(bytes), "g.tlc"); });
  EXPECT_NE(message.find("block 0"), std::string::npos) << message;
  EXPECT_NE(message.find("cube_index 127 outside the 2^3 cubes"), std::string::npos) << message;
}

TEST(Container, RejectsOverlongVarint) {
  auto c = small_container();
  c.blocks.resize(1);
  auto bytes = c.to_bytes();
  size_t dir = 17 + c.package_id.size() + 32 + 60;
  std::string bad =
      bytes.substr(0, dir) + std::string("\x80\x80\x80\x80\x80\x00", 6) + bytes.substr(dir + 1);
  auto message = error_of([&] { Container::parse(Buffer::copy_of(bad), "v.tlc"); });
  EXPECT_NE(message.find("directory entry 0 (cube_index)"), std::string::npos) << message;
  EXPECT_NE(message.find("invalid varint32"), std::string::npos) << message;
}

TEST(Container, WriterRefusesWhatReadersReject) {
  auto c = small_container();
  c.blocks[1].n3 = 0;
  EXPECT_THROW(c.to_bytes(), Error);
  c = small_container();
  c.blocks[0].feats = Buffer::copy_of(std::string_view("12345"));
  EXPECT_THROW(c.to_bytes(), Error);
  c = small_container();
  c.blocks[0].cube_index = 3375;
  EXPECT_THROW(c.to_bytes(), Error);
  c = small_container();
  c.cube_size = 101;
  EXPECT_THROW(c.to_bytes(), Error);
  c = small_container();
  c.max_coord = c.min_coord;
  EXPECT_THROW(c.to_bytes(), Error);
  c = small_container();
  c.package_id = std::string(256, 'a');
  EXPECT_THROW(c.to_bytes(), Error);
}

TEST(Container, EmptyContainerRoundTrips) {
  auto c = small_container();
  c.blocks.clear();
  auto back = Container::parse(Buffer::copy_of(c.to_bytes()), "empty");
  EXPECT_TRUE(back.blocks.empty());
}

}  // namespace
}  // namespace torchless::codec
