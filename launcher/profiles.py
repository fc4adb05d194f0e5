"""Cluster profiles: where and how nodes run.

A profile is a YAML file, either shipped in the `cluster_profiles` package (named by its
file stem, e.g. ``local``) or given as a path. Unknown keys are errors that list the
valid ones, like the spec.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from xstilts.core.errors import UserError, problems_message, unknown_choice, validation_problems
from xstilts.core.stages import STAGES as STAGE_NAMES


EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
"""An environment variable name. It is written unquoted into `export NAME=...` of the
job script (and into a process environment), so anything else (`A=B`, `X; touch f`)
is refused rather than run."""

SbatchWord = Annotated[str, StringConstraints(pattern=r"^[^\s\x00-\x1f]+$")]
"""A value of an `#SBATCH --key=value` header line: no whitespace or control characters
(a newline would end the header line and start another)."""

OneLine = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f]*$")]
"""A path or shell line written into the job script as one line."""

SPEC_OWNED_ENV = {
    "XSTILTS_CHECKPOINT_EVERY": "checkpointing.every_steps",
    "XSTILTS_CHECKPOINT_KEEP": "checkpointing.keep",
    "XSTILTS_CHECKPOINT_ASYNC": "checkpointing.async_save",
    "XSTILTS_TENSORBOARD": "tracking.tensorboard",
    "XSTILTS_TENSORBOARD_UPLOAD_S": "tracking.upload_every_s",
    "XSTILTS_WANDB_PROJECT": "tracking.wandb.project",
    "XSTILTS_WANDB_ENTITY": "tracking.wandb.entity",
    "XSTILTS_WANDB_MODE": "tracking.wandb.mode",
    "XSTILTS_COMPILE": "acceleration.compile",
    "XSTILTS_ACTIVATION_CHECKPOINTING": "acceleration.activation_checkpointing",
    "XSTILTS_EVAL_BATCH_SIZE": "acceleration.eval_batch_size",
}
"""Variables the launcher sets for every job from the spec (`Spec.job_env`). A
profile's `env` may not set them: the local runner let the profile's value win over the
spec's, SLURM the spec's over the profile's, and `XSTILTS_CHECKPOINT_EVERY: often`
failed every node at its start instead of once, here."""


class SlurmResources(BaseModel):
    """What one SLURM job of a stage asks for; every key can be overridden per stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: SbatchWord | None = None
    account: SbatchWord | None = None
    qos: SbatchWord | None = None
    constraint: SbatchWord | None = None
    exclude: SbatchWord | None = None
    nodes: int = Field(1, gt=0, description="cluster nodes per training job (FSDP across them)")
    gpus_per_node: int = Field(0, ge=0)
    tasks_per_node: int = Field(1, gt=0, description="processes per cluster node: one per GPU")
    cpus_per_task: int = Field(1, gt=0)
    mem_gb: float | None = Field(None, gt=0)
    time_min: int = Field(60, gt=0, description="time limit of one job (a preempted job is requeued)")
    signal_delay_s: int = Field(120, ge=10, description="USR2 this long before the time limit: time to checkpoint")
    setup: list[OneLine] = Field(default_factory=list, description="shell lines run before the job (module load, ...)")


class LocalProfile(BaseModel):
    """Run nodes as processes on this machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "local"
    executor: Literal["local"] = "local"
    max_parallel: int = Field(2, gt=0, description="nodes running at once")
    procs_per_node: int = Field(1, gt=0, description="processes per training node (torch.distributed, FSDP2)")
    max_requeues: int = Field(3, ge=0, description="times a preempted node is started again")
    env: dict[EnvName, str] = Field(default_factory=dict)


class SlurmProfile(SlurmResources):
    """Run nodes as tasks of SLURM job arrays."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "slurm"
    executor: Literal["slurm"] = "slurm"
    max_requeues: int = Field(3, ge=0, description="times a preempted node is started again")
    env: dict[EnvName, str] = Field(default_factory=dict)
    array_parallelism: int = Field(256, gt=0, description="tasks of one job array running at once")
    max_array_size: int | None = Field(
        None, gt=0, description="tasks per array; default: MaxArraySize - 1 from `scontrol show config`"
    )
    array_grouping: Literal["lineage", "row", "wave"] = Field(
        "lineage", description="how a stage's nodes are split into arrays: lineage (one per intermediate "
        "training: its targets start when it ends, and its failure cancels only its cells), row (one per "
        "intermediate task, all its seeds), wave (one per stage wave: fewest sbatch calls, coarsest waits)",
    )
    max_jobs: int | None = Field(
        None, gt=0, description="most tasks of the experiment queued or running in SLURM at once (each array "
        "task counts, as MaxSubmitJobs and QOS limits count them); the rest is submitted as slots free up, "
        "by `launch --wait` while it polls or by the next `launch`. null: no cap",
    )
    max_retries: int = Field(
        3, ge=0, description="times a node's job lost to the infrastructure (NODE_FAIL, BOOT_FAIL, a node lost "
        "mid-job: SLURM requeues it) is started again before the node counts as failed",
    )
    log_dir: OneLine = Field(
        "xstilts-slurm", description="submitit's folder (job pickles and logs) on a shared filesystem"
    )
    stages: dict[str, dict[str, object]] = Field(
        default_factory=dict, description="per-stage overrides of the job resources, e.g. evaluate: {gpus_per_node: 0}"
    )

    def resources(self, stage: str) -> SlurmResources:
        """The job resources of `stage`: the profile's, with that stage's overrides."""
        base = {name: getattr(self, name) for name in SlurmResources.model_fields}
        return SlurmResources.model_validate({**base, **self.stages.get(stage, {})})


