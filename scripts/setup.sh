#!/usr/bin/env bash
# Installs everything torchless needs on a fresh Debian 12 machine (run as root, or with sudo):
#   - Debian packages (compilers, libraries, PyTorch for fixtures, Draco for comparisons);
#   - ONNX Runtime, which Debian does not package, from the npm registry, pinned by version and
#     sha256, unpacked into third_party/onnxruntime/ (git-ignored).
# Safe to run again: it skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

DEBIAN_PACKAGES=(
  build-essential cmake ninja-build clang libclang-rt-14-dev clang-format git pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev libfmt-dev zlib1g-dev
  libonnx-dev libprotobuf-dev protobuf-compiler libnanoflann-dev draco
  python3 python3-torch python3-onnx python3-numpy python3-scipy python3-matplotlib python3-pytest
  ca-certificates
)
# npm fetches ONNX Runtime; use Debian's unless an npm is already installed.
command -v npm >/dev/null 2>&1 || DEBIAN_PACKAGES+=(nodejs npm)
missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime: the shared library from onnxruntime-node, the C/C++ API headers (API version 29,
# compatible with that library) from com.github.asus4.onnxruntime.
ORT_DIR=third_party/onnxruntime
DL_DIR=third_party/.downloads
ORT_NODE_PKG=onnxruntime-node@1.30.0
ORT_NODE_TGZ=onnxruntime-node-1.30.0.tgz
ORT_NODE_SHA256=6e3390d6b783e7be946fad629292799da28d0b42f84856e50d2c1b0383291e75
ORT_HEADERS_PKG=com.github.asus4.onnxruntime@0.4.9
ORT_HEADERS_TGZ=com.github.asus4.onnxruntime-0.4.9.tgz
ORT_HEADERS_SHA256=e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d

fetch() {  # fetch PKG TGZ SHA256
  local pkg=$1 tgz=$2 sha=$3
  if [ ! -f "$DL_DIR/$tgz" ] || ! echo "$sha  $DL_DIR/$tgz" | sha256sum -c --quiet - 2>/dev/null; then
    echo "setup: fetching $pkg from the npm registry"
    rm -f "$DL_DIR/$tgz"
    (cd "$DL_DIR" && npm pack --silent "$pkg" >/dev/null)
  fi
  echo "$sha  $DL_DIR/$tgz" | sha256sum -c --quiet - || { echo "setup: sha256 mismatch for $tgz" >&2; exit 1; }
}

if [ ! -f "$ORT_DIR/.complete" ]; then
  mkdir -p "$DL_DIR"
  fetch "$ORT_NODE_PKG" "$ORT_NODE_TGZ" "$ORT_NODE_SHA256"
  fetch "$ORT_HEADERS_PKG" "$ORT_HEADERS_TGZ" "$ORT_HEADERS_SHA256"
  rm -rf "$ORT_DIR" && mkdir -p "$ORT_DIR/include" "$ORT_DIR/lib"
  tar -xzf "$DL_DIR/$ORT_NODE_TGZ" -C "$ORT_DIR/lib" --strip-components=5 \
      package/bin/napi-v6/linux/x64/libonnxruntime.so.1
  headers='package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers'
  tar -xzf "$DL_DIR/$ORT_HEADERS_TGZ" -C "$ORT_DIR/include" --strip-components=7 "$headers"
  ln -sf libonnxruntime.so.1 "$ORT_DIR/lib/libonnxruntime.so"
  touch "$ORT_DIR/.complete"
  echo "setup: ONNX Runtime ready in $ORT_DIR"
fi
