"""torch.distributed for one node's processes: where the group comes from, and FSDP2.

A node runs as one process (a laptop, a one-task SLURM job: no process group at all, so
nothing distributed can fail) or as several: started by torchrun (or the local entry,
which sets the same RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* variables) or as SLURM
tasks, whose variables submitit's `TorchDistributedEnvironment` turns into the same
torchrun-style ones. The backend follows the device: NCCL on CUDA, gloo on CPU.

Sharding is FSDP2 (`fully_shard` per transformer layer, then the root), never the
classic `FullyShardedDataParallel`: FSDP2 parameters are DTensors that
torch.distributed.checkpoint saves, reshards and async-saves, while the classic wrapper
cannot async-save on CPU and segfaults gathering a full CPU state dict (FACTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from xstilts.core.allocation import env_int, process_place
from xstilts.jobs.device import cpu_threads

if TYPE_CHECKING:
    from xstilts.jobs.acceleration import Speedups


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits among the node's processes."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    backend: str | None
    """NCCL or gloo when a process group exists; None for a lone process."""

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, backend=None)


def _export_slurm_env() -> None:
    """Turn a multi-task SLURM step into torchrun-style variables (submitit's helper
    knows the host list and picks a job-stable master port)."""
    from submitit.helpers import TorchDistributedEnvironment

    # CUDA_VISIBLE_DEVICES stays as SLURM set it: jobs.device picks the GPU by LOCAL_RANK.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _wants_group() -> bool:
    """Whether this process is one of several (exporting SLURM's variables if needed)."""
    place = process_place()
    if place.source == "slurm":
        _export_slurm_env()
    return place.world_size > 1


def current() -> DistInfo:
    """This process's place, read from an initialised process group (or SINGLE)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    world = dist.get_world_size()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=world,
        local_rank=env_int("LOCAL_RANK", dist.get_rank()),
        local_world_size=env_int("LOCAL_WORLD_SIZE", world),
        backend=str(dist.get_backend()),
    )


def init_distributed() -> DistInfo:
    """Join the node's process group if this process is one of several.

    Idempotent: a group that already exists (the entry may have made it to agree on a
    decision before the stage runs) is reused as it is. A lone process gets no group.
    On CPU each process gets `cores // local processes` intra-op threads, unless
    OMP_NUM_THREADS says otherwise (see `xstilts.jobs.device.cpu_threads`).
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    if not _wants_group():
        return SINGLE
    local_world = env_int("LOCAL_WORLD_SIZE", 1)
    if torch.cuda.is_available():
        torch.cuda.set_device(env_int("LOCAL_RANK", 0) % torch.cuda.device_count())
        # gloo beside NCCL: checkpoint coordination and async saves run on CPU tensors.
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
        torch.set_num_threads(cpu_threads(local_world))
    dist.init_process_group(backend=backend)
    return current()


def barrier() -> None:
    """Wait for every rank; a no-op for a lone process."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def is_main() -> bool:
    """Rank 0, the process that writes files meant to exist once (metrics, exports)."""
    return current().rank == 0


def destroy() -> None:
    """Leave the process group, if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_agree(flag: bool) -> bool:
    """True on every rank if `flag` is true on any rank.

    A stop signal reaches the ranks at slightly different moments; deciding per rank
    would leave one rank saving (a collective) while another trains on.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (identity for a lone process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def shard_model(model: torch.nn.Module, info: DistInfo, speedups: Speedups | None = None) -> torch.nn.Module:
    """FSDP2 over `info.world_size` ranks: each transformer layer, then the root.

    Per-layer units keep only one layer's full parameters alive at a time; the root unit
    holds the embeddings and the head. With `speedups` selecting bf16 parameters (sharded
    CUDA runs) each unit gets that mixed-precision policy. A lone process returns the
    model unchanged.
    """
    if not info.is_distributed:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from xstilts.jobs.acceleration import encoder_layers, fsdp_mixed_precision

    device_type = "cuda" if next(model.parameters()).is_cuda else "cpu"
    mesh = init_device_mesh(device_type, (info.world_size,))
    fp32 = MixedPrecisionPolicy()  # fully_shard's default: parameters stay as they are
    layer_policy = (fsdp_mixed_precision(speedups, root=False) if speedups else None) or fp32
    root_policy = (fsdp_mixed_precision(speedups, root=True) if speedups else None) or fp32
    for layer in encoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=layer_policy)
    fully_shard(model, mesh=mesh, mp_policy=root_policy)
    return model
