"""Fetch one file named by an `azureml://datastores/<name>/paths/<path>` URI, outside an Azure ML job.

Inside a job Azure ML mounts or downloads datastore inputs and hands the step a local path, so
this module is only used when a step is given the URI itself (a local run of a recipe whose data
lives in the workspace). Where to read from comes from the environment, never from the recipe:

    SLMFORGE_DATASTORE_ACCOUNT_URL   https://<account>.blob.core.windows.net (or Azurite's URL)
    SLMFORGE_DATASTORE_CONTAINER     the datastore's blob container
    SLMFORGE_DATASTORE_SAS           a SAS token with read permission (never logged)

The Azure ML backend and the emulator set these; the SAS never appears in messages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from slmforge.errors import InvalidInput, StepFailed

ENV_ACCOUNT_URL = "SLMFORGE_DATASTORE_ACCOUNT_URL"
ENV_CONTAINER = "SLMFORGE_DATASTORE_CONTAINER"
ENV_SAS = "SLMFORGE_DATASTORE_SAS"

_URI = re.compile(r"^azureml://datastores/(?P<name>[^/]+)/paths/(?P<path>.+)$")


def is_datastore_uri(text: str) -> bool:
    return text.startswith("azureml://datastores/")


def parse_datastore_uri(uri: str) -> tuple[str, str]:
    """(datastore name, blob path) of `azureml://datastores/<name>/paths/<path>`."""
    m = _URI.match(uri)
    if not m or m["path"].endswith("/"):
        raise InvalidInput(f"{uri}: expected azureml://datastores/<name>/paths/<file path>")
    return m["name"], m["path"].lstrip("/")


def fetch_datastore_file(uri: str, dest: str | Path) -> Path:
    """Download the blob behind `uri` to `dest` (written whole, then renamed into place)."""
    _, blob_path = parse_datastore_uri(uri)
    missing = [v for v in (ENV_ACCOUNT_URL, ENV_CONTAINER, ENV_SAS) if not os.environ.get(v)]
    if missing:
        raise InvalidInput(
            f"{uri}: a datastore file outside an Azure ML job needs {', '.join(missing)} set "
            "(the storage account URL, container and a read SAS of the datastore)"
        )
    sas = os.environ[ENV_SAS]
    from azure.core.exceptions import AzureError, ResourceNotFoundError
    from azure.storage.blob import BlobClient

    client = BlobClient(
        account_url=os.environ[ENV_ACCOUNT_URL],
        container_name=os.environ[ENV_CONTAINER],
        blob_name=blob_path,
        credential=sas.lstrip("?"),
    )
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as f:
            client.download_blob().readinto(f)
        os.replace(partial, dest)
    except ResourceNotFoundError:
        raise InvalidInput(f"{uri}: no such file in the datastore") from None
    except AzureError as e:
        raise StepFailed(f"{uri}: download failed: {_scrub(str(e).splitlines()[0], sas)}") from None
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _scrub(text: str, secret: str) -> str:
    """Drop the SAS (and any query string carrying a signature) from an error message."""
    text = text.replace(secret.lstrip("?"), "<sas>")
    return re.sub(r"\?[^ ]*sig=[^ ]*", "?<sas>", text)
