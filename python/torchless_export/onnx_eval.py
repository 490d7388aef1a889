"""A small numpy interpreter for the ONNX graphs this package exports (opset 17).

Debian has no onnxruntime for Python; this runs the exported files themselves, so tests can
compare the bytes we ship (not the PyTorch modules we exported from) with PyTorch. It covers
exactly the operators torch 1.13 emits for the D-PCC decoder pieces and fails loudly otherwise.
"""
import numpy as np
import onnx
from onnx import numpy_helper

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.BOOL: np.bool_,
}


class UnsupportedOp(Exception):
    pass


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b, at):
    if any(k != 1 for k in w.shape[2:]) or at.get("group", 1) != 1:
        raise UnsupportedOp("Conv: only 1x1, group 1")
    if any(s != 1 for s in at.get("strides", [1])) or any(p != 0 for p in at.get("pads", [0])):
        raise UnsupportedOp("Conv: strides/pads")
    w2 = w.reshape(w.shape[0], w.shape[1])
    y = np.tensordot(w2, x, axes=([1], [1]))  # (Cout, B, ...)
    y = np.moveaxis(y, 0, 1)
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * (x.ndim - 2))
    return y.astype(np.float32)


def _softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(x.dtype)


def _instance_norm(x, scale, bias, eps):
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean) / np.sqrt(var + eps) * scale.reshape(shape) + bias.reshape(shape)
    return y.astype(np.float32)


def run(model, feeds):
    """Runs `model` (onnx.ModelProto or path) on dict feeds of numpy arrays; returns dict of outputs."""
    if isinstance(model, (str, bytes)) and not isinstance(model, onnx.ModelProto):
        model = onnx.load(model)
    g = model.graph
    env = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for k, v in feeds.items():
        env[k] = np.asarray(v)
    for node in g.node:
        at = _attrs(node)
        ins = [env[i] if i else None for i in node.input]
        op = node.op_type
        if op == "Constant":
            out = numpy_helper.to_array(at["value"])
        elif op == "Conv":
            out = _conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, at)
        elif op == "Relu":
            out = np.maximum(ins[0], 0).astype(ins[0].dtype)
        elif op == "MatMul":
            out = np.matmul(ins[0], ins[1]).astype(np.result_type(ins[0].dtype, ins[1].dtype))
        elif op == "Exp":
            out = np.exp(ins[0]).astype(ins[0].dtype)
        elif op == "Sigmoid":
            out = (1.0 / (1.0 + np.exp(-ins[0]))).astype(ins[0].dtype)
        elif op == "Softmax":
            out = _softmax(ins[0], at.get("axis", -1))
        elif op in ("Add", "Sub", "Mul", "Div"):
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
            out = f(ins[0], ins[1])
            if ins[0].dtype.kind == "i" and op == "Div":
                out = (ins[0] // ins[1])
            out = out.astype(np.result_type(ins[0].dtype, ins[1].dtype))
        elif op == "Shape":
            out = np.array(ins[0].shape, dtype=np.int64)
        elif op == "Gather":
            out = np.take(ins[0], ins[1], axis=at.get("axis", 0))
        elif op == "Cast":
            out = ins[0].astype(_ONNX_DTYPES[at["to"]])
        elif op == "Concat":
            out = np.concatenate(ins, axis=at["axis"])
        elif op == "Unsqueeze":
            out = ins[0]
            for ax in sorted(int(a) % (out.ndim + 1) for a in ins[1]):
                out = np.expand_dims(out, ax)
        elif op == "Squeeze":
            axes = tuple(int(a) % ins[0].ndim for a in ins[1]) if len(ins) > 1 and ins[1] is not None else None
            out = np.squeeze(ins[0], axis=axes)
        elif op == "Reshape":
            shape = [int(s) for s in ins[1]]
            shape = [ins[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
            out = ins[0].reshape(shape)
        elif op == "Transpose":
            out = np.transpose(ins[0], at.get("perm"))
        elif op == "Expand":
            shape = np.broadcast_shapes(ins[0].shape, tuple(int(s) for s in ins[1]))
            out = np.broadcast_to(ins[0], shape).copy()
        elif op == "ReduceSum":
            axes = tuple(int(a) for a in ins[1]) if len(ins) > 1 and ins[1] is not None else None
            out = np.sum(ins[0], axis=axes, keepdims=bool(at.get("keepdims", 1))).astype(ins[0].dtype)
        elif op == "ReduceMax":
            axes = tuple(at["axes"]) if "axes" in at else None
            out = np.max(ins[0], axis=axes, keepdims=bool(at.get("keepdims", 1)))
        elif op == "ReduceL2":
            axes = tuple(at["axes"]) if "axes" in at else None
            out = np.sqrt(np.sum(ins[0].astype(np.float64) ** 2, axis=axes,
                                 keepdims=bool(at.get("keepdims", 1)))).astype(ins[0].dtype)
        elif op == "Clip":
            lo = ins[1] if len(ins) > 1 and ins[1] is not None else -np.inf
            hi = ins[2] if len(ins) > 2 and ins[2] is not None else np.inf
            out = np.clip(ins[0], lo, hi).astype(ins[0].dtype)
        elif op == "Slice":
            starts, ends = ins[1], ins[2]
            axes = ins[3] if len(ins) > 3 and ins[3] is not None else np.arange(len(starts))
            steps = ins[4] if len(ins) > 4 and ins[4] is not None else np.ones(len(starts), dtype=np.int64)
            sl = [slice(None)] * ins[0].ndim
            for s, e, a, st in zip(starts, ends, axes, steps):
                sl[int(a)] = slice(int(s), int(min(e, 2 ** 62)), int(st))
            out = ins[0][tuple(sl)]
        elif op == "InstanceNormalization":
            out = _instance_norm(ins[0], ins[1], ins[2], at.get("epsilon", 1e-5))
        else:
            raise UnsupportedOp("operator %s is not in onnx_eval" % op)
        env[node.output[0]] = np.asarray(out)
    return {o.name: env[o.name] for o in g.output}
