"""Point cloud files: PLY (ascii, binary little/big endian), XYZ-style text, PCD (ascii, binary,
binary_compressed). Reads xyz only (float64 array of shape (N, 3)); writes PLY."""
import os
import struct

import numpy as np

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


class PointCloudError(ValueError):
    pass


def _ply_header(f, path):
    lines = []
    first = f.readline()
    if first.strip() != b"ply":
        raise PointCloudError("%s: not a PLY file (first line %r)" % (path, first[:20]))
    while True:
        line = f.readline()
        if not line:
            raise PointCloudError("%s: PLY header without end_header" % path)
        line = line.strip()
        if line == b"end_header":
            break
        lines.append(line.decode("ascii", "replace"))
    fmt = None
    elements = []
    for line in lines:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append({"name": tok[1], "count": int(tok[2]), "props": []})
        elif tok[0] == "property":
            if not elements:
                raise PointCloudError("%s: property before element" % path)
            if tok[1] == "list":
                elements[-1]["props"].append(("list", tok[2], tok[3], tok[4]))
            else:
                if tok[1] not in _PLY_TYPES:
                    raise PointCloudError("%s: unknown PLY type %r" % (path, tok[1]))
                elements[-1]["props"].append(("scalar", tok[1], tok[2]))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PointCloudError("%s: unsupported PLY format %r" % (path, fmt))
    return fmt, elements


def read_ply(path):
    with open(path, "rb") as f:
        fmt, elements = _ply_header(f, path)
        body = f.read()
    pos = 0
    text_lines = None
    if fmt == "ascii":
        text_lines = body.decode("ascii", "replace").split("\n")
    line_no = 0
    for el in elements:
        names = [p[2] for p in el["props"] if p[0] == "scalar"]
        has_list = any(p[0] == "list" for p in el["props"])
        if el["name"] != "vertex":
            # Skip an element that precedes the vertices.
            if fmt == "ascii":
                line_no += el["count"]
                continue
            if has_list:
                raise PointCloudError("%s: binary list element %r before vertices is not supported" % (path, el["name"]))
            endian = "<" if fmt == "binary_little_endian" else ">"
            dt = np.dtype([(p[2], endian + _PLY_TYPES[p[1]]) for p in el["props"]])
            pos += dt.itemsize * el["count"]
            continue
        if has_list:
            raise PointCloudError("%s: list property in vertex element is not supported" % path)
        for axis in ("x", "y", "z"):
            if axis not in names:
                raise PointCloudError("%s: vertex element has no %r property" % (path, axis))
        n = el["count"]
        if fmt == "ascii":
            rows = [l for l in text_lines[line_no:line_no + n]]
            if len(rows) < n:
                raise PointCloudError("%s: expected %d vertex lines, found %d" % (path, n, len(rows)))
            data = np.array([r.split()[: len(names)] for r in rows], dtype=np.float64)
            idx = [names.index(a) for a in ("x", "y", "z")]
            return data[:, idx].reshape(n, 3)
        endian = "<" if fmt == "binary_little_endian" else ">"
        dt = np.dtype([(p[2], endian + _PLY_TYPES[p[1]]) for p in el["props"]])
        need = dt.itemsize * n
        if len(body) - pos < need:
            raise PointCloudError("%s: truncated: %d vertices need %d bytes at offset %d, found %d"
                                  % (path, n, need, pos, len(body) - pos))
        arr = np.frombuffer(body, dtype=dt, count=n, offset=pos)
        return np.stack([arr["x"], arr["y"], arr["z"]], axis=1).astype(np.float64)
    raise PointCloudError("%s: no vertex element" % path)


