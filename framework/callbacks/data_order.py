"""EpochSeededShuffle: a shuffled training order that is a function of (seed, epoch) only, so a resumed run replays it.

A DataLoader with `shuffle=True` draws each epoch's permutation from one generator (or the
global RNG) that keeps advancing; a run resumed from a checkpoint starts that generator
afresh and sees epoch k in epoch 0's order. Lightning calls `on_train_epoch_start` before the
epoch's first batch is drawn (the sampler draws lazily), so re-seeding the RandomSampler's
generator there makes the order of epoch k the same whether the run was interrupted or not.
Under DDP Lightning's DistributedSampler already shuffles by (seed, epoch); this then does nothing.
Limitation: with `num_workers > 0` the loader may prefetch indices before the hook; keep 0 workers
for exact resumption (the default here).
"""

from __future__ import annotations

from typing import Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, RandomSampler


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of one epoch's permutation."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


def _loaders(obj) -> Iterable[DataLoader]:
    if isinstance(obj, DataLoader):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _loaders(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _loaders(v)


class EpochSeededShuffle(Callback):
    """Re-seed every shuffling training loader's RandomSampler by (seed, epoch) at the start of each epoch."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = int(seed)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reseed(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reseed(trainer)

    def reseed(self, trainer: L.Trainer) -> None:
        """Seed the shuffling generators for the epoch about to be drawn."""
        for loader in _loaders(trainer.train_dataloader):
            sampler = loader.sampler
            if isinstance(sampler, RandomSampler):
                # a generator of its own: the DataLoader draws its workers' base seed from the generator it
                # was given whenever an iterator is created, which must not shift the permutation
                sampler.generator = torch.Generator().manual_seed(epoch_seed(self.seed, trainer.current_epoch))
