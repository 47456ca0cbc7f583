"""Versioned workspace assets (environments, codes, components, models, data): PUT/GET/list,
code lookup by content hash, and startPendingUpload answering a real SAS URI into Azurite."""

from __future__ import annotations

import re
import uuid

from slmforge.emulator import azurite
from slmforge.emulator.context import Emulator, now_iso
from slmforge.emulator.routing import WS, Reply, Request, error, not_found, route

JOB_OUTPUT = re.compile(r"^azureml://jobs/([^/]+)/outputs/([^/]+)/?(?:paths/)?(.*)$")
KINDS = r"(?P<kind>environments|codes|components|models|data)"
ARM_TYPES = {"environments": "environments", "codes": "codes", "components": "components",
             "models": "models", "data": "data"}


def system_data(created: str, modified: str | None = None) -> dict:
    return {"createdAt": created, "createdBy": "slmforge-emulator", "createdByType": "User",
            "lastModifiedAt": modified or created, "lastModifiedBy": "slmforge-emulator",
            "lastModifiedByType": "User"}


def version_body(scope_id: str, kind: str, name: str, version: str, properties: dict, created: str) -> dict:
    props = dict(properties)
    props["provisioningState"] = "Succeeded"
    props.setdefault("properties", {})
    props.setdefault("tags", {})
    props.setdefault("isArchived", False)
    if kind == "models":
        props.setdefault("flavors", {})  # the SDK's model deserializer needs it
    scope = "registries" if "/registries/" in scope_id else "workspaces"
    return {"id": f"{scope_id}/{kind}/{name}/versions/{version}", "name": version,
            "type": f"Microsoft.MachineLearningServices/{scope}/{ARM_TYPES[kind]}/versions",
            "systemData": system_data(created), "properties": props}


def put_version(emu: Emulator, scope_id: str, table: str, kind: str, name: str, version: str,
                properties: dict, key: str | None = None) -> tuple[dict, bool]:
    """Store a version (keeping its first creation time); return (body, created)."""
    key = key or f"{name}/{version}"
    old = emu.store.get(table, key)
    created = old["systemData"]["createdAt"] if old else now_iso()
    body = version_body(scope_id, kind, name, version, properties, created)
    emu.store.put(table, key, body)
    return body, old is None


def container_body(scope_id: str, kind: str, name: str, versions: list[dict]) -> dict:
    latest = versions[-1]["name"] if versions else None
    numeric = [int(v["name"]) for v in versions if v["name"].isdigit()]
    return {"id": f"{scope_id}/{kind}/{name}", "name": name,
            "type": f"Microsoft.MachineLearningServices/workspaces/{ARM_TYPES[kind]}",
            "systemData": versions[0]["systemData"] if versions else system_data(now_iso()),
            "properties": {"latestVersion": latest, "nextVersion": str(max(numeric, default=0) + 1),
                           "isArchived": False, "description": None, "tags": {}, "properties": {},
                           "provisioningState": "Succeeded"}}


def list_versions(versions: list[dict], query: dict[str, str]) -> list[dict]:
    if h := query.get("hash"):
        versions = [v for v in versions if v["properties"].get("properties", {}).get("hash_sha256") == h]
    if "desc" in query.get("$orderby", "").lower():
        versions = list(reversed(versions))
    if (top := query.get("$top", "")).isdigit():
        versions = versions[: int(top)]
    return versions


