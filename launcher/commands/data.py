"""`xstilts data check SPEC`: is every split the spec needs readable, before a long run?

Why a command: a grid of hundreds of GPU-hours should not learn at its first prepare
node, on a compute node, that `xnli/test-de.tsv` is missing or that `data_dir` points
at the folder above `download/`. This loads every split of every task the plan prepares
(the prepare-data nodes of `build_plan`), exactly as the prepare stage will (same
loaders, same `data_dir` and pinned revision), without tokenizing or training, and
reports per task and split: found (example counts per language), gold withheld (the
official layout strips test labels: predictable, not scoreable; not an error), or
missing with the paths tried, what exists there instead, and the known mistakes it
matches. Exit code 2 when anything is missing.

Layers: the loaders are `xstilts.jobs.tasks.sources` (torch-free, but the jobs layer,
which the launcher may not import), so the wiring (`xstilts.cli`) hands them in as a
`TaskData`, as it hands `launch` its results printer. `launch` uses the cheap part of
the same check (do the local files exist; no loading) to refuse a spec whose data is
missing before it submits anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import typer

from xstilts.core.data_files import caption_split_files, folder_stamps, task_folders
from xstilts.core.errors import EXIT_USER_ERROR, UserError
from xstilts.core.captions import get_caption_dataset, is_generated
from xstilts.core.nodes import PrepareDataConfig
from xstilts.core.plan import Plan
from xstilts.core.tasks import Task, get_task
from xstilts.launcher.commands.common import JsonOpt, OverrideOpt, ProfileOpt, SpecArg, err, open_spec, out, styled

if TYPE_CHECKING:
    from rich.text import Text


class Loaded(Protocol):
    """What `sources.load_split` returns (`sources.LoadedSplit`), as far as the check reads it."""

    @property
    def examples(self) -> list[Any]: ...

    @property
    def gold_withheld(self) -> bool: ...

    @property
    def files(self) -> tuple[str, ...]: ...

    @property
    def note(self) -> str: ...


@dataclass(frozen=True)
class TaskData:
    """The jobs layer's loaders, handed in by the wiring (`xstilts.cli.task_data`).

    `load_split(task, split, lang, data_dir, revision)`: `sources.load_split`.
    `alternatives(task, split, lang)`: the local path groups tried, in order, each a
    tuple of paths relative to data_dir that together hold the split (`sources._alternatives`).
    """

    load_split: Callable[[Task, str, str, str | None, str | None], Loaded]
    alternatives: Callable[[Task, str, str], Sequence[tuple[str, ...]]]


Status = Literal["found", "withheld", "missing"]


@dataclass(frozen=True)
class SplitCheck:
    """One split of one language: found (with its example count), found with gold
    withheld, or missing (the local path groups tried, or the hub's one-line reason)."""

    split: str
    lang: str
    status: Status
    examples: int | None = None
    files: list[str] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)
    reason: str = ""
    note: str = ""
    """A choice the loader made that the user should know (TyDiQA's English dev held out of train)."""


@dataclass(frozen=True)
class TaskCheck:
    """Every split and language of one task, and what to tell a user whose data is missing."""

    task: str
    source: str
    """Where it is read from: 'data_dir', 'hub', 'generated'."""
    revision: str | None
    checks: list[SplitCheck]
    found_instead: list[str] = field(default_factory=list)
    """When something is missing: the files under the task's folders that no expected
    path names, i.e. what the official script (or the user) left there instead."""
    hints: list[str] = field(default_factory=list)
    """Known mistakes the layout matches (data_dir one level off, an unfinished download)."""

    @property
    def ok(self) -> bool:
        return all(check.status != "missing" for check in self.checks)


# --------------------------------------------------------------------------- the check


def needed_tasks(plan: Plan) -> list[tuple[Task, PrepareDataConfig]]:
    """The task and config of every prepare-data node: what the spec will read."""
    needed = []
    for node in plan.nodes:
        if node.stage == "prepare" and node.kind == "data" and isinstance(node.config, PrepareDataConfig):
            needed.append((get_task(node.config.task), node.config))
    return needed


def source_of(task: Task, data_dir: str | None) -> str:
    if task.source.kind == "synthetic" or (task.source.kind == "captions" and is_generated(task.source.name)):
        return "generated"
    return "data_dir" if data_dir is not None else "hub"


