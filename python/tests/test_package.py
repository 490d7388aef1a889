"""Exporter: ONNX graphs against PyTorch, sidecars in three forms, manifest."""
import hashlib
import io
import json
import os
import struct
import zlib

import numpy as np
import onnx
import pytest
import torch

from torchless_export import onnx_eval
from torchless_export.onnx_rewrite import lower_inner_softmax
from torchless_export.package import OPSET, Package, graph_specs
from torchless_export.tables import TableSet


@pytest.mark.parametrize("points", [5, 61])
def test_exported_graphs_match_pytorch_at_any_point_count(tiny_model, tiny_package, points):
    pkg = Package(tiny_package)
    torch.manual_seed(points)
    for name, module, _, inputs, outputs in graph_specs(tiny_model, tiny_model.args):
        feeds = {n: torch.randn(1, shape[1], points) for n, shape in inputs}
        with torch.no_grad():
            want = module(*feeds.values())
        want = want if isinstance(want, tuple) else (want,)
        got = onnx_eval.run(onnx.load(pkg.graph(name)), {k: v.numpy() for k, v in feeds.items()})
        assert list(got) == [n for n, _ in outputs], name
        for (oname, _), w in zip(outputs, want):
            assert got[oname].shape == tuple(w.shape), (name, oname)
            np.testing.assert_allclose(got[oname], w.numpy(), rtol=0, atol=1e-5, err_msg="%s.%s" % (name, oname))


def test_graphs_declare_dynamic_point_axis_and_opset(tiny_package):
    pkg = Package(tiny_package)
    m = onnx.load(pkg.graph("stage1_upsample"))
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == OPSET
    dims = m.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims][0] == 1
    assert dims[2].dim_param and dims[3].dim_value == 8
    assert [i.name for i in m.graph.input] == ["xyzs", "feats"]


def test_sidecars_hold_identical_tables_equal_to_module_buffers(tiny_model, tiny_package):
    pkg = Package(tiny_package)
    for name, eb in tiny_model.entropy_bottlenecks().items():
        forms = [pkg.tables(name, form) for form in ("bin", "json", "pt")]
        for t in forms:
            assert t.kind_name == "EntropyBottleneck"
            assert np.array_equal(t.quantized_cdf, eb._quantized_cdf.numpy())
            assert np.array_equal(t.cdf_lengths, eb._cdf_length.numpy())
            assert np.array_equal(t.offsets, eb._offset.numpy())
            assert np.array_equal(t.params.view(np.uint32), eb.quantiles[:, 0, 1].detach().numpy().view(np.uint32))
        assert forms[0].equals(forms[1]) and forms[0].equals(forms[2])


def test_bin_sidecar_layout_is_the_documented_one(tiny_model, tiny_package):
    eb = tiny_model.feats_eblock
    with open(os.path.join(tiny_package, "feats_eblock.bin"), "rb") as f:
        data = f.read()
    magic, version, kind, precision, n, s, p, bound = struct.unpack_from("<8sIIIIIIf", data, 0)
    assert (magic, version, kind, precision, bound) == (b"TLTABLES", 1, 1, 16, 0.0)
    assert (n, s, p) == (8, eb._quantized_cdf.shape[1], 8)
    off = 36
    assert list(struct.unpack_from("<%di" % n, data, off)) == eb._offset.tolist()
    off += 4 * n + 4 * n
    cdf = np.frombuffer(data, "<i4", n * s, off).reshape(n, s)
    assert np.array_equal(cdf, eb._quantized_cdf.numpy())
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])


def test_bin_sidecar_rejects_a_flipped_byte(tiny_package):
    with open(os.path.join(tiny_package, "xyzs_eblock.bin"), "rb") as f:
        data = bytearray(f.read())
    data[60] ^= 0x01
    with pytest.raises(ValueError, match="crc32"):
        TableSet.from_bin(bytes(data))


def test_json_sidecar_floats_round_trip_float32(tiny_package):
    with open(os.path.join(tiny_package, "feats_eblock.json")) as f:
        d = json.load(f)
    assert d["format"] == "torchless.entropy_tables" and d["kind"] == "EntropyBottleneck"
    t = Package(tiny_package).tables("feats_eblock", "bin")
    assert np.array_equal(np.asarray(d["medians"], dtype=np.float32), t.params)
    assert all(len(("%r" % v).replace("-", "").replace(".", "").lstrip("0").split("e")[0]) <= 9 for v in d["medians"])


