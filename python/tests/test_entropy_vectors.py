"""The project's entropy coding against CompressAI's own outputs (../shared/vectors/compressai)."""
import json
import os

import numpy as np
import pytest
import torch

from torchless_export.entropy import (BufferedRansEncoder, EntropyBottleneck, GaussianConditional, RansDecoder,
                                      RansEncoder, pmf_to_quantized_cdf)


def load(vectors_dir, name):
    with open(os.path.join(vectors_dir, name)) as f:
        return json.load(f)


def f32_from_hex(h):
    return np.frombuffer(bytes.fromhex(h), dtype="<f4")


def test_pmf_to_quantized_cdf_matches_compressai(vectors_dir):
    d = load(vectors_dir, "pmf_cdf.json")
    for case in d["cases"]:
        pmf = f32_from_hex(case["pmf_f32hex"]).tolist()
        assert pmf_to_quantized_cdf(pmf, case.get("precision", d["precision"])) == case["cdf"], case["note"]


def test_pmf_to_quantized_cdf_rejects_what_compressai_rejects(vectors_dir):
    d = load(vectors_dir, "pmf_cdf.json")
    for case in d["error_cases"]:
        with pytest.raises(ValueError) as e:
            pmf_to_quantized_cdf([float(p) for p in case["pmf"]], 16)
        assert str(e.value) == case["error"].split("ValueError: ", 1)[1], case["note"]


def test_rans_encoder_reproduces_compressai_strings(vectors_dir):
    d = load(vectors_dir, "rans_raw.json")
    for case in d["cases"]:
        out = RansEncoder().encode_with_indexes(case["symbols"], case["indexes"], case["cdfs"], case["cdfs_sizes"],
                                                case["offsets"])
        assert out.hex() == case["encoded_hex"], case["note"]
        assert len(out) == case["encoded_len"]


def test_rans_decoder_inverts_compressai_strings(vectors_dir):
    d = load(vectors_dir, "rans_raw.json")
    for case in d["cases"]:
        got = RansDecoder().decode_with_indexes(bytes.fromhex(case["encoded_hex"]), case["indexes"], case["cdfs"],
                                                case["cdfs_sizes"], case["offsets"])
        assert got == case["symbols"], case["note"]


def test_buffered_encoder_over_chunks_equals_compressai(vectors_dir):
    d = load(vectors_dir, "rans_buffered.json")
    for case in d["cases"]:
        enc = BufferedRansEncoder()
        for chunk in case["chunks"]:
            enc.encode_with_indexes(chunk["symbols"], chunk["indexes"], case["cdfs"], case["cdfs_sizes"],
                                    case["offsets"])
        assert enc.flush().hex() == case["encoded_hex"]
        dec = RansDecoder()
        dec.set_stream(bytes.fromhex(case["encoded_hex"]))
        for chunk in case["chunks"]:
            assert dec.decode_stream(chunk["indexes"], case["cdfs"], case["cdfs_sizes"], case["offsets"]) == chunk["symbols"]


def test_rans_decoder_reports_truncated_string(vectors_dir):
    case = next(c for c in load(vectors_dir, "rans_raw.json")["cases"] if c["encoded_len"] > 16)
    data = bytes.fromhex(case["encoded_hex"])[:-4]
    with pytest.raises(ValueError):
        RansDecoder().decode_with_indexes(data, case["indexes"], case["cdfs"], case["cdfs_sizes"], case["offsets"])


def _eb_from_parameters(vectors_dir):
    """A fresh EntropyBottleneck holding eb.pt's parameters only (coding buffers left empty)."""
    sd = torch.load(os.path.join(vectors_dir, "eb.pt"))
    eb = EntropyBottleneck(8)
    params = {k: v for k, v in sd.items() if not k.startswith("_")}
    missing, unexpected = eb.load_state_dict(params, strict=False)
    assert not unexpected and set(missing) == {"_offset", "_quantized_cdf", "_cdf_length"}
    return eb


