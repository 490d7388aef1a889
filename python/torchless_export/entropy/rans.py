"""CompressAI's rANS coder (ryg Rans64, 16-bit CDFs, 4-bit bypass escapes), in plain Python.

Wire format (spec §1.3): [state_lo, state_hi, w_k, ..., w_1] as little-endian uint32 words, where
w_j is the j-th renormalisation word emitted while encoding the buffered ops in reverse order.
Slow (a few microseconds per symbol) but exact; point-cloud latents are small.
"""
import bisect
import struct

PRECISION = 16
BYPASS_PRECISION = 4
MAX_BYPASS_VAL = (1 << BYPASS_PRECISION) - 1
RANS64_L = 1 << 31
_MASK32 = 0xFFFFFFFF


def _to_list(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    return list(x)


def _symbol_ops(symbols, indexes, cdfs, cdf_sizes, offsets):
    """Yields (start, freq, scale_bits) ops in push order for BufferedRansEncoder.encode_with_indexes."""
    ops = []
    append = ops.append
    for s, c in zip(symbols, indexes):
        cdf = cdfs[c]
        max_value = cdf_sizes[c] - 2
        value = s - offsets[c]
        raw = 0
        if value < 0:
            raw = -2 * value - 1
            value = max_value
        elif value >= max_value:
            raw = 2 * (value - max_value)
            value = max_value
        start = cdf[value] & 0xFFFF
        # uint16 storage: a frequency of 65536 wraps to 0 (CompressAI dies there; we refuse).
        freq = (cdf[value + 1] - cdf[value]) & 0xFFFF
        if freq == 0:
            raise ValueError("rANS: symbol with zero (or 65536) frequency in table %d" % c)
        append((start, freq, PRECISION))
        if value == max_value:
            if raw >= 1 << 28:
                raise ValueError("rANS: escape value %d out of CompressAI's safe range" % raw)
            n_bypass = 0
            while (raw >> (n_bypass * BYPASS_PRECISION)) != 0:
                n_bypass += 1
            v = n_bypass
            while v >= MAX_BYPASS_VAL:
                append((MAX_BYPASS_VAL, 1, BYPASS_PRECISION))
                v -= MAX_BYPASS_VAL
            append((v, 1, BYPASS_PRECISION))
            for j in range(n_bypass):
                append(((raw >> (j * BYPASS_PRECISION)) & MAX_BYPASS_VAL, 1, BYPASS_PRECISION))
    return ops


def _flush(ops):
    x = RANS64_L
    words = []
    for start, freq, bits in reversed(ops):
        x_max = ((RANS64_L >> bits) << 32) * freq
        if x >= x_max:
            words.append(x & _MASK32)
            x >>= 32
        x = ((x // freq) << bits) + (x % freq) + start
    out = [x & _MASK32, x >> 32] + words[::-1]
    return struct.pack("<%dI" % len(out), *out)


class BufferedRansEncoder:
    """Buffers ops over several encode_with_indexes calls; flush() codes them all into one stream."""

    def __init__(self):
        self._ops = []

    def encode_with_indexes(self, symbols, indexes, cdfs, cdf_sizes, offsets):
        self._ops.extend(_symbol_ops(_to_list(symbols), _to_list(indexes), _to_list(cdfs),
                                     _to_list(cdf_sizes), _to_list(offsets)))

    def flush(self):
        out = _flush(self._ops)
        self._ops = []
        return out


class RansEncoder:
    def encode_with_indexes(self, symbols, indexes, cdfs, cdf_sizes, offsets):
        enc = BufferedRansEncoder()
        enc.encode_with_indexes(symbols, indexes, cdfs, cdf_sizes, offsets)
        return enc.flush()


class RansDecoder:
    """Decoder; unlike CompressAI it checks every read against the end of the string."""

    def __init__(self):
        self._words = []
        self._pos = 0
        self._x = 0

    def set_stream(self, data):
        data = bytes(data)
        if len(data) % 4 != 0 or len(data) < 8:
            raise ValueError("rANS: string length %d is not a multiple of 4 and >= 8" % len(data))
        self._words = list(struct.unpack("<%dI" % (len(data) // 4), data))
        self._x = self._words[0] | (self._words[1] << 32)
        self._pos = 2

    def _next_word(self):
        if self._pos >= len(self._words):
            raise ValueError("rANS: string exhausted after %d words" % len(self._words))
        w = self._words[self._pos]
        self._pos += 1
        return w

    def _renorm(self):
        if self._x < RANS64_L:
            self._x = (self._x << 32) | self._next_word()

    def _get_bits(self):
        v = self._x & MAX_BYPASS_VAL
        self._x >>= BYPASS_PRECISION
        self._renorm()
        return v

    def decode_stream(self, indexes, cdfs, cdf_sizes, offsets):
        indexes = _to_list(indexes)
        cdfs = _to_list(cdfs)
        cdf_sizes = _to_list(cdf_sizes)
        offsets = _to_list(offsets)
        out = []
        mask = (1 << PRECISION) - 1
        for c in indexes:
            cdf = cdfs[c]
            size = cdf_sizes[c]
            max_value = size - 2
            cf = self._x & mask
            # First k with cdf[k] > cf, minus one (CDF rows are increasing, so bisect equals
            # CompressAI's linear find_if).
            s = bisect.bisect_right(cdf, cf, 0, size) - 1
            if s < 0 or s >= size - 1:
                raise ValueError("rANS: corrupt stream (no symbol for cf=%d in table %d)" % (cf, c))
            start = cdf[s]
            freq = cdf[s + 1] - cdf[s]
            self._x = freq * (self._x >> PRECISION) + (self._x & mask) - start
            self._renorm()
            value = s
            if value == max_value:
                val = self._get_bits()
                n_bypass = val
                while val == MAX_BYPASS_VAL:
                    val = self._get_bits()
                    n_bypass += val
                if n_bypass > 7:
                    raise ValueError("rANS: corrupt stream (%d bypass nibbles)" % n_bypass)
                raw = 0
                for j in range(n_bypass):
                    raw |= self._get_bits() << (j * BYPASS_PRECISION)
                v = raw >> 1
                if raw & 1:
                    value = -v - 1
                else:
                    value = v + max_value
            out.append(value + offsets[c])
        return out

    def decode_with_indexes(self, data, indexes, cdfs, cdf_sizes, offsets):
        self.set_stream(data)
        return self.decode_stream(indexes, cdfs, cdf_sizes, offsets)
