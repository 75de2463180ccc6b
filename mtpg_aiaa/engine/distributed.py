"""Multi-process runs on PyTorch's own engine: torchrun, or SLURM through submitit.

The process group is always built from the environment that the launcher exports
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): torchrun
sets it; under submitit, ``submitit.helpers.TorchDistributedEnvironment`` derives it from
SLURM's. Nothing here launches processes. Every helper is a no-op in a single process,
so the same code runs with and without ``torchrun``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def export_submitit_environment() -> bool:
    """Under a multi-task submitit job, export torchrun's variables from SLURM's; True if it did."""
    if "SUBMITIT_EXECUTOR" not in os.environ or "RANK" in os.environ:
        return False
    import submitit

    environment = submitit.JobEnvironment()
    if environment.num_tasks <= 1:
        return False
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


def init_distributed(device: torch.device, timeout_minutes: float = 30.0) -> tuple[DistributedContext, torch.device]:
    """Join the process group described by the environment, if there is one.

    Returns the context and this process's device: ``cuda:LOCAL_RANK`` when ``device`` is
    CUDA and several processes share a node. NCCL on CUDA, gloo on CPU. A process that
    torchrun started joins a group even alone (``--nproc_per_node=1``), so one GPU runs the
    same DistributedDataParallel path as many; a plain ``python train.py`` joins none.
    """
    export_submitit_environment()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:  # torchrun sets it in every process
        return DistributedContext(), device
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set: start multi-process runs with "
            "torchrun (or SLURM through hydra/launcher=slurm), which export them"
        )
    context = DistributedContext(int(os.environ["RANK"]), world_size, int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, init_method="env://", timeout=timedelta(minutes=timeout_minutes), **kwargs)
        log.info("rank %d/%d (local %d) joined the %s process group", context.rank, world_size,
                 context.local_rank, backend)  # fmt: skip
    return context, device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> DistributedContext:
    """The context of the initialised process group (single process when there is none)."""
    if not dist.is_initialized():
        return DistributedContext()
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(value, src: int = 0):
    """Rank ``src``'s ``value`` on every rank."""
    if not dist.is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_objects(value) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if not dist.is_initialized():
        return [value]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on at least one (one tiny all-reduce)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, keeping gradients to the local part.

    A loss over the gathered batch is the same number on every rank; autograd sends each
    rank ``world_size`` times its share of the gradient and DDP's averaging divides it
    back, so the step equals one process running the whole global batch. Tensors without
    gradients (targets, masks) are gathered plainly. Every rank must pass the same shape
    except along dim 0.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    all_sizes = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(all_sizes, size)
    sizes = [int(s.item()) for s in all_sizes]
    is_bool = tensor.dtype == torch.bool
    local = tensor.to(torch.uint8) if is_bool else tensor  # gloo has no bool collectives
    # Uneven local batches (images skipped as unreadable): pad to the largest, then cut.
    if len(set(sizes)) > 1:
        local = torch.cat([local, local.new_zeros((max(sizes) - local.shape[0], *local.shape[1:]))], dim=0)
    if local.requires_grad:
        parts = list(dist_nn.all_gather(local))
    else:
        parts = [torch.empty_like(local) for _ in sizes]
        dist.all_gather(parts, local.contiguous())
    gathered = torch.cat([part[:size] for part, size in zip(parts, sizes)], dim=0)
    return gathered.bool() if is_bool else gathered


def shard_batches(num_samples: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """Whole consecutive batches of ``batch_size`` (in input order), dealt round-robin to ranks.

    Rank ``r`` gets batches ``r, r + world_size, ...``; the union over ranks is exactly the
    single-process batching, so batch-dependent models (``fusion=official``) give the same
    numbers on any number of processes.
    """
    batches = [list(range(start, min(start + batch_size, num_samples))) for start in range(0, num_samples, batch_size)]
    return batches[rank::world_size]

