"""Azurite, the storage account of the emulated workspace: install, command line, blob clients.

Azurite is an npm package, installed once (pinned) into a cache folder with `npm install --prefix`.
It checks shared-key and SAS signatures, so everything here signs with its well-known dev key.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

from slmforge.errors import SlmforgeError

AZURITE_VERSION = "3.35.0"
# Azurite's documented development account (public, not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DATASTORE_CONTAINER = "azureml-blobstore-emulator"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slmforge" / "azurite"


def main_script(root: Path | None = None) -> Path:
    return (root or cache_dir()) / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"


def ensure_installed(root: Path | None = None) -> Path:
    """Install azurite@AZURITE_VERSION into the cache on first use; return its blob main.js."""
    root = root or cache_dir()
    script = main_script(root)
    package_json = root / "node_modules" / "azurite" / "package.json"
    if script.is_file() and f'"version": "{AZURITE_VERSION}"' in package_json.read_text():
        return script
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SlmforgeError(f"the emulator needs Node.js: '{tool}' is not on PATH")
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["npm", "install", "--prefix", str(root), f"azurite@{AZURITE_VERSION}",
         "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True, text=True,
    )
    if proc.returncode != 0 or not script.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SlmforgeError(f"npm install azurite@{AZURITE_VERSION} failed: {' | '.join(tail)}")
    return script


def command(script: Path, *, port: int, location: Path, cert: Path, key: Path) -> list[str]:
    return ["node", str(script), "--blobHost", "127.0.0.1", "--blobPort", str(port),
            "--location", str(location), "--cert", str(cert), "--key", str(key),
            "--skipApiVersionCheck", "--disableTelemetry", "--loose", "--silent"]


def account_url(port: int) -> str:
    """Path-style URL (the account is the first path segment): needs no name resolution."""
    return f"https://127.0.0.1:{port}/{ACCOUNT}"


def service_client(port: int, ca_file: Path):
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(account_url(port), credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
                             connection_verify=str(ca_file), retry_total=2)


def container_sas(container: str, *, write: bool, hours: int = 24) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    perms = ContainerSasPermissions(read=True, list=True, write=write, create=write, add=write)
    expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)
    return generate_container_sas(ACCOUNT, container, account_key=ACCOUNT_KEY, permission=perms, expiry=expiry)


def split_blob_url(url: str) -> tuple[str, str]:
    """(container, blob path) of a blob or container URL, path-style or production-style."""
    parts = urlsplit(url)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if segments and segments[0] == ACCOUNT:
        segments = segments[1:]
    if not segments:
        raise ValueError(f"not a blob URL: {url}")
    return segments[0], "/".join(segments[1:])


def download_prefix(client, container: str, prefix: str, dest: Path) -> int:
    """Download every blob under `prefix` (a folder or one blob) into `dest`; return the file count."""
    cc = client.get_container_client(container)
    prefix = prefix.strip("/")
    count = 0
    for blob in cc.list_blobs(name_starts_with=prefix):
        rel = blob.name[len(prefix):].lstrip("/")
        if blob.name != prefix and not blob.name.startswith(prefix + "/"):
            continue
        target = dest / rel if rel else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            cc.download_blob(blob.name).readinto(f)
        count += 1
    return count


def upload_folder(client, container: str, prefix: str, src: Path) -> int:
    cc = client.get_container_client(container)
    count = 0
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for file in files:
        rel = file.name if src.is_file() else file.relative_to(src).as_posix()
        with open(file, "rb") as f:
            cc.upload_blob(f"{prefix.strip('/')}/{rel}", f, overwrite=True)
        count += 1
    return count
