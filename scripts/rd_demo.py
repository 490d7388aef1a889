#!/usr/bin/env python3
"""Rate-distortion demo: torchless's learned codec (D-PCC packages) beside Google Draco.

For each cloud (real scans not used in training: the Stanford bunny and CGAL's building.ply) and
each committed model package (packages/dpcc-low, packages/dpcc-high):

  python3 -m torchless_export compress   (Python encoder -> .tlc container)
  torchless decode                      (C++ decoder: ONNX Runtime + rANS -> PLY)
  torchless eval                        (MPEG pc_error D1/D2 PSNR, bpp)

and Draco at several quantisation levels through scripts/draco_anchor.py (draco_encoder /
draco_decoder, the same `torchless eval`). Prints one table and writes a rate-distortion plot
(bpp against D1 PSNR, and D2 where the cloud has normals) to --plot (default out/rd.png).

Both codecs get the same input: the cloud voxelised to a BITS-bit grid (default 10: the largest
bounding-box side spans 0..1023, duplicates merged), as the anchors of the D-PCC spec (§4.3)
were measured, and PSNR uses the peak 2^BITS - 1. Every number printed is measured in this run.

    /usr/bin/python3 scripts/rd_demo.py [--plot out/rd.png] [--clouds bunny building]
        [--packages packages/dpcc-low packages/dpcc-high] [--qp 5 6 7 8] [--voxelize 10]
        [--cli build/release/src/cli/torchless] [--workdir DIR] [--json FILE]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import draco_anchor  # noqa: E402  (read_cloud, voxelize, write_ply)

CLOUDS = {
    "bunny": os.path.join(REPO, "third_party", "samples", "bunny.ply"),
    "building": os.path.join(REPO, "third_party", "samples", "cgal", "building.ply"),
}
PYTHON = "/usr/bin/python3"  # Debian's, with torch (the encoder side)


def fail(message):
    sys.exit("rd_demo: " + message)


def run(command, env=None):
    """(stdout, wall seconds); exits with the command's stderr on failure."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        fail("%s failed (%d): %s" % (" ".join(command[:3]), result.returncode,
                                     (result.stderr or result.stdout).strip()))
    return result.stdout, elapsed


