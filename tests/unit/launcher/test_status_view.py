"""`xstilts status` at paper scale (issue 18): summary first, filters, and a `--watch`
that fits the terminal, stops when nothing is live and writes plain lines to a file.

The store is the paper grid (`experiments/xtreme-r-multimodal.yaml`, 1,299 nodes) with
its storage in tmp and its node states written by the real writers (`core.state`,
`core.lease`): prepare and tune done, and in the training and evaluation stages some
done, some failed with a reason and a log, some running (a live lease held by this
test's process) and the rest pending. Nothing is trained.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.paths import REPO
from xstilts.core.lease import Lease
from xstilts.core.plan import Node
from xstilts.core.state import finish_attempt, start_attempt, update_state
from xstilts.core.store import DONE
from xstilts.launcher.experiment import Experiment, open_experiment

XSTILTS = [sys.executable, "-c", "from xstilts.cli import main; main()"]
PAPER = REPO / "experiments" / "xtreme-r-multimodal.yaml"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


@dataclass
class PaperStore:
    spec: Path
    experiment: Experiment
    failed: list[Node]
    running: list[Node]
    leases: list[Lease]


def _attempt(store_dir: str, experiment: Experiment, node: Node, outcome: str | None, error: str | None = None) -> None:
    attempt = {"id": 1, "started": time.time() - 600, "host": "gpu-node-7", "job_id": f"4242_{node.key[:4]}"}

    def change(state: dict) -> None:  # type: ignore[type-arg]
        start_attempt(state, attempt)
        if outcome is not None:
            finish_attempt(state, attempt, outcome, error)

    update_state(experiment.store, store_dir, change)


def build_paper_store(folder: Path, running: bool) -> PaperStore:
    raw = yaml.safe_load(PAPER.read_text())
    raw["storage"] = str(folder / "store")
    raw["cluster"] = "local"
    spec = folder / "paper.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    experiment = open_experiment(str(spec))
    assert len(experiment.plan.nodes) == 1299
    store = experiment.store
    by_stage: dict[str, list[Node]] = {}
    for node in experiment.plan.nodes:
        by_stage.setdefault(node.stage, []).append(node)
    failed: list[Node] = []
    live: list[Node] = []
    leases: list[Lease] = []
    for stage, nodes in by_stage.items():
        done = nodes if stage in ("prepare", "tune") else nodes[: len(nodes) * 2 // 3]
        rest = [] if stage in ("prepare", "tune") else nodes[len(done):]
        for node in done:
            folder_ = experiment.node_dir(node)
            _attempt(folder_, experiment, node, "done")
            store.write_json(f"{folder_}/result.json", {"node": {"key": node.key, "seconds": 600.0}})
            store.write_text(f"{folder_}/{DONE}", f"{time.time()}\n")
        for node in rest[:3]:
            folder_ = experiment.node_dir(node)
            _attempt(folder_, experiment, node, "failed", f"CUDA out of memory (rank 0, {node.key[:4]})")
            store.write_text(store.node_path(node.stage, node.key, "logs", "4242.log"),
                             "".join(f"step {i} loss 0.{i}\n" for i in range(20)) + f"OOM-TAIL {node.key[:8]}\n")
            failed.append(node)
        for node in rest[3:6]:
            _attempt(experiment.node_dir(node), experiment, node, None)
            if running:
                lease = Lease(store, experiment.node_dir(node), {"job_id": "4242"})
                assert lease.acquire()
                leases.append(lease)
            live.append(node)
    return PaperStore(spec, experiment, failed, live, leases)


@pytest.fixture(scope="module")
def paper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaperStore]:
    built = build_paper_store(tmp_path_factory.mktemp("paper"), running=True)
    yield built
    for lease in built.leases:
        lease.release()


def _env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}
    return {**env, "XSTILTS_LEASE_TTL": "120", **extra}


def _first_frame(spec: Path, rows: int, columns: int, *args: str) -> str:
    """What `status --watch` first draws on a terminal of `rows` x `columns` (a pty of
    that size): the screen's text, escape codes removed. The watch goes on (nodes are
    running), so it is stopped once its frame is out."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen([*XSTILTS, "status", str(spec), "--watch", *args], stdin=follower, stdout=follower,
                               stderr=follower, env=_env(TERM="xterm-256color"), start_new_session=True)
    os.close(follower)
    output = b""
    try:
        give_up = time.monotonic() + 120  # a guard against a hang, not a measurement
        while b"narrow with" not in output and time.monotonic() < give_up:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    output += os.read(leader, 65536)
                except OSError:
                    break
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        os.close(leader)
    return ANSI.sub("", output.decode(errors="replace"))


