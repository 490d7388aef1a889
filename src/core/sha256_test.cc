#include "torchless/core/sha256.h"

#include <gtest/gtest.h>

#include <string>

#include "torchless/core/error.h"

namespace torchless {
namespace {

// Digests from FIPS 180-4's examples (NIST CSRC "SHA256.pdf", "SHA2_Additional.pdf").
TEST(Sha256, EmptyMessageMatchesNist) {
  EXPECT_EQ(to_hex(sha256(std::string_view())),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, OneBlockMessageMatchesNist) {
  EXPECT_EQ(to_hex(sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, TwoBlockMessageMatchesNist) {
  // 56 bytes: the length no longer fits after the 0x80 byte, so padding takes a second block.
  EXPECT_EQ(to_hex(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, MillionAsMatchesNist) {
  EXPECT_EQ(to_hex(sha256(std::string(1000000, 'a'))),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalUpdatesEqualOneShot) {
  std::string message;
  for (int i = 0; i < 1000; ++i) message.push_back(static_cast<char>(i * 37 + 11));
  auto expected = sha256(message);
  for (size_t step : {1u, 3u, 63u, 64u, 65u, 200u}) {
    Sha256 hasher;
    for (size_t pos = 0; pos < message.size(); pos += step) {
      hasher.update(std::string_view(message).substr(pos, step));
    }
    EXPECT_EQ(hasher.finish(), expected) << "step " << step;
  }
}

TEST(Sha256, MissingFileNamesThePath) {
  try {
    sha256_file("/nonexistent/torchless/manifest.json");
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/torchless/manifest.json"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace torchless
