"""The Hugging Face token: `HF_TOKEN` here, the workspace Key Vault's secret `hf-token` in an Azure ML job.

Steps call `hf_token()` right before a hub download and pass the value straight to the library
(`token=`). It is never printed, logged, written to a manifest, put on a command line or into an
environment variable. A job knows only the vault's *name* (SLMFORGE_KEYVAULT, set on the nodes by
the Azure ML backend when the recipe says `hf_token: true`); the compute's managed identity reads
the secret.
"""

from __future__ import annotations

import os
from functools import lru_cache

from slmforge.errors import StepFailed

KEYVAULT_ENV = "SLMFORGE_KEYVAULT"  # vault name, or a full https URL (the emulator's fake vault)
SECRET_NAME = "hf-token"


def hf_token() -> str | None:
    """HF_TOKEN when set; else the Key Vault secret when the job names a vault; else None (public models)."""
    local = os.environ.get("HF_TOKEN")
    if local:
        return local
    vault = os.environ.get(KEYVAULT_ENV)
    if not vault:
        return None
    return _vault_secret(vault, SECRET_NAME)


def vault_url(vault: str) -> str:
    return vault.rstrip("/") if vault.startswith("https://") else f"https://{vault}.vault.azure.net"


@lru_cache(maxsize=4)
def _vault_secret(vault: str, name: str) -> str:
    from azure.core.exceptions import AzureError
    from azure.keyvault.secrets import SecretClient

    url = vault_url(vault)
    # A real vault proves its resource in the auth challenge; the emulator's loopback fake cannot.
    verify = url.endswith(".vault.azure.net")
    client = SecretClient(url, _job_credential(), verify_challenge_resource=verify)
    try:
        value = client.get_secret(name).value
    except AzureError as e:
        first = (getattr(e, "message", None) or str(e) or type(e).__name__).splitlines()[0]
        raise StepFailed(f"could not read secret '{name}' from Key Vault {url}: {first}") from None
    if not value:
        raise StepFailed(f"secret '{name}' in Key Vault {url} is empty")
    return value


def _job_credential():
    """Inside Azure ML: the compute's managed identity; elsewhere DefaultAzureCredential, never interactive."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    client_id = os.environ.get("DEFAULT_IDENTITY_CLIENT_ID")  # user-assigned identity of the compute
    if os.environ.get("MSI_ENDPOINT") or os.environ.get("IDENTITY_ENDPOINT"):
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(exclude_interactive_browser_credential=True,
                                  managed_identity_client_id=client_id)
