#!/usr/bin/env bash
# The torchless demo: sets up and builds the release preset, then
#  1. point clouds end to end (scripts/rd_demo.py): real scans not used in training (the Stanford
#     bunny, CGAL's building.ply) compressed with the built-in trained D-PCC packages
#     (packages/dpcc-low, packages/dpcc-high), decoded by the C++ decoder (`torchless decode`:
#     rANS + ONNX Runtime, no Python), measured by `torchless eval` (bpp, D1/D2 PSNR), beside
#     Draco at comparable rates; a rate-distortion plot is written to WORKDIR/rd.png;
#  2. checkpoints without Python: a small conv net trained for a few Adam steps with Debian's
#     PyTorch, its full training checkpoint read by `torchless inspect`, converted to safetensors
#     by `torchless convert`, and checked by torch itself.
# Everything printed is produced by the run.
#
# Usage: scripts/demo.sh [WORKDIR]   (default: a fresh temporary folder, kept for you to look at)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PY=/usr/bin/python3  # Debian's python3 with torch; the first python3 on PATH may lack it

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "setup (scripts/setup.sh)"
bash scripts/setup.sh

step "build (cmake --preset release && cmake --build --preset release)"
cmake --preset release >/dev/null
cmake --build --preset release
torchless="$root/build/release/src/cli/torchless"

work=${1:-$(mktemp -d "${TMPDIR:-/tmp}/torchless-demo.XXXXXX")}
mkdir -p "$work"
work=$(cd "$work" && pwd)

step "sample point clouds (scripts/fetch_samples.sh)"
bash scripts/fetch_samples.sh

step "point clouds: Python encoder -> C++ decoder (torchless decode) -> torchless eval, beside Draco"
"$PY" scripts/rd_demo.py --cli "$torchless" --plot "$work/rd.png" --workdir "$work/pointclouds"
cd "$work"

step "train a small conv net for 5 Adam steps and torch.save a training checkpoint"
"$PY" - <<'EOF'
import torch
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 16, 5, stride=2, padding=2), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
    torch.nn.Conv2d(16, 16, 5, stride=2, padding=2), torch.nn.ReLU(),
    torch.nn.ConvTranspose2d(16, 16, 5, stride=2, padding=2, output_padding=1), torch.nn.ReLU(),
    torch.nn.ConvTranspose2d(16, 3, 5, stride=2, padding=2, output_padding=1))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
for step in range(5):
    x = torch.rand(4, 3, 32, 32)
    loss = torch.nn.functional.mse_loss(net(x), x)
    opt.zero_grad()
    loss.backward()
    opt.step()
torch.save({"epoch": 5, "model_state_dict": net.state_dict(),
            "optimizer_state_dict": opt.state_dict(), "loss": loss.item()}, "checkpoint.pth")
print(f"checkpoint.pth written by torch {torch.__version__}: loss {loss.item():.4f}")
EOF

step "torchless inspect checkpoint.pth"
"$torchless" inspect checkpoint.pth

step "torchless convert checkpoint.pth model.safetensors"
"$torchless" convert --force checkpoint.pth model.safetensors

step "torchless inspect model.safetensors"
"$torchless" inspect model.safetensors

step "check with torch: model.safetensors == checkpoint['model_state_dict']"
"$PY" - <<'EOF'
import json, struct, torch
raw = open("model.safetensors", "rb").read()
n, = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + n])
header.pop("__metadata__", None)
DT = {"F32": torch.float32, "I64": torch.int64}
sd = torch.load("checkpoint.pth")["model_state_dict"]
for name, info in header.items():
    b, e = info["data_offsets"]
    t = torch.frombuffer(bytearray(raw[8 + n + b:8 + n + e]), dtype=DT[info["dtype"]])
    assert torch.equal(t.reshape(info["shape"]), sd[name]), name
assert sorted(header) == sorted(sd)
print(f"all {len(sd)} tensors equal")
EOF

step "summary"
json=$("$torchless" inspect --json checkpoint.pth)
st_json=$("$torchless" inspect --json model.safetensors)
"$PY" - "$json" "$st_json" <<'EOF'
import json, os, sys
ckpt, st = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"checkpoint.pth     {os.path.getsize('checkpoint.pth'):>8} bytes  {ckpt['format']} v{ckpt['version']}"
      f"  {ckpt['totals']['tensors']} tensors ({ckpt['totals']['parameters']} values incl. Adam state)")
print(f"model.safetensors  {os.path.getsize('model.safetensors'):>8} bytes  {st['format']}"
      f"  {st['totals']['tensors']} tensors ({st['totals']['parameters']} parameters)")
EOF
echo "files kept in $work (rate-distortion plot: $work/rd.png)"
