"""slmforge.secrets.hf_token(): HF_TOKEN locally, Key Vault secret `hf-token` inside an Azure ML job.

The job side runs the real azure-keyvault-secrets client and azure-identity's managed identity
credential (the Azure ML flavour: MSI_ENDPOINT + MSI_SECRET) against loopback servers: an HTTPS
vault (challenge 401, then the secret) and a plain-HTTP identity endpoint, as on AML compute.
"""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from slmforge import secrets
from slmforge.errors import StepFailed

FAKE_TOKEN = "hf_" + "FAKEvaultSECRETplantedBYtest42"  # built here so no token-shaped string is committed
IDENTITY_SECRET = "msi-header-value"  # what AML compute hands the job to call its identity endpoint


class _Recorder(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, dict]] = []
    secrets_held: dict[str, str] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def _json(self, status: int, body: dict, headers: dict | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class _Vault(_Recorder):
    def do_GET(self):
        url = urlsplit(self.path)
        type(self).requests.append(("vault", url.path, dict(self.headers)))
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            return self._json(401, {"error": {"code": "Unauthorized"}}, {
                "WWW-Authenticate": 'Bearer authorization="https://login.microsoftonline.com/'
                                    '00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net"'})
        name = url.path.split("/")[2]
        if name not in self.secrets_held:
            return self._json(404, {"error": {"code": "SecretNotFound", "message": f"A secret with (name/id) {name} was not found"}})
        host = f"https://{self.headers['Host']}"
        self._json(200, {"value": self.secrets_held[name], "id": f"{host}/secrets/{name}/1",
                         "attributes": {"enabled": True}})


class _Identity(_Recorder):
    def do_GET(self):
        url = urlsplit(self.path)
        type(self).requests.append(("identity", url.path, dict(self.headers)))
        if self.headers.get("secret") != IDENTITY_SECRET:
            return self._json(401, {"error": "bad secret"})
        resource = parse_qs(url.query)["resource"][0]
        self._json(200, {"access_token": "vault-access-token", "expires_on": "4102444800",
                         "resource": resource, "token_type": "Bearer"})


def _serve(handler, context=None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def job_env(tmp_path, monkeypatch):
    """An Azure ML job's view: a vault named by SLMFORGE_KEYVAULT, a managed identity endpoint."""
    from slmforge.emulator.tls import make_certificate

    cert, key = make_certificate(tmp_path / "tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    _Recorder.requests = []
    _Recorder.secrets_held = {"hf-token": FAKE_TOKEN}
    vault, identity = _serve(_Vault, context), _serve(_Identity)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    monkeypatch.setenv("MSI_ENDPOINT", f"http://127.0.0.1:{identity.server_address[1]}/msi/token")
    monkeypatch.setenv("MSI_SECRET", IDENTITY_SECRET)
    monkeypatch.setenv(secrets.KEYVAULT_ENV, f"https://127.0.0.1:{vault.server_address[1]}")
    secrets._vault_secret.cache_clear()
    yield _Recorder
    secrets._vault_secret.cache_clear()
    vault.shutdown()
    identity.shutdown()


def test_local_hf_token_env_wins_without_any_request(job_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_local_value")
    assert secrets.hf_token() == "hf_local_value"
    assert job_env.requests == []


def test_no_token_anywhere_is_none(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv(secrets.KEYVAULT_ENV, raising=False)
    assert secrets.hf_token() is None


def test_job_reads_hf_token_from_key_vault_with_managed_identity(job_env, capsys, caplog):
    assert secrets.hf_token() == FAKE_TOKEN
    kinds = [(kind, path) for kind, path, _ in job_env.requests]
    assert kinds == [("vault", "/secrets/hf-token/"), ("identity", "/msi/token"), ("vault", "/secrets/hf-token/")]
    assert job_env.requests[-1][2]["Authorization"] == "Bearer vault-access-token"
    assert secrets.hf_token() == FAKE_TOKEN  # cached for the process: no second round trip
    assert len(job_env.requests) == 3
    captured = capsys.readouterr()
    assert FAKE_TOKEN not in captured.out + captured.err + caplog.text


def test_missing_secret_is_one_clear_failure(job_env):
    job_env.secrets_held = {}
    with pytest.raises(StepFailed, match=r"could not read secret 'hf-token' from Key Vault https://127\.0\.0\.1:\d+: "):
        secrets.hf_token()


def test_vault_name_becomes_the_public_vault_url():
    assert secrets.vault_url("kv-slmforge") == "https://kv-slmforge.vault.azure.net"
    assert secrets.vault_url("https://127.0.0.1:8443/") == "https://127.0.0.1:8443"
