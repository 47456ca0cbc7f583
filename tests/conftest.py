"""Shared fixtures: the tiny Phi-3 is built once per test session, not once per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED_RELATIVE = Path("data") / "phrase-classification" / "dataset-classification.json"


def _seed_data() -> Path:
    """The seed data set in the workplace's shared/ folder: beside this checkout, or, for a clone of a
    local checkout made elsewhere (a mktemp clone), beside the checkout it was cloned from.
    SLMFORGE_SHARED_DIR names the folder outright."""
    import subprocess

    candidates = [Path(os.environ["SLMFORGE_SHARED_DIR"])] if os.environ.get("SLMFORGE_SHARED_DIR") else []
    candidates.append(REPO.parent / "shared")
    origin = subprocess.run(["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
                            capture_output=True, text=True).stdout.strip()
    if origin and Path(origin).is_dir():  # a local path, not a URL
        candidates.append(Path(origin).resolve().parent / "shared")
    found = next((c / SEED_RELATIVE for c in candidates if (c / SEED_RELATIVE).is_file()), None)
    return found or candidates[0] / SEED_RELATIVE


SEED_DATA = _seed_data()

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Runs track themselves in MLflow by default; a test run does only where it checks that (local_pipeline's
# track=True): the store's first use costs seconds.
os.environ.setdefault("SLMFORGE_REPORT_TO", "none")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Phi-3 with its ByteLevel BPE tokenizer (read-only: copy it before changing it)."""
    from slmforge.models.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "phi3-tiny", seed=0)


@pytest.fixture(scope="session")
def phi3_stand_in_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny Phi-3 with Phi-3-mini's 4096-token context in its config.json (read-only): a model folder for
    recipe tests written for Phi-3-mini, whose max_seq_len (1024, 2048) validate checks against the context."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("phi3-stand-in") / "phi-3-mini"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(max_position_embeddings=4096, original_max_position_embeddings=4096)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (read-only), written once per machine.

    It lives where the shipped recipes expect it (.slmforge/models/), so the demo and the tests
    share one conversion; write_pretrained is a no-op when the folder already holds it."""
    from slmforge.models.pretrained import write_pretrained

    folder, _ = write_pretrained("smollm2-135m-instruct", REPO / ".slmforge" / "models" / "smollm2-135m-instruct")
    return folder


@pytest.fixture(scope="session")
def seed_data() -> Path:
    """The Cookbook's phrase/tone data set, read from ../shared (never committed here)."""
    if not SEED_DATA.is_file():
        pytest.fail(f"seed data set missing: {SEED_DATA}")
    return SEED_DATA


@pytest.fixture(scope="session")
def demo_data() -> Path:
    from slmforge.models.tinymodel import demo_data_path

    return demo_data_path()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """(state folder, workspace file) of one emulated Azure ML workspace shared by the session.

    Azurite is npm-installed on first use; everything listens on 127.0.0.1 only. Tests that
    inject faults must set the rate back to 0 when they finish.
    """
    from slmforge.emulator import control

    folder = tmp_path_factory.mktemp("emulator")
    info = control.start(folder, faults={"rate": 0.0})
    yield folder, Path(info["workspace_file"])
    control.stop(folder)


@pytest.fixture(scope="session")
def two_runs(tiny_model_dir, demo_data, tmp_path_factory) -> dict:
    """Two ExtractAdapters recipes fine-tuning the tiny model into one cache (tests/adapter_recipes.py)."""
    from adapter_recipes import run_two_recipes

    return run_two_recipes(tiny_model_dir, demo_data, tmp_path_factory.mktemp("separate-adapters"))
