"""pmf -> quantized CDF, exactly as CompressAI's C++ `pmf_to_quantized_cdf` (ops.cpp)."""
import math

import numpy as np

_U32 = 0xFFFFFFFF


def _cxx_float_repr(p):
    # The C++ formats the offending element with "%f".
    return "%f" % p


def pmf_to_quantized_cdf(pmf, precision=16):
    """Returns the quantized CDF (list of n+1 ints) of `pmf` (sequence of floats).

    The input is taken as float32, as CompressAI receives it through a std::vector<float>.
    """
    pmf32 = np.asarray([float(p) for p in pmf], dtype=np.float32)
    for p in pmf32:
        if not math.isfinite(float(p)) or p < 0:
            raise ValueError(
                "Invalid `pmf`, non-finite or negative element found: " + _cxx_float_repr(float(p)))
    n = len(pmf32)
    scale = 1 << precision
    cdf = [0] * (n + 1)
    for i, p in enumerate(pmf32):
        # p * 2^precision is exact in float32; std::round rounds half away from zero.
        v = float(p) * float(scale)
        cdf[i + 1] = int(math.floor(v + 0.5)) & _U32
    # std::accumulate with an int accumulator, stored into a uint32.
    total = sum(cdf) & _U32
    if total == 0:
        raise ValueError(
            "Invalid `pmf`: at least one element must have a non-zero probability.")
    for i in range(1, n + 1):
        cdf[i] = ((scale * cdf[i]) // total) & _U32
    for i in range(1, n + 1):
        cdf[i] = (cdf[i] + cdf[i - 1]) & _U32
    cdf[n] = scale
    # Zero-frequency repair: steal one count from the first smallest frequency above 1.
    for i in range(n):
        if cdf[i] == cdf[i + 1]:
            best_freq = _U32
            best_steal = -1
            for j in range(n):
                freq = (cdf[j + 1] - cdf[j]) & _U32
                if 1 < freq < best_freq:
                    best_freq = freq
                    best_steal = j
            if best_steal < i:
                for j in range(best_steal + 1, i + 1):
                    cdf[j] = (cdf[j] - 1) & _U32
            else:
                for j in range(i + 1, best_steal + 1):
                    cdf[j] = (cdf[j] + 1) & _U32
    return cdf
