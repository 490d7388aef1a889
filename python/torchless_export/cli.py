"""Command line of torchless_export."""
import argparse
import os
import sys

DEFAULT_SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "third_party", "samples")


def _train(a):
    from .train import train

    train(a.rate, a.out, a.samples, steps=a.steps, max_minutes=a.max_minutes, seed=a.seed, threads=a.threads,
          init=a.init)
    return 0


def _package(a):
    from .package import write_package
    from .train import load_checkpoint

    if a.family != "dpcc":
        raise ValueError("family %r: only dpcc is supported" % a.family)
    model, cfg, ckpt = load_checkpoint(a.checkpoint)
    info = {k: ckpt[k] for k in ("steps", "seed", "init") if k in ckpt}
    manifest = write_package(model, cfg, a.out, rate=a.rate or ckpt.get("rate", "custom"), checkpoint_info=info)
    print("wrote %s (package_id %s, %d files)" % (a.out, manifest["package_id"], len(manifest["files"])))
    return 0


def _report(a):
    from . import report
    from .train import load_checkpoint

    model, cfg, _ = load_checkpoint(a.checkpoint)
    findings = report.dpcc_findings(model, cfg)
    print(report.to_json(findings) if a.json else report.to_markdown(findings), end="")
    return 0


def _compress(a):
    from .codec import Codec
    from .pointcloud_io import read_points

    codec = Codec(a.package)
    pts = read_points(a.inp)
    if len(pts) == 0:
        raise ValueError("%s: no points" % a.inp)
    container = codec.compress(pts, cube_size=a.cube_size)
    data = container.to_bytes()
    with open(a.out, "wb") as f:
        f.write(data)
    print("%s: %d points, %d blocks, cube_size %d, %d bytes, %.4f bpp"
          % (a.out, len(pts), len(container.blocks), container.cube_size, len(data), 8.0 * len(data) / len(pts)))
    return 0


def _decompress(a):
    import numpy as np

    from .codec import Codec
    from .container import Container
    from .pointcloud_io import write_ply

    codec = Codec(a.package, engine=a.engine)
    with open(a.inp, "rb") as f:
        container = Container.from_bytes(f.read(), a.inp)
    pts, damaged = codec.decompress(container, skip_damaged=a.skip_damaged)
    for i in damaged:
        print("warning: block %d (cube %d) is damaged (crc32 mismatch); skipped" % (i, container.blocks[i].cube_index),
              file=sys.stderr)
    write_ply(a.out, pts, binary=not a.ascii)
    if a.npy:
        np.save(a.npy, pts.astype(np.float32))
    print("%s: %d points" % (a.out, len(pts)))
    return 0


def _evaluate(a):
    import numpy as np

    from .codec import Codec
    from .container import Container
    from .metrics import d1_psnr, voxelize
    from .pointcloud_io import read_points

    codec = Codec(a.package)
    pts = read_points(a.inp)
    ref = voxelize(pts, a.voxel_bits) if a.voxel_bits else pts
    data = codec.compress(ref).to_bytes()
    out, _ = codec.decompress(Container.from_bytes(data))
    peak = (1 << a.voxel_bits) - 1 if a.voxel_bits else a.peak
    psnr, mse = d1_psnr(ref, out.astype(np.float64), peak)
    print("%s: %d points in, %d out, %d bytes, %.4f bpp, D1 mse %.4f, D1 PSNR %.2f dB (peak %g)"
          % (os.path.basename(a.inp), len(ref), len(out), len(data), 8.0 * len(data) / len(ref), mse, psnr, peak))
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="python3 -m torchless_export")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the D-PCC reference codec on CPU")
    t.add_argument("--rate", choices=["low", "high"], required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--samples", default=DEFAULT_SAMPLES)
    t.add_argument("--steps", type=int, default=1200)
    t.add_argument("--max-minutes", type=float, default=10.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--init", default=None, help="warm-start from this checkpoint (same architecture)")
    t.set_defaults(func=_train)

    k = sub.add_parser("package", help="export a checkpoint into a torchless model package")
    k.add_argument("--checkpoint", required=True)
    k.add_argument("--family", default="dpcc")
    k.add_argument("--out", required=True)
    k.add_argument("--rate", default=None, help="rate name recorded in the manifest (default: the checkpoint's)")
    k.set_defaults(func=_package)

    r = sub.add_parser("report", help="ONNX exportability report of a checkpoint's submodules")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--family", default="dpcc")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_report)

    c = sub.add_parser("compress", help="point cloud (.ply/.xyz/.pcd) -> .tlc container")
    c.add_argument("--package", required=True)
    c.add_argument("--in", dest="inp", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--cube-size", type=int, default=None, help="override the block policy's cube size")
    c.set_defaults(func=_compress)

    d = sub.add_parser("decompress", help=".tlc container -> PLY (Python reference decoder)")
    d.add_argument("--package", required=True)
    d.add_argument("--in", dest="inp", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    d.add_argument("--npy", default=None, help="also write the points as a float32 .npy")
    d.add_argument("--ascii", action="store_true")
    d.add_argument("--skip-damaged", action="store_true", help="decode the intact blocks of a damaged file")
    d.set_defaults(func=_decompress)

    e = sub.add_parser("evaluate", help="bpp and D1 PSNR of compress+decompress on one cloud")
    e.add_argument("--package", required=True)
    e.add_argument("--in", dest="inp", required=True)
    e.add_argument("--voxel-bits", type=int, default=10, help="voxelise to this grid first (0: raw)")
    e.add_argument("--peak", type=float, default=1.0, help="peak when --voxel-bits 0")
    e.set_defaults(func=_evaluate)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        print("torchless_export %s: %s" % (args.command, e), file=sys.stderr)
        return 1
