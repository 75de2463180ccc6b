"""A split of cached features held on the training device, batched with one gather per feature.

``CachedFeatureDataset`` reads one safetensors file per sample and ``collate_features``
stacks the samples in Python: fine on a CPU, but on a GPU a stage-2 epoch over BAID's
50,737 training images then costs 50,737 file reads and as many small host-to-device
copies, every epoch. ``DeviceFeatureTable`` reads every distinct entry once, stacks each
feature into one ``[E, ...]`` tensor on the device and serves a batch of rows with one
index tensor (``__getitems__``, which ``DataLoader`` calls with the batch's indices), so an
epoch has no per-sample Python and no per-sample copy. Only fixed-size features qualify
(``fusion=official`` and ``none``: ``image [D]``, ``text [D]``); per-token features of
``fusion=token`` vary in length and stay on the file-per-sample path.

This module is model-side: it never imports the training engine.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch.utils.data import Dataset

from .feature_cache import TEXT_TOKENS_KEY, CachedFeatureDataset, read_entry


def fits_on_device(dataset: CachedFeatureDataset) -> bool:
    """Whether ``dataset``'s features have a fixed size per sample (no per-token features)."""
    return TEXT_TOKENS_KEY not in dataset.names


class DeviceFeatureTable(Dataset):
    """The rows of a ``CachedFeatureDataset``, with its features stacked on ``device``.

    ``self[i]`` is the sample ``CachedFeatureDataset`` gives (features as device tensors);
    ``self.__getitems__(indices)`` the batch ``collate_features`` gives for those samples:
    ``features {name: [B, ...]}`` and ``target [B]`` on the device, ``score`` float64
    ``[B]``, ``index [B]`` (source rows), ``image_name`` list, ``skipped`` empty.
    A ``DataLoader`` over it must use ``num_workers=0`` and no pinning (``on_device``).
    """

    on_device = True

    def __init__(self, features: dict[str, torch.Tensor], entry_of_row: torch.Tensor, targets: torch.Tensor,
                 scores: torch.Tensor, source_rows: torch.Tensor, image_names: list[str]):  # fmt: skip
        self.features = features  # name -> [E, ...] on the device, one row per distinct entry
        self.entry_of_row = entry_of_row  # [N] long, device: the entry of each dataset row
        self.targets = targets  # [N] float32, device
        self.scores, self.source_rows, self.image_names = scores, source_rows, image_names  # CPU
        self.device = targets.device

    @classmethod
    def from_dataset(cls, dataset: CachedFeatureDataset, device: torch.device, threads: int = 8) -> "DeviceFeatureTable":
        """Read every distinct entry of ``dataset`` once (``threads`` at a time) onto ``device``."""
        if not fits_on_device(dataset):
            raise ValueError(f"per-token features ({TEXT_TOKENS_KEY}) vary in length; keep the file-per-sample path")
        paths = sorted(set(dataset.paths))
        entry = {path: i for i, path in enumerate(paths)}
        with ThreadPoolExecutor(max_workers=threads) as pool:
            entries = list(pool.map(lambda path: read_entry(path, dataset.names, dataset.key_dir), paths))
        features = {name: torch.stack([values[name] for values in entries]).to(device) for name in dataset.names}
        rows = dataset.source_rows
        return cls(
            features,
            torch.tensor([entry[path] for path in dataset.paths], dtype=torch.long).to(device),
            torch.tensor([float(dataset.targets[row]) for row in rows], dtype=torch.float32).to(device),
            torch.tensor([float(dataset.scores[row]) for row in rows], dtype=torch.float64),
            torch.tensor(rows, dtype=torch.long),
            [dataset.image_names[row] for row in rows],
        )

    def __len__(self) -> int:
        return len(self.image_names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entry_of_row[index]
        return {"features": {name: value[entry] for name, value in self.features.items()},
                "target": self.targets[index], "score": float(self.scores[index]),
                "image_name": self.image_names[index], "index": int(self.source_rows[index])}  # fmt: skip

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        cpu_rows = torch.as_tensor(indices, dtype=torch.long)
        rows = cpu_rows
        if self.device.type == "cuda":  # pinned (PyTorch's caching host allocator), so the copy does not wait
            rows = cpu_rows.pin_memory().to(self.device, non_blocking=True)
        entries = self.entry_of_row[rows]
        return {
            "features": {name: value[entries] for name, value in self.features.items()},
            "target": self.targets[rows], "score": self.scores[cpu_rows], "index": self.source_rows[cpu_rows],
            "image_name": [self.image_names[i] for i in indices], "skipped": [],
        }  # fmt: skip


def collate_table_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """``DataLoader``'s collate for ``DeviceFeatureTable``: ``__getitems__`` already made the batch."""
    return batch
