"""Runs launched as several processes (``torchrun`` or ``accelerate launch``): which process this is, and the few
collective operations the harness and the trained routers need.

Launched that way, every process runs the whole protocol on the same data; trained routers split each training
batch across the processes and sum their gradients (:mod:`cmrbench.baselines.trainable.training`), so the
weights stay identical everywhere, and only the main process writes results, predictions and checkpoints.
With ``shard=fsdp`` the frozen weights of the backbone (a LoRA LLM's base model) are split across the processes
instead of copied into each (:func:`shard_frozen`). A plain ``cmrbench evaluate`` is one process and none of
this does anything. torch is imported only when the launcher asked for more than one process.
"""

from __future__ import annotations

import os
from typing import Any, Iterable


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> None:
    """Join the process group the launcher described in the environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``...): NCCL when this process has a GPU, gloo otherwise. Does nothing for one process."""
    if not _launched():
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def rank_and_size() -> tuple[int, int]:
    """(this process's index, number of processes); (0, 1) when not launched as several."""
    if not _launched():
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        return int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    """The process that writes files and prints (the only one of a plain run)."""
    return rank_and_size()[0] == 0


def barrier() -> None:
    if _launched():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def sum_gradients(params: Iterable) -> None:
    """Replace every parameter's gradient by its sum over the processes (a missing gradient counts as zero), in
    one flat buffer: the gradient of the loss summed over the whole batch, when each process's loss is its
    share of it."""
    import torch
    import torch.distributed as dist

    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_dtype: dict[torch.dtype, list] = {}
    for p in params:
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n


def shard_frozen(modules: Iterable[Any], trained: set[int]) -> int:
    """Split the frozen weights of each module (a transformer layer) across the processes with PyTorch's FSDP
    (``fully_shard``); parameters whose ``id`` is in ``trained`` stay whole in every process. Returns how many
    weights were split (0 for one process: there is nothing to split across).

    Only frozen weights are sharded: each layer gathers them for its forward (and again for the backward, to pass
    gradients through) and frees them after. The trained ones (LoRA adapters, upper layers, projection, registry)
    remain plain tensors whose gradients :func:`sum_gradients` adds up, so snapshots, checkpoints, EWC, LwF,
    merging and CARvE's anchoring see the same tensors as in one process. Every process must then run the network
    on every step, in the same order (the gathers are collective)."""
    if not _launched():
        return 0
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (rank_and_size()[1],))
    split = 0
    for module in modules:
        params = list(module.parameters())
        frozen = [p for p in params if id(p) not in trained]
        if frozen:
            fully_shard(module, mesh=mesh, reshard_after_forward=True,
                        ignored_params={p for p in params if id(p) in trained})
            split += sum(p.numel() for p in frozen)
    return split
