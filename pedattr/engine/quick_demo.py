"""A short ALM training on generated pedestrians: the smallest end-to-end run of pedattr.

It generates a seeded synthetic set in memory, trains an ALM model from scratch with deep
supervision and the weighted loss, evaluates on held-out images with the paper's metrics and
writes a checkpoint and a JSON report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pedattr._io import atomic_write_text
from pedattr.data.dataset import HorizontalFlip
from pedattr.data.synthetic import ATTRIBUTES, generate_arrays
from pedattr.engine.checkpoint import json_safe, save_checkpoint
from pedattr.engine.loss import WeightedBCELoss, positive_ratio
from pedattr.engine.trainer import predict_probabilities, train_epoch
from pedattr.metrics import compute_metrics, format_metrics_table
from pedattr.models.model import build_model


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 [N, 3, H, W]
    return x, torch.from_numpy(labels).float()


def _batches(
    images: Tensor, labels: Tensor, batch_size: int, *, train: bool, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    order = torch.randperm(len(images), generator=generator) if train else torch.arange(len(images))
    flip = HorizontalFlip()  # the input pipeline's training augmentation
    for start in range(0, len(images), batch_size):
        index = order[start : start + batch_size]
        batch = images[index]
        if train:
            batch = torch.stack([flip(image, generator) for image in batch])
        yield batch, labels[index]


def run_quick_demo(
    out_dir: str | Path,
    *,
    num_train: int = 1600,
    num_test: int = 400,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    backbone: str = "bninception",
    input_size: tuple[int, int] = (128, 64),
    seed: int = 0,
) -> dict:
    """Train and evaluate ALM on generated data; returns the report written to ``out_dir``."""
    out_dir = Path(out_dir)
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    height, width = input_size
    print(f"generating {num_train} training and {num_test} test images ({height}x{width})")
    x_train, y_train = _to_tensors(
        *generate_arrays(num_train, seed=seed, height=height, width=width)
    )
    x_test, y_test = _to_tensors(
        *generate_arrays(num_test, seed=seed + 1, height=height, width=width)
    )

    model = build_model("alm", backbone=backbone, attribute_names=ATTRIBUTES, input_size=input_size)
    criterion = WeightedBCELoss(positive_ratio(y_train))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=5e-4)
    for epoch in range(1, epochs + 1):
        batches = _batches(x_train, y_train, batch_size, train=True, generator=generator)
        loss = train_epoch(model, batches, optimizer, criterion, description=f"epoch {epoch}")
        print(f"epoch {epoch}/{epochs}: loss {loss:.4f}")

    test_batches = _batches(x_test, y_test, 2 * batch_size, train=False, generator=generator)
    labels, probs = predict_probabilities(model, test_batches)
    metrics = compute_metrics(labels, probs)
    print(format_metrics_table(metrics, ATTRIBUTES))

    save_checkpoint(out_dir / "model.safetensors", model, metrics=json_safe(metrics))
    report = {
        "backbone": backbone,
        "input_size": list(input_size),
        "num_train": num_train,
        "num_test": num_test,
        "epochs": epochs,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
        "metrics": json_safe(metrics),
    }
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
    print(
        f"wrote {out_dir / 'model.safetensors'} and {out_dir / 'report.json'} "
        f"in {report['seconds']} s"
    )
    return report
