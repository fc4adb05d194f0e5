"""What every stage function receives, and the contract between the launcher and jobs.

A stage function has the signature ``run(ctx: StageContext) -> dict``. It reads its
inputs from local directories, writes everything it produces into ``ctx.out_dir`` and
returns the metrics that become the node's ``result.json``. It never touches the store:
``jobs.entry`` downloads the inputs, uploads ``out_dir`` to the node folder, writes
``result.json`` and finally the ``DONE`` marker, so a stage cannot half-commit a node.

This module is torch-free: the launcher imports it to know the stage names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class StageContext:
    """Everything a stage needs to run one node."""

    node: dict[str, Any]
    """The node record (``node.json``): stage, kind, task, seed, key, config, inputs."""
    out_dir: Path
    """Local directory whose whole content becomes the node's folder in the store."""
    inputs: dict[str, Path]
    """Input name (``model``, ``data``, ``init``) -> local directory with that node's files."""
    log: logging.Logger

    @property
    def config(self) -> dict[str, Any]:
        return self.node["config"]


# stage name -> module in jobs.stages implementing run(ctx); prepare splits on node["kind"].
STAGE_MODULES: dict[str, str] = {
    "prepare/model": "jobs.stages.prepare_model",
    "prepare/data": "jobs.stages.prepare_data",
    "train-intermediate": "jobs.stages.train",
    "train-target": "jobs.stages.train",
    "evaluate": "jobs.stages.evaluate",
}


def stage_module(node: dict[str, Any]) -> str:
    """The module implementing this node's stage."""
    stage = node["stage"]
    if stage == "prepare":
        stage = f"prepare/{node['kind']}"
    return STAGE_MODULES[stage]
