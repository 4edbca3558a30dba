"""One process or torchrun: the process group, and DDP or FSDP2 applied to the model.

Everything is torch.distributed's own: `init_process_group` from torchrun's environment (gloo on
the CPU, nccl on CUDA), `DistributedDataParallel`, or `fully_shard` (FSDP2) on every block and
then on the whole model, as torchtitan does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

PARALLEL_MODES = ('ddp', 'fsdp')


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_size_from_env() -> int:
    return int(os.environ.get('WORLD_SIZE', '1'))


def init_world(device: str | None = None) -> World:
    """The process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*), if any."""
    world_size = world_size_from_env()
    rank, local_rank = int(os.environ.get('RANK', '0')), int(os.environ.get('LOCAL_RANK', '0'))
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda':
        torch.cuda.set_device(local_rank)
        torch_device = torch.device('cuda', local_rank)
    else:
        torch_device = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = 'nccl' if torch_device.type == 'cuda' else 'gloo'
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                **({'device_id': torch_device} if backend == 'nccl' else {}))
    return World(rank, world_size, local_rank, torch_device)


def close_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def mean_over_ranks(value: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of a metric over ranks (logging only; gradients are DDP's or FSDP's business)."""
    if world.distributed:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= world.world_size
    return value


def broadcast_object(value, world: World):
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def parallelize(model: torch.nn.Module, mode: str, world: World) -> torch.nn.Module:
    """The model wrapped for `world`: unchanged in one process, else DDP or FSDP2 (`fully_shard`
    per RAMNetBlock, then the root)."""
    if not world.distributed:
        return model
    if mode == 'ddp':
        from torch.nn.parallel import DistributedDataParallel
        ids = [world.device.index] if world.device.type == 'cuda' else None
        return DistributedDataParallel(model, device_ids=ids)
    if mode == 'fsdp':
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        mesh = init_device_mesh(world.device.type, (world.world_size,))
        for block in model.model.layers:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(f"`--parallel` must be one of {PARALLEL_MODES}, got {mode!r}")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The RAMNetForCausalLM inside a DDP wrapper (FSDP2 keeps the module itself)."""
    return model.module if hasattr(model, 'module') and not hasattr(model, 'model') else model


def gradient_sync(model: torch.nn.Module, enabled: bool):
    """A context for one micro-batch's backward: with `enabled` False (not the last micro-batch of
    an accumulation) DDP's `no_sync`, FSDP2's `set_requires_gradient_sync(False)`."""
    import contextlib
    if hasattr(model, 'no_sync'):
        return contextlib.nullcontext() if enabled else model.no_sync()
    if hasattr(model, 'set_requires_gradient_sync'):
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()
