"""Clients for the emulated workspace: `ml_client(workspace_file)` and `secret_client(...)`.

The SDK needs three things the real cloud gives for free: a cloud whose endpoints point at
127.0.0.1 (registered once per process), trust in the emulator's self-signed certificate
(REQUESTS_CA_BUNDLE), and names `<account>.blob.core.localhost` resolving to loopback (RFC 6761
reserves `.localhost` for that; glibc doesn't do it, so this module makes this process do it).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from slmforge.emulator import workspace_file
from slmforge.errors import InvalidInput

_patch_lock = threading.Lock()
_patched = False
_trusted: dict[str, str] = {}  # certificate path -> PEM
HANDSHAKE_TIMEOUT_S = 3.0


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class EmulatorCredential:
    """A TokenCredential for the emulator: an unsigned JWT with the audience the SDK checks."""

    def __init__(self, tenant_id: str = "00000000-0000-0000-0000-0000000000aa"):
        self.tenant_id = tenant_id

    def get_token(self, *scopes: str, **kwargs: Any):
        from azure.core.credentials import AccessToken

        now = int(time.time())
        audience = (scopes[0] if scopes else "https://ml.azure.com").removesuffix("/.default")
        claims = {"aud": audience, "iss": "slmforge-emulator", "tid": self.tenant_id, "iat": now,
                  "nbf": now, "exp": now + 3600, "oid": "00000000-0000-0000-0000-0000000000dd",
                  "upn": "user@emulator.localhost", "name": "emulator user"}
        return AccessToken(f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.", now + 3600)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def resolve_localhost_names() -> None:
    """Make `*.localhost` resolve to 127.0.0.1 in this process (idempotent)."""
    global _patched
    with _patch_lock:
        if _patched:
            return
        original = socket.getaddrinfo

        def getaddrinfo(host, *args, **kwargs):
            if isinstance(host, str) and host.lower().rstrip(".").endswith(".localhost"):
                host = "127.0.0.1"
            return original(host, *args, **kwargs)

        socket.getaddrinfo = getaddrinfo
        _patched = True


def prepare(workspace: str | Path) -> dict[str, Any]:
    """Read the workspace file and set up this process to reach it; return the file's contents."""
    info = workspace_file.read(workspace)
    check_ca_bundle(info, workspace)
    trust(Path(info["ca_bundle"]))
    resolve_localhost_names()
    return info


def check_ca_bundle(info: dict[str, Any], workspace: str | Path) -> None:
    """One TLS handshake with the emulator trusting only the file's ca_bundle, so that a wrong bundle is
    named at once (through the SDK, a failed handshake is retried like a dropped connection, then
    reported as no usable answer)."""
    bundle = Path(str(info.get("ca_bundle") or ""))
    where = f"{workspace}: ca_bundle {bundle}"
    if not bundle.is_file():
        raise InvalidInput(f"{where}: no such file (the emulator's certificate is DIR/tls/cert.pem)")
    try:
        context = ssl.create_default_context(cafile=str(bundle))
    except ssl.SSLError as e:
        raise InvalidInput(f"{where}: not a PEM certificate ({e.reason or e})") from None
    url = urlsplit(info.get("endpoint") or "")
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=HANDSHAKE_TIMEOUT_S) as sock:
            context.wrap_socket(sock, server_hostname=url.hostname).close()
    except ssl.SSLCertVerificationError as e:
        raise InvalidInput(f"{where}: the emulator at {info['endpoint']} presents a certificate this bundle does not "
                           f"verify ({e.verify_message}); is it that emulator's tls/cert.pem?") from None
    except OSError:
        return  # not reachable, or not TLS: the caller's own calls report that


def trust(cert: Path) -> None:
    """Trust an emulator's certificate in this process (REQUESTS_CA_BUNDLE, read by requests and so
    by azure-core). Several emulators (or one restarted with a new certificate) are all trusted:
    the bundle is rewritten from every certificate seen, read afresh."""
    if not cert.is_file():
        raise InvalidInput(f"{cert}: the emulator's certificate is gone (is it running?)")
    with _patch_lock:
        _trusted[str(cert)] = cert.read_text()
        if len(_trusted) == 1:
            os.environ["REQUESTS_CA_BUNDLE"] = str(cert)
            return
        bundle = Path(tempfile.gettempdir()) / f"slmforge-emulator-ca-{os.getpid()}.pem"
        bundle.write_text("".join(_trusted.values()))
        os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)


def ml_client(workspace: str | Path, *, registry_name: str | None = None, **kwargs: Any):
    """An `MLClient` for the emulated workspace (or one of its registries)."""
    from azure.ai.ml import MLClient

    info = prepare(workspace)
    scope = {"registry_name": registry_name} if registry_name else {"workspace_name": info["workspace_name"]}
    return MLClient(EmulatorCredential(info["tenant_id"]), info["subscription_id"], info["resource_group"],
                    cloud=info["cloud"]["name"], cloud_metadata=info["cloud"]["metadata"],
                    show_progress=False, enable_telemetry=False, **scope, **kwargs)


def secret_client(workspace: str | Path):
    """A Key Vault `SecretClient` on the emulator's vault, authenticated as the user."""
    from azure.keyvault.secrets import SecretClient

    info = prepare(workspace)
    return SecretClient(info["keyvault_url"], EmulatorCredential(info["tenant_id"]),
                        verify_challenge_resource=False)
