"""What a report must say about how its numbers were made: model, hyperparameters (tuned
values marked), seeds, data sources and revisions, code versions and the compute spent.

Read from the spec, the plan and the store only (prepare and tune nodes' results, the
attempts in every node's state), so a report can be rewritten at any point of a run:
what is not known yet says so. Each fact is a small dataclass; `xstilts.analysis.report`
renders them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xstilts.core.spec import Hyperparameters, Search, Spec, StageSpec
from xstilts.core.stages import StageName

if TYPE_CHECKING:
    from xstilts.launcher.experiment import Experiment

UNKNOWN_CODE = "unknown (before provenance)"
"""The code version of an attempt whose state carries no `provenance` (written before it existed)."""

Statuses = Mapping[str, tuple[str, dict[str, Any]]]


# ----------------------------------------------------------------------------- model


def model_line(spec: Spec) -> str:
    """The encoder in words: its hub name or path, or the tiny config it was built from."""
    model = spec.model
    if model.name:
        text = f"`{model.name}`"
    else:
        config = ", ".join(f"{k}={v}" for k, v in (model.tiny or {}).items())
        text = f"tiny XLM-R built from the spec ({config}; {model.pretrain_steps} masked-LM pretraining steps)"
    if spec.vision is not None:
        vision = f"`{spec.vision.name}`" if spec.vision.name else f"tiny random CLIP tower (seed {spec.vision.seed})"
        text += f"; vision encoder {vision}, prefix length {spec.vision.prefix_length}"
    return text


# ----------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class TunedChoice:
    """What one finished tune node chose, for the training nodes that read it."""

    stage: str  # "intermediate" or "target"
    label: str  # the task, or `intermediate -> task` for a per-cell search
    best: dict[str, Any]
    best_metric: float | None
    metric: str


@dataclass(frozen=True)
class StageHyperparameters:
    """One training stage's hyperparameters as the spec gives them, which of them its
    search replaces, per-task overrides, and the values its tune nodes chose so far."""

    stage: str
    hparams: Hyperparameters
    per_task: dict[str, dict[str, Any]]
    search: Search | None
    tuned: list[TunedChoice]
    tune_nodes: int

    @property
    def searched(self) -> list[str]:
        return sorted(self.search.space) if self.search else []


def _stage_spec(spec: Spec, stage: str) -> StageSpec:
    return spec.intermediate if stage == "intermediate" else spec.target


def hyperparameters(experiment: Experiment) -> list[StageHyperparameters]:
    """Per training stage: the spec's values and the tune nodes' choices (finished ones)."""
    spec = experiment.spec
    tuned: dict[str, list[TunedChoice]] = defaultdict(list)
    tune_nodes: Counter[str] = Counter()
    for node in experiment.plan.nodes:
        if node.stage != "tune":
            continue
        role = str(getattr(node.config, "role", "target"))
        tune_nodes[role] += 1
        result = experiment.result(node)
        if not result or not isinstance(result.get("best"), dict):
            continue
        label = str(node.task) if node.intermediate is None else f"{node.intermediate} -> {node.task}"
        best_metric = result.get("best_metric")
        tuned[role].append(TunedChoice(role, label, dict(result["best"]),
                                       float(best_metric) if isinstance(best_metric, (int, float)) else None,
                                       str(result.get("metric", ""))))
    return [StageHyperparameters(stage, _stage_spec(spec, stage).hparams, dict(_stage_spec(spec, stage).per_task),
                                 _stage_spec(spec, stage).search, tuned[stage], tune_nodes[stage])
            for stage in ("intermediate", "target")]


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSource:
    """Where one task's prepared examples came from."""

    task: str
    origin: str  # "hub", "data_dir", "generated"
    requested_revision: str | None
    resolved: list[str]  # "dataset[/config] @ revision" per hub dataset, as loaded
    files_signature: str | None
    prepared: bool


