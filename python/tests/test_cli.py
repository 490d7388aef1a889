"""The command line: package, report, compress and decompress as subprocesses."""
import json
import os
import subprocess
import sys

import numpy as np

from torchless_export.codec import Codec
from torchless_export.container import Container
from torchless_export.pointcloud_io import read_points, write_ply

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args):
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    return subprocess.run([sys.executable, "-m", "torchless_export"] + list(args), env=env,
                          capture_output=True, text=True, timeout=300)


def test_compress_then_decompress_from_the_command_line(tiny_package, tmp_path):
    rng = np.random.default_rng(5)
    pts = rng.normal(size=(1500, 3)) * [4, 2, 1]
    src = str(tmp_path / "in.ply")
    write_ply(src, pts)
    tlc, out, npy = str(tmp_path / "c.tlc"), str(tmp_path / "out.ply"), str(tmp_path / "out.npy")
    r = cli("compress", "--package", tiny_package, "--in", src, "--out", tlc)
    assert r.returncode == 0, r.stderr
    r = cli("decompress", "--package", tiny_package, "--in", tlc, "--out", out, "--npy", npy)
    assert r.returncode == 0, r.stderr
    codec = Codec(tiny_package)
    with open(tlc, "rb") as f:
        want, _ = codec.decompress(Container.from_bytes(f.read()))
    np.testing.assert_array_equal(np.load(npy), want)
    np.testing.assert_array_equal(read_points(out).astype(np.float32), want)


def test_decompress_reports_a_bad_file_in_one_line(tiny_package, tmp_path):
    bad = tmp_path / "bad.tlc"
    bad.write_bytes(b"NOTACONTAINER" * 4)
    r = cli("decompress", "--package", tiny_package, "--in", str(bad), "--out", str(tmp_path / "o.ply"))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "bad magic" in r.stderr


def test_package_and_report_commands_on_a_checkpoint(tiny_package, tmp_path):
    ckpt = os.path.join(tiny_package, "model.pt")
    out = str(tmp_path / "pkg")
    r = cli("package", "--checkpoint", ckpt, "--out", out, "--rate", "test")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f)["rate"] == "test"
    r = cli("report", "--checkpoint", ckpt, "--json")
    assert r.returncode == 0, r.stderr
    findings = {f["name"]: f for f in json.loads(r.stdout)}
    assert findings["decoder"]["status"] == "not exportable"
    assert findings["pre_conv"]["status"] in ("exportable", "exportable with workaround")
