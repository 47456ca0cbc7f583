"""A Hub dataset as a recipe names it (HubSource), and which files of its repository hold a subset's split.

The dataset card's `configs:` (README.md YAML front matter: `config_name`, `data_files` with `split`
and `path` globs, `data_dir`, `default`) when it has them; else `<subset>/` folders, and split names in
file and folder names (datasets' DEFAULT_PATTERNS_SPLIT_IN_FILENAME: `data/train-00000-of-00001.parquet`,
`openassistant_best_replies_eval.jsonl` is test); no split name anywhere: every file is train.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slmforge.errors import InvalidInput

EXTENSIONS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
SPLIT_WORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
               "test": ("test", "testing", "eval", "evaluation")}


@dataclass(frozen=True)
class HubSource:
    """One hub dataset as a data config names it (revision: as written, or the pinned commit)."""

    name: str
    split: str = "train"
    subset: str | None = None
    data_dir: str | None = None
    revision: str | None = None
    col_filters: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        extra = "".join(f" {k} '{v}'" for k, v in (("subset", self.subset), ("data_dir", self.data_dir)) if v)
        return f"hub dataset '{self.name}'{extra}"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "HubSource":
        known = set(cls.__dataclass_fields__)
        if not isinstance(data, dict) or "name" not in data or set(data) - known:
            raise InvalidInput(f"{where}: expected an object with 'name' and some of {', '.join(sorted(known))}")
        return cls(**data)


def choose_files(source: HubSource, folder: Path, listing: list[str], split: str) -> tuple[str, ...]:
    data = [f for f in listing if Path(f).suffix.lower() in EXTENSIONS and not any(
        part.startswith(".") for part in Path(f).parts)]
    configs = _readme_configs(folder / "README.md")
    data_dir, patterns = source.data_dir, None
    if configs:
        config = _pick_config(source, configs)
        data_dir = data_dir or config.get("data_dir")
        patterns = _config_patterns(source, config, data_dir)
    elif source.subset:
        folders = sorted({f.split("/")[0] for f in data if "/" in f})
        if source.subset not in folders:
            raise InvalidInput(f"{source.label}: no subset '{source.subset}' (the repository's README names no "
                               f"configs; folders with data files: {', '.join(folders) or 'none'})")
        data_dir = data_dir or source.subset
    if data_dir:
        data = [f for f in data if f.startswith(data_dir.strip("/") + "/")]
    if patterns is not None:
        by_split = {s: [f for f in data if any(p.match(f) for p in pats)] for s, pats in patterns.items()}
    else:
        by_split = _splits_by_name(data, split, data_dir)
    chosen = by_split.get(split) or []
    if not chosen:
        found = [s for s, f in by_split.items() if f]
        raise InvalidInput(f"{source.label}: no split '{split}' (splits: {', '.join(found) or 'none'})")
    return tuple(sorted(chosen))


def _splits_by_name(files: list[str], asked: str, base: str | None) -> dict[str, list[str]]:
    """Split of each file by the keywords in its path (below `base`); no keyword anywhere: all is train."""
    names = dict(SPLIT_WORDS)
    names.setdefault(asked, (asked,))
    out: dict[str, list[str]] = {}
    for f in files:
        rel = f[len(base.strip("/")) + 1:] if base else f
        stem = rel[: -len(Path(rel).suffix)]
        for split, words in names.items():
            if any(re.search(rf"(^|[-._ 0-9/]){re.escape(w)}($|[-._ 0-9/])", stem) for w in words):
                out.setdefault(split, []).append(f)
                break
    if not out:
        return {"train": list(files)}
    return out


def _readme_configs(readme: Path) -> list[dict]:
    """The `configs:` list of the README's YAML front matter (the Hub's dataset card), or []."""
    if not readme.is_file():
        return []
    text = readme.read_text(encoding="utf-8", errors="replace")
    m = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
    if not m:
        return []
    import yaml

    try:
        meta = yaml.safe_load(m[1])
    except yaml.YAMLError as e:
        raise InvalidInput(f"{readme}: the dataset card's YAML front matter is not valid ({' '.join(str(e).split())})"
                           ) from None
    configs = meta.get("configs") if isinstance(meta, dict) else None
    return [c for c in configs if isinstance(c, dict)] if isinstance(configs, list) else []


def _pick_config(source: HubSource, configs: list[dict]) -> dict:
    names = [str(c.get("config_name", "default")) for c in configs]
    if source.subset is not None:
        if source.subset in names:
            return configs[names.index(source.subset)]
        raise InvalidInput(f"{source.label}: no subset '{source.subset}' (subsets: {', '.join(names)})")
    default = [c for c in configs if c.get("default") is True] or [c for c, n in zip(configs, names) if n == "default"]
    if default or len(configs) == 1:
        return (default or configs)[0]
    raise InvalidInput(f"{source.label}: has several subsets ({', '.join(names)}); name one with subset")


def _config_patterns(source: HubSource, config: dict, data_dir: str | None) -> dict[str, list[re.Pattern]] | None:
    """split -> path patterns of a README config's data_files (None: the config names no files)."""
    files = config.get("data_files")
    if files is None:
        return None
    if isinstance(files, (str, list)) and all(isinstance(f, str) for f in ([files] if isinstance(files, str)
                                                                            else files)):
        split_paths = {"train": [files] if isinstance(files, str) else files}
    elif isinstance(files, list):
        split_paths = {}
        for entry in files:
            if not isinstance(entry, dict) or "split" not in entry or "path" not in entry:
                raise InvalidInput(f"{source.label}: README.md config data_files entry {entry!r} has no split and path")
            paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
            split_paths.setdefault(str(entry["split"]), []).extend(paths)
    elif isinstance(files, dict):
        split_paths = {str(k): v if isinstance(v, list) else [v] for k, v in files.items()}
    else:
        raise InvalidInput(f"{source.label}: README.md config data_files {files!r} is not a path, list or mapping")
    prefix = data_dir.strip("/") + "/" if data_dir else ""
    return {s: [_glob(prefix + str(p).removeprefix("./")) for p in paths] for s, paths in split_paths.items()}


def _glob(pattern: str) -> re.Pattern:
    """A Hub data_files glob as a regex: `**` crosses folders, `*` and `?` do not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out, i = out + "(?:/)?", i + 1
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")
