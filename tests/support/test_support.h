// Paths the test environment provides (set by tests/CMakeLists.txt), and small helpers shared
// by every layer's tests. Thread-compatible.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "torchless/core/error.h"

namespace torchless::testing {

// The message of the E that `body` throws; a test failure (and "") if it throws none.
template <typename E = Error>
std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return {};
}

// A whole file as bytes in a string (empty if it cannot be read).
std::string read_text(const std::filesystem::path& path);
// A JSON file; throws (failing the test) naming the file when it is missing or not JSON.
nlohmann::json read_json(const std::filesystem::path& path);

// Folder written by tests/fixtures/gen_<name>.py: build/fixtures/<name>/.
std::filesystem::path fixture_dir(const std::string& name);
// A file inside that folder; fails the current test (GTEST_SKIP is never used) if missing.
std::filesystem::path fixture(const std::string& name, const std::string& file);
// ../shared (read-only reference material).
std::filesystem::path shared_dir();
// The repository root.
std::filesystem::path source_dir();
// A fresh, empty folder under the system temp dir, unique to the calling test.
std::filesystem::path temp_dir();

std::vector<unsigned char> read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::vector<unsigned char>& bytes);

// Runs `command` through /bin/sh and returns its exit status; stdout goes to `output` if given.
int run_command(const std::string& command, std::string* output = nullptr);
// Debian's python with torch (TORCHLESS_PYTHON), for tests that read back what C++ wrote.
std::string python();

// The built `torchless` binary (TORCHLESS_CLI, else the one on PATH).
std::string cli();
// What a run of the binary did: its exit status and its stdout and stderr together.
struct CliRun {
  int status;
  std::string output;
};
// Runs `torchless <args>` (args as shell words, quoted by the caller where needed), in
// `working_dir` when it is not empty.
CliRun run_torchless(const std::string& args, const std::filesystem::path& working_dir = {});

}  // namespace torchless::testing
