"""slmforge's runtime requirements in an Azure ML environment: one list, two uses.

The list is the pip section of environments/conda-<kind>.yml (the pins of pyproject.toml). A recipe
with its own conda file gets it merged in at compile time (the user's packages stay; a pin that
contradicts ours is an error), and the emulator checks that a node running a slmforge step has an
environment whose conda file declares it, as a real workspace would find out at `import torch`.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slmforge.errors import InvalidInput
from slmforge.resources import environments_dir

if TYPE_CHECKING:
    from packaging.requirements import Requirement

# Builds of one package that install the same modules (`import onnxruntime`): one requirement.
VARIANTS = {"onnxruntime-gpu": "onnxruntime", "onnxruntime-genai-cuda": "onnxruntime-genai"}


def conda_spec(kind: str) -> dict[str, Any]:
    """environments/conda-<kind>.yml (kind: cpu or gpu)."""
    import yaml

    return yaml.safe_load((environments_dir() / f"conda-{kind}.yml").read_text(encoding="utf-8"))


def read_conda_file(path: Path, where: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise InvalidInput(f"{where}: {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("dependencies", []), list):
        raise InvalidInput(f"{where}: {path} is not a conda environment file (a mapping with a 'dependencies' list)")
    return data


def pip_section(conda: dict[str, Any]) -> list[str] | None:
    for dep in conda.get("dependencies") or []:
        if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            return dep["pip"]
    return None


def merge_requirements(user: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    """The user's conda spec with slmforge's python and pip pins added; raise InvalidInput on a conflict."""
    from packaging.specifiers import SpecifierSet

    ours = conda_spec(kind)
    merged = copy.deepcopy(user)
    deps = merged.setdefault("dependencies", [])
    _merge_python(deps, ours, where)
    if not any(isinstance(d, str) and _conda_name(d) == "pip" for d in deps):
        deps.append("pip")
    lines = pip_section(merged)
    if lines is None:
        lines = []
        deps.append({"pip": lines})
    slots = {_slot(r.name): i for i, r in enumerate(map(_parse, lines)) if r is not None}
    for line in pip_section(ours) or []:
        req = _parse(line)
        if req is None:  # an option such as --extra-index-url
            if line not in lines:
                lines.append(line)
            continue
        pinned = next(iter(req.specifier)).version
        index = slots.get(_slot(req.name))
        if index is None:
            lines.append(line)
            continue
        theirs = _parse(lines[index])
        if not theirs.specifier.contains(pinned, prereleases=True):
            raise InvalidInput(f"{where}: '{lines[index]}' conflicts with slmforge's {line}")
        theirs.specifier = SpecifierSet(f"=={pinned}")  # the user's name (and build), our tested version
        lines[index] = str(theirs)
    return merged


def missing_requirements(conda: dict[str, Any]) -> list[str]:
    """slmforge's runtime requirements (by name, any build) that a conda spec's pip section lacks."""
    declared = {_slot(r.name) for r in map(_parse, pip_section(conda) or []) if r is not None}
    required = [_slot(r.name) for r in map(_parse, pip_section(conda_spec("cpu")) or []) if r is not None]
    return [name for name in required if name not in declared]


# --------------------------------------------------------------------------- internals


def _parse(line: Any) -> "Requirement | None":
    from packaging.requirements import InvalidRequirement, Requirement

    if not isinstance(line, str) or line.strip().startswith("-"):
        return None
    try:
        return Requirement(line)
    except InvalidRequirement:  # a URL or path the user installs from: kept, not compared
        return None


def _slot(name: str) -> str:
    from packaging.utils import canonicalize_name

    canonical = canonicalize_name(name)
    return VARIANTS.get(canonical, canonical)


def _conda_name(dep: str) -> str:
    """'conda-forge::python=3.11' -> 'python'."""
    return re.split(r"[=<>!~ ]", dep.split("::")[-1], maxsplit=1)[0].strip().lower()


def _merge_python(deps: list[Any], ours: dict[str, Any], where: str) -> None:
    mine = next(d for d in ours["dependencies"] if isinstance(d, str) and _conda_name(d) == "python")
    version = mine.split("=")[-1]
    theirs = next((d for d in deps if isinstance(d, str) and _conda_name(d) == "python"), None)
    if theirs is None:
        deps.insert(0, mine)
        return
    exact = re.fullmatch(r"python\s*==?\s*([0-9.]+)", theirs.split("::")[-1].strip())
    if exact and not (exact.group(1) + ".").startswith(version + "."):
        raise InvalidInput(f"{where}: '{theirs}' conflicts with slmforge's {mine}")
