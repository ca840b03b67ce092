"""Small prepared datasets and models that engine, evaluation and inference tests share."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from pedattr.data.annotations import RawAnnotations
from pedattr.data.description import write_description

#: Attributes of :func:`make_prepared_dataset`; each one is visible in the image.
LEARNABLE_ATTRIBUTES = ("TopPatch", "BottomPatch", "Reddish")
#: Keyword arguments of ``pedattr.build_model`` for a fast model with batch norm.
TINY_MODEL = dict(backbone="timm:test_efficientnet", input_size=(64, 32), pyramid_dim=16)


def save_tiny_checkpoint(path: Path, *, seed: int = 0, **save_options) -> Path:
    """A checkpoint of a tiny ALM (:data:`TINY_MODEL`) over :data:`LEARNABLE_ATTRIBUTES`."""
    from pedattr import build_model, save_checkpoint

    torch.manual_seed(seed)
    model = build_model("alm", attribute_names=list(LEARNABLE_ATTRIBUTES), **TINY_MODEL).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, **save_options)
    return path


def learnable_image(labels: np.ndarray, rng: np.random.Generator, size=(64, 32)) -> Image.Image:
    """Noise with a bright patch in the top half, the bottom half and a red tint per label."""
    height, width = size
    pixels = rng.integers(0, 120, (height, width, 3)).astype(np.uint8)
    half = height // 2
    if labels[0] == 1:
        y = int(rng.integers(0, half - 8))
        x = int(rng.integers(0, width - 8))
        pixels[y : y + 8, x : x + 8] = 250
    if labels[1] == 1:
        y = int(rng.integers(half, height - 8))
        x = int(rng.integers(0, width - 8))
        pixels[y : y + 8, x : x + 8] = 250
    if labels[2] == 1:
        pixels[..., 0] = np.clip(pixels[..., 0].astype(int) + 110, 0, 255)
    return Image.fromarray(pixels)


def make_prepared_dataset(
    root: Path,
    splits: dict[str, int] | None = None,
    *,
    seed: int = 0,
    size: tuple[int, int] = (64, 32),
) -> Path:
    """Write images and a ``pedattr prepare`` folder at ``root/data``; returns that folder.

    ``splits`` maps split name to sample count (default 48 train, 16 val, 16 test). Every
    split holds positives and negatives of every attribute.
    """
    splits = splits or {"train": 48, "val": 16, "test": 16}
    rng = np.random.default_rng(seed)
    image_root = root / "images"
    image_root.mkdir(parents=True, exist_ok=True)
    names, labels, split_names = [], [], []
    for split, count in splits.items():
        rows = (rng.random((count, len(LEARNABLE_ATTRIBUTES))) < 0.4).astype(np.uint8)
        rows[0], rows[1] = 1, 0  # both classes of every attribute in every split
        for row in rows:
            name = f"{len(names):05d}.png"
            learnable_image(row, rng, size).save(image_root / name)
            names.append(name)
            labels.append(row)
            split_names.append(split)
    raw = RawAnnotations(
        attribute_names=list(LEARNABLE_ATTRIBUTES),
        image_names=names,
        labels=np.stack(labels),
        splits=split_names,
        image_root=image_root,
    )
    write_description(raw, root / "data")
    return root / "data"


def forward_with_activation_maps(model, images: torch.Tensor) -> tuple[object, list[np.ndarray]]:
    """Run ``model`` on ``images`` without gradients; its output and each ALM level's
    activation maps ([B, M, h, w] arrays), from the input every ALM received."""
    inputs = []
    handles = [
        alm.register_forward_pre_hook(lambda _, args: inputs.append(args[0])) for alm in model.alms
    ]
    try:
        with torch.no_grad():
            output = model(images)
            levels = zip(model.alms, inputs, strict=True)
            maps = [alm.activation_map(x).numpy() for alm, x in levels]
    finally:
        for handle in handles:
            handle.remove()
    return output, maps


def tiny_config(tmp_path: Path, data_root: Path, **sections: dict) -> Path:
    """A config file for a tiny run of 2 epochs x 6 steps on the CPU."""
    config = {
        "model": {
            "backbone": TINY_MODEL["backbone"],
            "input_size": list(TINY_MODEL["input_size"]),
            "pyramid_dim": TINY_MODEL["pyramid_dim"],
        },
        "data": {"root": str(data_root), "workers": 0},
        "optim": {"lr": 1e-3, "batch_size": 8, "epochs": 2, "lr_step": 1},
        "run": {"out": str(tmp_path / "run"), "device": "cpu"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def assert_json_close(
    found: object, expected: object, *, rel: float, abs_: float, where: str = ""
) -> None:
    """``found`` has ``expected``'s JSON structure (keys in order, lengths, types) and values;
    floats within ``rel`` relative or ``abs_`` absolute difference. ``where`` names the place
    of a difference in the assertion message."""
    if isinstance(expected, float) and isinstance(found, float):
        assert math.isclose(found, expected, rel_tol=rel, abs_tol=abs_), where
        return
    assert type(found) is type(expected), f"{where}: {type(found)} != {type(expected)}"
    if isinstance(expected, dict):
        assert list(found) == list(expected), where
        for key in expected:
            assert_json_close(found[key], expected[key], rel=rel, abs_=abs_, where=f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(found) == len(expected), where
        for index, (a, b) in enumerate(zip(found, expected, strict=True)):
            assert_json_close(a, b, rel=rel, abs_=abs_, where=f"{where}[{index}]")
    else:
        assert found == expected, where


def hub_snapshot(cache: Path, repo_id: str, ref: str = "main") -> Path:
    """The snapshot folder of ``repo_id`` in a Hugging Face Hub cache at ``cache``, laid out as
    huggingface_hub lays out what it downloads (``refs/REF`` naming a commit whose files are in
    ``snapshots/COMMIT/``), so that its offline mode finds whatever is put there."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(f"{repo_id}@{ref}".encode()).hexdigest()
    (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def write_plain_onnx(path: Path) -> Path:
    """An ONNX model without pedattr's metadata: a single Identity node."""
    import onnx

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "plain",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), str(path))
    return path


# --- a running `pedattr serve` ----------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on this machine now (LitServe binds only 1024..65535)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_in_a_terminal() -> None:
    """In the child, before it runs: SIGINT as in a terminal's foreground job (a test runner
    started in the background inherits it ignored)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_server(
    checkpoint: Path, *options: str, wait: float = 180.0, own_group: bool = False
) -> tuple[object, str]:
    """``pedattr serve`` in a subprocess on a free port, once ``/health`` answers 200:
    (the process, its base URL). The process's output goes to a file beside the checkpoint,
    shown if it fails to start. ``own_group``: in a process group of its own, with SIGINT as
    in a terminal, so that a test can press Ctrl-C (signal the whole group)."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "pedattr", "serve", "--checkpoint", str(checkpoint)]
    command += ["--port", str(port), "--device", "cpu", *options]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    log = checkpoint.with_name(f"serve-{port}.log")
    with open(log, "w") as out:
        group = {"start_new_session": True, "preexec_fn": _as_in_a_terminal} if own_group else {}
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, **group)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"pedattr serve exited with {process.returncode}:\n{log.read_text()}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return process, url
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(process)
    raise RuntimeError(f"pedattr serve did not become healthy in {wait} s:\n{log.read_text()}")


def stop_server(process) -> int:
    """SIGTERM, as a service manager stops it; its exit status."""
    import signal
    import subprocess

    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def tree_rss(pid: int) -> int:
    """Resident memory in bytes of a process and all its descendants."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for member in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a process that ended meanwhile
            total += member.memory_info().rss
    return total
