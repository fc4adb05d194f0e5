"""End to end on the `local` profile: real node processes, real training, real leases."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from pathlib import Path

from xstilts.core.process import ProcessIdentity

from tests.support.grid import (
    completed_attempts, node_states, run_cli, start_cli, status_json, wait_until, write_small_grid,
)

N_NODES = 8  # model, data x2, intermediate x1, target x2, evaluate x2


def _done_count(store: Path) -> int:
    return len(list(store.glob("nodes/*/*/DONE")))


def test_launch_runs_the_grid_prints_the_table_and_relaunch_skips_everything(tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path)
    first = run_cli("launch", str(spec), "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"submitted {N_NODES} nodes" in first.stdout
    assert "zero-shot cross-lingual transfer" in first.stdout  # the table's title
    status = status_json(spec)
    assert status["counts"] == {"done": N_NODES}
    assert all(node["attempts"] == 1 for node in status["nodes"])
    evaluations = [node for node in status["nodes"] if node["stage"] == "evaluate"]
    assert all(node["headline"].startswith("accuracy") for node in evaluations)

    states_before = node_states(tmp_path / "store")
    second = run_cli("launch", str(spec), "--wait")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "submitted 0 nodes" in second.stdout
    assert node_states(tmp_path / "store") == states_before  # nothing ran, nothing was rewritten

    table = json.loads(run_cli("analysis", "table", str(spec), "--json").stdout)
    cells = {(c["intermediate"], c["target"]): c for c in table["cells"]}
    assert cells[("none", "syn-sent")]["n"] == 1 and cells[("none", "syn-sent")]["delta"] is None
    assert cells[("syn-rate", "syn-sent")]["delta"] is not None

    watched = run_cli("status", str(spec), "--watch", "--interval", "2", timeout=60)
    assert watched.returncode == 0 and f"{N_NODES} nodes: {N_NODES} done" in watched.stdout  # ends when all are done

    key = next(node["key"] for node in status["nodes"] if node["stage"] == "train-target")
    logs = run_cli("logs", str(spec), key[:10])
    assert logs.returncode == 0 and f"{key} done" in logs.stdout


def test_killed_launcher_relaunch_finishes_without_running_a_node_twice(tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path)
    store = tmp_path / "store"
    launcher = start_cli("launch", str(spec), "--wait")
    wait_until(lambda: _done_count(store) >= 3)
    launcher.send_signal(signal.SIGKILL)  # its node processes live on in their own sessions
    launcher.wait()
    relaunch = run_cli("launch", str(spec), "--wait")
    assert relaunch.returncode == 0, relaunch.stdout + relaunch.stderr
    assert status_json(spec)["counts"] == {"done": N_NODES}
    states = node_states(store)
    assert len(states) == N_NODES
    assert {key: completed_attempts(state) for key, state in states.items()} == {key: 1 for key in states}


def test_stopped_launcher_stops_its_nodes_and_relaunch_completes(tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path)
    store = tmp_path / "store"
    launcher = start_cli("launch", str(spec), "--wait")
    wait_until(lambda: _done_count(store) >= 1 and any(
        node["status"] == "running" for node in status_json(spec)["nodes"]))
    launcher.send_signal(signal.SIGTERM)
    output, _ = launcher.communicate(timeout=60)
    assert launcher.returncode == 1, output
    assert "interrupted" in output
    statuses = {node["status"] for node in status_json(spec)["nodes"]}
    assert "running" not in statuses and "interrupted" in statuses
    relaunch = run_cli("launch", str(spec), "--wait")
    assert relaunch.returncode == 0, relaunch.stdout
    states = node_states(store)
    assert all(completed_attempts(state) == 1 for state in states.values())
    assert any(a.get("outcome") == "interrupted" for s in states.values() for a in s["attempts"])


def test_two_launchers_at_once_run_each_node_once(tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path)
    first, second = start_cli("launch", str(spec), "--wait"), start_cli("launch", str(spec), "--wait")
    out_first, _ = first.communicate(timeout=600)
    out_second, _ = second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, out_first + out_second
    states = node_states(tmp_path / "store")
    assert len(states) == N_NODES
    assert all(completed_attempts(state) == 1 for state in states.values())


def test_detached_launch_then_cancel_stops_everything(tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path)
    started = time.time()
    launched = run_cli("launch", str(spec))
    assert launched.returncode == 0, launched.stderr
    assert "local scheduler" in launched.stdout
    assert time.time() - started < 30  # returned without waiting for the grid
    wait_until(lambda: any(node["status"] == "running" for node in status_json(spec)["nodes"]))
    cancelled = run_cli("cancel", str(spec))
    assert cancelled.returncode == 0, cancelled.stderr
    wait_until(lambda: not any(node["status"] == "running" for node in status_json(spec)["nodes"]), timeout=60)
    done_after_cancel = _done_count(tmp_path / "store")
    time.sleep(3)
    assert _done_count(tmp_path / "store") == done_after_cancel  # the scheduler is gone too
    assert done_after_cancel < N_NODES


def test_cancel_stops_every_detached_scheduler_of_the_experiment(tmp_path: Path) -> None:
    """Issue 16, item 5: a second detached launch overwrote the first scheduler's marker,
    so `cancel` stopped one scheduler and the survivor restarted the node."""
    spec = write_small_grid(tmp_path)
    pids = []
    for _ in range(2):
        launched = run_cli("launch", str(spec))
        assert launched.returncode == 0, launched.stderr
        pids.append(int(re.search(r"local scheduler \(pid (\d+)\)", launched.stdout).group(1)))  # type: ignore[union-attr]
    cancelled = run_cli("cancel", str(spec))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "stopped 2 local schedulers" in cancelled.stdout, cancelled.stdout
    wait_until(lambda: not any(ProcessIdentity(socket.gethostname(), pid, None).alive() for pid in pids), timeout=60)
    wait_until(lambda: not any(node["status"] == "running" for node in status_json(spec)["nodes"]), timeout=60)
    done_after_cancel = _done_count(tmp_path / "store")
    time.sleep(3)
    assert _done_count(tmp_path / "store") == done_after_cancel  # no scheduler survived to go on


def test_training_nodes_run_as_two_fsdp_processes_with_procs_per_node(tmp_path: Path) -> None:
    profile = tmp_path / "two-procs.yaml"
    profile.write_text("executor: local\nmax_parallel: 1\nprocs_per_node: 2\n")
    spec = write_small_grid(tmp_path)
    launched = run_cli("launch", str(spec), "--profile", str(profile), "--wait",
                       "-o", "checkpointing.every_steps=4")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert status_json(spec)["counts"] == {"done": N_NODES}
    train = next(tmp_path.glob("store/nodes/train-intermediate/*"))
    log = next((train / "logs").glob("*.log")).read_text()
    assert log.count(f"running train-intermediate/{train.name}") == 2, log  # one line per rank
    checkpoints = [p for p in (train / "checkpoints").iterdir() if (p / ".metadata").exists()]
    assert checkpoints  # periodic DCP checkpoints written by both ranks
    assert len(list(checkpoints[0].glob("*.distcp"))) == 2  # one shard file per rank
