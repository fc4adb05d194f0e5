"""The visual-prefix model: XLM-R reading an image as K embeddings in front of a caption.

Why a prefix: the research question is whether *image-grounded* intermediate training
changes what the text encoder knows in a way that transfers across languages. The
multimodal stage must therefore train the very encoder the target stage fine-tunes, with
nothing vision-specific left inside it: the image enters only through a projection
(linear, then LayerNorm) from the vision encoder's pooled features to K vectors of the
encoder's width, placed before the caption's token embeddings, with the attention mask
extended over them. XLM-R's own embedding layer adds positions and normalises them like
any token. After the stage only XLM-R's weights are exported (`save_pretrained`), so the
target stage loads them like any other intermediate checkpoint.

Objective heads (`xstilts.jobs.heads.image_text` picks one per task):
- `itm`: a 2-way classifier on the caption's `<s>` state (image-text matching);
- `contrastive`: caption embedding (mean of the caption's states, projected) against an
  image embedding (a projection of the pooled features), in-batch softmax with a learned
  temperature (CLIP's `logit_scale`, initialised to 1/0.07 and capped at 100); the image
  is not a prefix here, the two sides meet only in the loss;
- `mcm`: XLM-R's masked-LM head over the caption positions, the image as prefix (or no
  prefix: the text-only control).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PretrainedConfig
    from transformers.models.xlm_roberta.configuration_xlm_roberta import XLMRobertaConfig
    from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaLMHead, XLMRobertaModel

CONTRASTIVE_DIM = 256
"""Width of the shared caption/image space of the contrastive objective."""
MAX_LOGIT_SCALE = 100.0


class VisualPrefixModel(nn.Module):
    """XLM-R (bare encoder) + image prefix projection + one objective head."""

    def __init__(self, encoder: XLMRobertaModel, image_dim: int, prefix_length: int, objective: str,
                 lm_head: XLMRobertaLMHead | None = None) -> None:
        super().__init__()
        if objective not in ("itm", "contrastive", "mcm"):
            raise ValueError(f"unknown objective '{objective}'; valid: itm, contrastive, mcm")
        self.roberta = encoder
        self.objective = objective
        self.image_dim = image_dim
        hidden = encoder.config.hidden_size
        self.prefix_length = prefix_length if objective != "contrastive" else 0
        if self.prefix_length:
            self.image_projection = nn.Linear(image_dim, self.prefix_length * hidden)
            self.image_norm = nn.LayerNorm(hidden, eps=encoder.config.layer_norm_eps)
        if objective == "itm":
            self.classifier = nn.Linear(hidden, 2)
        elif objective == "contrastive":
            self.text_projection = nn.Linear(hidden, CONTRASTIVE_DIM)
            self.image_embedding = nn.Linear(image_dim, CONTRASTIVE_DIM)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        else:
            if lm_head is None:
                raise ValueError("the mcm objective needs a masked-LM head")
            self.lm_head = lm_head
            self.lm_head.decoder.weight = encoder.embeddings.word_embeddings.weight  # tied, as in XLM-R

    # -- what the trainer and FSDP expect of a model --------------------------------------
    @property
    def config(self) -> XLMRobertaConfig:
        return self.roberta.config

    @property
    def base_model(self) -> XLMRobertaModel:
        """The encoder: `xstilts.jobs.distributed.shard_model` shards its layers."""
        return self.roberta

    def save_pretrained(self, out: Path | str, **kwargs: Any) -> None:
        """Export the text encoder only: the projection and heads stay behind."""
        self.roberta.save_pretrained(out, **kwargs)

    # -- forward pieces -----------------------------------------------------------------
    def caption_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       image: torch.Tensor | None) -> torch.Tensor:
        """Last-layer states of the caption positions ([B, L, H]), the image prefix (if
        any) attended to but cut off the output."""
        embeddings = self.roberta.embeddings.word_embeddings(input_ids)
        mask = attention_mask
        k = self.prefix_length if image is not None else 0
        limit = self.config.max_position_embeddings - 2  # XLM-R numbers positions from pad_token_id + 1
        if k + input_ids.shape[1] > limit:
            raise ValueError(f"{k} image prefix embeddings + {input_ids.shape[1]} caption tokens exceed the "
                             f"{limit} positions the encoder can embed; lower the image tasks' max_seq_length")
        if image is not None and k:
            batch, hidden = input_ids.shape[0], embeddings.shape[-1]
            prefix = self.image_norm(self.image_projection(image.to(embeddings.dtype)).view(batch, k, hidden))
            embeddings = torch.cat([prefix, embeddings], dim=1)
            mask = torch.cat([attention_mask.new_ones(batch, k), attention_mask], dim=1)
        states = self.roberta(inputs_embeds=embeddings, attention_mask=mask).last_hidden_state
        return states[:, k:]

    def match_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     image: torch.Tensor | None) -> torch.Tensor:
        """ITM: [B, 2] logits (mismatch, match) from the caption's `<s>` state."""
        return self.classifier(self.caption_states(input_ids, attention_mask, image)[:, 0])

    def token_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     image: torch.Tensor | None) -> torch.Tensor:
        """MCM: [B, L, V] vocabulary logits of the caption positions."""
        return self.lm_head(self.caption_states(input_ids, attention_mask, image))

    def caption_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Contrastive: L2-normalised projection of the mean caption state."""
        states = self.caption_states(input_ids, attention_mask, None)
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        mean = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return nn.functional.normalize(self.text_projection(mean).float(), dim=-1)

    def image_embedding_of(self, image: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image_embedding(image.to(self.image_embedding.weight.dtype)).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)


def load_lm_head(config: PretrainedConfig, encoder_dir: Path, seed: int) -> XLMRobertaLMHead:
    """XLM-R's masked-LM head, with the checkpoint's weights when it has them (the
    pretrained model does; an intermediate encoder export does not: then seeded fresh)."""
    from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaLMHead

    from xstilts.jobs.modeling import read_checkpoint

    torch.manual_seed(seed)
    head = XLMRobertaLMHead(config)
    weights = {k[len("lm_head."):]: v for k, v in read_checkpoint(encoder_dir).items() if k.startswith("lm_head.")}
    if weights:
        weights.pop("decoder.weight", None)  # tied to the word embeddings
        head.load_state_dict(weights, strict=False)
    return head
