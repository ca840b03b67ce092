"""`pedattr convert`: the authors' released checkpoints load and reproduce their logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import pedattr
from pedattr.checkpoint.convert import (
    PA100K_ATTRIBUTES,
    authors_state_dict_to_pedattr,
    convert_authors_checkpoint,
)
from pedattr.checkpoint.format import load_checkpoint
from pedattr.cli import main
from pedattr.data.annotations import read_names_file
from tests.authors_model import AuthorsALM, save_authors_file

NUM_ATTRS = 4
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
TOLERANCE = 1e-4


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Random BN affine parameters and realistic, then randomly jittered, BN statistics.

    Convs and linears keep PyTorch's random default init. That init shrinks activations layer
    after layer, so BN statistics are first measured on random images (momentum 1 keeps one
    batch's), then jittered relative to their own scale: the backbone then produces O(1)
    features that vary with the image, which a meaningful comparison needs. Larger jitter makes
    the network amplify float32 rounding (1e-7 relative) into logit noise near the tolerance.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "_bn." in name:  # BN affine: around the identity
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.1 * torch.randn(param.shape, generator=generator))
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for norm in norms:
            norm.momentum = 1.0
        model.train()
        images = torch.rand(2, 3, 256, 128, generator=generator)
        model.main_branch((images - IMAGENET_MEAN) / IMAGENET_STD)
        model.eval()
        for norm in norms:
            norm.momentum = 0.1
            noise = torch.randn(norm.num_features, generator=generator)
            norm.running_mean.add_(0.1 * noise * norm.running_var.sqrt())
            scale = 0.8 + 0.45 * torch.rand(norm.num_features, generator=generator)
            norm.running_var.mul_(scale)
            norm.num_batches_tracked.fill_(1234)


@pytest.fixture(scope="module")
def authors() -> AuthorsALM:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = AuthorsALM(NUM_ATTRS)
    randomise(model, generator)
    return model.eval()


@pytest.fixture(scope="module")
def authors_file(authors: AuthorsALM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("authors") / "x.pth.tar"
    save_authors_file(path, authors.state_dict(), legacy=True)
    return path


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.rand(2, 3, 256, 128, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def authors_logits(authors: AuthorsALM, images: Tensor) -> tuple[Tensor, ...]:
    return run_authors(authors, images)


def run_authors(model: AuthorsALM, images: Tensor) -> tuple[Tensor, ...]:
    """The authors' four branch logits; their pipeline normalises outside the model."""
    with torch.no_grad():
        logits = model((images - IMAGENET_MEAN) / IMAGENET_STD)
    # Not a vacuous comparison: logits depend on the image.
    assert (logits[0][0] - logits[0][1]).abs().max() > 1e-2
    return logits


def max_differences(
    expected: tuple[Tensor, ...], converted: nn.Module, images: Tensor
) -> list[float]:
    """Max |difference| of the 3b, 4d, 5b and global logits, then of the max-fused logits."""
    with torch.no_grad():
        out = converted(images)  # RGB in [0, 1]: ours normalises inside
    diffs = [
        (ours - theirs).abs().max().item()
        for ours, theirs in zip(out.branch_logits, expected, strict=True)
    ]
    fused = torch.stack(expected).amax(0)
    return [*diffs, (out.logits - fused).abs().max().item()]


@pytest.mark.slow
def test_converted_model_reproduces_authors_logits(authors_logits, authors_file, images, tmp_path):
    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(authors_file), "--out", str(out)]) == 0

    model = pedattr.load_model(out)
    config = model.config
    assert (config.align_corners, config.padding_mode, config.box_pooling) == (
        True,
        "border",
        "avg",
    )
    assert (config.upsample, config.normalization) == ("bilinear", "imagenet")
    assert config.attribute_names == tuple(f"attr_{i:02d}" for i in range(NUM_ATTRS))
    assert load_checkpoint(out).extra == {
        "converted_from": "x.pth.tar",
        "source_format": "authors-alm",
        "epoch": 8,
        "best_accu": 0.8,
    }
    diffs = max_differences(authors_logits, model, images)
    print("max |ours - authors'| (3b, 4d, 5b, global, fused):", diffs)
    assert len(diffs) == 5 and max(diffs) < TOLERANCE, diffs


