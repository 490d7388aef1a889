#include <gtest/gtest.h>

#include <zlib.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"
#include "torchless/core/crc32.h"
#include "torchless/core/error.h"
#include "torchless/formats/zip.h"

namespace torchless::formats {
namespace {

using torchless::testing::error_of;
using torchless::testing::read_text;

using torchless::testing::fixture;
using torchless::testing::python;
using torchless::testing::read_json;
using torchless::testing::run_command;
using torchless::testing::temp_dir;

std::vector<std::byte> to_bytes(std::string_view s) {
  auto b = std::as_bytes(std::span<const char>(s.data(), s.size()));
  return {b.begin(), b.end()};
}

std::string text_of(const Buffer& b) {
  return std::string(b.view());
}

std::vector<std::byte> raw_deflate(std::string_view data) {
  z_stream s{};
  EXPECT_EQ(deflateInit2(&s, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<std::byte> out(deflateBound(&s, data.size()));
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&s, Z_FINISH), Z_STREAM_END);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

// Builds zip archives byte by byte, so that each test can break exactly one rule.
struct RawEntry {
  std::string name;
  std::string data;  // uncompressed content
  uint16_t method = 0;
  uint16_t flags = 0x0800;
  std::optional<std::string> local_name = std::nullopt;
  std::optional<uint64_t> cd_compressed_size = std::nullopt;
  std::optional<uint64_t> cd_uncompressed_size = std::nullopt;
  std::optional<uint64_t> cd_offset = std::nullopt;
  std::optional<uint32_t> cd_crc = std::nullopt;
  bool zip64_extra = false;  // saturate the CD's sizes and offset, give them in a 0x0001 field
};

class RawZip {
 public:
  void u16(uint16_t v) {
    for (int i = 0; i < 2; ++i) out.push_back(static_cast<std::byte>(v >> (8 * i)));
  }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::byte>(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>(v >> (8 * i)));
  }
  void raw(std::span<const std::byte> b) { out.insert(out.end(), b.begin(), b.end()); }
  void str(std::string_view s) { raw(to_bytes(s)); }

  std::vector<std::byte> build(const std::vector<RawEntry>& entries,
                               std::optional<uint16_t> declared_count = std::nullopt) {
    struct Placed {
      uint64_t offset;
      uint64_t csize;
      uint32_t crc;
    };
    std::vector<Placed> placed;
    for (const auto& e : entries) {
      auto stored = e.method == 8 ? raw_deflate(e.data) : to_bytes(e.data);
      uint32_t crc = crc32(to_bytes(e.data));
      placed.push_back({out.size(), stored.size(), crc});
      std::string local_name = e.local_name.value_or(e.name);
      bool descriptor = (e.flags & 0x8) != 0;
      u32(0x04034b50);
      u16(20);
      u16(e.flags);
      u16(e.method);
      u32(0);
      u32(descriptor ? 0 : crc);
      u32(descriptor ? 0 : static_cast<uint32_t>(stored.size()));
      u32(descriptor ? 0 : static_cast<uint32_t>(e.data.size()));
      u16(static_cast<uint16_t>(local_name.size()));
      u16(0);
      str(local_name);
      raw(stored);
    }
    uint64_t cd_offset = out.size();
    for (size_t i = 0; i < entries.size(); ++i) {
      const auto& e = entries[i];
      uint64_t csize = e.cd_compressed_size.value_or(placed[i].csize);
      uint64_t usize = e.cd_uncompressed_size.value_or(e.data.size());
      uint64_t offset = e.cd_offset.value_or(placed[i].offset);
      u32(0x02014b50);
      u16(20);
      u16(20);
      u16(e.flags);
      u16(e.method);
      u32(0);
      u32(e.cd_crc.value_or(placed[i].crc));
      u32(e.zip64_extra ? 0xFFFFFFFF : static_cast<uint32_t>(csize));
      u32(e.zip64_extra ? 0xFFFFFFFF : static_cast<uint32_t>(usize));
      u16(static_cast<uint16_t>(e.name.size()));
      u16(e.zip64_extra ? 28 : 0);
      u16(0);
      u16(0);
      u16(0);
      u32(0);
      u32(e.zip64_extra ? 0xFFFFFFFF : static_cast<uint32_t>(offset));
      str(e.name);
      if (e.zip64_extra) {
        u16(1);
        u16(24);
        u64(usize);
        u64(csize);
        u64(offset);
      }
    }
    uint64_t cd_size = out.size() - cd_offset;
    uint16_t count = declared_count.value_or(static_cast<uint16_t>(entries.size()));
    u32(0x06054b50);
    u16(0);
    u16(0);
    u16(count);
    u16(count);
    u32(static_cast<uint32_t>(cd_size));
    u32(static_cast<uint32_t>(cd_offset));
    u16(0);
    return std::move(out);
  }

  std::vector<std::byte> out;
};

ZipArchive parse(std::vector<std::byte> bytes, const Limits& limits = Limits::defaults()) {
  return ZipArchive::parse(Buffer::adopt(std::move(bytes)), "test.zip", limits);
}

// --- archives written by others ---------------------------------------------------------------

TEST(ZipArchive, IndexesTorchSaveArchiveExactlyAsPythonZipfileDoes) {
  auto path = fixture("containers", "torch_state_dict.pt");
  auto expected = read_json(fixture("containers", "torch_state_dict.pt.json"));
  auto archive = ZipArchive::open(path);
  ASSERT_EQ(archive.entries().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& e = archive.entries()[i];
    EXPECT_EQ(e.name, expected[i]["name"]);
    EXPECT_EQ(e.crc32, expected[i]["crc32"]);
    EXPECT_EQ(e.uncompressed_size, expected[i]["uncompressed_size"]);
    EXPECT_EQ(e.data_offset, expected[i]["data_offset"]);
    EXPECT_TRUE(e.is_stored());
    EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
  }
}

TEST(ZipArchive, ReadsStoredRecordsAsZeroCopySlicesOfTheMappedFile) {
  auto archive = ZipArchive::open(fixture("containers", "torch_state_dict.pt"));
  for (const auto& e : archive.entries()) {
    Buffer data = archive.read(e);
    EXPECT_EQ(data.data(), archive.buffer().data() + e.data_offset);
    EXPECT_TRUE(data.is_mapped());
    archive.verify_crc(e);  // throws on mismatch
  }
}

TEST(ZipArchive, InflatesDeflatedRecordsWrittenByPythonZipfile) {
  auto archive = ZipArchive::open(fixture("containers", "deflated.zip"));
  EXPECT_EQ(archive.comment(), "written by Python's zipfile");
  for (std::string name : {"text/hello.txt", "data/zeros.bin", "data/empty", "data/random.bin"}) {
    std::string file = name;
    std::replace(file.begin(), file.end(), '/', '_');
    EXPECT_EQ(text_of(archive.read(name)), read_text(fixture("containers", "deflated." + file)))
        << name;
  }
  EXPECT_EQ(archive.at("text/hello.txt").method, ZipEntry::kDeflated);
}

TEST(ZipArchive, ToleratesDataPrependedToTheArchive) {
  auto archive = ZipArchive::open(fixture("containers", "prefixed.zip"));
  auto facts = read_json(fixture("containers", "prefixed.zip.json"));
  EXPECT_EQ(archive.prefix_size(), facts["prefix_size"].get<uint64_t>());
  EXPECT_EQ(text_of(archive.read("a.txt")), "first record\n");
  EXPECT_EQ(text_of(archive.read("b.txt")), "second record\n");
}

TEST(ZipArchive, SkipsZip64ExtraFieldsInLocalHeaders) {
  auto archive = ZipArchive::open(fixture("containers", "zip64_local.zip"));
  auto expected = read_json(fixture("containers", "zip64_local.zip.json"));
  for (const auto& record : expected) {
    const auto& e = archive.at(record["name"].get<std::string>());
    EXPECT_EQ(e.data_offset, record["data_offset"]);
  }
  EXPECT_EQ(text_of(archive.read("big_maybe.bin")), std::string(1000, 'x'));
  EXPECT_EQ(text_of(archive.read("small.txt")), "small");
}

// A 4.5 GB sparse file with Python's zipfile archive at its end: local header offsets and the
// central directory offset only fit in zip64 fields.
TEST(ZipArchive, ReadsRecordsPast4GiBAsPythonZipfileWroteThem) {
  const auto path = fixture("containers", "zip64_past_4gib.zip");
  auto expected = read_json(fixture("containers", "zip64_past_4gib.zip.json"));
  auto archive = ZipArchive::open(path);
  ASSERT_EQ(archive.entries().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& e = archive.entries()[i];
    EXPECT_EQ(e.name, expected[i]["name"]);
    EXPECT_EQ(e.data_offset, expected[i]["data_offset"]);
    EXPECT_GT(e.data_offset, uint64_t{1} << 32);
    EXPECT_EQ(e.crc32, expected[i]["crc32"]);
    EXPECT_EQ(e.compressed_size, expected[i]["compressed_size"]);
    EXPECT_EQ(e.uncompressed_size, expected[i]["uncompressed_size"]);
    archive.verify_crc(e);
  }
  std::string pickle;
  for (int i = 0; i < 10; ++i) pickle += "pickle bytes";
  EXPECT_EQ(text_of(archive.read("archive/data.pkl")), pickle);
  Buffer floats = archive.read("archive/data/0");
  EXPECT_TRUE(floats.is_mapped());  // a zero-copy view 4.5 GB into the file
  ASSERT_EQ(floats.size(), 256u);
  for (size_t i = 0; i < 64; ++i) {
    float f;
    std::memcpy(&f, floats.data() + 4 * i, 4);
    EXPECT_EQ(f, static_cast<float>(i));
  }
  std::string version;
  for (int i = 0; i < 100; ++i) version += "3\n";
  EXPECT_EQ(text_of(archive.read("archive/version")), version);
}

TEST(ZipArchive, ReadsSizesAndOffsetFromZip64ExtraField) {
  RawZip zip;
  auto archive = parse(zip.build(
      {{.name = "a", .data = "alpha"}, {.name = "b", .data = "bravo", .zip64_extra = true}}));
  EXPECT_EQ(archive.at("b").uncompressed_size, 5u);
  EXPECT_EQ(text_of(archive.read("b")), "bravo");
}

// --- hostile archives -------------------------------------------------------------------------

TEST(ZipArchive, RejectsLocalHeaderNameDifferentFromCentralDirectory) {
  RawZip zip;
  auto bytes = zip.build({{.name = "data.pkl", .data = "x", .local_name = "evil.pkl"}});
  auto message = error_of([&] { parse(bytes); });
  EXPECT_NE(message.find("local header at offset 0 names 'evil.pkl'"), std::string::npos)
      << message;
  EXPECT_NE(message.find("'data.pkl'"), std::string::npos) << message;
}

TEST(ZipArchive, RejectsOverlappingRecords) {
  RawZip zip;
  // 'a' uses a data descriptor, so only the central directory gives its size: 20 bytes more than
  // it has, reaching into b's local header.
  auto bytes = zip.build({{.name = "a",
                           .data = "aaaa",
                           .flags = 0x0808,
                           .cd_compressed_size = 24,
                           .cd_uncompressed_size = 24},
                          {.name = "b", .data = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}});
  auto message = error_of([&] { parse(bytes); });
  EXPECT_NE(message.find("overlap"), std::string::npos) << message;
}

TEST(ZipArchive, RejectsTwoEntriesSharingOneLocalHeader) {
  RawZip zip;
  auto bytes =
      zip.build({{.name = "a", .data = "aaaa"}, {.name = "a", .data = "aaaa", .cd_offset = 0}});
  auto message = error_of([&] { parse(bytes); });
  EXPECT_TRUE(message.find("overlap") != std::string::npos ||
              message.find("duplicate") != std::string::npos)
      << message;
}

TEST(ZipArchive, RejectsLocalHeaderOffsetPastTheEndOfFile) {
  RawZip zip;
  auto bytes = zip.build({{.name = "a", .data = "aaaa", .cd_offset = 1u << 20}});
  auto message = error_of([&] { parse(bytes); });
  EXPECT_NE(message.find("local header offset 1048576 is outside"), std::string::npos) << message;
}

TEST(ZipArchive, RejectsDataRunningIntoTheCentralDirectory) {
  RawZip zip;
  auto bytes = zip.build({{.name = "a",
                           .data = "aaaa",
                           .flags = 0x0808,
                           .cd_compressed_size = 5000,
                           .cd_uncompressed_size = 5000}});
  auto message = error_of([&] { parse(bytes); });
  EXPECT_NE(message.find("run past the start of the central directory"), std::string::npos)
      << message;
}

TEST(ZipArchive, RejectsZip64ExtraWithBogusSizes) {
  RawZip zip;
  auto bytes = zip.build({{.name = "a",
                           .data = "aaaa",
                           .flags = 0x0808,
                           .cd_compressed_size = uint64_t{1} << 62,
                           .cd_uncompressed_size = uint64_t{1} << 62,
                           .zip64_extra = true}});
  auto message = error_of([&] { parse(bytes); });
  EXPECT_NE(message.find("record 'a'"), std::string::npos) << message;
  EXPECT_NE(message.find("4611686018427387904"), std::string::npos) << message;
}

TEST(ZipArchive, RejectsTruncatedEndOfCentralDirectory) {
  RawZip zip;
  auto bytes = zip.build({{.name = "a", .data = "aaaa"}});
  bytes.resize(bytes.size() - 10);
  auto message = error_of([&] { parse(bytes); });
  EXPECT_NE(message.find("no end-of-central-directory record"), std::string::npos) << message;
}

TEST(ZipArchive, RejectsMoreEntriesThanTheCentralDirectoryCanHold) {
  RawZip zip;
  auto bytes = zip.build({{.name = "a", .data = "aaaa"}}, 60000);
  auto message = error_of([&] { parse(bytes); });
  EXPECT_NE(message.find("60000 entries declared"), std::string::npos) << message;
}

TEST(ZipArchive, RejectsEncryptedRecords) {
  RawZip zip;
  auto bytes = zip.build({{.name = "secret", .data = "xxxx", .flags = 0x0801}});
  auto message = error_of<UnsupportedError>([&] { parse(bytes); });
  EXPECT_NE(message.find("encrypted"), std::string::npos) << message;
}

TEST(ZipArchive, RejectsCompressionMethodsOtherThanStoredAndDeflate) {
  RawZip zip;
  auto bytes = zip.build({{.name = "a.bz2", .data = "xxxx", .method = 12}});
  auto message = error_of<UnsupportedError>([&] { parse(bytes); });
  EXPECT_NE(message.find("compression method 12"), std::string::npos) << message;
}

TEST(ZipArchive, RejectsDuplicateNames) {
  RawZip zip;
  auto bytes = zip.build({{.name = "a", .data = "1"}, {.name = "a", .data = "2"}});
  auto message = error_of([&] { parse(bytes); });
  EXPECT_NE(message.find("duplicate record name 'a'"), std::string::npos) << message;
}

TEST(ZipArchive, FlagsUnsafeNamesAndRefusesToExtractThem) {
  RawZip zip;
  auto archive = parse(zip.build({{.name = "../evil.txt", .data = "1"},
                                  {.name = "/etc/passwd", .data = "2"},
                                  {.name = "dir\\file", .data = "3"},
                                  {.name = "ok/file.txt", .data = "4"}}));
  EXPECT_EQ(archive.at("../evil.txt").name_problem, "contains a '..' component");
  EXPECT_EQ(archive.at("/etc/passwd").name_problem, "is an absolute path");
  EXPECT_EQ(archive.at("dir\\file").name_problem, "contains a backslash");
  EXPECT_EQ(archive.at("ok/file.txt").name_problem, "");
  EXPECT_EQ(text_of(archive.read("../evil.txt")), "1");  // looking it up is fine
  auto message = error_of([&] { archive.extraction_path(archive.at("../evil.txt"), "/tmp/x"); });
  EXPECT_NE(message.find("cannot be extracted"), std::string::npos) << message;
  EXPECT_EQ(archive.extraction_path(archive.at("ok/file.txt"), "/tmp/x"),
            std::filesystem::path("/tmp/x/ok/file.txt"));
}

TEST(ZipArchive, RefusesToInflateBeyondTheCompressionRatioLimit) {
  RawZip zip;
  auto archive =
      parse(zip.build({{.name = "bomb", .data = std::string(1 << 20, '\0'), .method = 8}}));
  Limits limits;
  limits.max_compression_ratio = 100;
  auto strict = ZipArchive::parse(archive.buffer(), "bomb.zip", limits);
  auto message = error_of<LimitError>([&] { strict.read("bomb"); });
  EXPECT_NE(message.find("zip bomb"), std::string::npos) << message;
  EXPECT_EQ(archive.read("bomb").size(), size_t{1} << 20);  // the default ratio allows it
}

TEST(ZipArchive, RefusesToInflateBeyondTheDeclaredSize) {
  RawZip zip;
  auto bytes = zip.build({{.name = "liar",
                           .data = std::string(5000, 'a'),
                           .method = 8,
                           .flags = 0x0808,
                           .cd_uncompressed_size = 100}});
  auto archive = parse(bytes);
  auto message = error_of<LimitError>([&] { archive.read("liar"); });
  EXPECT_NE(message.find("more than the declared 100 bytes"), std::string::npos) << message;
}

TEST(ZipArchive, DetectsCrcMismatchOfDeflatedAndStoredRecords) {
  RawZip zip;
  auto archive = parse(zip.build(
      {{.name = "d", .data = "deflated data", .method = 8, .flags = 0x0808, .cd_crc = 1234},
       {.name = "s", .data = "stored data", .flags = 0x0808, .cd_crc = 1234}}));
  EXPECT_NE(error_of([&] { archive.read("d"); }).find("CRC-32 mismatch"), std::string::npos);
  EXPECT_EQ(text_of(archive.read("s")), "stored data");  // not checked on read: zero copy
  EXPECT_NE(error_of([&] { archive.verify_crc(archive.at("s")); }).find("CRC-32 mismatch"),
            std::string::npos);
}

TEST(ZipArchive, RejectsBytesThatAreNotAZip) {
  auto message = error_of([&] { parse(to_bytes("this is plain text, long enough to search")); });
  EXPECT_NE(message.find("test.zip: not a zip archive"), std::string::npos) << message;
}

// --- the writer -------------------------------------------------------------------------------

TEST(ZipWriter, RoundTripsRecordsThroughTheReaderWithAlignedData) {
  ZipWriter writer;
  writer.add("archive/data.pkl", std::string_view("pickle bytes"));
  writer.add("archive/data/0", std::string_view(""));
  std::string a = "first half, ", b = "second half";
  std::span<const std::byte> pieces[] = {std::as_bytes(std::span(a)), std::as_bytes(std::span(b))};
  writer.add("archive/data/1", std::span<const std::span<const std::byte>>(pieces));
  writer.finish();
  auto archive = parse(writer.take_bytes());
  ASSERT_EQ(archive.entries().size(), 3u);
  EXPECT_EQ(text_of(archive.read("archive/data.pkl")), "pickle bytes");
  EXPECT_EQ(text_of(archive.read("archive/data/0")), "");
  EXPECT_EQ(text_of(archive.read("archive/data/1")), a + b);
  for (const auto& e : archive.entries()) {
    EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
    archive.verify_crc(e);
  }
}

// 65535 records do not fit the classic end record's 16-bit count: the zip64 end record and
// locator must carry it, and both our reader and Python's zipfile must find every record.
TEST(ZipWriter, WritesZip64EndRecordsWhenTheRecordCountNeedsThem) {
  auto path = temp_dir() / "many.zip";
  ZipWriter writer(path, {.alignment = 1});
  for (int i = 0; i < 70000; ++i) writer.add(std::to_string(i), std::string_view(""));
  writer.add("last", std::string_view("last record"));
  writer.finish();
  auto archive = ZipArchive::open(path);
  EXPECT_EQ(archive.entries().size(), 70001u);
  EXPECT_EQ(text_of(archive.read("last")), "last record");
  std::string output;
  int status = run_command(python() +
                               " -c \"import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); "
                               "print(len(z.infolist()), z.read('last').decode())\" " +
                               path.string() + " 2>&1",
                           &output);
  EXPECT_EQ(status, 0) << output;
  EXPECT_EQ(output, "70001 last record\n");
}

TEST(ZipWriter, RejectsDuplicateRecordNames) {
  ZipWriter writer;
  writer.add("a", std::string_view("1"));
  EXPECT_THROW(writer.add("a", std::string_view("2")), Error);
}

TEST(ZipWriter, LeavesAnExistingFileUntouchedUnlessFinished) {
  auto dir = temp_dir();
  auto path = dir / "out.zip";
  { std::ofstream(path) << "precious"; }
  {
    ZipWriter writer(path);
    writer.add("a", std::string_view("data"));
  }  // destroyed without finish()
  EXPECT_EQ(read_text(path), "precious");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);  // no temp left
  ZipWriter writer(path);
  writer.add("a", std::string_view("data"));
  writer.finish();
  EXPECT_EQ(text_of(ZipArchive::open(path).read("a")), "data");
}

// Rewrites a torch.save archive record by record with ZipWriter; Python's zipfile must accept
// the result (CRCs included) and torch.load must give back equal tensors.
TEST(ZipWriter, OutputIsReadByPythonZipfileAndTorchLoad) {
  auto original = fixture("containers", "torch_state_dict.pt");
  auto dir = temp_dir();
  auto copy = dir / "rewritten.pt";
  auto source = ZipArchive::open(original);
  ZipWriter writer(copy);
  for (const auto& e : source.entries()) writer.add(e.name, source.read(e).bytes());
  writer.finish();

  auto script = dir / "check.py";
  std::ofstream(script) << R"(import sys, zipfile, torch
a, b = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(b) as zf:
    assert zf.testzip() is None, 'bad CRC'
    for info in zf.infolist():
        with open(b, 'rb') as f:
            f.seek(info.header_offset + 26)
            n, m = int.from_bytes(f.read(2), 'little'), int.from_bytes(f.read(2), 'little')
        assert (info.header_offset + 30 + n + m) % 64 == 0, info.filename
x, y = torch.load(a), torch.load(b)
assert list(x) == list(y)
assert all(torch.equal(x[k], y[k]) for k in x)
print('ok', len(y))
)";
  std::string output;
  int status = run_command(
      python() + " " + script.string() + " " + original.string() + " " + copy.string() + " 2>&1",
      &output);
  EXPECT_EQ(status, 0) << output;
  EXPECT_EQ(output.substr(0, 3), "ok ") << output;
}

}  // namespace
}  // namespace torchless::formats
