"""Exporter: a trained D-PCC checkpoint -> a torchless model package (docs/formats/package.md)."""
import hashlib
import io
import json
import os
import warnings

import numpy as np
import onnx
import torch

from . import __version__
from .dpcc import blocks as blk
from .dpcc.icosahedron import hypothesis_directions
from .onnx_rewrite import lower_inner_softmax
from .tables import TableSet

FORMAT = "torchless.package"
FORMAT_VERSION = 1
# Opset 17: the newest torch 1.13's exporter emits; ONNX Runtime 1.30 runs it. GroupNorm becomes
# the InstanceNormalization + Reshape pattern (GroupNormalization needs opset 18).
OPSET = 17
MODEL_FILE = "model.pt"


class StageUpsample(torch.nn.Module):
    """Decoder stage i before selection: UpsampleLayer + UpsampleNumLayer."""

    def __init__(self, stage):
        super().__init__()
        self.upsample = stage[0]
        self.upsample_num = stage[1]

    def forward(self, xyzs, feats):
        candidate_xyzs, candidate_feats = self.upsample(xyzs, feats)
        return candidate_xyzs, candidate_feats, self.upsample_num(feats)


class StageRefine(torch.nn.Module):
    def __init__(self, stage):
        super().__init__()
        self.refine = stage[2]

    def forward(self, xyzs, feats):
        return self.refine(xyzs, feats)


def graph_specs(model, cfg):
    """(name, module, example inputs, input specs, output specs) of every decoder-side graph.

    Shapes use "n" (or "m") for the dynamic point axis."""
    d = cfg.dim
    specs = [("latent_xyzs_synthesis", model.latent_xyzs_synthesis, (torch.randn(1, d, 7),),
              [("analyzed_xyzs", [1, d, "n"])], [("latent_xyzs", [1, 3, "n"])])]
    for i, stage in enumerate(model.decoder.decoder_layers):
        u = cfg.max_upsample_num[i]
        feat_out = 3 if (cfg.compress_normal and i == cfg.layer_num - 1) else d
        specs.append(("stage%d_upsample" % i, StageUpsample(stage), (torch.randn(1, 3, 7), torch.randn(1, d, 7)),
                      [("xyzs", [1, 3, "n"]), ("feats", [1, d, "n"])],
                      [("candidate_xyzs", [1, 3, "n", u]), ("candidate_feats", [1, d, "n", u]),
                       ("upsample_num", [1, "n"])]))
        specs.append(("stage%d_refine" % i, StageRefine(stage), (torch.randn(1, 3, 7), torch.randn(1, d, 7)),
                      [("xyzs", [1, 3, "m"]), ("feats", [1, d, "m"])],
                      [("refined_xyzs", [1, 3, "m"]), ("refined_feats", [1, feat_out, "m"])]))
    return specs


def export_onnx(module, example, inputs, outputs, opset=OPSET):
    """Exports with a dynamic point axis; returns the ONNX bytes."""
    dyn = {}
    for name, shape in inputs + outputs:
        axes = {i: s for i, s in enumerate(shape) if isinstance(s, str)}
        if axes:
            dyn[name] = axes
    f = io.BytesIO()
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, f, opset_version=opset, input_names=[n for n, _ in inputs],
                          output_names=[n for n, _ in outputs], dynamic_axes=dyn, do_constant_folding=True)
    model = onnx.load_from_string(f.getvalue())
    # The exporter names output dims after internal nodes ("Addcandidate_xyzs_dim_0"); declare the
    # documented shapes so the C++ side can check them by name.
    for values, specs in ((model.graph.input, inputs), (model.graph.output, outputs)):
        for value, (_, shape) in zip(values, specs):
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for s in shape:
                d = dims.add()
                if isinstance(s, str):
                    d.dim_param = s
                else:
                    d.dim_value = s
    lower_inner_softmax(model)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _f9(v):
    return float("%.9g" % float(v))


