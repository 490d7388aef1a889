#include "test_support.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace torchless::testing {
namespace {

std::filesystem::path env_path(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    throw std::runtime_error(std::string("environment variable ") + name +
                             " is not set: run tests through ctest");
  }
  return value;
}

// Exports the build's test environment (TORCHLESS_TEST_ENV_DEFAULTS: "NAME=value" joined by '|')
// for variables the caller did not set, before any test runs, so that subprocesses see it as well.
const bool kEnvironmentDefaultsApplied = [] {
#ifdef TORCHLESS_TEST_ENV_DEFAULTS
  std::string defaults = TORCHLESS_TEST_ENV_DEFAULTS;
  size_t start = 0;
  while (start < defaults.size()) {
    size_t end = defaults.find('|', start);
    if (end == std::string::npos) end = defaults.size();
    std::string line = defaults.substr(start, end - start);
    size_t eq = line.find('=');
    if (eq != std::string::npos) setenv(line.substr(0, eq).c_str(), line.substr(eq + 1).c_str(), 0);
    start = end + 1;
  }
#endif
  return true;
}();

}  // namespace

std::filesystem::path fixture_dir(const std::string& name) {
  return env_path("TORCHLESS_FIXTURES") / name;
}

std::filesystem::path fixture(const std::string& name, const std::string& file) {
  auto path = fixture_dir(name) / file;
  if (!std::filesystem::exists(path)) {
    ADD_FAILURE() << "missing fixture " << path << " (did fixtures." << name << " run?)";
  }
  return path;
}

std::filesystem::path shared_dir() {
  return env_path("TORCHLESS_SHARED");
}
std::filesystem::path source_dir() {
  return env_path("TORCHLESS_SOURCE");
}

std::filesystem::path temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "torchless";
  auto dir = std::filesystem::temp_directory_path() / "torchless-tests" / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<unsigned char> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::filesystem::path& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

int run_command(const std::string& command, std::string* output) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  std::array<char, 4096> chunk{};
  std::string collected;
  size_t n = 0;
  while ((n = fread(chunk.data(), 1, chunk.size(), pipe)) > 0) collected.append(chunk.data(), n);
  int status = pclose(pipe);
  if (output != nullptr) *output = std::move(collected);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string python() {
  const char* value = std::getenv("TORCHLESS_PYTHON");
  return value != nullptr && *value != '\0' ? value : "/usr/bin/python3";
}

nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path.string() + ": " + e.what());
  }
}

std::string cli() {
  const char* value = std::getenv("TORCHLESS_CLI");
  return value != nullptr && *value != '\0' ? value : "torchless";
}

CliRun run_torchless(const std::string& args, const std::filesystem::path& working_dir) {
  std::string command = cli() + " " + args + " 2>&1";
  if (!working_dir.empty()) command = "cd '" + working_dir.string() + "' && " + command;
  CliRun run;
  run.status = run_command(command, &run.output);
  return run;
}

}  // namespace torchless::testing
