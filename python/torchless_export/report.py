"""Exportability report: which submodules of a model export to ONNX, which do not (and why), and
which do with a workaround.

Each candidate is exported with torch.onnx.export (dynamic axes on the inputs' last dimension),
tracer warnings are collected, and where the exported graph runs in onnx_eval it is re-run on a
differently sized input and compared with PyTorch: a trace that baked in a data-dependent shape
fails that check. Failures are classified from the exception and from the module's source.
"""
import inspect
import os
import io
import json
import re
import warnings
from dataclasses import dataclass, asdict
from typing import Optional

import numpy as np
import onnx
import torch

from . import onnx_eval

EXPORTABLE = "exportable"
WORKAROUND = "exportable with workaround"
NOT_EXPORTABLE = "not exportable"


@dataclass
class Finding:
    name: str
    status: str
    reason: str = ""
    workaround: str = ""
    ops: Optional[list] = None
    verified: Optional[bool] = None

    def to_dict(self):
        return asdict(self)


def _source(module):
    try:
        return inspect.getsource(type(module))
    except (OSError, TypeError):
        return ""


def _classify_exception(exc, src):
    msg = "%s: %s" % (type(exc).__name__, exc)
    low = msg.lower()
    if "cuda" in low and ("not compiled" in low or "no cuda" in low or "cuda driver" in low or "nvidia" in low):
        return ("`.cuda()` call (device move inside the module): " + msg.splitlines()[0],
                "remove the device move / create tensors on the input's device, then re-export")
    if "python operator" in low or "pythonop" in low or "could not export python function" in low:
        m = re.search(r"(?:operator|call)\s+'?([A-Za-z0-9_.]+)'?", msg)
        op = m.group(1) if m else "autograd.Function"
        return ("custom op `%s` (Python autograd.Function / C++ extension, no ONNX symbolic)" % op,
                "re-implement in torch ops, register a symbolic, or keep the step outside the graph")
    if "only tuples, lists and variables" in low or "bytes" in low or "str" in low and "output" in low:
        return ("non-tensor output (e.g. byte strings of a range coder)",
                "keep entropy coding outside ONNX: export the tables as sidecars")
    if "numpy" in low or "can't convert" in low:
        return ("leaves the tensor world (numpy / Python values): " + msg.splitlines()[0],
                "rewrite in torch ops or keep the step outside the graph")
    if "unsupported" in low or "not supported" in low or "exporting the operator" in low:
        return ("operator not supported by the exporter at this opset: " + msg.splitlines()[0],
                "use a higher opset or an equivalent decomposition")
    return (msg.splitlines()[0][:300], "")


_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))


def _tracer_reasons(caught, src):
    # Tracer warnings raised inside torch itself (e.g. F.group_norm's batch-size check) are not the
    # model's control flow; only those pointing at the model's own code count.
    texts = ["%s (%s:%d)" % (str(w.message).split(".")[0], os.path.basename(w.filename), w.lineno)
             for w in caught if type(w.message).__name__ == "TracerWarning"
             and not os.path.abspath(w.filename).startswith(_TORCH_DIR)]
    if not texts:
        return None
    joined = " ".join(texts).lower()
    if "python boolean" in joined:
        kind = "Python control flow on tensor values (data-dependent branch or loop) at " + texts[0].split("(")[-1].rstrip(")")
    elif "python index" in joined or "python integer" in joined or "python number" in joined:
        kind = "Python loop / data-dependent shape (a tensor value became a Python number) at " + texts[0].split("(")[-1].rstrip(")")
    else:
        kind = "trace may be incorrect: " + texts[0][:200]
    return kind


def _example_with_size(example, new_n):
    out = []
    for t in example:
        shape = list(t.shape)
        shape[-1] = new_n
        if t.dtype.is_floating_point:
            out.append(torch.randn(*shape, dtype=t.dtype))
        else:
            out.append(torch.randint(0, 2, shape, dtype=t.dtype))
    return tuple(out)


