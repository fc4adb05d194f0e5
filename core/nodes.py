"""The typed contract between the plan and the stages: one config model per stage.

The plan builds these models, the key hashes their JSON form, `node.json` stores it, and
the job parses it back into the model of its stage. So a stage never reads a config key
by string, and a key that the plan does not write cannot be read by a stage: both sides
are this module.

The JSON form is exactly the dict the plan wrote before these models existed (a changed
form would change every key, and orphan every finished node of every store): optional
fields that the plan only writes sometimes (`data_dir`, `data_files`, `data_revision`,
`prefix_length`, `first_of`, `continue_head`, `mixture`, a tune node's `intermediate`) are left out while unset, and
nested sections (hyperparameters, search, model) are written in full.

Torch-free: the launcher builds and writes these, the jobs read them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, NamedTuple, TypeVar, Union

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, ValidationError, model_serializer, \
    model_validator

from xstilts.core.spec import Hyperparameters, ModelSpec, Search, VisionSpec

Role = Literal["intermediate", "target"]


class NodeConfig(BaseModel):
    """The resolved config of one node: what its key hashes and its stage reads.

    `OMITTED_WHEN_UNSET` names the fields that are absent from the JSON form while they
    hold their default (None, or False for flags): the plan adds them only where they
    apply, and keys of nodes without them must not change.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    OMITTED_WHEN_UNSET: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name, default in _omitted_defaults(type(self)):
            if name in data and data[name] == default:
                del data[name]
        return data

    def as_json(self) -> dict[str, Any]:
        """The JSON object of `node.json` and of the key (see the module docstring)."""
        return self.model_dump(mode="json")


class ConfigField(NamedTuple):
    name: str
    default: Any
    omitted_when_unset: bool


@functools.cache
def config_fields(model: type[NodeConfig]) -> tuple[ConfigField, ...]:
    """A config model's fields sorted by name (the order of its canonical JSON, which
    `core.plan` writes field by field for keys), looked up once per class: a plan of 100k
    nodes serializes 100k configs, and pydantic's `model_fields` is rebuilt on each access."""
    return tuple(ConfigField(name, info.default, name in model.OMITTED_WHEN_UNSET)
                 for name, info in sorted(model.model_fields.items()))


@functools.cache
def _omitted_defaults(model: type[NodeConfig]) -> tuple[tuple[str, Any], ...]:
    """(field, default) of `model.OMITTED_WHEN_UNSET`."""
    return tuple((field.name, field.default) for field in config_fields(model) if field.omitted_when_unset)


# ------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class TinyModel:
    """A tiny XLM-R built from scratch: its config, tokenizer and masked-LM pretraining."""

    config: dict[str, int]
    """XLMRobertaConfig arguments (vocab_size is replaced by the trained tokenizer's)."""
    tokenizer_vocab_size: int
    corpus_languages: tuple[str, ...]
    corpus_sentences_per_language: int
    pretrain_steps: int
    pretrain_lr: float
    pretrain_batch_size: int


class ModelSection(NodeConfig):
    """The pretrained encoder of a prepare-model node: a hub name or local directory, or
    a tiny config with its tokenizer and pretraining settings.

    The settings of tiny models are the spec's (`ModelSpec`), present only for tiny
    models (they would change the keys of real models for nothing); the plan fills
    `corpus_languages` with the languages of the spec's tasks when the spec leaves it empty.
    """

    TINY_ONLY: ClassVar[tuple[str, ...]] = (
        "tokenizer_vocab_size", "corpus_languages", "corpus_sentences_per_language", "pretrain_steps",
        "pretrain_lr", "pretrain_batch_size",
    )
    OMITTED_WHEN_UNSET = frozenset(TINY_ONLY)

    name: str | None
    tiny: dict[str, int] | None
    tokenizer_vocab_size: int | None = None
    corpus_languages: list[str] | None = None
    corpus_sentences_per_language: int | None = None
    pretrain_steps: int | None = None
    pretrain_lr: float | None = None
    pretrain_batch_size: int | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.name is None) == (self.tiny is None):
            raise ValueError("give exactly one of 'name' (hub name or path) and 'tiny' (inline config)")
        given = [field for field in self.TINY_ONLY if getattr(self, field) is not None]
        if self.tiny is not None and len(given) != len(self.TINY_ONLY):
            missing = sorted(set(self.TINY_ONLY) - set(given))
            raise ValueError(f"a tiny model needs {', '.join(missing)}")
        if self.tiny is None and given:
            raise ValueError(f"{', '.join(given)} only apply to tiny models")
        return self

    def tiny_model(self) -> TinyModel | None:
        """The tiny model's settings, all present (validated); None for a real model."""
        if self.tiny is None:
            return None
        assert self.tokenizer_vocab_size is not None and self.corpus_languages is not None  # validated
        assert self.corpus_sentences_per_language is not None and self.pretrain_steps is not None
        assert self.pretrain_lr is not None and self.pretrain_batch_size is not None
        return TinyModel(
            config=dict(self.tiny), tokenizer_vocab_size=self.tokenizer_vocab_size,
            corpus_languages=tuple(self.corpus_languages),
            corpus_sentences_per_language=self.corpus_sentences_per_language, pretrain_steps=self.pretrain_steps,
            pretrain_lr=self.pretrain_lr, pretrain_batch_size=self.pretrain_batch_size,
        )

    @classmethod
    def from_spec(cls, model: ModelSpec, default_languages: list[str]) -> ModelSection:
        if model.tiny is None:
            return cls(name=model.name, tiny=None)
        settings = {field: getattr(model, field) for field in cls.TINY_ONLY}
        settings["corpus_languages"] = list(model.corpus_languages or default_languages)
        return cls(name=None, tiny=dict(model.tiny), **settings)


