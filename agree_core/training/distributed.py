"""Data-parallel training across processes (``torchrun``): in-batch negatives gathered from
every rank, gradients averaged once per optimizer step.

Gradients are averaged with one ``all_reduce`` per trained tensor after the last
micro-batch of a step instead of wrapping the model in ``DistributedDataParallel``: each step
runs the model twice (queries, pages) before one backward, which DDP's reducer does not
expect, and LoRA's trained tensors are small enough that overlapping their reduction with
the backward pass would gain little.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "init", "gather_with_grad", "average_gradients", "broadcast_parameters",
           "max_difference_from_rank0"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device: str | None) -> tuple[World, torch.device]:
    """Join the process group when started by ``torchrun`` (NCCL on GPUs, gloo on CPUs) and
    pick this process's device (``cuda:LOCAL_RANK``)."""
    size = int(os.environ.get("WORLD_SIZE", 1))
    rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    if device in (None, "auto"):
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    where = torch.device(device)
    if size > 1 and not dist.is_initialized():
        if where.type == "cuda":
            torch.cuda.set_device(where)
        dist.init_process_group("nccl" if where.type == "cuda" else "gloo")
    return World(rank, size, local), where


def gather_with_grad(tensor: torch.Tensor, pad_dim: int | None = None, pad_value: float = 0) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0; gradients flow back to each rank's
    own slice. ``pad_dim``: a dimension whose size may differ between ranks (sequence length),
    padded with ``pad_value`` to the largest first."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    if pad_dim is not None:
        size = torch.tensor([tensor.shape[pad_dim]], device=tensor.device)
        dist.all_reduce(size, op=dist.ReduceOp.MAX)
        missing = int(size) - tensor.shape[pad_dim]
        if missing:
            shape = list(tensor.shape)
            shape[pad_dim] = missing
            tensor = torch.cat([tensor, tensor.new_full(shape, pad_value)], dim=pad_dim)
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over all ranks (in place)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    size = dist.get_world_size()
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= size


def broadcast_parameters(parameters: list[torch.nn.Parameter]) -> None:
    """Start every rank from rank 0's trained tensors (LoRA's random init included)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for p in parameters:
            dist.broadcast(p.data, src=0)


def max_difference_from_rank0(parameters: list[torch.nn.Parameter]) -> float:
    """The largest absolute difference between this rank's tensors and rank 0's, over all ranks."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return 0.0
    gap = torch.zeros((), dtype=torch.float64, device=parameters[0].device)
    with torch.no_grad():
        for p in parameters:
            reference = p.detach().clone()
            dist.broadcast(reference, src=0)
            gap = torch.maximum(gap, (p.detach() - reference).abs().max().double())
    dist.all_reduce(gap, op=dist.ReduceOp.MAX)
    return float(gap)
