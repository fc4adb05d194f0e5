"""The task registry against the official XTREME / XTREME-R task and language lists."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xstilts.core.languages import XTREME_GROUPS, XTREME_LANGUAGES, XTREME_R_GROUPS, XTREME_R_LANGUAGES
from xstilts.core.tasks import (
    METRICS, SPLITS, TASK_KINDS, TASKS, TATOEBA_ISO3, TYDIQA_LANGUAGE_NAMES, UDPOS_TREEBANKS, get_task, task_names,
)
from tests.support.paths import REPO

REAL = sorted(name for name, task in TASKS.items() if task.source.kind not in ("synthetic", "captions"))
TARGETS = sorted(set(XTREME_LANGUAGES) | set(XTREME_R_LANGUAGES))
INTERMEDIATES = sorted(
    ["anli_plus", "mnli", "qqp", "squad", "squad_v2", "hellaswag", "commonsenseqa", "cosmosqa", "socialiqa", "ccg",
     "sst2", "paws"]
)
EXPECTED_METRIC = {
    "xnli": "accuracy", "pawsx": "accuracy", "xcopa": "accuracy", "udpos": "seqeval_f1", "panx": "seqeval_f1",
    "xquad": "squad_em_f1", "mlqa": "mlqa_em_f1", "tydiqa": "squad_em_f1", "bucc2018": "bucc_f1",
    "tatoeba": "accuracy", "lareqa": "map_at_20", "mewslix": "map_at_20",
}
EXPECTED_KIND = {
    "xnli": "classification", "pawsx": "classification", "xcopa": "multiple_choice", "udpos": "tagging",
    "panx": "tagging", "xquad": "span_qa", "mlqa": "span_qa", "tydiqa": "span_qa", "bucc2018": "retrieval",
    "tatoeba": "retrieval", "lareqa": "dual_encoder", "mewslix": "dual_encoder",
}


def test_every_official_target_is_registered_with_the_official_languages() -> None:
    assert sorted(task_names("target")) == sorted(TARGETS + ["syn-pos", "syn-sent"])
    for name in TARGETS:
        task = get_task(name)
        official = XTREME_R_LANGUAGES.get(name) or XTREME_LANGUAGES[name]
        assert task.languages == official, name
        # XTREME-R extends XTREME's lists: nothing XTREME evaluates is lost.
        assert set(XTREME_LANGUAGES.get(name, ())) <= set(task.languages), name
        assert task.eval_languages == task.languages


def test_suites_and_groups_follow_the_official_scorers() -> None:
    for name in TARGETS:
        task = get_task(name)
        assert set(task.suites) == {s for s, table in (("xtreme", XTREME_LANGUAGES),
                                                      ("xtreme-r", XTREME_R_LANGUAGES)) if name in table}
        groups = XTREME_R_GROUPS if "xtreme-r" in task.suites else XTREME_GROUPS
        assert name in groups[task.group], name
    assert get_task("pawsx").suites == ("xtreme",) and get_task("bucc2018").suites == ("xtreme",)
    assert get_task("mewslix").suites == ("xtreme-r",)


@pytest.mark.parametrize("name", REAL)
def test_every_task_states_its_data_metric_and_kind(name: str) -> None:
    task = get_task(name)
    assert task.english_training_data.strip(), name
    assert task.metric in METRICS
    assert task.kind in TASK_KINDS
    for split in task.splits:
        for lang in task.split_languages(split):
            assert task.sources_for(split, lang), (name, split, lang)
    if name in EXPECTED_METRIC:
        assert (task.kind, task.metric) == (EXPECTED_KIND[name], EXPECTED_METRIC[name])


def test_intermediate_tasks_are_english_only_and_never_targets() -> None:
    text = [n for n in task_names("intermediate") if not n.startswith("syn-") and TASKS[n].kind != "image_text"]
    assert sorted(text) == INTERMEDIATES
    for name in INTERMEDIATES:
        task = get_task(name)
        assert task.roles == ("intermediate",)
        assert task.suites == () and task.group is None
        assert all(task.split_languages(split) == ("en",) for split in SPLITS)
    for name in TARGETS:
        assert get_task(name).roles == ("target",)


def test_zero_shot_splits() -> None:
    """English training and model selection; retrieval is evaluate-only, BUCC tunes its
    threshold on a dev set in every language."""
    for name in TARGETS:
        task = get_task(name)
        if task.kind == "retrieval":
            assert "train" not in task.splits
            continue
        assert task.train_languages == ("en",) and task.dev_languages == ("en",), name
    assert get_task("tatoeba").splits == ("test",)
    bucc = get_task("bucc2018")
    assert bucc.splits == ("dev", "test") and bucc.dev_languages == bucc.languages == ("de", "fr", "ru", "zh")


def test_recipe_details() -> None:
    xcopa = get_task("xcopa")
    assert xcopa.train_first == "socialiqa" and "intermediate" in get_task("socialiqa").roles
    assert all(get_task(n).train_first is None for n in REAL if n != "xcopa")
    assert get_task("tatoeba").retrieval_layer_for(12) == 7 and get_task("tatoeba").retrieval_layer_for(24) == 13
    assert get_task("bucc2018").retrieval_layer_for(12) == 7
    assert get_task("tatoeba").retrieval_layer_for(2) == 1  # a tiny encoder: same relative depth
    assert get_task("xnli").retrieval_layer_for(12) is None
    anli = get_task("anli_plus").sources_for("train", "en")
    assert [s.name for s in anli] == ["stanfordnlp/snli", "nyu-mll/glue"] + ["facebook/anli"] * 3
    assert [s.hub_split("train") for s in anli][2:] == ["train_r1", "train_r2", "train_r3"]
    assert len({s.tag for s in anli}) == 5
    for name in ("xquad", "mlqa", "lareqa"):
        assert get_task(name).sources_for("train", "en")[0].name == "rajpurkar/squad"


def test_hub_sources_of_the_targets() -> None:
    test_source = {name: get_task(name).sources_for("test", get_task(name).languages[0])[0] for name in TARGETS}
    assert test_source["xnli"].name == "facebook/xnli"
    assert test_source["pawsx"].name == "google-research-datasets/paws-x"
    assert test_source["panx"].name == "unimelb-nlp/wikiann"
    assert test_source["xquad"].configs_for("ro") == ("xquad.ro",)
    assert test_source["mlqa"].configs_for("de") == ("MLQA.de.de",)
    assert get_task("bucc2018").source.configs_for("fr") == ("bucc18.fr",)
    assert get_task("tatoeba").sources_for("test", "ar")[0].configs_for("ar") == ("tatoeba.ara",)
    assert get_task("tatoeba").sources_for("test", "uk")[0].name == "mteb/tatoeba-bitext-mining"
    assert get_task("udpos").source.configs_for("en")[:2] == ("en_esl", "en_ewt")
    assert get_task("mewslix").source.kind == "local" and get_task("ccg").source.kind == "local"


def test_language_tables_cover_their_tasks() -> None:
    assert set(UDPOS_TREEBANKS) == set(get_task("udpos").languages)
    for lang, treebanks in UDPOS_TREEBANKS.items():
        assert all(treebank.split("_")[0] == lang for treebank in treebanks)
    assert set(get_task("tatoeba").languages) <= set(TATOEBA_ISO3)
    assert set(TYDIQA_LANGUAGE_NAMES) == set(get_task("tydiqa").languages)


def test_registry_and_sources_import_without_torch_or_datasets() -> None:
    code = ("import sys, xstilts.core.tasks, xstilts.jobs.tasks.sources; "
            "assert not {'torch', 'datasets', 'transformers'} & set(sys.modules), sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO))


def test_caption_tasks_pair_each_multimodal_task_with_its_control() -> None:
    """Every caption dataset has the three objectives (multimodal) and two controls
    (text modality, naming the multimodal task they control for); no test split."""
    from xstilts.core.tasks import CAPTION_DATASETS

    for dataset in CAPTION_DATASETS:
        tasks = {n: t for n, t in TASKS.items() if t.kind == "image_text" and t.source.name == dataset}
        assert sorted(tasks) == sorted(f"{dataset}-{s}" for s in ("itm", "contrastive", "mcm", "mcm-text", "itm-shuffled"))
        for name, task in tasks.items():
            assert task.roles == ("intermediate",) and task.splits == ("train", "dev")
            if task.control_of:
                control = TASKS[task.control_of]
                assert task.modality == "text" and control.modality == "multimodal"
                assert control.objective == task.objective and control.images == "paired" != task.images
            else:
                assert task.modality == "multimodal" and task.images == "paired"
