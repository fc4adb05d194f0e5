"""The stage functions, run directly on a tiny XLM-R and the synthetic tasks.

One tiny encoder (hidden 32, 2 layers, a few MLM steps) and the prepared data are built
once per module; the tests then train for a few dozen steps. They check what the rest of
the system relies on: files load with stock transformers/datasets, heads are fresh,
results have their documented shape, and the same seed gives the same numbers.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any
# tests.support.stages sets the environment (offline hub, threads) before these imports
from tests.support.stages import (
    HPARAMS, TINY_MODEL, data_nodes, intermediate_node, make_ctx, model_node, node_record, run_train, workdir,
)

import pytest
import torch

from xstilts.jobs import data as jdata
from xstilts.jobs import synthetic
from xstilts.core.allocation import local_world_size
from xstilts.jobs.device import cpu_threads, fixed_threads, select_device
from xstilts.jobs.modeling import build_task_model, read_checkpoint
from xstilts.jobs.stages import evaluate, prepare_data, prepare_model, train
from xstilts.core.spec import Hyperparameters
from xstilts.core.tasks import get_task
from xstilts.jobs.heads import head_for
from xstilts.jobs.trainer import linear_schedule


def test_prepare_model_writes_a_loadable_encoder(model_node: tuple[Path, dict[str, Any]]) -> None:
    from transformers import AutoModel, AutoTokenizer, XLMRobertaModel

    out, result = model_node
    model_dir = out / "model"
    assert (model_dir / "model.safetensors").is_file()
    model = AutoModel.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert isinstance(model, XLMRobertaModel)
    assert model.config.vocab_size == len(tokenizer) == result["vocab_size"]
    assert result["parameters"] == sum(p.numel() for p in model.parameters())
    assert torch.isfinite(torch.tensor(result["pretrain_loss"]))
    # XLM-R conventions: <s>=0, <pad>=1, </s>=2, <unk>=3, pairs as <s> A </s></s> B </s>
    assert (tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id) == (0, 1, 2, 3)
    pair = tokenizer("fu mi", "be")["input_ids"]
    assert pair[0] == 0 and pair[-1] == 2 and pair.count(2) == 3
    # the tokenizer covers every language of the corpus without unknown pieces
    for sentence in synthetic.corpus(["qac"], 5, seed=7):
        assert tokenizer.unk_token_id not in tokenizer(sentence)["input_ids"]


def test_pretraining_changes_the_encoder(workdir: Path, model_node: tuple[Path, dict[str, Any]]) -> None:
    untrained = workdir / "prepare-model-no-mlm"
    config = {"model": {**TINY_MODEL, "pretrain_steps": 0}, "seed": 0}
    result = prepare_model.run(make_ctx(untrained, "prepare", config, kind="model"))
    assert "pretrain_loss" not in result
    before = read_checkpoint(untrained / "model")
    after = read_checkpoint(model_node[0] / "model")
    assert before.keys() == after.keys()
    name = "embeddings.word_embeddings.weight"
    assert not torch.equal(before[name], after[name])


def test_prepare_model_from_a_local_name(workdir: Path, model_node: tuple[Path, dict[str, Any]]) -> None:
    """The `name` path (hub name or directory) re-saves the given checkpoint unchanged."""
    source = model_node[0] / "model"
    out = workdir / "prepare-model-named"
    config = {"model": {"name": str(source), "tiny": None}, "seed": 0}
    result = prepare_model.run(make_ctx(out, "prepare", config, kind="model"))
    assert result["vocab_size"] == model_node[1]["vocab_size"]
    copied, original = read_checkpoint(out / "model"), read_checkpoint(source)
    assert copied.keys() == original.keys()
    assert all(torch.equal(copied[k], original[k]) for k in original)


def test_prepare_model_needs_a_source(workdir: Path) -> None:
    config = {"model": {**TINY_MODEL, "tiny": None}, "seed": 0}
    with pytest.raises(ValueError, match="exactly one of 'name'"):
        prepare_model.run(make_ctx(workdir / "bad", "prepare", config, kind="model"))


# ------------------------------------------------------------------ prepare data


def test_prepare_data_counts_and_languages(data_nodes: Any) -> None:
    _, sent = data_nodes["syn-sent"]
    generated = synthetic.generate("syn-sent")
    assert sent["counts"] == {
        split: {lang: len(rows) for lang, rows in by_lang.items()} for split, by_lang in generated.items()
    }
    assert set(sent["counts"]["test"]) == {"en", "qaa", "qab", "qac"}
    assert set(sent["counts"]["train"]) == {"en"}
    _, rate = data_nodes["syn-rate"]
    assert set(rate["counts"]) == {"train", "dev", "test"} and set(rate["counts"]["test"]) == {"en"}
    meta = jdata.read_meta(data_nodes["syn-sent"][0] / "data")
    assert meta["labels"] == ["negative", "positive"] and meta["max_seq_length"] == 128


def test_tagging_labels_sit_on_first_subwords(model_node: Any, data_nodes: Any) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_node[0] / "model")
    task = get_task("syn-pos")
    example = synthetic.generate("syn-pos")["test"]["qac"][3]
    stored = jdata.load_split(data_nodes["syn-pos"][0] / "data", "test", "qac")[3]
    encoded = tokenizer(example["tokens"], is_split_into_words=True)
    assert stored["input_ids"] == encoded["input_ids"]
    expected, previous = [], None
    for word in encoded.word_ids():
        first = word is not None and word != previous
        expected.append(task.labels.index(example["tags"][word]) if first else jdata.IGNORE_INDEX)
        previous = word
    assert stored["labels"] == expected
    assert sum(label != jdata.IGNORE_INDEX for label in stored["labels"]) == len(example["tokens"])
    assert any(len(tokenizer.tokenize(w)) > 1 for w in example["tokens"]), "want a multi-piece word in the test"


def test_prepare_data_rejects_too_long_sequences(workdir: Path, model_node: Any) -> None:
    ctx = make_ctx(workdir / "data-too-long", "prepare", {"task": "syn-sent", "max_seq_length": 512},
                   {"model": model_node[0]}, kind="data")
    with pytest.raises(ValueError, match="max_seq_length 512"):
        prepare_data.run(ctx)


# ------------------------------------------------------------------ train


def test_train_intermediate_result_and_outputs(intermediate_node: tuple[Path, dict[str, Any]]) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, result = intermediate_node
    assert result["steps"] == HPARAMS["max_steps"]
    assert 0 < result["best_step"] <= result["steps"]
    assert set(result["dev"]) == {"accuracy"} and 0.0 <= result["dev"]["accuracy"] <= 100.0
    assert result["train_seconds"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.num_labels == 3 and model.config.id2label[2] == "positive"
    AutoTokenizer.from_pretrained(out / "model")
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["event"] == "eval"]
    trains = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in evals] == [5, 10, 12]
    assert [e["step"] for e in trains] == [5, 10]
    assert all({"loss", "lr", "examples_per_s"} <= e.keys() for e in trains)
    assert max(e["accuracy"] for e in evals) == result["dev"]["accuracy"]


def test_target_head_is_fresh(workdir: Path, model_node: Any, data_nodes: Any,
                              intermediate_node: tuple[Path, dict[str, Any]]) -> None:
    """A target on an intermediate checkpoint gets the intermediate encoder and a new head,
    also when the label counts differ (3 -> 2) and when they match (3 -> 3)."""
    inter_dir = intermediate_node[0] / "model"
    inter_weights = read_checkpoint(inter_dir)

    target = build_task_model(inter_dir, get_task("syn-sent"), seed=5)
    assert target.config.num_labels == 2
    for name, tensor in target.roberta.state_dict().items():
        assert torch.equal(tensor, inter_weights[f"roberta.{name}"]), name

    same_size = build_task_model(inter_dir, get_task("syn-rate"), seed=5)
    from_pretrained = build_task_model(model_node[0] / "model", get_task("syn-rate"), seed=5)
    for name, tensor in same_size.classifier.state_dict().items():
        assert not torch.equal(tensor, inter_weights[f"classifier.{name}"]), name
        assert torch.equal(tensor, from_pretrained.classifier.state_dict()[name]), name

    out = workdir / "target-from-inter"
    result = run_train(out, "train-target", "syn-sent", 0, intermediate_node[0], data_nodes["syn-sent"][0])
    assert result["intermediate"] == "test" and set(result["dev"]) == {"accuracy"}


def test_tagging_intermediate_into_tagging_target(workdir: Path, model_node: Any, data_nodes: Any) -> None:
    from transformers import AutoModelForTokenClassification

    inter = workdir / "inter-syn-chunk"
    inter_result = run_train(inter, "train-intermediate", "syn-chunk", 1, model_node[0], data_nodes["syn-chunk"][0])
    assert set(inter_result["dev"]) == {"f1", "seqeval_f1", "precision", "recall"}
    target = workdir / "target-chunk-pos"
    result = run_train(target, "train-target", "syn-pos", 1, inter, data_nodes["syn-pos"][0])
    model = AutoModelForTokenClassification.from_pretrained(target / "model")
    assert model.config.num_labels == len(get_task("syn-pos").labels)
    assert 0.0 <= result["dev"]["seqeval_f1"] <= 100.0


def test_same_seed_same_result(workdir: Path, model_node: Any, data_nodes: Any) -> None:
    runs = [
        run_train(workdir / f"determinism-{i}", "train-target", "syn-pos", seed, model_node[0],
                  data_nodes["syn-pos"][0])
        for i, seed in enumerate((3, 3, 4))
    ]
    assert runs[0]["dev"] == runs[1]["dev"]
    weights = [read_checkpoint(workdir / f"determinism-{i}" / "model") for i in range(3)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_early_stopping(workdir: Path, model_node: Any, data_nodes: Any) -> None:
    """With a learning rate too small to change predictions, the dev metric never
    improves after the first evaluation; patience 2 stops at the third."""
    hparams = {**HPARAMS, "learning_rate": 1e-12, "max_steps": 100, "patience": 2}
    result = run_train(workdir / "early", "train-intermediate", "syn-rate", 0, model_node[0],
                       data_nodes["syn-rate"][0], hparams)
    assert result["stopped_early"] is True
    assert result["steps"] == 3 * HPARAMS["eval_interval"]
    assert result["best_step"] == HPARAMS["eval_interval"]


def test_epochs_define_the_steps(workdir: Path, model_node: Any, data_nodes: Any) -> None:
    hparams = {**HPARAMS, "max_steps": None, "epochs": 0.5, "batch_size": 32, "grad_accum_steps": 1,
               "eval_interval": 100}
    result = run_train(workdir / "epochs", "train-target", "syn-sent", 0, model_node[0],
                       data_nodes["syn-sent"][0], hparams)
    assert result["steps"] == 5  # 300 examples -> 9 full batches of 32 -> 0.5 epoch = 5 steps


def test_trainer_state_resumes_exactly(workdir: Path, model_node: Any, data_nodes: Any) -> None:
    """Stopping after 3 steps and continuing from `state_dict()` in a new Trainer gives the
    same weights as an uninterrupted run: the loop keeps no state outside that dict."""
    from transformers import AutoTokenizer

    from xstilts.jobs.trainer import Trainer, TrainConfig

    task = get_task("syn-sent")
    encoder = model_node[0] / "model"
    pad = AutoTokenizer.from_pretrained(encoder).pad_token_id
    data_dir = data_nodes["syn-sent"][0] / "data"
    train_data = jdata.TokenizedData.from_dataset(jdata.load_split(data_dir, "train", "en"), pad)
    dev_data = jdata.TokenizedData.from_dataset(jdata.load_split(data_dir, "dev", "en"), pad)
    hparams = Hyperparameters.model_validate({**HPARAMS, "max_steps": 8, "eval_interval": 4})
    config = TrainConfig.from_hparams(hparams, len(train_data), seed=2)
    device = select_device()

    def trainer(name: str) -> Trainer:
        model = build_task_model(encoder, task, seed=2)
        return Trainer(model, task, train_data, dev_data, config, device, workdir / f"{name}.jsonl",
                       logging.getLogger("test"), dev_examples=jdata.load_split_examples(data_dir, "dev", "en"))

    straight = trainer("straight")
    straight.fit()
    first = trainer("first")
    for _ in range(3):
        first.step()
    saved = first.state_dict()
    del first
    resumed = trainer("resumed")
    resumed.load_state_dict(saved)
    state = resumed.fit()
    assert state.step == 8 and state.dev_history == straight.state.dev_history
    expected = straight.model.state_dict()
    assert all(torch.equal(t, expected[k]) for k, t in resumed.model.state_dict().items())


# ------------------------------------------------------------------ evaluate


def test_evaluate_every_language(workdir: Path, model_node: Any, data_nodes: Any) -> None:
    trained = workdir / "eval-target"
    run_train(trained, "train-target", "syn-pos", 0, model_node[0], data_nodes["syn-pos"][0])
    out = workdir / "eval"
    result = evaluate.run(make_ctx(out, "evaluate", {"task": "syn-pos", "seed": 0, "intermediate": "test"},
                                   {"model": trained, "data": data_nodes["syn-pos"][0]}, task="syn-pos", seed=0))
    assert result["task"] == "syn-pos" and result["metric"] == "seqeval_f1"
    assert list(result["languages"]) == ["en", "qaa", "qab", "qac"]
    scores = [result["languages"][lang]["seqeval_f1"] for lang in result["languages"]]
    assert result["average"] == pytest.approx(sum(scores) / 4)
    # official layout: one tag per line, a blank line after each sentence
    sentences = (out / "predictions" / "syn-pos" / "test-qab.tsv").read_text().strip("\n").split("\n\n")
    generated = synthetic.generate("syn-pos")["test"]["qab"]
    assert len(sentences) == len(generated)
    assert len(sentences[0].split("\n")) == len(generated[0]["tokens"])


def test_predict_returns_word_level_gold(model_node: Any, data_nodes: Any) -> None:
    """Tagging predictions are per word (first sub-word), so seqeval sees the dataset's tags."""
    from transformers import AutoTokenizer

    task = get_task("syn-pos")
    tokenizer = AutoTokenizer.from_pretrained(model_node[0] / "model")
    model = build_task_model(model_node[0] / "model", task, seed=0)
    split = jdata.load_split(data_nodes["syn-pos"][0] / "data", "test", "qac")
    examples = jdata.load_split_examples(data_nodes["syn-pos"][0] / "data", "test", "qac")
    data = jdata.TokenizedData.from_dataset(split, tokenizer.pad_token_id)
    head = head_for(task)
    predicted = head.predict(model, data, examples, select_device(), batch_size=64)
    gold = head.references(examples)
    assert gold == [e["tags"] for e in synthetic.generate("syn-pos")["test"]["qac"]]
    assert [len(p) for p in predicted] == [len(g) for g in gold]


