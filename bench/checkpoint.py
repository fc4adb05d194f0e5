"""Checkpoint cost of a ~100M-parameter model under FSDP2 on 2 CPU processes.

What is compared, side by side in one run (each repeated, median [min-max] reported):

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

How a skeptic may read the ratios: the raw write is the yardstick, and on a shared
virtual disk it is noisy itself. So every round runs all steps (raw writes, both DCP
saves, the full-gather save, the async save), in an order rotated per round, and each
comparison is the ratio of the pair from the same round (raw2_i / dcp_i), reported as
median [min-max] next to the yardstick's own spread. When the ratios' range includes 1,
or the median's distance from 1 is within that spread, the script says "not
distinguishable" instead of printing a ratio as a finding (`benchlib.yardstick_verdict`).

Before each write, rank 0 runs `sync` and, where it may (root), empties the page cache
(`echo 3 > /proc/sys/vm/drop_caches`), so no write starts with the previous one's dirty
pages still flushing; every write is fsynced, so the guest's page cache does not absorb
it (the host's disk cache may: that is what the yardstick's spread shows).
Every measurement writes to a fresh directory under `--dir` which is deleted right
after (the disk is finite); a warm-up round that is not reported comes first.
MB = 10^6 bytes.

    python bench/checkpoint.py                 # ~100M parameters, 7 rounds
    python bench/checkpoint.py --size small --repeats 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    Samples, dir_bytes, end_line, interleaved, machine_line, paired_ratios, raw_write, table, yardstick_verdict)

WORLD_SIZE = 2
MB = 1e6
DROP_CACHES = "/proc/sys/vm/drop_caches"

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
    drop_caches: bool


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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

    def settle() -> None:
        """Before each measured write: dirty pages of the previous one written back and,
        with --drop-caches, the page cache emptied, so no write starts in another's wake."""
        dist.barrier()
        if rank == 0:
            os.sync()
            if opts.drop_caches:
                Path(DROP_CACHES).write_text("3\n")
        dist.barrier()

    def raw(writers: int) -> Callable[[], float]:
        """2 writers: one file per rank, each its share (as DCP writes one file per rank);
        1 writer: rank 0 writes all the bytes to one file."""
        def write() -> float:
            path = fresh_dir(opts.root, "raw")
            if rank == 0:
                path.mkdir()
            settle()
            if writers == WORLD_SIZE:
                seconds = timed(lambda: raw_write(path / f"rank{rank}", payload[:share]))
            else:
                seconds = timed(lambda: raw_write(path / "all", payload) if rank == 0 else None)
            remove(path)
            return seconds
        return write

    def dcp_to(uri: bool) -> Callable[[], float]:
        def save() -> float:
            path = fresh_dir(opts.root, "dcp")
            settle()
            target = path.resolve().as_uri() if uri else str(path)
            seconds = timed(lambda: dcp.save(sharded_state(), checkpoint_id=target))
            remove(path)
            return seconds
        return save

    def full_save() -> float:  # full state dict gathered on rank 0 and torch.save'd (+ fsync, like DCP)
        path = fresh_dir(opts.root, "full")
        settle()

        def gather_and_save() -> None:
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
            if rank == 0:
                path.mkdir()
                with open(path / "checkpoint.pt", "wb") as handle:
                    torch.save({"model": model_sd, "optimizer": optim_sd}, handle)
                    handle.flush()
                    os.fsync(handle.fileno())

        seconds = timed(gather_and_save)
        remove(path)
        return seconds

    def async_save() -> tuple[float, float]:  # the stall is the time until control returns; then wait for the upload
        path = fresh_dir(opts.root, "async")
        settle()
        start = time.perf_counter()
        future = dcp.async_save(sharded_state(), checkpoint_id=str(path), process_group=async_group)
        stall = max_over_ranks(time.perf_counter() - start)
        future.result()
        dist.barrier()
        total = time.perf_counter() - start
        remove(path)
        return stall, total

    steps: dict[str, Callable[[], Any]] = {
        "raw2": raw(writers=2), "dcp_path": dcp_to(uri=False), "raw1": raw(writers=1),
        "dcp_fsspec": dcp_to(uri=True), "full": full_save, "async": async_save}
    # every rank runs the same steps in the same (deterministic, rotated per round) order,
    # so the steps' collectives meet
    results = interleaved(steps, opts.repeats, warmup=opts.warmup, progress=rank == 0)
    stalls_totals = results.pop("async")
    samples: dict[str, list[float]] = {**results, "async_stall": [stall for stall, _ in stalls_totals],
                                       "async_total": [total for _, total in stalls_totals]}

    if rank == 0:
        report(samples, total_bytes, opts)


