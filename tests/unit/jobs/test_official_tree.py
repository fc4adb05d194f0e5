"""The loaders on a `data_dir` shaped exactly as google-research/xtreme's download leaves it.

`tests/support/official_tree.py` writes the tree (raw releases passed through mirrors of
`utils_preprocess.py` and `download_data.sh`); here every registered split of every
XTREME/XTREME-R target must load with the official number of examples, and with its gold
marked withheld exactly where the official preprocessing strips it. One case per task and
split, so a loader defect names its task.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.official_tree import TREE_TASKS, OfficialTree, write_official_tree
from xstilts.core.tasks import get_task
from xstilts.jobs.tasks.sources import load_split


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> OfficialTree:
    return write_official_tree(tmp_path_factory.mktemp("download"))


def _bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_same_seed_same_bytes_and_the_seed_matters(tmp_path: Path) -> None:
    first = write_official_tree(tmp_path / "a", per_language=3, seed=7)
    second = write_official_tree(tmp_path / "b", per_language=3, seed=7)
    other = write_official_tree(tmp_path / "c", per_language=3, seed=8)
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    assert first.files == second.files == tuple(_bytes(tmp_path / "a"))
    assert _bytes(tmp_path / "a") != _bytes(tmp_path / "c")


def test_every_registered_split_of_every_target_is_in_the_tree(tree: OfficialTree) -> None:
    for name in TREE_TASKS:
        task = get_task(name)
        for split in task.splits:
            for lang in task.split_languages(split):
                expected = tree.expected[(name, split, lang)]
                assert all((tree.root / path).is_file() for path in expected.files), (name, split, lang)


# --------------------------------------------------------------------------------------
# the files' shape: facts of the official preprocessing that the loaders must survive


def _text(tree: OfficialTree, path: str) -> str:
    return (tree.root / path).read_bytes().decode("utf-8")


def test_tsv_files_are_written_by_csv_writer_with_crlf_and_test_rows_lose_the_label(tree: OfficialTree) -> None:
    for task in ("xnli", "pawsx"):
        train, test = _text(tree, f"{task}/train-en.tsv"), _text(tree, f"{task}/test-de.tsv")
        assert train.endswith("\r\n") and "\n" not in train.replace("\r\n", "")
        assert '"""' in train  # a sentence with quotes is quoted and its quotes doubled
        assert all(line.count("\t") == 2 for line in train.splitlines() if not line.startswith('"'))
        assert all(line.count("\t") == 1 for line in test.splitlines() if "\"" not in line)


def test_tagging_test_files_hold_tokens_alone(tree: OfficialTree) -> None:
    for path in ("panx/test-ar.tsv", "udpos/test-ar.tsv", "udpos/test-th.tsv"):
        text = _text(tree, path)
        assert "\t" not in text and text.endswith("\n") and not text.endswith("\n\n")
    assert not (tree.root / "udpos/train-th.tsv").exists()  # th_pud is test-only


def test_ud_fused_tokens_take_the_head_tag_and_spaces_leave_words(tree: OfficialTree) -> None:
    assert "zum\tADP\n" in _text(tree, "udpos/train-de.tsv")
    assert "\tDET" not in _text(tree, "udpos/train-de.tsv")
    assert "sinhviên\t" in _text(tree, "udpos/train-vi.tsv")
    assert "\u200c" not in _text(tree, "udpos/train-fa.tsv")


def test_qa_test_answers_are_blanked_one_question_per_paragraph(tree: OfficialTree) -> None:
    for path in ("xquad/xquad.th.json", "mlqa/MLQA_V1/test/test-context-zh-question-de.json",
                 "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.en.dev.json"):
        text = _text(tree, path)
        assert text.isascii()
        data = json.loads(text)
        assert all(len(doc["paragraphs"]) == 1 and "title" not in doc for doc in data["data"])
        assert {json.dumps(p["qas"][0]["answers"]) for doc in data["data"] for p in doc["paragraphs"]} == \
            {'[{"answer_start": 0, "text": ""}]'}
    assert json.loads(_text(tree, "xquad/xquad.ro.json"))["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["text"]
    assert tree.manual == ("xquad/xquad.ro.json",)


def test_retrieval_and_choice_gold_is_stripped_as_the_script_does(tree: OfficialTree) -> None:
    english = _text(tree, "tatoeba/th-en.en").splitlines()
    assert english == sorted(english)
    assert not list(tree.root.glob("bucc2018/*test.gold")) and (tree.root / "bucc2018/de-en.dev.gold").is_file()
    assert {json.loads(line)["label"] for line in _text(tree, "xcopa/test-th.jsonl").splitlines()} == {0}
    assert "label" in json.loads(_text(tree, "xcopa/test-en.jsonl").splitlines()[0])  # COPA test gains one
    assert set(sum(json.loads(_text(tree, "mewslix/wikinews_labels/test-ar.json")).values(), [])) == {""}
    assert "" not in set(sum(json.loads(_text(tree, "mewslix/wikinews_labels/dev-ar.json")).values(), []))
    assert not (tree.root / "mewslix/wikinews_mentions-test.jsonl").exists()


# --------------------------------------------------------------------------------------
# the loaders on it: one case per (task, split), every language of the split


def _cases() -> list[tuple[str, str]]:
    return [(name, split) for name in TREE_TASKS for split in get_task(name).splits]


@pytest.mark.parametrize(("task", "split"), _cases(), ids=[f"{t}-{s}" for t, s in _cases()])
def test_load_split_on_the_official_tree(tree: OfficialTree, task: str, split: str) -> None:
    """Counts, unique ids and withheld gold per language, as the official layout implies
    (the reason per task is `Expected.why`, written next to each rule in
    official_tree._expect)."""
    wrong = []
    for lang in get_task(task).split_languages(split):
        expected = tree.expected[(task, split, lang)]
        loaded = load_split(task, split, lang, data_dir=tree.root)
        if expected.examples is not None and len(loaded.examples) != expected.examples:
            wrong.append(f"{lang}: {len(loaded.examples)} examples, official {expected.examples}")
        ids = [example["id"] for example in loaded.examples]
        if len(set(ids)) != len(ids):  # TyDiQA's per-language train files cut ids to '<n>'
            wrong.append(f"{lang}: {len(ids) - len(set(ids))} duplicate example ids")
        if loaded.gold_withheld != expected.gold_withheld:
            wrong.append(f"{lang}: gold_withheld={loaded.gold_withheld}, official {expected.gold_withheld} "
                         f"({expected.why})")
    assert not wrong, "\n".join(wrong)


def test_tydiqa_english_dev_is_a_holdout_of_english_train(tree: OfficialTree) -> None:
    """The official script blanks every TyDiQA dev file, English included, so model
    selection needs English examples with gold: a holdout of the English training file,
    disjoint from what is trained on, together exactly that file."""
    train = load_split("tydiqa", "train", "en", data_dir=tree.root)
    dev = load_split("tydiqa", "dev", "en", data_dir=tree.root)
    assert not dev.gold_withheld and not train.gold_withheld
    assert dev.examples and train.examples
    key = [(e["context"], e["question"]) for e in train.examples + dev.examples]
    assert len(key) == len(set(key)) == tree.holdout_pool["tydiqa"]
