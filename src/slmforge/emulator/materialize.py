"""Bringing a node's code and data to this machine, and its outputs back to the datastore.

URIs understood: azureml://datastores/<ds>/paths/<p> (also the long subscriptions/... form),
azureml://registries/<r>/models/<n>/versions/<v>, workspace model ids (azureml:<n>:<v>,
.../models/<n>/versions/<v>), and Azurite blob URLs (what local uploads and code snapshots become).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from slmforge.emulator import azurite
from slmforge.emulator.context import Emulator
from slmforge.errors import InvalidInput

_DATASTORE = re.compile(r"^azureml://(?:subscriptions/[^/]+/resource[gG]roups/[^/]+/(?:providers/"
                        r"Microsoft\.MachineLearningServices/)?workspaces/[^/]+/)?datastores/([^/]+)/paths/(.*)$")
_REGISTRY_MODEL = re.compile(r"^azureml://registries/([^/]+)/models/([^/]+)/versions/([^/]+)$")
_WS_MODEL = re.compile(r"^azureml:(?:/subscriptions/.*/models/([^/]+)/versions/([^/]+)|([^/:]+):([^/:]+))$")
_CODE = re.compile(r"/codes/([^/]+)/versions/([^/]+)$")


def blob_location(emu: Emulator, uri: str) -> tuple[str, str]:
    """(container, blob path or prefix) of a data or model URI in the emulator's storage."""
    if m := _DATASTORE.match(uri):
        if m.group(1).lower() != "workspaceblobstore":
            raise InvalidInput(f"{uri}: the emulator has only the datastore 'workspaceblobstore'")
        return azurite.DATASTORE_CONTAINER, m.group(2)
    if m := _REGISTRY_MODEL.match(uri):
        from slmforge.emulator.registry import TABLE, key

        doc = emu.store.get(TABLE, key(*m.groups()))
        if doc is None:
            raise InvalidInput(f"{uri}: no such model in the emulator's registry '{m.group(1)}'")
        return blob_location(emu, doc["properties"]["modelUri"])
    if m := _WS_MODEL.match(uri):
        name, version = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        doc = emu.store.get("models", f"{name}/{version}")
        if doc is None:
            raise InvalidInput(f"{uri}: no model '{name}' version '{version}' in the workspace")
        return blob_location(emu, doc["properties"]["modelUri"])
    if uri.startswith("https://"):
        return azurite.split_blob_url(uri)
    raise InvalidInput(f"input '{uri}': the emulator cannot read this kind of URI")


def fetch(emu: Emulator, uri: str, dest: Path, *, is_file: bool) -> Path:
    """Download `uri` under `dest`; return the path a command should see (the file, or the folder)."""
    container, path = blob_location(emu, uri)
    if is_file:
        from azure.core.exceptions import ResourceNotFoundError

        target = dest / Path(path.rstrip("/")).name
        dest.mkdir(parents=True, exist_ok=True)
        try:
            downloader = emu.blob.get_container_client(container).download_blob(path.rstrip("/"))
        except ResourceNotFoundError:
            raise InvalidInput(f"input '{uri}': nothing stored there") from None
        with open(target, "wb") as f:
            downloader.readinto(f)
        return target
    count = azurite.download_prefix(emu.blob, container, path, dest)
    if count == 0:
        raise InvalidInput(f"input '{uri}': nothing stored there")
    return dest


def code_snapshot(emu: Emulator, code_ref: str) -> Path:
    """The code folder of a component (`azureml:/.../codes/<id>/versions/<v>`), cached by id and version."""
    m = _CODE.search(code_ref)
    if not m:
        raise InvalidInput(f"component code '{code_ref}' is not a code asset id")
    name, version = m.groups()
    folder = emu.dir / "cache" / "code" / f"{name}-{version}"
    if folder.is_dir():
        return folder
    doc = emu.store.get("codes", f"{name}/{version}")
    if doc is None:
        raise InvalidInput(f"code asset {name}:{version} is not in the workspace")
    container, prefix = azurite.split_blob_url(doc["properties"]["codeUri"])
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    azurite.download_prefix(emu.blob, container, prefix, tmp)
    tmp.rename(folder)
    return folder


def upload_output(emu: Emulator, local: Path, datastore_path: str) -> str:
    """Upload a node output (file or folder) to the datastore; return its azureml:// URI."""
    if local.exists():
        azurite.upload_folder(emu.blob, azurite.DATASTORE_CONTAINER, datastore_path, local)
    return emu.datastore_uri(datastore_path)