def report(samples: dict[str, list[float]], total_bytes: int, opts: Options) -> None:
    """Per measurement: median [min-max] seconds and its own spread; per comparison: the
    ratio of each round's pair (same round, adjacent in time) and what it may claim
    against the noise of its yardstick."""
    s = {name: Samples(values) for name, values in samples.items()}
    mbs = {name: total_bytes / MB / s[name].median for name in s}
    raw, dcp_path = s["raw2"], s["dcp_path"]
    titles = {
        "raw2": "raw write, 2 writers, fsync (yardstick)", "raw1": "raw write, 1 writer, fsync",
        "dcp_path": "dcp.save, path (FileSystemWriter)", "dcp_fsspec": "dcp.save, file:// (fsspec writer)",
        "full": "full state dict + torch.save rank 0", "async_stall": "dcp.async_save, stall",
        "async_total": "dcp.async_save, until upload done",
    }
    print()
    print(f"{WORLD_SIZE} processes, gloo, FSDP2; {total_bytes / MB:.0f} MB per checkpoint; {opts.repeats} rounds "
          f"after {opts.warmup} warm-up, steps rotated per round; page cache: {page_cache_note(opts)}; dir {opts.root}")
    rows = [[titles[name], s[name].fmt(2), f"{s[name].spread:.0%}",
             "-" if name == "async_stall" else f"{mbs[name]:.0f}"] for name in titles]
    print(table(["measurement", "seconds median [min-max]", "spread", "MB/s"], rows))

    def pairs(num: str, den: str) -> Samples:
        return paired_ratios(samples[num], samples[den])

    print("\nthroughput of each side relative to the raw write of the same round (raw2_i / side_i):")
    same_disk = "not distinguishable from raw write"
    for name in ("dcp_path", "dcp_fsspec", "raw1"):
        print(f"  {titles[name]:<38} {yardstick_verdict(pairs('raw2', name), raw, same_disk, ' of raw write')}")
    print("time of each side relative to dcp.save (path) of the same round (side_i / dcp_path_i):")
    for name in ("dcp_fsspec", "full", "async_stall", "async_total"):
        print(f"  {titles[name]:<38} {yardstick_verdict(pairs(name, 'dcp_path'), dcp_path, 'not distinguishable from dcp.save', 'x dcp.save time')}")
    print("per-round pairs (round 1..n):")
    for num, den in (("raw2", "dcp_path"), ("raw2", "dcp_fsspec"), ("full", "dcp_path"), ("async_stall", "dcp_path")):
        print(f"  {num}/{den}: " + " ".join(f"{value:.2f}" for value in pairs(num, den).values))
    print(f"yardsticks' own spread (max-min)/median: raw write {raw.spread:.0%} "
          f"({raw.low:.2f}-{raw.high:.2f} s = {total_bytes / MB / raw.high:.0f}-{total_bytes / MB / raw.low:.0f} MB/s), "
          f"dcp.save {dcp_path.spread:.0%}")


def can_drop_caches() -> bool:
    """Whether this process may empty the page cache (root in a VM or bare machine)."""
    try:
        os.sync()
        Path(DROP_CACHES).write_text("3\n")
        return True
    except OSError:
        return False


def page_cache_note(opts: Options) -> str:
    return ("sync + drop_caches before each write" if opts.drop_caches
            else "sync before each write (drop_caches not writable)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="100m", help="model preset (default: 100m)")
    parser.add_argument("--repeats", type=int, default=7, help="measured rounds; the median is reported")
    parser.add_argument("--no-drop-caches", action="store_true",
                        help="only sync before each write (default: also drop the page cache where root may)")
    parser.add_argument("--warmup", type=int, default=1, help="unreported rounds first")
    parser.add_argument("--dir", type=Path, default=None,
                        help="parent of the scratch directory (default: the system temp dir)")
    args = parser.parse_args(argv)

    root_parent = args.dir or Path(tempfile.gettempdir())
    root_parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-checkpoint-", dir=root_parent))
    print(machine_line(), flush=True)
    try:
        opts = Options(args.size, args.repeats, args.warmup, root, free_port(),
                       drop_caches=not args.no_drop_caches and can_drop_caches())
        mp.spawn(worker, args=(opts,), nprocs=WORLD_SIZE, join=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(end_line())


if __name__ == "__main__":
    main()
