"""An opened experiment: spec, profile, store and plan, validated together.

Every CLI command starts here, so every command rejects bad input the same way and
before anything is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from xstilts.core.errors import UserError
from xstilts.core.plan import Node, Plan, build_plan
from xstilts.launcher.profiles import Profile, load_profile
from xstilts.core.spec import Spec, dump_spec, load_spec
from xstilts.core.state import node_status
from xstilts.core.store import Store, check_storage_url


@dataclass
class Experiment:
    spec: Spec
    profile: Profile
    store: Store
    plan: Plan

    def node_dir(self, node: Node) -> str:
        return self.store.node_path(node.stage, node.key)

    def statuses(self, need_slurm: bool = True) -> dict[str, tuple[str, dict[str, Any]]]:
        """key -> (status, state) for every node of the plan.

        On the slurm executor the store's view is merged with one `squeue` (and one
        `sacct`, where accounting exists) for the whole grid; the state then carries the
        `reason` of a failure SLURM knows about. With `need_slurm=False` (dry runs off the
        cluster) an unreachable SLURM leaves the store's view as it is.
        """
        statuses = {node.key: node_status(self.store, self.node_dir(node)) for node in self.plan.nodes}
        if self.profile.executor != "slurm":
            return statuses
        from xstilts.launcher import slurm

        try:
            live = slurm.squeue(slurm.job_name(self.spec.name))
        except slurm.SlurmUnavailable:
            if need_slurm:
                raise
            return statuses
        ended = [slurm.last_job_id(state) for status, state in statuses.values() if status not in ("done", "running")]
        ended = [job for job in ended if job and job not in live]
        finished = slurm.sacct(ended) if ended else {}
        merged = {}
        for key, (status, state) in statuses.items():
            new_status, reason = slurm.merge_status(status, state, live, finished)
            merged[key] = (new_status, {**state, "reason": reason} if reason else state)
        return merged

    def result(self, node: Node) -> dict[str, Any] | None:
        return self.store.read_json(f"{self.node_dir(node)}/result.json")

    def materialize(self) -> None:
        """Write spec.yaml, plan.json and every node.json (unchanged files are left alone).

        node.json content is a pure function of the key, so an existing one is never
        rewritten; the experiment files are replaced atomically.
        """
        try:
            self.store.write_text(self.store.experiment_path(self.spec.name, "spec.yaml"), dump_spec(self.spec))
        except Exception as exc:  # first write: report an unreachable or read-only root plainly
            raise UserError(f"storage: cannot write to {self.store.url}: {type(exc).__name__}: {exc}") from None
        plan_json = {**self.plan.to_json(), "written": time.time()}
        self.store.write_json(self.store.experiment_path(self.spec.name, "plan.json"), plan_json)
        for node in self.plan.nodes:
            path = f"{self.node_dir(node)}/node.json"
            if not self.store.exists(path):
                self.store.write_json(path, node.record())


def open_experiment(spec_path: str, overrides: list[str] | None = None, profile: str | None = None) -> Experiment:
    """Validate spec, storage URL and profile; build the plan. Writes nothing."""
    spec = load_spec(spec_path, overrides)
    url = check_storage_url(spec.storage)
    chosen = load_profile(profile or spec.cluster)
    return Experiment(spec=spec, profile=chosen, store=Store(url), plan=build_plan(spec))
