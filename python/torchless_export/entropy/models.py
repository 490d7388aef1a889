"""EntropyBottleneck and GaussianConditional, state-dict compatible with CompressAI.

Buffer and parameter names are CompressAI's (`_offset`, `_quantized_cdf`, `_cdf_length`,
`quantiles`, `matrices.k`/`biases.k`/`factors.k`, `scale_table`, ...). Checkpoints written with
CompressAI < 1.2.6 (`_matrix0`, `_bias0`, `_factor0`, as D-PCC's) are remapped on load.
"""
import re

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .cdf import pmf_to_quantized_cdf
from .rans import RansDecoder, RansEncoder


class _LowerBoundFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, grad_output):
        x, bound = ctx.saved_tensors
        # Pass gradients that push x up even where x is clamped (CompressAI's LowerBound).
        pass_through = (x >= bound) | (grad_output < 0)
        return pass_through.type(grad_output.dtype) * grad_output, None


class LowerBound(nn.Module):
    def __init__(self, bound):
        super().__init__()
        self.register_buffer("bound", torch.Tensor([float(bound)]))

    def forward(self, x):
        if torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
            return torch.max(x, self.bound)
        return _LowerBoundFunction.apply(x, self.bound)


def _standardized_quantile(q):
    try:
        import scipy.stats

        return float(scipy.stats.norm.ppf(q))
    except ImportError:  # pragma: no cover - scipy is present on Debian with torch
        from statistics import NormalDist

        return NormalDist().inv_cdf(q)


