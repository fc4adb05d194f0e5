"""The experiment spec: one YAML file, validated into typed models.

Validation is strict (unknown keys are errors) because a typo in a hyperparameter name
that silently falls back to a default would cost a whole grid of GPU-hours. Every error
names the key path, the bad value and the valid choices.
"""

from __future__ import annotations

import collections
import copy
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xstilts.core.tasks import BASELINE, CAPTION_DATASETS, TASKS, task_names
from xstilts.core.errors import UserError, did_you_mean, problems_message, unknown_choice, validation_problems

from xstilts.core.stages import STAGES, StageName


class _Strict(BaseModel):
    # inf and nan are not hyperparameters: `learning_rate: .inf` trained to a NaN loss
    # and a "done" node whose table cell looked like a real 50.0.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


TINY_TEXT_CONFIG_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size", "pad_token_id", "bos_token_id", "eos_token_id",
)
"""The integer arguments of transformers' `XLMRobertaConfig` a tiny model may set (a test
checks them against the real signature). Anything else was silently ignored before:
`hiden_size` gave a model of the default width 768."""

TINY_VISION_CONFIG_KEYS = (
    "hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers", "num_attention_heads",
    "num_channels", "image_size", "patch_size",
)
"""The integer arguments of transformers' `CLIPVisionConfig` a tiny vision tower may set."""

XLMR_POSITION_OFFSET = 2
"""XLM-R numbers positions from padding_idx + 1 = 2: a sequence fits in
`max_position_embeddings - 2` tokens."""

XLMR_DEFAULT_POSITIONS = 512
"""`XLMRobertaConfig`'s default max_position_embeddings."""

MAX_SEED = 2**32 - 1
"""numpy and torch seeds are 32-bit."""


def _check_tiny_keys(tiny: dict[str, int] | None, valid: tuple[str, ...], what: str) -> dict[str, int] | None:
    for key in tiny or {}:
        if key not in valid:
            raise ValueError(unknown_choice(f"{what} argument", key, valid))
    return tiny


class Hyperparameters(_Strict):
    """How one training stage runs. Part of the node keys of that stage."""

    learning_rate: float = Field(default=2e-5, gt=0)
    batch_size: int = Field(default=32, gt=0)
    grad_accum_steps: int = Field(default=1, gt=0)
    epochs: float = Field(default=3.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0, description="overrides epochs when set")
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    max_seq_length: int = Field(default=128, gt=8)
    eval_interval: int = Field(default=200, gt=0, description="steps between English dev evaluations")
    patience: int | None = Field(default=None, gt=0, description="evaluations without improvement before stopping")
    weight_decay: float = Field(default=0.01, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)


