"""Stage `prepare` (kind `model`): the pretrained encoder every other node starts from.

Either a real checkpoint (`model.name`: a hub name or a local directory), copied into
the node folder so that compute nodes never need the hub again, or - for the demo and
the tests - a tiny XLM-R built from an inline config. The tiny model gets its own
tokenizer (Unigram with a Metaspace pre-tokenizer, i.e. what XLM-R's SentencePiece
model is) trained on a multilingual synthetic corpus, and a short masked-LM pretraining
on that corpus. Without the pretraining a tiny encoder is random and nothing transfers
across languages; with it, like XLM-R, it has seen every language and can carry an
English-trained head over to the others.

Output: `<out_dir>/model/` with `config.json`, `model.safetensors` (an `XLMRobertaModel`
/ AutoModel encoder without task head) and the tokenizer files.

A tiny model's files depend only on the node's key: every random draw is seeded from
the config, the tokenizer trainer is deterministic (`xstilts.jobs.unigram`), and the
model is built on the CPU on one thread (`TINY_DEVICE`), whatever machine, thread
count or hash seed the process has.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from xstilts.core.nodes import PrepareModelConfig, TinyModel
from xstilts.jobs.data import IGNORE_INDEX, ShuffledBatches, TokenizedData
from xstilts.jobs.device import DeviceInfo, fixed_threads
from xstilts.jobs.modeling import MODEL_SUBDIR, count_parameters, quiet_progress_bars
from xstilts.jobs.stages.base import StageContext
from xstilts.jobs.trainer import adamw, linear_schedule

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
"""XLM-R's special tokens; the first four get XLM-R's ids 0-3."""

MLM_PROBABILITY = 0.15

TINY_DEVICE = DeviceInfo(torch.device("cpu"), autocast_dtype=None, num_threads=1)
"""Where a tiny model is built, on every machine. One thread because float sums split
over threads depend on their number (`fixed_threads`), and a process's thread count
comes from how many nodes share its machine, which is no part of the key; the CPU
because a GPU (bf16 autocast, atomic adds in the embedding gradient) gives other bits.
The demo's model (1500 steps) pretrains in about a minute and a half this way: a GPU
would save that once per grid, at the price of weights that depend on the machine."""


def run(ctx: StageContext[PrepareModelConfig]) -> dict[str, Any]:
    quiet_progress_bars()
    model = ctx.config.model
    out = ctx.out_dir / MODEL_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    tiny = model.tiny_model()
    if tiny is not None:
        with fixed_threads(TINY_DEVICE.num_threads):
            return _build_tiny(tiny, ctx.config.seed, out, ctx)
    assert model.name is not None  # validated: exactly one of name and tiny
    return _copy_pretrained(model.name, out, ctx)


def _copy_pretrained(name: str, out: Path, ctx: StageContext[PrepareModelConfig]) -> dict[str, Any]:
    """Fetch (or read a local copy of) a pretrained encoder and re-save it in safetensors."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModel.from_pretrained(name)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    ctx.log.info("saved %s (%d parameters) to %s", name, count_parameters(model), out)
    return {"source": name, "parameters": count_parameters(model), "vocab_size": len(tokenizer)}


def _build_tiny(tiny: TinyModel, seed: int, out: Path, ctx: StageContext[PrepareModelConfig]) -> dict[str, Any]:
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaModel

    from xstilts.jobs import synthetic

    started = time.perf_counter()
    sentences = synthetic.corpus(list(tiny.corpus_languages), tiny.corpus_sentences_per_language, seed=seed)
    tokenizer = train_tokenizer(sentences, tiny.tokenizer_vocab_size)
    tokenizer_seconds = time.perf_counter() - started

    kwargs: dict[str, Any] = dict(tiny.config)
    # The trained tokenizer decides the vocabulary (Unigram may stop short of the target
    # size on a small corpus); the embedding matrix must match it exactly.
    kwargs["vocab_size"] = len(tokenizer)
    config = XLMRobertaConfig(
        **kwargs,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    mlm = XLMRobertaForMaskedLM(config)
    result: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "corpus_sentences": len(sentences),
        "tokenizer_seconds": round(tokenizer_seconds, 3),
    }
    # XLM-R numbers positions from pad_token_id + 1: the longest input the encoder embeds
    max_length = config.max_position_embeddings - int(tokenizer.pad_token_id) - 1
    steps = tiny.pretrain_steps
    if steps > 0:
        encoded = tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"]
        # Token-level placeholder labels only reuse TokenizedData's padding; the MLM
        # labels are drawn per batch by mask_tokens.
        data = TokenizedData(encoded, [[0] * len(ids) for ids in encoded], tokenizer.pad_token_id)
        result.update(
            pretrain_mlm(
                mlm,
                data,
                tokenizer,
                steps=steps,
                learning_rate=tiny.pretrain_lr,
                batch_size=tiny.pretrain_batch_size,
                seed=seed,
                device=TINY_DEVICE,
                log=ctx.log,
            )
        )

    encoder = XLMRobertaModel(config)  # with a pooler, as XLM-R checkpoints have one
    missing, unexpected = encoder.load_state_dict(mlm.roberta.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise RuntimeError(f"encoder/MLM weight names differ: missing {missing}, unexpected {unexpected}")
    encoder.save_pretrained(out)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out)
    result["parameters"] = count_parameters(encoder)
    ctx.log.info("tiny encoder: %s", result)
    return result


