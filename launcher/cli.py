"""The `xstilts` command line.

Every command validates the spec, the storage URL and the cluster profile before it
touches storage; a problem with the user's input prints one message and exits with 2.
Nothing here imports torch, so commands start instantly on a login node.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from xstilts.core.errors import EXIT_USER_ERROR, UserError, unknown_choice
from xstilts.launcher.experiment import Experiment, open_experiment
from xstilts.core.plan import Node
from xstilts.core.state import STATUSES

app = typer.Typer(
    name="xstilts",
    help="Intermediate-task training grids for zero-shot cross-lingual transfer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
analysis_app = typer.Typer(help="Turn results into tidy data, tables, statistics, plots and a report.", no_args_is_help=True)
app.add_typer(analysis_app, name="analysis")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SpecArg = Annotated[str, typer.Argument(help="experiment spec YAML")]
OverrideOpt = Annotated[
    Optional[list[str]], typer.Option("--override", "-o", help="override a spec value: key.path=value (repeatable)")
]
LongOverrideOpt = Annotated[
    Optional[list[str]], typer.Option("--override", help="override a spec value: key.path=value (repeatable)")
]
"""For the analysis commands whose -o is their output (as in `collect -o FILE`)."""
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", "-p", help="cluster profile name or YAML path")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _open(spec: str, overrides: list[str] | None, profile: str | None = None) -> Experiment:
    return open_experiment(spec, overrides or [], profile)


# --------------------------------------------------------------------------------------
# plan


@app.command()
def plan(
    spec: SpecArg, override: OverrideOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False,
    all_nodes: Annotated[bool, typer.Option("--nodes", help="list every node even of a large plan")] = False,
) -> None:
    """Print the nodes the spec expands to (stage, tasks, seed, key, inputs), the node
    counts per stage and, with `gpu_hours` in the spec, the estimated GPU-hours."""
    experiment = _open(spec, override, profile)
    if as_json:
        print(json.dumps({**experiment.plan.to_json(), "gpu_hours": gpu_hour_estimate(experiment.plan, experiment.spec)},
                         indent=1))
        return
    from rich.table import Table

    if all_nodes or len(experiment.plan.nodes) <= PLAN_TABLE_MAX:
        table = Table(title=f"plan of '{experiment.spec.name}'")
        for column in ("key", "stage", "tasks", "seed", "inputs"):
            table.add_column(column)
        for node in experiment.plan.nodes:
            table.add_row(node.key, node.stage if node.kind is None else f"{node.stage}:{node.kind}", _tasks(node),
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
            table.add_row(row["stage"], str(row["nodes"]), "?" if row["per_node"] is None else f"{row['per_node']:.2f}",
                          "?" if row["hours"] is None else f"{row['hours']:,.1f}")
        total = sum(row["hours"] or 0.0 for row in estimate)
        missing = [row["stage"] for row in estimate if row["hours"] is None]
        table.add_row("total", str(sum(row["nodes"] for row in estimate)), "", f"{total:,.1f}"
                      + (" (without " + ", ".join(missing) + ")" if missing else ""))
        out.print(table)


PLAN_TABLE_MAX = 200
"""Plans larger than this print counts and estimates only, unless --nodes."""


def gpu_hour_estimate(plan: Any, spec: Any) -> list[dict[str, Any]]:
    """Per stage: node count, mean estimated GPU-hours per node, and the total (None
    where the spec gives no estimate for some node of the stage). Empty without any."""
    if not spec.gpu_hours:
        return []
    rows = []
    for stage, count in plan.counts().items():
        hours = [spec.gpu_hours_for(stage, node.task) for node in plan.nodes if node.stage == stage]
        known = None if any(h is None for h in hours) else sum(h for h in hours if h is not None)
        rows.append({"stage": stage, "nodes": count, "per_node": None if known is None else known / count,
                     "hours": known})
    return rows


def _tasks(node: Node) -> str:
    if node.stage in ("train-target", "evaluate"):
        return f"{node.intermediate} -> {node.task}"
    return node.task or "(model)"


# --------------------------------------------------------------------------------------
# launch


@app.command()
def launch(
    spec: SpecArg,
    override: OverrideOpt = None,
    profile: ProfileOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would run; submit and write nothing")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="stay until the grid finishes, then print the table")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="run failed nodes again")] = False,
) -> None:
    """Submit every node that is not done yet; skip the rest."""
    experiment = _open(spec, override, profile)
    if experiment.store.url.startswith("memory://"):
        raise UserError("storage: memory:// lives inside one process, so node processes cannot see it; "
                        "use a path, file://, s3:// or gs://")
    statuses = experiment.statuses(need_slurm=not dry_run)
    if experiment.profile.executor == "slurm":
        _launch_slurm(experiment, statuses, spec, dry_run, wait, retry_failed)
        return
    counts = Counter(status for status, _ in statuses.values())
    to_run = [n for n in experiment.plan.nodes if statuses[n.key][0] not in ("done", "running")
              and (retry_failed or statuses[n.key][0] != "failed")]
    summary = (f"{len(experiment.plan.nodes)} nodes: {len(to_run)} to run, {counts['done']} done (skipped), "
               f"{counts['running']} running elsewhere, {0 if retry_failed else counts['failed']} failed (skipped)")
    if dry_run:
        out.print(f"[dry run] {summary}")
        for node in to_run:
            out.print(f"  would run {node.label} [{node.key}]")
        return
    if not to_run and not counts["running"]:
        out.print(f"submitted 0 nodes; {summary}")
        if wait:
            _print_table(experiment)
        return
    experiment.materialize()
    from xstilts.launcher import local_runner

    if not wait:
        pid = local_runner.spawn_detached(experiment.store, experiment.spec.name, experiment.profile.name, retry_failed)
        out.print(f"submitted {len(to_run)} nodes to a local scheduler (pid {pid}); {summary}")
        out.print(f"follow with: xstilts status {spec} --watch")
        return
    out.print(f"submitted {len(to_run)} nodes; {summary}")
    started = time.time()
    total = len(experiment.plan.nodes)
    finished = [counts["done"]]

    def report(kind: str, node: Node, detail: str) -> None:
        if kind == "done":
            finished[0] += 1
        style = {"done": "green", "failed": "red", "interrupted": "yellow"}.get(kind, "dim")
        out.print(f"[{style}]{time.strftime('%H:%M:%S')} [{finished[0]:>3}/{total}] {kind:<11}[/{style}] "
                  f"{node.label} [{node.key[:8]}] {detail}")

    runner = local_runner.LocalRunner(experiment.store, experiment.plan, experiment.profile, retry_failed, report,
                                      extra_env=experiment.spec.checkpointing.env())
    result = runner.run()
    out.print(f"finished in {time.time() - started:.0f}s: {len(result.done)} done, {len(result.failed)} failed, "
              f"{len(result.blocked)} blocked by failed inputs" + (" (interrupted)" if result.interrupted else ""))
    _print_table(experiment)
    if not result.ok:
        raise typer.Exit(1)


def _launch_slurm(
    experiment: Experiment, statuses: dict[str, tuple[str, dict[str, Any]]], spec: str, dry_run: bool, wait: bool,
    retry_failed: bool,
) -> None:
    """Submit what is neither done nor queued/running in SLURM, as chained job arrays."""
    from xstilts.launcher import slurm
    from xstilts.core.state import record_submission

    live = {key for key, (status, _) in statuses.items() if status in slurm.LIVE or status == "running"}
    failed = {key for key, (status, _) in statuses.items() if status in ("failed", "cancelled")}
    candidates = [n for n in experiment.plan.nodes
                  if statuses[n.key][0] != "done" and n.key not in live and (retry_failed or n.key not in failed)]
    chosen: list[Node] = []
    blocked: list[Node] = []
    chosen_keys: set[str] = set()
    for node in candidates:  # plan order: inputs first
        ready = all(statuses[d.key][0] == "done" or d.key in live or d.key in chosen_keys for d in node.inputs.values())
        (chosen if ready else blocked).append(node)
        if ready:
            chosen_keys.add(node.key)
    live_jobs = {key: slurm.last_job_id(statuses[key][1]) or "" for key in live}
    size, size_source = slurm.max_array_size(experiment.profile)
    arrays = slurm.plan_arrays(chosen, {k: v for k, v in live_jobs.items() if v}, size)
    counts = Counter(status for status, _ in statuses.values())
    summary = (f"{len(experiment.plan.nodes)} nodes: {len(chosen)} to submit in {len(arrays)} arrays, "
               f"{counts['done']} done, {len(live)} queued or running in SLURM, "
               f"{len(failed) if not retry_failed else 0} failed or cancelled (skipped; --retry-failed runs them), "
               f"{len(blocked)} waiting for failed inputs")
    env = {**experiment.profile.env, **experiment.spec.checkpointing.env()}
    resources = experiment.spec.resources
    if dry_run:
        out.print(f"\\[dry run] {summary}; at most {size} tasks per array ({size_source})", soft_wrap=True)
        folder = slurm.log_folder(experiment.profile, experiment.spec.name)
        for array in arrays:
            res = slurm.stage_resources(experiment.profile, array.stage, resources.get(array.stage))  # type: ignore[call-overload]
            params = slurm.executor_parameters(res, experiment.profile, slurm.job_name(experiment.spec.name), env,
                                               slurm.dependency_string(array, arrays))
            out.print(f"\n[bold]array {array.index}[/bold]: {array.stage}, wave {array.wave}, {len(array.nodes)} "
                      f"tasks, after {[f'array {i}' for i in array.after] + array.after_jobs or 'nothing'}", soft_wrap=True)
            sys.stdout.flush()
            sys.stdout.write(slurm.render_sbatch(array, params, folder) + "\n")
        return
    if not arrays:
        out.print(f"submitted 0 nodes; {summary}")
        if wait:
            _wait_slurm(experiment)
        return
    experiment.materialize()

    def recorded(node: Node, job_id: str) -> None:
        record_submission(experiment.store, experiment.node_dir(node), job_id, "slurm")

    slurm.submit_arrays(arrays, experiment.store.url, experiment.spec.name, experiment.profile, env,
                        dict(resources), recorded)
    out.print(f"submitted {len(chosen)} nodes in {len(arrays)} arrays "
              f"({', '.join(f'{a.stage}:{a.job_id}' for a in arrays)}); {summary}")
    if not wait:
        out.print(f"follow with: xstilts status {spec} --watch")
        return
    _wait_slurm(experiment)


def _wait_slurm(experiment: Experiment, interval: float = 5.0) -> None:
    """Poll SLURM and the store until nothing of the experiment is queued or running."""
    from xstilts.launcher import slurm

    while True:
        statuses = experiment.statuses()
        counts = Counter(status for status, _ in statuses.values())
        if not any(status in slurm.LIVE or status == "running" for status, _ in statuses.values()):
            break
        out.print(f"{time.strftime('%H:%M:%S')} " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        time.sleep(interval)
    out.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    _print_table(experiment)
    if counts.get("done", 0) != len(statuses):
        raise typer.Exit(1)


def _print_table(experiment: Experiment) -> None:
    from xstilts.analysis.results import collect
    from xstilts.analysis.table import CAPTION, paper_table, render_rich

    rows = collect(experiment)
    table = paper_table(rows, experiment.spec.intermediate.tasks, experiment.spec.target.tasks)
    out.print(f"[bold]{experiment.spec.name}: zero-shot cross-lingual transfer[/bold]")
    out.print(render_rich(table))
    out.print(f"[dim]{CAPTION}[/dim]")


# --------------------------------------------------------------------------------------
# status


def _headline(node: Node, result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    if node.stage == "evaluate" and "average" in result:
        return f"{result.get('metric', '')} {result['average']:.1f}"
    if node.stage == "tune" and "best" in result:
        stopped = sum(1 for trial in result.get("trials", []) if trial.get("stopped_early"))
        chosen = ", ".join(f"{k}={v:g}" for k, v in result["best"].items())
        return f"{chosen} (dev {result['best_metric']:.1f}; {len(result.get('trials', []))} trials, {stopped} stopped)"
    dev = result.get("dev")
    if isinstance(dev, dict) and dev:
        name, value = next(iter(dev.items()))
        return f"dev {name} {value:.1f}"
    return ""


def _search_headline(progress: dict[str, Any]) -> str:
    """A running (or stopped) search: trials by state and the best so far."""
    parts = [f"search {progress.get('finished', 0)}/{progress.get('planned', 0)} finished"]
    if progress.get("stopped_early"):
        parts[0] += f" ({progress['stopped_early']} stopped early)"
    for state in ("running", "pending", "errored"):
        if progress.get(state):
            parts.append(f"{progress[state]} {state}")
    if progress.get("best"):
        chosen = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                           for k, v in progress["best"].items())
        parts.append(f"best {chosen} (dev {progress['best_metric']:.1f})")
    return "; ".join(parts)


def _search_progress(experiment: Experiment, node: Node, status: str) -> dict[str, Any] | None:
    """What `xstilts.jobs.tune_progress` last wrote for a tune node that has started but is not done."""
    if node.stage != "tune" or status in ("done", "pending", "queued", "blocked"):
        return None
    progress = experiment.store.read_json(f"{experiment.node_dir(node)}/progress.json")
    return progress if isinstance(progress, dict) else None


def _elapsed(state: dict[str, Any]) -> float | None:
    attempts = state.get("attempts") or []
    if not attempts:
        return None
    last = attempts[-1]
    return (last.get("ended") or time.time()) - last["started"]


def status_rows(experiment: Experiment) -> list[dict[str, Any]]:
    rows = []
    statuses = experiment.statuses()
    for node in experiment.plan.nodes:
        status, state = statuses[node.key]
        result = experiment.result(node) if status == "done" else None
        progress = _search_progress(experiment, node, status)
        elapsed = _elapsed(state)
        rows.append({
            "key": node.key, "stage": node.stage, "kind": node.kind, "task": node.task,
            "intermediate": node.intermediate, "seed": node.seed, "label": node.label, "status": status,
            "attempts": len(state.get("attempts") or []), "elapsed_s": None if elapsed is None else round(elapsed, 1),
            "headline": _search_headline(progress) if progress else _headline(node, result),
            "search": progress,
            "last_error": (state.get("reason") or state.get("last_error")) if status in ("failed", "cancelled") else None,
            "log_tail": _log_tail(experiment, node) if status == "failed" else None,
        })
    return rows


def _status_table(experiment: Experiment, rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    colours = {"done": "green", "running": "cyan", "failed": "red", "interrupted": "yellow", "preempted": "yellow",
               "queued": "blue"}
    table = Table(title=f"{experiment.spec.name} ({experiment.store.url})")
    for column in ("key", "stage", "tasks", "seed", "state", "attempts", "elapsed", "metric"):
        table.add_column(column)
    for row, node in zip(rows, experiment.plan.nodes):
        colour = colours.get(row["status"], "white")
        table.add_row(row["key"][:8], row["stage"] if not row["kind"] else f"{row['stage']}:{row['kind']}",
                      _tasks(node), "" if row["seed"] is None else str(row["seed"]),
                      f"[{colour}]{row['status']}[/{colour}]", str(row["attempts"]),
                      "" if row["elapsed_s"] is None else f"{row['elapsed_s']:.0f}s", row["headline"])
    return table


def _failures(rows: list[dict[str, Any]]) -> str:
    """Why each failed node failed, and the end of its log."""
    from rich.markup import escape

    parts = []
    for row in rows:
        if row["status"] in ("failed", "cancelled") and (row["last_error"] or row["log_tail"]):
            parts.append(f"[red]{row['status']}[/red] " + escape(f"{row['label']} [{row['key'][:8]}]: {row['last_error'] or ''}"))
            if row["log_tail"]:
                parts.append("\n".join(f"    {escape(line)}" for line in row["log_tail"].splitlines()))
    return "\n".join(parts)


def _summary_line(rows: list[dict[str, Any]]) -> str:
    counts = Counter(row["status"] for row in rows)
    parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s]]
    return f"{len(rows)} nodes: " + ", ".join(parts)


@app.command()
def status(
    spec: SpecArg,
    override: OverrideOpt = None,
    as_json: JsonOpt = False,
    watch: Annotated[bool, typer.Option("--watch", help="refresh until every node has finished")] = False,
    interval: Annotated[float, typer.Option(help="seconds between refreshes with --watch (at least 2)")] = 5.0,
) -> None:
    """Show every node's state, attempts, elapsed time and headline metric."""
    experiment = _open(spec, override)
    if as_json:
        rows = status_rows(experiment)
        counts = Counter(row["status"] for row in rows)
        print(json.dumps({"experiment": experiment.spec.name, "counts": dict(counts), "nodes": rows}, indent=1))
        return
    if not watch:
        rows = status_rows(experiment)
        out.print(_status_table(experiment, rows))
        failures = _failures(rows)
        if failures:
            out.print(failures, markup=True, highlight=False)
        out.print(_summary_line(rows))
        return
    from rich.console import Group
    from rich.live import Live

    with Live(console=out, auto_refresh=False) as live:
        while True:
            rows = status_rows(experiment)
            live.update(Group(_status_table(experiment, rows), _failures(rows), _summary_line(rows)), refresh=True)
            if all(row["status"] in ("done", "failed", "cancelled") for row in rows):
                break
            time.sleep(max(2.0, interval))


