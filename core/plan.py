"""Expand a spec into the DAG of nodes, each with a content key.

A node's key hashes everything that determines its output: stage, resolved config and
the keys of its inputs. Equal keys mean equal outputs, which is what lets the launcher
skip finished nodes and lets experiments share them (an intermediate checkpoint for
(task, seed) is trained once for every target). Changing a hyperparameter changes the
key of that node and of everything downstream, and of nothing else.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from xstilts.core.tasks import BASELINE, TASKS
from xstilts.core.spec import Search, Spec
from xstilts.core.stages import STAGES

KEY_VERSION = 2
"""Bumped when the meaning of a config changes so that old outputs are not reused.
2: prepared data holds `features/` + `examples.jsonl` per split and language (task heads)."""

KEY_LENGTH = 16

GENERATED_CAPTIONS = frozenset({"syn-shapes"})
"""Caption datasets made by the project (never read from `data_dir`)."""


@dataclass(frozen=True)
class Node:
    """One unit of work in the grid."""

    stage: str
    config: dict[str, Any]
    inputs: dict[str, Node] = field(default_factory=dict)
    kind: str | None = None  # prepare: "model" or "data"
    task: str | None = None
    intermediate: str | None = None  # the intermediate row this node belongs to
    seed: int | None = None

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
            "config": self.config,
            "inputs": {name: node.ref for name, node in self.inputs.items()},
        }

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other.key == self.key


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _key_of(node: Node) -> str:
    payload = {
        "v": KEY_VERSION,
        "stage": node.stage,
        "kind": node.kind,
        "config": node.config,
        "inputs": {name: dep.key for name, dep in sorted(node.inputs.items())},
    }
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()[:KEY_LENGTH]


@dataclass
class Plan:
    """The DAG of one experiment, nodes in dependency order (inputs first)."""

    experiment: str
    nodes: list[Node]

    def by_key(self) -> dict[str, Node]:
        return {node.key: node for node in self.nodes}

    def counts(self) -> dict[str, int]:
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
    """Collects nodes, deduplicating by key and keeping dependency order."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}

    def add(self, node: Node) -> Node:
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


