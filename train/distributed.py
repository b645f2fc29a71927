"""torch.distributed set-up: torchrun's environment -> process group, device, DDP / FSDP wrapping.

Launch with ``torchrun --nproc_per_node N $(which exo2ego-edge) train ...``: torchrun sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR and we pick gloo on CPU and nccl on GPU. A plain ``exo2ego-edge train`` is a world of one and wraps nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

from exo2ego_edge.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: str = "auto", threads: int | None = None) -> DistInfo:
    """Join the process group torchrun describes (if any) and choose this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise UserError("run.device is cuda but no CUDA GPU is visible")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
        # Processes sharing a CPU must not oversubscribe it: split the cores between them.
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // max(1, local_world)))
    # Under torchrun (RANK set) always join, even a world of one: FSDP needs a process group.
    if (world > 1 or "RANK" in os.environ) and not torch.distributed.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        torch.distributed.init_process_group(backend=backend, device_id=dev if use_cuda else None)
        log.info("rank %d/%d joined the %s process group on %s", rank, world, backend, dev)
    return DistInfo(rank, world, local_rank, dev)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        torch.distributed.barrier()


def broadcast_object(info: DistInfo, obj):
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(info: DistInfo, obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world
    torch.distributed.all_gather_object(out, obj)
    return out


def wrap(module: nn.Module, info: DistInfo, fsdp: bool, find_unused: bool) -> nn.Module:
    """DDP (or FSDP) around the stage's loss module; untouched in a world of one without fsdp.

    Parameters must already be frozen / unfrozen: both wrappers only sync trainable ones.
    """
    if fsdp:
        return _wrap_fsdp(module, info)
    if not info.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    # device_ids=None: the module already lives on this rank's single device; inputs are moved
    # by the trainer. find_unused: a stage whose batches may skip a branch (init: all-exo batch).
    return DDP(module, device_ids=None, find_unused_parameters=find_unused)


def _wrap_fsdp(module: nn.Module, info: DistInfo) -> nn.Module:
    """Shard every transformer block (vision and LLM), then the rest as the root unit, with FSDP2
    (``fully_shard``: per-parameter DTensor shards, so frozen and trainable parameters mix freely
    in a unit, and it runs on CPU with gloo as well as on GPUs with NCCL)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not torch.distributed.is_initialized():
        raise UserError("run.fsdp needs a process group: launch with torchrun")
    mesh = init_device_mesh(info.device.type, (info.world,))
    for block in [m for m in module.modules() if _is_transformer_block(m)]:
        fully_shard(block, mesh=mesh)
    return fully_shard(module, mesh=mesh)


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, enabled: bool):
    """Accumulate gradients locally (``enabled`` False) until the last micro-batch of a step:
    DDP's ``no_sync``; FSDP2's ``set_requires_gradient_sync``; nothing to do in a world of one."""
    if not enabled and hasattr(wrapped, "no_sync"):
        with wrapped.no_sync():
            yield
    elif not enabled and hasattr(wrapped, "set_requires_gradient_sync"):
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    else:
        yield


def _is_transformer_block(m: nn.Module) -> bool:
    name = type(m).__name__
    return name.endswith(("DecoderLayer", "EncoderLayer"))


def unwrap(module: nn.Module) -> nn.Module:
    """The loss module inside a DDP wrapper (FSDP2 shards in place: no wrapper)."""
    return getattr(module, "module", module)


def cleanup(info: DistInfo) -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
