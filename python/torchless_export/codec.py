"""Encoder side and Python reference decoder of the D-PCC codec, over a model package.

compress: normalise, divide into blocks (dpcc/blocks.py), run pre_conv + encoder +
latent_xyzs_analysis per block in PyTorch, entropy-code the two latents with the package's
.bin tables. decompress runs the split the C++ decoder runs:
entropy decode -> latent_xyzs_synthesis -> per stage: upsample graph -> selection (round half to
even, point-major) -> refine graph -> un-normalise each block (float64) -> concatenate in block
order. Graphs run either as the package's PyTorch modules (engine "torch", default) or as the
package's .onnx files through onnx_eval (engine "onnx").
"""
import numpy as np
import torch

from .container import Container, Block, ContainerError
from .dpcc import blocks as blk
from .dpcc.model import select_xyzs_and_feats
from .entropy.rans import RansDecoder, RansEncoder
from .package import Package, StageRefine, StageUpsample


def _latent_symbols(x, medians):
    """CompressAI EntropyBottleneck.compress's symbols: round(x - median_c) (half to even), int32."""
    return torch.round(x - torch.from_numpy(np.array(medians, dtype=np.float32)).reshape(1, -1, 1)).int()


def encode_latent(tables, x):
    """x (1, C, n) float32 -> one rANS string, channel-major symbol order c*n + i."""
    c, n = x.shape[1], x.shape[2]
    symbols = _latent_symbols(x, tables.params)[0].reshape(-1).tolist()
    indexes = np.repeat(np.arange(c), n).tolist()
    cdfs, lengths, offsets = tables.coder_tables()
    return RansEncoder().encode_with_indexes(symbols, indexes, cdfs, lengths, offsets)


def decode_latent(tables, string, n):
    """rANS string -> (1, C, n) float32 = symbol + median_c."""
    c = len(tables.offsets)
    indexes = np.repeat(np.arange(c), n).tolist()
    cdfs, lengths, offsets = tables.coder_tables()
    values = RansDecoder().decode_with_indexes(string, indexes, cdfs, lengths, offsets)
    q = torch.tensor(values, dtype=torch.int32).reshape(1, c, n)
    return q.float() + torch.from_numpy(tables.params.copy()).reshape(1, c, 1)


class Codec:
    def __init__(self, package, engine="torch"):
        self.package = package if isinstance(package, Package) else Package(package)
        if self.package.manifest["family"] != "dpcc":
            raise ValueError("package family %r is not dpcc" % self.package.manifest["family"])
        self.model, self.cfg = self.package.load_model()
        self.feats_tables = self.package.tables("feats_eblock")
        self.xyzs_tables = self.package.tables("xyzs_eblock")
        self.engine = engine
        if engine == "onnx":
            import onnx
            self._onnx = {g["name"]: onnx.load(self.package.file(g["file"])) for g in self.package.manifest["graphs"]}
        elif engine != "torch":
            raise ValueError("engine must be 'torch' or 'onnx'")
        blocks = self.package.manifest.get("blocks", {})
        self.map_size = int(blocks.get("map_size", blk.MAP_SIZE))
        self.target_points = int(blocks.get("target_points", blk.TARGET_POINTS))
        self.max_points = int(blocks.get("max_points", blk.MAX_POINTS))

    # ---------------- encoder side ----------------
    @torch.no_grad()
    def encode_block(self, patch):
        x = torch.from_numpy(np.ascontiguousarray(patch.T, dtype=np.float32))[None]
        _, _, latent_feats, analyzed = self.model.encode_latents(x)
        n3 = latent_feats.shape[2]
        return n3, encode_latent(self.feats_tables, latent_feats), encode_latent(self.xyzs_tables, analyzed)

    def compress(self, points, cube_size=None):
        prep = blk.prepare(points, self.map_size, self.target_points, self.max_points, cube_size)
        c = Container(self.package.package_id, self.package.manifest_sha256, list(prep["shift"]),
                      prep["min_coord"], prep["max_coord"], prep["map_size"], prep["cube_size"], len(points))
        for cube_id, patch, _ in prep["blocks"]:
            n3, feats, xyzs = self.encode_block(patch)
            c.blocks.append(Block(cube_id, len(patch), n3, feats, xyzs))
        return c

    # ---------------- decoder side ----------------
    def _run(self, name, module, inputs):
        if self.engine == "onnx":
            from . import onnx_eval

            out = onnx_eval.run(self._onnx[name], {k: v.numpy() for k, v in inputs.items()})
            return tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in out.values())
        out = module(*inputs.values())
        return out if isinstance(out, tuple) else (out,)

    @torch.no_grad()
    def decode_block(self, block):
        """One block's points in patch coordinates, (1, 3, M) float32."""
        feats = decode_latent(self.feats_tables, block.feats, block.n3)
        analyzed = decode_latent(self.xyzs_tables, block.xyzs, block.n3)
        (xyzs,) = self._run("latent_xyzs_synthesis", self.model.latent_xyzs_synthesis, {"analyzed_xyzs": analyzed})
        for i, stage in enumerate(self.model.decoder.decoder_layers):
            cand_xyzs, cand_feats, unum = self._run("stage%d_upsample" % i, StageUpsample(stage),
                                                    {"xyzs": xyzs, "feats": feats})
            xyzs, feats = select_xyzs_and_feats(cand_xyzs, cand_feats, unum)
            xyzs, feats = self._run("stage%d_refine" % i, StageRefine(stage), {"xyzs": xyzs, "feats": feats})
        return xyzs

    def check_package(self, container):
        if container.package_id != self.package.package_id:
            raise ContainerError("container needs package %r, this is %r"
                                 % (container.package_id, self.package.package_id))
        if container.manifest_sha256 != self.package.manifest_sha256:
            raise ContainerError("container's manifest sha256 does not match package %r" % self.package.package_id)

    def decompress(self, container, skip_damaged=False):
        """(points float32 (M,3), damaged block indices). Damaged blocks raise unless skip_damaged."""
        self.check_package(container)
        if container.damaged and not skip_damaged:
            raise ContainerError("damaged block(s) %s (crc32 mismatch)" % container.damaged)
        d = -(-container.map_size // container.cube_size)
        parts = []
        for i, b in enumerate(container.blocks):
            if i in container.damaged:
                continue
            patch = self.decode_block(b)[0].t().numpy()
            parts.append(unnormalize(patch, b.cube_index, d, container))
        pts = np.concatenate(parts, axis=0) if parts else np.zeros((0, 3), np.float32)
        return pts, list(container.damaged)


def unnormalize(patch, cube_index, d, c):
    """Patch coords (float32) -> input coordinates, in float64, rounded to float32 at the end.

    Order of operations (docs/formats/container.md): m = p * (cube_size / 2) + (cube + 0.5) * cube_size;
    u = m / map_size; x = u * (max - min) + min + shift."""
    cx, rem = divmod(cube_index, d * d)
    cy, cz = divmod(rem, d)
    center = (np.array([cx, cy, cz], dtype=np.float64) + 0.5) * c.cube_size
    m = patch.astype(np.float64) * (c.cube_size / 2.0) + center
    u = m / c.map_size
    x = u * (c.max_coord - c.min_coord) + c.min_coord + np.asarray(c.shift, dtype=np.float64)
    return x.astype(np.float32)
