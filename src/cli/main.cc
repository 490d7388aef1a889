#include "cli/command.h"

int main(int argc, char** argv) {
  return torchless::cli::run_cli(argc, argv);
}