def write_package(model, cfg, out_dir, rate="custom", checkpoint_info=None):
    """Writes the package; returns the manifest dict."""
    os.makedirs(out_dir, exist_ok=True)
    model.eval()
    for eb in model.entropy_bottlenecks().values():
        eb.update(force=True)
    graphs = []
    for name, module, example, inputs, outputs in graph_specs(model, cfg):
        data = export_onnx(module, example, inputs, outputs)
        fname = name + ".onnx"
        with open(os.path.join(out_dir, fname), "wb") as f:
            f.write(data)
        entry = {"name": name, "file": fname,
                 "inputs": [{"name": n, "dtype": "float32", "shape": s} for n, s in inputs],
                 "outputs": [{"name": n, "dtype": "float32", "shape": s} for n, s in outputs]}
        if name.startswith("stage"):
            entry["stage"] = int(name[5:name.index("_")])
        graphs.append(entry)
    entropy = {}
    for name, eb in model.entropy_bottlenecks().items():
        tables = TableSet.from_module(eb)
        tables.write(os.path.join(out_dir, name))
        entropy[name] = {"kind": tables.kind_name, "channels": int(tables.offsets.shape[0]),
                         "precision": tables.precision,
                         "tables": {"bin": name + ".bin", "json": name + ".json", "pt": name + ".pt"}}
    # The full state_dict and config, for the encoder side (torchless_export compress).
    torch.save({"family": "dpcc", "rate": rate, "config": cfg.to_dict(), "state_dict": model.state_dict()},
               os.path.join(out_dir, MODEL_FILE))
    files = []
    for fname in sorted(os.listdir(out_dir)):
        if fname == "manifest.json":
            continue
        path = os.path.join(out_dir, fname)
        files.append({"path": fname, "size": os.path.getsize(path), "sha256": _sha256_file(path)})
    content_hash = hashlib.sha256("".join(f["path"] + f["sha256"] for f in files).encode()).hexdigest()
    hp = cfg.to_dict()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": "dpcc",
        "package_id": "dpcc-%s-%s" % (rate, content_hash[:16]),
        "rate": rate,
        "hyperparameters": {k: hp[k] for k in ("k", "downsample_rate", "max_upsample_num", "layer_num", "dim",
                                               "hidden_dim", "ngroups", "in_fdim", "quantize_latent_xyzs",
                                               "latent_xyzs_conv_mode", "sub_point_conv_mode", "compress_normal",
                                               "bpp_lambda")},
        "blocks": {"map_size": blk.MAP_SIZE, "target_points": blk.TARGET_POINTS, "max_points": blk.MAX_POINTS},
        "onnx": {"opset": OPSET, "ir_version": onnx.load(os.path.join(out_dir, graphs[0]["file"])).ir_version},
        "graphs": graphs,
        "entropy_models": entropy,
        "encoder_checkpoint": MODEL_FILE,
        "direction_table": {"note": "constant inside the upsample/refine graphs; listed for reference",
                            "values": [[_f9(v) for v in row] for row in hypothesis_directions()]},
        "producer": {"torchless_export": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "numpy": np.__version__},
        "files": files,
    }
    if checkpoint_info:
        manifest["training"] = checkpoint_info
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest


class Package:
    """A package directory read back: manifest, verified files, tables from the .bin sidecars."""

    def __init__(self, path, verify=True):
        self.path = path
        mpath = os.path.join(path, "manifest.json")
        with open(mpath, "rb") as f:
            self.manifest_bytes = f.read()
        self.manifest = json.loads(self.manifest_bytes)
        if self.manifest.get("format") != FORMAT or self.manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError("%s: not a %s v%d manifest" % (mpath, FORMAT, FORMAT_VERSION))
        if verify:
            for entry in self.manifest["files"]:
                p = os.path.join(path, entry["path"])
                if not os.path.exists(p):
                    raise ValueError("%s: listed file %s is missing" % (path, entry["path"]))
                if os.path.getsize(p) != entry["size"] or _sha256_file(p) != entry["sha256"]:
                    raise ValueError("%s: %s does not match its sha256/size in the manifest" % (path, entry["path"]))

    @property
    def package_id(self):
        return self.manifest["package_id"]

    @property
    def manifest_sha256(self):
        return hashlib.sha256(self.manifest_bytes).digest()

    def file(self, name):
        return os.path.join(self.path, name)

    def tables(self, name, form="bin"):
        info = self.manifest["entropy_models"][name]["tables"]
        p = self.file(info[form])
        if form == "bin":
            with open(p, "rb") as f:
                return TableSet.from_bin(f.read(), p)
        if form == "json":
            with open(p, "rb") as f:
                return TableSet.from_json(f.read())
        return TableSet.from_pt_dict(torch.load(p))

    def graph(self, name):
        for g in self.manifest["graphs"]:
            if g["name"] == name:
                return self.file(g["file"])
        raise KeyError(name)

    def load_model(self):
        from .dpcc.model import AutoEncoder, DpccConfig

        ckpt = torch.load(self.file(self.manifest["encoder_checkpoint"]), map_location="cpu")
        cfg = DpccConfig.from_dict(ckpt["config"])
        model = AutoEncoder(cfg)
        model.load_state_dict(ckpt["state_dict"])
        model.eval()
        return model, cfg