def check_task(task: Task, data_dir: str | None, revision: str | None, loaders: TaskData) -> TaskCheck:
    """Load every split and language of `task` once, as the prepare stage will."""
    checks: list[SplitCheck] = []
    for split in task.splits:
        for lang in task.split_languages(split):
            try:
                loaded = loaders.load_split(task, split, lang, data_dir, revision)
            except Exception as exc:  # noqa: BLE001 (every failure to load is a finding of the check)
                tried = expected_paths(task, split, lang, loaders) if data_dir is not None else []
                checks.append(SplitCheck(split, lang, "missing", tried=tried, reason=one_line(exc)))
                continue
            status: Status = "withheld" if loaded.gold_withheld else "found"
            checks.append(SplitCheck(split, lang, status, examples=len(loaded.examples), files=list(loaded.files),
                                     note=loaded.note))
    result = TaskCheck(task.name, source_of(task, data_dir), revision, checks)
    if result.ok or data_dir is None or result.source == "generated":
        return result
    folders = task_folders(task)
    expected = {path for split in task.splits for lang in task.split_languages(split)
                for group in expected_groups(task, split, lang, loaders) for path in group}
    found = [stamp.path for stamp in folder_stamps(data_dir, folders) if stamp.path not in expected]
    return TaskCheck(task.name, result.source, revision, checks, found_instead=found,
                     hints=layout_hints(Path(data_dir), folders))


def expected_groups(task: Task, split: str, lang: str, loaders: TaskData) -> list[tuple[str, ...]]:
    """The local path groups tried for (split, lang), relative to data_dir, in order;
    every file of a group must exist."""
    if task.source.kind == "captions":
        return [(path,) for path in caption_split_files(task.source.name, (split,))]
    return list(loaders.alternatives(task, split, lang))


def expected_paths(task: Task, split: str, lang: str, loaders: TaskData) -> list[str]:
    """`expected_groups` as text, a group's files joined with ' + '."""
    return [" + ".join(group) for group in expected_groups(task, split, lang, loaders)]


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


OFFICIAL_TEMPORARY: dict[str, tuple[str, ...]] = {
    "xnli": ("xnli-tmp",),
    "pawsx": ("x-final", "x-final.tar.gz"),
    "udpos": ("udpos-tmp",),
    "panx": ("panx_dataset", "AmazonPhotos.zip"),
    "tatoeba": ("tatoeba-tmp",),
}
"""What google-research/xtreme's `scripts/download_data.sh` leaves beside a task's folder
while it runs, and removes when the step succeeds (PAN-X: the archive a user downloads
by hand, which the script then unpacks into `panx_dataset/`)."""


def layout_hints(data_dir: Path, folders: tuple[str, ...]) -> list[str]:
    """Known mistakes the layout under `data_dir` matches, each a sentence with its fix."""
    hints = []
    if data_dir.is_dir():
        for child in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            held = [folder for folder in folders if (child / folder).is_dir()]
            if held:
                hints.append(f"data_dir is one level above the data: {child} holds {', '.join(f + '/' for f in held)} "
                             f"(the official script writes to download/); set data_dir: {child}")
    beside = [folder for folder in folders if (data_dir.parent / folder).is_dir() and data_dir.parent != data_dir]
    if beside:
        hints.append(f"data_dir is one level below the data: {data_dir.parent} holds "
                     f"{', '.join(f + '/' for f in beside)}; set data_dir: {data_dir.parent}")
    for folder in folders:
        for leftover in OFFICIAL_TEMPORARY.get(folder, ()):
            if (data_dir / leftover).exists() and not (data_dir / folder).is_dir():
                hints.append(f"{data_dir / leftover} is what scripts/download_data.sh leaves while it prepares "
                             f"{folder}/ (or when that step failed): run the script's {folder} step to completion")
    return hints


def check_plan(plan: Plan, loaders: TaskData, on_checked: Callable[[int, int], None] | None = None) -> list[TaskCheck]:
    """Every task the plan prepares, checked; `on_checked(checked, total)` after each (a
    progress bar: loading a hub task's splits can take minutes)."""
    needed = needed_tasks(plan)
    results = []
    for task, config in needed:
        results.append(check_task(task, config.data_dir, config.data_revision, loaders))
        if on_checked is not None:
            on_checked(len(results), len(needed))
    return results


# --------------------------------------------------------------------------- launch's cheap part


def missing_local_files(plan: Plan, loaders: TaskData) -> list[str]:
    """For tasks read from data_dir: 'task split (langs): expected ...' for every split
    whose files do not exist (stat calls only; nothing is read). Hub tasks are not
    checked here: that needs loading (`xstilts data check`)."""
    problems = []
    for task, config in needed_tasks(plan):
        data_dir = config.data_dir
        if data_dir is None:
            continue
        root = Path(data_dir)
        for split in task.splits:
            langs = task.split_languages(split)
            if task.source.kind == "captions" and split not in get_caption_dataset(task.source.name).splits:
                continue
            groups = {lang: expected_groups(task, split, lang, loaders) for lang in langs}
            missing = [lang for lang in langs
                       if not any(all((root / path).is_file() for path in group) for group in groups[lang])]
            if missing:
                expected = " or ".join(" + ".join(group) for group in groups[missing[0]])
                problems.append(f"{task.name} {split} ({', '.join(missing)}): expected {expected}"
                                + (f" (for {missing[0]}; likewise the others)" if len(missing) > 1 else ""))
    return problems


