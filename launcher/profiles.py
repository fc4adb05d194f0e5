"""Cluster profiles: where and how nodes run.

A profile is a YAML file, either shipped in the `cluster_profiles` package (named by its
file stem, e.g. ``local``) or given as a path. Unknown keys are errors that list the
valid ones, like the spec.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from launcher.errors import UserError, unknown_choice


class Profile(BaseModel):
    """How the launcher executes nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "local"
    executor: Literal["local"] = "local"
    max_parallel: int = Field(2, gt=0, description="nodes running at once")
    procs_per_node: int = Field(1, gt=0, description="processes per training node (torch.distributed, FSDP2)")
    max_requeues: int = Field(3, ge=0, description="times a preempted node is started again")
    env: dict[str, str] = Field(default_factory=dict)


def shipped_profiles() -> dict[str, Path]:
    """Profiles shipped with the package: name -> file."""
    folder = resources.files("cluster_profiles")
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def load_profile(name_or_path: str) -> Profile:
    """A shipped profile by name, or a profile YAML file by path."""
    from launcher.spec import read_yaml  # local import: spec imports pydantic models only

    shipped = shipped_profiles()
    if name_or_path in shipped:
        path, name = shipped[name_or_path], name_or_path
    elif name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path, name = Path(name_or_path), Path(name_or_path).stem
    else:
        raise UserError(unknown_choice("cluster profile", name_or_path, shipped) + " (or a path to a profile YAML)")
    raw = read_yaml(path, what="cluster profile")
    raw.setdefault("name", name)
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                lines.append(unknown_choice("profile key", key, Profile.model_fields))
            else:
                lines.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise UserError(f"{path}: invalid cluster profile\n  " + "\n  ".join(lines)) from None
