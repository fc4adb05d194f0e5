"""Imported by the fault harness's forkserver so node processes fork warm (see
`tests.support.faults`): the libraries every stage needs, and the stages."""

import datasets  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

import xstilts.jobs.entry  # noqa: F401
import xstilts.jobs.stages.evaluate  # noqa: F401
import xstilts.jobs.stages.train  # noqa: F401
