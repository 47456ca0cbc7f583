"""Workspace, computes, datastores and the discovery document, shaped like the real service's."""

from __future__ import annotations

from slmforge.emulator import azurite
from slmforge.emulator.context import Emulator
from slmforge.emulator.routing import WS, Reply, Request, error, not_found, route

SYSTEM_DATA = {"createdAt": "2026-01-01T00:00:00.000000Z", "createdBy": "slmforge-emulator",
               "createdByType": "User", "lastModifiedAt": "2026-01-01T00:00:00.000000Z",
               "lastModifiedBy": "slmforge-emulator", "lastModifiedByType": "User"}


def check_scope(emu: Emulator, sub: str, rg: str, ws: str) -> Reply | None:
    """A 404 for any workspace but the emulated one (the server checks this before each handler)."""
    c = emu.config
    if (sub.lower(), rg.lower(), ws.lower()) != (c.subscription.lower(), c.resource_group.lower(),
                                                 c.workspace.lower()):
        return error(404, "ResourceNotFound",
                     f"workspace {sub}/{rg}/{ws} does not exist; this emulator serves "
                     f"{c.subscription}/{c.resource_group}/{c.workspace}")
    return None


def workspace_body(emu: Emulator) -> dict:
    c = emu.config
    arm = f"/subscriptions/{c.subscription}/resourceGroups/{c.resource_group}/providers"
    return {
        "id": emu.ws_id, "name": c.workspace, "type": "Microsoft.MachineLearningServices/workspaces",
        "location": "local", "kind": "Default", "tags": {}, "systemData": SYSTEM_DATA,
        "identity": {"type": "SystemAssigned", "principalId": "00000000-0000-0000-0000-0000000000bb",
                     "tenantId": c.tenant},
        "sku": {"name": "Basic", "tier": "Basic"},
        "properties": {
            "friendlyName": c.workspace, "description": "slmforge emulated workspace (loopback only)",
            "workspaceId": "00000000-0000-0000-0000-0000000000cc",
            "storageAccount": f"{arm}/Microsoft.Storage/storageAccounts/{azurite.ACCOUNT}",
            "keyVault": f"{arm}/Microsoft.KeyVault/vaults/{c.keyvault}",
            "applicationInsights": f"{arm}/Microsoft.Insights/components/emulator",
            "discoveryUrl": f"{emu.base_url}/discovery",
            "mlFlowTrackingUri": emu.mlflow_tracking_uri,
            "provisioningState": "Succeeded", "hbiWorkspace": False, "publicNetworkAccess": "Enabled",
            "v1LegacyMode": False, "enableDataIsolation": False, "storageHnsEnabled": False,
        },
    }


@route("GET", WS)
def get_workspace(emu: Emulator, req: Request, sub: str, rg: str, ws: str) -> Reply:
    return Reply(200, workspace_body(emu))


@route("GET", r"/discovery")
def discovery(emu: Emulator, req: Request) -> Reply:
    return Reply(200, {"api": emu.base_url, "catalog": emu.base_url, "experimentation": emu.base_url,
                       "history": emu.base_url, "modelmanagement": emu.base_url,
                       "pipelines": emu.base_url, "studiometadata": emu.base_url})


def compute_body(emu: Emulator, name: str) -> dict:
    gpu = "gpu" in name.lower()
    return {
        "id": f"{emu.ws_id}/computes/{name}", "name": name, "location": "local",
        "type": "Microsoft.MachineLearningServices/workspaces/computes", "tags": {},
        "systemData": SYSTEM_DATA,
        "properties": {
            "computeType": "AmlCompute", "computeLocation": "local", "provisioningState": "Succeeded",
            "description": "emulated cluster: jobs run on this machine", "isAttachedCompute": False,
            "disableLocalAuth": True, "createdOn": SYSTEM_DATA["createdAt"],
            "modifiedOn": SYSTEM_DATA["createdAt"],
            "properties": {
                "vmSize": "STANDARD_NC6S_V3" if gpu else "STANDARD_DS3_V2", "vmPriority": "Dedicated",
                "osType": "Linux", "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 2,
                                                     "nodeIdleTimeBeforeScaleDown": "PT120S"},
                "remoteLoginPortPublicAccess": "NotSpecified", "allocationState": "Steady",
                "allocationStateTransitionTime": SYSTEM_DATA["createdAt"], "currentNodeCount": 0,
                "targetNodeCount": 0, "enableNodePublicIp": True,
            },
        },
    }


@route("GET", WS + r"/computes")
def list_computes(emu: Emulator, req: Request, sub: str, rg: str, ws: str) -> Reply:
    return Reply(
        200, {"value": [compute_body(emu, n) for n in emu.config.computes]})


@route("GET", WS + r"/computes/(?P<name>[^/]+)")
def get_compute(emu: Emulator, req: Request, sub: str, rg: str, ws: str, name: str) -> Reply:
    for known in emu.config.computes:
        if known.lower() == name.lower():
            return Reply(200, compute_body(emu, known))
    return not_found(f"compute '{name}' (known: {', '.join(emu.config.computes)})")


def datastore_body(emu: Emulator) -> dict:
    return {
        "id": f"{emu.ws_id}/datastores/workspaceblobstore", "name": "workspaceblobstore",
        "type": "Microsoft.MachineLearningServices/workspaces/datastores", "systemData": SYSTEM_DATA,
        "properties": {
            "datastoreType": "AzureBlob", "accountName": azurite.ACCOUNT,
            "containerName": azurite.DATASTORE_CONTAINER, "endpoint": emu.storage_endpoint.split(":")[0],
            "protocol": "https", "serviceDataAccessAuthIdentity": "None", "isDefault": True,
            "credentials": {"credentialsType": "AccountKey"}, "description": "Azurite blob container",
            "properties": {}, "tags": {},
        },
    }


@route("GET", WS + r"/datastores")
def list_datastores(emu: Emulator, req: Request, sub: str, rg: str, ws: str) -> Reply:
    return Reply(200, {"value": [datastore_body(emu)]})


@route("GET", WS + r"/datastores/(?P<name>[^/]+)")
def get_datastore(emu: Emulator, req: Request, sub: str, rg: str, ws: str, name: str) -> Reply:
    return unknown_datastore(name) or Reply(200, datastore_body(emu))


@route("POST", WS + r"/datastores/(?P<name>[^/]+)/listSecrets")
def list_secrets(emu: Emulator, req: Request, sub: str, rg: str, ws: str, name: str) -> Reply:
    return unknown_datastore(name) or Reply(200, {"secretsType": "AccountKey", "key": azurite.ACCOUNT_KEY})


def unknown_datastore(name: str) -> Reply | None:
    """The emulator has one datastore, Azurite's container behind workspaceblobstore."""
    if name.lower() != "workspaceblobstore":
        return not_found(f"datastore '{name}' (known: workspaceblobstore)")
    return None
