"""`xstilts init DIR`: a starter spec and a SLURM profile, to edit before the first launch.

Why: a researcher's first grid is the paper grid with their storage, data folder and
cluster; copying the shipped files out of site-packages by hand was the first step of
every install. The spec names the profile written beside it by its full path, so
`xstilts plan DIR/experiment.yaml` and `launch` use it without `--profile`.
Existing files are never overwritten: an edited spec is the researcher's work.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from xstilts.core.atomic import replacing
from xstilts.core.errors import UserError
from xstilts.launcher.commands.common import out

SPEC_NAME = "experiment.yaml"
PROFILE_NAME = "cluster.yaml"
SPEC_SOURCE = "xtreme-r-multimodal.yaml"
PROFILE_SOURCE = "slurm.yaml"

SPEC_HEADER = """\
# Written by `xstilts init` from the shipped paper grid (experiments/{source}).
# Edit before the first launch:
#   storage    where every node's results go: an object store (s3://, gs://) or a path on a
#              filesystem every compute node and the login node see
#   data_dir   offline compute nodes: the task data folder (README "Tasks and data");
#              `xstilts data check {spec}` says what is missing
#   model / vision   hub names are read from HF_HOME on offline nodes (README
#              "Installing on a GPU cluster"): download them on the login node first
#   intermediate.tasks, target.tasks, seeds   the grid; `xstilts plan {spec}` counts it
#   cluster    the profile written beside this file: set partition, account and setup there
#
"""

PROFILE_HEADER = """\
# Written by `xstilts init` from the shipped cluster_profiles/{source}.
# Edit: partition, account (and qos, constraint), setup (activate the shared venv,
# export HF_HOME), log_dir (on a shared filesystem), and the sizes per stage.
#
"""


def _shipped(package: str, name: str) -> str:
    return (resources.files(package) / name).read_text(encoding="utf-8")


def starter_spec(profile_path: Path) -> str:
    """The paper grid with a header saying what to edit, its `cluster:` naming `profile_path`."""
    text = _shipped("xstilts.experiments", SPEC_SOURCE)
    line = f"cluster: {json.dumps(str(profile_path))}   # the profile `xstilts init` wrote"  # quoted: any path
    text, replaced = re.subn(r"^cluster: .*$", lambda _: line, text, count=1, flags=re.MULTILINE)
    if replaced != 1:  # the shipped spec lost its `cluster:` line: a bug, not the user's problem
        raise RuntimeError(f"experiments/{SPEC_SOURCE} has no top-level `cluster:` line")
    return SPEC_HEADER.format(source=SPEC_SOURCE, spec=SPEC_NAME) + text


def starter_profile() -> str:
    return PROFILE_HEADER.format(source=PROFILE_SOURCE) + _shipped("xstilts.cluster_profiles", PROFILE_SOURCE)


def init(directory: Annotated[Path, typer.Argument(help="folder to write into (created if missing)",
                                                   metavar="DIR")]) -> None:
    """Write a starter spec (the paper grid, with comments on what to edit) and a SLURM
    profile into DIR; refuses to overwrite either file."""
    folder = directory.expanduser().resolve()
    spec_path, profile_path = folder / SPEC_NAME, folder / PROFILE_NAME
    existing = [str(path) for path in (spec_path, profile_path) if path.exists()]
    if existing:
        which = f"{existing[0]} exists" if len(existing) == 1 else f"{' and '.join(existing)} exist"
        raise UserError(f"init: {which} already; move {'it' if len(existing) == 1 else 'them'} away "
                        "or choose another folder (init never overwrites)")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"init: {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, text in ((profile_path, starter_profile()), (spec_path, starter_spec(profile_path))):
            with replacing(path) as tmp:  # whole or not at all
                tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"init: cannot write into {folder}: {exc.strerror or exc}") from None
    out.print(f"wrote {spec_path}\nwrote {profile_path}\n"
              f"next: edit both (storage, data_dir; partition, account, setup), then `xstilts plan {spec_path}`")
