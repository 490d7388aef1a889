#!/usr/bin/env bash
# torchless in two minutes: sets up and builds the release preset, trains a small conv net for a
# few Adam steps with Debian's PyTorch, saves a full training checkpoint (model, optimizer state,
# epoch, loss), then reads it without Python: `torchless inspect`, `torchless convert` to
# safetensors, `torchless inspect` again. Finally torch itself checks that the safetensors file
# holds exactly the checkpoint's state_dict. Everything printed is produced by the run.
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
echo "files kept in $work"
