"""The D-PCC reference model: names and shapes, direction table, selection, FPS/kNN, training step."""
import numpy as np
import torch

from torchless_export.dpcc.icosahedron import hypothesis_directions, icosahedron2sphere
from torchless_export.dpcc.model import AutoEncoder, DpccConfig, select_xyzs_and_feats
from torchless_export.dpcc.ops import furthest_point_sample, knn


def test_state_dict_uses_dpcc_names_and_shapes(tiny_model):
    sd = tiny_model.state_dict()
    expect = {
        "pre_conv.0.weight": (64, 3, 1),
        "pre_conv.1.weight": (64,),
        "pre_conv.3.weight": (8, 64, 1),
        "encoder.encoder_layers.0.feats_agg_nn.conv_delta.0.weight": (64, 3, 1, 1),
        "encoder.encoder_layers.2.post_conv.weight": (8, 24, 1),
        "feats_eblock.quantiles": (8, 1, 3),
        "feats_eblock.matrices.0": (8, 3, 1),
        "latent_xyzs_analysis.3.weight": (8, 64, 1),
        "xyzs_eblock.biases.4": (8, 1, 1),
        "latent_xyzs_synthesis.0.weight": (64, 8, 1),
        "latent_xyzs_synthesis.1.bias": (64,),
        "latent_xyzs_synthesis.3.weight": (3, 64, 1),
        "decoder.decoder_layers.0.0.xyzs_upsample_nn.weight_nn.mlp.0.weight": (64, 1, 1, 1),
        "decoder.decoder_layers.0.0.xyzs_upsample_nn.weight_nn.mlp.2.weight": (43, 64, 1, 1),
        "decoder.decoder_layers.1.0.feats_upsample_nn.feats_nn.mlp.2.weight": (8, 64, 1, 1),
        "decoder.decoder_layers.2.1.upsample_num_nn.2.weight": (1, 64, 1),
        "decoder.decoder_layers.2.2.xyzs_refine_nn.weight_nn.mlp.0.weight": (64, 8, 1, 1),
        "decoder.decoder_layers.2.2.xyzs_refine_nn.scale_nn.mlp.2.weight": (1, 64, 1, 1),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    # The direction table is regenerated, never stored (as in D-PCC).
    assert not any("hypothesis" in k for k in sd)


def test_decoder_parameter_count_matches_the_spec(tiny_model):
    n = sum(p.numel() for name, p in tiny_model.named_parameters()
            if name.startswith(("decoder.", "latent_xyzs_synthesis.")))
    # spec §1.6: 9,513 per stage x 3 + 899 for latent_xyzs_synthesis.
    assert n == 3 * 9513 + 899


def test_direction_table_is_origin_plus_42_unique_unit_vectors():
    h = hypothesis_directions()
    assert h.shape == (43, 3) and h.dtype == np.float32
    assert np.array_equal(h[0], [0, 0, 0])
    np.testing.assert_allclose(np.linalg.norm(h[1:], axis=1), 1.0, atol=1e-6)
    assert len(np.unique(h[1:], axis=0)) == 42
    # Level 0 is the 12 icosahedron vertices; they are all among the level-1 directions.
    ico = icosahedron2sphere(0)[0].astype(np.float32)
    assert len(ico) == 12
    assert all(np.any(np.all(np.isclose(h[1:], v, atol=1e-6), axis=1)) for v in ico)


def test_selection_rounds_half_to_even_in_point_major_order():
    n, u = 4, 8
    cand_xyzs = torch.arange(3 * n * u, dtype=torch.float32).reshape(1, 3, n, u)
    cand_feats = torch.arange(8 * n * u, dtype=torch.float32).reshape(1, 8, n, u) * -1
    upsample_num = torch.tensor([[2.5, 3.5, 1.0, 7.6]])   # -> 2, 4, 1, 8
    xyzs, feats = select_xyzs_and_feats(cand_xyzs, cand_feats, upsample_num)
    keep = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3), (2, 0)] + [(3, j) for j in range(8)]
    assert xyzs.shape == (1, 3, 15) and feats.shape == (1, 8, 15)
    for k, (i, j) in enumerate(keep):
        assert torch.equal(xyzs[0, :, k], cand_xyzs[0, :, i, j])
        assert torch.equal(feats[0, :, k], cand_feats[0, :, i, j])


def test_furthest_point_sampling_starts_at_zero_and_takes_the_farthest():
    pts = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [5, 0, 0], [2, 0, 0], [0, 3, 0]])
    assert furthest_point_sample(pts, 3).tolist() == [0, 2, 4]


def test_knn_returns_nearest_first():
    ref = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0]])
    q = torch.tensor([[2.9, 0, 0]])
    assert knn(2, ref, q).tolist() == [[2, 1]]


def test_a_few_training_steps_lower_the_loss_on_one_patch():
    torch.manual_seed(0)
    cfg = DpccConfig()
    model = AutoEncoder(cfg)
    x = (torch.rand(1, 3, 200) * 2 - 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        _, loss, _, bpp = model(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_dpcc_checkpoint_with_old_compressai_keys_loads(tiny_model):
    sd = {}
    for k, v in tiny_model.state_dict().items():
        for new, old in (("matrices.", "_matrix"), ("biases.", "_bias"), ("factors.", "_factor")):
            k = k.replace("eblock." + new, "eblock." + old)
        sd[k] = v
    assert "feats_eblock._matrix0" in sd
    fresh = AutoEncoder(DpccConfig())
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.feats_eblock._quantized_cdf, tiny_model.feats_eblock._quantized_cdf)
