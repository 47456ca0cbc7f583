"""Registry discovery and registry model versions (what `azureml://registries/...` inputs resolve to),
and the import of a workspace model into a registry (what `ml_client.models.share` asks for)."""

from __future__ import annotations

import re

from slmforge.emulator.arm_assets import container_body, list_versions, pending_upload, put_version
from slmforge.emulator.context import Emulator
from slmforge.emulator.routing import REG, Reply, Request, error, not_found, route

TABLE = "registry-models"


def registry_scope(registry: str) -> str:
    """Registry asset ids are azureml:// URIs (the SDK parses them so), not ARM paths."""
    return f"azureml://registries/{registry}"


def key(registry: str, name: str, version: str = "") -> str:
    return f"{registry}/{name}/{version}"


@route("GET", r"/registrymanagement/v1\.0/registries/(?P<registry>[^/]+)/discovery")
def discover(emu: Emulator, req: Request, registry: str) -> Reply:
    c = emu.config
    if registry not in c.registries:
        return error(404, "NotFound", f"registry '{registry}' not found (the emulated tenant has "
                                      f"{', '.join(c.registries)})")
    return Reply(200, {"registryName": registry, "tenantId": c.tenant, "primaryRegion": "local",
                       "regions": ["local"], "subscriptionId": c.subscription, "resourceGroup": c.resource_group,
                       "workspaceName": None, "primaryRegionResourceProviderUri": emu.base_url + "/"})


@route("GET", REG + r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")
def get_model(emu: Emulator, req: Request, sub, rg, registry, name, version) -> Reply:
    body = emu.store.get(TABLE, key(registry, name, version))
    return Reply(200, body) if body else not_found(f"model '{name}' version '{version}' in registry '{registry}'")


@route("GET", REG + r"/models/(?P<name>[^/]+)/versions")
def list_models(emu: Emulator, req: Request, sub, rg, registry, name) -> Reply:
    return Reply(200, {"value": list_versions(emu.store.list(TABLE, key(registry, name)), req.query),
                       "nextLink": None})


@route("GET", REG + r"/models")
def list_model_containers(emu: Emulator, req: Request, sub, rg, registry) -> Reply:
    by_name: dict[str, list[dict]] = {}
    for doc in emu.store.list(TABLE, f"{registry}/"):
        by_name.setdefault(doc["id"].split("/models/")[1].split("/")[0], []).append(doc)
    return Reply(200, {"value": [container_body(registry_scope(registry), "models", n, v)
                                 for n, v in sorted(by_name.items())], "nextLink": None})


# The workspace model a share names: azureml://locations/<loc>/workspaces/<guid>/models/<name>/versions/<v>
_SOURCE = re.compile(r"^azureml://locations/[^/]+/workspaces/[^/]+/models/([^/]+)/versions/([^/]+)$")


@route("POST", REG + r"/import")
def import_asset(emu: Emulator, req: Request, sub, rg, registry) -> Reply:
    """Copy a workspace model into the registry (same files: the emulator shares one storage)."""
    props = req.json.get("properties") or {}
    m = _SOURCE.match(str(props.get("sourceAssetId", "")))
    if not m:
        return error(400, "UserError", f"import: sourceAssetId {props.get('sourceAssetId')!r} is not a workspace model")
    source = emu.store.get("models", f"{m.group(1)}/{m.group(2)}")
    if source is None:
        return not_found(f"model '{m.group(1)}' version '{m.group(2)}'")
    name, version = props.get("destinationName") or m.group(1), props.get("destinationVersion") or m.group(2)
    if emu.store.get(TABLE, key(registry, name, version)):
        return error(409, "UserError", f"model '{name}' version '{version}' already exists in '{registry}'")
    copied = {k: v for k, v in source["properties"].items() if k != "provisioningState"}
    put_version(emu, registry_scope(registry), TABLE, "models", name, version, copied,
                key=key(registry, name, version))
    return Reply(202)  # an import is a long-running operation; this one is already done


@route("GET", REG + r"/models/(?P<name>[^/]+)")
def get_model_container(emu: Emulator, req: Request, sub, rg, registry, name) -> Reply:
    versions = emu.store.list(TABLE, key(registry, name))
    if not versions:
        return not_found(f"model '{name}' in registry '{registry}'")
    return Reply(200, container_body(registry_scope(registry), "models", name, versions))


@route("PUT", REG + r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")
def put_model(emu: Emulator, req: Request, sub, rg, registry, name, version) -> Reply:
    properties = req.json.get("properties")
    if not isinstance(properties, dict):
        return error(400, "UserError", "registry model body has no 'properties'")
    body, created = put_version(emu, registry_scope(registry), TABLE, "models", name, version, properties,
                                key=key(registry, name, version))
    return Reply(201 if created else 200, body)


@route("POST", REG + r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/startPendingUpload")
def model_pending_upload(emu: Emulator, req: Request, sub, rg, registry, name, version) -> Reply:
    return pending_upload(emu, req, own_container=True)


@route("PUT", REG + r"/tempdatarefs/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")
def temp_data_ref(emu: Emulator, req: Request, sub, rg, registry, name, version) -> Reply:
    """Where the SDK uploads a registry asset's files before it PUTs the version."""
    if emu.store.get(TABLE, key(registry, name, version)):
        return error(409, "UserError", f"model '{name}' version '{version}' already exists in '{registry}'")
    return pending_upload(emu, req, own_container=True)


@route("POST", REG + r"/datarefs/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")
def data_ref(emu: Emulator, req: Request, sub, rg, registry, name, version) -> Reply:
    """A read SAS for a registry model's files (what `models.download` asks for)."""
    from slmforge.emulator import azurite

    doc = emu.store.get(TABLE, key(registry, name, version))
    if doc is None:
        return not_found(f"model '{name}' version '{version}' in registry '{registry}'")
    container = azurite.split_blob_url(doc["properties"]["modelUri"])[0]
    url = f"https://{azurite.ACCOUNT}.blob.{emu.storage_endpoint}/{container}"
    sas = azurite.container_sas(container, write=False)
    return Reply(200, {"blobReferenceForConsumption": {"blobUri": url, "storageAccountArmId": None,
                                                       "credential": {"credentialType": "SAS",
                                                                      "sasUri": f"{url}?{sas}"}}})
