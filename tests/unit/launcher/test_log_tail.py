"""A failed node's log tail, as `status` shows it: the end of the newest log only, found
through the snapshot's listing (no listing of the logs folder per node), and outside the
store the tail of the executor's log file."""

from __future__ import annotations

from pathlib import Path

import pytest

from xstilts.launcher.commands.logs import TAIL_BYTES, log_tail
from xstilts.launcher.experiment import open_experiment
from tests.support.grid import write_small_grid


def test_the_tail_comes_from_the_listing_and_the_end_of_the_newest_log(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = open_experiment(str(write_small_grid(tmp_path)))
    node = experiment.plan.nodes[-1]
    store = experiment.store
    logs = store.node_path(node.stage, node.key, "logs")
    store.write_text(f"{logs}/1700000000-1.log", "first attempt\nOLD-TAIL\n")
    long = "".join(f"step {i}\n" for i in range(100_000))  # ~0.8 MB, far above TAIL_BYTES
    store.write_text(f"{logs}/1700000500-2.log", long + "Traceback\nCUDA out of memory\n")
    experiment.snapshot()
    assert experiment.listed_files(node) is not None

    def no_listing(path: str) -> list[str]:
        raise AssertionError(f"listed {path}")

    read: list[int] = []
    real_tail = store.read_tail
    monkeypatch.setattr(store, "list", no_listing)
    monkeypatch.setattr(store, "read_tail", lambda path, nbytes: read.append(nbytes) or real_tail(path, nbytes))
    assert log_tail(experiment, node, lines=3) == "step 99999\nTraceback\nCUDA out of memory"
    assert read == [TAIL_BYTES]


def test_without_a_log_in_the_store_the_executor_log_file_is_tailed(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = open_experiment(str(write_small_grid(tmp_path)))
    node = experiment.plan.nodes[0]
    outside = tmp_path / "slurm-4242.out"
    outside.write_text("".join(f"line {i}\n" for i in range(50_000)) + "srun: error: task 0 killed\n")
    experiment.snapshot()

    class Executor:
        def log_sources(self, experiment: object, node: object, state: object) -> list[Path]:
            return [tmp_path / "never-written.out", outside]

    monkeypatch.setattr(type(experiment), "executor", property(lambda self: Executor()))
    assert log_tail(experiment, node, lines=2, state={}) == "line 49999\nsrun: error: task 0 killed"