def _origin(task: str) -> str:
    """Where a task without `data_dir` reads its examples (`core.tasks.DataSource.kind`)."""
    from xstilts.core.captions import is_generated
    from xstilts.core.tasks import TASKS

    source = TASKS[task].source if task in TASKS else None
    if source is None:
        return "unknown task"
    if source.kind == "synthetic" or (source.kind == "captions" and is_generated(source.name)):
        return "generated"
    if source.kind == "captions":
        return f"caption dataset `{source.name}`"
    return "Hugging Face hub" if source.kind == "hf" else source.kind


def data_sources(experiment: Experiment) -> list[DataSource]:
    """One entry per prepare-data node: the spec's pin, and what the node recorded having
    loaded (`jobs.stages.prepare_data._provenance`) once it is done."""
    sources = []
    for node in experiment.plan.nodes:
        if node.stage != "prepare" or node.kind != "data" or node.task is None:
            continue
        config = node.config
        result = experiment.result(node)
        data_dir = getattr(config, "data_dir", None)
        origin = f"data_dir `{data_dir}`" if data_dir else _origin(node.task)
        resolved = []
        for load in (result or {}).get("hub") or []:
            name = str(load.get("dataset"))
            if load.get("config"):
                name += f"/{load['config']}"
            revision = load.get("resolved_revision") or load.get("revision") or "unpinned, unresolved"
            entry = f"{name} @ {revision}"
            if entry not in resolved:
                resolved.append(entry)
        sources.append(DataSource(
            task=node.task, origin=origin,
            requested_revision=getattr(config, "data_revision", None), resolved=resolved,
            files_signature=(result or {}).get("data_files") or getattr(config, "data_files", None),
            prepared=result is not None))
    return sources


# ----------------------------------------------------------------------------- code versions


def attempt_provenance(attempt: Mapping[str, Any]) -> dict[str, Any] | None:
    """The provenance `jobs.entry` records in an attempt (None before it did)."""
    provenance = attempt.get("provenance")
    return provenance if isinstance(provenance, dict) else None


def code_of(state: Mapping[str, Any]) -> str:
    """The code version that finished a node: its last attempt's `provenance.code`."""
    attempts = state.get("attempts") or []
    finishing = [a for a in attempts if isinstance(a, dict) and a.get("outcome") == "done"] or \
        [a for a in attempts if isinstance(a, dict)]
    provenance = attempt_provenance(finishing[-1]) if finishing else None
    code = (provenance or {}).get("code")
    return str(code) if code else UNKNOWN_CODE


@dataclass(frozen=True)
class CodeVersion:
    """One code version and the done nodes it finished, per stage."""

    code: str
    nodes: dict[str, int]
    example: dict[str, Any] | None = None  # one attempt's provenance: xstilts version, git, host, gpu

    @property
    def total(self) -> int:
        return sum(self.nodes.values())


@dataclass(frozen=True)
class CodeVersions:
    versions: list[CodeVersion]

    @property
    def known(self) -> list[CodeVersion]:
        return [v for v in self.versions if v.code != UNKNOWN_CODE]

    @property
    def stale(self) -> bool:
        """Done nodes come from more than one known code version: results may not be comparable."""
        return len(self.known) > 1


