"""Trains the D-PCC reference codec on CPU on real sample clouds plus synthetic shapes.

building.ply and bunny.ply are never used here: they are the evaluation/demo clouds.
"""
import math
import os
import random
import time

import numpy as np
import torch

from .dpcc import blocks as blk
from .dpcc.model import AutoEncoder, DpccConfig
from .pointcloud_io import read_points

# The two operating points. Rate is set by how many latent points survive (downsample_rate) and
# by the rate-distortion weight bpp_lambda.
RATES = {
    "low": {"downsample_rate": [1 / 4, 1 / 3, 1 / 3], "bpp_lambda": 1e-3},
    "high": {"downsample_rate": [1 / 2, 1 / 3, 1 / 3], "bpp_lambda": 1e-4},
}

EVALUATION_CLOUDS = ("building.ply", "bunny.ply")
TRAINING_FILES = (
    "cgal/ball.ply", "cgal/b9_training.ply", "cgal/hippo1.ply", "cgal/kitten.xyz", "cgal/oni.ply",
    "cgal/radar.xyz", "cgal/sphere_20k.xyz", "cgal/spheres.ply", "pcl/bun0.pcd", "pcl/lamppost.pcd",
    "pcl/milk.pcd", "pcl/table_scene_lms400.pcd",
)


def config_for_rate(rate):
    cfg = DpccConfig()
    for k, v in RATES[rate].items():
        setattr(cfg, k, v)
    return cfg


def synthetic_clouds(rng, count=8, points=20000):
    """Surfaces with random proportions: sphere, torus, box shell, cylinder, wavy sheet."""
    clouds = []
    for i in range(count):
        kind = i % 5
        u = rng.random(points)
        v = rng.random(points)
        if kind == 0:
            z = 2 * u - 1
            t = 2 * math.pi * v
            r = np.sqrt(1 - z * z)
            p = np.stack([r * np.cos(t), r * np.sin(t), z], 1) * rng.uniform(0.5, 2, 3)
        elif kind == 1:
            R, r = 1.0, rng.uniform(0.2, 0.5)
            a, b = 2 * math.pi * u, 2 * math.pi * v
            p = np.stack([(R + r * np.cos(b)) * np.cos(a), (R + r * np.cos(b)) * np.sin(a), r * np.sin(b)], 1)
        elif kind == 2:
            p = rng.uniform(-1, 1, (points, 3))
            face = rng.integers(0, 3, points)
            p[np.arange(points), face] = np.sign(rng.uniform(-1, 1, points))
            p *= rng.uniform(0.3, 2, 3)
        elif kind == 3:
            t = 2 * math.pi * u
            p = np.stack([np.cos(t), np.sin(t), rng.uniform(-2, 2) * (2 * v - 1)], 1)
        else:
            x, y = 4 * u - 2, 4 * v - 2
            p = np.stack([x, y, 0.3 * np.sin(2 * x) * np.cos(3 * y)], 1)
        clouds.append(p + rng.normal(0, 0.002, p.shape))
    return clouds


def training_patches(samples_dir, rng, min_points=32):
    clouds = []
    for rel in TRAINING_FILES:
        path = os.path.join(samples_dir, rel)
        if os.path.basename(path) in EVALUATION_CLOUDS:
            raise AssertionError("evaluation cloud in training set")
        if os.path.exists(path):
            clouds.append(read_points(path))
    clouds += synthetic_clouds(rng)
    per_cloud = []
    for pts in clouds:
        prep = blk.prepare(pts)
        patches = [patch for _, patch, _ in prep["blocks"] if len(patch) >= min_points]
        if patches:
            per_cloud.append(patches)
    return per_cloud


def train(rate, out, samples_dir, steps=1200, max_minutes=10.0, seed=0, log_every=50, threads=1, init=None):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    random.seed(seed)
    cfg = config_for_rate(rate)
    model = AutoEncoder(cfg)
    if init:
        # Warm start: every parameter has the same shape at both rates (the rate knobs are the
        # downsample rates and bpp_lambda, not layer sizes).
        state = torch.load(init, map_location="cpu")
        model.load_state_dict(state.get("state_dict", state))
        print("initialised from %s" % init, flush=True)
    # Training-only weight of the upsample-count loss (D-PCC: density_coe 1e-4 over 50 epochs of
    # ShapeNet); a short CPU run needs a stronger pull on the counts.
    cfg.density_coe = 1e-2
    per_cloud = training_patches(samples_dir, rng)
    print("rate %s: %d clouds, %d training patches" % (rate, len(per_cloud), sum(map(len, per_cloud))), flush=True)
    main_params = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    opt = torch.optim.Adam(main_params, lr=1e-3)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, steps // 3), gamma=0.5)
    start = time.time()
    model.train()
    acc = {}
    step = 0
    for step in range(1, steps + 1):
        # Clouds uniformly, then a block of that cloud: the large scans do not dominate.
        patches = per_cloud[rng.integers(len(per_cloud))]
        patch = patches[rng.integers(len(patches))]
        # Augment with axis permutations and flips (keeps the patch inside [-1,1]^3).
        patch = patch[:, rng.permutation(3)] * rng.choice([-1.0, 1.0], 3).astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(patch.T))[None]
        _, loss, items, _ = model(x)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        sched.step()
        aux = model.aux_loss()
        aux_opt.zero_grad()
        aux.backward()
        aux_opt.step()
        for k, v in items.items():
            acc[k] = acc.get(k, 0.0) + v
        if step % log_every == 0:
            print("step %d %.0fs " % (step, time.time() - start)
                  + " ".join("%s=%.4g" % (k, v / log_every) for k, v in acc.items())
                  + " aux=%.3g" % float(aux), flush=True)
            acc = {}
        if max_minutes and time.time() - start > max_minutes * 60:
            print("stopping at step %d: time budget" % step, flush=True)
            break
    fit_quantiles(model, aux_opt)
    model.eval()
    for eb in model.entropy_bottlenecks().values():
        eb.update(force=True)
    ckpt = {"family": "dpcc", "rate": rate, "config": cfg.to_dict(), "state_dict": model.state_dict(),
            "steps": step, "seed": seed}
    if init:
        ckpt["init"] = os.path.basename(init)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save(ckpt, out)
    print("saved %s after %d steps, %.0fs" % (out, step, time.time() - start), flush=True)
    return out


def fit_quantiles(model, aux_opt, steps=3000):
    """Aux-loss-only steps: the quantiles converge far slower than the network in a short run,
    and they set the CDF table ranges. Cheap (no point cloud involved)."""
    for _ in range(steps):
        aux = model.aux_loss()
        aux_opt.zero_grad()
        aux.backward()
        aux_opt.step()
    print("aux loss after quantile fit: %.4g" % float(model.aux_loss()), flush=True)


def load_checkpoint(path):
    """(model in eval mode with tables updated, config, checkpoint dict). Accepts our checkpoints
    and bare D-PCC state_dicts (then the default config is assumed)."""
    ckpt = torch.load(path, map_location="cpu")
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        cfg = DpccConfig.from_dict(ckpt.get("config", {}))
        sd = ckpt["state_dict"]
    else:
        cfg = DpccConfig()
        sd = ckpt
        ckpt = {"family": "dpcc", "rate": "custom", "config": cfg.to_dict(), "state_dict": sd}
    model = AutoEncoder(cfg)
    model.load_state_dict(sd, strict=True)
    model.eval()
    for eb in model.entropy_bottlenecks().values():
        eb.update(force=True)
    return model, cfg, ckpt
