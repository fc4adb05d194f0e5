"""Job arrays for SLURM, without a cluster: waves, splitting, dependencies, dry runs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from xstilts.launcher import slurm
from xstilts.core.plan import build_plan
from xstilts.launcher.profiles import SlurmProfile, load_profile
from xstilts.core.spec import validate
from tests.support.specs import demo_raw
from tests.support.grid import cli_env, run_cli


def test_demo_is_one_array_per_stage_wave() -> None:
    plan = build_plan(validate(demo_raw()))
    arrays = slurm.plan_arrays(plan.nodes, {}, size=1000, grouping="wave")
    assert sum(len(a.nodes) for a in arrays) == len(plan.nodes) == 56
    assert [(a.wave, a.stage, len(a.nodes)) for a in arrays] == [  # the model and the image features first
        (0, "prepare", 2), (1, "prepare", 6), (2, "train-intermediate", 8), (2, "train-target", 4),
        (3, "train-target", 16), (3, "evaluate", 4), (4, "evaluate", 16),
    ]
    position = {node.key: a.index for a in arrays for node in a.nodes}
    for array in arrays:  # every input is in an earlier array this one waits for
        for node in array.nodes:
            for dep in node.inputs.values():
                assert position[dep.key] < array.index and position[dep.key] in array.after


def test_arrays_split_at_the_maximum_size_and_reuse_live_jobs() -> None:
    raw = demo_raw()
    raw["seeds"] = list(range(72))
    plan = build_plan(validate(raw))
    assert len(plan.nodes) > 1000
    arrays = slurm.plan_arrays(plan.nodes, {}, size=100, grouping="wave")
    assert max(len(a.nodes) for a in arrays) == 100 and len(arrays) > 7
    per_stage = Counter(a.stage for a in arrays)
    assert all(n <= 10 for n in per_stage.values()), per_stage  # a few arrays per stage, not one per node
    # a relaunch while the model node is still queued: its job becomes a dependency
    model = plan.nodes[0]
    rest = slurm.plan_arrays(plan.nodes[1:], {model.key: "4242_0"}, size=1000)
    assert rest[0].stage == "prepare" and rest[0].after_jobs == ["4242_0"] and not rest[0].after


def test_stage_resources_profile_overrides_and_spec() -> None:
    profile = SlurmProfile(partition="gpu", gpus_per_node=4, tasks_per_node=4, nodes=2,
                      stages={"evaluate": {"time_min": 30}})
    train = slurm.stage_resources(profile, "train-target")
    assert (train.nodes, train.tasks_per_node, train.gpus_per_node) == (2, 4, 4)
    evaluate = slurm.stage_resources(profile, "evaluate")
    assert (evaluate.nodes, evaluate.tasks_per_node, evaluate.gpus_per_node, evaluate.time_min) == (1, 1, 1, 30)
    tune = slurm.stage_resources(profile, "tune")  # one Ray node per host, using all its GPUs
    assert (tune.nodes, tune.tasks_per_node, tune.gpus_per_node) == (2, 1, 4)
    spec = validate({**demo_raw(), "resources": {"train-target": {"time_min": 999, "cpus": 3}}})
    chosen = slurm.stage_resources(profile, "train-target", spec.resources["train-target"])
    assert (chosen.time_min, chosen.cpus_per_task, chosen.mem_gb) == (999, 3, None)


def test_merge_status_from_store_and_slurm() -> None:
    state = {"submissions": [{"job_id": "7_1", "executor": "slurm"}], "status": "queued"}
    live = {"7_1": slurm.JobState("7_1", "PENDING", "Dependency")}
    assert slurm.merge_status("queued", state, live, None) == ("queued", "Dependency")
    never = {"7_1": slurm.JobState("7_1", "PENDING", "DependencyNeverSatisfied")}
    assert slurm.merge_status("queued", state, never, None)[0] == "cancelled"
    assert slurm.merge_status("done", state, {}, None) == ("done", None)
    status, reason = slurm.merge_status("queued", state, {}, None)  # vanished, no accounting
    assert status == "failed" and "left the queue" in reason
    finished = {"7_1": slurm.JobState("7_1", "OUT_OF_MEMORY", "exit code 0:125")}
    assert slurm.merge_status("interrupted", state, {}, finished) == ("failed", "job 7_1 OUT_OF_MEMORY (exit code 0:125)")


def test_profile_errors_list_valid_keys(tmp_path: Path) -> None:
    from xstilts.core.errors import UserError

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"executor": "slurm", "partion": "gpu", "stages": {"evalute": {}, "prepare": {"gpu": 1}}}))
    with pytest.raises(UserError) as caught:
        load_profile(str(bad))
    message = str(caught.value)
    assert "unknown profile key 'partion' (did you mean 'partition'?)" in message
    assert "stages.evalute" in message and "stages.prepare" in message
    shipped = load_profile("slurm")
    assert shipped.resources("prepare").gpus_per_node == 1  # image features: CLIP ViT-L
    evaluate = shipped.resources("evaluate")  # type: ignore[union-attr]
    assert (evaluate.gpus_per_node, evaluate.mem_gb) == (1, 32)  # not 200 GB for one GPU


def test_dry_run_prints_sbatch_scripts_and_submits_nothing(tmp_path: Path) -> None:
    profile = tmp_path / "cluster.yaml"
    profile.write_text(yaml.safe_dump({"executor": "slurm", "partition": "low", "max_array_size": 100,
                                       "array_grouping": "wave",
                                       "log_dir": str(tmp_path / "logs"), "setup": ["echo ready"]}))
    raw = demo_raw()
    raw["seeds"] = list(range(72))
    raw["storage"] = str(tmp_path / "store")
    spec = tmp_path / "big.yaml"
    spec.write_text(yaml.safe_dump(raw))
    result = run_cli("launch", str(spec), "--profile", str(profile), "--dry-run", env=cli_env({"PATH": "/usr/bin:/bin"}))
    assert result.returncode == 0, result.stderr
    assert "[dry run]" in result.stdout and "at most 100 tasks per array (profile)" in result.stdout
    scripts = result.stdout.count("#!/bin/bash")
    assert 7 < scripts <= 30  # a few arrays per stage, not 2,000 jobs
    assert "#SBATCH --array=0-99%100" in result.stdout
    assert "#SBATCH --dependency='afterok:<array 0>'" in result.stdout
    assert "#SBATCH --partition=low" in result.stdout and "echo ready" in result.stdout
    assert result.stdout.count("#SBATCH --requeue") == scripts  # SLURM requeues what a node failure kills
    assert not (tmp_path / "store").exists() and not (tmp_path / "logs").exists()
    assert json.dumps  # plain module use


# ------------------------------------------------------------------ finer dependencies


def _paper_plan():  # type: ignore[no-untyped-def]
    from xstilts.core.spec import load_spec

    return build_plan(load_spec(str(Path(__file__).resolve().parents[3] / "experiments" / "xtreme-r-multimodal.yaml")))


def _cancelled_by(arrays: list[slurm.Array], failed: str) -> set[str]:
    """What kill_invalid_depend cancels when the task of `failed` fails: every array whose
    afterok names that task (or its whole array), and so on downstream."""
    where = {node.key: (a.index, t) for a in arrays for t, node in enumerate(a.nodes)}
    dead = {where[failed]}
    for array in arrays:
        for i in array.after:
            tasks = array.after_tasks[i]
            whole = len(tasks) == len(arrays[i].nodes) or len(arrays[i].nodes) == 1
            if any((i, t) in dead for t in (range(len(arrays[i].nodes)) if whole else tasks)):
                dead.update((array.index, t) for t in range(len(array.nodes)))
                break
    return {array.nodes[t].key for array in arrays for t in range(len(array.nodes)) if (array.index, t) in dead} - {failed}


def test_lineage_arrays_wait_for_their_own_intermediate_and_fail_alone() -> None:
    plan = _paper_plan()
    arrays = slurm.plan_arrays(plan.nodes, {}, size=1000)  # the default: lineage
    assert sum(len(a.nodes) for a in arrays) == len(plan.nodes) == 1299
    assert len(arrays) < 200, len(arrays)  # against 1,299 jobs one per node
    where = {node.key: (a.index, t) for a in arrays for t, node in enumerate(a.nodes)}
    for array in arrays:
        for node in array.nodes:  # every input is named: an earlier array's task, or the whole array
            for dep in node.inputs.values():
                index, task = where[dep.key]
                assert index < array.index and task in array.after_tasks[index]
        if array.stage == "train-target":  # targets wait for at most one intermediate training
            inter = {dep.key for node in array.nodes for dep in node.inputs.values() if dep.stage == "train-intermediate"}
            assert len(inter) <= 1, (array.index, len(inter))
    for failed in (n for n in plan.nodes if n.stage == "train-intermediate"):
        downstream = {failed.key}
        for node in plan.nodes:
            if any(d.key in downstream for d in node.inputs.values()):
                downstream.add(node.key)
        assert _cancelled_by(arrays, failed.key) == downstream - {failed.key}
    # the arrays of one stage wave: one failed intermediate cancels nearly the whole grid
    waves = slurm.plan_arrays(plan.nodes, {}, size=1000, grouping="wave")
    inter = next(n.key for n in plan.nodes if n.stage == "train-intermediate")
    assert len(_cancelled_by(waves, inter)) > 1000


def test_dependency_names_single_tasks_or_whole_arrays() -> None:
    plan = build_plan(validate(demo_raw()))
    arrays = slurm.plan_arrays(plan.nodes, {}, size=1000)
    for array, job in zip(arrays, range(100, 200)):
        array.job_id = str(job)
    targets = [a for a in arrays if a.stage == "train-target" and a.wave == 3]
    assert len(targets) == 8  # one per intermediate training node: 4 rows x 2 seeds
    for array in targets:
        dependency = slurm.dependency_string(array, arrays)
        assert dependency is not None and dependency.startswith("afterok:")
        inter = [a for a in arrays if a.stage == "train-intermediate" and a.index in array.after]
        named = [part for part in dependency[len("afterok:"):].split(":") if part.split("_")[0] == inter[0].job_id]
        assert len(named) == 1 and "_" in named[0]  # one task of the intermediate array, not all of it
    evaluate = [a for a in arrays if a.stage == "evaluate"]
    assert all(len(slurm.dependency_string(a, arrays).split(":")) <= 4 for a in evaluate)  # type: ignore[union-attr]


def test_cap_takes_inputs_first() -> None:
    plan = build_plan(validate(demo_raw()))
    for slots in (0, 1, 5, 17, 40, 56, 99):
        chosen = slurm.cap_selection(plan.nodes, slots)
        assert len(chosen) == min(slots, len(plan.nodes))
        keys = {node.key for node in chosen}
        assert all(dep.key in keys for node in chosen for dep in node.inputs.values())  # nothing waits behind the cap
    assert slurm.cap_selection(plan.nodes, None) == list(plan.nodes)


def test_scheduling_profile_keys_are_validated(tmp_path: Path) -> None:
    from xstilts.core.errors import UserError

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"executor": "slurm", "array_grouping": "per-row", "max_jobs": 0, "max_retries": -1}))
    with pytest.raises(UserError) as caught:
        load_profile(str(bad))
    message = str(caught.value)
    assert "array_grouping" in message and "'lineage'" in message and "'wave'" in message
    assert "max_jobs" in message and "max_retries" in message
    shipped = load_profile("slurm")
    assert isinstance(shipped, SlurmProfile) and shipped.array_grouping == "lineage"
    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    result = run_cli("launch", str(spec), "--profile", str(bad), "--dry-run", env=cli_env({"PATH": "/usr/bin:/bin"}))
    assert result.returncode == 2 and "array_grouping" in result.stderr, result.stderr


def test_lost_attempts_count_as_retries() -> None:
    state = {"attempts": [{"id": "g1", "outcome": "lost"}, {"id": "g2", "outcome": "preempted"}, {"id": "g3"}]}
    assert slurm.infrastructure_retries(state) == 1
    assert slurm.infrastructure_retries({}) == 0


def test_job_gives_up_after_max_retries_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    from xstilts.core.store import Store
    from xstilts.jobs.submitit_job import NodeJob

    store = Store("memory://retries-test")
    node_dir = store.node_path("train-target", "abc")
    store.write_json(f"{node_dir}/state.json", {"status": "queued", "attempts": [], "requeues": 1})
    job = NodeJob(store.url, "train-target/abc", max_requeues=3, max_retries=2)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")  # 1 asked for (a checkpointed requeue), 2 lost
    assert job._lost_restarts() == 2
    monkeypatch.setenv("SLURM_RESTART_COUNT", "4")
    assert job._lost_restarts() == 3
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    assert job._lost_restarts() == 0
    job._give_up("its job was lost 3 times")
    assert store.read_json(f"{node_dir}/state.json")["status"] == "failed"


def test_dry_run_under_a_cap_submits_inputs_first(tmp_path: Path) -> None:
    profile = tmp_path / "cluster.yaml"
    profile.write_text(yaml.safe_dump({"executor": "slurm", "partition": "low", "max_jobs": 5,
                                       "log_dir": str(tmp_path / "logs")}))
    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    result = run_cli("launch", str(spec), "--profile", str(profile), "--dry-run", env=cli_env({"PATH": "/usr/bin:/bin"}))
    assert result.returncode == 0, result.stderr
    assert "56 nodes: 5 to submit in" in result.stdout and "51 waiting for free slots (max_jobs 5)" in result.stdout
    assert "train-target" not in result.stdout.split("[dry run]")[1].split("#!/bin/bash")[0]
    assert "--array=0-1" in result.stdout  # the model and image preparations: nothing waits behind the cap