class VisionEncoderConfig(NodeConfig):
    """What decides a prepare-images node's features: a vision model on the hub (or a
    local directory), or a random tiny CLIP tower and its initialisation seed."""

    OMITTED_WHEN_UNSET = frozenset({"name", "tiny", "seed"})

    name: str | None = None
    tiny: dict[str, int] | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _one_source(self) -> VisionEncoderConfig:
        if (self.name is None) == (self.tiny is None):
            raise ValueError("give exactly one of 'name' (hub name or path) and 'tiny' (inline config)")
        if (self.tiny is None) != (self.seed is None):
            raise ValueError("'seed' goes with 'tiny' (and only with it)")
        return self

    @classmethod
    def from_spec(cls, vision: VisionSpec) -> VisionEncoderConfig:
        if vision.name:
            return cls(name=vision.name)
        return cls(tiny=dict(vision.tiny or {}), seed=vision.seed)


# ------------------------------------------------------------------------- stages


class PrepareModelConfig(NodeConfig):
    """prepare:model: build or fetch the pretrained encoder and its tokenizer."""

    model: ModelSection
    seed: int


class PrepareDataConfig(NodeConfig):
    """prepare:data: tokenize one task once for the whole grid."""

    OMITTED_WHEN_UNSET = frozenset({"data_dir", "prefix_length", "data_files", "data_revision"})

    task: str
    max_seq_length: int
    data_dir: str | None = None
    """The spec's local data folder; only for tasks read from it (never synthetic ones)."""
    prefix_length: int | None = None
    """Image-caption tasks: image prefix embeddings the captions leave room for."""
    data_files: str | None = None
    """Signature (path, size, mtime) of the local files the task reads under `data_dir`
    (`core.data_files`): a changed file changes this node's key and everything downstream.
    None for hub and generated data, and while no file exists."""
    data_revision: str | None = None
    """The spec's pinned hub revision of this task's datasets (`data_revision`)."""


class PrepareImagesConfig(NodeConfig):
    """prepare:images: the vision features of one caption dataset's images."""

    OMITTED_WHEN_UNSET = frozenset({"data_dir", "data_files"})

    dataset: str
    vision: VisionEncoderConfig
    chunk_size: int
    data_dir: str | None = None
    data_files: str | None = None
    """Signature of the dataset's local split files (`core.data_files.caption_signature`)."""


class TuneConfig(NodeConfig):
    """tune: a hyperparameter search of one task (scope per_task) or cell (per_cell)."""

    OMITTED_WHEN_UNSET = frozenset({"prefix_length", "intermediate", "continue_head"})

    task: str
    role: Role
    seed: int
    hparams: Hyperparameters
    search: Search
    prefix_length: int | None = None
    intermediate: str | None = None
    """per_cell: the cell's intermediate task (trials start from input `init`)."""
    continue_head: bool = False
    """per_cell on a two-step target (XCOPA): trials continue the first fine-tuning's head."""


class TrainIntermediateConfig(NodeConfig):
    """train-intermediate: train the pretrained encoder on one intermediate task (or mixture)."""

    OMITTED_WHEN_UNSET = frozenset({"mixture", "prefix_length"})

    task: str
    seed: int
    hparams: Hyperparameters
    mixture: list[str] | None = None
    """Member tasks trained together (inputs `data.<member>`); `task` is the mixture's name."""
    prefix_length: int | None = None


class TrainTargetConfig(NodeConfig):
    """train-target: fine-tune the cell's upstream encoder on the target task."""

    OMITTED_WHEN_UNSET = frozenset({"first_of", "continue_head"})

    task: str
    seed: int
    hparams: Hyperparameters
    intermediate: str
    first_of: str | None = None
    """This node is the first fine-tuning of that target (XCOPA's SIQA step)."""
    continue_head: bool = False
    """Go on training the head of input `init` (the first fine-tuning) instead of a fresh one."""


class EvaluateConfig(NodeConfig):
    """evaluate: zero-shot scores of a target model in every language of the task."""

    task: str
    seed: int
    intermediate: str


TrainingConfig = Union[TrainIntermediateConfig, TrainTargetConfig]
AnyNodeConfig = Union[
    PrepareModelConfig, PrepareDataConfig, PrepareImagesConfig, TuneConfig, TrainIntermediateConfig,
    TrainTargetConfig, EvaluateConfig,
]

