"""The running emulator's shared state: its configuration, the store, tokens and the blob client."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slmforge.emulator import azurite
from slmforge.emulator.faults import Faults
from slmforge.emulator.store import Store

CONFIG_FILE = "config.json"
DEFAULT_COMPUTES = ["cpu-cluster", "gpu-cluster"]
# Registries the emulated tenant has (Azure ML's public ones and the demo's): any other is not found.
DEFAULT_REGISTRIES = ["azureml", "azureml-msr", "emulated-registry", "slmforge-demo-registry"]


@dataclass
class Config:
    """What `emulator start` chose; kept in DIR/config.json so a restart reuses names and ports."""

    port: int = 0
    azurite_port: int = 0
    subscription: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "slmforge-emulator"
    workspace: str = "emulated-workspace"
    tenant: str = "00000000-0000-0000-0000-0000000000aa"
    keyvault: str = "kv-emulator"
    computes: list[str] = field(default_factory=lambda: list(DEFAULT_COMPUTES))
    registries: list[str] = field(default_factory=lambda: list(DEFAULT_REGISTRIES))
    faults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> "Config":
        path = folder / CONFIG_FILE
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def save(self, folder: Path) -> None:
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self), indent=2))


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Emulator:
    def __init__(self, folder: Path, config: Config, ca_file: Path):
        self.dir = folder
        self.config = config
        self.ca_file = ca_file
        self.store = Store(folder / "state.sqlite")
        self.lock = threading.Lock()
        self.msi_tokens: dict[str, str] = {}  # access token -> job name (valid while that job runs)
        self.msi_secrets: dict[str, str] = {}  # MSI_SECRET handed to a running job -> job name
        self.faults = Faults(config.faults)
        self.counters: dict[str, int] = {}  # route handler name -> requests answered
        self.executor = None  # set by the daemon
        self._blob = None

    # --- addresses and ids -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.config.port}"

    @property
    def ws_id(self) -> str:
        c = self.config
        return (f"/subscriptions/{c.subscription}/resourceGroups/{c.resource_group}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{c.workspace}")

    @property
    def mlflow_tracking_uri(self) -> str:
        """The workspace's `mlFlowTrackingUri`, as Azure ML writes it (and hands jobs as MLFLOW_TRACKING_URI)."""
        return f"azureml://127.0.0.1:{self.config.port}/mlflow/v1.0{self.ws_id}"

    @property
    def storage_endpoint(self) -> str:
        """What the SDK appends to `<account>.blob.`: resolved to 127.0.0.1 by client.py."""
        return f"core.localhost:{self.config.azurite_port}"

    def vault_url(self) -> str:
        """The one emulated vault (whatever name a recipe gives it) is served at the root."""
        return self.base_url

    # --- storage -------------------------------------------------------------------------------
    @property
    def blob(self):
        if self._blob is None:
            self._blob = azurite.service_client(self.config.azurite_port, self.ca_file)
        return self._blob

    def datastore_uri(self, path: str) -> str:
        return f"azureml://datastores/workspaceblobstore/paths/{path.lstrip('/')}"

    # --- secrets (Key Vault) -------------------------------------------------------------------
    def issue_msi(self, job: str) -> str:
        secret = secrets.token_urlsafe(24)
        with self.lock:
            self.msi_secrets[secret] = job
        return secret

    def revoke_msi(self, job: str) -> None:
        with self.lock:
            for table in (self.msi_secrets, self.msi_tokens):
                for key in [k for k, v in table.items() if v == job]:
                    del table[key]
