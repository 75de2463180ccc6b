"""Reproducible randomness that does not depend on workers, ranks or where a run resumed."""
from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


class PerSampleSeeded(Dataset):
    """Runs ``dataset[index]`` under torch/NumPy/Python RNG states seeded by
    ``(seed, epoch, index)``, so random augmentations of a sample are the same whichever
    worker loads it and whether or not the run was resumed in between."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        # Mixed into 63 bits: distinct for every (seed, epoch, index) a run can reach.
        sample_seed = ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % (2**63 - 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            state_py, state_np = random.getstate(), np.random.get_state()
            random.seed(sample_seed)
            np.random.seed(sample_seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(state_py)
                np.random.set_state(state_np)

    def __getattr__(self, name: str):
        # Only reached for attributes this wrapper lacks: defer to the wrapped dataset.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