def build_plan(spec: Spec) -> Plan:
    """Expand intermediate x target x seed into prepare/train/evaluate nodes."""
    builder = _Builder()
    model_config = spec.model.model_dump(mode="json")
    if spec.model.tiny is not None and not model_config["corpus_languages"]:
        model_config["corpus_languages"] = _model_languages(spec)
    if spec.model.tiny is None:
        # Settings that only shape tiny models would change keys of real models for nothing.
        for unused in ("tokenizer_vocab_size", "corpus_languages", "corpus_sentences_per_language", "pretrain_steps", "pretrain_lr", "pretrain_batch_size"):
            model_config.pop(unused)
    model = builder.add(Node(stage="prepare", kind="model", config={"model": model_config, "seed": 0}))

    def reads_data_dir(source_kind: str, name: str) -> bool:
        return spec.data_dir is not None and source_kind != "synthetic" and name not in GENERATED_CAPTIONS

    def images_node(dataset: str) -> Node:
        """One prepare-images node per caption dataset and vision encoder: its features
        serve every image-caption task of the dataset (and every seed)."""
        assert spec.vision is not None  # validated: image tasks need a vision section
        config: dict[str, Any] = {"dataset": dataset, "vision": spec.vision.encoder(),
                                  "chunk_size": spec.vision.chunk_size}
        if reads_data_dir("captions", dataset):
            config["data_dir"] = spec.data_dir
        return builder.add(Node(stage="prepare", kind="images", task=dataset, config=config))

    def data_node(task: str, role: str, hparams_of: str | None = None) -> Node:
        hp = spec.hparams_for(role, hparams_of or task)
        config: dict[str, Any] = {"task": task, "max_seq_length": hp.max_seq_length}
        source = TASKS[task].source
        if reads_data_dir(source.kind, source.name):
            config["data_dir"] = spec.data_dir  # only when set: keys of hub-data specs stay as they were
        inputs: dict[str, Node] = {"model": model}
        if TASKS[task].kind == "image_text":
            inputs["images"] = images_node(source.name)
            config.update(image_settings(task))  # captions leave room for the image prefix
        return builder.add(Node(stage="prepare", kind="data", task=task, inputs=inputs, config=config))

    def train_config(task: str, role: str, seed: int, hparams_of: str | None = None, **extra: Any) -> dict[str, Any]:
        hparams = spec.hparams_for(role, hparams_of or task).model_dump(mode="json")
        return {"task": task, "seed": seed, "hparams": hparams, **extra}

    def image_settings(task: str) -> dict[str, Any]:
        """Image-caption tasks that read images: the prefix length (training and tune nodes)."""
        if task in TASKS and TASKS[task].kind == "image_text" and TASKS[task].images != "none" and spec.vision:
            return {"prefix_length": spec.vision.prefix_length}
        return {}

    def tune_config(task: str, role: str, search: Search) -> dict[str, Any]:
        hparams = spec.hparams_for(role, task).model_dump(mode="json")
        return {"task": task, "role": role, "seed": 0, "hparams": hparams, "search": search.model_dump(mode="json"),
                **image_settings(task)}

    def tune_input(task: str, role: str, data: Node) -> dict[str, Node]:
        """`{"tune": node}` when the stage searches hyperparameters: one tune node per task
        (scope per_task) on the pretrained encoder, whose choice every training node of
        the task uses; its key is part of theirs."""
        search = (spec.intermediate if role == "intermediate" else spec.target).search
        if search is None:
            return {}
        return {"tune": builder.add(Node(
            stage="tune", task=task, inputs={"model": model, "data": data}, config=tune_config(task, role, search),
        ))}

    def target_upstream(target: str, intermediate: str, seed: int) -> tuple[Node, dict[str, Any]]:
        """The encoder a target training of cell (intermediate, target, seed) starts from,
        and the config that goes with it. For a target with a first fine-tuning (XCOPA:
        SIQA, the official recipe) that is its own node, continued with the same head."""
        upstream = model if intermediate == BASELINE else intermediate_nodes[(intermediate, seed)]
        first = TASKS[target].train_first
        if not first:
            return upstream, {}
        first_node = builder.add(Node(
            stage="train-target", task=first, seed=seed, intermediate=intermediate,
            inputs={"init": upstream, "data": data_node(first, "target", hparams_of=target)},
            config=train_config(first, "target", seed, hparams_of=target, intermediate=intermediate, first_of=target),
        ))
        return first_node, {"continue_head": True}

    def target_tune_input(target: str, intermediate: str, data: Node) -> dict[str, Node]:
        """`{"tune": node}` for the target trainings of one cell. Scope per_cell searches on
        the cell's own upstream encoder (that of the first seed, so that one search serves
        every seed of the cell); the tune stage takes it from input `init`."""
        search = spec.target.search
        if search is None or search.scope != "per_cell":
            return tune_input(target, "target", data)
        init, extra = target_upstream(target, intermediate, spec.seeds[0])
        return {"tune": builder.add(Node(
            stage="tune", task=target, intermediate=intermediate,
            inputs={"model": model, "data": data, "init": init},
            config={**tune_config(target, "target", search), "intermediate": intermediate, **extra},
        ))}

    intermediate_nodes: dict[tuple[str, int], Node] = {}
    for task in spec.intermediate.tasks:
        if task == BASELINE:
            continue
        members = spec.intermediate.mixtures.get(task)
        extra: dict[str, Any]
        if members:  # one data node per member, prepared with the mixture's sequence length
            inputs = {f"data.{m}": data_node(m, "intermediate", hparams_of=task) for m in members}
            extra = {"mixture": list(members)}
        else:
            data = data_node(task, "intermediate")
            inputs, extra = {"data": data, **tune_input(task, "intermediate", data)}, image_settings(task)
        for seed in spec.seeds:
            intermediate_nodes[(task, seed)] = builder.add(Node(
                stage="train-intermediate", task=task, seed=seed, intermediate=task,
                inputs={"model": model, **inputs}, config=train_config(task, "intermediate", seed, **extra),
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
                    init, extra = target_upstream(target, intermediate, seed)
                    evaluated = builder.add(Node(
                        stage="train-target", task=target, seed=seed, intermediate=intermediate,
                        inputs={"init": init, "data": data, **tune},
                        config=train_config(target, "target", seed, intermediate=intermediate, **extra),
                    ))
                builder.add(Node(
                    stage="evaluate", task=target, seed=seed, intermediate=intermediate,
                    inputs={"model": evaluated, "data": data},
                    config={"task": target, "seed": seed, "intermediate": intermediate},
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
    stage_rank = {stage: i for i, stage in enumerate(STAGES)}
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