def find_cli(given):
    candidates = [given, os.environ.get("TORCHLESS_CLI"),
                  os.path.join(REPO, "build", "release", "src", "cli", "torchless"),
                  shutil.which("torchless")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    fail("no torchless binary: build it (scripts/test.sh) or give --cli / TORCHLESS_CLI")


def evaluate(cli, reference, decoded, compressed, peak, has_normals):
    command = [cli, "eval", reference, decoded, "--json", "--peak", repr(float(peak)),
               "--compressed", compressed]
    if not has_normals:
        command += ["--normals", "none"]
    out, _ = run(command)
    return json.loads(out)


def torchless_rows(cli, cloud, reference, positions, packages, peak, has_normals, workdir):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"))
    rows = []
    for package in packages:
        manifest = json.load(open(os.path.join(package, "manifest.json")))
        rate = manifest.get("rate", os.path.basename(package))
        tlc = os.path.join(workdir, "%s-%s.tlc" % (cloud, rate))
        ply = os.path.join(workdir, "%s-%s.decoded.ply" % (cloud, rate))
        _, encode_s = run([PYTHON, "-m", "torchless_export", "compress", "--package", package,
                           "--in", positions, "--out", tlc], env=env)
        out, decode_wall = run([cli, "decode", tlc, "--package", package, "-o", ply, "--json",
                                "--no-progress"])
        decoded = json.loads(out)
        q = evaluate(cli, reference, ply, tlc, peak, has_normals)
        rows.append({
            "codec": "torchless", "setting": rate, "cloud": cloud, "points_in": q["points_in"],
            "points_out": q["points_out"], "bytes": os.path.getsize(tlc), "bpp": q["bpp"],
            "d1_psnr": q["d1_psnr"], "d2_psnr": q.get("d2_psnr"), "encode_s": encode_s,
            "decode_s": decode_wall, "decode_internal_s": decoded["seconds_decode"],
            "damaged_blocks": len(decoded["damaged_blocks"]), "blocks": decoded["blocks"]})
    return rows


def draco_rows(cli, cloud, reference, peak, qps, workdir):
    out, _ = run([PYTHON, os.path.join(REPO, "scripts", "draco_anchor.py"), reference, "--qp",
                  *[str(q) for q in qps], "--peak", repr(float(peak)), "--cli", cli,
                  "--workdir", os.path.join(workdir, "draco-" + cloud)])
    rows = []
    for line in out.splitlines():
        r = json.loads(line)
        rows.append({"codec": "draco", "setting": "qp%d" % r["qp"], "cloud": cloud,
                     "points_in": r["points_in"], "points_out": r["points_out"],
                     "bytes": r["bytes"], "bpp": r["bpp"], "d1_psnr": r["d1_psnr"],
                     "d2_psnr": r.get("d2_psnr"), "encode_s": r["encode_s"],
                     "decode_s": r["decode_s"], "decode_internal_s": None})
    return rows


def num(v, fmt="%.2f"):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return fmt % v


def print_table(rows):
    head = ("cloud", "codec", "setting", "bpp", "D1 PSNR", "D2 PSNR", "pts in", "pts out",
            "decode s", "(in-process)")
    table = [head]
    for r in rows:
        table.append((r["cloud"], r["codec"], r["setting"], num(r["bpp"], "%.3f"),
                      num(r["d1_psnr"]), num(r["d2_psnr"]), str(r["points_in"]),
                      str(r["points_out"]), num(r["decode_s"], "%.3f"),
                      num(r["decode_internal_s"], "%.3f")))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for k, row in enumerate(table):
        print("  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def finite(v):
    return v is not None and not isinstance(v, str)


def plot(rows, path, voxel_bits):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clouds = list(dict.fromkeys(r["cloud"] for r in rows))
    metrics = [m for m in ("d1_psnr", "d2_psnr") if any(finite(r[m]) for r in rows)]
    fig, axes = plt.subplots(len(metrics), len(clouds), figsize=(5.2 * len(clouds), 4 * len(metrics)),
                             squeeze=False)
    styles = {"torchless": dict(marker="o", color="tab:red", label="torchless D-PCC (C++ decode)"),
              "draco": dict(marker="s", color="tab:blue", label="Draco 1.5 (qp levels)")}
    for col, cloud in enumerate(clouds):
        for row_i, metric in enumerate(metrics):
            ax = axes[row_i][col]
            drawn = False
            for codec in ("torchless", "draco"):
                pts = sorted((r["bpp"], r[metric], r["setting"]) for r in rows
                             if r["cloud"] == cloud and r["codec"] == codec and finite(r[metric]))
                if not pts:
                    continue
                ax.plot([p[0] for p in pts], [p[1] for p in pts], **styles[codec])
                drawn = True
                for x, y, label in pts:
                    ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
            ax.set_xlabel("bits per input point")
            ax.set_ylabel(("D1" if metric == "d1_psnr" else "D2") + " PSNR (dB, peak %d)" % (2 ** voxel_bits - 1))
            ax.set_title("%s (%d-bit voxels)" % (cloud, voxel_bits))
            ax.grid(True, alpha=0.3)
            if drawn:
                ax.legend(fontsize=8, loc="lower right")
            else:
                ax.text(0.5, 0.5, "no normals in the reference:\nD1 only", ha="center",
                        va="center", transform=ax.transAxes)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--plot", default=os.path.join("out", "rd.png"))
    p.add_argument("--clouds", nargs="+", default=["bunny", "building"], choices=sorted(CLOUDS))
    p.add_argument("--packages", nargs="+",
                   default=[os.path.join(REPO, "packages", "dpcc-low"), os.path.join(REPO, "packages", "dpcc-high")])
    p.add_argument("--qp", type=int, nargs="+", default=[5, 6, 7, 8])
    p.add_argument("--voxelize", type=int, default=10, metavar="BITS")
    p.add_argument("--cli")
    p.add_argument("--workdir", help="keep intermediate files here")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    a = p.parse_args()

    cli = find_cli(a.cli)
    for package in a.packages:
        if not os.path.isfile(os.path.join(package, "manifest.json")):
            fail("%s: no manifest.json (a model package is needed; see README)" % package)
    if any(not os.path.exists(CLOUDS[c]) for c in a.clouds):
        subprocess.run([os.path.join(REPO, "scripts", "fetch_samples.sh")], check=False)
    workdir = a.workdir or tempfile.mkdtemp(prefix="rd_demo_")
    os.makedirs(workdir, exist_ok=True)
    peak = 2 ** a.voxelize - 1
    rows = []
    for cloud in a.clouds:
        if not os.path.exists(CLOUDS[cloud]):
            fail("%s missing (scripts/fetch_samples.sh)" % CLOUDS[cloud])
        xyz, normals = draco_anchor.read_cloud(CLOUDS[cloud])
        xyz, normals = draco_anchor.voxelize(xyz, normals, a.voxelize)
        reference = os.path.join(workdir, cloud + ".reference.ply")  # with normals, for D2
        positions = os.path.join(workdir, cloud + ".positions.ply")
        draco_anchor.write_ply(reference, xyz, normals)
        draco_anchor.write_ply(positions, xyz)
        print("rd_demo: %s: %d points after %d-bit voxelisation%s" %
              (cloud, len(xyz), a.voxelize, "" if normals is not None else " (no normals: D1 only)"),
              file=sys.stderr, flush=True)
        rows += torchless_rows(cli, cloud, reference, positions, a.packages, peak, normals is not None, workdir)
        rows += draco_rows(cli, cloud, reference, peak, a.qp, workdir)
    print_table(rows)
    print("\ndecode s: wall time of the decoder process (start, PLY I/O included); (in-process): "
          "torchless's decode step alone. PSNR peak %d; bpp = 8 * file bytes / input points." % peak)
    plot(rows, a.plot, a.voxelize)
    print("rate-distortion plot: %s" % a.plot)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if not a.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
