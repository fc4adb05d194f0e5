"""Loading every registered task: local fixtures, hub-shaped rows, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from xstilts.jobs.tasks import sources
from xstilts.core.tasks import TASKS, get_task
from xstilts.jobs.tasks.sources import COPA_QUESTIONS, hf_rows_to_examples, load_examples
from tests.support.task_fixtures import FIXTURE_TASKS, write_fixture

LOCAL_ONLY = ("ccg", "mewslix")


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("xtreme")
    started = time.perf_counter()
    for name in FIXTURE_TASKS:
        write_fixture(name, root)
    assert time.perf_counter() - started < 2.0
    return root


# --------------------------------------------------------------------------------------
# the canonical schema


def _check_ids(examples: list[dict]) -> None:
    ids = [e["id"] for e in examples]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == len(ids)


def check_schema(task_name: str, split: str, examples: list[dict[str, Any]]) -> None:
    """Every example has its kind's canonical fields, labels from the task's label set."""
    task = get_task(task_name)
    assert examples, (task_name, split)
    _check_ids(examples)
    kind = task.kind
    if kind == "dual_encoder" and split != "test":
        for e in examples:
            assert set(e) == {"id", "query", "positive"} and e["query"] and e["positive"]
        return
    for e in examples:
        if kind == "classification":
            assert set(e) == ({"id", "text", "text_b", "label"} if task.is_pair else {"id", "text", "label"})
            assert e["label"] in task.labels
        elif kind == "tagging":
            assert set(e) == {"id", "tokens", "tags"} and len(e["tokens"]) == len(e["tags"]) > 0
            assert all(isinstance(t, str) and t for t in e["tokens"])
            assert not task.labels or set(e["tags"]) <= set(task.labels)
        elif kind == "multiple_choice":
            assert set(e) == {"id", "context", "question", "choices", "label"}
            assert isinstance(e["context"], str) and isinstance(e["question"], str)
            assert len(e["choices"]) >= 2 and 0 <= e["label"] < len(e["choices"])
            if task_name == "xcopa":
                assert e["question"] in COPA_QUESTIONS.values()
        elif kind == "span_qa":
            assert set(e) == {"id", "context", "question", "answers"}
            answers = e["answers"]
            assert len(answers["text"]) == len(answers["answer_start"])
            for text, start in zip(answers["text"], answers["answer_start"]):
                assert e["context"][start:start + len(text)] == text
    if kind in ("retrieval", "dual_encoder"):
        candidates = {e["id"] for e in examples if e["role"] == "candidate"}
        queries = [e for e in examples if e["role"] == "query"]
        assert queries and candidates
        for e in examples:
            assert {"id", "text", "role", "gold"} <= set(e) and e["text"]
            assert e["role"] in ("query", "candidate")
            if e["role"] == "candidate":
                assert e["gold"] == []
        for q in queries:
            assert set(q["gold"]) <= candidates
        assert any(q["gold"] for q in queries)


def test_every_real_task_has_a_fixture_writer() -> None:
    assert set(FIXTURE_TASKS) == {n for n, t in TASKS.items() if t.source.kind not in ("synthetic", "captions")}


@pytest.mark.parametrize("name", FIXTURE_TASKS)
def test_fixture_loads_for_every_split_and_language(fixture_root: Path, name: str) -> None:
    task = get_task(name)
    for split in task.splits:
        languages = sources.split_languages(name, split)
        assert languages
        for lang in languages:
            check_schema(name, split, load_examples(name, split, lang, data_dir=fixture_root))


def test_fixtures_are_deterministic(tmp_path: Path) -> None:
    first, second = write_fixture("xnli", tmp_path / "a"), write_fixture("xnli", tmp_path / "b")
    assert load_examples("xnli", "test", "sw", first) == load_examples("xnli", "test", "sw", second)


def test_local_official_layout_details(fixture_root: Path) -> None:
    bucc = load_examples("bucc2018", "dev", "de", fixture_root)
    assert bucc[0]["id"] == "de-000000001" and bucc[0]["gold"] == ["en-000000001"]
    assert next(e for e in bucc if e["id"] == "de-000000002")["gold"] == []  # not parallel
    lareqa = load_examples("lareqa", "test", "de", fixture_root)
    query = next(e for e in lareqa if e["role"] == "query")
    assert query["id"].endswith("_de") and len(query["gold"]) == len(get_task("lareqa").languages)
    assert {e["lang"] for e in lareqa if e["role"] == "candidate"} == set(get_task("lareqa").languages)
    mewslix = load_examples("mewslix", "test", "ja", fixture_root)
    assert all(q["id"].startswith("ja-") for q in mewslix if q["role"] == "query")
    assert {c["id"] for c in mewslix if c["role"] == "candidate"} >= {"Q100", "Q101"}
    squad_v2 = load_examples("squad_v2", "train", "en", fixture_root)
    assert any(e["answers"] == {"text": [], "answer_start": []} for e in squad_v2)
    tydiqa_dev = load_examples("tydiqa", "dev", "en", fixture_root)
    assert tydiqa_dev == load_examples("tydiqa", "test", "en", fixture_root)  # XTREME's recipe


def test_open_tag_sets_come_from_the_training_data(fixture_root: Path) -> None:
    tags = sources.tag_inventory("ccg", fixture_root)
    assert tags and set(tags) <= {"NP", "N/N", "(S\\NP)/NP", "S\\NP", "NP/N", "."}
    assert sources.tag_inventory("ccg", fixture_root, min_count=10_000) == ()


def test_local_layout_lists_official_then_generic_paths() -> None:
    layout = sources.local_layout("xnli")
    assert layout["test"] == ["xnli/test-{lang}.tsv", "xnli/test-{lang}.jsonl"]
    assert sources.local_layout("anli_plus")["train"] == ["anli_plus/train-{lang}.jsonl",
                                                          "anli_plus/train-{lang}.tsv"]
    assert sources.local_layout("tatoeba")["test"][:2] == [
        "tatoeba/tatoeba.{iso3}-eng.{iso3} + tatoeba/tatoeba.{iso3}-eng.eng",
        "tatoeba/tatoeba.{lang}-eng.{lang} + tatoeba/tatoeba.{lang}-eng.eng"]
    assert list(sources.local_layout("bucc2018")) == ["dev", "test"]


# --------------------------------------------------------------------------------------
# the official layout with its test gold stripped


def test_stripped_test_gold_loads_as_none(tmp_path: Path) -> None:
    (tmp_path / "xnli").mkdir()
    (tmp_path / "xnli/test-de.tsv").write_text("Ein Satz.\tNoch einer.\n")
    assert load_examples("xnli", "test", "de", tmp_path) == [
        {"id": "test-de-0", "text": "Ein Satz.", "text_b": "Noch einer.", "label": None}]
    (tmp_path / "panx").mkdir()
    (tmp_path / "panx/test-de.tsv").write_text("Berlin\nist\n\nja\n")
    assert [e["tags"] for e in load_examples("panx", "test", "de", tmp_path)] == [None, None]
    (tmp_path / "xquad").mkdir()
    blank = {"data": [{"paragraphs": [{"context": "abc", "qas": [
        {"id": "q1", "question": "?", "answers": [{"answer_start": 0, "text": ""}]}]}]}], "version": "1.1"}
    (tmp_path / "xquad/xquad.de.json").write_text(json.dumps(blank))
    assert load_examples("xquad", "test", "de", tmp_path)[0]["answers"] is None
    write_fixture("bucc2018", tmp_path)
    (tmp_path / "bucc2018/fr-en.test.gold").unlink()
    rows = load_examples("bucc2018", "test", "fr", tmp_path)
    assert all(r["gold"] is None for r in rows if r["role"] == "query")
    (tmp_path / "tatoeba").mkdir()
    (tmp_path / "tatoeba/de-en.de").write_text("Hallo.\nJa.\n")
    (tmp_path / "tatoeba/de-en.en").write_text("Hello.\nYes.\n")  # XTREME sorts this side
    rows = load_examples("tatoeba", "test", "de", tmp_path)
    assert [r["gold"] for r in rows if r["role"] == "query"] == [None, None]


# --------------------------------------------------------------------------------------
# hub-shaped rows


def _squad_row(id_: str, context: str, answer: str, question: str = "What?") -> dict:
    return {"id": id_, "title": "T", "context": context, "question": question,
            "answers": {"text": [answer], "answer_start": [context.index(answer)]}}


HUB_CASES: dict[str, tuple[str, str, list[dict], list[dict]]] = {
    "xnli": ("test", "de", [
        {"premise": "P.", "hypothesis": "H.", "label": 2},
        {"premise": "P2.", "hypothesis": "H2.", "label": "neutral"},  # decoded ClassLabel
    ], [
        {"id": "test-de-0", "text": "P.", "text_b": "H.", "label": "contradiction"},
        {"id": "test-de-1", "text": "P2.", "text_b": "H2.", "label": "neutral"},
    ]),
    "pawsx": ("train", "en", [{"id": 17, "sentence1": "A.", "sentence2": "B.", "label": 1}],
              [{"id": "17", "text": "A.", "text_b": "B.", "label": "paraphrase"}]),
    "xcopa": ("test", "sw", [
        {"premise": "Kitu.", "choice1": "a", "choice2": "b", "question": "effect", "label": 1, "idx": 3,
         "changed": False}],
        [{"id": "3", "context": "Kitu.", "question": "What was the effect?", "choices": ["a", "b"], "label": 1}]),
    "udpos": ("train", "en", [
        {"idx": "en_ewt-1", "text": "Ann runs fast .", "tokens": ["Ann", "runs", "fast", "."],
         "lemmas": ["Ann", "run", "fast", "."], "upos": [10, 16, 14, 1], "xpos": [None] * 4,
         "feats": [None] * 4, "head": ["2", "0", "2", "2"], "deprel": ["nsubj", "root", "advmod", "punct"],
         "deps": [None] * 4, "misc": [None] * 4},
        {"idx": "en_esl-1", "text": "", "tokens": ["_", "_", "_"], "upos": [0, 16, 1]},  # withheld words
    ], [{"id": "en_ewt-1", "tokens": ["Ann", "runs", "fast", "."], "tags": ["PROPN", "VERB", "ADV", "PUNCT"]}]),
    "panx": ("test", "de", [{"tokens": ["Die", "Deutsche", "Bahn"], "ner_tags": [0, 3, 4], "langs": ["de"] * 3,
                             "spans": ["ORG: Deutsche Bahn"]}],
             [{"id": "test-de-0", "tokens": ["Die", "Deutsche", "Bahn"], "tags": ["O", "B-ORG", "I-ORG"]}]),
    "xquad": ("test", "ro", [_squad_row("56be", "Un text scurt aici.", "scurt")],
              [{"id": "56be", "context": "Un text scurt aici.", "question": "What?",
                "answers": {"text": ["scurt"], "answer_start": [8]}}]),
    "mlqa": ("test", "vi", [_squad_row("a1", "Xin chao ban.", "chao")],
             [{"id": "a1", "context": "Xin chao ban.", "question": "What?",
               "answers": {"text": ["chao"], "answer_start": [4]}}]),
    "tydiqa": ("test", "sw", [_squad_row("swahili-1-0", "Habari ya leo.", "leo"),
                              _squad_row("english-2-0", "Hello there.", "there")],
               [{"id": "swahili-1-0", "context": "Habari ya leo.", "question": "What?",
                 "answers": {"text": ["leo"], "answer_start": [10]}}]),
    "lareqa": ("train", "en", [
        _squad_row("s1", "Paris is big. The Seine flows through it. It rains.", "Seine"),
        {"id": "s2", "context": "x", "question": "?", "answers": {"text": [], "answer_start": []}},
    ], [{"id": "s1", "query": "What?", "positive": "The Seine flows through it."}]),
    "tatoeba": ("test", "ar", [
        {"source_sentence": "marhaba\n", "target_sentence": "hello\n", "source_lang": "ara", "target_lang": "eng"},
        {"source_sentence": "shukran", "target_sentence": "thanks", "source_lang": "ara", "target_lang": "eng"},
    ], [
        {"id": "ar-0", "text": "marhaba", "role": "query", "gold": ["en-0"]},
        {"id": "ar-1", "text": "shukran", "role": "query", "gold": ["en-1"]},
        {"id": "en-0", "text": "hello", "role": "candidate", "gold": []},
        {"id": "en-1", "text": "thanks", "role": "candidate", "gold": []},
    ]),
    "bucc2018": ("dev", "fr", [
        {"source_sentence": "Bonjour.", "target_sentence": "Hello.", "source_lang": "fr", "target_lang": "en"}],
        [{"id": "fr-000000000", "text": "Bonjour.", "role": "query", "gold": ["en-000000000"]},
         {"id": "en-000000000", "text": "Hello.", "role": "candidate", "gold": []}]),
    "anli_plus": ("train", "en", [{"premise": "P.", "hypothesis": "H.", "label": -1}], []),  # SNLI no-gold row
    "mnli": ("dev", "en", [{"premise": "P.", "hypothesis": "H.", "label": 1, "idx": 7}],
             [{"id": "7", "text": "P.", "text_b": "H.", "label": "neutral"}]),
    "qqp": ("train", "en", [{"question1": "Why?", "question2": "How?", "label": 1, "idx": 3}],
            [{"id": "3", "text": "Why?", "text_b": "How?", "label": "duplicate"}]),
    "sst2": ("train", "en", [{"sentence": "dull .", "label": 0, "idx": 0}],
             [{"id": "0", "text": "dull .", "label": "negative"}]),
    "paws": ("test", "en", [{"id": 4, "sentence1": "A.", "sentence2": "B.", "label": 0}],
             [{"id": "4", "text": "A.", "text_b": "B.", "label": "different"}]),
    "squad": ("train", "en", [_squad_row("5733", "Notre Dame is in Indiana.", "Indiana")],
              [{"id": "5733", "context": "Notre Dame is in Indiana.", "question": "What?",
                "answers": {"text": ["Indiana"], "answer_start": [17]}}]),
    "squad_v2": ("dev", "en", [{"id": "u1", "title": "T", "context": "C.", "question": "Q?",
                                "answers": {"text": [], "answer_start": []}}],
                 [{"id": "u1", "context": "C.", "question": "Q?", "answers": {"text": [], "answer_start": []}}]),
    "hellaswag": ("train", "en", [
        {"ind": 4, "activity_label": "Removing ice", "ctx_a": "A man scrapes a car.", "ctx_b": "then he",
         "ctx": "A man scrapes a car. then he", "endings": ["a", "b", "c", "d"], "source_id": "x",
         "split": "train", "split_type": "indomain", "label": "3"}],
        [{"id": "4", "context": "A man scrapes a car.", "question": "then he", "choices": ["a", "b", "c", "d"],
          "label": 3}]),
    "commonsenseqa": ("train", "en", [
        {"id": "075e", "question": "Where?", "question_concept": "c",
         "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["a", "b", "c", "d", "e"]}, "answerKey": "C"}],
        [{"id": "075e", "context": "", "question": "Where?", "choices": ["a", "b", "c", "d", "e"], "label": 2}]),
    "cosmosqa": ("dev", "en", [
        {"id": "3Q9", "context": "Ctx.", "question": "Why?", "answer0": "a", "answer1": "b", "answer2": "c",
         "answer3": "d", "label": 3}],
        [{"id": "3Q9", "context": "Ctx.", "question": "Why?", "choices": ["a", "b", "c", "d"], "label": 3}]),
    "socialiqa": ("train", "en", [
        {"context": "Tracy went home.", "question": "Why?", "answerA": "a", "answerB": "b", "answerC": "c",
         "label": "2"}],
        [{"id": "train-en-0", "context": "Tracy went home.", "question": "Why?", "choices": ["a", "b", "c"],
          "label": 1}]),
}


@pytest.mark.parametrize("name", sorted(HUB_CASES))
def test_hub_rows_convert_to_canonical_examples(name: str) -> None:
    split, lang, rows, expected = HUB_CASES[name]
    assert hf_rows_to_examples(name, split, lang, rows) == expected


def test_every_hub_task_has_a_converter_case() -> None:
    assert set(HUB_CASES) | set(LOCAL_ONLY) == set(FIXTURE_TASKS)


def test_concatenated_sources_keep_ids_unique() -> None:
    anli_r1 = get_task("anli_plus").sources_for("train", "en")[2]
    row = {"uid": "abc", "premise": "P.", "hypothesis": "H.", "label": 0, "reason": ""}
    assert hf_rows_to_examples("anli_plus", "train", "en", [row], source=anli_r1) == [
        {"id": "anli-r1-abc", "text": "P.", "text_b": "H.", "label": "entailment"}]


def test_xcopa_training_rows_come_from_super_glue_copa() -> None:
    copa = get_task("xcopa").sources_for("train", "en")[0]
    row = {"premise": "The man fell.", "choice1": "a", "choice2": "b", "question": "cause", "idx": 0, "label": 0}
    assert hf_rows_to_examples("xcopa", "train", "en", [row], source=copa)[0]["question"] == "What was the cause?"


def test_tatoeba_rows_of_mteb_copy() -> None:
    rows = [{"sentence1": "Tak.", "sentence2": "Yes."}]
    mteb = get_task("tatoeba").sources_for("test", "pl")[0]
    assert hf_rows_to_examples("tatoeba", "test", "pl", rows, source=mteb)[0] == {
        "id": "pl-0", "text": "Tak.", "role": "query", "gold": ["en-0"]}


def test_lareqa_hub_rows_pool_every_language() -> None:
    rows = []
    for lang, word in (("en", "red"), ("de", "rot")):
        context = f"The sky. It is {word}."  # rows carry the official breaks: without them LAReQA refuses
        rows.append({**_squad_row("q1", context, word, f"Colour {lang}?"), "_lang": lang,
                     "sentence_breaks": [[0, 8], [9, len(context)]]})
    examples = hf_rows_to_examples("lareqa", "test", "de", rows)
    queries = [e for e in examples if e["role"] == "query"]
    assert queries == [{"id": "q1_de", "text": "Colour de?", "role": "query", "gold": ["de_1_1", "en_1_1"],
                        "lang": "de"}]
    assert [e["id"] for e in examples if e["role"] == "candidate"] == ["en_1_0", "en_1_1", "de_1_0", "de_1_1"]


def test_hub_loading_decodes_classlabels_and_skips_missing_treebank_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path end to end, with `datasets.load_dataset` answered in memory."""
    import datasets

    calls = []

    def fake_load_dataset(name: str, config: str | None = None, split: str | None = None, revision: str | None = None):
        calls.append((name, config, split, revision))
        if config == "en_pud" and split == "train":
            raise ValueError('Unknown split "train". Should be one of [\'test\'].')
        string = datasets.Value("string")
        if name == "facebook/xnli":
            nli = datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])
            features = datasets.Features({"premise": string, "hypothesis": string, "label": nli})
            return datasets.Dataset.from_dict({"premise": ["P"], "hypothesis": ["H"], "label": [1]}, features=features)
        upos = datasets.Sequence(datasets.ClassLabel(names=["PUNCT", "NOUN"]))  # not the recorded order
        features = datasets.Features({"idx": string, "tokens": datasets.Sequence(string), "upos": upos})
        return datasets.Dataset.from_dict({"idx": [config], "tokens": [["dog", "."]], "upos": [[1, 0]]},
                                          features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_examples("xnli", "test", "fr") == [{"id": "test-fr-0", "text": "P", "text_b": "H", "label": "neutral"}]
    assert calls[-1] == ("facebook/xnli", "fr", "test", None)
    udpos = load_examples("udpos", "train", "en")
    assert {e["id"] for e in udpos} == set(get_task("udpos").source.configs_for("en")) - {"en_pud"}
    assert all(e["tags"] == ["NOUN", "PUNCT"] for e in udpos)
    assert all(call[3] == "refs/convert/parquet" for call in calls if call[0].startswith("universal"))


# --------------------------------------------------------------------------------------
# errors


def test_missing_local_file_names_the_expected_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        load_examples("xnli", "test", "de", data_dir=tmp_path)
    message = str(error.value)
    assert "'xnli'" in message and str(tmp_path / "xnli/test-de.tsv") in message
    with pytest.raises(FileNotFoundError, match=r"tatoeba\.deu-eng\.deu"):
        load_examples("tatoeba", "test", "de", data_dir=tmp_path)


def test_unknown_task_split_or_language_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown task 'xnlii'; valid tasks: .*xnli"):
        load_examples("xnlii", "test", "de")
    with pytest.raises(ValueError, match="no split 'train'.*valid splits: test"):
        load_examples("tatoeba", "train", "en")
    with pytest.raises(ValueError, match="no split 'validation'.*valid splits: train, dev, test"):
        load_examples("xnli", "validation", "en")
    with pytest.raises(ValueError, match="no test data in language 'xx'; valid: ar, bg"):
        load_examples("xnli", "test", "xx")
    with pytest.raises(ValueError, match="no dev data in language 'de'; valid: en"):
        load_examples("xnli", "dev", "de")


def test_local_only_tasks_refuse_the_hub() -> None:
    with pytest.raises(ValueError, match="not on the Hugging Face hub; pass data_dir.*mewslix/wikipedia_pairs-train"):
        load_examples("mewslix", "train", "en")
    with pytest.raises(ValueError, match="no hub copy"):
        hf_rows_to_examples("mewslix", "train", "en", [])


def test_offline_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(Exception) as error:
        load_examples("xnli", "test", "sw")
    assert time.perf_counter() - started < 20
    assert "facebook/xnli" in str(error.value) + "".join(getattr(error.value, "__notes__", []))


# --------------------------------------------------------------------------------------
# synthetic tasks


def test_synthetic_tasks_keep_the_generator_output_with_ids() -> None:
    from xstilts.jobs import synthetic

    generated = synthetic.generate("syn-sent")["test"]["qaa"]
    loaded = load_examples("syn-sent", "test", "qaa")
    assert [{k: v for k, v in e.items() if k != "id"} for e in loaded] == generated
    _check_ids(loaded)
    loaded[0]["text"] = "changed"
    assert load_examples("syn-sent", "test", "qaa")[0]["text"] != "changed"
    assert sources.split_languages("syn-pos", "test") == ("en", "qaa", "qab", "qac")
    assert sources.task_splits("syn-rate") == ("train", "dev", "test")
