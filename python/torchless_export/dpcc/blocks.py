"""D-PCC's cloud normalisation and cube division (spec §1.8), with torchless's block policy.

normalize: shift = mean(xyz); xyz -= shift; min/max over all axes; xyz = (xyz - min)/(max - min).
Blocks: map_xyz = xyz * map_size; cube of a point = floor(map_xyz) // cube_size per axis;
linear id cx*D^2 + cy*D + cz with D = ceil(map_size / cube_size); patch coords
2 (p - (c + 0.5) * cube_size) / cube_size in [-1, 1].

torchless policy (D-PCC drops cubes with < min_num or > max_num points; we drop nothing):
- cube_size is the largest integer in [1, map_size] whose mean occupancy (points per occupied
  cube) is <= target_points;
- a cube with more than max_points points is split into ceil(n / max_points) chunks of nearly
  equal size, consecutive along the cube's longest extent (stable sort of the points by that
  coordinate); the chunks share the cube index;
- blocks are ordered by ascending cube id, chunks in order; points keep input order inside a block.
Every input point belongs to exactly one block.
"""
import math

import numpy as np

MAP_SIZE = 100
TARGET_POINTS = 512
MAX_POINTS = 1024


def normalize(points):
    """points (N,3) float64 -> (normalised float64 in [0,1], shift (3,), min_coord, max_coord)."""
    pts = np.asarray(points, dtype=np.float64)
    shift = pts.mean(axis=0)
    centred = pts - shift
    min_coord = float(centred.min())
    max_coord = float(centred.max())
    extent = max_coord - min_coord
    if not extent > 0:
        extent = 1.0
        max_coord = min_coord + 1.0
    return (centred - min_coord) / extent, shift, min_coord, max_coord


def cube_ids(unit_xyz, map_size, cube_size):
    d = int(math.ceil(map_size / cube_size))
    cube = np.floor(unit_xyz * map_size).astype(np.int64) // cube_size
    # A point at exactly 1.0 maps to map_size; keep it in the last cube.
    cube = np.clip(cube, 0, d - 1)
    return cube, cube[:, 0] * d * d + cube[:, 1] * d + cube[:, 2], d


def choose_cube_size(unit_xyz, map_size=MAP_SIZE, target_points=TARGET_POINTS):
    n = len(unit_xyz)
    for cube_size in range(map_size, 0, -1):
        _, ids, _ = cube_ids(unit_xyz, map_size, cube_size)
        occupied = len(np.unique(ids))
        if n / occupied <= target_points:
            return cube_size
    return 1


def divide(unit_xyz, map_size, cube_size, max_points=MAX_POINTS):
    """Returns a list of (cube_id, point indices) in block order."""
    cube, ids, d = cube_ids(unit_xyz, map_size, cube_size)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    ends = np.r_[starts[1:], len(order)]
    blocks = []
    for s, e in zip(starts, ends):
        idx = order[s:e]
        cid = int(sorted_ids[s])
        if len(idx) <= max_points:
            blocks.append((cid, idx))
            continue
        pts = unit_xyz[idx]
        axis = int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))
        by_axis = idx[np.argsort(pts[:, axis], kind="stable")]
        chunks = int(math.ceil(len(idx) / max_points))
        for part in np.array_split(by_axis, chunks):
            blocks.append((cid, np.sort(part)))
    return blocks


def cube_center(cube_id, d, cube_size):
    cx, rem = divmod(cube_id, d * d)
    cy, cz = divmod(rem, d)
    return (np.array([cx, cy, cz], dtype=np.float64) + 0.5) * cube_size


def to_patch(unit_xyz, cube_id, d, cube_size, map_size=MAP_SIZE):
    """Patch coordinates in [-1,1] (float32) of the given normalised points."""
    center = cube_center(cube_id, d, cube_size)
    return (2.0 * (unit_xyz * map_size - center) / cube_size).astype(np.float32)


def prepare(points, map_size=MAP_SIZE, target_points=TARGET_POINTS, max_points=MAX_POINTS, cube_size=None):
    """Full encoder-side division: returns dict with meta and a list of (cube_id, patch float32 (n,3), idx)."""
    unit, shift, min_coord, max_coord = normalize(points)
    if cube_size is None:
        cube_size = choose_cube_size(unit, map_size, target_points)
    d = int(math.ceil(map_size / cube_size))
    blocks = []
    for cid, idx in divide(unit, map_size, cube_size, max_points):
        blocks.append((cid, to_patch(unit[idx], cid, d, cube_size, map_size), idx))
    return {"shift": shift, "min_coord": min_coord, "max_coord": max_coord, "map_size": map_size,
            "cube_size": cube_size, "d": d, "blocks": blocks}
