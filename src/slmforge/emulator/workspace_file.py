"""DIR/workspace.json: everything a client needs to reach the emulated workspace (no secrets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slmforge.contract.files import write_atomic
from slmforge.emulator.cloud import CLOUD_PREFIX
from slmforge.emulator.context import Emulator
from slmforge.errors import InvalidInput

KIND = "slmforge-emulator"
FILE_NAME = "workspace.json"
# What a client reads from the file (describe() writes them): each must be a non-empty string.
REQUIRED_TEXT = ("subscription_id", "resource_group", "workspace_name", "tenant_id", "ca_bundle", "endpoint")


def cloud_name(emu_port: int, azurite_port: int) -> str:
    # One name per address pair: the SDK can't re-register a cloud name within a process.
    return f"{CLOUD_PREFIX}{emu_port}-{azurite_port}"


def describe(emu: Emulator) -> dict[str, Any]:
    c = emu.config
    base = emu.base_url + "/"
    return {
        "kind": KIND,
        "subscription_id": c.subscription,
        "resource_group": c.resource_group,
        "workspace_name": c.workspace,
        "credential": "emulator",
        "ca_bundle": str(emu.ca_file),
        "endpoint": emu.base_url,
        "cloud": {
            "name": cloud_name(c.port, c.azurite_port),
            "metadata": {
                "azure_portal": base, "resource_manager": base, "active_directory": base,
                "aml_resource_id": "https://ml.azure.com", "storage_endpoint": emu.storage_endpoint,
                "registry_discovery_endpoint": base,
            },
        },
        "keyvault_name": c.keyvault,
        "keyvault_url": emu.vault_url(),
        "tenant_id": c.tenant,
        "storage": {"account": "devstoreaccount1", "blob_port": c.azurite_port},
        "computes": list(c.computes),
    }


def write(emu: Emulator) -> Path:
    path = emu.dir / FILE_NAME
    write_atomic(path, json.dumps(describe(emu), indent=2) + "\n")
    return path


def read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise InvalidInput(f"{path}: no emulator workspace file (run `slmforge emulator start` first)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("kind") != KIND:
        kind = data.get("kind") if isinstance(data, dict) else None
        raise InvalidInput(f"{path}: not an emulator workspace file (kind is {kind!r})")
    for key in REQUIRED_TEXT:
        if key not in data:
            raise InvalidInput(f"{path}: lacks '{key}' (rewrite it with `slmforge emulator start`)")
        if not isinstance(data[key], str) or not data[key]:
            raise InvalidInput(f"{path}: '{key}' must be a non-empty string, got {json.dumps(data[key])}")
    cloud = data.get("cloud")
    if not isinstance(cloud, dict) or not isinstance(cloud.get("name"), str) \
            or not isinstance(cloud.get("metadata"), dict):
        raise InvalidInput(f"{path}: 'cloud' must be an object with a 'name' and a 'metadata' object")
    return data


def is_emulator_file(path: str | Path) -> bool:
    try:
        read(path)
    except InvalidInput:
        return False
    return True
