"""CompressAI-compatible entropy coding: pmf_to_quantized_cdf, the rANS coder and the two entropy models.

Bit-exact with CompressAI (see ../shared/specs/compressai-entropy-coding.md); checked against the
vectors in ../shared/vectors/compressai/ by python/tests/test_entropy_vectors.py.
"""
from .cdf import pmf_to_quantized_cdf
from .rans import RansEncoder, RansDecoder, BufferedRansEncoder
from .models import EntropyBottleneck, GaussianConditional, EntropyModel

__all__ = [
    "pmf_to_quantized_cdf",
    "RansEncoder",
    "RansDecoder",
    "BufferedRansEncoder",
    "EntropyBottleneck",
    "GaussianConditional",
    "EntropyModel",
]
