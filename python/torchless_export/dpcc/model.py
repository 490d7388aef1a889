"""D-PCC (He et al., CVPR 2022) reference codec, written from ../shared/specs/dpcc-pointcloud.md.

Module and parameter names and shapes follow yunhe20/D-PCC's `models/autoencoder.py::AutoEncoder`,
so a D-PCC state_dict loads into `AutoEncoder` (with old CompressAI `_matrix0`-style entropy
bottleneck keys remapped). CUDA ops are replaced by ops.py (FPS start index 0, kNN by cdist), and
`.cuda()` calls are gone, so everything runs on CPU. The decoder is built from the same three
pieces the exported graphs hold (upsample, select, refine), so PyTorch and the split decode agree.
"""
import math
from dataclasses import dataclass, field, asdict
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..entropy import EntropyBottleneck
from .icosahedron import hypothesis_directions
from .ops import furthest_point_sample, index_points, knn


@dataclass
class DpccConfig:
    k: int = 16
    downsample_rate: List[float] = field(default_factory=lambda: [1 / 3, 1 / 3, 1 / 3])
    max_upsample_num: List[int] = field(default_factory=lambda: [8, 8, 8])
    layer_num: int = 3
    dim: int = 8
    hidden_dim: int = 64
    ngroups: int = 1
    in_fdim: int = 3
    quantize_latent_xyzs: bool = True
    latent_xyzs_conv_mode: str = "mlp"
    sub_point_conv_mode: str = "mlp"
    compress_normal: bool = False
    # Loss weights (D-PCC defaults, ShapeNet).
    chamfer_coe: float = 0.1
    pts_num_coe: float = 5e-7
    mean_distance_coe: float = 50.0
    density_coe: float = 1e-4
    latent_xyzs_coe: float = 1e-2
    bpp_lambda: float = 1e-4

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def _mlp2d(cin, hidden, cout):
    return nn.Sequential(nn.Conv2d(cin, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, cout, 1))


class PointTransformerLayer(nn.Module):
    def __init__(self, in_fdim, out_fdim, args):
        super().__init__()
        h = args.hidden_dim
        self.w_qs = nn.Conv1d(in_fdim, h, 1)
        self.w_ks = nn.Conv1d(in_fdim, h, 1)
        self.w_vs = nn.Conv1d(in_fdim, h, 1)
        self.conv_delta = nn.Sequential(nn.Conv2d(3, h, 1), nn.GroupNorm(args.ngroups, h), nn.ReLU(inplace=True),
                                        nn.Conv2d(h, h, 1))
        self.conv_gamma = nn.Sequential(nn.Conv2d(h, h, 1), nn.GroupNorm(args.ngroups, h), nn.ReLU(inplace=True),
                                        nn.Conv2d(h, h, 1))
        self.post_conv = nn.Conv1d(h, out_fdim, 1)

    def forward(self, q_xyzs, k_xyzs, q_feats, k_feats, v_feats, knn_idx, mask):
        knn_xyzs = index_points(k_xyzs, knn_idx)
        query = self.w_qs(q_feats)
        key = index_points(self.w_ks(k_feats), knn_idx)
        value = index_points(self.w_vs(v_feats), knn_idx)
        pos_enc = self.conv_delta(q_xyzs.unsqueeze(-1) - knn_xyzs)
        attn = self.conv_gamma(query.unsqueeze(-1) - key + pos_enc) / math.sqrt(key.shape[1])
        attn = attn.masked_fill(~mask[:, None], -torch.finfo(attn.dtype).max)
        attn = F.softmax(attn, dim=-1)
        res = torch.einsum("bcmk,bcmk->bcm", attn, value + pos_enc)
        return self.post_conv(res) + q_feats


