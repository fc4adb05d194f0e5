"""Node keys, task names, paths and log lines print as they are (issue 18).

rich reads `[e4578a5c]` as a style tag and drops it, so every key that starts with a-f
(about 6 in 16) vanished from `launch --dry-run`, `launch --wait`, `logs` headers and
`cancel` lines; keys are what `xstilts logs` takes. The consoles of every command read
no markup now; these tests print keys that start with a letter through each path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.specs import demo_raw
from xstilts.launcher.commands.common import err, out, styled
from xstilts.launcher.experiment import open_experiment

XSTILTS = [sys.executable, "-c", "from xstilts.cli import main; main()"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XSTILTS, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    spec = tmp_path / "demo.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    return spec


def test_launch_dry_run_names_every_node_by_its_whole_key(demo: Path) -> None:
    plan = open_experiment(str(demo)).plan
    assert any(node.key[0] in "abcdef" for node in plan.nodes)  # the keys rich used to eat
    result = _cli("launch", str(demo), "--profile", "local", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[dry run] ")
    assert lines[1:] == [f"  would run {node.label} [{node.key}]" for node in plan.nodes]


def test_logs_header_names_a_key_that_starts_with_a_letter(demo: Path) -> None:
    experiment = open_experiment(str(demo))
    node = next(node for node in experiment.plan.nodes if node.key[0] in "abcdef")
    experiment.store.write_text(experiment.store.node_path(node.stage, node.key, "logs", "1.log"),
                                "[bold]not a style[/bold] [e4578a5c]\n")
    result = _cli("logs", str(demo), node.key[:8])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"==> {node.label} [{node.key}] 1.log\n[bold]not a style[/bold] [e4578a5c]\n"


@pytest.mark.parametrize("console", [out, err], ids=["out", "err"])
def test_the_consoles_print_brackets_as_they_are(console: object) -> None:
    from rich.console import Console

    assert isinstance(console, Console)
    text = "cancelled train-target mnli->xnli seed=1 [e4578a5c] in /scratch/[bold]/x [/] \\[y]"
    with console.capture() as captured:
        console.print(text)
        console.print(styled(("failed", "red"), f" {text}"))
    assert captured.get() == f"{text}\nfailed {text}\n"