class Dimension(_Strict):
    """One searched hyperparameter: exactly one of a log-uniform range or a list."""

    loguniform: tuple[float, float] | None = Field(default=None, description="[low, high], sampled log-uniformly")
    grid: list[float] | None = Field(default=None, description="every value, once each")
    choice: list[float] | None = Field(default=None, description="values sampled uniformly")

    @model_validator(mode="after")
    def _exactly_one(self) -> Dimension:
        given = [name for name in ("loguniform", "grid", "choice") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of loguniform, grid, choice (got {', '.join(given) or 'none'})")
        if self.loguniform is not None and not 0 < self.loguniform[0] < self.loguniform[1]:
            raise ValueError("loguniform needs 0 < low < high")
        return self


INTEGER_SEARCHABLE = frozenset({"batch_size"})
"""Searchable hyperparameters that are integers (Ray passes list values through as given)."""


class Search(_Strict):
    """A hyperparameter search for every task (or cell) of a stage, run by a `tune` node (Ray Tune).

    `per_cell` exists because the best target learning rate after intermediate training
    need not be the best one on the raw pretrained encoder; it costs a search per cell
    instead of one per task.
    """

    space: dict[str, Dimension] = Field(description="hyperparameter name -> dimension, e.g. learning_rate")
    trials: int = Field(default=1, gt=0, description="samples (grid dimensions: repeats of the whole grid)")
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(default=1, gt=0, description="asha: evaluations every trial gets")
    reduction_factor: int = Field(default=2, gt=1, description="asha: keep the best 1/reduction_factor at each rung")
    budget_steps: int = Field(default=200, gt=0, description="optimizer steps of a trial at most")
    budget_epochs: float | None = Field(
        default=None, gt=0, description="instead of budget_steps: a trial's budget as epochs (or a fraction of one) "
        "of the task's English training set"
    )
    max_concurrent: int | None = Field(
        default=None, gt=0, description="trials at once; default: one per CPU (GPU) slot"
    )
    scope: Literal["per_task", "per_cell"] = Field(
        default="per_task",
        description="per_task: one search per task on the pretrained encoder, shared by every cell; "
        "per_cell (target only): one search per intermediate x target cell on the cell's upstream encoder "
        "(of the first seed), shared by the cell's seeds",
    )

    @field_validator("space")
    @classmethod
    def _known(cls, space: dict[str, Dimension]) -> dict[str, Dimension]:
        searchable = {"learning_rate", "warmup_ratio", "weight_decay", *INTEGER_SEARCHABLE}
        unknown = sorted(set(space) - searchable)
        if unknown:
            raise ValueError(f"cannot search {unknown}; searchable: {', '.join(sorted(searchable))}")
        if not space:
            raise ValueError("search.space is empty")
        for name in INTEGER_SEARCHABLE & set(space):
            values = space[name].grid or space[name].choice
            if values is None or any(v != int(v) or v < 1 for v in values):
                raise ValueError(f"{name} is searched over a grid or choice of positive integers")
        return space


class StageSpec(_Strict):
    """Tasks of one stage (intermediate or target) and how they are trained."""

    tasks: list[str]
    hparams: Hyperparameters = Hyperparameters()
    per_task: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="hyperparameter overrides for single tasks"
    )
    search: Search | None = Field(
        default=None, description="tune these hyperparameters per task (target: or per cell) before training"
    )
    mixtures: dict[str, list[str]] = Field(
        default_factory=dict,
        description="intermediate only: name -> member tasks trained together on one encoder "
        "(examples-proportional sampling); the name can then be listed in tasks",
    )

    @field_validator("tasks")
    @classmethod
    def _unique_nonempty(cls, tasks: list[str]) -> list[str]:
        if not tasks:
            raise ValueError("needs at least one task")
        duplicates = [task for task, count in collections.Counter(tasks).items() if count > 1]
        if duplicates:
            raise ValueError(f"duplicate task names: {', '.join(sorted(set(duplicates)))}")
        return tasks

    def hparams_for(self, task: str) -> Hyperparameters:
        """The stage hyperparameters with this task's overrides applied."""
        overrides = self.per_task.get(task, {})
        return Hyperparameters.model_validate({**self.hparams.model_dump(), **overrides})


class ModelSpec(_Strict):
    """The pretrained encoder: a hub name or local path, or an inline tiny config."""

    name: str | None = Field(default=None, description="Hugging Face model name or local directory")
    tiny: dict[str, int] | None = Field(default=None, description="XLMRobertaConfig arguments for a tiny model")
    tokenizer_vocab_size: int = Field(default=1000, gt=50)
    corpus_languages: list[str] | None = Field(
        default=None,
        description="tiny models: languages of the tokenizer/pretraining corpus (default: all task languages)",
    )
    corpus_sentences_per_language: int = Field(default=4000, gt=0, description="tiny models: corpus size per language")
    pretrain_steps: int = Field(default=0, ge=0, description="tiny models: masked-LM pretraining steps")
    pretrain_lr: float = Field(default=1e-3, gt=0)
    pretrain_batch_size: int = Field(default=32, gt=0)

    @field_validator("tiny")
    @classmethod
    def _tiny_keys(cls, tiny: dict[str, int] | None) -> dict[str, int] | None:
        return _check_tiny_keys(tiny, TINY_TEXT_CONFIG_KEYS, "XLMRobertaConfig")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelSpec:
        if (self.name is None) == (self.tiny is None):
            raise ValueError("give exactly one of 'name' (hub name or path) and 'tiny' (inline config)")
        return self


