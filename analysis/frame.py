"""The tidy results table every analysis starts from, and its per-cell reduction.

One row per (intermediate, target, seed, language, metric): `xstilts.analysis.collect` builds it
from an experiment's evaluate nodes; tables, statistics, plots and the report only read
it. Keeping the shape in one place lets each of them be tested on generated frames.

A language whose test gold the data withholds (the official layout's blanked test files)
has one row with the headline metric, `value` NaN and `gold_withheld` True: the cell is
then known to be unscoreable rather than missing. `cell_scores` leaves such cells out (a
mean over the other languages is not the task score); `withheld_cells` lists them, so
every consumer can say what it left out.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

COLUMNS: tuple[str, ...] = (
    "intermediate", "target", "seed", "language", "metric", "value",
    "key", "modality", "control_of", "cost_hours", "cost_unit", "gold_withheld",
)
"""`gold_withheld`: the row stands for a language predicted but not scored; `key`: the evaluate node; `modality`: multimodal, text, text control or - (the
baseline); `control_of`: the multimodal task a control row controls for; `cost_*`: the
cell's compute (train-target and evaluate attempts, wall hours x devices)."""

CELL = ["intermediate", "target", "seed"]


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=_dtype(name)) for name in COLUMNS})


def _dtype(name: str) -> Any:
    return {"seed": "int64", "value": "float64", "cost_hours": "float64", "gold_withheld": "bool"}.get(name, "object")


def headline_metric(target: str) -> str:
    """The metric a target is ranked by (QA: the mean of EM and F1, as the suite score)."""
    from xstilts.core.tasks import TASKS

    return TASKS[target].metric


def cell_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (intermediate, target, seed): the target's headline metric averaged over its
    languages (XTREME's task score), with the row's modality and control_of."""
    if frame.empty:
        return pd.DataFrame(columns=[*CELL, "score", "languages", "modality", "control_of"])
    withheld = withheld_cells(frame)
    if not withheld.empty:
        frame = frame[~frame.set_index(CELL).index.isin(withheld.set_index(CELL).index)]
    headline = frame[frame["metric"] == frame["target"].map(headline_metric)]
    grouped = headline.groupby(CELL, sort=True)
    scores = grouped["value"].mean().rename("score").to_frame()
    scores["languages"] = grouped["language"].nunique()
    labels = headline.drop_duplicates("intermediate").set_index("intermediate")[["modality", "control_of"]]
    scores = scores.reset_index().join(labels, on="intermediate")
    return scores[[*CELL, "score", "languages", "modality", "control_of"]]


def is_withheld(frame: pd.DataFrame) -> pd.Series:
    """Per row: True exactly where `gold_withheld` is True (a frame built without the
    column, or with it missing, has every row scored)."""
    if "gold_withheld" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["gold_withheld"].eq(True)


def withheld_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (intermediate, target, seed) with a withheld language: `languages`, those
    languages joined by ", " (the cells `cell_scores` leaves out)."""
    flags = is_withheld(frame)
    if not flags.any():
        return pd.DataFrame(columns=[*CELL, "languages"])
    rows = frame[flags]
    grouped = rows.groupby(CELL, sort=True)["language"].agg(lambda langs: ", ".join(sorted(set(langs))))
    return grouped.rename("languages").reset_index()


def withheld_note(frame: pd.DataFrame) -> str | None:
    """One line naming the cells left out of scores because their gold is withheld, per
    target with its languages; None when there are none."""
    cells = withheld_cells(frame)
    if cells.empty:
        return None
    targets = cells.groupby("target", sort=True)["languages"].agg(lambda s: ", ".join(sorted(set(", ".join(s).split(", ")))))
    listed = "; ".join(f"{target} ({langs})" for target, langs in targets.items())
    return f"{len(cells)} cell(s) left out, gold withheld: {listed}"


def deltas(scores: pd.DataFrame, baseline: str = "none") -> pd.DataFrame:
    """`cell_scores` rows with `delta`: score minus the baseline's score of the same
    (target, seed); rows without a baseline counterpart are dropped, and so is the
    baseline itself."""
    base = scores[scores["intermediate"] == baseline].set_index(["target", "seed"])["score"].rename("base")
    joined = scores[scores["intermediate"] != baseline].join(base, on=["target", "seed"], how="inner")
    joined["delta"] = joined["score"] - joined["base"]
    return joined.drop(columns="base").reset_index(drop=True)
