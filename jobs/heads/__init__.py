"""Task heads, one module per kind of task (see `xstilts.jobs.heads.base.TaskHead`)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xstilts.jobs.heads.base import TaskHead
    from xstilts.core.tasks import Task

HEADS: dict[str, str] = {
    "classification": "xstilts.jobs.heads.sequence:ClassificationHead",
    "tagging": "xstilts.jobs.heads.sequence:TaggingHead",
    "multiple_choice": "xstilts.jobs.heads.multiple_choice:MultipleChoiceHead",
    "span_qa": "xstilts.jobs.heads.span_qa:SpanQAHead",
    "retrieval": "xstilts.jobs.heads.retrieval:RetrievalHead",
    "dual_encoder": "xstilts.jobs.heads.dual_encoder:DualEncoderHead",
    "image_text": "xstilts.jobs.heads.image_text:ImageTextHead",
}
"""Task kind -> "module:class" of its head; imported on use, so that a kind's
dependencies load only where that kind runs."""


def head_for(task: Task) -> TaskHead:
    """The head that trains and scores `task`."""
    try:
        target = HEADS[task.kind]
    except KeyError:
        raise ValueError(f"task kind '{task.kind}' has no head; known kinds: {', '.join(sorted(HEADS))}") from None
    module, name = target.split(":")
    return getattr(import_module(module), name)(task)