class VisionSpec(_Strict):
    """The frozen vision encoder of image-caption intermediate tasks, and how its
    features enter the text encoder."""

    name: str | None = Field(default=None, description="CLIP / SigLIP / ViT on the hub or a local directory, "
                                               "e.g. openai/clip-vit-base-patch32")
    tiny: dict[str, int] | None = Field(
        default=None, description="CLIPVisionConfig arguments for a random tiny encoder"
    )
    seed: int = Field(default=0, ge=0, description="tiny encoders: initialisation seed")
    prefix_length: int = Field(default=4, gt=0, description="image prefix embeddings placed before the caption")
    chunk_size: int = Field(default=256, gt=0, description="images encoded and stored per chunk of features.zarr")

    @field_validator("tiny")
    @classmethod
    def _tiny_keys(cls, tiny: dict[str, int] | None) -> dict[str, int] | None:
        return _check_tiny_keys(tiny, TINY_VISION_CONFIG_KEYS, "CLIPVisionConfig")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> VisionSpec:
        if (self.name is None) == (self.tiny is None):
            raise ValueError("give exactly one of 'name' (hub name or path) and 'tiny' (inline config)")
        return self

    def encoder(self) -> dict[str, Any]:
        """What decides the features (part of the prepare-images node's key)."""
        return {"name": self.name} if self.name else {"tiny": dict(self.tiny or {}), "seed": self.seed}


class Resources(_Strict):
    """What one node of a stage asks of the cluster. Not part of node keys."""

    cpus: int = Field(default=1, gt=0)
    gpus: int = Field(default=0, ge=0)
    mem_gb: float = Field(default=4, gt=0)
    time_min: int = Field(default=60, gt=0)


class Checkpointing(_Strict):
    """How often training nodes checkpoint. Not part of node keys: resume is exact."""

    every_steps: int = Field(default=0, ge=0, description="save every N optimizer steps; 0: only when preempted")
    keep: int = Field(default=2, gt=0, description="complete checkpoints kept per node")
    async_save: bool = Field(default=False, description="save with dcp.async_save")

    def env(self) -> dict[str, str]:
        """The variables through which jobs read this policy (xstilts.jobs.stages.base.CheckpointPolicy)."""
        return {
            "XSTILTS_CHECKPOINT_EVERY": str(self.every_steps),
            "XSTILTS_CHECKPOINT_KEEP": str(self.keep),
            "XSTILTS_CHECKPOINT_ASYNC": "1" if self.async_save else "0",
        }


class Acceleration(_Strict):
    """How training uses its device (`xstilts.jobs.acceleration`). Not part of node keys:
    like the GPU model a node ran on, these change speed and memory, at most the last bits.

    bf16, fused attention (SDPA) and fused AdamW need no switch: bf16 is chosen on CUDA
    devices that have it (on CPU it is slower and changes results), SDPA and fused AdamW on
    both (`xstilts.jobs.acceleration`)."""

    compile: Literal["auto", "on", "off"] = Field(
        default="auto", description="torch.compile each encoder layer; auto: on with CUDA, off on CPU")
    activation_checkpointing: bool = Field(
        default=False, description="recompute layer activations in the backward pass: less memory, ~30% more "
        "compute; for the large model at long sequence lengths")
    eval_batch_size: int | None = Field(
        default=None, gt=0, description="examples per forward pass when evaluating; unset: twice the training "
        "batch, at least 64 (dev) or 128 (test)")

    def env(self) -> dict[str, str]:
        """The variables through which jobs read this policy (xstilts.jobs.acceleration.AccelerationPolicy)."""
        return {
            "XSTILTS_COMPILE": self.compile,
            "XSTILTS_ACTIVATION_CHECKPOINTING": "1" if self.activation_checkpointing else "0",
            "XSTILTS_EVAL_BATCH_SIZE": str(self.eval_batch_size or ""),
        }