class EntropyModel(nn.Module):
    """Base: the three int32 coding buffers and compress/decompress through the rANS coder."""

    def __init__(self, likelihood_bound=1e-9, entropy_coder_precision=16):
        super().__init__()
        self.entropy_coder_precision = int(entropy_coder_precision)
        self.use_likelihood_bound = likelihood_bound > 0
        if self.use_likelihood_bound:
            self.likelihood_lower_bound = LowerBound(likelihood_bound)
        self.register_buffer("_offset", torch.IntTensor())
        self.register_buffer("_quantized_cdf", torch.IntTensor())
        self.register_buffer("_cdf_length", torch.IntTensor())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A fresh module has empty coding buffers; take the checkpoint's shapes
        # (CompressAI does this in CompressionModel.load_state_dict via update_registered_buffers).
        for name in ("_offset", "_quantized_cdf", "_cdf_length", "scale_table"):
            key = prefix + name
            if key in state_dict and hasattr(self, name) and isinstance(getattr(self, name), torch.Tensor):
                buf = getattr(self, name)
                if buf.shape != state_dict[key].shape:
                    buf.resize_(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def quantize(self, inputs, mode, means=None):
        if mode == "noise":
            noise = torch.empty_like(inputs).uniform_(-0.5, 0.5)
            return inputs + noise
        outputs = inputs.clone()
        if means is not None:
            outputs -= means
        outputs = torch.round(outputs)
        if mode == "dequantize":
            if means is not None:
                outputs += means
            return outputs
        assert mode == "symbols", mode
        return outputs.int()

    @staticmethod
    def dequantize(inputs, means=None, dtype=torch.float):
        if means is not None:
            outputs = inputs.type_as(means)
            outputs += means
        else:
            outputs = inputs.type(dtype)
        return outputs

    def _pmf_to_cdf(self, pmf, tail_mass, pmf_length, max_length):
        cdf = torch.zeros((len(pmf_length), max_length + 2), dtype=torch.int32)
        for i, p in enumerate(pmf):
            prob = torch.cat((p[: pmf_length[i]], tail_mass[i]), dim=0)
            row = pmf_to_quantized_cdf(prob.tolist(), self.entropy_coder_precision)
            cdf[i, : len(row)] = torch.tensor(row, dtype=torch.int64).to(torch.int32)
        return cdf

    def _check_tables(self):
        if self._offset.numel() == 0 or self._quantized_cdf.numel() == 0 or self._cdf_length.numel() == 0:
            raise ValueError("Uninitialized CDFs. Run update() first")
        if self._quantized_cdf.dim() != 2:
            raise ValueError("Invalid CDF size %s" % (tuple(self._quantized_cdf.size()),))

    def tables(self):
        """(cdfs as list of lists, cdf_lengths, offsets) for the coder."""
        self._check_tables()
        return self._quantized_cdf.tolist(), self._cdf_length.reshape(-1).tolist(), self._offset.reshape(-1).tolist()

    def compress(self, inputs, indexes, means=None):
        symbols = self.quantize(inputs, "symbols", means)
        if len(inputs.size()) < 2:
            raise ValueError("Invalid `inputs` size. Expected a tensor with at least 2 dimensions.")
        if inputs.size() != indexes.size():
            raise ValueError("`inputs` and `indexes` should have the same size.")
        cdfs, lengths, offsets = self.tables()
        coder = RansEncoder()
        strings = []
        for i in range(symbols.size(0)):
            strings.append(coder.encode_with_indexes(
                symbols[i].reshape(-1).int().tolist(), indexes[i].reshape(-1).int().tolist(),
                cdfs, lengths, offsets))
        return strings

    def decompress(self, strings, indexes, dtype=torch.float, means=None):
        if not isinstance(strings, (tuple, list)):
            raise ValueError("Invalid `strings` parameter type.")
        if len(strings) != indexes.size(0):
            raise ValueError("Invalid strings or indexes parameters")
        if len(indexes.size()) < 2:
            raise ValueError("Invalid `indexes` size. Expected a tensor with at least 2 dimensions.")
        cdfs, lengths, offsets = self.tables()
        outputs = torch.empty(indexes.size(), dtype=torch.int32)
        decoder = RansDecoder()
        for i, s in enumerate(strings):
            values = decoder.decode_with_indexes(s, indexes[i].reshape(-1).int().tolist(), cdfs, lengths, offsets)
            outputs[i] = torch.tensor(values, dtype=torch.int32).reshape(outputs[i].size())
        return self.dequantize(outputs, means, dtype)


class EntropyBottleneck(EntropyModel):
    """Factorized prior of Ballé et al. 2018 (CompressAI's EntropyBottleneck), one density per channel."""

    def __init__(self, channels, *args, tail_mass=1e-9, init_scale=10, filters=(3, 3, 3, 3), **kwargs):
        super().__init__(*args, **kwargs)
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)
        self.tail_mass = float(tail_mass)

        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        filters = (1,) + self.filters + (1,)
        scale = self.init_scale ** (1 / (len(self.filters) + 1))
        for i in range(len(self.filters) + 1):
            init = np.log(np.expm1(1 / scale / filters[i + 1]))
            matrix = torch.Tensor(channels, filters[i + 1], filters[i])
            matrix.data.fill_(init)
            self.matrices.append(nn.Parameter(matrix))
            bias = torch.Tensor(channels, filters[i + 1], 1)
            nn.init.uniform_(bias, -0.5, 0.5)
            self.biases.append(nn.Parameter(bias))
            if i < len(self.filters):
                factor = torch.Tensor(channels, filters[i + 1], 1)
                nn.init.zeros_(factor)
                self.factors.append(nn.Parameter(factor))

        self.quantiles = nn.Parameter(torch.Tensor(channels, 1, 3))
        init = torch.Tensor([-self.init_scale, 0, self.init_scale])
        self.quantiles.data = init.repeat(self.quantiles.size(0), 1, 1)
        target = np.log(2 / self.tail_mass - 1)
        self.register_buffer("target", torch.Tensor([-target, 0, target]))

    _OLD_KEY = re.compile(r"^_(matrix|bias|factor)(\d+)$")
    _NEW_NAME = {"matrix": "matrices", "bias": "biases", "factor": "factors"}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in list(state_dict.keys()):
            if not key.startswith(prefix):
                continue
            m = self._OLD_KEY.match(key[len(prefix):])
            if m:
                state_dict[prefix + "%s.%s" % (self._NEW_NAME[m.group(1)], m.group(2))] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _get_medians(self):
        return self.quantiles[:, :, 1:2]

    def medians(self):
        return self.quantiles[:, 0, 1].detach().clone()

    def _logits_cumulative(self, inputs, stop_gradient):
        logits = inputs
        for i in range(len(self.filters) + 1):
            matrix = self.matrices[i]
            if stop_gradient:
                matrix = matrix.detach()
            logits = torch.matmul(F.softplus(matrix), logits)
            bias = self.biases[i]
            if stop_gradient:
                bias = bias.detach()
            logits = logits + bias
            if i < len(self.factors):
                factor = self.factors[i]
                if stop_gradient:
                    factor = factor.detach()
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits

    def _likelihood(self, inputs, stop_gradient=False):
        lower = self._logits_cumulative(inputs - 0.5, stop_gradient=stop_gradient)
        upper = self._logits_cumulative(inputs + 0.5, stop_gradient=stop_gradient)
        likelihood = torch.sigmoid(upper) - torch.sigmoid(lower)
        return likelihood, lower, upper

    def loss(self):
        """Auxiliary loss fitting `quantiles` to the tail-mass targets."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    def update(self, force=False):
        if self._offset.numel() > 0 and not force:
            return False
        with torch.no_grad():
            medians = self.quantiles[:, 0, 1]
            minima = torch.clamp(torch.ceil(medians - self.quantiles[:, 0, 0]).int(), min=0)
            maxima = torch.clamp(torch.ceil(self.quantiles[:, 0, 2] - medians).int(), min=0)
            self._offset = -minima
            pmf_start = medians - minima
            pmf_length = maxima + minima + 1
            max_length = int(pmf_length.max().item())
            samples = torch.arange(max_length)
            samples = samples[None, :] + pmf_start[:, None, None]
            pmf, lower, upper = self._likelihood(samples, stop_gradient=True)
            pmf = pmf[:, 0, :]
            # CompressAI's quirk: the upper tail is read at the last column for every channel.
            tail_mass = torch.sigmoid(lower[:, 0, :1]) + torch.sigmoid(-upper[:, 0, -1:])
            self._quantized_cdf = self._pmf_to_cdf(pmf, tail_mass, pmf_length, max_length)
            self._cdf_length = pmf_length + 2
        return True

    def forward(self, x, training=None):
        if training is None:
            training = self.training
        perm = [1, 0] + list(range(2, x.dim()))
        x = x.permute(*perm).contiguous()
        shape = x.size()
        values = x.reshape(x.size(0), 1, -1)
        outputs = self.quantize(values, "noise" if training else "dequantize", self._get_medians())
        likelihood, _, _ = self._likelihood(outputs)
        if self.use_likelihood_bound:
            likelihood = self.likelihood_lower_bound(likelihood)
        outputs = outputs.reshape(shape).permute(*perm).contiguous()
        likelihood = likelihood.reshape(shape).permute(*perm).contiguous()
        return outputs, likelihood

    @staticmethod
    def _build_indexes(size):
        dims = len(size)
        n = size[0]
        c = size[1]
        view_dims = np.ones((dims,), dtype=np.int64)
        view_dims[1] = -1
        indexes = torch.arange(c).view(*view_dims)
        indexes = indexes.int()
        return indexes.repeat(n, 1, *size[2:])

    def _medians_like(self, size):
        medians = self._get_medians().detach().reshape(-1)
        view = [1, -1] + [1] * (len(size) - 2)
        return medians.reshape(*view).expand(size[0], -1, *([1] * (len(size) - 2)))

    def compress(self, x):
        indexes = self._build_indexes(x.size())
        return super().compress(x, indexes, self._medians_like(x.size()))

    def decompress(self, strings, size):
        output_size = (len(strings), self._quantized_cdf.size(0), *size)
        indexes = self._build_indexes(output_size)
        return super().decompress(strings, indexes, self._get_medians().dtype, self._medians_like(output_size))


class GaussianConditional(EntropyModel):
    """Gaussian conditional with a table of scales (CompressAI's GaussianConditional)."""

    def __init__(self, scale_table, *args, scale_bound=0.11, tail_mass=1e-9, **kwargs):
        super().__init__(*args, **kwargs)
        if scale_table is not None and len(scale_table) > 0:
            if list(scale_table) != sorted(scale_table) or any(s <= 0 for s in scale_table):
                raise ValueError("Invalid scale_table")
        self.tail_mass = float(tail_mass)
        if scale_bound is None and scale_table:
            scale_bound = scale_table[0]
        if scale_bound <= 0:
            raise ValueError("Invalid parameters")
        self.lower_bound_scale = LowerBound(scale_bound)
        self.register_buffer("scale_table", self._prepare_scale_table(scale_table) if scale_table else torch.Tensor())
        self.register_buffer("scale_bound", torch.Tensor([float(scale_bound)]) if scale_bound is not None else None)

    @staticmethod
    def _prepare_scale_table(scale_table):
        return torch.Tensor(tuple(float(s) for s in scale_table))

    def _standardized_cumulative(self, inputs):
        half = float(0.5)
        const = float(-(2 ** -0.5))
        return half * torch.erfc(const * inputs)

    def update_scale_table(self, scale_table, force=False):
        if self._offset.numel() > 0 and not force:
            return False
        self.scale_table = self._prepare_scale_table(scale_table)
        self.update()
        return True

    def update(self):
        multiplier = -_standardized_quantile(self.tail_mass / 2)
        pmf_center = torch.ceil(self.scale_table * multiplier).int()
        pmf_length = 2 * pmf_center + 1
        max_length = int(torch.max(pmf_length).item())
        samples = torch.abs(torch.arange(max_length).int() - pmf_center[:, None])
        samples_scale = self.scale_table.unsqueeze(1)
        samples = samples.float()
        samples_scale = samples_scale.float()
        upper = self._standardized_cumulative((0.5 - samples) / samples_scale)
        lower = self._standardized_cumulative((-0.5 - samples) / samples_scale)
        pmf = upper - lower
        tail_mass = 2 * lower[:, :1]
        self._quantized_cdf = self._pmf_to_cdf(pmf, tail_mass, pmf_length, max_length)
        self._offset = -pmf_center
        self._cdf_length = pmf_length + 2

    def _likelihood(self, inputs, scales, means=None):
        values = inputs - means if means is not None else inputs
        scales = self.lower_bound_scale(scales)
        values = torch.abs(values)
        upper = self._standardized_cumulative((0.5 - values) / scales)
        lower = self._standardized_cumulative((-0.5 - values) / scales)
        return upper - lower

    def forward(self, inputs, scales, means=None, training=None):
        if training is None:
            training = self.training
        outputs = self.quantize(inputs, "noise" if training else "dequantize", means)
        likelihood = self._likelihood(outputs, scales, means)
        if self.use_likelihood_bound:
            likelihood = self.likelihood_lower_bound(likelihood)
        return outputs, likelihood

    def build_indexes(self, scales):
        scales = self.lower_bound_scale(scales)
        indexes = scales.new_full(scales.size(), len(self.scale_table) - 1).int()
        for s in self.scale_table[:-1]:
            indexes -= (scales <= s).int()
        return indexes
