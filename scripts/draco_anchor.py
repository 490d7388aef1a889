#!/usr/bin/env python3
"""Draco rate/distortion anchor: one JSON line per quantisation level.

Runs Debian's draco_encoder / draco_decoder (point-cloud mode) on a point cloud at each `-qp`,
and for each level reports the encoded size (bytes, bits per input point), encode and decode
wall time (process start and PLY I/O included, as in the D-PCC spec §4.3), and the geometry
quality measured by `torchless eval` (D1/D2 PSNR as MPEG pc_error computes them, Chamfer).

    scripts/draco_anchor.py INPUT [--qp 11 10 8 6] [--cl 7] [--voxelize BITS] [--peak P]
                            [--cli PATH] [--workdir DIR]

INPUT is a PLY (ascii or binary) or XYZ text file ("x y z [nx ny nz]" per line). Only the
positions are given to Draco (normals are kept in the reference, for D2). With --voxelize BITS
the input is first quantised as the spec's §4.3 anchors were: q = round((p - min) / E * (2^BITS
- 1)), E the largest bounding-box side, duplicates removed (first point kept), and the peak
defaults to 2^BITS - 1. The torchless binary comes from --cli, else $TORCHLESS_CLI, else PATH.

Output fields: codec, input, qp, cl, voxelize_bits, points_in, points_out, bytes, bpp,
encode_s, decode_s, d1_mse, d1_psnr, d2_mse, d2_psnr (when the reference has normals), peak,
chamfer_squared_sum. An infinite PSNR (lossless) is the string "inf", as `torchless eval` writes
it. Needs Python 3 and numpy only.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def read_ply(path):
    """Positions (N, 3) and normals (N, 3) or None of the 'vertex' element of a PLY file."""
    data = open(path, "rb").read()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        sys.exit(f"draco_anchor: {path}: not a PLY file")
    body = data.index(b"\n", end) + 1
    fmt, elements = None, []
    for line in data[:body].decode("ascii", "replace").splitlines():
        w = line.split()
        if not w:
            continue
        if w[0] == "format":
            fmt = w[1]
        elif w[0] == "element":
            elements.append((w[1], int(w[2]), []))
        elif w[0] == "property":
            elements[-1][2].append(w[1:])
    order = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}[fmt]
    rows = None
    if fmt == "ascii":
        tokens = data[body:].split()
        pos = 0
        for name, count, props in elements:
            if any(p[0] == "list" for p in props):
                if name == "vertex":
                    sys.exit(f"draco_anchor: {path}: list properties in 'vertex' not supported")
                for _ in range(count):  # skip rows with lists
                    for p in props:
                        pos += 1 + int(tokens[pos]) if p[0] == "list" else 1
                continue
            n = count * len(props)
            if name == "vertex":
                values = np.array(tokens[pos:pos + n], dtype=np.float64).reshape(count, len(props))
                rows = {p[1]: values[:, i] for i, p in enumerate(props)}
            pos += n
    else:
        pos = body
        for name, count, props in elements:
            if any(p[0] == "list" for p in props):
                if name == "vertex":
                    sys.exit(f"draco_anchor: {path}: list properties in 'vertex' not supported")
                break  # elements after the vertices are not needed
            dtype = np.dtype([(p[1], order + PLY_TYPES[p[0]]) for p in props])
            if name == "vertex":
                table = np.frombuffer(data, dtype=dtype, count=count, offset=pos)
                rows = {p[1]: table[p[1]].astype(np.float64) for p in props}
                break
            pos += dtype.itemsize * count
    if rows is None:
        sys.exit(f"draco_anchor: {path}: no vertex element before any list element")
    xyz = np.stack([rows["x"], rows["y"], rows["z"]], axis=1)
    normals = None
    if all(k in rows for k in ("nx", "ny", "nz")):
        normals = np.stack([rows["nx"], rows["ny"], rows["nz"]], axis=1)
    return xyz, normals


def read_cloud(path):
    with open(path, "rb") as f:
        head = f.read(3)
    if head == b"ply":
        return read_ply(path)
    table = np.loadtxt(path, comments="#", ndmin=2)
    if table.shape[1] not in (3, 6):
        sys.exit(f"draco_anchor: {path}: XYZ lines must hold 3 or 6 values")
    return table[:, :3], (table[:, 3:6] if table.shape[1] == 6 else None)


def write_ply(path, xyz, normals=None):
    """Binary little-endian PLY with float32 x y z [nx ny nz]."""
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals is not None else [])
    table = np.empty(len(xyz), dtype=[(n, "<f4") for n in names])
    for i, n in enumerate("xyz"):
        table[n] = xyz[:, i]
    if normals is not None:
        for i, n in enumerate(("nx", "ny", "nz")):
            table[n] = normals[:, i]
    header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % len(xyz)
    header += "".join("property float %s\n" % n for n in names) + "end_header\n"
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(table.tobytes())


def voxelize(xyz, normals, bits):
    lo = xyz.min(axis=0)
    extent = (xyz.max(axis=0) - lo).max()
    steps = 2 ** bits - 1
    grid = np.round((xyz - lo) / extent * steps) if extent > 0 else np.zeros_like(xyz)
    grid, first = np.unique(grid, axis=0, return_index=True)  # first occurrence of each cell
    return grid, (normals[first] if normals is not None else None)


def run_timed(command):
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit("draco_anchor: %s failed (%d): %s" % (command[0], result.returncode,
                                                         (result.stderr or result.stdout).strip()))
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input")
    parser.add_argument("--qp", type=int, nargs="+", default=[11, 10, 8, 6])
    parser.add_argument("--cl", type=int, default=7, help="Draco compression level (default 7)")
    parser.add_argument("--voxelize", type=int, metavar="BITS")
    parser.add_argument("--peak", type=float, help="PSNR peak (default 2^BITS-1 with --voxelize, "
                        "else torchless eval's rule)")
    parser.add_argument("--cli", default=os.environ.get("TORCHLESS_CLI") or shutil.which("torchless"))
    parser.add_argument("--workdir", help="keep the intermediate files here")
    args = parser.parse_args()
    if not args.cli:
        sys.exit("draco_anchor: no torchless binary (give --cli or set TORCHLESS_CLI)")
    for tool in ("draco_encoder", "draco_decoder"):
        if shutil.which(tool) is None:
            sys.exit(f"draco_anchor: {tool} not found (Debian package 'draco')")

    workdir = args.workdir or tempfile.mkdtemp(prefix="draco_anchor_")
    os.makedirs(workdir, exist_ok=True)
    xyz, normals = read_cloud(args.input)
    peak = args.peak
    if args.voxelize:
        xyz, normals = voxelize(xyz, normals, args.voxelize)
        if peak is None:
            peak = 2 ** args.voxelize - 1
    reference = os.path.join(workdir, "reference.ply")
    positions = os.path.join(workdir, "positions.ply")
    write_ply(reference, xyz, normals)
    write_ply(positions, xyz)

    for qp in args.qp:
        encoded = os.path.join(workdir, "qp%d.drc" % qp)
        decoded = os.path.join(workdir, "qp%d.ply" % qp)
        encode_s = run_timed(["draco_encoder", "-point_cloud", "-i", positions, "-o", encoded,
                              "-qp", str(qp), "-cl", str(args.cl)])
        decode_s = run_timed(["draco_decoder", "-i", encoded, "-o", decoded])
        size = os.path.getsize(encoded)
        command = [args.cli, "eval", reference, decoded, "--json", "--compressed-bytes", str(size)]
        if peak is not None:
            command += ["--peak", repr(float(peak))]
        if normals is None:
            command += ["--normals", "none"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit("draco_anchor: torchless eval failed: " + result.stderr.strip())
        quality = json.loads(result.stdout)
        row = {
            "codec": "draco", "input": args.input, "qp": qp, "cl": args.cl,
            "voxelize_bits": args.voxelize, "points_in": quality["points_in"],
            "points_out": quality["points_out"], "bytes": size, "bpp": quality["bpp"],
            "encode_s": round(encode_s, 4), "decode_s": round(decode_s, 4),
            "peak": quality["peak"], "d1_mse": quality["d1_mse"], "d1_psnr": quality["d1_psnr"],
            "chamfer_squared_sum": quality["chamfer"]["squared_sum"],
        }
        if "d2_psnr" in quality:
            row["d2_mse"] = quality["d2_mse"]
            row["d2_psnr"] = quality["d2_psnr"]
        print(json.dumps(row), flush=True)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
