// Subcommands of the `torchless` command. Each lives in its own file (src/cli/<name>.cc) and
// registers itself with a static CommandRegistration:
//
//   static CommandRegistration kInspect{"inspect", "Show what a file holds", [](CLI::App& app) {
//     auto options = std::make_shared<InspectOptions>();
//     app.add_option("file", options->file)->required();
//     return [options] { return run_inspect(*options); };  // returns the exit code
//   }};
//
// main() builds the CLI11 app from the registry. A torchless::Error escaping a command becomes
// one line on stderr ("torchless inspect: <message>") and exit code 1.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace torchless::cli {

using CommandRunner = std::function<int()>;
using CommandSetup = std::function<CommandRunner(CLI::App&)>;

struct Command {
  std::string name;
  std::string description;
  CommandSetup setup;
};

std::vector<Command>& command_registry();

struct CommandRegistration {
  CommandRegistration(std::string name, std::string description, CommandSetup setup) {
    command_registry().push_back({std::move(name), std::move(description), std::move(setup)});
  }
};

// Runs the command line (argv[0] ignored) and returns the process exit code. Tests call this.
int run_cli(int argc, const char* const* argv);

}  // namespace torchless::cli