# --------------------------------------------------------------------------------------
# tasks


@app.command()
def tasks(
    role: Annotated[Optional[str], typer.Option(help="only tasks usable as 'intermediate' or 'target'")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The task registry: name, kind, roles, English training data, languages, metric."""
    from xstilts.core.tasks import TASKS, task_names

    if role not in (None, "intermediate", "target"):
        raise UserError(unknown_choice("role", str(role), ["intermediate", "target"]))
    names = task_names(role)
    if as_json:
        print(json.dumps([{
            "name": n, "kind": TASKS[n].kind, "roles": list(TASKS[n].roles), "modality": TASKS[n].modality,
            "english_training_data": TASKS[n].english_training_data, "languages": list(TASKS[n].languages),
            "metric": TASKS[n].metric,
        } for n in names], indent=1))
        return
    from rich.table import Table

    table = Table(title="registered tasks (intermediate row 'none' = no intermediate training)")
    for column in ("name", "kind", "roles", "English training data", "languages", "metric"):
        table.add_column(column)
    for name in names:
        task = TASKS[name]
        table.add_row(name, task.kind, "/".join(task.roles), task.english_training_data or "-",
                      f"{len(task.languages)}: {' '.join(task.languages)}", task.metric)
    out.print(table)


# --------------------------------------------------------------------------------------
# cancel, logs


@app.command()
def cancel(spec: SpecArg, override: OverrideOpt = None) -> None:
    """Stop this experiment's running nodes (and its local scheduler); nothing else."""
    from xstilts.launcher.local_runner import stop_local_nodes

    experiment = _open(spec, override)
    if experiment.profile.executor == "slurm":
        from xstilts.launcher import slurm

        result = slurm.cancel(experiment.spec.name)
        if result.returncode != 0:
            raise UserError(f"scancel failed: {result.stderr.strip()}")
        out.print(f"cancelled the SLURM jobs named {slurm.job_name(experiment.spec.name)}")
        return
    stopped = stop_local_nodes(experiment.store, experiment.plan)
    out.print(f"cancelled {len(stopped)} running nodes of '{experiment.spec.name}'")
    for node in stopped:
        out.print(f"  {node.label} [{node.key[:8]}]")


def node_logs(experiment: Experiment, node: Node) -> list[tuple[str, str]]:
    """(name, text) of a node's logs, oldest first: those in the store, else the local
    runner's files or SLURM's log files of its submissions."""
    from xstilts.launcher.local_runner import local_log_path

    folder = experiment.store.node_path(node.stage, node.key, "logs")
    names = sorted(n for n in experiment.store.list(folder) if n.endswith(".log"))
    texts: list[tuple[str, str]] = [(n, experiment.store.read_text(f"{folder}/{n}") or "") for n in names]
    if texts:
        return texts
    state = experiment.store.read_json(f"{experiment.node_dir(node)}/state.json") or {}
    for submission in state.get("submissions", []):
        if submission.get("executor") == "slurm":
            from xstilts.launcher.slurm import log_folder

            path = log_folder(experiment.profile, experiment.spec.name) / f"{submission['job_id']}_0_log.out"
        else:
            path = local_log_path(experiment.store, node, submission["job_id"])
        if path.exists():
            texts.append((path.name, path.read_text(errors="replace")))
    return texts


def _log_tail(experiment: Experiment, node: Node, lines: int = 8) -> str | None:
    texts = node_logs(experiment, node)
    return "\n".join(texts[-1][1].rstrip().splitlines()[-lines:]) if texts else None


@app.command()
def logs(
    spec: SpecArg,
    node: Annotated[str, typer.Argument(help="node key or unique key prefix (see `xstilts status`)")],
    override: OverrideOpt = None,
    all_attempts: Annotated[bool, typer.Option("--all", help="every attempt, not only the newest")] = False,
) -> None:
    """Print a node's log."""
    experiment = _open(spec, override)
    target = experiment.plan.find(node)
    texts = node_logs(experiment, target)
    if not texts:
        raise UserError(f"no log yet for {target.label} [{target.key}]: it has not started")
    for name, text in texts if all_attempts else texts[-1:]:
        out.print(f"[dim]==> {target.label} [{target.key}] {name}[/dim]")
        sys.stdout.write(text)


# --------------------------------------------------------------------------------------
# score


@app.command()
def score(
    predictions: Annotated[str, typer.Option("--predictions", help="submission folder: <task>/test-<lang>.<ext>")],
    gold: Annotated[str, typer.Option("--gold", help="label folder in the same layout")],
    suite: Annotated[str, typer.Option("--suite", help="xtreme or xtreme-r")] = "xtreme",
    as_json: JsonOpt = False,
) -> None:
    """Score predictions in the official XTREME / XTREME-R layout, as the leaderboard does."""
    from xstilts.analysis.score import available_tasks, score_submission, suite_tables

    task_langs, groups = suite_tables(suite)
    present, skipped = available_tasks(predictions, gold, suite)
    result = score_submission(predictions, gold, suite)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_scores(result, suite, task_langs, groups, present, skipped)


def _print_scores(result: dict[str, Any], suite: str, task_langs: dict[str, tuple[str, ...]],
                  groups: dict[str, tuple[str, ...]], present: list[str], skipped: list[str]) -> None:
    from rich.table import Table

    for task in present:
        scores = result[task]
        keys = [k for k in scores if not k.startswith("avg_")]
        table = Table(title=f"{task}: {scores['avg_metric']:.2f}", title_justify="left", min_width=24)
        table.add_column("lang")
        for key in keys:
            table.add_column(key, justify="right")
        for lang in task_langs[task]:
            table.add_row(lang, *(f"{scores[k][lang]:.2f}" for k in keys))
        table.add_row("avg", *(f"{scores[f'avg_{k}']:.2f}" for k in keys), style="bold")
        out.print(table)
    summary = Table(title=f"{suite} scores", title_justify="left")
    summary.add_column("group")
    summary.add_column("tasks")
    summary.add_column("score", justify="right")
    for group, tasks in groups.items():
        value = result.get(group)
        summary.add_row(group, " ".join(tasks), "-" if value is None else f"{value:.2f}")
    overall = result.get("all_task")
    summary.add_row("all_task", f"all {len(task_langs)} tasks", "-" if overall is None else f"{overall:.2f}", style="bold")
    out.print(summary)
    if skipped:
        out.print(f"not scored (no folder in predictions or gold): {', '.join(skipped)}; "
                  "group and overall scores need every task they average")


# --------------------------------------------------------------------------------------
# analysis


def _frame(experiment: Experiment, no_cache: bool = False) -> Any:
    """The experiment's tidy results (`xstilts.analysis.collect`), read in parallel and cached."""
    from xstilts.analysis.collect import collect_frame

    try:
        return collect_frame(experiment, use_cache=not no_cache)
    except ValueError as exc:  # a finished node whose result.json is missing or unreadable
        raise UserError(f"results of '{experiment.spec.name}': {exc}") from None
    except OSError as exc:
        raise UserError(f"storage: cannot read {experiment.store.url}: {exc}") from None


def _missing_note(experiment: Experiment) -> tuple[Any, str]:
    """Unfinished evaluate nodes, and one line saying what is missing ("" if nothing)."""
    from xstilts.analysis.collect import missing_cells

    missing = missing_cells(experiment)
    if len(missing) == 0:
        return missing, ""
    counts = missing["status"].value_counts()
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    return missing, f"{len(missing)} of {len(experiment.plan.evaluations())} evaluations missing ({parts})"


NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="read every node again (ignore the rows cache)")]


