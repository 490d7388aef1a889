"""The torchless compressed point-cloud container (.tlc), specified in docs/formats/container.md.

A header (with a directory of every block's sizes) protected by one CRC-32, then each block's two
rANS strings followed by that block's CRC-32. A damaged block is found by its own CRC and the
directory still locates every other block.
"""
import struct
import zlib
from dataclasses import dataclass, field
from typing import List

MAGIC = b"TLPCLOUD"
VERSION = 1
_FIXED = struct.Struct("<8sII")                   # magic, version, flags
_GEOMETRY = struct.Struct("<3dddIIQI")           # shift[3], min, max, map_size, cube_size, num_points, num_blocks
MAX_PACKAGE_ID = 255
# Directory entry: cube_index, num_points, n3, feats_len, xyzs_len as varint32 each. Fixed-width
# u32s cost 20 bytes per block, a quarter of the file at D-PCC's block sizes.
ENTRY_FIELDS = 5


def put_varint32(out, v):
    """LevelDB's varint32: 7 bits per byte, least significant group first, high bit = more."""
    if not 0 <= v < 1 << 32:
        raise ContainerError("varint32 out of range: %d" % v)
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def get_varint32(data, pos, limit, name, what):
    result = 0
    for shift in range(0, 35, 7):
        if pos >= limit:
            raise ContainerError("%s: truncated at offset %d inside %s" % (name, pos, what))
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if result >= 1 << 32:
                break
            return result, pos
    raise ContainerError("%s: invalid varint32 at offset %d in %s" % (name, pos - 1, what))


class ContainerError(ValueError):
    pass


@dataclass
class Block:
    cube_index: int
    num_points: int
    n3: int
    feats: bytes
    xyzs: bytes


@dataclass
class Container:
    package_id: str
    manifest_sha256: bytes
    shift: List[float]
    min_coord: float
    max_coord: float
    map_size: int
    cube_size: int
    num_points: int
    blocks: List[Block] = field(default_factory=list)
    # Indices of blocks whose CRC did not match (only filled by read()).
    damaged: List[int] = field(default_factory=list)

    def to_bytes(self):
        pid = self.package_id.encode("ascii")
        if len(pid) > MAX_PACKAGE_ID:
            raise ContainerError("package id longer than %d bytes" % MAX_PACKAGE_ID)
        if len(self.manifest_sha256) != 32:
            raise ContainerError("manifest_sha256 must be 32 bytes")
        head = _FIXED.pack(MAGIC, VERSION, 0) + bytes([len(pid)]) + pid + bytes(self.manifest_sha256)
        head += _GEOMETRY.pack(*[float(s) for s in self.shift], float(self.min_coord), float(self.max_coord),
                               self.map_size, self.cube_size, self.num_points, len(self.blocks))
        directory = bytearray()
        for b in self.blocks:
            for v in (b.cube_index, b.num_points, b.n3, len(b.feats), len(b.xyzs)):
                put_varint32(directory, v)
        head += bytes(directory)
        out = [head, struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)]
        for b in self.blocks:
            payload = bytes(b.feats) + bytes(b.xyzs)
            out += [payload, struct.pack("<I", zlib.crc32(payload) & 0xFFFFFFFF)]
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data, name="<bytes>"):
        def need(pos, n, what):
            if pos + n > len(data):
                raise ContainerError("%s: truncated at offset %d: %s needs %d bytes, %d left"
                                     % (name, pos, what, n, len(data) - pos))

        need(0, _FIXED.size + 1, "fixed header")
        magic, version, flags = _FIXED.unpack_from(data, 0)
        if magic != MAGIC:
            raise ContainerError("%s: bad magic %r at offset 0, expected %r" % (name, magic, MAGIC))
        if version != VERSION:
            raise ContainerError("%s: unsupported version %d (expected %d)" % (name, version, VERSION))
        if flags != 0:
            raise ContainerError("%s: unknown flags 0x%x at offset 12" % (name, flags))
        pos = _FIXED.size
        plen = data[pos]
        pos += 1
        need(pos, plen + 32 + _GEOMETRY.size, "package id, manifest hash and geometry")
        package_id = data[pos:pos + plen].decode("ascii")
        pos += plen
        manifest_sha256 = bytes(data[pos:pos + 32])
        pos += 32
        sx, sy, sz, mn, mx, map_size, cube_size, num_points, num_blocks = _GEOMETRY.unpack_from(data, pos)
        pos += _GEOMETRY.size
        if map_size == 0 or cube_size == 0 or cube_size > map_size:
            raise ContainerError("%s: invalid map_size %d / cube_size %d" % (name, map_size, cube_size))
        # Each entry takes at least 5 bytes: bound the count by the file before allocating.
        need(pos, num_blocks * ENTRY_FIELDS + 4, "block directory of %d entries" % num_blocks)
        entries = []
        for i in range(num_blocks):
            entry = []
            for field_name in ("cube_index", "num_points", "n3", "feats_len", "xyzs_len"):
                v, pos = get_varint32(data, pos, len(data), name, "directory entry %d (%s)" % (i, field_name))
                entry.append(v)
            entries.append(tuple(entry))
        need(pos, 4, "header crc32")
        crc = struct.unpack_from("<I", data, pos)[0]
        if zlib.crc32(data[:pos]) & 0xFFFFFFFF != crc:
            raise ContainerError("%s: header crc32 mismatch (header is %d bytes)" % (name, pos))
        pos += 4
        d = (map_size + cube_size - 1) // cube_size
        total = pos + sum(e[3] + e[4] + 4 for e in entries)
        if total != len(data):
            raise ContainerError("%s: directory describes %d bytes, file has %d" % (name, total, len(data)))
        c = cls(package_id, manifest_sha256, [sx, sy, sz], mn, mx, map_size, cube_size, num_points)
        for i, (cube_index, npts, n3, flen, xlen) in enumerate(entries):
            if cube_index >= d ** 3:
                raise ContainerError("%s: block %d: cube index %d outside %d^3 cubes" % (name, i, cube_index, d))
            if n3 == 0:
                raise ContainerError("%s: block %d: n3 is 0" % (name, i))
            for what, ln in (("feats", flen), ("xyzs", xlen)):
                if ln < 8 or ln % 4:
                    raise ContainerError("%s: block %d: %s string length %d is not a multiple of 4 >= 8"
                                         % (name, i, what, ln))
            payload = data[pos:pos + flen + xlen]
            bcrc = struct.unpack_from("<I", data, pos + flen + xlen)[0]
            if zlib.crc32(payload) & 0xFFFFFFFF != bcrc:
                c.damaged.append(i)
            c.blocks.append(Block(cube_index, npts, n3, bytes(payload[:flen]), bytes(payload[flen:])))
            pos += flen + xlen + 4
        return c
