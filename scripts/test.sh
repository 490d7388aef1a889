#!/usr/bin/env bash
# Sets up (scripts/setup.sh), builds the release preset with warnings as errors, and runs every
# test: C++ suites, fixture generation with Debian's PyTorch, and the Python exporter's pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release
ctest --preset release "$@"