def test_watch_in_a_40x120_terminal_shows_summary_failures_and_running(paper: PaperStore) -> None:
    frame = _first_frame(paper.spec, 40, 120)
    lines = frame.split("\n")
    end = next(i for i, text in enumerate(lines) if "narrow with" in text)
    screen = lines[: end + 1]
    assert len(screen) <= 39, frame  # the last line of the terminal stays free
    assert all(len(text) <= 120 for text in screen), frame
    text = "\n".join(screen)
    assert "1299 nodes:" in text
    for stage in ("prepare", "tune", "train-intermediate", "train-target", "evaluate"):
        assert re.search(rf"^│ {stage} +│", text, re.M), (stage, text)
    assert "CUDA out of memory" in text
    shown_failed = [node for node in paper.failed if f"[{node.key[:8]}]" in text]
    assert shown_failed, text
    assert f"OOM-TAIL {shown_failed[0].key[:8]}" in text  # the end of its log
    assert any(f"[{node.key[:8]}]" in text for node in paper.running), text
    assert re.search(r"… \d+ more rows; narrow with --stage, --state or --task", text), text
    assert f"more failed or cancelled: xstilts status {paper.spec} --state failed" in text


def test_status_shows_the_summary_first_then_the_filtered_table(paper: PaperStore) -> None:
    result = subprocess.run([*XSTILTS, "status", str(paper.spec), "--stage", "train-target", "--state", "failed"],
                            capture_output=True, text=True, env=_env(COLUMNS="200"), timeout=300)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    summary, table = text.index("1299 nodes:"), text.index("3 of 1299 nodes (--stage train-target, --state failed)")
    assert summary < text.index("failures") < text.index("running (") < table
    rows = [line for line in text[table:].splitlines() if re.match(r"^│ [0-9a-f]{8} ", line)]
    target_failed = [node for node in paper.failed if node.stage == "train-target"]
    assert sorted(row[2:10] for row in rows) == sorted(node.key[:8] for node in target_failed)
    for node in paper.failed:  # every failure is in the summary, with its reason and log tail
        assert f"{node.label} [{node.key[:8]}]: CUDA out of memory (rank 0, {node.key[:4]})" in text
        assert f"OOM-TAIL {node.key[:8]}" in text


def test_status_filters_by_task(paper: PaperStore) -> None:
    result = subprocess.run([*XSTILTS, "status", str(paper.spec), "--task", "tatoeba", "--json"],
                            capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    import json

    nodes = json.loads(result.stdout)["nodes"]
    expected = [node.key for node in paper.experiment.plan.nodes if "tatoeba" in (node.task, node.intermediate)]
    assert [node["key"] for node in nodes] == expected and expected


def test_watch_off_a_terminal_prints_plain_lines_and_stops_when_nothing_is_live(tmp_path: Path) -> None:
    """Nothing holds a lease: the 'running' nodes read as interrupted, the rest are
    pending, done or failed; nothing is live, so the watch prints and ends at once."""
    built = build_paper_store(tmp_path, running=False)
    result = subprocess.run([*XSTILTS, "status", str(built.spec), "--watch"], capture_output=True, text=True,
                            env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert re.match(r"^\d\d:\d\d:\d\d 1299 nodes: \d+ done, 9 failed, 9 interrupted, \d+ pending$", lines[0]), lines
    for node in built.failed:
        assert f"failed {node.label} [{node.key[:8]}]: CUDA out of memory (rank 0, {node.key[:4]})" in lines