@analysis_app.command("collect")
def analysis_collect(
    spec: SpecArg, override: LongOverrideOpt = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="file to write (default: print CSV)")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="csv | parquet | json (default: from -o's suffix)")] = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """One tidy table of every result: intermediate, target, seed, language, metric, value,
    node key, modality, cost."""
    from xstilts.analysis.collect import FORMATS, write_frame

    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"--format: unknown format '{fmt}'; valid: {', '.join(FORMATS)}")
    experiment = _open(spec, override)
    frame = _frame(experiment, no_cache)
    _, note = _missing_note(experiment)
    if output is None:
        if fmt not in (None, "csv"):
            raise UserError(f"--format {fmt} needs -o FILE (only csv prints to the terminal)")
        sys.stdout.write(frame.to_csv(index=False))
    else:
        try:
            with _writing_to(output):
                write_frame(frame, output, fmt)
        except ValueError as exc:
            raise UserError(f"-o {output}: {exc}") from None
        err.print(f"{len(frame)} rows -> {output}")
    if note:
        err.print(f"[yellow]{note}[/yellow]")


@analysis_app.command("table")
def analysis_table(
    spec: SpecArg, override: OverrideOpt = None, as_json: JsonOpt = False,
    fmt: Annotated[str, typer.Option("--format", help="rich | md | csv | latex | json")] = "rich",
    no_cache: NoCacheOpt = False,
) -> None:
    """The paper-style table: intermediate tasks x target tasks and their average, mean ±
    std over seeds, delta vs none, best per column marked; missing cells say why."""
    from xstilts.analysis.table import CAPTION, FORMATS, missing_reasons, paper_table, render_csv, render_latex
    from xstilts.analysis.table import render_markdown, render_rich

    fmt = "json" if as_json else fmt
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format '{fmt}'; valid: {', '.join(FORMATS)}")
    experiment = _open(spec, override)
    missing, note = _missing_note(experiment)
    table = paper_table(_frame(experiment, no_cache), experiment.spec.intermediate.tasks,
                        experiment.spec.target.tasks, missing_reasons(missing))
    if fmt == "json":
        print(json.dumps(table.to_json(), indent=1))
    elif fmt == "md":
        sys.stdout.write(render_markdown(table))
    elif fmt == "csv":
        sys.stdout.write(render_csv(table))
    elif fmt == "latex":
        sys.stdout.write(render_latex(table))
    else:
        out.print(f"[bold]{experiment.spec.name}: zero-shot cross-lingual transfer[/bold]")
        out.print(render_rich(table))
        out.print(f"[dim]{CAPTION}[/dim]")
    if note:
        err.print(f"[yellow]{note}[/yellow]")


