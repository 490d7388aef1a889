#!/usr/bin/env python3
"""A D-PCC-like decoder stage (spec dpcc-pointcloud.md section 1.6), for bench/onnx_bench.cc.

  make_dpcc_stage.py --export OUT.onnx          export the stage with a dynamic point axis
  make_dpcc_stage.py --time --points 2000,20000 --threads 1,2 --iters 20
                                                time PyTorch eager in this process, print JSON

The stage is graph A of section 1.7: (latent_feats (1,8,N), latent_xyzs (1,3,N)) ->
candidate_xyzs (1,3,N,8), candidate_feats (1,8,N,8), upsample_num (1,N). It is preceded by a
Conv1d/GroupNorm/ReLU stack on (1,8,N) (the shape of latent_xyzs_synthesis), then:
  XyzsUpsampleLayer(u=8): SubPointConv mlp G=8 (Conv2d 1->64->43), softmax over the 43
      hypotheses, weighted sum of the icosahedron directions (one matrix product, as in
      python/torchless_export/dpcc/model.py), L2 normalise, scale SubPointConv
      (Conv2d 1->64->1), candidates = repeat(xyz) + direction * scale;
  FeatsUpsampleLayer(u=8): SubPointConv (Conv2d 1->64->8) + repeat(feats);
  UpsampleNumLayer: Conv1d 8->64 -> ReLU -> Conv1d 64->1 -> Sigmoid, u = s * 7 + 1.
Weights are random (seeded); timing does not depend on them. The ONNX file gets the package
exporter's rewrites (onnx_rewrite.lower_inner_softmax); PyTorch eager runs torch.softmax.
"""
import argparse
import io
import itertools
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from torchless_export.onnx_rewrite import lower_inner_softmax  # noqa: E402

U = 8      # max_upsample_num
DIM = 8    # latent channels
HIDDEN = 64


def icosahedron_directions():
    """icosahedron2sphere(1): the 12 vertices and 30 edge midpoints on the unit sphere, plus the
    zero hypothesis first (43 x 3), as D-PCC's XyzsUpsampleLayer builds it."""
    p = (1 + 5 ** 0.5) / 2
    verts = []
    for a, b in itertools.product((-1, 1), (-p, p)):
        verts += [(0, a, b), (a, b, 0), (b, 0, a)]
    v = torch.tensor(verts, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    edge = (v[0] - v[1:]).norm(dim=1).min().item()
    mids = []
    for i in range(12):
        for j in range(i + 1, 12):
            if abs((v[i] - v[j]).norm().item() - edge) < 1e-6:
                m = v[i] + v[j]
                mids.append(m / m.norm())
    dirs = torch.cat([v, torch.stack(mids)])
    dirs = torch.unique(dirs.round(decimals=12), dim=0)
    assert dirs.shape == (42, 3), dirs.shape
    return torch.cat([torch.zeros(1, 3, dtype=torch.float64), dirs]).float()


class SubPointConv(nn.Module):
    """mlp mode with G = 8 groups: channel k of the (1, 8, N) input feeds sub-point k."""

    def __init__(self, out_per_point):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(DIM // U, HIDDEN, 1), nn.ReLU(),
                                 nn.Conv2d(HIDDEN, out_per_point, 1))

    def forward(self, feats):
        n = feats.shape[2]
        x = feats.reshape(1, DIM // U, U, n).permute(0, 1, 3, 2)  # b (c g) n -> b c n g
        return self.mlp(x)  # (1, out, N, 8)


class DpccStage(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv1d(DIM, HIDDEN, 1), nn.GroupNorm(1, HIDDEN), nn.ReLU(),
                                 nn.Conv1d(HIDDEN, DIM, 1))
        self.weight_nn = SubPointConv(43)
        self.scale_nn = SubPointConv(1)
        self.feats_nn = SubPointConv(DIM)
        self.num_nn = nn.Sequential(nn.Conv1d(DIM, HIDDEN, 1), nn.ReLU(), nn.Conv1d(HIDDEN, 1, 1),
                                    nn.Sigmoid())
        self.register_buffer("hypothesis", icosahedron_directions())

    def forward(self, latent_feats, latent_xyzs):
        feats = latent_feats + self.pre(latent_feats)
        w = torch.softmax(self.weight_nn(feats), dim=1)                       # (1,43,N,8)
        n = w.shape[2]
        # The weighted sum of the directions as one product, as the exporter's model computes it.
        directions = torch.matmul(self.hypothesis.t(), w.reshape(1, 43, n * U)).reshape(1, 3, n, U)
        directions = F.normalize(directions, p=2, dim=1)
        scales = self.scale_nn(feats)                                         # (1,1,N,8)
        candidate_xyzs = latent_xyzs.unsqueeze(-1).repeat(1, 1, 1, U) + directions * scales
        candidate_feats = self.feats_nn(feats) + feats.unsqueeze(-1).repeat(1, 1, 1, U)
        upsample_num = self.num_nn(feats).squeeze(1) * (U - 1) + 1            # (1,N)
        return candidate_xyzs, candidate_feats, upsample_num


def make_stage():
    torch.manual_seed(0)
    return DpccStage().eval()


def inputs(n):
    g = torch.Generator().manual_seed(n)
    return torch.randn(1, DIM, n, generator=g), torch.randn(1, 3, n, generator=g)


def export(path):
    """Exports as the package exporter does: opset 17, then its ONNX Runtime rewrites."""
    stage = make_stage()
    f = io.BytesIO()
    torch.onnx.export(stage, inputs(100), f, opset_version=17,
                      input_names=["latent_feats", "latent_xyzs"],
                      output_names=["candidate_xyzs", "candidate_feats", "upsample_num"],
                      dynamic_axes={"latent_feats": {2: "N"}, "latent_xyzs": {2: "N"},
                                    "candidate_xyzs": {2: "N"}, "candidate_feats": {2: "N"},
                                    "upsample_num": {1: "N"}})
    model = onnx.load_from_string(f.getvalue())
    lower_inner_softmax(model)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def time_eager(points, threads, iters, warmup=3):
    """Median and mean milliseconds per forward, measured inside this process."""
    stage = make_stage()
    results = []
    for t in threads:
        torch.set_num_threads(t)
        for n in points:
            feats, xyzs = inputs(n)
            with torch.inference_mode():
                for _ in range(warmup):
                    stage(feats, xyzs)
                samples = []
                for _ in range(iters(n)):
                    start = time.perf_counter()
                    stage(feats, xyzs)
                    samples.append((time.perf_counter() - start) * 1e3)
            results.append({"points": n, "threads": t, "iters": len(samples),
                            "median_ms": statistics.median(samples),
                            "mean_ms": statistics.fmean(samples),
                            "min_ms": min(samples)})
    return {"torch_version": torch.__version__, "results": results}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--export")
    parser.add_argument("--time", action="store_true")
    parser.add_argument("--points", default="2000,20000")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--iters", type=int, default=20, help="iterations at 2,000 points "
                        "(scaled down for more points, at least 5)")
    args = parser.parse_args()
    if args.export:
        export(args.export)
    if args.time:
        points = [int(p) for p in args.points.split(",")]
        threads = [int(t) for t in args.threads.split(",")]
        iters = lambda n: max(5, args.iters * 2000 // n)
        print(json.dumps(time_eager(points, threads, iters)))


if __name__ == "__main__":
    main()