# ------------------------------------------------------------------ tagging labels


def test_unknown_tags_get_no_label(model_node: Any) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_node[0] / "model")
    columns = head_for(get_task("udpos")).encode([{"tokens": ["fu", "mi"], "tags": ["NOUN", "_"]}], tokenizer, 64, "test")
    labelled = [label for label in columns["labels"][0] if label != jdata.IGNORE_INDEX]
    assert labelled == [get_task("udpos").labels.index("NOUN")] and columns["n_words"] == [2]


# ------------------------------------------------------------------ building blocks


def test_batches_are_deterministic_and_resumable() -> None:
    ids = [[0] + [5] * n + [2] for n in range(1, 41)]
    data = jdata.TokenizedData(ids, list(range(40)), pad_id=1)
    first = jdata.ShuffledBatches(data, 8, seed=1)
    seen = [first.next().labels.tolist() for _ in range(7)]  # crosses into epoch 2
    again = jdata.ShuffledBatches(data, 8, seed=1)
    assert [again.next().labels.tolist() for _ in range(7)] == seen
    assert sorted(x for batch in seen[:5] for x in batch) == list(range(40))  # one epoch = every example
    resumed = jdata.ShuffledBatches(data, 8, seed=1)
    resumed.load_state_dict(jdata.ShuffledBatches(data, 8, seed=1).state_dict())
    probe = jdata.ShuffledBatches(data, 8, seed=1)
    for _ in range(3):
        probe.next()
    resumed.load_state_dict(probe.state_dict())
    assert [resumed.next().labels.tolist() for _ in range(4)] == seen[3:]
    other = jdata.ShuffledBatches(data, 8, seed=2)
    assert [other.next().labels.tolist() for _ in range(5)] != seen[:5]


