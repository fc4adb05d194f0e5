"""The command line's conventions (issue 18), checked over every command of the app:

- an option with choices lists them in `--help` and completes them in a shell; a wrong
  value is one line naming the valid ones (exit 2), with a did-you-mean;
- a boolean flag's help shows no `<bool>`;
- `--output/-O` is the one output flag, and `-o` always means `--override`;
- shell completion is installed by `xstilts --install-completion`;
- `score` on folders that hold no task is an error, not an empty table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from xstilts.analysis.cli import CollectFormat, Suite, TableFormat
from xstilts.cli import app
from xstilts.launcher.commands.status_view import Stage, State
from xstilts.launcher.commands.tasks import Role

XSTILTS = [sys.executable, "-c", "from xstilts.cli import app; app(prog_name='xstilts')"]


def _commands(command: object = None, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """(words, click command) of every command and group of the app."""
    command = command or get_command(app)
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _help(words: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_choice_options_list_their_choices_in_help() -> None:
    expected = {
        ("analysis", "collect"): "--format [csv|parquet|json]",
        ("analysis", "table"): "--format [rich|md|csv|latex|json]",
        ("analysis", "compare"): "--by [modality]",
        ("score",): "--suite [xtreme|xtreme-r]",
        ("tasks",): "--role [intermediate|target]",
        ("status",): "--stage [prepare|tune|train-intermediate|train-target|evaluate]",
    }
    for words, shown in expected.items():
        assert shown in _help(words), words


def test_the_enums_are_the_registries() -> None:
    from xstilts.analysis.collect import FORMATS as COLLECT_FORMATS
    from xstilts.analysis.table import FORMATS as TABLE_FORMATS
    from xstilts.core.languages import SUITES
    from xstilts.core.stages import STAGES
    from xstilts.core.state import STATUSES
    from xstilts.core.tasks import TASKS

    assert [m.value for m in CollectFormat] == list(COLLECT_FORMATS)
    assert [m.value for m in TableFormat] == list(TABLE_FORMATS)
    assert [m.value for m in Suite] == list(SUITES)
    assert [m.value for m in Stage] == list(STAGES)
    assert [m.value for m in State] == list(STATUSES)
    assert {role for task in TASKS.values() for role in task.roles} == {m.value for m in Role}


def test_no_flag_shows_bool_and_every_help_renders() -> None:
    helps = {words: _help(words) for words, _ in _commands()}
    assert len(helps) > 12
    for words, text in helps.items():
        assert "<bool>" not in text, (words, text)


def test_output_is_dash_capital_o_and_dash_o_is_always_override() -> None:
    outputs = 0
    for words, command in _commands():
        for param in getattr(command, "params", []):
            names = [*param.opts, *param.secondary_opts]
            if "-o" in names:
                assert "--override" in names, (words, names)
            if "--output" in names:
                assert set(names) == {"--output", "-O"}, (words, names)
                outputs += 1
    assert outputs == 3  # analysis collect, plot, report


def test_shell_completion_is_installed_and_completes_choices(tmp_path: Path) -> None:
    assert "--install-completion" in _help(())
    env = {**os.environ, "_XSTILTS_COMPLETE": "complete_bash", "COMP_WORDS": "xstilts status spec.yaml --stage tr",
           "COMP_CWORD": "4"}
    result = subprocess.run(XSTILTS, capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert result.stdout.split() == ["train-intermediate", "train-target"], result.stdout + result.stderr


def _one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and result.stdout == "", result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (("status", "spec.yaml", "--stage", "trian-target"),
     "--stage: unknown stage 'trian-target' (did you mean 'train-target'?); valid: prepare, tune,"),
    (("status", "spec.yaml", "--state", "faild"), "--state: unknown state 'faild' (did you mean 'failed'?)"),
    (("analysis", "table", "spec.yaml", "--format", "markdown"), "--format: unknown format 'markdown'"),
    (("tasks", "--role", "targt"), "--role: unknown role 'targt' (did you mean 'target'?)"),
])
def test_a_wrong_choice_is_one_line(args: tuple[str, ...], expected: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", "from xstilts.cli import main; main()", *args],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    _one_line_error(result, expected)


def test_status_task_filter_names_the_valid_tasks(tmp_path: Path) -> None:
    import yaml

    from tests.support.specs import demo_raw

    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-c", "from xstilts.cli import main; main()", "status", "spec.yaml",
                             "--task", "syn-sentt"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    _one_line_error(result, "--task: unknown task 'syn-sentt' (did you mean 'syn-sent'?); valid:")


@pytest.mark.parametrize("as_json", [False, True])
def test_score_on_folders_without_any_task_is_an_error(tmp_path: Path, as_json: bool) -> None:
    (tmp_path / "pred" / "notes").mkdir(parents=True)
    (tmp_path / "gold").mkdir()
    result = subprocess.run([sys.executable, "-c", "from xstilts.cli import main; main()", "score", "--predictions",
                             "pred", "--gold", "gold", *(["--json"] if as_json else [])],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    _one_line_error(result, "score: no task of xtreme has a folder in both pred and gold")
