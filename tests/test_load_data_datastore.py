"""load_data with an azureml://datastores/... URI outside a job: the file comes from blob storage (Azurite)."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from slmforge.steps import load_data

pytestmark = pytest.mark.timeout(300)
CONTAINER = "datastore-test"


@pytest.fixture(scope="module")
def blob_store(tmp_path_factory):
    """A plain-HTTP Azurite (the emulator's pinned install) with one container; yields its URL."""
    from azure.storage.blob import BlobServiceClient

    from slmforge.emulator import azurite

    script = azurite.ensure_installed()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["node", str(script), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                             "--location", str(tmp_path_factory.mktemp("azurite")), "--skipApiVersionCheck",
                             "--disableTelemetry", "--loose", "--silent"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/{azurite.ACCOUNT}"
    service = BlobServiceClient(url, credential={"account_name": azurite.ACCOUNT,
                                                 "account_key": azurite.ACCOUNT_KEY}, retry_total=0)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                service.create_container(CONTAINER)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield url, service.get_container_client(CONTAINER), azurite.container_sas(CONTAINER, write=False)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_datastore_uri_is_downloaded_and_named_in_the_manifest(blob_store, tmp_path, tiny_model_dir, demo_data,
                                                               monkeypatch, capsys):
    url, container, sas = blob_store
    container.upload_blob("data/tones.jsonl", demo_data.read_bytes(), overwrite=True)
    monkeypatch.setenv("SLMFORGE_DATASTORE_ACCOUNT_URL", url)
    monkeypatch.setenv("SLMFORGE_DATASTORE_CONTAINER", CONTAINER)
    monkeypatch.setenv("SLMFORGE_DATASTORE_SAS", "?" + sas)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"text_cols": ["phrase", "tone"], "text_template": "{phrase} -> {tone}"}))
    uri = "azureml://datastores/workspaceblobstore/paths/data/tones.jsonl"
    local = load_data.run(data=str(demo_data), spec=spec, tokenizer=tiny_model_dir, dataset=tmp_path / "local")
    remote = load_data.run(data=uri, spec=spec, tokenizer=tiny_model_dir, dataset=tmp_path / "remote")
    assert remote["inputs"]["data"] == {"path": uri, "digest": local["inputs"]["data"]["digest"]}
    assert (tmp_path / "remote" / "train.jsonl").read_bytes() == (tmp_path / "local" / "train.jsonl").read_bytes()

    rc = load_data.main(["--data", uri.replace("tones", "missing"), "--spec", str(spec),
                         "--tokenizer", str(tiny_model_dir), "--dataset", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.jsonl: no such file in the datastore" in err
    assert sas not in err and sas not in (tmp_path / "remote" / "slmforge.json").read_text()
    assert not (tmp_path / "none").exists()
