"""Where slmforge's shipped files are: `components/`, `environments/` and the ready recipes of `pipelines/`.

They live at the repository's top level (Azure ML and `az ml` read them there). This package
reaches them through symlinks in a checkout and holds them as package data in a wheel; both
are found with importlib.resources, here only. SLMFORGE_COMPONENTS_DIR overrides the components.

A shipped recipe names its model, data, cache and output by paths relative to `pipelines/`
(`../.slmforge/models/…`, `../src/slmforge/data/…`, `../out/…`). In a checkout they resolve in
the checkout. Installed, the package folder is no place to write models or outputs: the recipes
run from `$SLMFORGE_HOME/shipped/`, laid out like a checkout (the recipes copied to `pipelines/`,
`src/slmforge/data` a link to the package's data), so the same relative paths hold there.
"""

from __future__ import annotations

import os
import shutil
from importlib.resources import files
from pathlib import Path

COMPONENTS_ENV = "SLMFORGE_COMPONENTS_DIR"


def _shipped(name: str) -> Path:
    return Path(str(files(__name__) / name))  # a plain folder: slmforge is never installed zipped


def components_dir() -> Path:
    override = os.environ.get(COMPONENTS_ENV)
    return Path(override) if override else _shipped("components")


def environments_dir() -> Path:
    return _shipped("environments")


def pipelines_dir() -> Path:
    return _shipped("pipelines")


def slmforge_home() -> Path:
    """Where slmforge keeps what outlives a run: the model registry, shipped recipes' outputs.

    InvalidInput when it is, or lies under, a file (`models` listed "no registered models")."""
    home = Path(os.environ.get("SLMFORGE_HOME") or Path.home() / ".slmforge").expanduser()
    existing = next((p for p in (home, *home.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        from slmforge.errors import InvalidInput

        where = "is a file" if existing == home else f"lies under the file {existing}"
        raise InvalidInput(f"SLMFORGE_HOME {home}: {where}; point it at a folder (or unset it for ~/.slmforge)")
    return home


def _installed_root() -> Path:
    return slmforge_home() / "shipped"


def _checkout_root() -> Path | None:
    root = pipelines_dir().resolve().parent  # through the symlink: the checkout
    return root if (root / "src" / "slmforge").is_dir() else None


def shipped_pipelines_dirs() -> list[Path]:
    """The folders a shipped recipe runs from (side-effect free; see `shipped_recipe`)."""
    checkout = _checkout_root()
    return [checkout / "pipelines" if checkout else _installed_root() / "pipelines"]


def shipped_recipe(name: str) -> Path | None:
    """The shipped recipe `name` (`demo` or `demo.json`) as a file its relative paths work from, or None."""
    stem = name.removesuffix(".json")
    if not stem or "/" in stem or os.sep in stem or not (pipelines_dir() / f"{stem}.json").is_file():
        return None
    checkout = _checkout_root()
    if checkout is not None:
        return checkout / "pipelines" / f"{stem}.json"
    root = _installed_root()
    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    for recipe in pipelines_dir().glob("*.json"):  # refreshed: an upgraded slmforge ships newer recipes
        target = root / "pipelines" / recipe.name
        if not target.is_file() or target.read_bytes() != recipe.read_bytes():
            shutil.copyfile(recipe, target)
    data = root / "src" / "slmforge" / "data"
    package_data = Path(str(files("slmforge") / "data"))
    if not (data.is_symlink() and data.resolve() == package_data.resolve()):
        data.parent.mkdir(parents=True, exist_ok=True)
        data.unlink(missing_ok=True)
        data.symlink_to(package_data, target_is_directory=True)
    return root / "pipelines" / f"{stem}.json"


def code_dir() -> Path:
    """The folder Azure ML uploads as every component's code: one that holds the `slmforge` package.

    In a checkout that is `src/` (what the components' `code: ../src` names). Installed, it is a
    snapshot of the package alone under `$SLMFORGE_HOME/code/` (never the whole site-packages),
    named by a digest of its files so an upgrade makes a new one.
    """
    checkout = _checkout_root()
    if checkout is not None:
        return checkout / "src"
    import hashlib

    package = Path(str(files("slmforge")))
    sources = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    h = hashlib.sha256()
    for source in sources:
        h.update(f"{source.relative_to(package)}\0{source.stat().st_size}\0".encode())
        h.update(source.read_bytes())
    root = slmforge_home() / "code" / h.hexdigest()[:16]
    if not (root / "slmforge").is_dir():
        tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(package, tmp / "slmforge", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        try:
            tmp.rename(root)
        except OSError:  # another process made it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def find_recipe(given: str) -> Path:
    """A recipe file as given; else the shipped recipe of that name; else the path, for the loader to name."""
    path = Path(given)
    return path if path.exists() else shipped_recipe(given) or path
