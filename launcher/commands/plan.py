"""`xstilts plan`: the nodes a spec expands to, their counts and estimated GPU-hours."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Annotated

import typer

from xstilts.core.plan import Plan
from xstilts.core.spec import Spec
from xstilts.launcher.commands.common import JsonOpt, OverrideOpt, ProfileOpt, SpecArg, node_tasks, open_spec, out

def plan(
    spec: SpecArg, override: OverrideOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False,
    all_nodes: Annotated[bool, typer.Option("--nodes", help="list every node even of a large plan")] = False,
) -> None:
    """Print the nodes the spec expands to (stage, tasks, seed, key, inputs), the node
    counts per stage and, with `gpu_hours` in the spec, the estimated GPU-hours."""
    experiment = open_spec(spec, override, profile, reads_store=False)
    if as_json:
        estimates = [asdict(row) for row in gpu_hour_estimate(experiment.plan, experiment.spec)]
        print(json.dumps({**experiment.plan.to_json(), "gpu_hours": estimates}))  # no indent: the C encoder
        return
    from rich.table import Table

    if all_nodes or len(experiment.plan.nodes) <= PLAN_TABLE_MAX:
        table = Table(title=f"plan of '{experiment.spec.name}'")
        for column in ("key", "stage", "tasks", "seed", "inputs"):
            table.add_column(column)
        for node in experiment.plan.nodes:
            table.add_row(node.key, node.stage if node.kind is None else f"{node.stage}:{node.kind}", node_tasks(node),
                          "" if node.seed is None else str(node.seed),
                          " ".join(f"{name}={dep.key[:8]}" for name, dep in node.inputs.items()))
        out.print(table)
    else:
        out.print(f"{len(experiment.plan.nodes)} nodes (list them with --nodes)")
    counts = experiment.plan.counts()
    out.print(", ".join(f"{stage}: {n}" for stage, n in counts.items()) + f"; total {sum(counts.values())} nodes")
    estimate = gpu_hour_estimate(experiment.plan, experiment.spec)
    if estimate:
        table = Table(title="estimated GPU-hours (spec `gpu_hours`)")
        for column in ("stage", "nodes", "GPU-h per node", "GPU-h"):
            table.add_column(column, justify="right" if column != "stage" else "left")
        for row in estimate:
            table.add_row(row.stage, str(row.nodes), "?" if row.per_node is None else f"{row.per_node:.2f}",
                          "?" if row.hours is None else f"{row.hours:,.1f}")
        total = sum(row.hours or 0.0 for row in estimate)
        missing = [row.stage for row in estimate if row.hours is None]
        table.add_row("total", str(sum(row.nodes for row in estimate)), "", f"{total:,.1f}"
                      + (" (without " + ", ".join(missing) + ")" if missing else ""))
        out.print(table)


PLAN_TABLE_MAX = 200
"""Plans larger than this print counts and estimates only, unless --nodes."""


@dataclass(frozen=True)
class StageEstimate:
    """One stage's estimated cost (the spec's `gpu_hours`)."""

    stage: str
    nodes: int
    per_node: float | None
    """Mean GPU-hours per node; None where the spec gives no estimate for some node."""
    hours: float | None


def gpu_hour_estimate(plan: Plan, spec: Spec) -> list[StageEstimate]:
    """Per stage: node count, mean estimated GPU-hours per node, and the total (None
    where the spec gives no estimate for some node of the stage). Empty without any."""
    if not spec.gpu_hours:
        return []
    rows = []
    for stage, count in plan.counts().items():
        hours = [spec.gpu_hours_for(stage, node.task) for node in plan.nodes if node.stage == stage]
        known = None if any(h is None for h in hours) else sum(h for h in hours if h is not None)
        rows.append(StageEstimate(stage, count, None if known is None else known / count, known))
    return rows