def read_xyz(path):
    rows = []
    with open(path, "r") as f:
        for line in f:
            tok = line.split()
            if len(tok) < 3 or tok[0].startswith("#"):
                continue
            rows.append([float(t) for t in tok[:3]])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def _lzf_decompress(data, out_len):
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:
            ln = ctrl + 1
            out += data[i:i + ln]
            i += ln
        else:
            ln = ctrl >> 5
            ref = len(out) - ((ctrl & 0x1F) << 8) - 1
            if ln == 7:
                ln += data[i]
                i += 1
            ref -= data[i]
            i += 1
            ln += 2
            if ref < 0:
                raise PointCloudError("LZF: back reference before start")
            for _ in range(ln):
                out.append(out[ref])
                ref += 1
    if len(out) != out_len:
        raise PointCloudError("LZF: expected %d bytes, got %d" % (out_len, len(out)))
    return bytes(out)


def read_pcd(path):
    with open(path, "rb") as f:
        header = {}
        while True:
            line = f.readline()
            if not line:
                raise PointCloudError("%s: PCD header without DATA" % path)
            tok = line.decode("ascii", "replace").split()
            if not tok or tok[0].startswith("#"):
                continue
            header[tok[0].upper()] = tok[1:]
            if tok[0].upper() == "DATA":
                break
        body = f.read()
    fields = header["FIELDS"]
    sizes = [int(s) for s in header["SIZE"]]
    types = header["TYPE"]
    counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
    npts = int(header["POINTS"][0])
    mode = header["DATA"][0]
    np_types = []
    for s, t, c in zip(sizes, types, counts):
        base = {"F": "f", "I": "i", "U": "u"}[t] + str(s)
        np_types.append((base, c))
    if mode == "ascii":
        rows = [l.split() for l in body.decode("ascii", "replace").split("\n") if l.strip()]
        cols = []
        col = 0
        for name, (_, c) in zip(fields, np_types):
            cols.append((name, col))
            col += c
        colmap = dict(cols)
        data = np.array([[float(r[colmap[a]]) for a in ("x", "y", "z")] for r in rows[:npts]])
    else:
        dt = np.dtype([(name if c == 1 else name, "<" + b, (c,) if c > 1 else ()) for name, (b, c) in zip(fields, np_types)])
        if mode == "binary":
            arr = np.frombuffer(body, dtype=dt, count=npts)
            data = np.stack([arr[a].astype(np.float64) for a in ("x", "y", "z")], axis=1)
        elif mode == "binary_compressed":
            comp, raw_len = struct.unpack("<II", body[:8])
            raw = _lzf_decompress(body[8:8 + comp], raw_len)
            # Field-major layout: all x, then all y, ...
            off = 0
            cols = {}
            for name, (b, c) in zip(fields, np_types):
                fdt = np.dtype("<" + b)
                cols[name] = np.frombuffer(raw, dtype=fdt, count=npts * c, offset=off)[::c]
                off += fdt.itemsize * c * npts
            data = np.stack([cols[a].astype(np.float64) for a in ("x", "y", "z")], axis=1)
        else:
            raise PointCloudError("%s: unsupported PCD DATA %r" % (path, mode))
    data = data[np.all(np.isfinite(data), axis=1)]
    return data


def read_points(path):
    """xyz of a .ply, .pcd, or text (.xyz/.pwn/.txt) file as float64 (N, 3); non-finite rows dropped."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".ply":
        pts = read_ply(path)
    elif ext == ".pcd":
        pts = read_pcd(path)
    else:
        pts = read_xyz(path)
    return pts[np.all(np.isfinite(pts), axis=1)]


def write_ply(path, points, binary=True):
    """Writes xyz as float32 PLY (binary little endian by default)."""
    pts = np.ascontiguousarray(np.asarray(points, dtype=np.float32).reshape(-1, 3))
    fmt = "binary_little_endian" if binary else "ascii"
    header = ("ply\nformat %s 1.0\nelement vertex %d\nproperty float x\nproperty float y\n"
              "property float z\nend_header\n" % (fmt, len(pts)))
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        if binary:
            f.write(pts.astype("<f4").tobytes())
        else:
            for p in pts:
                f.write(("%.9g %.9g %.9g\n" % (p[0], p[1], p[2])).encode("ascii"))
