"""Bad input of every kind reaches the user as one line and exit code 2 (issue 16).

One table of bad inputs (the spec file and its values, cluster profiles, `-o`
overrides, storage URLs, environment variables, command options, and the files
`xstilts score` reads), each run through the real CLI in a subprocess. Each must give
exit code 2, exactly one line on stderr, `error: ...` naming the problem, nothing on
stdout, no traceback, no secret (the cases that carry one: credentials in a URL, a
token in a profile's env, AWS_SECRET_ACCESS_KEY), and nothing written.

Only `UserError` becomes such a line (`xstilts.cli.main`); every input is checked where
it enters, so a bug elsewhere still shows its traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.specs import demo_raw, set_path
from xstilts.core.languages import SUITES

XSTILTS = [sys.executable, "-c", "from xstilts.cli import main; main()"]
SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"

NO_AWS: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None,
    "AWS_ENDPOINT_URL": None, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
}
"""No credentials from anywhere: botocore would look in ~/.aws and the environment."""

DELETE = object()
"""A spec change that removes the key."""


@dataclass(frozen=True)
class Bad:
    """One bad input: `args` run in a folder that holds `spec.yaml` (the demo spec with
    `spec` changes, its storage in `store/`, or `spec_text` verbatim) and `files`
    (content, or None for a folder), with `env` changed (None: unset). The one error
    line must contain `expected`."""

    args: tuple[str, ...]
    expected: str
    spec: dict[str, Any] = field(default_factory=dict)
    spec_text: str | bytes | None = None
    files: dict[str, str | bytes | None] = field(default_factory=dict)
    env: dict[str, str | None] = field(default_factory=dict)


PLAN = ("plan", "spec.yaml")
LAUNCH = ("launch", "spec.yaml", "--dry-run")
STATUS = ("status", "spec.yaml")
SCORE = ("score", "--predictions", "pred", "--gold", "gold")


def profile(text: str, *args: str) -> dict[str, Any]:
    """`launch --dry-run` with the profile file `text`."""
    return {"args": (*LAUNCH, "--profile", "mine.yaml", *args), "files": {"mine.yaml": text}}


def tree(task: str, pred: str | bytes, gold: str | bytes, ext: str = "tsv", **replace: str | bytes) -> dict[str, Any]:
    """`score` on a submission of one XTREME task: every language's predictions `pred`
    and gold `gold`, but for the files named in `replace` (`pred_de="..."`)."""
    files: dict[str, str | bytes | None] = {}
    for lang in SUITES["xtreme"][0][task]:
        files[f"pred/{task}/test-{lang}.{ext}"] = replace.get(f"pred_{lang}", pred)
        files[f"gold/{task}/test-{lang}.{ext}"] = replace.get(f"gold_{lang}", gold)
    return {"args": SCORE, "files": files}


def without(case: dict[str, Any], name: str) -> dict[str, Any]:
    """`case` without the file `name`."""
    return {**case, "files": {path: content for path, content in case["files"].items() if path != name}}


QA_GOLD = '{"data": [{"paragraphs": [{"qas": [{"id": "q1", "answers": [{"text": "a"}]}]}]}]}'

CASES: dict[str, Bad] = {
    # the spec file
    "spec: no such file": Bad(("plan", "nope.yaml"), "spec file not found: nope.yaml"),
    "spec: a folder": Bad(("plan", "folder"), "spec file folder is a folder", files={"folder": None}),
    "spec: empty": Bad(PLAN, "spec.yaml: empty", spec_text=""),
    "spec: a YAML list": Bad(PLAN, "must be a YAML mapping of keys, got a list", spec_text="- name\n- demo\n"),
    "spec: a YAML scalar": Bad(PLAN, "got a single value (str)", spec_text="demo\n"),
    "spec: YAML syntax": Bad(PLAN, "malformed YAML at line 2, column 1", spec_text="name: [demo\n"),
    "spec: control character": Bad(PLAN, "line 1, column 9: unacceptable character #x0007",
                                   spec_text="name: de\x07mo\n"),
    "spec: not UTF-8": Bad(PLAN, "not UTF-8 text (byte",
                           spec_text=yaml.safe_dump(demo_raw()).encode() + b"# caf\xe9\n"),
    "spec: a key twice": Bad(PLAN, "key 'seeds' given twice",
                             spec_text=yaml.safe_dump(demo_raw()).replace("seeds:", "seeds: [7]\nseeds:", 1)),
    "spec: wrong type": Bad(PLAN, "seeds: Input should be a valid list (got 'one')", spec={"seeds": "one"}),
    "spec: unknown key": Bad(PLAN, "unknown key 'sedes' (did you mean 'seeds'?); valid keys:", spec={"sedes": [1]}),
    "spec: missing key": Bad(PLAN, "seeds: required key is missing", spec={"seeds": DELETE}),
    "spec: unknown task": Bad(PLAN, "unknown target task 'xnlii' (did you mean 'xnli'?); valid:",
                              spec={"target.tasks": ["syn-sent", "xnlii"]}),
    "spec: infinite learning rate": Bad(PLAN, "target.hparams.learning_rate",
                                        spec={"target.hparams.learning_rate": float("inf")}),
    "spec: infinite epochs": Bad(PLAN, "intermediate.hparams.epochs",
                                 spec={"intermediate.hparams.epochs": float("inf")}),
    "spec: NaN warmup": Bad(PLAN, "target.hparams.warmup_ratio", spec={"target.hparams.warmup_ratio": float("nan")}),
    "spec: seed beyond 32 bits": Bad(PLAN, "seeds", spec={"seeds": [1, 1e30]}),
    "spec: negative seed": Bad(PLAN, "seeds must be integers from 0", spec={"seeds": [-1]}),
    "spec: sequences longer than the model": Bad(PLAN, "do not fit the tiny model's 128 positions",
                                                 spec={"target.hparams.max_seq_length": 256}),
    "spec: tiny vision argument": Bad(PLAN, "CLIPVisionConfig argument 'patch_sise' (did you mean 'patch_size'?)",
                                      spec={"vision.tiny.patch_sise": 8}),
    "spec: tiny model argument": Bad(PLAN, "XLMRobertaConfig argument 'hiden_size' (did you mean 'hidden_size'?)",
                                     spec={"model.tiny.hiden_size": 64}),
    "spec: data_dir missing": Bad(PLAN, "data_dir: 'no-data' is not a directory", spec={"data_dir": "no-data"}),
    "spec: data_revision of a task not in the spec": Bad(
        PLAN, "data_revision: unknown task of this spec 'xnli'; valid: syn-chunk, syn-pos, syn-rate",
        spec={"data_revision.xnli": "main"}),
    "spec: data_revision of a generated task": Bad(
        PLAN, "data_revision.syn-sent: 'syn-sent' is not read from the Hugging Face hub (generated)",
        spec={"data_revision.syn-sent": "main"}),
    "spec: data_revision beside data_dir": Bad(
        ("data", "check", "spec.yaml"), "data_revision: pins hub dataset revisions, but data_dir is set",
        spec={"data_dir": "data", "data_revision.syn-sent": "main"}, files={"data": None}),
    "spec: empty data_revision": Bad(PLAN, "data_revision.syn-sent: String should have at least 1 character",
                                     spec={"data_revision.syn-sent": ""}),
    "spec: unknown cluster": Bad(PLAN, "unknown cluster profile 'slurmm' (did you mean 'slurm'?)",
                                 spec={"cluster": "slurmm"}),
    # overrides
    "override: no '='": Bad((*PLAN, "-o", "seeds"), "override 'seeds' must look like key.path=value"),
    "override: empty key": Bad((*PLAN, "-o", "target..epochs=2"), "empty key in 'target..epochs'"),
    "override: bad YAML": Bad((*PLAN, "-o", "seeds=[1,"), "override 'seeds': value is not valid YAML"),
    "override: bad YAML holding a secret": Bad((*PLAN, "-o", f"storage=[s3://AKIAEXAMPLE:{SECRET}@bucket/x"),
                                               "override 'storage': value is not valid YAML"),
    "override: unknown key": Bad((*PLAN, "-o", "target.hparams.lr=0.1"), "target.hparams.lr: unknown key 'lr'"),
    "override: into a value": Bad((*PLAN, "-o", "seeds.first=1"), "'seeds' is a value, not a section"),
    "override: bad value": Bad((*LAUNCH, "-o", "target.hparams.epochs=lots"), "target.hparams.epochs"),
    "override: URL list with credentials": Bad((*PLAN, "-o", f"storage=[s3://AKIAEXAMPLE:{SECRET}@bucket/x]"),
                                               "storage: Input should be a valid string (got ['s3://***@bucket/x'])"),
    # cluster profiles
    "profile: unknown name": Bad((*LAUNCH, "-p", "slurmm"), "unknown cluster profile 'slurmm' (did you mean 'slurm'?)"),
    "profile: no such file": Bad((*LAUNCH, "-p", "nope.yaml"), "cluster profile file not found: nope.yaml"),
    "profile: bad YAML": Bad(**profile("executor: [local\n"), expected="mine.yaml: malformed YAML at line 2"),
    "profile: not UTF-8": Bad(**profile("executor: local # caf\xe9\n".encode("latin-1")), expected="not UTF-8 text"),
    "profile: unknown executor": Bad(**profile("executor: kubernetes\n"),
                                     expected="unknown executor 'kubernetes'; valid: local, slurm"),
    "profile: unknown key": Bad(**profile("executor: local\nmax_paralel: 3\n"),
                                expected="unknown profile key 'max_paralel' (did you mean 'max_parallel'?)"),
    "profile: env a string holding a token": Bad(**profile(f"executor: local\nenv: 'HF_TOKEN={SECRET}'\n"),
                                                 expected="env: Input should be a valid dictionary (value not shown)"),
    "profile: env value not a string": Bad(**profile(f"executor: local\nenv: {{HF_TOKEN: [{SECRET}]}}\n"),
                                           expected="env.HF_TOKEN: Input should be a valid string (value not shown)"),
    "profile: env name with '='": Bad(**profile("executor: local\nenv: {A=B: '1'}\n"), expected="env.A=B"),
    "profile: env name injecting a command": Bad(**profile("executor: slurm\nenv: {'X; touch pwned; Y': v}\n"),
                                                 expected="env.X; touch pwned; Y"),
    "profile: env sets the spec's checkpointing": Bad(**profile("env: {XSTILTS_CHECKPOINT_EVERY: often}\n"),
                                                      expected="comes from the spec's checkpointing.every_steps"),
    "profile: #SBATCH value with a newline": Bad(**profile('executor: slurm\npartition: "gpu\\n#SBATCH --qos=free"\n'),
                                                 expected="partition"),
    "profile: log_dir with a newline": Bad(**profile('executor: slurm\nlog_dir: "logs\\nrm -rf x"\n'),
                                           expected="log_dir"),
    "profile: unknown stage": Bad(**profile("executor: slurm\nstages: {trian: {}}\n"),
                                  expected="stages.trian: unknown stage 'trian'"),
    "profile: stage not a mapping": Bad(**profile("executor: slurm\nstages: {evaluate: 5}\n"),
                                        expected="stages.evaluate: Input should be a valid dictionary (got 5)"),
    # storage URLs
    "storage: empty": Bad(PLAN, "storage: empty", spec={"storage": ""}),
    "storage: blank": Bad(LAUNCH, "storage: empty", spec={"storage": "   "}),
    "storage: 's3:/' without '//'": Bad(PLAN, "did you mean 's3://bucket/prefix'",
                                        spec={"storage": "s3:/bucket/prefix"}),
    "storage: ftp://": Bad(LAUNCH, "unknown storage scheme 'ftp://'", spec={"storage": "ftp://host/folder"}),
    "storage: http://": Bad(PLAN, "unknown storage scheme 'http://'", spec={"storage": "http://host/folder"}),
    "storage: credentials in the URL": Bad(LAUNCH, "has credentials in it",
                                           spec={"storage": f"s3://AKIAEXAMPLE:{SECRET}@bucket/prefix"}),
    "storage: query string": Bad(PLAN, "query", spec={"storage": "s3://bucket/prefix?token=abc"}),
    "storage: no bucket": Bad(LAUNCH, "names no bucket", spec={"storage": "s3:///prefix"}),
    "storage: a device": Bad(PLAN, "is a file, not a folder", spec={"storage": "/dev/null"}),
    "storage: a file": Bad(LAUNCH, "is a file, not a folder", spec={"storage": "a-file"}, files={"a-file": "x\n"}),
    "storage: inside a file": Bad(LAUNCH, "a-file is a file, not a folder", spec={"storage": "a-file/store"},
                                  files={"a-file": "x\n"}),
    "storage: S3 without credentials": Bad(STATUS, "storage: cannot reach s3://bucket/x: NoCredentialsError",
                                           spec={"storage": "s3://bucket/x"}, env=NO_AWS),
    "storage: S3 endpoint down, secret in the environment": Bad(
        STATUS, "storage: cannot reach s3://bucket/x: EndpointConnectionError", spec={"storage": "s3://bucket/x"},
        env={**NO_AWS, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET,
             "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}),
    # the environment
    "env: XSTILTS_LEASE_TTL not a number": Bad(STATUS, "XSTILTS_LEASE_TTL: 'abc'", env={"XSTILTS_LEASE_TTL": "abc"}),
    "env: XSTILTS_LEASE_TTL zero": Bad(STATUS, "XSTILTS_LEASE_TTL: '0'", env={"XSTILTS_LEASE_TTL": "0"}),
    "env: XSTILTS_LEASE_TTL negative": Bad(LAUNCH, "XSTILTS_LEASE_TTL: '-5'", env={"XSTILTS_LEASE_TTL": "-5"}),
    "env: XSTILTS_LEASE_TTL nan": Bad(STATUS, "XSTILTS_LEASE_TTL: 'nan'", env={"XSTILTS_LEASE_TTL": "nan"}),
    "env: XSTILTS_LEASE_TTL inf": Bad(PLAN, "XSTILTS_LEASE_TTL: 'inf'", env={"XSTILTS_LEASE_TTL": "inf"}),
    "env: XSTILTS_LEASE_TTL too short": Bad(STATUS, "XSTILTS_LEASE_TTL: '1'", env={"XSTILTS_LEASE_TTL": "1"}),
    "env: XSTILTS_CACHE a file": Bad(LAUNCH, "XSTILTS_CACHE: a-file is a file, not a folder",
                                     files={"a-file": "x\n"}, env={"XSTILTS_CACHE": "a-file/cache"}),
    "env: XSTILTS_CACHE empty": Bad(STATUS, "XSTILTS_CACHE: empty", env={"XSTILTS_CACHE": ""}),
    "env: XSTILTS_CACHE with '~'": Bad(LAUNCH, "XSTILTS_CACHE: '~/cache' holds '~' or '$', which nothing expands",
                                       env={"XSTILTS_CACHE": "~/cache"}),
    "profile env: XSTILTS_CACHE with '$'": Bad(**profile("executor: slurm\nenv: {XSTILTS_CACHE: $TMPDIR/cache}\n"),
                                               expected="profile 'mine' env.XSTILTS_CACHE: '$TMPDIR/cache' holds"),
    "env: XSTILTS_SCRATCH missing": Bad(LAUNCH, "XSTILTS_SCRATCH: folder no-scratch does not exist",
                                        env={"XSTILTS_SCRATCH": "no-scratch"}),
    "profile env: XSTILTS_SCRATCH missing": Bad(**profile("executor: local\nenv: {XSTILTS_SCRATCH: no-scratch}\n"),
                                                expected="profile 'mine' env.XSTILTS_SCRATCH: folder no-scratch"),
    # command options
    "tasks --role": Bad(("tasks", "--role", "targt"), "unknown role 'targt' (did you mean 'target'?)"),
    "status --interval inf": Bad((*STATUS, "--watch", "--interval", "inf"), "--interval: inf is not a number"),
    "logs: unknown node": Bad(("logs", "spec.yaml", "zzzz"), "no node of experiment 'demo' has a key starting"),
    "analysis table --format": Bad(("analysis", "table", "spec.yaml", "--format", "xls"), "unknown format 'xls'"),
    "analysis collect --format": Bad(("analysis", "collect", "spec.yaml", "--format", "xls"), "unknown format 'xls'"),
    "analysis compare --by": Bad(("analysis", "compare", "spec.yaml", "--by", "task"), "unknown grouping 'task'"),
    "analysis compare --bootstrap": Bad(("analysis", "compare", "spec.yaml", "--bootstrap", "0"),
                                        "--bootstrap: 0 resamples; give at least 1"),
    "analysis plot --target": Bad(("analysis", "plot", "spec.yaml", "--target", "syn-sen"),
                                  "unknown target 'syn-sen' (did you mean 'syn-sent'?)"),
    # files `xstilts score` reads
    "score: no predictions folder": Bad(SCORE, "predictions directory not found: pred", files={"gold/pawsx": None}),
    "score: predictions a file": Bad(SCORE, "predictions directory not found: pred", files={"pred": "x\n"}),
    "score: unknown suite": Bad(**{**tree("pawsx", "1\n", "1\n"), "args": (*SCORE, "--suite", "xtrem")},
                                expected="unknown suite 'xtrem' (did you mean 'xtreme'?); valid: xtreme, xtreme-r"),
    "score: missing language file": Bad(**without(tree("pawsx", "1\n", "1\n"), "pred/pawsx/test-de.tsv"),
                                        expected="missing file pred/pawsx/test-de.tsv"),
    "score: predictions not UTF-8": Bad(**tree("pawsx", "1\n", "1\n", pred_de=b"caf\xe9\n"),
                                        expected="pred/pawsx/test-de.tsv: not UTF-8 text (byte 3)"),
    "score: gold not UTF-8": Bad(**tree("pawsx", "1\n", "1\n", gold_fr=b"\xff\n"),
                                 expected="gold/pawsx/test-fr.tsv: not UTF-8 text (byte 0)"),
    "score: tags not UTF-8": Bad(**tree("udpos", "NOUN\n\n", "NOUN\n\n", pred_af=b"NOUN\n\xe9\n"),
                                 expected="pred/udpos/test-af.tsv: not UTF-8 text (byte 5)"),
    "score: BUCC pair with three columns": Bad(**tree("bucc2018", "de-1\ten-1\textra\n", "de-1\ten-1\n"),
                                               expected="line 1: expected 'source_id<TAB>target_id', got 3"),
    "score: BUCC pair split by a space": Bad(**tree("bucc2018", "de-1\ten-1\nde-2 en-2\n", "de-1\ten-1\n"),
                                             expected="line 2: expected 'source_id<TAB>target_id', got 1"),
    "score: label counts differ": Bad(**tree("pawsx", "1\n0\n", "1\n"), expected="2 examples in"),
    "score: tag counts differ": Bad(**tree("udpos", "NOUN\nVERB\n\n", "NOUN\n\n"),
                                    expected="2 predicted tags for 1 gold tags"),
    "score: QA predictions not JSON": Bad(**tree("xquad", '{"q1": ', QA_GOLD, "json"), expected="not valid JSON"),
    "score: QA predictions a list": Bad(**tree("xquad", "[1, 2]", QA_GOLD, "json"),
                                        expected="expected a JSON object {question_id: answer text}, got list"),
}


def prepare(case: Bad, folder: Path) -> None:
    """Write the case's spec and files into `folder`."""
    spec = folder / "spec.yaml"
    if case.spec_text is not None:
        spec.write_bytes(case.spec_text.encode() if isinstance(case.spec_text, str) else case.spec_text)
    else:
        raw = demo_raw()
        raw["storage"] = "store"
        for dotted, value in case.spec.items():
            if value is DELETE:
                raw.pop(dotted)
            else:
                set_path(raw, dotted, value)
        spec.write_text(yaml.safe_dump(raw))
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def run_cli(*args: str, cwd: Path, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "COLUMNS": "200"}
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run([*XSTILTS, *args], capture_output=True, text=True, cwd=cwd, timeout=60, env=environment)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its content) and folder (None) under `folder`."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def assert_user_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    assert result.stdout == "", output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_exit_2_no_secret_and_nothing_written(case: Bad, tmp_path: Path) -> None:
    prepare(case, tmp_path)
    before = snapshot(tmp_path)
    assert_user_error(run_cli(*case.args, cwd=tmp_path, env=case.env), case.expected)
    assert snapshot(tmp_path) == before


