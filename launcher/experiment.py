"""An opened experiment: spec, profile, store and plan, validated together.

Every CLI command starts here, so every command rejects bad input the same way and
before anything is written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from xstilts.core.errors import UserError
from xstilts.core.plan import Node, Plan, build_plan
from xstilts.launcher.executors import Executor, executor_for
from xstilts.launcher.profiles import LocalProfile, SlurmProfile, load_profile
from xstilts.core.spec import Spec, dump_spec, load_spec
from xstilts.core.state import node_done, node_status
from xstilts.core.lease import lease_ttl
from xstilts.core.store import Store, check_storage_url


@dataclass
class Experiment:
    spec: Spec
    profile: LocalProfile | SlurmProfile
    store: Store
    plan: Plan

    def node_dir(self, node: Node) -> str:
        return self.store.node_path(node.stage, node.key)

    @property
    def executor(self) -> Executor:
        """How this experiment's nodes run, from its profile."""
        return executor_for(self.profile)

    def statuses(self, need_cluster: bool = True) -> dict[str, tuple[str, dict[str, Any]]]:
        """key -> (status, state) for every node of the plan: the store's view, merged by
        the executor with what it knows (SLURM: one `squeue` and `sacct` for the grid;
        the state then carries the `reason` of a failure). With `need_cluster=False`
        (dry runs off the cluster) an unreachable cluster leaves the store's view as it is.
        """
        stored = {node.key: node_status(self.store, self.node_dir(node)) for node in self.plan.nodes}
        return self.executor.live_statuses(self, stored, need_cluster)

    def is_done(self, node: Node) -> bool:
        """DONE written and result.json readable: the one meaning of done (`core.state`)."""
        return node_done(self.store, self.node_dir(node)) is None

    def result(self, node: Node) -> dict[str, Any] | None:
        return self.store.read_json(f"{self.node_dir(node)}/result.json")

    def materialize(self) -> None:
        """Write spec.yaml, plan.json and every node.json; the files are replaced atomically.

        node.json content is a pure function of the key, so one that holds what the plan
        says is left alone; one that does not (torn by a crash, edited, written by an
        older version) is written again: a node whose node.json cannot be read fails on
        every run, so a launch repairs it.
        """
        try:
            self.store.write_text(self.store.experiment_path(self.spec.name, "spec.yaml"), dump_spec(self.spec))
        except Exception as exc:  # first write: report an unreachable or read-only root plainly
            raise UserError(f"storage: cannot write to {self.store.url}: {type(exc).__name__}: {exc}") from None
        plan_json = {**self.plan.to_json(), "written": time.time()}
        self.store.write_json(self.store.experiment_path(self.spec.name, "plan.json"), plan_json)
        for node in self.plan.nodes:
            path = f"{self.node_dir(node)}/node.json"
            record = node.record()
            if self.store.read_json(path) != json.loads(json.dumps(record, default=str)):
                self.store.write_json(path, record)


def open_experiment(spec_path: str, overrides: list[str] | None = None, profile: str | None = None) -> Experiment:
    """Validate spec, storage URL, profile and the environment (the lease TTL every node
    process will read); build the plan. Writes nothing."""
    spec = load_spec(spec_path, overrides)
    url = check_storage_url(spec.storage)
    lease_ttl()
    chosen = load_profile(profile or spec.cluster)
    return Experiment(spec=spec, profile=chosen, store=Store(url), plan=build_plan(spec))
