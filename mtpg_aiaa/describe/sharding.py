"""Which images this process describes when several processes (GPUs, jobs) share a list.

The shard comes from the config (``rank``/``world_size``) or from what the launcher
exports: torchrun (``RANK``/``WORLD_SIZE``), a SLURM job array
(``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT``) or
``srun`` tasks (``SLURM_PROCID``/``SLURM_NTASKS``). No process group is needed: shards
only meet in the output's part files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from mtpg_aiaa.errors import SettingError

SHARD_MODES = ("strided", "contiguous")

# (rank variable, world-size variable, offset variable) per launcher, first match wins.
_LAUNCHER_VARIABLES = (
    ("RANK", "WORLD_SIZE", None),
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),
    ("SLURM_PROCID", "SLURM_NTASKS", None),
)


@dataclass(frozen=True)
class Shard:
    rank: int
    world_size: int

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise SettingError(f"need 0 <= rank < world_size, got rank={self.rank}, world_size={self.world_size}")

    @property
    def name(self) -> str:
        return f"rank{self.rank:05d}-of{self.world_size:05d}"


def resolve_shard(
    rank: Optional[int] = None, world_size: Optional[int] = None, env: Mapping[str, str] = os.environ
) -> Shard:
    """Explicit values win; otherwise the first launcher whose variables are set; else 0 of 1."""
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise SettingError("set both rank and world_size, or neither")
        return Shard(int(rank), int(world_size))
    for rank_var, size_var, offset_var in _LAUNCHER_VARIABLES:
        if rank_var in env and size_var in env:
            offset = int(env.get(offset_var, 0)) if offset_var else 0
            return Shard(int(env[rank_var]) - offset, int(env[size_var]))
    return Shard(0, 1)


def local_device_index(env: Mapping[str, str] = os.environ) -> Optional[int]:
    """The GPU index a launcher assigned to this process (torchrun / srun), if any."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        if name in env:
            return int(env[name])
    return None


def shard_positions(num_items: int, shard: Shard, mode: str = "strided") -> list[int]:
    """Positions ``0..num_items-1`` this shard owns; the shards partition the range.

    ``strided`` (position ``i`` goes to rank ``i % world_size``) balances slow regions of
    a list across ranks; ``contiguous`` gives each rank one block.
    """
    if mode == "strided":
        return list(range(shard.rank, num_items, shard.world_size))
    if mode == "contiguous":
        base, extra = divmod(num_items, shard.world_size)
        start = shard.rank * base + min(shard.rank, extra)
        return list(range(start, start + base + (shard.rank < extra)))
    raise SettingError(f"shard mode must be one of {SHARD_MODES}, got {mode!r}")
