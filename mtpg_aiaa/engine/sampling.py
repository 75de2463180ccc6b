"""Data order that a resumed run reproduces exactly, and that shards over DDP ranks."""
from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """PyTorch's ``DistributedSampler`` (a permutation seeded by ``seed + epoch``, padded by
    wrapping and dealt ``rank::world_size``) that can start part-way through an epoch.

    ``set_epoch(epoch, skip=k)`` makes the next iteration yield the epoch's order minus
    its first ``k`` samples (of this rank), which is how ``resume`` continues mid-epoch
    without loading the images it already trained on. With one process it is a seeded
    shuffle; the rank and world size are given, so no process group is needed.
    """

    def __init__(self, dataset: Sized, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if len(dataset) == 0:
            raise ValueError("cannot sample from an empty dataset")
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    @property
    def per_rank(self) -> int:
        """Samples each rank sees per epoch (``DistributedSampler.num_samples``)."""
        return self.num_samples

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def epoch_indices(self) -> list[int]:
        """This rank's whole order for the current epoch."""
        return list(super().__iter__())

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip
