"""One reading of the allocation (core/allocation.py), one caption registry
(core/captions.py), one stable RNG (core/rng.py)."""

from __future__ import annotations

import os

import pytest

from xstilts.core import allocation
from xstilts.core.rng import stable_rng, stable_seed

PLACE_VARIABLES = ("RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_CPUS_PER_TASK")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PLACE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_lone_process_is_rank_zero_of_one(clean_env: pytest.MonkeyPatch) -> None:
    assert allocation.process_place() == allocation.ProcessPlace(0, 1, "single")


def test_torchrun_variables_win_over_slurms(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SLURM_NTASKS", "4")
    clean_env.setenv("SLURM_PROCID", "3")
    assert allocation.process_place() == allocation.ProcessPlace(3, 4, "slurm")
    clean_env.setenv("RANK", "1")
    clean_env.setenv("WORLD_SIZE", "2")
    assert allocation.process_rank() == (1, 2) and allocation.process_place().source == "torchrun"


def test_a_one_task_slurm_step_is_a_lone_process(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SLURM_NTASKS", "1")
    clean_env.setenv("SLURM_PROCID", "0")
    assert allocation.process_place().source == "single"


def test_cpus_are_capped_by_the_slurm_grant(clean_env: pytest.MonkeyPatch) -> None:
    usable = len(os.sched_getaffinity(0))
    assert allocation.usable_cpus() == allocation.allocation_cpus() == usable
    clean_env.setenv("SLURM_CPUS_PER_TASK", "1")
    assert allocation.allocation_cpus() == 1
    assert allocation.allocation_cpus(tasks_on_host=2) == min(usable, 2)
    clean_env.setenv("SLURM_CPUS_PER_TASK", "many")
    assert allocation.allocation_cpus() == usable


def test_stable_rng_is_the_same_in_every_process() -> None:
    # crc32 of "syn-shapes/grain/7": a fixed number, unlike hash() which is salted per process
    assert stable_seed("syn-shapes", "grain", 7) == stable_seed("syn-shapes/grain/7") == 2131563789
    assert stable_rng("a", 1).random() == stable_rng("a", 1).random() != stable_rng("a", 2).random()


def test_one_caption_registry() -> None:
    from xstilts.core import captions
    from xstilts.core.tasks import TASKS
    from xstilts.jobs.multimodal import captions as loaders

    assert loaders.CAPTION_DATASETS is captions.CAPTION_DATASETS
    for name, dataset in captions.CAPTION_DATASETS.items():
        assert TASKS[f"{name}-mcm"].english_training_data == dataset.description
    assert [name for name in captions.CAPTION_DATASETS if captions.is_generated(name)] == ["syn-shapes"]
    assert not captions.is_generated("no-such-dataset")