def _python_ops(module, example_inputs):
    """Names of autograd.Functions (prim::PythonOp) in the module's trace: custom ops such as
    D-PCC's pointops.furthestsampling. The exporter inlines them when their forward is plain torch."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.jit.trace(module, example_inputs, check_trace=False).inlined_graph
    except Exception:
        return []
    names = []
    for node in graph.nodes():
        if node.kind() == "prim::PythonOp":
            names.append(node.pyname() if hasattr(node, "pyname") else "PythonOp")
    return sorted(set(names))


def check_module(name, module, example_inputs, opset=17, known_workaround="", known_reason=""):
    """Tries to export one module; returns a Finding."""
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    src = _source(module)
    module.eval()
    input_names = ["input%d" % i for i in range(len(example_inputs))]
    dyn = {n: {t.dim() - 1: "n"} for n, t in zip(input_names, example_inputs) if t.dim() > 0}
    f = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.no_grad():
                reference = module(*example_inputs)
            with torch.no_grad():
                torch.onnx.export(module, example_inputs, f, opset_version=opset, input_names=input_names,
                                  dynamic_axes=dyn)
        except Exception as exc:  # the exporter raises many types; each is classified
            reason, workaround = _classify_exception(exc, src)
            if known_reason:
                reason = known_reason + " (" + reason + ")"
            if ".cuda()" in src and "cuda" not in reason:
                reason += "; source also calls `.cuda()`"
            return Finding(name, NOT_EXPORTABLE, reason, known_workaround or workaround)
    if not isinstance(reference, (tuple, list)):
        reference = (reference,)
    model = onnx.load_from_string(f.getvalue())
    ops = sorted({n.op_type for n in model.graph.node})
    tracer = _tracer_reasons(caught, src)
    # Re-run on a different point count: a baked-in shape shows up here.
    verified = None
    try:
        n0 = example_inputs[0].shape[-1]
        other = _example_with_size(example_inputs, n0 + 5)
        with torch.no_grad():
            want = module(*other)
        want = want if isinstance(want, (tuple, list)) else (want,)
        got = onnx_eval.run(model, {k: v.numpy() for k, v in zip(input_names, other)})
        got = list(got.values())
        verified = len(got) == len(want) and all(
            g.shape == tuple(w.shape) and np.allclose(g, w.numpy(), atol=1e-4) for g, w in zip(got, want))
    except onnx_eval.UnsupportedOp:
        verified = None
    except Exception:
        verified = False
    custom = _python_ops(module, example_inputs)
    if custom and verified is not True:
        return Finding(name, NOT_EXPORTABLE, "custom op %s (autograd.Function leaving torch: the trace holds "
                       "its output as a constant)" % ", ".join("`%s`" % c for c in custom),
                       known_workaround or "re-implement in torch ops or keep the step outside the graph", ops, verified)
    if tracer or verified is False:
        reason = tracer or ("Python loop or data-dependent shape: the traced graph does not reproduce "
                            "PyTorch on another point count")
        if known_reason:
            reason = known_reason + " (" + reason + ")"
        return Finding(name, NOT_EXPORTABLE, reason, known_workaround or
                       "split the graph at the data-dependent step and run that step outside ONNX", ops, verified)
    if "InstanceNormalization" in ops and "GroupNorm" in repr(module):
        return Finding(name, WORKAROUND, "",
                       "GroupNorm exported as Reshape + InstanceNormalization (GroupNormalization needs opset 18)",
                       ops, verified)
    if custom:
        return Finding(name, WORKAROUND, "", "autograd.Function %s inlined by the exporter (plain torch ops)"
                       % ", ".join(custom), ops, verified)
    if known_workaround:
        return Finding(name, WORKAROUND, "", known_workaround, ops, verified)
    return Finding(name, EXPORTABLE, "", "", ops, verified)


def check_submodules(model, example_inputs, opset=17):
    """Report for any model: each direct child module, run on the inputs it receives when `model`
    runs on `example_inputs` (captured with forward pre-hooks). Children that are not called get
    no row."""
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    seen = {}
    hooks = []
    for name, child in model.named_children():
        def hook(mod, args, name=name):
            if name not in seen and all(isinstance(a, torch.Tensor) for a in args):
                seen[name] = tuple(a.detach().clone() for a in args)
        hooks.append(child.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    children = dict(model.named_children())
    return [check_module(name, children[name], args, opset) for name, args in seen.items()]


def dpcc_findings(model, cfg):
    """The report for a D-PCC AutoEncoder: every top-level submodule plus the decoder pieces."""
    from .package import StageRefine, StageUpsample

    d = cfg.dim
    n = 64
    xyz = torch.rand(1, 3, n) * 2 - 1
    out = [check_module("pre_conv", model.pre_conv, (xyz,))]

    class EncoderEntry(torch.nn.Module):
        def __init__(self, enc):
            super().__init__()
            self.enc = enc

        def forward(self, x, f):
            return self.enc(x, f)[3:]

    out.append(check_module("encoder", EncoderEntry(model.encoder), (xyz, torch.randn(1, d, n)),
                            known_reason="furthest-point sampling and kNN (D-PCC: custom ops "
                            "`pointops.furthestsampling`, `pointops.knnquery_heap`; here a Python/NumPy loop) "
                            "with data-dependent shapes",
                            known_workaround="keep in PyTorch (encoder side)"))
    out.append(check_module("latent_xyzs_analysis", model.latent_xyzs_analysis, (xyz,)))

    for name in model.entropy_bottlenecks():
        # compress() returns Python bytes from the rANS coder: there is no tensor graph to trace
        # (tracing it only trips the exporter), so it is classified without an export attempt.
        out.append(Finding(name + ".compress", NOT_EXPORTABLE,
                           "non-tensor output: byte strings of the rANS range coder",
                           "entropy coding stays in C++ (torchless::entropy); tables exported as "
                           "%s.{bin,json,pt}" % name))
    out.append(check_module("latent_xyzs_synthesis", model.latent_xyzs_synthesis, (torch.randn(1, d, 16),)))

    class DecoderEntry(torch.nn.Module):
        def __init__(self, dec):
            super().__init__()
            self.dec = dec

        def forward(self, x, f):
            return self.dec(x, f)[0][-1]

    out.append(check_module("decoder", DecoderEntry(model.decoder), (torch.rand(1, 3, 16), torch.randn(1, d, 16)),
                            known_reason="data-dependent selection (round + mask + nonzero: output size depends "
                            "on predicted upsample counts)",
                            known_workaround="split per stage: stage{i}_upsample + C++ selection + stage{i}_refine"))
    for i, stage in enumerate(model.decoder.decoder_layers):
        out.append(check_module("decoder.decoder_layers.%d (upsample+num)" % i, StageUpsample(stage),
                                (torch.rand(1, 3, 16), torch.randn(1, d, 16))))
        out.append(check_module("decoder.decoder_layers.%d.2 (refine)" % i, StageRefine(stage),
                                (torch.rand(1, 3, 16), torch.randn(1, d, 16))))
    return out


def to_markdown(findings):
    lines = ["| module | status | reason | workaround | verified |", "|---|---|---|---|---|"]
    for f in findings:
        v = {True: "yes", False: "no", None: "-"}[f.verified]
        lines.append("| `%s` | %s | %s | %s | %s |" % (f.name, f.status, f.reason.replace("|", "\\|"),
                                                      f.workaround.replace("|", "\\|"), v))
    return "\n".join(lines) + "\n"


def to_json(findings):
    return json.dumps([f.to_dict() for f in findings], indent=1)
