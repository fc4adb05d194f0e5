"""Pick where a job computes, once, from what the machine offers.

A job never asks the user for a device: CUDA when a GPU is visible (bf16 autocast, the
precision XLM-R fine-tuning is routinely run in), otherwise the CPU in fp32 (bf16 on CPU
is slower than fp32 on most server cores and changes results). On CPU the intra-op
thread count is set so that the processes sharing a machine do not oversubscribe it:
two training nodes on a 2-core box must each use one thread, not two.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ContextManager

import torch

from xstilts.core.allocation import allocation_cpus, env_int, local_world_size


@dataclass(frozen=True)
class DeviceInfo:
    """The chosen device and how to run models on it."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    """dtype for `torch.autocast`, or None to run in the parameters' dtype (fp32)."""
    num_threads: int
    """Intra-op threads torch uses in this process (meaningful on CPU)."""

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> ContextManager[object]:
        """Mixed precision where it pays (CUDA bf16); a no-op context on CPU."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def cpu_threads(world_size_on_node: int | None = None) -> int:
    """Threads for one process.

    An explicit OMP_NUM_THREADS wins: the local launcher sets it when it runs several
    nodes side by side, which this process cannot see. Otherwise the cores this job may
    use (the affinity mask, capped by SLURM_CPUS_PER_TASK x local processes because a
    cluster without task affinity shows every core) divided among its local processes.
    Oversubscribing is expensive for small models: two threads on a core that another
    process keeps busy ran our tiny-model training 10-20x slower than one thread.
    """
    explicit = os.environ.get("OMP_NUM_THREADS", "")
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    per_node = max(1, world_size_on_node if world_size_on_node is not None else local_world_size())
    return max(1, allocation_cpus(per_node) // per_node)


def mixed_precision_dtype(device_type: str, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype of a device: bf16 on CUDA devices that have it (Ampere and later),
    else None (fp32). Not fp16 on older GPUs: it needs loss scaling, and XLM-R fine-tuning
    in fp16 without it diverges; not bf16 on CPU, where it is slower and changes results."""
    return torch.bfloat16 if device_type == "cuda" and bf16_supported else None


def select_device(world_size_on_node: int | None = None) -> DeviceInfo:
    """Choose the device for this process and configure torch's threading for it."""
    if torch.cuda.is_available():
        local_rank = env_int("LOCAL_RANK", 0)
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        dtype = mixed_precision_dtype("cuda", torch.cuda.is_bf16_supported())
        threads = cpu_threads(world_size_on_node)
        torch.set_num_threads(threads)
        return DeviceInfo(torch.device("cuda", index), dtype, threads)
    threads = cpu_threads(world_size_on_node)
    torch.set_num_threads(threads)
    return DeviceInfo(torch.device("cpu"), None, threads)


@contextlib.contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Run torch's CPU ops on exactly `threads` intra-op threads, then restore the count.

    For work whose bytes must not depend on the machine: a reduction split over N
    threads adds its partial sums in an order that depends on N (e.g. the gradient norm
    of an embedding matrix above torch's 32768-element grain), so the same computation
    with another OMP_NUM_THREADS ends a few ulps away, and training amplifies that.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
