"""What every bench script shares: the machine line, interleaved repeats, median and
min-max, and the noise of a yardstick.

A claim in BENCHMARKS.md must survive a skeptic. That means: each side measured several
times, the sides interleaved (A B A B ..., so that a slow minute of the shared machine
hits both), the median with its min-max, the load average at the start and the end, and
for a comparison against a yardstick (raw disk write, a matmul peak) the spread of the
yardstick itself, so a ratio inside that spread is reported as such and not as a finding.

Scripts import it as `from benchlib import ...` (they run as `python bench/<name>.py`, so
this folder is on `sys.path`).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def threads_before_torch(argv: list[str], default: int) -> int:
    """Set OMP_NUM_THREADS from a `--threads N` in `argv` (else `default`) and the offline
    switches of the hub libraries. Call it before torch is imported: torch sizes its thread
    pool from the variable at import, and `jobs.device.select_device` reads it too."""
    threads = str(default)
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            threads = argv[i + 1]
        elif arg.startswith("--threads="):
            threads = arg.split("=", 1)[1]
    os.environ["OMP_NUM_THREADS"] = threads
    os.environ.update(offline_env(os.environ))
    return int(threads)


OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "AWS_EC2_METADATA_DISABLED": "true"}
"""No hub, no tokenizer threads racing the measured ones, no EC2 metadata probe (botocore
without credentials otherwise asks 169.254.169.254 and waits for its timeout)."""


def offline_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with `OFFLINE_ENV` where it does not set those variables itself."""
    return {**OFFLINE_ENV, **env}


def load_average() -> float:
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def machine_line(extra: str = "") -> str:
    """One line naming the machine and the moment: cores, Python, torch if imported, load."""
    parts = [f"{platform.node() or 'host'}: {os.cpu_count()} cores", f"python {platform.python_version()}"]
    torch = sys.modules.get("torch")
    if torch is not None:
        parts.append(f"torch {torch.__version__}")
    parts.append(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    parts.append(f"load average {load_average():.2f}")
    if extra:
        parts.append(extra)
    return ", ".join(parts)


@dataclass
class Samples:
    """Repeated measurements of one quantity."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(float(value))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def spread(self) -> float:
        """(max - min) / median: the relative noise of this quantity in this run."""
        return (self.high - self.low) / self.median if self.median else 0.0

    def fmt(self, digits: int = 2, unit: str = "", scale: float = 1.0) -> str:
        """`median [min-max]unit`, each multiplied by `scale` (1e-9: giga)."""
        low, median, high = self.low * scale, self.median * scale, self.high * scale
        return f"{median:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]{unit}"


def interleaved(variants: Mapping[str, Callable[[], T]], repeats: int, *, warmup: int | bool = True,
                progress: bool = True) -> dict[str, list[T]]:
    """Run every variant once per round, `repeats` rounds, in a rotated order per round
    (round r starts at variant r mod n), so neither side always runs first or last.

    `warmup` rounds (True: one) run first and are not returned: they pay imports, caches
    and allocator growth.
    """
    names = list(variants)
    results: dict[str, list[T]] = {name: [] for name in names}
    for _ in range(int(warmup)):
        for name in names:
            variants[name]()
        if progress:
            print("  warm-up round done", flush=True)
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(variants[name]())
        if progress:
            print(f"  round {round_index + 1}/{repeats} done (load average {load_average():.2f})", flush=True)
    return results


def ratio_verdict(ours: Samples, baseline: Samples, higher_is_better: bool = True) -> str:
    """The ratio of medians, and whether the two ranges overlap (then it is within noise)."""
    value = ours.median / baseline.median if higher_is_better else baseline.median / ours.median
    overlap = ours.low <= baseline.high and baseline.low <= ours.high
    return f"{value:.2f}x" + (" (ranges overlap: within noise)" if overlap else "")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, columns right-aligned except the first."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(row[0]).ljust(widths[0])] + [str(cell).rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Samples:
    """Per-round ratios numerator_i / denominator_i of two sides measured in the same
    rounds: a slow minute of the machine hits both sides of a pair, so the pairs' spread
    is smaller than the ratio of two independent medians would suggest."""
    assert len(numerators) == len(denominators), "pairs need the same rounds"
    return Samples([a / b for a, b in zip(numerators, denominators)])


def yardstick_verdict(ratios: Samples, yardstick: Samples, same: str, unit: str = "x") -> str:
    """What paired ratios against a yardstick may claim.

    `same` (e.g. "not distinguishable from raw write") when the pairs fall on both sides
    of 1, or all on one side but inside the yardstick's own range (its runs' min and max
    over its median: how far one run strays by noise alone), or too few pairs for the
    sign test (all n on one side by luck: p = 2 * 0.5^n, over 0.05 below 6 pairs).
    Else the ratio, with that p.
    """
    band = (yardstick.low / yardstick.median, yardstick.high / yardstick.median)
    noise = f"yardstick's own range {band[0]:.2f}-{band[1]:.2f} of its median"
    if ratios.low <= 1.0 <= ratios.high:
        return f"{same} (pairs on both sides of 1: {ratios.fmt(2)}; {noise})"
    if band[0] <= ratios.low and ratios.high <= band[1]:
        return f"{same} (all pairs on one side, but inside the yardstick's noise: {ratios.fmt(2)}; {noise})"
    n = len(ratios.values)
    p = 2 * 0.5 ** n  # the sign test: all n pairs on one side by chance
    if p > 0.05:
        return f"{same} at the 5% level (all {n} pairs on one side, sign test p = {p:.3f}; {ratios.fmt(2)}; {noise})"
    return (f"{ratios.median:.2f}{unit} [{ratios.low:.2f}-{ratios.high:.2f}]: all {n} pairs on one side of 1 "
            f"(sign test p = {p:.3f}); {noise}")


def end_line() -> str:
    """The last line of a bench's output: the load when it ended (the first is `machine_line`)."""
    return f"load average at the end {load_average():.2f}"


@dataclass(frozen=True)
class Timed:
    """A child process that ran to success: what it printed, and what it cost."""

    stdout: str
    wall_s: float
    cpu_s: float
    """user + system CPU of the child and everything it waited for (RUSAGE_CHILDREN delta)."""

    def last_json(self) -> Any:
        """The JSON object a child prints as its last line (its measurements)."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def run_timed(argv: Sequence[str], *, label: str, env: Mapping[str, str] | None = None,
              cwd: str | Path | None = None, keep_output: bool = True) -> Timed:
    """Run `argv` to its end and time it: wall seconds and the CPU seconds it used
    (start-up and imports included: what a user waits for). A failure ends the bench
    with the child's last stderr, never a number. `keep_output=False` discards its
    output instead of capturing it (a long child printing progress)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    sink = subprocess.PIPE if keep_output else subprocess.DEVNULL
    done = subprocess.run(list(argv), env=None if env is None else dict(env), cwd=cwd, stdout=sink, stderr=sink,
                          text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed (exit {done.returncode}):\n{(done.stderr or '')[-3000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return Timed(done.stdout or "", wall, cpu)


def dir_bytes(path: Path) -> int:
    """Bytes of every file under `path` (a checkpoint's size on disk)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def raw_write(path: Path, data: memoryview, chunk: int = 64 * 2**20) -> None:
    """Write `data` sequentially in 64 MiB pieces, then fsync: the raw disk a checkpoint
    save is compared against."""
    with open(path, "wb", buffering=0) as handle:
        for start in range(0, len(data), chunk):
            view = data[start : start + chunk]
            while len(view):
                view = view[handle.write(view) :]
        os.fsync(handle.fileno())
