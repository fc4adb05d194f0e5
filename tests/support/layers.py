"""The import rules between the layers of the `xstilts` package, and a checker.

Layers (DESIGN.md, "Layout"):
- `xstilts.core` is torch-free and imports nothing above it;
- `xstilts.launcher` sits above core, and `xstilts.analysis` above the launcher (it
  reads an experiment's plan, store and live statuses through `launcher.experiment`);
  neither imports torch;
- `xstilts.jobs` sits above core; it is the only layer that imports torch;
- the launcher never imports analysis: the table printed after `launch --wait` is
  handed to the launch command by the wiring;
- the launcher reaches jobs only through the executor seam: the pickled submitit job
  (`xstilts.jobs.submitit_job`) and module paths it starts as strings;
- `xstilts` itself (`cli`, `__main__`) is the wiring and may import any layer.

The checker reads every import statement of every module (function-level imports
included: a deferred import is still a dependency), so it is exact where a runtime
check would only see what one code path happened to load.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import REPO

PACKAGE_FOLDERS: dict[str, str] = {
    "xstilts": "xstilts",
    "xstilts.core": "core",
    "xstilts.launcher": "launcher",
    "xstilts.analysis": "analysis",
    "xstilts.jobs": "jobs",
    "xstilts.cluster_profiles": "cluster_profiles",
    "xstilts.experiments": "experiments",
}
"""Import package -> folder, as pyproject's `package-dir` maps them."""

HEAVY = ("torch", "transformers", "datasets", "ray", "accelerate", "zarr", "PIL")
"""Third-party packages that only compute nodes need (seconds to import, GBs to install)."""

OLD_TOP_LEVEL = ("launcher", "jobs", "analysis", "core", "cluster_profiles", "experiments")
"""Names that were top-level packages once; importing them bare is always a bug."""


@dataclass(frozen=True)
class Layer:
    name: str
    allowed: tuple[str, ...]
    """xstilts modules (prefixes) this layer may import."""
    heavy_allowed: bool


LAYERS: dict[str, Layer] = {
    "xstilts.core": Layer("core", ("xstilts.core",), heavy_allowed=False),
    "xstilts.launcher": Layer("launcher", ("xstilts.core", "xstilts.launcher", "xstilts.jobs.submitit_job"),
                              heavy_allowed=False),
    "xstilts.analysis": Layer("analysis", ("xstilts.core", "xstilts.launcher", "xstilts.analysis"),
                              heavy_allowed=False),
    "xstilts.jobs": Layer("jobs", ("xstilts.core", "xstilts.jobs"), heavy_allowed=True),
}


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.rule}"


def module_files(repo: Path = REPO) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    modules: dict[str, Path] = {}
    for package, folder in PACKAGE_FOLDERS.items():
        root = repo / folder
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            if any(p.startswith(".") or p == "__pycache__" for p in relative.parts):
                continue
            name = ".".join([package, *parts])
            if package == "xstilts" and len(parts) > 1:
                continue  # a folder inside xstilts/ would be its own package: none exists
            modules.setdefault(name, path)
    return modules


def imported_names(path: Path, module: str, modules: set[str]) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved;
    `from package import submodule` counts as an import of the submodule."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")
                parent = parent[: len(parent) - node.level + (1 if is_package else 0)]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
            if len(submodules) < len(node.names):
                names.append((node.lineno, base))
            names.extend((node.lineno, name) for name in submodules)
    return names


def layer_of(module: str) -> Layer | None:
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(repo: Path = REPO) -> list[Violation]:
    found: list[Violation] = []
    files = module_files(repo)
    for module, path in files.items():
        layer = layer_of(module)
        for line, name in imported_names(path, module, set(files)):
            top = name.split(".")[0]
            if top in OLD_TOP_LEVEL:
                found.append(Violation(module, line, name, "a bare top-level name; everything is xstilts.*"))
            if layer is None:
                continue
            if top == "xstilts" and name != "xstilts" and not _within(name, layer.allowed):
                found.append(Violation(module, line, name, f"{layer.name} may import only {', '.join(layer.allowed)}"))
            if top in HEAVY and not layer.heavy_allowed:
                found.append(Violation(module, line, name, f"{layer.name} never imports {top} (only jobs does)"))
    return found