class PositionEmbeddingLayer(nn.Module):
    def __init__(self, args):
        super().__init__()
        h = args.hidden_dim
        self.pre_nn = nn.Sequential(nn.Conv2d(4, h, 1), nn.GroupNorm(args.ngroups, h), nn.ReLU(inplace=True),
                                    nn.Conv2d(h, args.dim, 1))
        self.attn_nn = nn.Sequential(nn.Conv2d(args.dim, h, 1), nn.GroupNorm(args.ngroups, h), nn.ReLU(inplace=True),
                                     nn.Conv2d(h, args.dim, 1))

    def forward(self, q_xyzs, k_xyzs, knn_idx, mask):
        knn_xyzs = index_points(k_xyzs, knn_idx)
        rel = knn_xyzs - q_xyzs[..., None]
        direction = F.normalize(rel, p=2, dim=1)
        distance = torch.norm(rel, p=2, dim=1, keepdim=True)
        emb = self.pre_nn(torch.cat((direction, distance), dim=1))
        attn = self.attn_nn(emb).masked_fill(~mask[:, None], -torch.finfo(emb.dtype).max)
        attn = F.softmax(attn, dim=-1)
        return (emb * attn).sum(dim=-1)


class DensityEmbeddingLayer(nn.Module):
    def __init__(self, args):
        super().__init__()
        h = args.hidden_dim
        self.pre_nn = nn.Sequential(nn.Conv1d(1, h, 1), nn.GroupNorm(args.ngroups, h), nn.ReLU(inplace=True),
                                    nn.Conv1d(h, args.dim, 1))

    def forward(self, downsample_num):
        return self.pre_nn(downsample_num)


def sample_count(n, rate):
    # D-PCC uses round(n * rate); we keep at least one point so that tiny blocks still code.
    return max(1, int(round(n * rate)))


class DownsampleLayer(nn.Module):
    def __init__(self, args, layer_idx):
        super().__init__()
        self.k = args.k
        self.downsample_rate = args.downsample_rate[layer_idx]
        self.pre_conv = nn.Conv1d(args.dim, args.dim, 1)
        self.feats_agg_nn = PointTransformerLayer(args.dim, args.dim, args)
        self.position_embedding_nn = PositionEmbeddingLayer(args)
        self.density_embedding_nn = DensityEmbeddingLayer(args)
        self.post_conv = nn.Conv1d(args.dim * 3, args.dim, 1)

    def get_density(self, sampled_xyzs, xyzs, k):
        sample_num = sampled_xyzs.shape[2]
        xyzs_t = xyzs[0].t()
        sampled_t = sampled_xyzs[0].t()
        # Nearest centroid of every input point, and how many points each centroid absorbs.
        ori2sample = knn(1, sampled_t, xyzs_t)[:, 0]
        downsample_num = torch.bincount(ori2sample, minlength=sample_num).float()[None]
        knn_idx = knn(k, xyzs_t, sampled_t)[None]
        # Keep only the neighbours whose nearest centroid is this centroid.
        mask = ori2sample[knn_idx] == torch.arange(sample_num)[None, :, None]
        knn_xyzs = index_points(xyzs, knn_idx)
        distance = torch.norm(knn_xyzs - sampled_xyzs[..., None], p=2, dim=1, keepdim=True)
        distance = distance.masked_fill(~mask[:, None], 0).sum(dim=-1).squeeze(1)
        mean_distance = distance / downsample_num
        return downsample_num, mean_distance, mask, knn_idx

    def forward(self, xyzs, feats):
        assert xyzs.shape[0] == 1, "D-PCC codes one block at a time"
        k = min(self.k, xyzs.shape[2])
        sample_num = sample_count(xyzs.shape[2], self.downsample_rate)
        sample_idx = furthest_point_sample(xyzs[0].t(), sample_num)[None]
        sampled_xyzs = index_points(xyzs, sample_idx)
        downsample_num, mean_distance, mask, knn_idx = self.get_density(sampled_xyzs, xyzs, k)
        identity = feats
        feats = self.pre_conv(feats)
        sampled_feats = index_points(feats, sample_idx)
        ancestor = self.feats_agg_nn(sampled_xyzs, xyzs, sampled_feats, feats, feats, knn_idx, mask)
        position = self.position_embedding_nn(sampled_xyzs, xyzs, knn_idx, mask)
        density = self.density_embedding_nn(downsample_num.unsqueeze(1))
        agg = self.post_conv(torch.cat((ancestor, position, density), dim=1))
        return sampled_xyzs, agg + index_points(identity, sample_idx), downsample_num, mean_distance


