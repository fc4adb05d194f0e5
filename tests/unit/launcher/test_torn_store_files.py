"""One torn or garbage file never breaks a command (issue 16, item 3: an empty lease,
garbage in a heartbeat, a truncated state.json or result.json made `status`, `launch`,
`launch --dry-run` and `analysis table` fail with a traceback; item 4: a torn node.json
was never repaired; item 2: a deleted DONE still counted as done).

Every kind of file the store holds is damaged at once, each in its own node; every
command then runs, names each damaged file in one warning line, treats it as absent or
stale, and a launch repairs what it writes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.support.results import finish_cell, open_raw, spec_raw
from xstilts.core.process import ProcessIdentity
from xstilts.core.store import DONE
from xstilts.launcher.local_runner import SCHEDULERS_DIR

XSTILTS = [sys.executable, "-c", "from xstilts.cli import main; main()"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*XSTILTS, *args], capture_output=True, text=True, timeout=120,
                            env={"COLUMNS": "250", "PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                                 "HF_HUB_OFFLINE": "1", "AWS_EC2_METADATA_DISABLED": "true"})
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_every_kind_of_torn_file_is_named_skipped_and_repaired(tmp_path: Path) -> None:
    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store")))
    store, plan = experiment.store, experiment.plan
    evaluations = plan.evaluations()
    for node in evaluations:
        finish_cell(store, node)
    folder = experiment.node_dir
    torn_result, torn_state, no_done = evaluations[0], evaluations[1], evaluations[2]
    stale_lease, bad_beat = evaluations[3], evaluations[4]
    torn_node = plan.nodes[0]
    damaged = {
        "result": f"{folder(torn_result)}/result.json",
        "state": f"{folder(torn_state)}/state.json",
        "node": f"{folder(torn_node)}/node.json",
        "lease": f"{folder(stale_lease)}/lease/000001.json",
        "heartbeat": f"{folder(bad_beat)}/lease/000001.heartbeat",
        "marker": store.experiment_path(plan.experiment, SCHEDULERS_DIR, "vm-1.json"),
    }
    for what in ("result", "state", "node"):
        text = Path(damaged[what]).read_text()
        Path(damaged[what]).write_text(text[: len(text) // 2])  # torn in the middle
    Path(f"{folder(no_done)}/{DONE}").unlink()
    for node in (stale_lease, bad_beat):  # not finished: a lease is all they have
        Path(f"{folder(node)}/{DONE}").unlink()
    Path(damaged["lease"]).parent.mkdir(parents=True)
    Path(damaged["lease"]).write_text("")  # O_EXCL then a crash, as older versions could leave it
    owner = {**ProcessIdentity.current().as_record(), "created": time.time() - 3600}
    Path(damaged["heartbeat"]).parent.mkdir(parents=True)
    Path(damaged["heartbeat"]).with_suffix(".json").write_text(json.dumps(owner))
    Path(damaged["heartbeat"]).write_bytes(b"\xff\xfe garbage")
    Path(damaged["marker"]).parent.mkdir(parents=True)
    Path(damaged["marker"]).write_text("{\"pid\": 12")
    spec = str(next(tmp_path.glob("spec-*.yaml")))

    status = json.loads(_cli("status", spec, "--json").stdout)
    by_key = {row["key"]: row["status"] for row in status["nodes"]}
    assert by_key[torn_result.key] == "interrupted" and by_key[no_done.key] == "interrupted"
    assert by_key[torn_state.key] == "done"  # DONE and its result: the torn record does not undo that
    assert by_key[bad_beat.key] != "running"  # a heartbeat that is not a time is stale
    warnings = _cli("status", spec).stderr
    for what in ("result", "state", "lease"):
        assert sum(damaged[what] in line for line in warnings.splitlines()) == 1, (what, warnings)
    assert damaged["heartbeat"] in warnings

    dry = _cli("launch", spec, "--dry-run").stdout
    for node in (torn_result, no_done, stale_lease, bad_beat):
        assert f"[{node.key}]" in dry, dry  # run again: none of them is done
    assert f"[{torn_state.key}]" not in dry

    table = _cli("analysis", "table", spec, "--json")
    cells = json.loads(table.stdout)["cells"]
    noted = {(c["intermediate"], c["target"]): c["status"] or "" for c in cells}
    for node in (torn_result, no_done):  # a cell short of a seed says why, not just "-"
        assert noted[(node.intermediate, node.task)].startswith("interrupted"), noted

    cancelled = _cli("cancel", spec)
    assert not Path(damaged["marker"]).exists() and "Traceback" not in cancelled.stderr

    experiment.materialize()  # what every launch does first
    assert json.loads(Path(damaged["node"]).read_text()) == json.loads(json.dumps(torn_node.record(), default=str))