@pytest.mark.slow
def test_modern_sampling_matches_align_corners_false(
    authors, authors_logits, authors_file, images, tmp_path
):
    out = tmp_path / "modern.safetensors"
    assert main(["convert", str(authors_file), "--out", str(out), "--modern-sampling"]) == 0
    model = pedattr.load_model(out)
    assert model.config.align_corners is False

    modern = AuthorsALM(NUM_ATTRS, align_corners=False)
    modern.load_state_dict(authors.state_dict())
    modern_logits = run_authors(modern.eval(), images)
    diffs = max_differences(modern_logits, model, images)
    print("max |ours - authors'| with align_corners=False:", diffs)
    assert max(diffs) < TOLERANCE, diffs
    # The sampling convention matters, so the two conversions are genuinely different models.
    change = max(
        (a - b).abs().max().item()
        for a, b in zip(modern_logits[:3], authors_logits[:3], strict=True)
    )
    assert change > 100 * TOLERANCE


def write_marker(path: str) -> None:
    Path(path).write_text("pickled code ran")


class Payload:
    """An object whose unpickling runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return write_marker, (str(self.marker),)


def test_file_with_pickled_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "marker.txt"
    source = tmp_path / "evil.pth.tar"
    torch.save(
        {"state_dict": {"finalfc.weight": torch.zeros(2, 1024)}, "x": Payload(marker)}, source
    )

    assert main(["convert", str(source), "--out", str(tmp_path / "out.safetensors")]) == 2
    error = capsys.readouterr().err
    assert "evil.pth.tar" in error and "will not be unpickled" in error
    assert "write_marker" in error
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()
    # The payload is live: an unrestricted load would have run it.
    torch.load(source, weights_only=False)
    assert marker.exists()


@pytest.mark.slow
def test_bare_state_dict_without_prefix_gets_pa100k_names(tmp_path):
    torch.manual_seed(2)
    authors = AuthorsALM(len(PA100K_ATTRIBUTES))
    state = {k: v for k, v in authors.state_dict().items() if "num_batches_tracked" not in k}
    source = tmp_path / "bare.pth"
    torch.save(state, source)

    out = tmp_path / "pa100k.safetensors"
    checkpoint = convert_authors_checkpoint(source, out)
    assert checkpoint.config.attribute_names == PA100K_ATTRIBUTES
    assert checkpoint.extra == {"converted_from": "bare.pth", "source_format": "authors-alm"}
    model = pedattr.load_model(out)  # strict: created num_batches_tracked included
    assert model.config.attribute_names == PA100K_ATTRIBUTES
    torch.testing.assert_close(model.alms[2].cls_weight[5], state["st_5b.fc_list.5.weight"][0])
    torch.testing.assert_close(
        model.alms[0].se_expand_weight[25], state["st_3b.att_list.25.conv2.weight"][..., 0, 0]
    )
    torch.testing.assert_close(model.pyramid.laterals[1].bias, state["latlayer_4d.bias"])
    torch.testing.assert_close(
        model.backbone.inception_4e_3x3_bn.running_var,
        state["main_branch.inception_4e_3x3_bn.running_var"],
    )


@pytest.mark.slow
def test_missing_key_is_named_with_the_file(authors, tmp_path):
    state = dict(authors.state_dict())
    del state["st_4d.stn_list.2.bias"]
    source = tmp_path / "broken.pth.tar"
    save_authors_file(source, state, legacy=False)
    with pytest.raises(
        ValueError, match=r"broken\.pth\.tar.*missing keys.*st_4d\.stn_list\.2\.bias"
    ):
        convert_authors_checkpoint(source, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.slow
def test_wrong_shape_and_unexpected_keys_are_named(authors):
    state = dict(authors.state_dict())
    state["latlayer_3b.weight"] = torch.zeros(256, 320)
    with pytest.raises(ValueError, match=r"wrong shapes.*latlayer_3b\.weight \(256, 320\)"):
        authors_state_dict_to_pedattr(state)

    state = dict(authors.state_dict())
    extra = f"st_3b.fc_list.{NUM_ATTRS}.weight"  # one more attribute than finalfc has
    state[extra] = torch.zeros(1, 768)
    with pytest.raises(ValueError, match=rf"unexpected keys.*{extra}"):
        authors_state_dict_to_pedattr(state)


def test_attribute_names_file(authors_file, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("a\n\nb\nc\n")
    assert read_names_file(names) == ["a", "b", "c"]
    assert main(["convert", str(authors_file), "--out", str(tmp_path / "o.safetensors"),
                 "--attribute-names", str(names)]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert f"{NUM_ATTRS} attributes" in error and "3 attribute names" in error

    names.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match=r"names\.txt: duplicate attribute names: a"):
        read_names_file(names)
    names.write_text("\n \n")
    with pytest.raises(ValueError, match=r"names\.txt: no attribute names"):
        read_names_file(names)
