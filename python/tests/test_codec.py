"""Encoder side, container and the Python reference decoder."""
import numpy as np
import pytest
import torch

from torchless_export.codec import Codec, encode_latent, unnormalize
from torchless_export.container import Block, Container, ContainerError
from torchless_export.dpcc import blocks as blk


def cloud(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, n)
    t = rng.uniform(0, 2 * np.pi, n)
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(t) * 3 + 10, r * np.sin(t) * 2 - 5, z], 1)


@pytest.fixture(scope="module")
def codec(tiny_package):
    return Codec(tiny_package)


@pytest.fixture(scope="module")
def compressed(codec):
    pts = cloud()
    return pts, codec.compress(pts)


def test_every_input_point_lands_in_exactly_one_block():
    pts = cloud(5000, 3)
    unit, _, _, _ = blk.normalize(pts)
    cube_size = blk.choose_cube_size(unit)
    blocks = blk.divide(unit, blk.MAP_SIZE, cube_size, max_points=300)
    idx = np.concatenate([b[1] for b in blocks])
    assert np.array_equal(np.sort(idx), np.arange(len(pts)))
    assert max(len(b[1]) for b in blocks) <= 300
    ids = [b[0] for b in blocks]
    assert ids == sorted(ids)


def test_patch_coordinates_lie_in_unit_cube_and_unnormalize_inverts_them(compressed):
    pts, c = compressed
    prep = blk.prepare(pts)
    for cid, patch, idx in prep["blocks"]:
        assert np.abs(patch).max() <= 1.0 + 1e-6
        back = unnormalize(patch, cid, prep["d"], c)
        np.testing.assert_allclose(back, pts[idx], atol=1e-5)


def test_latent_strings_equal_entropy_bottleneck_compress(tiny_model, codec):
    x = torch.randn(1, 8, 40) * 3
    assert encode_latent(codec.feats_tables, x) == tiny_model.feats_eblock.compress(x)[0]


def test_decompress_reproduces_the_models_forward_decode(tiny_model, codec, compressed):
    pts, c = compressed
    c = Container.from_bytes(c.to_bytes())
    out, damaged = codec.decompress(c)
    assert damaged == []
    prep = blk.prepare(pts)
    want = []
    for cid, patch, _ in prep["blocks"]:
        dec = tiny_model.reconstruct(torch.from_numpy(np.ascontiguousarray(patch.T))[None])
        want.append(unnormalize(dec[0].t().numpy(), cid, prep["d"], c))
    want = np.concatenate(want)
    assert out.shape == want.shape
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_onnx_engine_decodes_like_the_torch_engine(tiny_package, codec, compressed):
    _, c = compressed
    c.blocks = c.blocks[:3]
    a, _ = codec.decompress(c)
    b, _ = Codec(tiny_package, engine="onnx").decompress(c)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_container_round_trips_every_field(compressed):
    _, c = compressed
    back = Container.from_bytes(c.to_bytes())
    assert back.package_id == c.package_id and back.manifest_sha256 == c.manifest_sha256
    assert back.shift == [float(s) for s in c.shift] and back.min_coord == c.min_coord
    assert (back.map_size, back.cube_size, back.num_points) == (c.map_size, c.cube_size, c.num_points)
    assert [(b.cube_index, b.num_points, b.n3, b.feats, b.xyzs) for b in back.blocks] == \
        [(b.cube_index, b.num_points, b.n3, b.feats, b.xyzs) for b in c.blocks]


def test_damaged_block_is_reported_by_index_and_others_decode(codec, compressed):
    _, c = compressed
    data = bytearray(c.to_bytes())
    good, _ = codec.decompress(Container.from_bytes(bytes(data)))
    # Flip a byte inside block 1's feats string: offset = end of file minus the later payloads.
    tail = sum(len(b.feats) + len(b.xyzs) + 4 for b in c.blocks[1:])
    data[len(data) - tail + 2] ^= 0x40
    damaged = Container.from_bytes(bytes(data))
    assert damaged.damaged == [1]
    with pytest.raises(ContainerError, match=r"damaged block\(s\) \[1\]"):
        codec.decompress(damaged)
    out, bad = codec.decompress(damaged, skip_damaged=True)
    assert bad == [1]
    d = -(-c.map_size // c.cube_size)
    block1 = unnormalize(codec.decode_block(c.blocks[1])[0].t().numpy(), c.blocks[1].cube_index, d, c)
    assert len(out) == len(good) - len(block1)


def test_damaged_header_is_rejected(compressed):
    _, c = compressed
    data = bytearray(c.to_bytes())
    data[40] ^= 0x01
    with pytest.raises(ContainerError, match="header crc32"):
        Container.from_bytes(bytes(data))


def test_truncated_container_names_what_is_missing(compressed):
    _, c = compressed
    data = c.to_bytes()
    with pytest.raises(ContainerError, match="directory describes"):
        Container.from_bytes(data[:-3])
    with pytest.raises(ContainerError, match="truncated"):
        Container.from_bytes(data[:30])


def test_container_for_another_package_is_refused(codec, compressed):
    _, c = compressed
    other = Container.from_bytes(c.to_bytes())
    other.package_id = "dpcc-other-0000"
    with pytest.raises(ContainerError, match="needs package"):
        codec.decompress(other)


def test_varint32_round_trips_boundaries_and_rejects_overlong():
    from torchless_export.container import get_varint32, put_varint32

    for v in (0, 1, 127, 128, 16383, 16384, 2 ** 28, 2 ** 32 - 1):
        out = bytearray()
        put_varint32(out, v)
        assert len(out) == max(1, -(-v.bit_length() // 7))
        assert get_varint32(bytes(out), 0, len(out), "t", "x") == (v, len(out))
    with pytest.raises(ContainerError, match="invalid varint32"):
        get_varint32(b"\xff\xff\xff\xff\x7f", 0, 5, "t", "x")
    with pytest.raises(ContainerError, match="truncated"):
        get_varint32(b"\x80", 0, 1, "t", "x")


def test_container_bytes_follow_the_documented_layout():
    import struct
    import zlib

    c = Container("dpcc-x-0123", bytes(range(32)), [1.5, -2.0, 1e6], -3.0, 4.0, 100, 21, 1234)
    c.blocks = [Block(300, 10, 1, b"A" * 8, b"B" * 12), Block(129, 200, 300, b"C" * 16, b"D" * 8)]
    data = c.to_bytes()
    L = 11
    assert data[:8] == b"TLPCLOUD" and struct.unpack_from("<II", data, 8) == (1, 0)
    assert data[16] == L and data[17:17 + L] == b"dpcc-x-0123" and data[17 + L:49 + L] == bytes(range(32))
    assert struct.unpack_from("<3dddIIQI", data, 49 + L) == (1.5, -2.0, 1e6, -3.0, 4.0, 100, 21, 1234, 2)
    # varint32 directory: 300 = ac 02, 10, 1, 8, 12 | 129 = 81 01, 200 = c8 01, 300 = ac 02, 16, 8
    directory = bytes([0xAC, 0x02, 10, 1, 8, 12, 0x81, 0x01, 0xC8, 0x01, 0xAC, 0x02, 16, 8])
    h = 109 + L + len(directory)
    assert data[109 + L:h] == directory
    assert struct.unpack_from("<I", data, h)[0] == zlib.crc32(data[:h])
    p = h + 4
    assert data[p:p + 20] == b"A" * 8 + b"B" * 12
    assert struct.unpack_from("<I", data, p + 20)[0] == zlib.crc32(b"A" * 8 + b"B" * 12)
    assert len(data) == p + 24 + 24 + 4