@route("PUT", WS + "/" + KINDS + r"/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")
def put_asset(emu: Emulator, req: Request, sub, rg, ws, kind, name, version) -> Reply:
    properties = req.json.get("properties")
    if not isinstance(properties, dict):
        return error(400, "UserError", f"PUT {kind}/{name}/versions/{version}: body has no 'properties'")
    if kind == "components" and isinstance(properties.get("componentSpec"), dict):
        properties["componentSpec"].setdefault("name", name)
        properties["componentSpec"]["version"] = version
    if kind == "models":
        uri = properties.get("modelUri") or ""
        if m := JOB_OUTPUT.match(uri):
            resolved = (emu.store.get("job-outputs", m.group(1)) or {}).get(m.group(2))
            if resolved is None:
                return error(400, "UserError", f"{uri}: job '{m.group(1)}' has no finished output '{m.group(2)}'")
            properties["modelUri"] = resolved.rstrip("/") + "/" + m.group(3) if m.group(3) else resolved
            properties["jobName"] = m.group(1)
    body, created = put_version(emu, emu.ws_id, kind, kind, name, version, properties)
    return Reply(201 if created else 200, body)


@route("GET", WS + "/" + KINDS + r"/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")
def get_asset(emu: Emulator, req: Request, sub, rg, ws, kind, name, version) -> Reply:
    body = emu.store.get(kind, f"{name}/{version}")
    return Reply(200, body) if body else not_found(f"{kind} '{name}' version '{version}'")


@route("GET", WS + "/" + KINDS + r"/(?P<name>[^/]+)/versions")
def get_asset_versions(emu: Emulator, req: Request, sub, rg, ws, kind, name) -> Reply:
    # A content-hash lookup spans every code asset: the SDK asks under a fresh random name.
    scope = "" if kind == "codes" and req.query.get("hash") else f"{name}/"
    return Reply(200, {"value": list_versions(emu.store.list(kind, scope), req.query), "nextLink": None})


@route("GET", WS + "/" + KINDS + r"/(?P<name>[^/]+)")
def get_container(emu: Emulator, req: Request, sub, rg, ws, kind, name) -> Reply:
    versions = emu.store.list(kind, f"{name}/")
    if not versions:
        return not_found(f"{kind} '{name}'")
    return Reply(200, container_body(emu.ws_id, kind, name, versions))


@route("GET", WS + "/" + KINDS)
def list_containers(emu: Emulator, req: Request, sub, rg, ws, kind) -> Reply:
    by_name: dict[str, list[dict]] = {}
    for doc in emu.store.list(kind):
        by_name.setdefault(doc["id"].split("/")[-3], []).append(doc)
    return Reply(200, {"value": [container_body(emu.ws_id, kind, n, v) for n, v in by_name.items()],
                       "nextLink": None})


def pending_upload(emu: Emulator, req: Request, *, own_container: bool = False) -> Reply:
    """Where the SDK may upload an asset's files, with a SAS signed with the dev key.

    Workspace assets: a fresh folder in the datastore container, path-style URL (no name
    resolution needed). Registry assets: a fresh container, production-style URL
    (<account>.blob.<endpoint>/<container>), because the SDK reads the container and the path out of
    a registry asset's URI by position."""
    upload_id = uuid.uuid4().hex
    if own_container:
        container = f"registry-{upload_id[:24]}"
        emu.blob.create_container(container)
        blob_uri = f"https://{azurite.ACCOUNT}.blob.{emu.storage_endpoint}/{container}"
    else:
        container = azurite.DATASTORE_CONTAINER
        blob_uri = f"{azurite.account_url(emu.config.azurite_port)}/{container}/LocalUpload/{upload_id}"
    sas = azurite.container_sas(container, write=True)
    return Reply(200, {
        "blobReferenceForConsumption": {
            "blobUri": blob_uri,
            "storageAccountArmId": f"/subscriptions/{emu.config.subscription}/resourceGroups/"
                                   f"{emu.config.resource_group}/providers/Microsoft.Storage/"
                                   f"storageAccounts/{azurite.ACCOUNT}",
            "credential": {"credentialType": "SAS", "sasUri": f"{blob_uri}?{sas}"},
        },
        "pendingUploadId": upload_id,
        "pendingUploadType": "TemporaryBlobReference",
    })


@route("POST", WS + "/" + KINDS + r"/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/startPendingUpload")
def start_pending_upload(emu: Emulator, req: Request, sub, rg, ws, kind, name, version) -> Reply:
    return pending_upload(emu, req)