@analysis_app.command("compare")
def analysis_compare(
    spec: SpecArg, override: OverrideOpt = None, as_json: JsonOpt = False,
    by: Annotated[str, typer.Option("--by", help="what to compare: modality")] = "modality",
    boot: Annotated[int, typer.Option("--bootstrap", help="bootstrap resamples")] = 10000,
    no_cache: NoCacheOpt = False,
) -> None:
    """The research question: mean delta of multimodal against text-only intermediate
    tasks (and each multimodal task against its control), 95% bootstrap intervals over
    targets and seeds, a paired test per target, and a per-language breakdown."""
    from xstilts.analysis.stats import compare_by_modality

    if by != "modality":
        raise UserError(f"--by: unknown grouping '{by}'; valid: modality")
    experiment = _open(spec, override)
    _, note = _missing_note(experiment)
    comparison = compare_by_modality(_frame(experiment, no_cache), n_boot=boot)
    if as_json:
        print(json.dumps({**comparison.to_json(), "missing": note or None}, indent=1))
    else:
        sys.stdout.write(comparison.render_text().rstrip() + "\n")
    if note:
        err.print(f"[yellow]{note}: the comparison uses the finished cells only[/yellow]")


@contextmanager
def _writing_to(output: Path) -> Iterator[None]:
    """An -o path that cannot be written (a missing or read-only folder, a full disk) is
    the user's to fix: one message naming the path, exit code 2. The writers replace
    files atomically, so nothing half-written is left behind."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"-o {output}: cannot write {exc.filename or output}: {exc.strerror or exc}") from None


@analysis_app.command("plot")
def analysis_plot(
    spec: SpecArg, override: LongOverrideOpt = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="folder for the figures (PNG and SVG)")] = Path("figures"),
    target: Annotated[Optional[str], typer.Option("--target", help="target of the per-language bars")] = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Figures: delta heatmap, per-language bars, training curves, learning-rate sensitivity."""
    from xstilts.analysis.plots import plot_all

    experiment = _open(spec, override)
    if target is not None and target not in experiment.spec.target.tasks:
        raise UserError(f"--target: {unknown_choice('target', target, experiment.spec.target.tasks)}")
    _, note = _missing_note(experiment)
    frame = _frame(experiment, no_cache)
    with _writing_to(output):
        written = plot_all(experiment, frame, output, target=target)
    for path in written:
        out.print(str(path))
    if note:
        err.print(f"[yellow]{note}[/yellow]")


@analysis_app.command("report")
def analysis_report(
    spec: SpecArg, override: LongOverrideOpt = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="the Markdown file to write")] = Path("report.md"),
    no_cache: NoCacheOpt = False,
) -> None:
    """A Markdown report: the table, the modality comparison and the figures."""
    from xstilts.analysis.report import write_report

    experiment = _open(spec, override)
    frame = _frame(experiment, no_cache)
    with _writing_to(output):
        path = write_report(experiment, frame, output)
    out.print(str(path))


def main() -> None:
    """Console-script entry: user errors become one message and exit code 2."""
    try:
        app()
    except UserError as exc:
        from rich.text import Text

        err.print(Text.assemble(("error: ", "bold red"), str(exc)))
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
