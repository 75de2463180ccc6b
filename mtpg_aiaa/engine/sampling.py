"""Data order that a resumed run reproduces exactly, and that shards over DDP ranks."""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """A per-epoch permutation seeded by ``(seed, epoch)``, sharded like ``DistributedSampler``,
    that can start part-way through an epoch.

    ``set_epoch(epoch, skip=k)`` makes the next iteration yield the epoch's order minus
    its first ``k`` samples (of this rank), which is how ``resume`` continues mid-epoch
    without loading the images it already trained on.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if num_samples <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.per_rank = math.ceil(num_samples / world_size)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def epoch_indices(self) -> list[int]:
        """This rank's whole order for the current epoch (padded by wrapping, as DDP does)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.world_size
        order += order[: total - len(order)]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip
