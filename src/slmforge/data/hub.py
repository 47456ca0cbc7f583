"""Hugging Face Hub datasets: resolve the repository's commit, pick the files of a subset and split, read their rows.

`datasets.load_dataset("ORG/NAME")` is not used: offline it fails even with the repository in the hub
cache (it wants its own prepared cache, docs/pitfalls.md), and its errors name neither file nor row. Instead
huggingface_hub resolves the snapshot (asking the hub when online, reading `refs/<revision>` of the
hub cache offline), the files of the subset and split are chosen by the Hub's conventions (the
README's `configs:`, else `<subset>/` and split names in file names: `data/train-00000-of-00001.parquet`),
and data/readers.py reads them, so a bad row is named by its file and row.

The commit sha is the dataset's content address: the step graph pins it, so the local cache key
changes when the hub's `main` moves and the step reads exactly the commit it was keyed by.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from slmforge.data.hub_files import EXTENSIONS, HubSource, choose_files
from slmforge.errors import InvalidInput

FILE_FORMATS = ("json", "csv", "parquet")  # data_name values that read data_files, not a hub dataset
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_TRUE = {"1", "ON", "YES", "TRUE"}


def is_hub_name(name: str) -> bool:
    """True for `NAME` or `ORG/NAME` (not a file format literal)."""
    return name not in FILE_FORMATS and bool(_NAME.match(name)) and "--" not in name and ".." not in name


@dataclass(frozen=True)
class Located:
    """A hub dataset's resolved commit, its snapshot folder, and the files of its subset and split."""

    source: HubSource
    sha: str
    folder: Path
    files: tuple[str, ...]  # paths inside the repository
    data_format: str
    split_name: str
    start: str | None  # the split's slice bounds, as written
    stop: str | None

    def pinned(self) -> HubSource:
        """The source with its revision pinned to the resolved commit."""
        return HubSource(**{**asdict(self.source), "revision": self.sha})


def hub_cache_dir() -> Path:
    """The hub cache, read from the environment now (huggingface_hub reads it once, at import)."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(env[var]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(os.environ.get(v, "").strip().upper() in _TRUE for v in names)


def parse_split(source: HubSource) -> tuple[str, str | None, str | None]:
    from slmforge.data.readers import SPLIT

    m = SPLIT.match(source.split.replace(" ", ""))
    if not m:
        raise InvalidInput(f"{source.label}: split '{source.split}' is not a split name or a slice of one such as "
                           "'train[:4096]', 'train[4096:4224]' or 'train[:10%]' (splits joined with '+' are not read)")
    return m["name"], m["start"], m["stop"]


def locate(source: HubSource, *, download: bool = False) -> Located:
    """Resolve the commit and choose the files (with `download`, fetch them into the hub cache too).

    Cheap without `download`: online one API call and the README, offline a look at the cache. Any
    failure is one InvalidInput line naming the dataset and the cause."""
    split, start, stop = parse_split(source)
    offline = is_offline()
    folder = _snapshot(source, source.revision, ["README.md"], offline)
    sha = folder.name
    listing = _cached_listing(source, sha)
    # No tree listing for this commit: the hub did not answer (snapshot_download fell back to the cache),
    # so the cached snapshot's files are what there is, and asking the hub again would only wait.
    reachable = not offline and listing is not None
    if listing is None:
        listing = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    files = choose_files(source, folder, listing, split)
    if download:
        folder = _snapshot(source, sha, list(files), not reachable)
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise InvalidInput(f"{source.label}: file {missing[0]} of commit {sha} is not in the hub cache {folder}")
    fmt = {EXTENSIONS[Path(f).suffix.lower()] for f in files}
    if len(fmt) > 1:
        raise InvalidInput(f"{source.label}: split '{split}' mixes file formats ({', '.join(sorted(files))})")
    return Located(source, sha, folder, files, fmt.pop(), split, start, stop)


def read_hub_rows(located: Located, text_cols: list[str], *, chat: bool, max_samples: int | None):
    """The rows of the located split: sliced as the split says, then kept by col_filters (Olive's order:
    `load_dataset(split=...)`, then `filter`), then checked like a data file's rows."""
    from slmforge.data import chat_rows
    from slmforge.data.readers import Rows, check_format, check_rows, limit_rows, read_records, slice_rows

    check_format(located.folder / located.files[0], located.data_format, chat)
    filters = located.source.col_filters or {}
    cols = [chat_rows.COLUMN] if chat else list(text_cols)
    wanted = cols + [c for c in filters if c not in cols]
    every = ((located.folder / f, where, r) for f in located.files
             for where, r in read_records(located.folder / f, located.data_format, wanted))
    # train[:4096] of a large dataset: read no further than the slice's end when it is a plain row index
    plain = all(b is None or b.isdigit() for b in (located.start, located.stop))
    records = list(itertools.islice(every, int(located.stop)) if plain and located.stop else every)
    records = slice_rows(records, located.start, located.stop)
    if filters:
        records = [t for t in records if _keep(t, filters)]
    out = check_rows(Rows(located.folder), records, cols, chat)
    if not out.rows:
        raise InvalidInput(f"{located.source.label}: split '{located.source.split}'"
                           f"{' with col_filters ' + json.dumps(filters) if filters else ''}: no usable rows "
                           f"({out.read} read, {out.empty} empty) in {', '.join(located.files)}")
    return limit_rows(out, max_samples)