def check_before_launch(plan: Plan, data_dir: str | None, loaders: TaskData) -> None:
    """`UserError` naming what is missing, before anything is submitted or written."""
    problems = missing_local_files(plan, loaders)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise UserError(f"data_dir {data_dir}: data missing for this spec: {shown}; "
                        "`xstilts data check SPEC` shows what is there instead")


# --------------------------------------------------------------------------- the command


def _counts(checks: list[SplitCheck]) -> str:
    return " · ".join(f"{c.lang} {c.examples:,}" for c in checks if c.examples is not None)


def _status(checks: list[SplitCheck]) -> Text:
    missing = [c for c in checks if c.status == "missing"]
    withheld = [c for c in checks if c.status == "withheld"]
    if missing:
        return styled(("missing", "red"), f" {len(missing)} of {len(checks)}")
    if withheld:
        every = len(withheld) == len(checks)
        return styled(("found, gold withheld", "yellow"), "" if every else f" in {len(withheld)} of {len(checks)}")
    return styled(("found", "green"))


def print_task(check: TaskCheck) -> None:
    from rich.table import Table

    title = f"{check.task} ({check.source}{'' if check.revision is None else ', revision ' + check.revision})"
    table = Table(title=title, title_justify="left")
    for column in ("split", "status", "examples per language"):
        table.add_column(column)
    for split in dict.fromkeys(c.split for c in check.checks):
        checks = [c for c in check.checks if c.split == split]
        table.add_row(split, _status(checks), _counts(checks))
    out.print(table)
    for split in dict.fromkeys(c.split for c in check.checks):
        missing = [c for c in check.checks if c.split == split and c.status == "missing"]
        if not missing:
            continue
        langs = ", ".join(c.lang for c in missing)
        out.print(f"  {check.task} {split}: missing in {langs}")
        if missing[0].tried:
            which = "" if len(missing) == 1 else f" (for {missing[0].lang}; likewise the others)"
            out.print(f"    expected{which}: {' or '.join(missing[0].tried)}")
        else:
            out.print(f"    {missing[0].reason}")
    if check.found_instead:
        shown = check.found_instead[:12]
        more = f" (and {len(check.found_instead) - len(shown)} more)" if len(check.found_instead) > len(shown) else ""
        out.print(f"  found instead (no expected path names these): {', '.join(shown)}{more}")
    for note in dict.fromkeys(c.note for c in check.checks if c.note):
        out.print(f"  note: {note}")
    for hint in check.hints:
        out.print(f"  hint: {hint}")


def make_app(task_data: Callable[[], TaskData]) -> typer.Typer:
    """The `data` sub-app; `task_data` (from the wiring) gives the loaders, imported
    only when a command runs."""
    app = typer.Typer(help="Check the benchmark data a spec needs.", no_args_is_help=True, rich_markup_mode=None)

    @app.command()
    def check(spec: SpecArg, override: OverrideOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
        """Load every task and split the spec needs (hub or data_dir), without training:
        per task found / missing (with the paths tried) / gold withheld, and the
        example counts per language. Exit code 2 if anything is missing."""
        experiment = open_spec(spec, override, profile, reads_store=False)
        from xstilts.core.progress import ProgressReport

        with ProgressReport(err, f"{experiment.spec.name}: checking data", total=0, transient=True) as bar:
            results = check_plan(experiment.plan, task_data(), lambda checked, total: bar.update(checked, total=total))
        missing = [f"{r.task} {c.split}/{c.lang}" for r in results for c in r.checks if c.status == "missing"]
        if as_json:
            print(json.dumps({"experiment": experiment.spec.name, "data_dir": experiment.spec.data_dir,
                              "ok": not missing,
                              "tasks": [{**asdict(r), "ok": r.ok} for r in results]}, indent=1))
        else:
            where = experiment.spec.data_dir or "the Hugging Face hub (offline: its local cache)"
            out.print(f"data of '{experiment.spec.name}' from {where}")
            for result in results:
                print_task(result)
            if not missing:
                out.print(f"all data found: {len(results)} tasks")
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            err.print(f"error: data missing: {shown}" + ("" if as_json else " (details above)"))
            raise typer.Exit(EXIT_USER_ERROR)

    return app
