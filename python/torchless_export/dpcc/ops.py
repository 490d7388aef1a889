"""Plain-PyTorch stand-ins for D-PCC's CUDA `pointops`: furthest-point sampling and kNN."""
import numpy as np
import torch


def furthest_point_sample(xyzs, npoint):
    """Indices (npoint,) of FPS over xyzs (n, 3), starting at index 0 like pointops.furthestsampling.

    Ties pick the lowest index (CUDA's reduction order may pick another; only the encoder sees it).
    """
    pts = xyzs.detach().cpu().numpy().astype(np.float32)
    n = pts.shape[0]
    npoint = int(min(npoint, n))
    idx = np.zeros(npoint, dtype=np.int64)
    dist = np.full(n, 1e10, dtype=np.float32)
    last = 0
    for i in range(1, npoint):
        d = pts - pts[last]
        dist = np.minimum(dist, (d * d).sum(axis=1))
        last = int(np.argmax(dist))
        idx[i] = last
    return torch.from_numpy(idx)


def knn(k, ref, query):
    """Indices (m, k) of the k nearest points of ref (n, 3) for each query (m, 3), nearest first."""
    d = torch.cdist(query.detach(), ref.detach())
    k = min(k, ref.shape[0])
    return torch.topk(d, k, dim=1, largest=False, sorted=True)[1]


def index_points(feats, idx):
    """feats (b, c, n), idx (b, *) -> (b, c, *): D-PCC's models/utils.py::index_points."""
    b, c = feats.shape[:2]
    flat = idx.reshape(b, 1, -1).expand(-1, c, -1)
    out = torch.gather(feats, 2, flat)
    return out.reshape(b, c, *idx.shape[1:])
