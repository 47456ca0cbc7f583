"""The workspace Key Vault (secrets GET/PUT with the bearer challenge) and the managed-identity
token endpoint that steps reach through MSI_ENDPOINT/MSI_SECRET, as inside Azure ML.

A secret is readable with the user's emulator token (the SDK credential) or with a token issued to
a running job that asked for it; a job's tokens are revoked when it ends.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time

from slmforge.emulator.context import Emulator
from slmforge.emulator.routing import Reply, Request, error, route

# The vault sits at the server's root (no AML path starts with /secrets): the Key Vault client
# parses secret ids as <vault>/secrets/<name>/<version>, so the vault URL can't carry a path.
VAULT = ""
SECRETS_FILE = "secrets.json"
TOKEN_ISSUER = "slmforge-emulator"


def _load(emu: Emulator) -> dict[str, dict]:
    path = emu.dir / SECRETS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(emu: Emulator, data: dict[str, dict]) -> None:
    path = emu.dir / SECRETS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _caller(emu: Emulator, req: Request) -> str | None:
    """'user', 'job:<name>', or None when the bearer token is missing or unknown."""
    auth = req.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        return None
    token = auth[7:].strip()
    with emu.lock:
        if token in emu.msi_tokens:
            return f"job:{emu.msi_tokens[token]}"
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    return "user" if claims.get("iss") == TOKEN_ISSUER else None


def _challenge(emu: Emulator) -> Reply:
    return Reply(401, {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer token."}},
                 {"WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{emu.config.tenant}",'
                                      f' resource="https://vault.azure.net"'})


def _bundle(emu: Emulator, name: str, entry: dict) -> dict:
    return {"value": entry["value"], "id": f"{emu.vault_url()}/secrets/{name}/{entry['version']}",
            "attributes": {"enabled": True, "created": entry["created"], "updated": entry["created"],
                           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
            "tags": {}}


@route("PUT", VAULT + r"/secrets/(?P<name>[^/]+)")
def set_secret(emu: Emulator, req: Request, name: str) -> Reply:
    caller = _caller(emu, req)
    if caller is None:
        return _challenge(emu)
    if caller != "user":
        return error(403, "Forbidden", "a job's identity may read secrets, not write them")
    value = req.json.get("value")
    if not isinstance(value, str):
        return error(400, "BadParameter", "secret body needs a string 'value'")
    with emu.lock:
        data = _load(emu)
        data[name] = {"value": value, "version": secrets.token_hex(16), "created": int(time.time())}
        _save(emu, data)
    return Reply(200, _bundle(emu, name, data[name]))


@route("GET", VAULT + r"/secrets/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?")
def get_secret(emu: Emulator, req: Request, name: str, version: str | None = None) -> Reply:
    if _caller(emu, req) is None:
        return _challenge(emu)
    entry = _load(emu).get(name)
    if entry is None or (version and version != entry["version"]):
        return error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
    return Reply(200, _bundle(emu, name, entry))


@route("GET", r"/msi/token")
def msi_token(emu: Emulator, req: Request) -> Reply:
    with emu.lock:
        job = emu.msi_secrets.get(req.headers.get("secret", ""))
        if job is None:
            return error(400, "invalid_request", "unknown or expired MSI secret")
        token = secrets.token_urlsafe(32)
        emu.msi_tokens[token] = job
    expires = int(time.time()) + 3600
    return Reply(200, {"access_token": token, "expires_on": expires, "expires_in": 3600,
                       "resource": req.query.get("resource", ""), "token_type": "Bearer"})
