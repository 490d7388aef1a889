#include "cli/command.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "torchless/core/error.h"

namespace torchless::cli {

std::vector<Command>& command_registry() {
  static std::vector<Command> registry;
  return registry;
}

int run_cli(int argc, const char* const* argv) {
  CLI::App app{"torchless: deploy PyTorch-trained learned-compression models without Python"};
  app.require_subcommand(1);
  app.set_version_flag("--version", TORCHLESS_VERSION_STRING);

  auto commands = command_registry();
  std::sort(commands.begin(), commands.end(),
            [](const Command& a, const Command& b) { return a.name < b.name; });
  std::vector<std::pair<CLI::App*, CommandRunner>> runners;
  for (const auto& command : commands) {
    CLI::App* sub = app.add_subcommand(command.name, command.description);
    runners.emplace_back(sub, command.setup(*sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (auto& [sub, runner] : runners) {
    if (!sub->parsed()) continue;
    try {
      return runner();
    } catch (const Error& e) {
      std::fprintf(stderr, "torchless %s: %s\n", sub->get_name().c_str(), e.what());
      return 1;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "torchless %s: out of memory\n", sub->get_name().c_str());
      return 1;
    }
  }
  return 1;
}

}  // namespace torchless::cli
