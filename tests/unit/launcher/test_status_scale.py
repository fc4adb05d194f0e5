"""`status` at 100k-node scale (issue 20): the table shows what a terminal (or, piped,
`TABLE_ROWS_PIPED` rows) holds and counts the rest, `--all` lists every node, and
`--json` stays complete, with the same content as before it left `dataclasses.asdict`
and the indented (pure-Python) encoder behind."""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, fields
from pathlib import Path

import yaml
from rich.console import Console

from tests.support.grid import run_cli
from tests.support.specs import demo_raw
from xstilts.launcher.commands.status import NodeRow, status_json, status_rows
from xstilts.launcher.commands.status_view import TABLE_ROWS_PIPED, Filters, full_view
from xstilts.launcher.experiment import open_experiment

ROW = re.compile(r"^│ ([0-9a-f]{8}) ")


def _big_demo(tmp_path: Path) -> Path:
    """The demo spec with ten seeds: more nodes than a piped table shows; empty store."""
    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    raw["seeds"] = list(range(1, 11))
    spec = tmp_path / "big.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    return spec


def _table_keys(text: str) -> list[str]:
    return [match.group(1) for line in text.splitlines() if (match := ROW.match(line))]


def test_piped_status_shows_a_screenful_of_rows_and_counts_the_rest_and_all_shows_every_node(tmp_path: Path) -> None:
    spec = _big_demo(tmp_path)
    plan = open_experiment(str(spec), None, reads_store=False, records="none").plan
    total = len(plan.nodes)
    assert total > TABLE_ROWS_PIPED

    short = run_cli("status", str(spec))
    assert short.returncode == 0, short.stderr
    assert f"{total} nodes: {total} pending" in short.stdout  # the summary counts every node
    assert _table_keys(short.stdout) == [node.key[:8] for node in plan.nodes[:TABLE_ROWS_PIPED]]
    assert f"… {total - TABLE_ROWS_PIPED} more rows; --all lists every node, --json writes them all" in short.stdout

    everything = run_cli("status", str(spec), "--all")
    assert everything.returncode == 0, everything.stderr
    assert _table_keys(everything.stdout) == [node.key[:8] for node in plan.nodes]
    assert "more rows" not in everything.stdout


def test_status_json_is_complete_and_holds_what_asdict_gave(tmp_path: Path) -> None:
    spec = _big_demo(tmp_path)
    result = run_cli("status", str(spec), "--json")
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    rows = status_rows(open_experiment(str(spec), None, profile="local"))
    assert written == {"experiment": "demo", "counts": {"pending": len(rows)}, "code_versions": {},
                       "nodes": [asdict(row) for row in rows]}
    assert status_json("demo", rows)["nodes"] == [asdict(row) for row in rows]
    assert list(written["nodes"][0]) == [field.name for field in fields(NodeRow)]  # the fields' order too


def _row(key: str, status: str, search: dict[str, int] | None = None) -> NodeRow:
    return NodeRow(key=key * 8, stage="evaluate", kind=None, task="t", intermediate="i", seed=1, label=f"evaluate {key}",
                   status=status, attempts=1, elapsed_s=None, headline="", search=search, last_error=None,
                   log_tail=None)


def test_a_cut_table_ranks_running_queued_and_failed_rows_first() -> None:
    rows = [_row("a", "done"), _row("b", "pending"), _row("c", "failed"), _row("d", "running"), _row("e", "done")]
    console = Console(file=io.StringIO(), width=200, markup=False, highlight=False)
    for part in full_view("t", rows, rows, Filters(), lambda row: "i -> t", limit=2):
        console.print(part)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert _table_keys(text) == ["dddddddd", "cccccccc"]
    assert "… 3 more rows; --all lists every node" in text
    console = Console(file=io.StringIO(), width=200, markup=False, highlight=False)
    for part in full_view("t", rows, rows, Filters(), lambda row: "i -> t", limit=5):
        console.print(part)
    assert _table_keys(console.file.getvalue()) == [r.key[:8] for r in rows]  # type: ignore[attr-defined]


def test_status_json_rows_are_the_rows_not_copies_that_differ() -> None:
    rows = [_row("a", "running", search={"finished": 1, "planned": 4})]
    assert status_json("x", rows) == {"experiment": "x", "counts": {"running": 1}, "code_versions": {},
                                      "nodes": [asdict(rows[0])]}


def test_the_table_holds_a_terminals_height_of_rows_or_a_fixed_number_piped() -> None:
    from xstilts.launcher.commands.status_view import TABLE_ROWS_MIN, table_rows_limit

    assert table_rows_limit(Console(file=io.StringIO(), force_terminal=True, height=60)) == 60
    assert table_rows_limit(Console(file=io.StringIO(), force_terminal=True, height=5)) == TABLE_ROWS_MIN
    assert table_rows_limit(Console(file=io.StringIO())) == TABLE_ROWS_PIPED
