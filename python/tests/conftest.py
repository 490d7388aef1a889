import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
VECTORS = os.path.abspath(os.path.join(REPO, "..", "shared", "vectors", "compressai"))
if not os.path.isdir(VECTORS):
    VECTORS = "/work/shared/vectors/compressai"
SAMPLES = os.path.join(REPO, "third_party", "samples")
PACKAGES = os.path.join(REPO, "packages")


@pytest.fixture(scope="session")
def vectors_dir():
    if not os.path.isdir(VECTORS):
        pytest.skip("shared CompressAI vectors not found")
    return VECTORS


@pytest.fixture(scope="session")
def tiny_model():
    """A D-PCC AutoEncoder with random weights and tables updated (the code paths do not depend
    on training)."""
    from torchless_export.dpcc.model import AutoEncoder, DpccConfig

    torch.manual_seed(1234)
    model = AutoEncoder(DpccConfig())
    # Spread the quantiles a little so the tables are not the init defaults.
    with torch.no_grad():
        for eb in model.entropy_bottlenecks().values():
            eb.quantiles.add_(torch.randn_like(eb.quantiles) * 0.5)
    model.eval()
    for eb in model.entropy_bottlenecks().values():
        eb.update(force=True)
    return model


@pytest.fixture(scope="session")
def tiny_package(tiny_model, tmp_path_factory):
    from torchless_export.package import write_package

    out = str(tmp_path_factory.mktemp("pkg") / "dpcc-test")
    write_package(tiny_model, tiny_model.args, out, rate="test")
    return out
