"""Checkpoint cost of a ~100M-parameter model under FSDP2 on 2 CPU processes.

What is compared, side by side in one run (each repeated, median reported):

* `dcp.save` of the sharded model + AdamW state (`get_state_dict`), to a plain directory
  (DCP picks `FileSystemWriter`) and to a `file://` URI (DCP picks the fsspec writer,
  the path jobs take when the store is an fsspec URL), in MB/s;
* a raw sequential write of the same number of bytes to the same disk, with fsync, as
  the physical limit: two writers at once (one per rank, as DCP writes one file per
  rank) and one writer alone. The ratio DCP / raw says how much of the disk DCP uses;
* the classic alternative: gather a full state dict on rank 0
  (`StateDictOptions(full_state_dict=True, cpu_offload=True)`) and `torch.save` it (plus
  fsync, as DCP does), in seconds and as a ratio to `dcp.save`;
* the training stall of `dcp.async_save` (time until control returns to the training
  loop) against the synchronous `dcp.save`, and how long the background upload takes.
  The async future is waited on before the next measurement starts.

Why: training stages checkpoint with DCP so that a preempted SLURM job resumes, and
the checkpoint interval is a trade between lost work and time spent saving. These
numbers say what one save costs and whether async saving hides it.

Every measurement writes to a fresh directory under `--dir` which is deleted right
after (the disk is finite); a warmup round that is not reported comes first.
MB = 10^6 bytes.

    python bench/checkpoint.py                 # ~100M parameters, 3 repeats
    python bench/checkpoint.py --size small --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.distributed.fsdp import fully_shard

WORLD_SIZE = 2
MB = 1e6

# hidden, layers, heads, intermediate, vocab of an XLMRobertaForMaskedLM (tied decoder)
SIZES: dict[str, dict[str, int]] = {
    "100m": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "vocab_size": 16000},
    "50m": {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8,
            "intermediate_size": 2048, "vocab_size": 30000},
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "intermediate_size": 1024, "vocab_size": 8000},
}


@dataclass
class Options:
    size: str
    repeats: int
    warmup: int
    root: Path
    port: int


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def raw_write(path: Path, data: memoryview, chunk: int = 64 * 2**20) -> None:
    """Write `data` sequentially in 64 MiB pieces, then fsync."""
    with open(path, "wb", buffering=0) as handle:
        for start in range(0, len(data), chunk):
            view = data[start : start + chunk]
            while len(view):
                view = view[handle.write(view) :]
        os.fsync(handle.fileno())


def random_bytes(n_bytes: int) -> memoryview:
    """Incompressible, non-repeating bytes (like trained weights), so that no layer of
    the storage stack can deduplicate or compress the raw write."""
    generator = torch.Generator().manual_seed(1234 + dist.get_rank())
    return memoryview(torch.randint(0, 256, (n_bytes,), dtype=torch.uint8, generator=generator).numpy())


def build_model(size: str) -> torch.nn.Module:
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    config = XLMRobertaConfig(**SIZES[size], max_position_embeddings=514)
    torch.manual_seed(0)  # same weights on every rank
    return XLMRobertaForMaskedLM(config)


def one_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, vocab: int) -> None:
    """A tiny training step so that AdamW's exp_avg/exp_avg_sq exist and are saved."""
    ids = torch.randint(5, vocab, (2, 32), generator=torch.Generator().manual_seed(dist.get_rank()))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds of a collective operation: barrier, run, barrier (the slowest rank counts)."""
    dist.barrier()
    start = time.perf_counter()
    fn()
    dist.barrier()
    return time.perf_counter() - start


def max_over_ranks(value: float) -> float:
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def fresh_dir(root: Path, name: str) -> Path:
    """A path under `root` that rank 0 made sure does not exist (same on all ranks)."""
    path = root / name
    if dist.get_rank() == 0 and path.exists():
        shutil.rmtree(path)
    dist.barrier()
    return path


def remove(path: Path) -> None:
    dist.barrier()
    if dist.get_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)
    dist.barrier()


# ----------------------------------------------------------------------------- worker


def worker(rank: int, opts: Options) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(opts.port))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // WORLD_SIZE))
    # the MLM head returns a view; harmless here (no in-place op follows), but FSDP2 warns
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module")
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        run(rank, opts)
    finally:
        dist.destroy_process_group()


def run(rank: int, opts: Options) -> None:
    model = build_model(opts.size)
    n_params = sum(p.numel() for p in model.parameters())
    for layer in model.roberta.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    one_step(model, optimizer, SIZES[opts.size]["vocab_size"])
    async_group = dist.new_group(backend="gloo")  # the upload thread's own collectives

    def sharded_state() -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        return {"model": model_sd, "optimizer": optim_sd}

    # size of what DCP writes (all ranks' files + metadata), from one save
    probe = fresh_dir(opts.root, "probe")
    dcp.save(sharded_state(), checkpoint_id=str(probe))
    dist.barrier()
    total_bytes = int(max_over_ranks(float(dir_bytes(probe)) if rank == 0 else 0.0))
    remove(probe)
    if rank == 0:
        print(f"model: XLMRobertaForMaskedLM {opts.size} {SIZES[opts.size]}, {n_params / 1e6:.1f}M parameters; "
              f"DCP checkpoint (model + AdamW state) {total_bytes / MB:.0f} MB", flush=True)

    share = total_bytes // WORLD_SIZE
    payload = random_bytes(total_bytes if rank == 0 else share)
    samples: dict[str, list[float]] = {}

    def record(name: str, seconds: float, counted: bool) -> None:
        if counted:
            samples.setdefault(name, []).append(seconds)

    for round_ in range(opts.warmup + opts.repeats):
        counted = round_ >= opts.warmup

        # raw sequential writes of the same byte count: 2 writers (one per rank), then 1
        path = fresh_dir(opts.root, "raw")
        if rank == 0:
            path.mkdir()
        dist.barrier()
        record("raw2", timed(lambda: raw_write(path / f"rank{rank}", payload[:share])), counted)
        remove(path)
        path = fresh_dir(opts.root, "raw")
        if rank == 0:
            path.mkdir()
        dist.barrier()
        record("raw1", timed(lambda: raw_write(path / "all", payload) if rank == 0 else None), counted)
        remove(path)

        # DCP, plain path (FileSystemWriter) and file:// URI (fsspec writer)
        path = fresh_dir(opts.root, "dcp")
        record("dcp_path", timed(lambda: dcp.save(sharded_state(), checkpoint_id=str(path))), counted)
        remove(path)
        path = fresh_dir(opts.root, "dcp")
        record("dcp_fsspec", timed(lambda: dcp.save(sharded_state(), checkpoint_id=path.resolve().as_uri())), counted)
        remove(path)

        # full state dict gathered on rank 0 and torch.save'd (+ fsync, like DCP)
        path = fresh_dir(opts.root, "full")

        def full_save() -> None:
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
            if rank == 0:
                path.mkdir()
                with open(path / "checkpoint.pt", "wb") as handle:
                    torch.save({"model": model_sd, "optimizer": optim_sd}, handle)
                    handle.flush()
                    os.fsync(handle.fileno())

        record("full", timed(full_save), counted)
        remove(path)

        # async_save: the stall is the time until control returns; then wait for the upload
        path = fresh_dir(opts.root, "async")
        dist.barrier()
        start = time.perf_counter()
        future = dcp.async_save(sharded_state(), checkpoint_id=str(path), process_group=async_group)
        stall = max_over_ranks(time.perf_counter() - start)
        future.result()
        dist.barrier()
        record("async_stall", stall, counted)
        record("async_total", time.perf_counter() - start, counted)
        remove(path)
        if rank == 0:
            label = "warmup" if not counted else f"repeat {round_ - opts.warmup + 1}/{opts.repeats}"
            print(f"  {label} done", flush=True)

    if rank == 0:
        report(samples, total_bytes, opts)


def report(samples: dict[str, list[float]], total_bytes: int, opts: Options) -> None:
    med = {name: statistics.median(values) for name, values in samples.items()}
    rate = {name: total_bytes / MB / seconds for name, seconds in med.items()}

    def spread(name: str) -> str:
        values = samples[name]
        return f"{min(values):.2f}-{max(values):.2f}"

    rows = [
        ("raw write, 2 writers, fsync", "raw2", f"{rate['raw2']:.0f}", "1.00 (limit)"),
        ("raw write, 1 writer, fsync", "raw1", f"{rate['raw1']:.0f}", f"{rate['raw1'] / rate['raw2']:.2f} of raw2"),
        ("dcp.save, path (FileSystemWriter)", "dcp_path", f"{rate['dcp_path']:.0f}",
         f"{rate['dcp_path'] / rate['raw2']:.2f} of raw2"),
        ("dcp.save, file:// (fsspec writer)", "dcp_fsspec", f"{rate['dcp_fsspec']:.0f}",
         f"{rate['dcp_fsspec'] / rate['raw2']:.2f} of raw2"),
        ("full state dict + torch.save rank 0", "full", f"{rate['full']:.0f}",
         f"{med['full'] / med['dcp_path']:.2f}x dcp.save time"),
        ("dcp.async_save, stall", "async_stall", "-",
         f"{med['async_stall'] / med['dcp_path']:.2f}x dcp.save time"),
        ("dcp.async_save, until upload done", "async_total", f"{rate['async_total']:.0f}",
         f"{med['async_total'] / med['dcp_path']:.2f}x dcp.save time"),
    ]
    print()
    print(f"{WORLD_SIZE} processes, gloo, FSDP2; {total_bytes / MB:.0f} MB per checkpoint; "
          f"median of {opts.repeats} (min-max in brackets); dir {opts.root}")
    header = f"{'measurement':<38} {'seconds':>8} {'[min-max]':>12} {'MB/s':>6}  ratio"
    print(header)
    print("-" * (len(header) + 20))
    for title, key, mbs, ratio in rows:
        print(f"{title:<38} {med[key]:>8.2f} {'[' + spread(key) + ']':>12} {mbs:>6}  {ratio}")
    print()
    print(f"DCP/raw throughput: path {rate['dcp_path'] / rate['raw2']:.2f}, fsspec {rate['dcp_fsspec'] / rate['raw2']:.2f}; "
          f"full-gather/DCP time {med['full'] / med['dcp_path']:.2f}; "
          f"async stall/sync save {med['async_stall'] / med['dcp_path']:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="100m", help="model preset (default: 100m)")
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=1, help="unreported rounds first")
    parser.add_argument("--dir", type=Path, default=None,
                        help="parent of the scratch directory (default: the system temp dir)")
    args = parser.parse_args(argv)

    root_parent = args.dir or Path(tempfile.gettempdir())
    root_parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-checkpoint-", dir=root_parent))
    print(f"{platform.node()}: {os.cpu_count()} cores, torch {torch.__version__}, python {sys.version.split()[0]}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f}", flush=True)
    try:
        opts = Options(args.size, args.repeats, args.warmup, root, free_port())
        mp.spawn(worker, args=(opts,), nprocs=WORLD_SIZE, join=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