def code_versions(experiment: Experiment, statuses: Statuses) -> CodeVersions:
    """Done nodes grouped by the code version that finished them, most nodes first."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[str, dict[str, Any]] = {}
    for node in experiment.plan.nodes:
        status, state = statuses.get(node.key, ("pending", {}))
        if status != "done":
            continue
        code = code_of(state)
        counts[code][node.stage] += 1
        if code not in examples:
            for attempt in reversed(state.get("attempts") or []):
                provenance = attempt_provenance(attempt) if isinstance(attempt, dict) else None
                if provenance and provenance.get("code") == code:
                    examples[code] = provenance
                    break
    versions = [CodeVersion(code, dict(stages), examples.get(code)) for code, stages in counts.items()]
    return CodeVersions(sorted(versions, key=lambda v: (v.code == UNKNOWN_CODE, -v.total, v.code)))


def describe_provenance(provenance: Mapping[str, Any] | None) -> str:
    """xstilts version, git commit (dirty marked), first GPU model: one line."""
    if not provenance:
        return ""
    parts = [f"xstilts {provenance.get('xstilts', '?')}"]
    git = provenance.get("git")
    if isinstance(git, dict) and git.get("commit"):
        dirty = f", dirty (diff sha256 {str(git.get('diff_sha256') or '?')[:12]})" if git.get("dirty") else ""
        parts.append(f"git {str(git['commit'])[:12]}{dirty}")
    else:
        parts.append("not a git checkout")
    gpu = provenance.get("gpu")
    if isinstance(gpu, dict) and gpu.get("count"):
        parts.append(f"{gpu['count']} x {gpu.get('model') or 'GPU'}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- compute


@dataclass
class StageCompute:
    """Device hours a stage's attempts used (every attempt: failed and preempted ones cost too)."""

    stage: str
    nodes: int = 0
    attempts: int = 0
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    unmeasured: int = 0  # attempts without an end time (killed without a word): length unknown
    from_spec: int = 0  # attempts whose device count came from the spec's resources (no provenance)


def attempt_devices(attempt: Mapping[str, Any], spec: Spec, stage: StageName) -> tuple[int, str, bool]:
    """(devices, "gpu" or "cpu", measured): the attempt's own GPU count when its
    provenance has one, else the spec's resources for the stage; CPU cores when no GPU."""
    resources = spec.resources_for(stage)
    provenance = attempt_provenance(attempt)
    gpu = (provenance or {}).get("gpu")
    if isinstance(gpu, dict) and isinstance(gpu.get("count"), int):
        count = int(gpu["count"])
        return (count, "gpu", True) if count > 0 else (resources.cpus, "cpu", True)
    if resources.gpus > 0:
        return resources.gpus, "gpu", False
    return resources.cpus, "cpu", False


def compute_by_stage(experiment: Experiment, statuses: Statuses) -> list[StageCompute]:
    """Per stage in plan order: attempts' wall hours times their devices."""
    spec = experiment.spec
    by_stage: dict[str, StageCompute] = {}
    for node in experiment.plan.nodes:
        compute = by_stage.setdefault(node.stage, StageCompute(node.stage))
        _status, state = statuses.get(node.key, ("pending", {}))
        attempts = [a for a in (state or {}).get("attempts") or [] if isinstance(a, dict)]
        if attempts:
            compute.nodes += 1
        for attempt in attempts:
            compute.attempts += 1
            started, ended = attempt.get("started"), attempt.get("ended")
            if not isinstance(started, (int, float)) or not isinstance(ended, (int, float)):
                compute.unmeasured += 1
                continue
            hours = max(0.0, float(ended) - float(started)) / 3600.0
            devices, unit, measured = attempt_devices(attempt, spec, node.stage)
            compute.from_spec += not measured
            if unit == "gpu":
                compute.gpu_hours += hours * devices
            else:
                compute.cpu_hours += hours * devices
    return list(by_stage.values())


@dataclass(frozen=True)
class RunInfo:
    """Every fact of the report's "How it was run" section."""

    generated: str
    model: str
    seeds: list[int]
    hyperparameters: list[StageHyperparameters]
    data: list[DataSource]
    code: CodeVersions
    compute: list[StageCompute] = field(default_factory=list)


def run_info(experiment: Experiment, statuses: Statuses, generated: str) -> RunInfo:
    spec = experiment.spec
    return RunInfo(generated=generated, model=model_line(spec), seeds=list(spec.seeds),
                   hyperparameters=hyperparameters(experiment), data=data_sources(experiment),
                   code=code_versions(experiment, statuses), compute=compute_by_stage(experiment, statuses))