def input_record(located: Located) -> dict[str, Any]:
    """What the manifest's inputs say of a hub dataset: its name and the commit read, not a path."""
    from slmforge.contract.manifest import digest_file

    files = {f: digest_file(located.folder / f) for f in located.files}
    return {"hub": located.source.name, **{k: v for k, v in located.source.to_json().items() if k != "name"},
            "revision": located.sha, "files": sorted(files),
            "digest": _sha256(json.dumps(sorted(files.items())))}


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _keep(tagged: tuple[Path, str, Any], filters: dict[str, Any]) -> bool:
    path, where, record = tagged
    if not isinstance(record, dict):
        return True  # check_rows names it
    for col, value in filters.items():
        if col not in record:
            raise InvalidInput(f"{path}: {where}: no column '{col}' (named in col_filters)")
        if record[col] != value:
            return False
    return True


# ---------------------------------------------------------------------------------------------- the snapshot


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was:
            enable_progress_bars()


def _snapshot(source: HubSource, revision: str | None, patterns: list[str], local_only: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from slmforge.secrets import hf_token

    offline, cache = is_offline(), hub_cache_dir()
    rev = revision or "main"
    what = f"{source.label} (revision {rev})"
    try:
        with _quiet():
            return Path(snapshot_download(source.name, repo_type="dataset", revision=revision, cache_dir=str(cache),
                                          local_files_only=local_only, allow_patterns=patterns,
                                          token=None if local_only else hf_token()))
    except RevisionNotFoundError:
        raise InvalidInput(f"{what}: the hub has no such revision") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise InvalidInput(f"{what}: not found on the hub, or private or gated (a token comes from HF_TOKEN, or "
                           "in an Azure ML job from the Key Vault secret 'hf-token')") from None
    except IncompleteSnapshotError:
        raise InvalidInput(f"{what}: the hub cache {cache} holds only part of the files and the hub cannot be "
                           f"reached{' (offline mode)' if offline else ''}") from None
    except LocalEntryNotFoundError as e:
        if offline or "outgoing traffic has been disabled" in str(e):
            why = "offline mode (HF_HUB_OFFLINE) is on"
        else:
            cause = e.__cause__
            why = f"network error ({type(cause).__name__ if cause else str(e).splitlines()[0]})"
        raise InvalidInput(f"{what}: not in the hub cache {cache} and the hub cannot be reached: {why}") from None
    except HfHubHTTPError as e:
        raise InvalidInput(f"{what}: the hub answered {str(e).splitlines()[0]}") from None
    except (OSError, ValueError) as e:
        raise InvalidInput(f"{what}: {str(e).splitlines()[0]}") from None


def _cached_listing(source: HubSource, sha: str) -> list[str] | None:
    """The repository's files at `sha` as the hub listed them to snapshot_download (its tree cache, written
    when the hub answered); None when the hub has not answered for this commit."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        return [f.path for f in get_cached_repo_tree(source.name, repo_type="dataset", revision=sha,
                                                     cache_dir=str(hub_cache_dir()))]
    except CachedRepoTreeNotFoundError:
        return None


def read_hub_spec(path: str | Path) -> dict[str, HubSource]:
    """The load_data step's `hub_data` file: `{"train": {name, split, ...}, "eval": {...}}` (either may be absent)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"hub_data file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not data or set(data) - {"train", "eval"}:
        raise InvalidInput(f"{path}: expected an object with 'train' and/or 'eval' hub datasets")
    return {role: HubSource.from_json(value, f"{path}: {role}") for role, value in data.items()}
