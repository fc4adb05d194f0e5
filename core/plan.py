"""Expand a spec into the DAG of nodes, each with a content key.

A node's key hashes everything that determines its output: stage, resolved config and
the keys of its inputs. Equal keys mean equal outputs, which is what lets the launcher
skip finished nodes and lets experiments share them (an intermediate checkpoint for
(task, seed) is trained once for every target). Changing a hyperparameter changes the
key of that node and of everything downstream, and of nothing else. The same holds for
data: a prepare node's key includes a signature of the local files it reads and the hub
revision the spec pins (`core.data_files`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import heapq
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from json.encoder import encode_basestring_ascii  # json's C string encoder
from typing import Any

from pydantic import BaseModel

from xstilts.core.captions import is_generated
from xstilts.core.data_files import caption_signature, task_signature
from xstilts.core.nodes import (
    AnyNodeConfig, EvaluateConfig, ModelSection, NodeConfig, PrepareDataConfig, PrepareImagesConfig, PrepareModelConfig, Role,
    TrainIntermediateConfig, TrainTargetConfig, TuneConfig, VisionEncoderConfig, config_fields,
)
from xstilts.core.tasks import BASELINE, TASKS
from xstilts.core.spec import Hyperparameters, Search, Spec
from xstilts.core.stages import STAGES, StageName

KEY_VERSION = 2
"""Bumped when the meaning of a config changes so that old outputs are not reused.
2: prepared data holds `features/` + `examples.jsonl` per split and language (task heads)."""

KEY_LENGTH = 16


@dataclass(frozen=True)
class Node:
    """One unit of work in the grid."""

    stage: StageName
    config: AnyNodeConfig
    inputs: dict[str, Node] = field(default_factory=dict)
    kind: str | None = None  # prepare: "model" or "data"
    task: str | None = None
    intermediate: str | None = None  # the intermediate row this node belongs to
    seed: int | None = None
    code: str | None = None
    """The launcher's code version, for stages the spec keys by code (`rerun_on_code_change`);
    None (the default) leaves the key as it always was."""

    @cached_property
    def key(self) -> str:
        return _key_of(self)

    @property
    def ref(self) -> str:
        """'stage/key': where the node lives under <root>/nodes/."""
        return f"{self.stage}/{self.key}"

    @property
    def label(self) -> str:
        """A short human name: stage and the cell it belongs to."""
        parts = [self.stage if self.kind is None else f"{self.stage}:{self.kind}"]
        if self.intermediate is not None and self.stage != "train-intermediate":
            parts.append(f"{self.intermediate}->{self.task}")
        elif self.task is not None:
            parts.append(self.task)
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return " ".join(parts)

    def record(self) -> dict[str, Any]:
        """What goes to node.json: everything a job needs to run this node."""
        return {
            "stage": self.stage,
            "kind": self.kind,
            "task": self.task,
            "intermediate": self.intermediate,
            "seed": self.seed,
            "key": self.key,
            "config": self.config.as_json(),
            "inputs": {name: node.ref for name, node in self.inputs.items()},
        }

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other.key == self.key


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
"""One encoder for every key: `json.dumps` with options builds a new one per call, and a
plan of 100k nodes hashes 100k payloads (the output is the same bytes: keys never change)."""


def _canonical(obj: Any) -> str:
    return _CANONICAL.encode(obj)


def _key_of(node: Node) -> str:
    """sha256 of the canonical JSON (`_canonical`) of {v, stage, kind, config, inputs[,
    code]}, written out field by field in sorted order: the same bytes as encoding that
    dict (`tests/unit/core/test_generated_keys.py` and the golden files hold them equal),
    without serializing and re-encoding a config's shared hyperparameters per node."""
    inputs = _CANONICAL.encode({name: dep.key for name, dep in node.inputs.items()})
    text = "".join([
        "{", "" if node.code is None else f'"code":{_json_scalar(node.code)},',
        '"config":', _canonical_config(node.config), ',"inputs":', inputs, ',"kind":', _json_scalar(node.kind),
        ',"stage":', _json_scalar(node.stage), f',"v":{KEY_VERSION}}}',
    ])
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def _json_scalar(value: Any) -> str:
    """What the canonical encoder writes for a str, bool, int, finite float or None
    (json's own rules: ASCII-escaped strings, `repr` of floats); anything else through it."""
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return int.__repr__(value) if type(value) is int else float.__repr__(value)
    return _CANONICAL.encode(value)