def test_the_table_has_forty_distinct_bad_inputs() -> None:
    inputs = {(case.args, case.expected, repr(case.spec), repr(case.spec_text), repr(case.files), repr(case.env))
              for case in CASES.values()}
    assert len(inputs) == len(CASES) >= 40


@pytest.mark.parametrize("args, files", [
    (PLAN, {}),
    (LAUNCH, {}),
    (STATUS, {}),
    ((*LAUNCH, "--profile", "mine.yaml"), {"mine.yaml": "executor: local\nenv: {HF_TOKEN: abc}\n"}),
    (SCORE, tree("pawsx", "1\n", "1\n")["files"]),
    (SCORE, tree("bucc2018", "de-1\ten-1\n\n", "de-1\ten-1\n")["files"]),
])
def test_the_inputs_the_table_spoils_are_good(args: tuple[str, ...], files: dict[str, str | None],
                                              tmp_path: Path) -> None:
    """Each case above fails for its one bad input, not for something in what it shares."""
    prepare(Bad(args, "", files=files), tmp_path)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_log_that_is_not_utf8_is_shown_with_replacement_characters(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's log is whatever its process printed; `logs` failed on a byte that is not UTF-8."""
    from xstilts.launcher.experiment import open_experiment

    prepare(Bad(LAUNCH, ""), tmp_path)
    monkeypatch.chdir(tmp_path)
    experiment = open_experiment("spec.yaml")
    node = experiment.plan.nodes[0]
    experiment.store.write_bytes(experiment.store.node_path(node.stage, node.key, "logs", "1.log"), b"caf\xe9\n")
    result = run_cli("logs", "spec.yaml", node.key, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "caf\ufffd" in result.stdout


def test_an_unknown_key_in_per_task_lists_the_hyperparameter_keys(tmp_path: Path) -> None:
    prepare(Bad(PLAN, "", spec={"target.per_task": {"syn-pos": {"learning_rte": 1e-3}}}), tmp_path)
    result = run_cli(*PLAN, cwd=tmp_path)
    assert_user_error(result, "target.per_task.syn-pos.learning_rte")
    line = result.stderr.strip()
    assert "did you mean 'learning_rate'" in line, line
    assert "batch_size" in line and "intermediate" not in line.split("valid", 1)[-1], line
