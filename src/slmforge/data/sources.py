"""Where load_data's rows come from: a data file (a local path or an azureml://datastores/ URI), a Hugging Face
Hub dataset (`hub_data`, data/hub.py) or the user's load_dataset function; which combinations may be given;
and the manifest's record of each input read (path or hub commit, and its digest)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from slmforge.contract import manifest
from slmforge.data import user_script
from slmforge.data.datastore import fetch_datastore_file, is_datastore_uri
from slmforge.data.hub import HubSource, input_record, locate, read_hub_rows
from slmforge.data.readers import Rows, read_rows
from slmforge.errors import InvalidInput


def check_sources(data: str | None, eval_data: str | None, hub: dict[str, HubSource], user: dict,
                  eval_dataset_size: float | None) -> None:
    """One source of training rows and at most one of eval rows (a file, hub_data or eval_dataset_size)."""
    if "load_dataset" in user:
        if data is not None or "train" in hub:
            raise InvalidInput("the spec's load_dataset function gives the training rows: give no --data or "
                               "hub_data 'train' beside it")
    elif (data is not None) == ("train" in hub):
        raise InvalidInput("give the training rows as --data (a file) or as hub_data's 'train' (a hub dataset)")
    if eval_data and "eval" in hub:
        raise InvalidInput("give the eval rows as --eval_data or as hub_data's 'eval', not both")
    if eval_dataset_size is not None and "eval" in hub:
        raise InvalidInput("give either hub_data's 'eval' or eval_dataset_size, not both")


def read_train_eval(data: str | None, eval_data: str | None, hub: dict[str, HubSource], user: dict,
                    script: tuple[str | None, str | None], data_format: str, split: str,
                    read: dict) -> tuple[Rows, Rows | None, dict]:
    """(training rows, separate eval rows or None, the manifest's records of the data read). `script` is
    (user_script, script_dir); `read` the readers' keywords (text_cols, max_samples, chat)."""
    records = {}
    with tempfile.TemporaryDirectory(prefix="slmforge-data-") as scratch:
        if "load_dataset" in user:
            with user_script.loaded(*script) as loaded:
                train = user_script.read_user_rows(loaded, user, **read)
        else:
            train, records["data"] = read_source("data", data, hub.get("train"), Path(scratch), data_format, split,
                                                 read)
        held_out = None
        if eval_data or "eval" in hub:
            held_out, records["eval_data"] = read_source("eval", eval_data, hub.get("eval"), Path(scratch),
                                                         data_format, "train", read)
    return train, held_out, records


def read_user_examples(data: str | None, user: dict, script: tuple[str | None, str | None], model_name: str,
                       data_format: str, split: str) -> tuple[list, dict]:
    """(the user's pre_process_data examples: (input_ids, labels, attention_mask or None) each, the manifest's
    record of the data file it read, if any)."""
    records = {}
    with tempfile.TemporaryDirectory(prefix="slmforge-data-") as scratch:
        data_file = local_file(data, Path(scratch) / "data") if data else None
        if data_file is not None:
            records["data"] = {"path": data, "digest": manifest.digest_path(data_file)}
        with user_script.loaded(*script) as loaded:
            examples = user_script.user_examples(loaded, user, model_name, data_file, data_format, split)
    return examples, records


def read_source(role: str, path: str | None, hub: HubSource | None, scratch: Path, data_format: str, split: str,
                read: dict) -> tuple[Rows, dict]:
    """(rows, the manifest's input record) of a data file or a hub dataset."""
    if hub is not None:
        located = locate(hub, download=True)
        return read_hub_rows(located, **read), input_record(located)
    local = local_file(path, scratch / role)
    return read_rows(local, data_format, split=split, **read), {"path": path, "digest": manifest.digest_path(local)}


def local_file(source: str, scratch: Path) -> Path:
    """A local path as is; an azureml://datastores/ URI (outside a job) downloaded into `scratch`."""
    if is_datastore_uri(source):
        return fetch_datastore_file(source, scratch / Path(source).name)
    return Path(source)