def _canonical_config(config: NodeConfig) -> str:
    """`_canonical(config.as_json())`: the fields in sorted order, those `OMITTED_WHEN_UNSET`
    left out at their default, nested models (hyperparameters, search, model section)
    through `_canonical_model`, which every node of a task shares."""
    parts = []
    for name, default, omitted in config_fields(type(config)):
        value = getattr(config, name)
        if omitted and value == default:
            continue
        encoded = _canonical_model(value) if isinstance(value, BaseModel) else _json_scalar(value)
        parts.append(f"{encode_basestring_ascii(name)}:{encoded}")
    return "{" + ",".join(parts) + "}"


@functools.lru_cache(maxsize=1024)
def _canonical_model_cached(model: BaseModel) -> str:
    return _canonical(model.model_dump(mode="json"))


def _canonical_model(model: BaseModel) -> str:
    """A nested model's canonical JSON, computed once per distinct value where it is
    hashable (frozen, scalar fields: the hyperparameters every seed and cell share)."""
    try:
        return _canonical_model_cached(model)
    except TypeError:  # unhashable (dict or list fields: a search space, a tiny model)
        return _canonical(model.model_dump(mode="json"))


@dataclass
class Plan:
    """The DAG of one experiment, nodes in dependency order (inputs first)."""

    experiment: str
    nodes: list[Node]

    def by_key(self) -> dict[str, Node]:
        return {node.key: node for node in self.nodes}

    def counts(self) -> dict[StageName, int]:
        counter = Counter(node.stage for node in self.nodes)
        return {stage: counter[stage] for stage in STAGES if counter[stage]}

    def evaluations(self) -> list[Node]:
        return [node for node in self.nodes if node.stage == "evaluate"]

    def find(self, name: str) -> Node:
        """A node by key or unique key prefix (as `xstilts logs` takes it)."""
        matches = [node for node in self.nodes if node.key.startswith(name)]
        if len(matches) != 1:
            from xstilts.core.errors import UserError

            problem = "no node" if not matches else f"{len(matches)} nodes"
            raise UserError(f"{problem} of experiment '{self.experiment}' has a key starting with '{name}'; "
                            "`xstilts status SPEC` lists the keys")
        return matches[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "counts": self.counts(),
            "nodes": [
                {
                    "stage": n.stage,
                    "kind": n.kind,
                    "task": n.task,
                    "intermediate": n.intermediate,
                    "seed": n.seed,
                    "key": n.key,
                    "label": n.label,
                    "inputs": {name: dep.key for name, dep in n.inputs.items()},
                }
                for n in self.nodes
            ],
        }


class _Builder:
    """Collects nodes, deduplicating by key and keeping dependency order; stamps the code
    version on nodes of code-keyed stages (their users' keys then change with it, as
    keys chain)."""

    def __init__(self, code_keyed: frozenset[str] = frozenset(), code: str | None = None) -> None:
        self.nodes: dict[str, Node] = {}
        self.code_keyed = code_keyed
        self.code = code

    def add(self, node: Node) -> Node:
        if node.stage in self.code_keyed:
            node = dataclasses.replace(node, code=self.code)
        return self.nodes.setdefault(node.key, node)


def _model_languages(spec: Spec) -> list[str]:
    languages: list[str] = []
    names = [*spec.intermediate.tasks, *spec.target.tasks]
    names = [member for name in names for member in spec.intermediate.mixtures.get(name, [name])]
    for name in names:
        if name == BASELINE:
            continue
        for lang in TASKS[name].languages:
            if lang not in languages:
                languages.append(lang)
    return languages