class WandbTracking(_Strict):
    """One W&B run per training node (and per tune trial). Needs `pip install xstilts[wandb]`."""

    project: str = Field(min_length=1)
    entity: str | None = Field(default=None, min_length=1)
    mode: Literal["online", "offline"] = Field(
        default="online", description="offline: runs are kept in the node folder's wandb/ for `wandb sync`")


class Tracking(_Strict):
    """Live training curves (`xstilts.jobs.tracking`). Not part of node keys: what is
    watched never changes a result."""

    tensorboard: bool = Field(default=True, description="event files in each training/tune node's tensorboard/")
    upload_every_s: float = Field(
        default=30, gt=0, description="object stores: copy the event files to the node folder at most this often")
    wandb: WandbTracking | None = None

    def env(self) -> dict[str, str]:
        """The variables through which jobs read this policy (xstilts.jobs.tracking.TrackingPolicy)."""
        wandb = self.wandb
        return {
            "XSTILTS_TENSORBOARD": "1" if self.tensorboard else "0",
            "XSTILTS_TENSORBOARD_UPLOAD_S": str(self.upload_every_s),
            # set even when empty: the spec, not a variable left in the shell, decides
            "XSTILTS_WANDB_PROJECT": wandb.project if wandb else "",
            "XSTILTS_WANDB_ENTITY": (wandb.entity or "") if wandb else "",
            "XSTILTS_WANDB_MODE": wandb.mode if wandb else "",
        }


