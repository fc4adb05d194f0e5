"""Image-caption intermediate tasks: matching, contrastive alignment, masked captions,
and their text-only controls, on the visual-prefix model (`xstilts.jobs.multimodal.prefix_model`).

Canonical examples are caption rows `{"id", "image_id", "caption"}`
(`xstilts.jobs.multimodal.captions`). What differs per task happens in three places:

- `expand` (prepare time) turns caption rows into training rows. Image-text matching
  gives each caption its image (label `match`) and one negative image (`mismatch`):
  for half of the captions a random other image, for the other half the *hard*
  negative, the other image whose pooled features are most similar. The shuffled
  control first re-pairs every caption with the image of another caption (a fixed
  derangement of the split's images), then builds pairs the same way: the input has the
  same form, but the image no longer says anything about the caption.
- `encode` tokenizes captions and records each row's image (its row in the image
  features). Masked caption modelling masks 15 % of the caption tokens (80 % `<mask>`,
  10 % random, 10 % kept; at least one), seeded by the row id so the masks are the same
  on every run, and records the masked positions' gold ids in the example (the dev
  metric is accuracy on them).
- the loss: cross entropy of the match classifier; symmetric in-batch softmax over
  caption and image embeddings (duplicates of an image in a batch are one candidate);
  masked-LM cross entropy on the masked tokens.

Image features: at prepare time the head is given the feature store of the caption
dataset (`bind_images`) and saves the pooled features of its images beside the
prepared data (`images.npy`); training reads them back (`configure`) and each batch
carries its rows' features in `extra["image"]`. Tasks with `images: none` never use them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from xstilts.jobs.data import IGNORE_INDEX, Batch, TokenizedData
from xstilts.jobs.heads.base import Example, TaskHead
from xstilts.core.rng import stable_rng

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
    from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaLMHead, XLMRobertaModel

    from xstilts.core.tasks import Objective, Task
    from xstilts.jobs.device import DeviceInfo
    from xstilts.jobs.multimodal.prefix_model import VisualPrefixModel

IMAGES_FILE = "images.npy"
IMAGE_IDS_FILE = "image_ids.json"
IMAGE_ROW = "image_row"
DEFAULT_PREFIX_LENGTH = 4
MASK_RATE = 0.15
MATCH, MISMATCH = "match", "mismatch"


def _visual_prefix(model: torch.nn.Module) -> VisualPrefixModel:
    """A model this head built (`ImageTextHead._model`), as the trainer's generic type
    hands it back."""
    return cast("VisualPrefixModel", model)




class ImageTextHead(TaskHead):
    kind = "image_text"

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        if task.objective is None:
            raise ValueError(f"image-text task {task.name} names no objective; valid: itm, contrastive, mcm")
        self.objective: Objective = task.objective
        self.uses_images = task.images != "none"
        self.image_ids: list[str] = []
        self.image_index: dict[str, int] = {}
        self.pooled: np.ndarray | None = None
        self.prefix_length = DEFAULT_PREFIX_LENGTH

    # ------------------------------------------------------------------ side data

    def bind_images(self, ids: Sequence[str], pooled: np.ndarray) -> None:
        """Prepare time: the caption dataset's image ids and pooled features."""
        self.image_ids = list(ids)
        self.image_index = {image_id: row for row, image_id in enumerate(self.image_ids)}
        self.pooled = np.asarray(pooled, dtype=np.float32)

    def save_images(self, data_dir: Path) -> None:
        """Beside the prepared features: what training needs of the images (pooled, float16)."""
        if self.pooled is None:
            raise ValueError(f"{self.task.name}: bind_images first")
        np.save(data_dir / IMAGES_FILE, self.pooled.astype(np.float16))
        (data_dir / IMAGE_IDS_FILE).write_text(json.dumps(self.image_ids))

    def configure_prefix(self, prefix_length: int | None) -> None:
        """The image prefix length of the node (prepare and training nodes of image tasks
        that read images carry it; the others use the default)."""
        self.prefix_length = prefix_length or DEFAULT_PREFIX_LENGTH

    def configure(self, data_dir: Path, prefix_length: int | None) -> None:
        """Training time: the saved image features and the prefix length of the node."""
        self.configure_prefix(prefix_length)
        path = data_dir / IMAGES_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{self.task.name}: no image features at {path}; was the data prepared "
                                    "with an `images` input?")
        self.bind_images(json.loads((data_dir / IMAGE_IDS_FILE).read_text()), np.load(path))

    # ------------------------------------------------------------------ data

    def expand(self, examples: Sequence[Example], split: str) -> list[Example]:
        """Training rows of the objective from caption rows (see the module docstring)."""
        rows = [dict(e) for e in examples]
        if self.task.images == "shuffled":
            rows = self._shuffled(rows, split)
        if self.objective != "itm":
            return rows
        pairs: list[Example] = []
        split_images = sorted({r["image_id"] for r in rows})
        hard = self._hard_negatives(split_images)
        for row in rows:
            pairs.append({**row, "id": f"{row['id']}+", "label": MATCH})
            rng = stable_rng(self.task.name, split, row["id"])
            if rng.random() < 0.5 and row["image_id"] in hard:
                negative, how = hard[row["image_id"]], "hard"
            else:
                negative = row["image_id"]
                while negative == row["image_id"] and len(split_images) > 1:
                    negative = rng.choice(split_images)
                how = "random"
            pairs.append({**row, "id": f"{row['id']}-", "image_id": negative, "label": MISMATCH, "negative": how})
        return pairs

    def _shuffled(self, rows: list[Example], split: str) -> list[Example]:
        """Every caption with the image of another: a seeded derangement of the split's images."""
        images = sorted({r["image_id"] for r in rows})
        if len(images) < 2:
            raise ValueError(f"{self.task.name}: shuffling images needs at least two, {split} has {len(images)}")
        order = list(images)
        stable_rng(self.task.name, split, "shuffle").shuffle(order)
        mapping = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}  # a cycle: nobody keeps theirs
        return [{**r, "image_id": mapping[r["image_id"]], "true_image_id": r["image_id"]} for r in rows]

    def _hard_negatives(self, images: Sequence[str]) -> dict[str, str]:
        """Each image's most similar other image of the split (cosine of pooled features)."""
        if self.pooled is None or len(images) < 2:
            return {}
        rows = [self.image_index[i] for i in images if i in self.image_index]
        known = [i for i in images if i in self.image_index]
        vectors = torch.nn.functional.normalize(torch.from_numpy(self.pooled[rows]), dim=-1)
        nearest: dict[str, str] = {}
        for start in range(0, len(known), 1024):
            sims = vectors[start:start + 1024] @ vectors.T
            sims[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])] = -2.0
            for offset, j in enumerate(sims.argmax(dim=1).tolist()):
                nearest[known[start + offset]] = known[j]
        return nearest

    def encode(
        self, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, split: str
    ) -> dict[str, list[Any]]:
        if not examples:
            return {"input_ids": []}
        room = max_seq_length - (self.prefix_length if self.uses_images else 0)  # prefix + caption fit
        if room < 4:
            raise ValueError(f"{self.task.name}: max_seq_length {max_seq_length} leaves no room for captions "
                             f"after {self.prefix_length} image prefix embeddings")
        ids = list(tokenizer([str(e["caption"]) for e in examples], truncation=True, max_length=room)["input_ids"])
        columns: dict[str, list[Any]] = {"input_ids": ids, IMAGE_ROW: [self._row(e) for e in examples]}
        if self.objective == "itm":
            columns["labels"] = [1 if e["label"] == MATCH else 0 for e in examples]
        elif self.objective == "mcm":
            masked, labels = [], []
            special = set(tokenizer.all_special_ids)
            for example, seq in zip(examples, ids):
                inputs, gold = _mask(seq, special, tokenizer.mask_token_id, len(tokenizer), stable_rng(example["id"], "mask"))
                masked.append(inputs)
                labels.append(gold)
                example["masked"] = [[i, t] for i, t in enumerate(gold) if t != IGNORE_INDEX]
            columns["input_ids"], columns["labels"] = masked, labels
        return columns

    def _row(self, example: Example) -> int:
        if not self.uses_images:
            return -1
        try:
            return self.image_index[example["image_id"]]
        except KeyError:
            raise ValueError(f"{self.task.name}: image {example['image_id']!r} of {example['id']} is not in the "
                             "image features") from None

    def collate(self, data: TokenizedData, indices: Sequence[int], width: int | None = None) -> Batch:
        batch = data.batch(indices, width)
        rows = [data.columns[IMAGE_ROW][i] for i in indices]
        batch.extra[IMAGE_ROW] = torch.tensor(rows, dtype=torch.long)
        if self.uses_images:
            batch.extra["image"] = torch.from_numpy(self._features()[rows])
        return batch

    def _features(self) -> np.ndarray:
        if self.pooled is None:
            raise ValueError(f"{self.task.name}: no image features (configure the head first)")
        return self.pooled

    # ------------------------------------------------------------------ model

    def _model(self, encoder: PreTrainedModel, lm_head: XLMRobertaLMHead | None) -> VisualPrefixModel:
        from xstilts.jobs.multimodal.prefix_model import VisualPrefixModel

        image_dim = self._features().shape[1] if self.uses_images else 1
        prefix = self.prefix_length if self.uses_images else 0
        # The visual-prefix model is built around XLM-R (its masked-LM head, its positions).
        return VisualPrefixModel(cast("XLMRobertaModel", encoder), image_dim, prefix, self.objective, lm_head)

    def build_model(self, encoder_dir: Path, seed: int) -> torch.nn.Module:
        from transformers import AutoConfig

        from xstilts.jobs.heads.retrieval import bare_encoder_from_config
        from xstilts.jobs.modeling import load_encoder_weights
        from xstilts.jobs.multimodal.prefix_model import load_lm_head

        config = AutoConfig.from_pretrained(encoder_dir)
        torch.manual_seed(seed)
        encoder = bare_encoder_from_config(config)
        load_encoder_weights(encoder, encoder_dir)
        lm_head = load_lm_head(config, encoder_dir, seed) if self.objective == "mcm" else None
        torch.manual_seed(seed)
        return self._model(encoder, lm_head)

    def plain_model(self, config: PretrainedConfig) -> torch.nn.Module:
        from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaLMHead

        from xstilts.jobs.heads.retrieval import bare_encoder_from_config

        return self._model(bare_encoder_from_config(config), XLMRobertaLMHead(config) if self.objective == "mcm" else None)

    def load_model(self, model_dir: Path) -> torch.nn.Module:
        """What the stage exported: the text encoder alone (the image side is not kept)."""
        from xstilts.jobs.heads.retrieval import load_bare_encoder

        return load_bare_encoder(model_dir)

    def count_targets(self, data: TokenizedData, indices: Sequence[int]) -> int:
        return data.count_targets(indices)  # masked tokens for MCM, rows otherwise

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        prefix_model = _visual_prefix(model)
        image = batch.extra.get("image")
        if self.objective == "itm":
            logits = prefix_model.match_logits(batch.input_ids, batch.attention_mask, image)
            return F.cross_entropy(logits.float(), batch.labels, reduction="sum")
        if self.objective == "mcm":
            logits = prefix_model.token_logits(batch.input_ids, batch.attention_mask, image)
            return F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE_INDEX,
                                   reduction="sum")
        return self._contrastive_loss(prefix_model, batch)

    def _contrastive_loss(self, model: VisualPrefixModel, batch: Batch) -> torch.Tensor:
        """Symmetric in-batch softmax; a batch's copies of one image are one candidate.
        Summed per caption (the trainer divides by the caption count)."""
        rows = batch.extra[IMAGE_ROW]
        unique, target = torch.unique(rows, return_inverse=True)
        first = torch.full((len(unique),), len(rows), dtype=torch.long, device=rows.device)
        first = first.scatter_reduce(0, target, torch.arange(len(rows), device=rows.device), reduce="amin")
        captions = model.caption_embedding(batch.input_ids, batch.attention_mask)
        images = model.image_embedding_of(batch.extra["image"][first])
        with torch.autocast(device_type=captions.device.type, enabled=False):
            logits = model.scale().float() * captions @ images.T  # [captions, images]
            caption_to_image = F.cross_entropy(logits, target, reduction="sum")
            image_to_caption = F.cross_entropy(logits.T, first, reduction="mean") * len(rows)
            return (caption_to_image + image_to_caption) / 2

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def predict(
        self, model: torch.nn.Module, data: TokenizedData, examples: Sequence[Example], device: DeviceInfo,
        batch_size: int,
    ) -> list[Any]:
        if len(data) != len(examples):
            raise ValueError(f"{len(data)} prepared rows for {len(examples)} examples")
        prefix_model = _visual_prefix(model)
        prefix_model.eval()
        if self.objective == "contrastive":
            return self._retrieve(prefix_model, data, device, batch_size)
        predictions: list[Any] = []
        for indices in data.ranges(batch_size):
            batch = self.collate(data, list(indices)).to(device.device)
            image = batch.extra.get("image")
            with device.autocast():
                if self.objective == "itm":
                    chosen = prefix_model.match_logits(batch.input_ids, batch.attention_mask, image).argmax(-1).tolist()
                    predictions.extend(MATCH if c == 1 else MISMATCH for c in chosen)
                else:
                    tokens = prefix_model.token_logits(batch.input_ids, batch.attention_mask, image).argmax(-1)
                    for row, i in enumerate(indices):
                        predictions.append([str(int(tokens[row, p])) for p, _ in examples[i]["masked"]])
        return predictions

    def _retrieve(self, model: VisualPrefixModel, data: TokenizedData, device: DeviceInfo,
                  batch_size: int) -> list[str]:
        """Caption -> image: the top-1 of the split's distinct images, as image ids."""
        rows = sorted(set(data.columns[IMAGE_ROW]))
        with device.autocast():
            images = model.image_embedding_of(torch.from_numpy(self._features()[rows]).to(device.device))
            found: list[str] = []
            for indices in data.ranges(batch_size):
                batch = self.collate(data, list(indices)).to(device.device)
                captions = model.caption_embedding(batch.input_ids, batch.attention_mask)
                best = (captions @ images.T).argmax(-1).tolist()
                found.extend(self.image_ids[rows[j]] for j in best)
        return found

    def references(self, examples: Sequence[Example]) -> list[Any]:
        if self.objective == "itm":
            return [e["label"] for e in examples]
        if self.objective == "mcm":
            return [[str(t) for _, t in e["masked"]] for e in examples]
        return [e["image_id"] for e in examples]


def _mask(seq: list[int], special: set[int], mask_id: int, vocab: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """BERT's masking of one caption: inputs and labels (IGNORE_INDEX where unmasked)."""
    candidates = [i for i, t in enumerate(seq) if t not in special]
    inputs, labels = list(seq), [IGNORE_INDEX] * len(seq)
    if not candidates:
        return inputs, labels
    chosen = [i for i in candidates if rng.random() < MASK_RATE] or [rng.choice(candidates)]
    for i in chosen:
        labels[i] = seq[i]
        draw = rng.random()
        if draw < 0.8:
            inputs[i] = mask_id
        elif draw < 0.9:
            inputs[i] = rng.randrange(vocab)
    return inputs, labels