def build_plan(spec: Spec, code_version: str | None = None) -> Plan:
    """Expand intermediate x target x seed into prepare/train/evaluate nodes.

    With `rerun_on_code_change`, the chosen stages' keys include `code_version`: the
    launch's (a command following a launch passes the one it recorded), by default the
    running code's (`core.provenance.code_version`)."""
    code_keyed = spec.code_keyed_stages()
    if code_keyed and code_version is None:
        from xstilts.core.provenance import code_version as running_code

        code_version = running_code()
    builder = _Builder(code_keyed, code_version)
    model = builder.add(Node(stage="prepare", kind="model", config=PrepareModelConfig(
        model=ModelSection.from_spec(spec.model, _model_languages(spec)), seed=0)))

    def local_data_dir(source_kind: str, name: str) -> str | None:
        """The spec's data_dir for data read from it (never generated data); None keeps
        the keys of hub-data specs as they were."""
        if spec.data_dir is None or source_kind == "synthetic" or is_generated(name):
            return None
        return spec.data_dir

    # once per (role, task): every seed and cell of a task shares them (frozen), and
    # validating them again per node was a tenth of a 100k-node plan
    hparams_for: Callable[[Role, str], Hyperparameters] = functools.cache(spec.hparams_for)

    signatures: dict[str, str | None] = {}

    def data_signature(task: str, data_dir: str) -> str | None:
        """Once per task and plan: a task's data node is asked for by every role that reads it."""
        if task not in signatures:
            signatures[task] = task_signature(TASKS[task], data_dir)
        return signatures[task]

    def images_node(dataset: str) -> Node:
        """One prepare-images node per caption dataset and vision encoder: its features
        serve every image-caption task of the dataset (and every seed)."""
        assert spec.vision is not None  # validated: image tasks need a vision section
        data_dir = local_data_dir("captions", dataset)
        config = PrepareImagesConfig(dataset=dataset, vision=VisionEncoderConfig.from_spec(spec.vision),
                                     chunk_size=spec.vision.chunk_size, data_dir=data_dir,
                                     data_files=None if data_dir is None else caption_signature(dataset, data_dir))
        return builder.add(Node(stage="prepare", kind="images", task=dataset, config=config))

    def data_node(task: str, role: Role, hparams_of: str | None = None) -> Node:
        hp = hparams_for(role, hparams_of or task)
        source = TASKS[task].source
        inputs: dict[str, Node] = {"model": model}
        if TASKS[task].kind == "image_text":
            inputs["images"] = images_node(source.name)
        data_dir = local_data_dir(source.kind, source.name)
        # The files' signature and a pinned hub revision are part of the key: changed
        # data reruns this node and everything downstream (`core.data_files`).
        config = PrepareDataConfig(task=task, max_seq_length=hp.max_seq_length, data_dir=data_dir,
                                   prefix_length=prefix_length(task),  # captions leave room for the image prefix
                                   data_files=None if data_dir is None else data_signature(task, data_dir),
                                   data_revision=spec.data_revision.get(task))
        return builder.add(Node(stage="prepare", kind="data", task=task, inputs=inputs, config=config))

    def prefix_length(task: str) -> int | None:
        """Image-caption tasks that read images: the prefix length (data, training and tune nodes)."""
        if task in TASKS and TASKS[task].kind == "image_text" and TASKS[task].images != "none" and spec.vision:
            return spec.vision.prefix_length
        return None

    def tune_config(task: str, role: Role, search: Search, **extra: Any) -> TuneConfig:
        return TuneConfig(task=task, role=role, seed=0, hparams=hparams_for(role, task), search=search,
                          prefix_length=prefix_length(task), **extra)

    def tune_input(task: str, role: Role, data: Node) -> dict[str, Node]:
        """`{"tune": node}` when the stage searches hyperparameters: one tune node per task
        (scope per_task) on the pretrained encoder, whose choice every training node of
        the task uses; its key is part of theirs."""
        search = (spec.intermediate if role == "intermediate" else spec.target).search
        if search is None:
            return {}
        return {"tune": builder.add(Node(
            stage="tune", task=task, inputs={"model": model, "data": data}, config=tune_config(task, role, search),
        ))}

    def target_upstream(target: str, intermediate: str, seed: int) -> tuple[Node, bool]:
        """The encoder a target training of cell (intermediate, target, seed) starts from,
        and whether it continues that encoder's head. For a target with a first
        fine-tuning (XCOPA: SIQA, the official recipe) that is its own node, continued
        with the same head."""
        upstream = model if intermediate == BASELINE else intermediate_nodes[(intermediate, seed)]
        first = TASKS[target].train_first
        if not first:
            return upstream, False
        first_node = builder.add(Node(
            stage="train-target", task=first, seed=seed, intermediate=intermediate,
            inputs={"init": upstream, "data": data_node(first, "target", hparams_of=target)},
            config=TrainTargetConfig(task=first, seed=seed, hparams=hparams_for("target", target),
                                     intermediate=intermediate, first_of=target),
        ))
        return first_node, True

    def target_tune_input(target: str, intermediate: str, data: Node) -> dict[str, Node]:
        """`{"tune": node}` for the target trainings of one cell. Scope per_cell searches on
        the cell's own upstream encoder (that of the first seed, so that one search serves
        every seed of the cell); the tune stage takes it from input `init`."""
        search = spec.target.search
        if search is None or search.scope != "per_cell":
            return tune_input(target, "target", data)
        init, continue_head = target_upstream(target, intermediate, spec.seeds[0])
        return {"tune": builder.add(Node(
            stage="tune", task=target, intermediate=intermediate,
            inputs={"model": model, "data": data, "init": init},
            config=tune_config(target, "target", search, intermediate=intermediate, continue_head=continue_head),
        ))}

    intermediate_nodes: dict[tuple[str, int], Node] = {}
    for task in spec.intermediate.tasks:
        if task == BASELINE:
            continue
        members = spec.intermediate.mixtures.get(task)
        if members:  # one data node per member, prepared with the mixture's sequence length
            inputs = {f"data.{m}": data_node(m, "intermediate", hparams_of=task) for m in members}
        else:
            data = data_node(task, "intermediate")
            inputs = {"data": data, **tune_input(task, "intermediate", data)}
        for seed in spec.seeds:
            intermediate_nodes[(task, seed)] = builder.add(Node(
                stage="train-intermediate", task=task, seed=seed, intermediate=task,
                inputs={"model": model, **inputs},
                config=TrainIntermediateConfig(
                    task=task, seed=seed, hparams=hparams_for("intermediate", task),
                    mixture=list(members) if members else None, prefix_length=None if members else prefix_length(task),
                ),
            ))

    for target in spec.target.tasks:
        data = data_node(target, "target")
        retrieval = TASKS[target].kind == "retrieval"
        for intermediate in spec.intermediate.tasks:
            # Retrieval is evaluated straight from the intermediate encoder: nothing to tune.
            tune = {} if retrieval else target_tune_input(target, intermediate, data)
            for seed in spec.seeds:
                if retrieval:
                    evaluated = model if intermediate == BASELINE else intermediate_nodes[(intermediate, seed)]
                else:
                    init, continue_head = target_upstream(target, intermediate, seed)
                    evaluated = builder.add(Node(
                        stage="train-target", task=target, seed=seed, intermediate=intermediate,
                        inputs={"init": init, "data": data, **tune},
                        config=TrainTargetConfig(task=target, seed=seed, hparams=hparams_for("target", target),
                                                 intermediate=intermediate, continue_head=continue_head),
                    ))
                builder.add(Node(
                    stage="evaluate", task=target, seed=seed, intermediate=intermediate,
                    inputs={"model": evaluated, "data": data},
                    config=EvaluateConfig(task=target, seed=seed, intermediate=intermediate),
                ))

    return Plan(experiment=spec.name, nodes=_dependency_order(list(builder.nodes.values())))