def train_tokenizer(sentences: list[str], vocab_size: int) -> Any:
    """An XLM-R style tokenizer (Unigram + Metaspace, `<s> A </s></s> B </s>`) for `sentences`.

    Unigram rather than BPE because transformers' XLMRobertaTokenizer can only reload a
    Unigram model from `tokenizer.json`; it is also what XLM-R itself uses. Trained by
    `xstilts.jobs.unigram` rather than `tokenizers`' own trainer, whose vocabulary
    differs from process to process (see there): the same sentences give the same bytes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers.models.xlm_roberta import XLMRobertaTokenizer  # the tokenizers-backed (fast) one

    from xstilts.jobs.unigram import UnigramSettings, train_unigram

    pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    words = ((word, 1) for sentence in sentences for word, _ in pre_tokenizer.pre_tokenize_str(sentence))
    vocab = train_unigram(words, UnigramSettings(vocab_size=vocab_size, special_tokens=tuple(SPECIAL_TOKENS)))
    backend = Tokenizer(models.Unigram(vocab, unk_id=SPECIAL_TOKENS.index("<unk>"), byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.add_special_tokens(SPECIAL_TOKENS)
    bos, eos = backend.token_to_id("<s>"), backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return XLMRobertaTokenizer(tokenizer_object=backend)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tokenizer: Any,
    generator: torch.Generator,
    probability: float = MLM_PROBABILITY,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: `probability` of the real tokens are predicted; of those 80 % become
    <mask>, 10 % a random token, 10 % stay. Returns (corrupted ids, labels, -100 elsewhere)."""
    special = torch.tensor(
        [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id], dtype=torch.long
    )
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special)
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidates
    if not chosen.any():  # a batch without targets would give a NaN loss
        chosen = candidates & (candidates.cumsum(dim=1) == 1)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    roll = torch.rand(input_ids.shape, generator=generator)
    corrupted = input_ids.clone()
    corrupted[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    randomize = chosen & (roll >= 0.8) & (roll < 0.9)
    first_normal = len(SPECIAL_TOKENS)
    corrupted[randomize] = torch.randint(
        first_normal, len(tokenizer), (int(randomize.sum()),), generator=generator
    )
    return corrupted, labels


def pretrain_mlm(
    model: torch.nn.Module,
    data: TokenizedData,
    tokenizer: Any,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    device: DeviceInfo,
    log: Any,
    mlm_probability: float = MLM_PROBABILITY,
) -> dict[str, Any]:
    """Masked-LM pretraining on shuffled sentences of all languages mixed together."""
    model.to(device.device).train()
    optimizer = adamw(model, learning_rate, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(max(1, steps // 10), steps))
    generator = torch.Generator().manual_seed(seed)
    batches = ShuffledBatches(data, batch_size, seed)
    started = time.perf_counter()
    recent: list[float] = []
    for step in range(steps):
        batch = batches.next()
        inputs, labels = mask_tokens(batch.input_ids, batch.attention_mask, tokenizer, generator, mlm_probability)
        with device.autocast():
            loss = model(
                input_ids=inputs.to(device.device),
                attention_mask=batch.attention_mask.to(device.device),
                labels=labels.to(device.device),
            ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        recent = (recent + [float(loss.detach())])[-50:]
        if (step + 1) % max(1, steps // 5) == 0:
            log.info("mlm step %d/%d loss %.3f", step + 1, steps, sum(recent) / len(recent))
    model.to("cpu")
    return {
        "pretrain_steps": steps,
        "pretrain_loss": round(sum(recent) / len(recent), 4),
        "pretrain_seconds": round(time.perf_counter() - started, 3),
    }
