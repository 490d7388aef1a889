"""Entropy-table sidecars (.bin, .json, .pt), the format fixed in docs/formats/package.md and read
by the C++ side (docs/formats/entropy-tables.md).

.bin, little-endian: "TLTABLES", u32 version=1, u32 kind (1 EB, 2 GC), u32 precision, u32 N,
u32 S (row stride), u32 P, f32 scale_bound, i32 offsets[N], i32 cdf_lengths[N], i32 cdf[N*S],
f32 params[P] (EB: medians; GC: scale_table), u32 crc32 (zlib) of all preceding bytes.
"""
import json
import struct
import zlib

import numpy as np
import torch

MAGIC = b"TLTABLES"
VERSION = 1
KIND_EB = 1
KIND_GC = 2
KIND_NAMES = {KIND_EB: "EntropyBottleneck", KIND_GC: "GaussianConditional"}
_HEADER = struct.Struct("<8sIIIIIIf")


class TableSet:
    """One entropy model's coding tables, independent of where they came from."""

    def __init__(self, kind, precision, offsets, cdf_lengths, quantized_cdf, params, scale_bound=0.0):
        self.kind = int(kind)
        self.precision = int(precision)
        self.offsets = np.asarray(offsets, dtype=np.int32).reshape(-1)
        self.cdf_lengths = np.asarray(cdf_lengths, dtype=np.int32).reshape(-1)
        self.quantized_cdf = np.asarray(quantized_cdf, dtype=np.int32)
        self.params = np.asarray(params, dtype=np.float32).reshape(-1)
        self.scale_bound = float(np.float32(scale_bound))
        n = len(self.offsets)
        if self.quantized_cdf.ndim != 2 or self.quantized_cdf.shape[0] != n or len(self.cdf_lengths) != n:
            raise ValueError("inconsistent table shapes: offsets %d, cdf_lengths %d, quantized_cdf %s"
                             % (n, len(self.cdf_lengths), self.quantized_cdf.shape))

    @property
    def kind_name(self):
        return KIND_NAMES[self.kind]

    @classmethod
    def from_module(cls, module):
        """Duck-typed: anything with CompressAI's buffers (_quantized_cdf, _cdf_length, _offset, and
        quantiles for an EntropyBottleneck or scale_table for a GaussianConditional)."""
        precision = int(getattr(module, "entropy_coder_precision", 16))
        cdf = module._quantized_cdf.detach().cpu().numpy()
        if hasattr(module, "quantiles"):
            medians = module.quantiles.detach().cpu()[:, 0, 1].numpy()
            return cls(KIND_EB, precision, module._offset.cpu().numpy(), module._cdf_length.cpu().numpy(),
                       cdf, medians, 0.0)
        if hasattr(module, "scale_table"):
            bound = float(module.scale_bound.reshape(-1)[0]) if getattr(module, "scale_bound", None) is not None \
                else float(module.lower_bound_scale.bound.reshape(-1)[0])
            return cls(KIND_GC, precision, module._offset.cpu().numpy(), module._cdf_length.cpu().numpy(),
                       cdf, module.scale_table.detach().cpu().numpy(), bound)
        raise ValueError("%s has neither `quantiles` nor `scale_table`" % type(module).__name__)

    def equals(self, other):
        return (self.kind == other.kind and self.precision == other.precision
                and np.array_equal(self.offsets, other.offsets)
                and np.array_equal(self.cdf_lengths, other.cdf_lengths)
                and np.array_equal(self.quantized_cdf, other.quantized_cdf)
                and np.array_equal(self.params.view(np.uint32), other.params.view(np.uint32))
                and np.float32(self.scale_bound) == np.float32(other.scale_bound))

    # ---- .bin ----
    def to_bin(self):
        n, s = self.quantized_cdf.shape
        body = _HEADER.pack(MAGIC, VERSION, self.kind, self.precision, n, s, len(self.params), self.scale_bound)
        body += self.offsets.astype("<i4").tobytes() + self.cdf_lengths.astype("<i4").tobytes()
        body += self.quantized_cdf.astype("<i4").tobytes() + self.params.astype("<f4").tobytes()
        return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)

    @classmethod
    def from_bin(cls, data, name="<bytes>"):
        if len(data) < _HEADER.size + 4:
            raise ValueError("%s: %d bytes, shorter than the %d-byte header" % (name, len(data), _HEADER.size + 4))
        magic, version, kind, precision, n, s, p, bound = _HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise ValueError("%s: bad magic %r, expected %r" % (name, magic, MAGIC))
        if version != VERSION:
            raise ValueError("%s: version %d, expected %d" % (name, version, VERSION))
        if kind not in KIND_NAMES:
            raise ValueError("%s: unknown kind %d" % (name, kind))
        expect = _HEADER.size + 4 * (2 * n + n * s + p) + 4
        if len(data) != expect:
            raise ValueError("%s: size %d, expected %d for N=%d S=%d P=%d" % (name, len(data), expect, n, s, p))
        crc = struct.unpack_from("<I", data, len(data) - 4)[0]
        if zlib.crc32(data[:-4]) & 0xFFFFFFFF != crc:
            raise ValueError("%s: crc32 mismatch" % name)
        off = _HEADER.size
        offsets = np.frombuffer(data, "<i4", n, off)
        off += 4 * n
        lengths = np.frombuffer(data, "<i4", n, off)
        off += 4 * n
        cdf = np.frombuffer(data, "<i4", n * s, off).reshape(n, s)
        off += 4 * n * s
        params = np.frombuffer(data, "<f4", p, off)
        return cls(kind, precision, offsets, lengths, cdf, params, bound)

    # ---- .json ----
    def to_json_dict(self):
        def f9(v):
            return float("%.9g" % float(v))

        d = {"format": "torchless.entropy_tables", "version": VERSION, "kind": self.kind_name,
             "precision": self.precision, "offsets": self.offsets.tolist(), "cdf_lengths": self.cdf_lengths.tolist(),
             "quantized_cdf": self.quantized_cdf.tolist()}
        if self.kind == KIND_EB:
            d["medians"] = [f9(v) for v in self.params]
        else:
            d["scale_table"] = [f9(v) for v in self.params]
            d["scale_bound"] = f9(self.scale_bound)
        return d

    def to_json(self):
        return json.dumps(self.to_json_dict(), separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data):
        d = json.loads(data)
        if d.get("format") != "torchless.entropy_tables" or d.get("version") != VERSION:
            raise ValueError("not a torchless.entropy_tables v1 document")
        kind = {v: k for k, v in KIND_NAMES.items()}[d["kind"]]
        params = d["medians"] if kind == KIND_EB else d["scale_table"]
        return cls(kind, d["precision"], d["offsets"], d["cdf_lengths"], d["quantized_cdf"], params,
                   d.get("scale_bound", 0.0))

    # ---- .pt ----
    def to_pt_dict(self):
        d = {"kind": self.kind_name,
             "quantized_cdf": torch.from_numpy(self.quantized_cdf.astype(np.int32).copy()),
             "cdf_lengths": torch.from_numpy(self.cdf_lengths.astype(np.int32).copy()),
             "offsets": torch.from_numpy(self.offsets.astype(np.int32).copy())}
        if self.kind == KIND_EB:
            d["medians"] = torch.from_numpy(self.params.astype(np.float32).copy())
        else:
            d["scale_table"] = torch.from_numpy(self.params.astype(np.float32).copy())
            d["scale_bound"] = float(self.scale_bound)
        return d

    @classmethod
    def from_pt_dict(cls, d):
        kind = {v: k for k, v in KIND_NAMES.items()}[d["kind"]]
        params = d["medians"] if kind == KIND_EB else d["scale_table"]
        return cls(kind, 16, d["offsets"].numpy(), d["cdf_lengths"].numpy(), d["quantized_cdf"].numpy(),
                   params.numpy(), d.get("scale_bound", 0.0))

    def write(self, base):
        """Writes base.bin, base.json and base.pt; returns the three paths."""
        paths = []
        for ext, data in ((".bin", self.to_bin()), (".json", self.to_json())):
            with open(base + ext, "wb") as f:
                f.write(data)
            paths.append(base + ext)
        torch.save(self.to_pt_dict(), base + ".pt")
        paths.append(base + ".pt")
        return paths

    def coder_tables(self):
        """(cdfs list of rows, lengths, offsets) for entropy.rans."""
        return self.quantized_cdf.tolist(), self.cdf_lengths.tolist(), self.offsets.tolist()
