"""The 42-direction unit-sphere table of D-PCC's XyzsUpsampleLayer (icosahedron subdivided once).

D-PCC builds it with `icosahedron2sphere(1)` (from PanoContext) and prepends [0,0,0]; it is not
in the state_dict, so every consumer must regenerate it bit for bit. The steps below (np.unique
ordering, midpoint arithmetic, normalisation with a tiled norm) are the ones that fix the bits.
"""
import numpy as np


def _icosahedron_triangles():
    a = 2 / (1 + np.sqrt(5))
    # 20 faces x 3 vertices x xyz of the icosahedron with vertices (0,±a,±1) and permutations.
    faces = [
        [0, a, -1, a, 1, 0, -a, 1, 0], [0, a, 1, -a, 1, 0, a, 1, 0],
        [0, a, 1, 0, -a, 1, -1, 0, a], [0, a, 1, 1, 0, a, 0, -a, 1],
        [0, a, -1, 0, -a, -1, 1, 0, -a], [0, a, -1, -1, 0, -a, 0, -a, -1],
        [0, -a, 1, a, -1, 0, -a, -1, 0], [0, -a, -1, -a, -1, 0, a, -1, 0],
        [-a, 1, 0, -1, 0, a, -1, 0, -a], [-a, -1, 0, -1, 0, -a, -1, 0, a],
        [a, 1, 0, 1, 0, -a, 1, 0, a], [a, -1, 0, 1, 0, a, 1, 0, -a],
        [0, a, 1, -1, 0, a, -a, 1, 0], [0, a, 1, a, 1, 0, 1, 0, a],
        [0, a, -1, -a, 1, 0, -1, 0, -a], [0, a, -1, 1, 0, -a, a, 1, 0],
        [0, -a, -1, -1, 0, -a, -a, -1, 0], [0, -a, -1, a, -1, 0, 1, 0, -a],
        [0, -a, 1, -a, -1, 0, -1, 0, a], [0, -a, 1, 1, 0, a, a, -1, 0],
    ]
    return np.array(faces, dtype=np.float64).reshape(60, 3)


def icosahedron2sphere(level):
    """(vertices (V,3) float64 unit vectors, triangles (T,3)) after `level` subdivisions."""
    corners = _icosahedron_triangles()
    coor, idx = np.unique(corners, return_inverse=True, axis=0)
    tri = idx.reshape(20, 3)
    coor = list(coor / np.tile(np.linalg.norm(coor, axis=1, keepdims=True), (1, 3)))
    for _ in range(level):
        new_tri = []
        for t in range(len(tri)):
            n = len(coor)
            v0, v1, v2 = tri[t]
            coor.append((coor[v0] + coor[v1]) / 2)
            coor.append((coor[v1] + coor[v2]) / 2)
            coor.append((coor[v2] + coor[v0]) / 2)
            new_tri += [[n, v0, n + 2], [n, v1, n + 1], [n + 1, v2, n + 2], [n, n + 1, n + 2]]
        tri = np.array(new_tri)
        coor, idx = np.unique(coor, return_inverse=True, axis=0)
        tri = idx[tri]
        coor = list(coor / np.tile(np.sqrt(np.sum(coor * coor, 1, keepdims=True)), (1, 3)))
    return np.array(coor), np.array(tri)


def hypothesis_directions():
    """(43, 3) float32: [0,0,0] followed by the 42 level-1 directions, as D-PCC's `hypothesis`."""
    coor, _ = icosahedron2sphere(1)
    return np.append(np.zeros((1, 3)), coor, axis=0).astype(np.float32)
