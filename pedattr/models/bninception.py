"""BN-Inception (Ioffe & Szegedy, "Batch Normalization", ICML 2015), the backbone of ALM.

The module keeps the flat attribute names of the public ImageNet weights
``bn_inception-52deb4733.pth`` (``conv1_7x7_s2``, ``inception_3a_1x1_bn``, ...), so that file
loads strictly with :func:`load_bninception_weights`. The architecture is written as data
(:data:`BLOCKS`); the stem, the blocks and their forward are built from that table.

Those weights were trained on BGR images in 0..255 with mean (104, 117, 128) and std 1;
normalisation is handled outside this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pedattr.models.weight_files import read_weight_file

__all__ = ["BLOCKS", "BNInception", "BlockSpec", "load_bninception_weights"]


@dataclass(frozen=True)
class BlockSpec:
    """Output channels of the branches of one Inception block.

    A stride-2 block has no 1x1 branch and no pool projection (``n1x1 == pool_proj == 0``); its
    max-pool branch passes the input channels through.

    Attributes:
        name: Block name as in the weight file, e.g. ``"3a"``.
        n1x1: 1x1 branch.
        n3x3_reduce: 1x1 reduction before the 3x3 branch.
        n3x3: 3x3 branch.
        double_reduce: 1x1 reduction before the two stacked 3x3 convs.
        double_1: First stacked 3x3 conv.
        double_2: Second stacked 3x3 conv.
        pool_proj: 1x1 projection after the pool.
        pool: ``"avg"`` or ``"max"`` for the pool branch.
    """

    name: str
    n1x1: int
    n3x3_reduce: int
    n3x3: int
    double_reduce: int
    double_1: int
    double_2: int
    pool_proj: int
    pool: str = "avg"

    @property
    def stride(self) -> int:
        return 2 if self.n1x1 == 0 else 1

    def out_chs(self, in_chs: int) -> int:
        pool_chs = self.pool_proj if self.pool_proj else in_chs
        return self.n1x1 + self.n3x3 + self.double_2 + pool_chs


# fmt: off
BLOCKS: tuple[BlockSpec, ...] = (
    #         name  1x1  3x3r  3x3  dblr  dbl1  dbl2  proj  pool
    BlockSpec("3a",  64,   64,  64,   64,   96,   96,   32),
    BlockSpec("3b",  64,   64,  96,   64,   96,   96,   64),
    BlockSpec("3c",   0,  128, 160,   64,   96,   96,    0, "max"),
    BlockSpec("4a", 224,   64,  96,   96,  128,  128,  128),
    BlockSpec("4b", 192,   96, 128,   96,  128,  128,  128),
    BlockSpec("4c", 160,  128, 160,  128,  160,  160,  128),
    BlockSpec("4d",  96,  128, 192,  160,  192,  192,  128),
    BlockSpec("4e",   0,  128, 192,  192,  256,  256,    0, "max"),
    BlockSpec("5a", 352,  192, 320,  160,  224,  224,  128),
    BlockSpec("5b", 352,  192, 320,  192,  224,  224,  128, "max"),
)
# fmt: on

# The three blocks whose outputs feed ALM's feature pyramid (strides 8, 16, 32).
TAPS: tuple[str, ...] = ("3b", "4d", "5b")
STEM_CHS = 192
NUM_FEATURES = 1024


def _branch_convs(spec: BlockSpec, in_chs: int) -> list[tuple[str, int, int, int, int]]:
    """(name suffix, in channels, out channels, kernel, stride) of each branch conv of a block."""
    stride = spec.stride
    convs = [("1x1", in_chs, spec.n1x1, 1, 1)] if spec.n1x1 else []
    return convs + [
        ("3x3_reduce", in_chs, spec.n3x3_reduce, 1, 1),
        ("3x3", spec.n3x3_reduce, spec.n3x3, 3, stride),
        ("double_3x3_reduce", in_chs, spec.double_reduce, 1, 1),
        ("double_3x3_1", spec.double_reduce, spec.double_1, 3, 1),
        ("double_3x3_2", spec.double_1, spec.double_2, 3, stride),
    ]


def _make_pool(spec: BlockSpec) -> nn.Module:
    if spec.stride == 2:
        return nn.MaxPool2d(3, stride=2, ceil_mode=True)
    if spec.pool == "max":
        return nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
    return nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)


class BNInception(nn.Module):
    """BN-Inception feature extractor with the public weight file's parameter names.

    ``forward`` returns the outputs of blocks 3b, 4d and 5b and stops after 5b. Input sizes that
    are multiples of 32 always work; other sizes can give branches of different sizes in the
    stride-2 blocks (as in the original Caffe model).

    Args:
        num_classes: Size of ``last_linear`` (1024 -> num_classes) used by ``forward_head``;
            0 builds no classifier.
    """

    def __init__(self, num_classes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feature_info: list[dict] = []
        self._build_stem()
        in_chs = STEM_CHS
        reduction = 8  # after the stem
        for spec in BLOCKS:
            self._build_block(spec, in_chs)
            in_chs = spec.out_chs(in_chs)
            reduction *= spec.stride
            if spec.name in TAPS:
                info = dict(num_chs=in_chs, reduction=reduction, module=f"inception_{spec.name}")
                self.feature_info.append(info)
        if num_classes > 0:
            self.last_linear = nn.Linear(NUM_FEATURES, num_classes)

    def _add_conv_bn(self, name: str, in_chs: int, out_chs: int, kernel: int, stride: int) -> None:
        conv = nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=kernel // 2)
        self.add_module(name, conv)
        self.add_module(f"{name}_bn", nn.BatchNorm2d(out_chs))

    def _build_stem(self) -> None:
        self._add_conv_bn("conv1_7x7_s2", 3, 64, 7, stride=2)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._add_conv_bn("conv2_3x3_reduce", 64, 64, 1, stride=1)
        self._add_conv_bn("conv2_3x3", 64, STEM_CHS, 3, stride=1)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

    def _build_block(self, spec: BlockSpec, in_chs: int) -> None:
        prefix = f"inception_{spec.name}_"
        for suffix, conv_in, conv_out, kernel, stride in _branch_convs(spec, in_chs):
            self._add_conv_bn(prefix + suffix, conv_in, conv_out, kernel, stride)
        self.add_module(prefix + "pool", _make_pool(spec))
        if spec.pool_proj:
            self._add_conv_bn(prefix + "pool_proj", in_chs, spec.pool_proj, 1, stride=1)

    def _conv_bn_relu(self, name: str, x: Tensor) -> Tensor:
        x = getattr(self, name)(x)
        return F.relu(getattr(self, f"{name}_bn")(x), inplace=True)

    def _stem(self, x: Tensor) -> Tensor:
        x = self.pool1_3x3_s2(self._conv_bn_relu("conv1_7x7_s2", x))
        x = self._conv_bn_relu("conv2_3x3", self._conv_bn_relu("conv2_3x3_reduce", x))
        return self.pool2_3x3_s2(x)

    def _block(self, spec: BlockSpec, x: Tensor) -> Tensor:
        prefix = f"inception_{spec.name}_"

        def unit(suffix: str, inp: Tensor) -> Tensor:
            return self._conv_bn_relu(prefix + suffix, inp)

        branches = [unit("1x1", x)] if spec.n1x1 else []
        branches.append(unit("3x3", unit("3x3_reduce", x)))
        branches.append(unit("double_3x3_2", unit("double_3x3_1", unit("double_3x3_reduce", x))))
        pooled = getattr(self, prefix + "pool")(x)
        branches.append(unit("pool_proj", pooled) if spec.pool_proj else pooled)
        return torch.cat(branches, dim=1)  # [1x1, 3x3, double 3x3, pool]

    def forward(self, x: Tensor) -> list[Tensor]:
        """Returns the feature maps of blocks 3b, 4d and 5b.

        Args:
            x: Images, [B, 3, H, W].

        Returns:
            ``[x3b, x4d, x5b]``: [B, 320, H/8, W/8], [B, 608, H/16, W/16], [B, 1024, H/32, W/32].
        """
        x = self._stem(x)
        taps = []
        for spec in BLOCKS:  # 5b is the last block, so nothing runs after the last tap
            x = self._block(spec, x)
            if spec.name in TAPS:
                taps.append(x)
        return taps

    def forward_head(self, x5b: Tensor) -> Tensor:
        """Global average pooling of 5b, then ``last_linear`` when the model has one.

        Args:
            x5b: Block 5b output, [B, 1024, h, w].

        Returns:
            Logits [B, num_classes], or the pooled features [B, 1024] when ``num_classes == 0``.
        """
        pooled = x5b.mean(dim=(2, 3))  # [B, 1024]
        return self.last_linear(pooled) if self.num_classes > 0 else pooled


def load_bninception_weights(model: BNInception, path: str | os.PathLike) -> None:
    """Loads the public ``bn_inception-52deb4733.pth`` weights (or a file with its keys) strictly.

    The file's ``last_linear`` is dropped when the model has no classifier (a file without one
    also loads then); a model with a classifier needs one of the same size in the file.
    BatchNorm ``num_batches_tracked`` buffers are optional: the public file predates them.

    Args:
        model: Model to load into, in place.
        path: Weight file (a plain state dict).

    Raises:
        ValueError: The file's keys or shapes do not match the model.
    """
    state = read_weight_file(path)
    model.load_state_dict(_match_state(state, model.state_dict(), path), strict=True)


def _match_state(state: dict, expected: dict, path: str | os.PathLike) -> dict:
    """Returns ``state`` reduced to the model's keys, or raises ValueError naming the mismatch."""
    if "last_linear.weight" not in expected:
        state = {k: v for k, v in state.items() if not k.startswith("last_linear.")}
    for key, value in expected.items():
        # Files saved before PyTorch 0.4.1 have no counter; keep the model's, whatever metadata
        # the file carries (BatchNorm only fills it in itself for version-less dicts).
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    found = {"missing": missing, "unexpected": unexpected, "wrong shape": wrong_shape}
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for label, keys in found.items()
        if keys
    ]
    if problems:
        raise ValueError(
            f"{os.fspath(path)} does not match BNInception(num_classes={_num_classes(expected)}): "
            + "; ".join(problems)
        )
    return state


def _num_classes(expected: dict) -> int:
    weight = expected.get("last_linear.weight")
    return 0 if weight is None else weight.shape[0]