def _dependency_order(nodes: list[Node]) -> list[Node]:
    """`nodes` with every input before its users, grouped by stage as far as that allows.

    Sorting by stage alone is not a dependency order once a per_cell tune node trains on
    a train-intermediate checkpoint. Kahn's algorithm always taking the ready node that is
    first by (stage, build order) gives exactly the stage sort whenever that sort is a
    dependency order (so plans without per_cell keep their order), and otherwise lets a
    node wait only for what it depends on.
    """
    by_stage = sorted(nodes, key=lambda node: _STAGE_RANK[node.stage])  # stable: build order within a stage
    if _inputs_first(by_stage):
        return by_stage  # what Kahn's algorithm returns then, in one pass instead of a heap of every node
    return _kahn_order(nodes)


_STAGE_RANK: dict[str, int] = {stage: i for i, stage in enumerate(STAGES)}


def _kahn_order(nodes: list[Node]) -> list[Node]:
    """Kahn's algorithm, always taking the ready node first by (stage, build order)."""
    stage_rank = _STAGE_RANK
    rank = {node.key: (stage_rank[node.stage], index) for index, node in enumerate(nodes)}
    waiting_on = {node.key: {dep.key for dep in node.inputs.values() if dep.key in rank} for node in nodes}
    users: dict[str, list[Node]] = {node.key: [] for node in nodes}
    for node in nodes:
        for dep_key in waiting_on[node.key]:
            users[dep_key].append(node)
    ready = [(rank[node.key], node) for node in nodes if not waiting_on[node.key]]
    heapq.heapify(ready)
    ordered: list[Node] = []
    while ready:
        _, node = heapq.heappop(ready)
        ordered.append(node)
        for user in users[node.key]:
            waiting_on[user.key].discard(node.key)
            if not waiting_on[user.key]:
                heapq.heappush(ready, (rank[user.key], user))
    if len(ordered) != len(nodes):  # impossible while keys hash their inputs' keys
        raise ValueError("the plan's nodes depend on each other in a cycle")
    return ordered


def _inputs_first(nodes: list[Node]) -> bool:
    """Whether every input of a node of `nodes` that is in `nodes` comes before it."""
    position = {node.key: index for index, node in enumerate(nodes)}
    return all(position.get(dep.key, -1) < index for index, node in enumerate(nodes) for dep in node.inputs.values())
