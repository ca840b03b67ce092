"""Several CPU processes (torchrun, gloo) train the model one process trains, for every
backbone family: batch norm synchronised in every form the backbones build it.

How the runs are compared. Two float32 runs that only add up the same numbers in a different
order (two processes against one, or even one process with ``run.channels_last`` on and off)
end two Adam steps with weights up to about 4e-3 apart for BN-Inception and MobileNetV2: Adam's
first steps move every weight by about ``lr`` in the direction of its gradient's sign, and
these models have many gradients that are zero in exact arithmetic (a convolution bias right
before batch norm; the bias of a batch norm whose output reaches the loss only through
convolutions followed by batch norm), or nearly zero, where float32 rounding picks the sign.
So the runs are compared in float64 (``tests.engine.float64_cli``), where the same code agrees to
about 1e-8 (weights) and 1e-11 (running statistics); a mistake in the synchronisation
(unsynchronised layers, statistics of the local batch, a float32 step inside) leaves
differences of 1e-7 or more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import timm
import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pedattr.engine.distributed import _CPUSync, _to_cpu_sync
from pedattr.engine.training import train
from pedattr.models.backbones import build_backbone
from tests.helpers import make_prepared_dataset

REPO = Path(__file__).resolve().parents[2]

# One of each family users train: the paper's backbone, the demo's (torchvision), and a timm
# model whose batch norms are timm's BatchNormAct2d (fused with the activation).
BACKBONES = ["bninception", "torchvision:mobilenet_v2", "timm:test_efficientnet"]

# float64 tolerances (see the module docstring): Adam divides a gradient by its running RMS
# plus 1e-8, so a gradient that is zero in exact arithmetic and 1e-13 from rounding still
# moves its weight by up to lr * 1e-5 = 1e-8; running statistics pass through no such division.
WEIGHT_TOLERANCE = 1e-7
STATISTICS_TOLERANCE = 1e-9


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 training images: two steps of a global batch of 8 (4 per process)."""
    return make_prepared_dataset(tmp_path_factory.mktemp("ddp"), {"train": 16, "val": 8, "test": 8})


def write_config(folder: Path, data: Path, backbone: str) -> Path:
    config = {
        "model": {"backbone": backbone, "input_size": [64, 32], "pyramid_dim": 16},
        "data": {"root": str(data), "workers": 0},
        "optim": {"lr": 1e-3, "batch_size": 8, "epochs": 1, "lr_step": 1},
        "run": {"out": str(folder / "run"), "device": "cpu", "sync_bn": True},
    }
    folder.mkdir(parents=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def is_statistic(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES)
def test_two_processes_train_what_one_process_trains(
    tmp_path: Path, data: Path, backbone: str
) -> None:
    with default_dtype(torch.float64):
        train(write_config(tmp_path / "one", data, backbone))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "tests.engine.float64_cli",
        "train",
        "--config",
        str(write_config(tmp_path / "two", data, backbone)),
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    one = load_file(tmp_path / "one" / "run" / "last.safetensors")
    two = load_file(tmp_path / "two" / "run" / "last.safetensors")
    assert one.keys() == two.keys()
    for key, tensor in one.items():
        if not tensor.is_floating_point():
            assert torch.equal(tensor, two[key]), key  # num_batches_tracked: 2 steps each
            continue
        assert tensor.dtype == two[key].dtype == torch.float64, key
        tolerance = STATISTICS_TOLERANCE if is_statistic(key) else WEIGHT_TOLERANCE
        difference = (tensor - two[key]).abs().max().item()
        assert difference <= tolerance, f"{key}: differs by {difference:.3g}"
    assert any(is_statistic(key) and "backbone" in key for key in one)  # statistics compared

    report_one = json.loads((tmp_path / "one" / "run" / "report.json").read_text())
    report_two = json.loads((tmp_path / "two" / "run" / "report.json").read_text())
    assert report_one["selected_epoch"] == report_two["selected_epoch"]
    for split in ("val", "test"):  # predictions thresholded: equal weights, equal metrics
        assert report_two[split] == report_one[split], split
    assert report_two["test"]["num_samples"] == 8


# --- the conversion ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backbone", [*BACKBONES, "timm:test_resnet"])
def test_every_batch_norm_is_synchronised_and_keeps_its_state(backbone: str) -> None:
    with default_dtype(torch.float64):
        model = build_backbone(backbone)
    norms = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
    frozen = next(iter(norms.values()))
    frozen.eval()
    frozen.weight.requires_grad_(False)
    parameters = {name: id(p) for name, p in model.named_parameters()}
    buffers = {name: id(b) for name, b in model.named_buffers()}

    assert _to_cpu_sync(model) is model

    assert norms and all(isinstance(m, _CPUSync) for m in norms.values())
    assert not [
        n
        for n, m in model.named_modules()
        if isinstance(m, _BatchNorm) and not isinstance(m, _CPUSync)
    ]
    # The same tensors (dtype, requires_grad and all), the same mode.
    assert {name: id(p) for name, p in model.named_parameters()} == parameters
    assert {name: id(b) for name, b in model.named_buffers()} == buffers
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert not frozen.training and not frozen.weight.requires_grad


def test_a_batch_norm_with_its_own_forward_is_refused_by_name() -> None:
    class Doubled(nn.BatchNorm2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(Doubled(4)))
    with pytest.raises(ValueError, match=r"^run\.sync_bn: 1\.0 is a .*Doubled.*sync_bn=false"):
        _to_cpu_sync(model)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.BatchNorm1d(4),
        lambda: nn.BatchNorm3d(4),
        lambda: timm.layers.BatchNormAct2d(4, act_layer=nn.ReLU),
    ],
    ids=["BatchNorm1d", "BatchNorm3d", "BatchNormAct2d"],
)
def test_synchronised_twins_compute_what_the_originals_compute(make) -> None:
    """In a one-process group (the synchronised path runs): same output, gradient and running
    statistics as the original layer, in float64."""
    dist.init_process_group(
        "gloo", init_method=f"file://{Path(tempfile.mkdtemp()) / 'group'}", rank=0, world_size=1
    )
    try:
        with default_dtype(torch.float64):
            plain = make()
            synced = _to_cpu_sync(nn.Sequential(make()))[0]
            synced.load_state_dict(plain.state_dict())
            torch.manual_seed(0)
            size = {nn.BatchNorm1d: (6, 4), nn.BatchNorm3d: (3, 4, 2, 3, 2)}
            x = torch.randn(*size.get(type(plain), (6, 4, 3, 2))) + 3.0
        weights = torch.arange(1.0, 5.0, dtype=torch.float64).view(1, 4, *[1] * (x.dim() - 2))
        x_plain, x_synced = x.clone().requires_grad_(), x.clone().requires_grad_()
        expected, got = plain(x_plain), synced(x_synced)
        torch.testing.assert_close(got, expected)
        (expected * weights).sum().backward()
        (got * weights).sum().backward()
        torch.testing.assert_close(x_synced.grad, x_plain.grad)
        torch.testing.assert_close(synced.running_mean, plain.running_mean)
        torch.testing.assert_close(synced.running_var, plain.running_var)
        assert synced.num_batches_tracked == plain.num_batches_tracked == 1
    finally:
        dist.destroy_process_group()
