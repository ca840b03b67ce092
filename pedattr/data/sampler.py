"""Batch orders that are a function of (seed, epoch) alone, for exact resume and DDP.

A training run must be reproducible when it is interrupted and resumed, and a run on several
processes must see the same global batches as a run on one. Both follow if the order of the
samples and every sample's augmentation are fixed by (seed, epoch) rather than by a random state
that evolves while the loader runs: :class:`SeededBatchSampler` draws the epoch's permutation
from ``(seed, epoch)``, hands each rank its slice of every global batch, can start at any step,
and pairs every sample with its own augmentation seed, which
:class:`pedattr.data.dataset.AttributeDataset` uses instead of a per-worker generator.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

#: A dataset key: (position in the split, seed of this sample's augmentations).
SeededKey = tuple[int, int]


class SeededBatchSampler(Sampler[list[SeededKey]]):
    """Shuffled global batches, this rank's share of each, from a chosen step on.

    Args:
        num_samples: size of the split.
        batch_size: the *global* batch size; each of ``world_size`` ranks gets an equal slice.
        seed: fixes every epoch's order and the samples' augmentation seeds.
        rank: this process's rank.
        world_size: number of processes.

    The last incomplete global batch is dropped (a batch of one breaks batch norm), unless the
    split holds fewer samples than one batch, in which case it is a single batch.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(
                f"the global batch size {batch_size} does not divide among {world_size} processes"
            )
        if num_samples < world_size:
            raise ValueError(f"{num_samples} samples cannot feed {world_size} processes")
        self.num_samples = num_samples
        self.batch_size = min(batch_size, num_samples - num_samples % world_size)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Iterate over ``epoch``'s batches, skipping the first ``start_step`` (resume)."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step} outside 0..{self.steps_per_epoch}")
        self.epoch = epoch
        self.start_step = start_step

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(permutation of positions, augmentation seed per position) of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.num_samples)
        item_seeds = rng.integers(0, 2**62, size=self.num_samples)
        return order, item_seeds

    def __iter__(self) -> Iterator[list[SeededKey]]:
        order, item_seeds = self.epoch_order(self.epoch)
        share = self.batch_size // self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            first = step * self.batch_size + self.rank * share
            positions = order[first : first + share]
            yield [(int(p), int(item_seeds[p])) for p in positions]

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th position from ``rank`` on: one rank's share of an evaluation."""

    def __init__(self, num_samples: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.positions = range(rank, num_samples, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)
