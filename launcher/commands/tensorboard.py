"""`xstilts tensorboard`: TensorBoard on the experiment's live training curves.

Training and tune nodes write event files into their folder's `tensorboard/` as they
train (`xstilts.jobs.tracking`). This command names one TensorBoard run per node of the
plan, stage/task/intermediate/seed (a tune node's trials become its sub-runs), and starts
TensorBoard on them through `--logdir_spec name:path,...`, or only prints that command.

Every node of the plan is listed, started or not: TensorBoard polls its folders and shows
a node's curves from its first evaluation on, so one TensorBoard follows a whole launch.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from xstilts.core.nodes import run_name as node_run_name
from xstilts.core.plan import Node
from xstilts.launcher.commands.common import FollowProfileOpt, OverrideOpt, SpecArg, err, open_spec, out
from xstilts.launcher.experiment import Experiment

TRACKED_STAGES = ("train-intermediate", "train-target", "tune")
"""The stages whose nodes write event files."""

TENSORBOARD_DIR = "tensorboard"
"""The node folder's subfolder of event files (`xstilts.jobs.tracking.TENSORBOARD_DIR`;
the launcher does not import jobs)."""


@dataclass(frozen=True)
class TensorBoardRun:
    name: str
    path: str
    """A local path or a store URL (s3://, gs://)."""


def run_name(node: Node) -> str:
    """stage/task[/intermediate]/seed<n>, as the jobs name the node's W&B run (`core.nodes.run_name`)."""
    return node_run_name(node.stage, node.task, node.intermediate, node.seed)


def tensorboard_runs(experiment: Experiment) -> list[TensorBoardRun]:
    """One run per training and tune node of the plan; a name two nodes share (which
    `logdir_spec` would merge) gets the node's key prefix."""
    nodes = [node for node in experiment.plan.nodes if node.stage in TRACKED_STAGES]
    counts = Counter(run_name(node) for node in nodes)
    store = experiment.store
    runs = []
    for node in nodes:
        name = run_name(node)
        if counts[name] > 1:
            name = f"{name}/{node.key[:8]}"
        path = store.node_path(node.stage, node.key, TENSORBOARD_DIR)
        runs.append(TensorBoardRun(name, path if store.is_local else store.url_of(path)))
    return runs


def logdir_spec(runs: list[TensorBoardRun]) -> str:
    return ",".join(f"{run.name}:{run.path}" for run in runs)


def object_store_note(url: str) -> str | None:
    """What TensorBoard needs to read the store itself, or None for a local store."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol == "file":
        return None
    if protocol == "s3":
        return ("TensorBoard reads s3:// itself through boto3, with the usual AWS credentials; for an S3-compatible "
                "endpoint (MinIO, Ceph) it needs S3_ENDPOINT=<url> (set from AWS_ENDPOINT_URL when TensorBoard is "
                "started here). Or sync the node folders to a local folder first and point --logdir there.")
    return (f"TensorBoard reads {protocol}:// through fsspec: the {protocol} filesystem package (gcsfs for gs://) "
            "must be installed where it runs. Or sync the node folders to a local folder first.")


def tensorboard(
    spec: SpecArg,
    override: OverrideOpt = None,
    profile: FollowProfileOpt = None,
    print_only: Annotated[bool, typer.Option("--print", help="print the TensorBoard command; do not start it")] = False,
    port: Annotated[Optional[int], typer.Option("--port", help="TensorBoard's port (default: its own, 6006)")] = None,
) -> None:
    """Start TensorBoard on the live curves of every training and tune node."""
    experiment = open_spec(spec, override, profile, storage_optional=True)
    runs = tensorboard_runs(experiment)
    if not runs:
        err.print(f"experiment '{experiment.spec.name}' has no training or tune nodes: nothing to show")
        raise typer.Exit(1)
    args = ["--logdir_spec", logdir_spec(runs), *(["--port", str(port)] if port is not None else [])]
    if not experiment.spec.tracking.tensorboard:
        err.print("tracking.tensorboard is off in this spec: nodes run since then wrote no event files")
    note = object_store_note(experiment.store.url)
    if note:
        err.print(note)
    out.print(shlex.join(["tensorboard", *args]), soft_wrap=True)
    if print_only:
        return
    env = dict(os.environ)
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint and "S3_ENDPOINT" not in env:
        env["S3_ENDPOINT"] = endpoint
    try:
        code = subprocess.call([sys.executable, "-m", "tensorboard.main", *args], env=env)
    except KeyboardInterrupt:  # Ctrl-C stops TensorBoard (it gets the signal too): not an error
        code = 0
    raise typer.Exit(code)