class Encoder(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.encoder_layers = nn.ModuleList([DownsampleLayer(args, i) for i in range(args.layer_num)])

    def forward(self, xyzs, feats):
        gt_xyzs, gt_dnums, gt_mdis = [], [], []
        for layer in self.encoder_layers:
            gt_xyzs.append(xyzs)
            xyzs, feats, dnum, mdis = layer(xyzs, feats)
            gt_dnums.append(dnum)
            gt_mdis.append(mdis)
        return gt_xyzs, gt_dnums, gt_mdis, xyzs, feats


class SubPointConv(nn.Module):
    """Per-group 1x1 MLP: input channels split into `group_num` sub-points ('mlp' mode only)."""

    def __init__(self, args, in_fdim, out_fdim, group_num):
        super().__init__()
        if args.sub_point_conv_mode != "mlp":
            raise NotImplementedError("sub_point_conv_mode %r (EdgeConv needs kNN at decode time)"
                                      % args.sub_point_conv_mode)
        self.group_num = group_num
        self.group_in_fdim = in_fdim // group_num
        self.group_out_fdim = out_fdim // group_num
        self.mlp = _mlp2d(self.group_in_fdim, args.hidden_dim, self.group_out_fdim)

    def forward(self, feats):
        b, c, n = feats.shape
        g = self.group_num
        # einops 'b (c g) n -> b c n g'
        feats = feats.reshape(b, c // g, g, n).permute(0, 1, 3, 2)
        return self.mlp(feats)


class XyzsUpsampleLayer(nn.Module):
    def __init__(self, args, layer_idx, upsample_rate=None):
        super().__init__()
        self.upsample_rate = args.max_upsample_num[layer_idx] if upsample_rate is None else upsample_rate
        # Not in D-PCC's state_dict: a non-persistent buffer keeps the key set identical.
        self.register_buffer("hypothesis", torch.from_numpy(hypothesis_directions()), persistent=False)
        self.weight_nn = SubPointConv(args, args.dim, 43 * self.upsample_rate, self.upsample_rate)
        self.scale_nn = SubPointConv(args, args.dim, 1 * self.upsample_rate, self.upsample_rate)

    def forward(self, xyzs, feats):
        weights = F.softmax(self.weight_nn(feats), dim=1)                     # (b,43,n,u)
        b, h, n, u = weights.shape
        # D-PCC's sum over the hypotheses, sum_h weights[:, h] * hyp[h], as one (3, 43) x (43, n*u)
        # product: a GEMM instead of a (b,43,3,n,u) broadcast product and a reduction.
        directions = torch.matmul(self.hypothesis.t(), weights.reshape(b, h, n * u)).reshape(b, 3, n, u)
        directions = F.normalize(directions, p=2, dim=1)                      # (b,3,n,u)
        scales = self.scale_nn(feats)                                         # (b,1,n,u)
        return xyzs.unsqueeze(-1) + directions * scales


class FeatsUpsampleLayer(nn.Module):
    def __init__(self, args, layer_idx, upsample_rate=None, decompress_normal=False):
        super().__init__()
        self.upsample_rate = args.max_upsample_num[layer_idx] if upsample_rate is None else upsample_rate
        self.decompress_normal = decompress_normal
        self.out_fdim = 3 if decompress_normal else args.dim
        self.feats_nn = SubPointConv(args, args.dim, self.out_fdim * self.upsample_rate, self.upsample_rate)

    def forward(self, feats):
        up = self.feats_nn(feats)
        if not self.decompress_normal:
            up = up + feats.unsqueeze(-1)
        return up


class UpsampleLayer(nn.Module):
    def __init__(self, args, layer_idx):
        super().__init__()
        self.xyzs_upsample_nn = XyzsUpsampleLayer(args, layer_idx)
        self.feats_upsample_nn = FeatsUpsampleLayer(args, layer_idx)

    def forward(self, xyzs, feats):
        return self.xyzs_upsample_nn(xyzs, feats), self.feats_upsample_nn(feats)


class UpsampleNumLayer(nn.Module):
    def __init__(self, args, layer_idx):
        super().__init__()
        self.max_upsample_num = args.max_upsample_num[layer_idx]
        self.upsample_num_nn = nn.Sequential(nn.Conv1d(args.dim, args.hidden_dim, 1), nn.ReLU(),
                                             nn.Conv1d(args.hidden_dim, 1, 1), nn.Sigmoid())

    def forward(self, feats):
        return self.upsample_num_nn(feats).squeeze(1) * (self.max_upsample_num - 1) + 1


class RefineLayer(nn.Module):
    def __init__(self, args, layer_idx):
        super().__init__()
        self.xyzs_refine_nn = XyzsUpsampleLayer(args, layer_idx, upsample_rate=1)
        last_normal = args.compress_normal and layer_idx == args.layer_num - 1
        self.feats_refine_nn = FeatsUpsampleLayer(args, layer_idx, upsample_rate=1, decompress_normal=last_normal)

    def forward(self, xyzs, feats):
        refined_xyzs = self.xyzs_refine_nn(xyzs, feats).flatten(2)
        refined_feats = self.feats_refine_nn(feats).flatten(2)
        return refined_xyzs, refined_feats


def select_xyzs_and_feats(candidate_xyzs, candidate_feats, upsample_num):
    """Keeps the first round(u_i) candidates of every point (round half to even), point-major.

    candidate_*: (1, C, n, U); upsample_num: (1, n) -> (1, 3, m), (1, C, m), m = sum round(u_i).
    """
    assert candidate_xyzs.shape[0] == 1
    u_max = candidate_xyzs.shape[3]
    counts = upsample_num[0].round().long()
    mask = torch.arange(u_max)[None, :] < counts[:, None]           # (n, U)
    selected = torch.nonzero(mask.reshape(-1), as_tuple=False)[:, 0]  # ascending: point-major
    xyzs = candidate_xyzs.reshape(1, candidate_xyzs.shape[1], -1)[:, :, selected]
    feats = candidate_feats.reshape(1, candidate_feats.shape[1], -1)[:, :, selected]
    return xyzs, feats


class Decoder(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args
        self.decoder_layers = nn.ModuleList([
            nn.ModuleList([UpsampleLayer(args, i), UpsampleNumLayer(args, i), RefineLayer(args, i)])
            for i in range(args.layer_num)
        ])

    def forward(self, xyzs, feats):
        pred_xyzs, pred_unums = [], []
        for upsample_nn, upsample_num_nn, refine_nn in self.decoder_layers:
            candidate_xyzs, candidate_feats = upsample_nn(xyzs, feats)
            upsample_num = upsample_num_nn(feats)
            pred_unums.append(upsample_num)
            xyzs, feats = select_xyzs_and_feats(candidate_xyzs, candidate_feats, upsample_num)
            xyzs, feats = refine_nn(xyzs, feats)
            pred_xyzs.append(xyzs)
        return pred_xyzs, pred_unums, feats


def _mlp1d_norm(cin, args, cout):
    h = args.hidden_dim
    return nn.Sequential(nn.Conv1d(cin, h, 1), nn.GroupNorm(args.ngroups, h), nn.ReLU(inplace=True), nn.Conv1d(h, cout, 1))


class AutoEncoder(nn.Module):
    def __init__(self, args):
        super().__init__()
        if not args.quantize_latent_xyzs or args.latent_xyzs_conv_mode != "mlp":
            raise NotImplementedError("only quantize_latent_xyzs=True with latent_xyzs_conv_mode='mlp'")
        self.args = args
        h = args.hidden_dim
        self.pre_conv = nn.Sequential(nn.Conv1d(args.in_fdim, h, 1), nn.GroupNorm(args.ngroups, h), nn.ReLU(),
                                      nn.Conv1d(h, args.dim, 1))
        self.encoder = Encoder(args)
        self.feats_eblock = EntropyBottleneck(args.dim)
        self.decoder = Decoder(args)
        self.latent_xyzs_analysis = _mlp1d_norm(3, args, args.dim)
        self.xyzs_eblock = EntropyBottleneck(args.dim)
        self.latent_xyzs_synthesis = _mlp1d_norm(args.dim, args, 3)

    def entropy_bottlenecks(self):
        return {"feats_eblock": self.feats_eblock, "xyzs_eblock": self.xyzs_eblock}

    def aux_loss(self):
        return self.feats_eblock.loss() + self.xyzs_eblock.loss()

    def encode_latents(self, xyzs):
        """xyzs (1,3,N) patch coords -> (gt lists, latent_xyzs (1,3,n3), latent_feats (1,8,n3), analyzed (1,8,n3))."""
        feats = self.pre_conv(xyzs)
        gt_xyzs, gt_dnums, gt_mdis, latent_xyzs, latent_feats = self.encoder(xyzs, feats)
        analyzed = self.latent_xyzs_analysis(latent_xyzs)
        return (gt_xyzs, gt_dnums, gt_mdis), latent_xyzs, latent_feats, analyzed

    def forward(self, xyzs):
        """Training/evaluation forward on one patch (1,3,N): returns (decoded (1,3,M), loss, items, bpp)."""
        n = xyzs.shape[2]
        (gt_xyzs, gt_dnums, gt_mdis), latent_xyzs, latent_feats, analyzed = self.encode_latents(xyzs)
        feats_hat, feats_lik = self.feats_eblock(latent_feats)
        xyz_hat, xyz_lik = self.xyzs_eblock(analyzed)
        pred_latent_xyzs = self.latent_xyzs_synthesis(xyz_hat)
        bits = (torch.log(feats_lik).sum() + torch.log(xyz_lik).sum()) / (-math.log(2))
        bpp = bits / n
        pred_xyzs, pred_unums, _ = self.decoder(pred_latent_xyzs, feats_hat)
        a = self.args
        chamfer = 0.0
        pred2gt = []
        for i in range(a.layer_num):
            gt = gt_xyzs[a.layer_num - 1 - i][0].t()
            pr = pred_xyzs[i][0].t()
            d = torch.cdist(gt, pr) ** 2
            layer = d.min(dim=1)[0].mean() + d.min(dim=0)[0].mean()
            pred2gt.append(d.argmin(dim=0).detach())
            chamfer = chamfer + (layer if i == a.layer_num - 1 else a.chamfer_coe * layer)
        pts_num = 0.0
        count_loss = 0.0
        for i in range(a.layer_num):
            pts_num = pts_num + torch.abs(pred_unums[i].sum() - gt_xyzs[a.layer_num - 1 - i].shape[2])
            # D-PCC's density loss, count part: stage i should expand each input point into as many
            # points as the encoder merged into its nearest ground-truth counterpart.
            target = gt_dnums[a.layer_num - 1 - i][0]
            if i > 0:
                target = target[pred2gt[i - 1]]
            count_loss = count_loss + F.l1_loss(pred_unums[i][0], target)
        latent_loss = F.mse_loss(pred_latent_xyzs, latent_xyzs) * a.latent_xyzs_coe
        loss = chamfer + a.pts_num_coe * pts_num + a.density_coe * count_loss + latent_loss + a.bpp_lambda * bpp
        items = {"chamfer": float(chamfer), "bpp": float(bpp), "latent": float(latent_loss),
                 "pts": float(pts_num), "count": float(count_loss)}
        return pred_xyzs[-1], loss, items, bpp

    @torch.no_grad()
    def reconstruct(self, xyzs):
        """Encoder + hard quantisation + decoder, as compress then decompress would do on one patch."""
        _, _, latent_feats, analyzed = self.encode_latents(xyzs)
        feats_hat = self.feats_eblock.quantize(latent_feats, "dequantize",
                                               self.feats_eblock._get_medians().reshape(1, -1, 1))
        xyz_hat = self.xyzs_eblock.quantize(analyzed, "dequantize", self.xyzs_eblock._get_medians().reshape(1, -1, 1))
        pred_latent_xyzs = self.latent_xyzs_synthesis(xyz_hat)
        pred_xyzs, _, _ = self.decoder(pred_latent_xyzs, feats_hat)
        return pred_xyzs[-1]
