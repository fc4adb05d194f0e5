"""Reading task data on compute nodes (`sources`: hub datasets and local files).

The task definitions themselves are torch-free and live in `xstilts.core.tasks`, so
that the launcher and analysis can read them without this package.
"""