Profile = Annotated[Union[LocalProfile, SlurmProfile], Field(discriminator="executor")]
"""How the launcher executes nodes: its `executor` key picks the model, so a local profile
cannot take SLURM keys (and a slurm profile cannot take local ones)."""

PROFILE_MODELS: dict[str, type[LocalProfile] | type[SlurmProfile]] = {"local": LocalProfile, "slurm": SlurmProfile}
"""executor -> its profile model."""

_PROFILE_ADAPTER: TypeAdapter[LocalProfile | SlurmProfile] = TypeAdapter(Profile)


def profile_from_json(text: str) -> LocalProfile | SlurmProfile:
    """A resolved profile back from `model_dump_json()` (how the detached scheduler gets it)."""
    return _PROFILE_ADAPTER.validate_json(text)


def shipped_profiles() -> dict[str, Path]:
    """Profiles shipped with the package: name -> file."""
    folder = resources.files("xstilts.cluster_profiles")
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def load_profile(name_or_path: str) -> LocalProfile | SlurmProfile:
    """A shipped profile by name, or a profile YAML file by path."""
    from xstilts.core.spec import read_yaml  # local import: spec imports pydantic models only

    shipped = shipped_profiles()
    if name_or_path in shipped:
        path, name = shipped[name_or_path], name_or_path
    elif name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path, name = Path(name_or_path), Path(name_or_path).stem
    else:
        raise UserError(unknown_choice("cluster profile", name_or_path, shipped) + " (or a path to a profile YAML)")
    raw = read_yaml(path, what="cluster profile")
    raw.setdefault("name", name)
    executor = raw.setdefault("executor", "local")
    model = PROFILE_MODELS.get(executor) if isinstance(executor, str) else None
    if model is None:
        raise UserError(f"{path}: invalid cluster profile: executor: "
                        + unknown_choice("executor", str(executor), PROFILE_MODELS))
    lines: list[str] = []
    stages = raw.get("stages") or {}
    if model is SlurmProfile:
        for stage, overrides in (stages.items() if isinstance(stages, dict) else []):
            if stage not in STAGE_NAMES:
                lines.append(f"stages.{stage}: " + unknown_choice("stage", str(stage), STAGE_NAMES))
                continue
            if not isinstance(overrides, (dict, type(None))):
                continue  # the profile model says "stages.<stage>: should be a dictionary"
            try:
                SlurmResources.model_validate(overrides or {})
            except ValidationError as exc:
                lines.extend(f"stages.{stage}.{line}" for line in _problems(exc, SlurmResources))
    env = raw.get("env")
    for name in env if isinstance(env, dict) else []:
        if name in SPEC_OWNED_ENV:
            lines.append(f"env.{name}: comes from the spec's {SPEC_OWNED_ENV[name]}; set it there, not in a profile")
    try:
        profile = model.model_validate(raw)
    except ValidationError as exc:
        lines = _problems(exc, model) + lines
        profile = None
    if lines or profile is None:
        raise UserError(problems_message(f"{path}: invalid cluster profile", lines))
    return profile


def _problems(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """Problems of one profile model, unknown keys listing that model's keys."""
    def unknown_key(path: str, _key: str, valid: list[str]) -> str:
        return unknown_choice("profile key", path, valid)

    return validation_problems(exc.errors(), lambda _parent: model.model_fields, unknown_key=unknown_key,
                               hidden=("env",))