def test_batch_padding() -> None:
    data = jdata.TokenizedData([[0, 7, 2], [0, 7, 8, 9, 2]], [[-100, 3, -100], [-100, 1, 2, 0, -100]], pad_id=1)
    batch = data.batch([0, 1])
    assert batch.input_ids.tolist() == [[0, 7, 2, 1, 1], [0, 7, 8, 9, 2]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch.labels.tolist() == [[-100, 3, -100, -100, -100], [-100, 1, 2, 0, -100]]


def test_total_steps_and_schedule() -> None:
    assert jdata.total_steps(300, 32, 1, 10.0, None) == 90
    assert jdata.total_steps(300, 16, 2, 1.0, None) == 9
    assert jdata.total_steps(300, 32, 1, 10.0, 7) == 7
    factor = linear_schedule(warmup_steps=4, total=14)
    assert [round(factor(s), 2) for s in (0, 3, 4, 9, 14)] == [0.2, 0.8, 1.0, 0.5, 0.0]


def test_device_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2(x3)")
    assert local_world_size() == 2
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cpu_threads(world_size_on_node=1) == max(1, len(os.sched_getaffinity(0)))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert cpu_threads(world_size_on_node=1) == 1
    before = torch.get_num_threads()
    try:
        info = select_device(world_size_on_node=1)
        assert info.device.type in ("cpu", "cuda") and torch.get_num_threads() == info.num_threads
    finally:
        torch.set_num_threads(before)


def test_fixed_threads_pins_and_restores_the_thread_count() -> None:
    """prepare:model builds a tiny model on one thread whatever the process was given,
    and gives the process its own count back."""
    before = torch.get_num_threads()
    with fixed_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