def test_entropy_bottleneck_update_reproduces_compressai_tables(vectors_dir):
    d = load(vectors_dir, "eb_vectors.json")
    eb = _eb_from_parameters(vectors_dir)
    eb.update(force=True)
    assert eb._offset.tolist() == d["_offset"]
    assert eb._cdf_length.tolist() == d["_cdf_length"]
    assert eb._quantized_cdf.tolist() == d["_quantized_cdf"]
    assert eb._offset.dtype == eb._quantized_cdf.dtype == eb._cdf_length.dtype == torch.int32


def test_entropy_bottleneck_compress_reproduces_compressai_strings(vectors_dir):
    d = load(vectors_dir, "eb_vectors.json")
    eb = _eb_from_parameters(vectors_dir)
    eb.update(force=True)
    for case in d["cases"]:
        x = torch.from_numpy(f32_from_hex(case["x_f32hex"]).copy()).reshape(case["shape"])
        strings = eb.compress(x)
        assert [s.hex() for s in strings] == case["strings_hex"], case["note"]
        x_hat = eb.decompress(strings, case["decompress_size_arg"])
        want = f32_from_hex(case["x_hat_f32hex"]).reshape(case["shape"])
        assert np.array_equal(x_hat.numpy(), want), case["note"]


def test_entropy_bottleneck_loads_pre_1_2_6_compressai_keys(vectors_dir):
    sd = torch.load(os.path.join(vectors_dir, "eb.pt"))
    old = {}
    for k, v in sd.items():
        for new, prefix in (("matrices.", "_matrix"), ("biases.", "_bias"), ("factors.", "_factor")):
            if k.startswith(new):
                k = prefix + k[len(new):]
        old[k] = v
    assert "_matrix0" in old
    eb = EntropyBottleneck(8)
    eb.load_state_dict(old)
    assert torch.equal(eb.matrices[0], sd["matrices.0"])
    assert torch.equal(eb._quantized_cdf, sd["_quantized_cdf"])


def _gc_from_table(vectors_dir):
    sd = torch.load(os.path.join(vectors_dir, "gc.pt"))
    gc = GaussianConditional(None)
    gc.update_scale_table(sd["scale_table"].tolist())
    return gc, sd


def test_gaussian_conditional_update_reproduces_compressai_tables(vectors_dir):
    d = load(vectors_dir, "gc_vectors.json")
    gc, sd = _gc_from_table(vectors_dir)
    assert np.array_equal(gc.scale_table.numpy(), f32_from_hex(d["scale_table_f32hex"]))
    assert gc._offset.tolist() == d["_offset"]
    assert gc._cdf_length.tolist() == d["_cdf_length"]
    assert list(gc._quantized_cdf.shape) == d["_quantized_cdf_shape"]
    for row, length, want in zip(gc._quantized_cdf.tolist(), d["_cdf_length"], d["_quantized_cdf_rows_trimmed"]):
        assert row[:length] == want
    assert torch.equal(gc._quantized_cdf, sd["_quantized_cdf"])


def test_gaussian_conditional_compress_reproduces_compressai_strings(vectors_dir):
    d = load(vectors_dir, "gc_vectors.json")
    gc, _ = _gc_from_table(vectors_dir)
    for case in d["cases"]:
        shape = case["shape"]
        x = torch.from_numpy(f32_from_hex(case["x_f32hex"]).copy()).reshape(shape)
        scales = torch.from_numpy(f32_from_hex(case["scales_f32hex"]).copy()).reshape(shape)
        means = None
        if case.get("means_f32hex"):
            means = torch.from_numpy(f32_from_hex(case["means_f32hex"]).copy()).reshape(shape)
        indexes = gc.build_indexes(scales)
        assert indexes.reshape(-1).tolist() == list(np.asarray(case["indexes"]).reshape(-1)), case["note"]
        strings = gc.compress(x, indexes, means)
        assert [s.hex() for s in strings] == case["strings_hex"], case["note"]
        x_hat = gc.decompress(strings, indexes, means=means)
        want = f32_from_hex(case["x_hat_f32hex"]).reshape(shape)
        assert np.array_equal(x_hat.numpy(), want), case["note"]