NODE_CONFIGS: dict[str, type[NodeConfig]] = {
    "prepare:model": PrepareModelConfig,
    "prepare:data": PrepareDataConfig,
    "prepare:images": PrepareImagesConfig,
    "tune": TuneConfig,
    "train-intermediate": TrainIntermediateConfig,
    "train-target": TrainTargetConfig,
    "evaluate": EvaluateConfig,
}
"""`stage[:kind]` -> its config model; the same keys as `core.stages.STAGE_MODULES`."""


# ------------------------------------------------------------------------- parsing


class NodeRecordError(ValueError):
    """A node.json that is torn, foreign (not written by this plan) or of an unknown stage."""


def config_model(stage: str, kind: str | None) -> type[NodeConfig]:
    name = stage if kind is None else f"{stage}:{kind}"
    model = NODE_CONFIGS.get(name)
    if model is None:
        raise NodeRecordError(f"unknown node type '{name}'; known: {', '.join(NODE_CONFIGS)}")
    return model


def parse_config(stage: str, kind: str | None, config: object) -> AnyNodeConfig:
    """The typed config of a `stage` (and prepare `kind`) node from its JSON object."""
    model = config_model(stage, kind)
    name = stage if kind is None else f"{stage}:{kind}"
    if not isinstance(config, dict):
        raise NodeRecordError(f"the config of a {name} node must be a JSON object, got {type(config).__name__}")
    try:
        return model.model_validate(config)  # type: ignore[return-value]  # NODE_CONFIGS holds AnyNodeConfig's members
    except ValidationError as exc:
        raise NodeRecordError(f"invalid {name} node config:\n  " + "\n  ".join(_problems(exc, model))) from None


def _problems(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """pydantic's errors as 'key.path: problem' lines that name the valid keys."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        path = ".".join(loc) or "config"
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            valid = f"; valid keys: {', '.join(owner.model_fields)}" if owner else ""
            lines.append(f"{path}: unknown key{valid}")
        elif err["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    return lines


def _model_at(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return None
        current = field.annotation
        if getattr(current, "__args__", None):  # `Section | None`: the section
            current = next((a for a in current.__args__ if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


ConfigT = TypeVar("ConfigT", bound=NodeConfig, covariant=True)


@dataclass(frozen=True)
class NodeRecord(Generic[ConfigT]):
    """`node.json`, typed: everything a job needs to run one node."""

    stage: str
    kind: str | None
    task: str | None
    intermediate: str | None
    seed: int | None
    key: str
    config: ConfigT
    inputs: dict[str, str]
    """Input name -> 'stage/key' of the node it reads."""

    @property
    def ref(self) -> str:
        return f"{self.stage}/{self.key}"

    def as_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage, "kind": self.kind, "task": self.task, "intermediate": self.intermediate,
            "seed": self.seed, "key": self.key, "config": self.config.as_json(), "inputs": dict(self.inputs),
        }


RECORD_FIELDS = ("stage", "kind", "task", "intermediate", "seed", "key", "config", "inputs")


def parse_node_record(data: object, where: str = "node.json") -> NodeRecord[AnyNodeConfig]:
    """A node.json's content, typed; `NodeRecordError` naming `where` and the problem if
    it is torn (not an object, fields missing) or foreign (unknown fields or stage)."""
    if not isinstance(data, dict):
        raise NodeRecordError(f"{where}: expected a JSON object, got {type(data).__name__}")
    missing = [name for name in RECORD_FIELDS if name not in data]
    unknown = sorted(set(data) - set(RECORD_FIELDS))
    if missing or unknown:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(unknown)}"] if unknown else [])
        raise NodeRecordError(f"{where}: not a node record of this version ({'; '.join(problems)}); "
                              f"fields: {', '.join(RECORD_FIELDS)}")
    inputs = data["inputs"]
    if not (isinstance(inputs, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in inputs.items())):
        raise NodeRecordError(f"{where}: inputs must map names to 'stage/key' refs, got {inputs!r}")
    for name in ("stage", "key"):
        if not isinstance(data[name], str):
            raise NodeRecordError(f"{where}: {name} must be a string, got {data[name]!r}")
    try:
        config = parse_config(data["stage"], data["kind"], data["config"])
    except NodeRecordError as exc:
        raise NodeRecordError(f"{where}: {exc}") from None
    return NodeRecord(stage=data["stage"], kind=data["kind"], task=data["task"], intermediate=data["intermediate"],
                      seed=data["seed"], key=data["key"], config=config, inputs=dict(inputs))


def run_name(stage: str, task: str | None, intermediate: str | None, seed: int | None) -> str:
    """stage/task[/intermediate]/seed<n>: how a node's curves are called, by the jobs (W&B
    runs, `jobs.tracking`) and by `xstilts tensorboard` alike."""
    parts = [stage, task or "model"]
    if intermediate is not None and stage != "train-intermediate":
        parts.append(intermediate)
    if seed is not None:
        parts.append(f"seed{seed}")
    return "/".join(parts)
