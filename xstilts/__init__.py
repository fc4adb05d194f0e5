"""xstilts: intermediate-task training grids for zero-shot cross-lingual transfer.

One import package; its subpackages live in the repository's top-level folders (see
`package-dir` in pyproject.toml):

    xstilts.core        torch-free: spec, plan, node configs, store, state, leases,
                        task registry, metrics, official file formats
    xstilts.launcher    spec -> submission, status, logs (above core; never torch)
    xstilts.analysis    results -> tables, statistics, plots (above core; never torch)
    xstilts.jobs        what runs on compute nodes (above core; the only torch)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xstilts")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
