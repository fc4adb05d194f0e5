"""Small searches whose winner is clear: the rates, and the spec that searches them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import yaml

from xstilts.jobs.entry import run_node
from xstilts.launcher.experiment import open_experiment
from xstilts.core.plan import build_plan
from xstilts.core.spec import validate
from tests.support.specs import demo_raw

WINNER = 3e-3
LEARNING_RATES = [WINNER, 1e-7, 3e-7, 1e-6]  # the winner first: ASHA's rungs then have a bar to beat
STOPPED_SEARCH_RATES = [WINNER, 1e-7, 3e-7, 1e-6, 2e-7, 5e-7]
"""Searches stopped mid-way: enough trials that two finish well before the last one, also
on a machine twice as fast as the one the timings were taken on."""


def search_spec(store: Path, search: bool = True) -> dict[str, Any]:
    """A one-target search on a freshly pretrained tiny encoder. The target is syn-pos
    (tagging): its token accuracy separates the learning rates from the first evaluation.
    syn-sent stays at 50% (one class) for its first 40 or so steps at every rate here, a
    tie that let a stopped 40-step search pick whichever rate came first."""
    raw = demo_raw()
    raw["name"] = "tune"
    raw["storage"] = str(store)
    raw["model"].update(pretrain_steps=30, corpus_sentences_per_language=300, tokenizer_vocab_size=400)
    raw["intermediate"]["tasks"] = ["none"]
    raw["target"]["tasks"] = ["syn-pos"]
    raw["seeds"] = [1]
    raw["target"]["hparams"].update(max_steps=20, eval_interval=10, batch_size=16)
    if search:
        raw["target"]["search"] = {
            "space": {"learning_rate": {"grid": LEARNING_RATES}}, "scheduler": "asha",
            "grace_period": 1, "reduction_factor": 2, "budget_steps": 100, "max_concurrent": 1,
        }
    return raw
