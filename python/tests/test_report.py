"""Exportability report classification."""
import json

import torch

from torchless_export import report


class _NumpyOp(torch.autograd.Function):
    """Stands in for a CUDA extension op such as pointops.furthestsampling: it leaves torch."""

    @staticmethod
    def forward(ctx, x):
        return torch.from_numpy(x.detach().numpy() * 2)


class CustomOpModule(torch.nn.Module):
    def forward(self, x):
        return _NumpyOp.apply(x) + 1


class DataDependentLoop(torch.nn.Module):
    def forward(self, x):
        out = x
        while out.sum() > 0:
            out = out - 1
        return out


class PythonLoopOverPoints(torch.nn.Module):
    def forward(self, x):
        acc = x[..., :1]
        for i in range(1, x.shape[-1]):
            acc = acc + x[..., i:i + 1]
        return acc


class CudaCall(torch.nn.Module):
    def forward(self, x):
        return x + torch.ones(1).cuda()


def conv_stack():
    return torch.nn.Sequential(torch.nn.Conv1d(3, 16, 1), torch.nn.ReLU(), torch.nn.Conv1d(16, 4, 1))


def x():
    return (torch.rand(1, 3, 10),)


def test_custom_op_is_not_exportable_and_named():
    f = report.check_module("custom", CustomOpModule(), x())
    assert f.status == report.NOT_EXPORTABLE
    assert "custom op" in f.reason and "_NumpyOp" in f.reason


def test_data_dependent_python_loop_is_not_exportable():
    f = report.check_module("loop", DataDependentLoop(), x())
    assert f.status == report.NOT_EXPORTABLE
    assert "control flow" in f.reason


def test_python_loop_over_point_axis_is_not_exportable():
    f = report.check_module("loop", PythonLoopOverPoints(), x())
    assert f.status == report.NOT_EXPORTABLE
    assert "loop" in f.reason.lower()


def test_cuda_call_is_not_exportable_on_cpu():
    if torch.cuda.is_available():
        return
    f = report.check_module("cuda", CudaCall(), x())
    assert f.status == report.NOT_EXPORTABLE and ".cuda()" in f.reason


def test_plain_conv_stack_is_exportable_and_verified():
    f = report.check_module("conv", conv_stack(), x())
    assert f.status == report.EXPORTABLE and f.verified is True
    assert f.ops == ["Conv", "Relu"]


def test_dpcc_report_splits_decoder_and_keeps_encoder_in_pytorch(tiny_model):
    findings = {f.name: f for f in report.dpcc_findings(tiny_model, tiny_model.args)}
    assert findings["decoder"].status == report.NOT_EXPORTABLE
    assert "selection" in findings["decoder"].reason
    assert findings["encoder"].status == report.NOT_EXPORTABLE
    assert findings["feats_eblock.compress"].status == report.NOT_EXPORTABLE
    assert findings["latent_xyzs_synthesis"].status == report.WORKAROUND
    for i in range(3):
        assert findings["decoder.decoder_layers.%d (upsample+num)" % i].status == report.EXPORTABLE
        assert findings["decoder.decoder_layers.%d.2 (refine)" % i].status == report.EXPORTABLE
    md = report.to_markdown(list(findings.values()))
    assert md.count("\n") == len(findings) + 2
    assert len(json.loads(report.to_json(list(findings.values())))) == len(findings)


def test_generic_api_reports_each_child_of_any_model():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = conv_stack()
            self.head = CustomOpModule()

        def forward(self, x):
            return self.head(self.body(x))

    findings = {f.name: f for f in report.check_submodules(Net(), x())}
    assert findings["body"].status == report.EXPORTABLE
    assert findings["head"].status == report.NOT_EXPORTABLE and "custom op" in findings["head"].reason