def test_gaussian_conditional_sidecar_round_trips(vectors_dir):
    from torchless_export.entropy import GaussianConditional

    sd = torch.load(os.path.join(vectors_dir, "gc.pt"))
    gc = GaussianConditional(None)
    gc.update_scale_table(sd["scale_table"].tolist())
    t = TableSet.from_module(gc)
    assert t.kind_name == "GaussianConditional" and abs(t.scale_bound - 0.11) < 1e-7
    for back in (TableSet.from_bin(t.to_bin()), TableSet.from_json(t.to_json()), TableSet.from_pt_dict(t.to_pt_dict())):
        assert back.equals(t)


def test_manifest_lists_every_file_with_hash_and_size(tiny_package):
    with open(os.path.join(tiny_package, "manifest.json")) as f:
        m = json.load(f)
    assert m["family"] == "dpcc" and m["format_version"] == 1 and m["package_id"].startswith("dpcc-test-")
    listed = {e["path"]: e for e in m["files"]}
    assert set(listed) == set(os.listdir(tiny_package)) - {"manifest.json"}
    for path, e in listed.items():
        with open(os.path.join(tiny_package, path), "rb") as f:
            data = f.read()
        assert e["size"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()
    assert {g["name"] for g in m["graphs"]} == {"latent_xyzs_synthesis"} | {
        "stage%d_%s" % (i, k) for i in range(3) for k in ("upsample", "refine")}
    assert len(m["direction_table"]["values"]) == 43
    assert m["producer"]["torch"] == torch.__version__


def test_package_refuses_a_modified_file(tiny_package, tmp_path):
    import shutil

    copy = str(tmp_path / "pkg")
    shutil.copytree(tiny_package, copy)
    with open(os.path.join(copy, "stage0_refine.onnx"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="stage0_refine.onnx"):
        Package(copy)


@pytest.mark.parametrize("rate", ["low", "high"])
def test_committed_package_is_intact_and_tables_equal_its_modules(rate):
    from conftest import PACKAGES

    path = os.path.join(PACKAGES, "dpcc-" + rate)
    if not os.path.isdir(path):
        pytest.skip("packages/dpcc-%s not present" % rate)
    pkg = Package(path)
    assert pkg.manifest["rate"] == rate
    model, _ = pkg.load_model()
    for name, eb in model.entropy_bottlenecks().items():
        eb.update(force=True)
        assert pkg.tables(name, "bin").equals(TableSet.from_module(eb)), name


def test_inner_axis_softmax_is_lowered_with_the_same_results():
    class TwoSoftmaxes(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x, dim=1) + torch.softmax(x, dim=-1)

    f = io.BytesIO()
    torch.onnx.export(TwoSoftmaxes(), torch.randn(1, 5, 3, 4), f, opset_version=OPSET,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {3: "n"}, "y": {3: "n"}})
    original = onnx.load_from_string(f.getvalue())
    lowered = onnx.load_from_string(f.getvalue())
    assert lower_inner_softmax(lowered) == 1  # dim=1 only; the last axis stays a Softmax
    onnx.checker.check_model(lowered)
    ops = [n.op_type for n in lowered.graph.node]
    assert ops.count("Softmax") == 1 and "ReduceMax" in ops and "Exp" in ops
    x = np.random.default_rng(3).standard_normal((1, 5, 3, 7)).astype(np.float32) * 20
    want = onnx_eval.run(original, {"x": x})["y"]
    got = onnx_eval.run(lowered, {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    torch_want = (torch.softmax(torch.from_numpy(x), 1) + torch.softmax(torch.from_numpy(x), -1)).numpy()
    np.testing.assert_allclose(got, torch_want, rtol=0, atol=1e-6)


def test_exported_graphs_have_no_inner_axis_softmax(tiny_package):
    pkg = Package(tiny_package)
    lowered = 0
    for entry in pkg.manifest["graphs"]:
        m = onnx.load(pkg.graph(entry["name"]))
        for node in m.graph.node:
            if node.op_type == "Softmax":
                axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
                assert axis == -1, (entry["name"], node.name)
        lowered += sum(n.op_type == "ReduceMax" for n in m.graph.node)
    assert lowered >= 3  # the upsample stages' softmax over the direction hypotheses
