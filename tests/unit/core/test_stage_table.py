"""One table of stage facts: the local and SLURM executors agree on processes per node."""

from __future__ import annotations

from pathlib import Path

from xstilts.core.plan import build_plan
from xstilts.core.spec import load_spec
from xstilts.core.stages import STAGE_MODULES, STAGES, facts
from xstilts.core.store import Store
from xstilts.launcher.local_runner import LocalRunner
from xstilts.launcher.profiles import LocalProfile, SlurmProfile
from xstilts.launcher.slurm import stage_resources


def test_a_tune_node_is_one_process_locally_as_on_slurm(write_spec, tmp_path: Path) -> None:
    spec = load_spec(str(write_spec(**{"target.search": {"space": {"learning_rate": {"grid": [1e-3, 2e-3]}}}})), [])
    plan = build_plan(spec)
    runner = LocalRunner(Store(str(tmp_path / "store")), plan, LocalProfile(procs_per_node=2))
    slurm = SlurmProfile(name="c", tasks_per_node=4, nodes=2)
    by_stage = {node.stage: node for node in plan.nodes}
    assert set(by_stage) == set(STAGES)
    for stage, node in by_stage.items():
        local, tasks = runner._procs(node), stage_resources(slurm, stage).tasks_per_node
        expected = {"ranks": (2, 4), "one_per_host": (1, 1), "single": (1, 1)}[facts(stage).processes]
        assert (local, tasks) == expected, stage


def test_every_stage_and_prepare_kind_has_a_module() -> None:
    assert {name.split(":")[0] for name in STAGE_MODULES} == set(STAGES)