class Spec(_Strict):
    """A whole experiment: intermediate x target x seed on one model and one storage root."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: ModelSpec
    intermediate: StageSpec
    target: StageSpec
    seeds: list[int]
    storage: str
    data_dir: str | None = Field(
        default=None,
        description="local task data for offline clusters: the official XTREME layout, or "
        "<task>/<split>-<lang>.jsonl|tsv; unset: the Hugging Face hub",
    )
    data_revision: dict[str, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict,
        description="hub datasets only: {task: revision} pins the dataset revision (commit, tag or branch) "
        "a task's data is loaded at; part of that task's prepare key (and so of everything downstream)",
    )
    vision: VisionSpec | None = Field(default=None, description="vision encoder of image-caption intermediate tasks")
    cluster: str = "local"
    checkpointing: Checkpointing = Checkpointing()
    tracking: Tracking = Tracking()
    acceleration: Acceleration = Acceleration()
    resources: dict[StageName, Resources] = Field(
        default_factory=dict
    )
    gpu_hours: dict[StageName, float | dict[str, float]] = Field(
        default_factory=dict,
        description="estimated GPU-hours per node of a stage (or per task: {task: hours, default: hours}); "
        "`xstilts plan` multiplies them by the node counts. Not part of keys.",
    )

    rerun_on_code_change: bool | list[str] = Field(
        default=False,
        description="true, or a list of stages: those stages' node keys (and so everything downstream) include "
        "the launching xstilts code version (git commit, or commit+dirty hash), so a code change reruns them; "
        "false (default): keys ignore the code",
    )

    @field_validator("rerun_on_code_change", mode="before")
    @classmethod
    def _code_keyed_stages(cls, value: Any) -> Any:
        if isinstance(value, bool) or value is None:
            return bool(value)
        if not isinstance(value, list):
            raise ValueError(f"give true, false or a list of stages (valid stages: {', '.join(STAGES)}); "
                             f"got {value!r}")
        for stage in value:
            if stage not in STAGES:
                raise ValueError(unknown_choice("stage", str(stage), STAGES))
        if len(set(value)) != len(value):
            raise ValueError("lists a stage twice")
        return value

    def code_keyed_stages(self) -> frozenset[str]:
        """The stages whose keys fold in the code version (`rerun_on_code_change`)."""
        option = self.rerun_on_code_change
        if option is True:
            return frozenset(STAGES)
        return frozenset(option) if isinstance(option, list) else frozenset()

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("needs at least one seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        outside = [seed for seed in seeds if not 0 <= seed <= MAX_SEED]
        if outside:
            raise ValueError(f"seeds must be integers from 0 to {MAX_SEED} (got {outside[0]})")
        return seeds

    @field_validator("data_dir")
    @classmethod
    def _data_dir_exists(cls, data_dir: str | None) -> str | None:
        if data_dir is None:
            return None
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise ValueError(f"'{data_dir}' is not a directory (it must be readable from every node)")
        return str(path.resolve())

    @model_validator(mode="after")
    def _tasks_known(self) -> Spec:
        problems: list[str] = []
        if self.target.mixtures:
            problems.append("target.mixtures: mixtures are intermediate tasks only")
        problems.extend(_mixture_problems(self.intermediate.mixtures))
        problems.extend(_search_problems(self.intermediate.search))
        image_tasks = [t for t in self.intermediate.tasks if t in TASKS and TASKS[t].kind == "image_text"]
        if image_tasks and self.vision is None:
            problems.append(f"vision: intermediate tasks {', '.join(image_tasks)} need a vision encoder: "
                            "`vision: {name: openai/clip-vit-base-patch32}` or `vision: {tiny: {...}}`")
        for mixture, members in self.intermediate.mixtures.items():
            if any(m in TASKS and TASKS[m].kind == "image_text" for m in members):
                problems.append(f"intermediate.mixtures.{mixture}: image-caption tasks cannot be mixed "
                                "(they train a different model around the encoder)")
        for role, stage in (("intermediate", self.intermediate), ("target", self.target)):
            valid = task_names(role) + ([BASELINE, *stage.mixtures] if role == "intermediate" else [])
            for task in stage.tasks:
                if task not in valid:
                    extra = ""
                    if task in TASKS:
                        extra = f" ('{task}' is a {'/'.join(TASKS[task].roles)} task)"
                    problems.append(f"{role}.tasks: {unknown_choice(f'{role} task', task, valid)}{extra}")
            for task in stage.per_task:
                if task not in stage.tasks:
                    problems.append(
                        f"{role}.per_task: '{task}' is not in {role}.tasks{did_you_mean(task, stage.tasks)}"
                    )
            for task, overrides in stage.per_task.items():
                try:
                    stage.hparams_for(task)
                except ValidationError as exc:
                    problems.extend(_format_validation(exc, prefix=f"{role}.per_task.{task}", root=Hyperparameters))
        problems.extend(self._length_problems())
        problems.extend(self._revision_problems())
        for stage_name, hours in self.gpu_hours.items():
            names = set(self.intermediate.tasks) | set(self.target.tasks) | {"default"}
            for task in (hours if isinstance(hours, dict) else {}):
                if task not in names and task not in TASKS and task not in CAPTION_DATASETS:
                    problems.append(f"gpu_hours.{stage_name}: {unknown_choice('task', task, sorted(names))}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _length_problems(self) -> list[str]:
        """A tiny model's positions bound every stage's max_seq_length (a named model's
        are known only when it is loaded). It failed at run time before."""
        if self.model.tiny is None:
            return []
        positions = self.model.tiny.get("max_position_embeddings", XLMR_DEFAULT_POSITIONS) - XLMR_POSITION_OFFSET
        problems = []
        for role, stage in (("intermediate", self.intermediate), ("target", self.target)):
            for task in stage.tasks:
                try:
                    length = stage.hparams_for(task).max_seq_length
                except ValidationError:
                    continue  # reported above
                if length > positions:
                    where = f"{role}.per_task.{task}" if "max_seq_length" in stage.per_task.get(task, {}) \
                        else f"{role}.hparams"
                    problems.append(f"{where}.max_seq_length: {length} tokens do not fit the tiny model's "
                                    f"{positions} positions (model.tiny.max_position_embeddings - "
                                    f"{XLMR_POSITION_OFFSET})")
                    break
        return problems

    def data_tasks(self) -> list[str]:
        """Every registered task whose data the spec reads (mixture members, targets'
        first fine-tunings), in spec order: the tasks with a prepare-data node."""
        names: list[str] = []
        for task in self.intermediate.tasks:
            if task != BASELINE:
                names.extend(self.intermediate.mixtures.get(task, [task]))
        for task in self.target.tasks:
            first = TASKS[task].train_first if task in TASKS else None
            names.extend([first, task] if first else [task])
        return [name for index, name in enumerate(names) if name in TASKS and name not in names[:index]]

    def _revision_problems(self) -> list[str]:
        """`data_revision` pins hub datasets of the spec's own tasks; a name that is not
        one, a task not on the hub, or a revision beside `data_dir` (where every task
        reads local files) would be silently ignored."""
        if not self.data_revision:
            return []
        if self.data_dir is not None:
            return ["data_revision: pins hub dataset revisions, but data_dir is set, so every task reads "
                    "local files; remove data_revision or data_dir"]
        problems = []
        tasks = self.data_tasks()
        hub = [name for name in tasks if _on_hub(name)]
        for name in self.data_revision:
            if name not in tasks:
                problems.append(f"data_revision: {unknown_choice('task of this spec', name, tasks)}")
            elif name not in hub:
                kind = TASKS[name].source.kind
                what = {"synthetic": "generated", "captions": "an image-caption dataset", "local": "local files only"}
                problems.append(f"data_revision.{name}: '{name}' is not read from the Hugging Face hub "
                                f"({what.get(kind, kind)}); tasks of this spec on the hub: {', '.join(hub) or 'none'}")
        return problems

    def gpu_hours_for(self, stage: StageName, task: str | None) -> float | None:
        """Estimated GPU-hours of one node (None: the spec gives no estimate for it)."""
        hours = self.gpu_hours.get(stage)
        if isinstance(hours, dict):
            return hours.get(task or "", hours.get("default"))
        return hours

    def job_env(self) -> dict[str, str]:
        """What every job exports from the spec: the checkpointing, tracking and acceleration policies."""
        return {**self.checkpointing.env(), **self.tracking.env(), **self.acceleration.env()}

    def resources_for(self, stage: StageName) -> Resources:
        return self.resources.get(stage, Resources())

    def hparams_for(self, role: str, task: str) -> Hyperparameters:
        return (self.intermediate if role == "intermediate" else self.target).hparams_for(task)


def _on_hub(task: str) -> bool:
    """The task reads at least one split from the Hugging Face hub."""
    record = TASKS[task]
    sources = [record.source, *(source for group in record.split_sources.values() for source in group)]
    return any(source.kind == "hf" for source in sources)


def _search_problems(search: Search | None) -> list[str]:
    """An intermediate search can only be per_task: an intermediate node trains from the
    pretrained encoder, so it has no upstream checkpoint that would make a cell of its own."""
    if search is None or search.scope == "per_task":
        return []
    return [f"intermediate.search.scope: '{search.scope}' is for target searches only "
            "(intermediate training has no upstream checkpoint to search on); valid choice here: per_task"]


def _mixture_problems(mixtures: dict[str, list[str]]) -> list[str]:
    """Mixture names must be new, members distinct known intermediate tasks (two or more)."""
    problems = []
    valid = task_names("intermediate")
    for name, members in mixtures.items():
        where = f"intermediate.mixtures.{name}"
        if name in TASKS or name == BASELINE:
            problems.append(f"{where}: '{name}' is already a task name; choose another mixture name")
        if len(set(members)) < 2 or len(set(members)) != len(members):
            problems.append(f"{where}: needs two or more distinct member tasks, got {members}")
        for member in members:
            if member not in valid:
                problems.append(f"{where}: {unknown_choice('intermediate task', member, valid)}")
    return problems


# --------------------------------------------------------------------------------------
# loading


def _format_validation(exc: ValidationError, prefix: str = "", root: type[BaseModel] | None = None) -> list[str]:
    """Pydantic's errors of a spec (or of the `root` model at `prefix`, e.g. a task's
    hyperparameters) as 'key.path: problem' lines (`validation_problems`)."""
    def valid_keys(parent: list[str]) -> list[str]:
        model = _model_at(parent, root or Spec)
        return sorted(model.model_fields) if model else []

    return validation_problems(exc.errors(), valid_keys, prefix)


def _model_at(loc: list[str], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model class at a key path of the spec, for listing valid keys.

    Walks model fields; a dict-valued field (``resources``) consumes one more path part
    (its key) and continues into the dict's value model.
    """
    model: Any = root
    parts = list(loc)
    while parts:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(parts.pop(0))
        if field is None:
            return None
        model = field.annotation
        if typing.get_origin(model) is dict:
            if not parts:
                return None
            parts.pop(0)
            model = typing.get_args(model)[1]
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def parse_override(text: str) -> tuple[list[str], Any]:
    """'target.hparams.learning_rate=3e-5' -> (['target','hparams','learning_rate'], 3e-05).

    Errors name the key path, never the value: a value may be a secret (a storage URL
    with credentials), and the user has it on their command line anyway.
    """
    if "=" not in text:
        raise UserError(f"override '{text}' must look like key.path=value")
    path, raw = text.split("=", 1)
    keys = [k for k in path.strip().split(".")]
    if not all(keys):
        raise UserError(f"override '{path}=...': empty key in '{path}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        where, problem = yaml_problem(exc, raw)
        raise UserError(f"override '{path}': value is not valid YAML ({problem}{where})") from None
    return keys, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of the raw spec dict with each `-o key.path=value` applied."""
    data = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise UserError(f"override '{'.'.join(keys)}': '{where}' is a value, not a section")
            node = child
        node[keys[-1]] = value
    return data


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error: PyYAML lets
    the last one win silently, so a pasted second `learning_rate:` would change a run
    without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' given twice (first at line {first})", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[str, str]:
    """(where, what) of a YAML error in `text`, each on one line: (' at line L, column C'
    or '', the problem).

    PyYAML's own message spans several lines and quotes the offending line, which may
    hold a secret; a reader error (a control character) has no mark, only a position.
    """
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f" at line {line}, column {column}", f"unacceptable character #x{code:04x}: {exc.reason}"
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return where, getattr(exc, "problem", None) or str(exc).splitlines()[0]


def read_yaml(path: str | Path, what: str = "spec") -> dict[str, Any]:
    """Read a YAML mapping, with user errors for missing files, text that is not UTF-8,
    bad syntax and keys given twice."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} file {path} is a folder, not a file")
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save the {what} as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        where, problem = yaml_problem(exc, text)
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        raise UserError(f"{path}: empty; a {what} is a YAML mapping of keys")
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value ({type(data).__name__})"
        raise UserError(f"{path}: a {what} must be a YAML mapping of keys, got {kind}")
    return data


def validate(raw: dict[str, Any], source: str = "spec") -> Spec:
    """Validate a raw dict into a Spec, or raise one UserError listing every problem."""
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        lines = _format_validation(exc)
        raise UserError(problems_message(f"{source}: invalid experiment spec", lines)) from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> Spec:
    """Read, override and validate an experiment spec file."""
    raw = apply_overrides(read_yaml(path), overrides or [])
    return validate(raw, source=str(path))


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML, stored beside the plan for provenance."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
