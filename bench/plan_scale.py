"""Control-plane CPU at ~10k, ~30k and ~100k nodes: `xstilts plan`, `xstilts status --json`,
`xstilts launch --dry-run` and `xstilts status` (the table, piped) as CLI subprocesses on an
empty local store.

Why a subprocess: what a user waits for includes the interpreter's start-up and the
imports, so each command runs as `python -m xstilts ...`, and its CPU time (user + system)
is the delta of `resource.getrusage(RUSAGE_CHILDREN)` around it; wall time is measured too.
The specs are the paper spec (`experiments/xtreme-r-multimodal.yaml`, 433 nodes per seed
after the shared prepare nodes) with more seeds: 24, 70 and 231 seeds give about 10k, 30k
and 100k nodes. The store is an empty local folder (every node pending): what is measured
is the control plane's own CPU (plan build, the statuses, rendering), not storage.

Every (size, command) cell runs `--repeats` times; the cells are interleaved (each round
runs every cell once, in a rotated order), so a slow minute of the shared machine hits
all of them. Printed: median [min-max] CPU-s and wall-s; the growth 10k -> 100k per command
as the total factor and as CPU per 1,000 added nodes from one size to the next (linear growth:
the same at every step; start-up cancels out); and whether each command is under 3 CPU-s at
~100k nodes.
The yardstick's own noise is the start-up alone (`python -m xstilts --help`), measured in
the same rounds: its spread says how far apart two runs of nothing differ here.

Usage: python bench/plan_scale.py [--repeats 3] [--quick] [--sizes 10k 30k 100k]
       (--quick: 10k and 30k only, one repeat)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchlib import Samples, Timed, end_line, interleaved, machine_line, run_timed, table

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "xtreme-r-multimodal.yaml"
SIZES = {"10k": 24, "30k": 70, "100k": 231}
"""Size label -> seeds of the paper spec."""
COMMANDS = {"plan": ["plan"], "status --json": ["status", "--json"], "launch --dry-run": ["launch", "--dry-run"],
            "status (table)": ["status"]}
"""`status (table)`: the human view into a pipe: the summary and `TABLE_ROWS_PIPED` rows."""
TARGET_CPU_S = 3.0


def run_cli(args: list[str]) -> Timed:
    """One CLI run in a child process: its CPU (user + system) and wall seconds."""
    return run_timed([sys.executable, "-m", "xstilts", *args], label=" ".join(["xstilts", *args]), cwd=REPO,
                     keep_output=False)


def node_count(seeds: int) -> int:
    from xstilts.core.plan import build_plan
    from xstilts.core.spec import load_spec

    return len(build_plan(load_spec(str(SPEC), [f"seeds={list(range(1, seeds + 1))}"])).nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10k and 30k only, one repeat")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES), help="grid sizes to run")
    args = parser.parse_args()
    sizes = {k: v for k, v in SIZES.items() if k in args.sizes and (not args.quick or k != "100k")}
    repeats = 1 if args.quick else args.repeats
    print(machine_line("bench/plan_scale.py"), flush=True)
    with tempfile.TemporaryDirectory(prefix="plan_scale-") as work:
        counts = {size: node_count(seeds) for size, seeds in sizes.items()}
        cells = {"start-up (--help)": lambda: run_cli(["--help"])}
        for size, seeds in sizes.items():
            spec_args = [str(SPEC), "-o", f"seeds={list(range(1, seeds + 1))}".replace(" ", ""),
                         "-o", f"storage={work}/store-{size}", "--profile", "local"]
            for name, command in COMMANDS.items():
                cells[f"{name} @ {size}"] = lambda command=command, spec_args=spec_args: run_cli([*command, *spec_args])
        runs = interleaved(cells, repeats)

    cpu = {name: Samples([r.cpu_s for r in values]) for name, values in runs.items()}
    wall = {name: Samples([r.wall_s for r in values]) for name, values in runs.items()}
    print("\nnodes: " + ", ".join(f"{size} = {counts[size]:,}" for size in sizes))
    print(f"median [min-max] of {repeats} interleaved runs\n")
    print(table(["cell", "CPU-s", "wall-s", "CPU spread"],
                [[name, cpu[name].fmt(), wall[name].fmt(), f"{cpu[name].spread:.0%}"] for name in runs]))
    noise = cpu["start-up (--help)"]
    print(f"\nyardstick noise: start-up alone {noise.fmt()} CPU-s, spread {noise.spread:.0%} "
          "(differences inside this are not findings)")
    names = list(sizes)
    first, last = names[0], names[-1]
    if first != last:
        # Start-up and imports are paid once whatever the size; linear growth shows as the
        # same CPU per added node from one size to the next.
        print(f"\ngrowth {first} -> {last} ({counts[last] / counts[first]:.1f}x nodes): CPU-ms per 1,000 added nodes "
              "between consecutive sizes (linear: equal)")
        for name in COMMANDS:
            slopes = []
            for low, high in zip(names, names[1:]):
                added = (counts[high] - counts[low]) / 1000
                slopes.append((cpu[f"{name} @ {high}"].median - cpu[f"{name} @ {low}"].median) * 1000 / added)
            total = cpu[f"{name} @ {last}"].median / cpu[f"{name} @ {first}"].median
            print(f"  {name:<18} " + ", ".join(f"{a} -> {b}: {slope:.0f}" for (a, b), slope
                                               in zip(zip(names, names[1:]), slopes))
                  + f"; {total:.1f}x in total")
    if "100k" in sizes:
        print(f"\nat 100k ({counts['100k']:,} nodes), target {TARGET_CPU_S:g} CPU-s:")
        for name in COMMANDS:
            at = cpu[f"{name} @ 100k"]
            verdict = "under" if at.high < TARGET_CPU_S else ("median under" if at.median < TARGET_CPU_S else "NOT under")
            print(f"  {name:<18} {at.fmt()} CPU-s: {verdict}" + (" (every run)" if verdict == "under" else ""))
    print(end_line())

if __name__ == "__main__":
    main()
