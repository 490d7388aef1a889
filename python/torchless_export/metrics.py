"""Point-cloud metrics as MPEG pc_error computes them (spec §3.1), D1 only, and bpp."""
import math

import numpy as np
from scipy.spatial import cKDTree


def d1_mse(a, b):
    """Mean squared nearest-neighbour distance from every point of a to b."""
    d, _ = cKDTree(b).query(a, k=1)
    return float(np.mean(d * d))


def d1_psnr(reference, decoded, peak):
    """Symmetric D1 PSNR: 10 log10(3 peak^2 / max(MSE(A->B), MSE(B->A))). Returns (psnr, mse)."""
    mse = max(d1_mse(reference, decoded), d1_mse(decoded, reference))
    if mse == 0:
        return math.inf, 0.0
    return 10 * math.log10(3 * peak * peak / mse), mse


def chamfer(a, b):
    """Squared Chamfer distance, sum of the two means (D-PCC's convention)."""
    return d1_mse(a, b) + d1_mse(b, a)


def voxelize(points, bits=10):
    """Integer grid with the largest extent mapped to 2^bits - 1, duplicates removed (the anchors'
    preparation in the spec §4.3). Returns float64 (N,3) unique grid points."""
    p = np.asarray(points, dtype=np.float64)
    lo = p.min(axis=0)
    extent = float((p.max(axis=0) - lo).max())
    scale = ((1 << bits) - 1) / extent if extent > 0 else 1.0
    q = np.round((p - lo) * scale)
    return np.unique(q, axis=0)
