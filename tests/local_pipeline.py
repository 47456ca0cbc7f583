"""Helpers for the local-backend tests: small recipes in tmp folders, `slmforge run` as a process,
and ONE warm pipeline run per test session shared by test_local_run, test_cache and test_register.

The warm run is stored under pytest's session base temp folder with a lock, so the modules that
use it (each with its own module fixture) build it once per session.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLMFORGE = [sys.executable, "-m", "slmforge.cli"]

# Small enough for seconds per step on the tiny model, big enough to learn the tone a bit.
BASE_RECIPE = {
    "input_model": {"type": "PyTorchModel", "config": {"hf_config": {"model_name": "MODEL"}}},
    "data_configs": [{
        "name": "tones",
        "load_dataset_config": {"data_name": "json", "data_files": "tones.jsonl"},
        "pre_process_data_config": {
            "text_cols": ["phrase", "tone"],
            "text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
            "corpus_strategy": "line-by-line", "source_max_len": 64, "loss_on": "completion",
        },
    }],
    "passes": {
        "lora": {"type": "LoRA", "config": {
            "r": 8, "alpha": 16, "lora_dropout": 0.0, "train_data_config": "tones", "eval_dataset_size": 0.25,
            "training_args": {"seed": 0, "per_device_train_batch_size": 8, "learning_rate": 0.003,
                              "max_steps": 40, "logging_steps": 5, "save_steps": 10},
        }},
        "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "config": {"precision": "int4"}},
    },
    "engine": {"evaluate_input_model": True, "cache_dir": "cache", "output_dir": "out"},
    "evaluate": {"max_samples": 16, "max_new_tokens": 4},
    "register": {"name": "tiny-tones"},
}


def write_recipe(folder: Path, model_dir: Path, data_file: Path, *, cache_dir: Path | None = None,
                 edit=None, name: str = "recipe.json") -> Path:
    """A recipe in `folder` (its data copied next to it unless already there); `edit(recipe)` tweaks it."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = copy.deepcopy(BASE_RECIPE)
    recipe["input_model"]["config"]["hf_config"]["model_name"] = str(model_dir)
    if data_file.parent != folder:
        shutil.copyfile(data_file, folder / "tones.jsonl")
    if cache_dir is not None:
        recipe["engine"]["cache_dir"] = str(cache_dir)
    if edit is not None:
        edit(recipe)
    path = folder / name
    path.write_text(json.dumps(recipe, indent=2), encoding="utf-8")
    return path


@dataclass
class RunOutcome:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    out_dir: Path
    snapshot: dict | None = None  # run.json as the run left it (the warm run's: later reruns replace out/)

    @property
    def record(self) -> dict:
        if self.snapshot is not None:
            return self.snapshot
        return json.loads((self.out_dir / "run.json").read_text(encoding="utf-8"))

    def statuses(self) -> dict[str, str]:
        return {s["name"]: s["status"] for s in self.record["steps"]}


def env_for(home: Path, track: bool = False) -> dict[str, str]:
    """The environment of a `slmforge` process; `track`: with slmforge's default report_to (MLflow), not
    conftest's SLMFORGE_REPORT_TO=none."""
    env = dict(os.environ, SLMFORGE_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONUNBUFFERED="1", MLFLOW_DISABLE_TELEMETRY="true")
    if track:
        env.pop("SLMFORGE_REPORT_TO", None)
    return env


def start_run(recipe: Path, home: Path, *extra: str, track: bool = False) -> subprocess.Popen:
    return subprocess.Popen([*SLMFORGE, "run", str(recipe), "--plain", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(home, track), cwd=recipe.parent)


def run_slmforge(recipe: Path, home: Path, *extra: str, timeout: float = 600, track: bool = False) -> RunOutcome:
    started = time.monotonic()
    proc = start_run(recipe, home, *extra, track=track)
    stdout, stderr = proc.communicate(timeout=timeout)
    raw = json.loads(recipe.read_text())
    out_dir = recipe.parent / (raw.get("output_dir") or raw["engine"]["output_dir"])  # flat or Cookbook shape
    return RunOutcome(proc.returncode, stdout, stderr, time.monotonic() - started, out_dir)


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SLMFORGE, *args], capture_output=True, text=True, env=env_for(home), timeout=120)


@dataclass
class WarmPipeline:
    """A finished cold run: its recipe (in `folder`), cache, registry home and outcome."""

    folder: Path
    recipe: Path
    cache: Path
    home: Path
    model_dir: Path
    data_file: Path
    cold: RunOutcome

    def fork(self, dest: Path, edit=None) -> tuple[Path, Path]:
        """A copy of the warm cache and a recipe using it: for tests that change things."""
        cache = dest / "cache"
        shutil.copytree(self.cache, cache, symlinks=True)
        # Same relative cache_dir as the warm recipe: unedited, the recipe (and its digest) is identical.
        return write_recipe(dest, self.model_dir, self.data_file, edit=edit), cache


def warm_pipeline(tmp_path_factory, tiny_model_dir: Path, demo_data: Path) -> WarmPipeline:
    base = tmp_path_factory.getbasetemp() / "slmforge-warm-pipeline"
    base.mkdir(exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folder, home = base / "recipe", base / "home"
        recipe = folder / "recipe.json"
        saved = base / "outcome.json"
        if saved.is_file():
            data = json.loads(saved.read_text())
            cold = RunOutcome(data["rc"], data["stdout"], data["stderr"], data["seconds"], Path(data["out_dir"]),
                              data["record"])
        else:
            recipe = write_recipe(folder, tiny_model_dir, demo_data)
            cold = run_slmforge(recipe, home, track=True)  # tracked: test_tracking reads its MLflow run
            cold.snapshot = _frozen(cold, base / "cold-logs") if cold.rc == 0 else None
            saved.write_text(json.dumps({"rc": cold.rc, "stdout": cold.stdout, "stderr": cold.stderr,
                                         "seconds": cold.seconds, "out_dir": str(cold.out_dir),
                                         "record": cold.snapshot}))
    assert cold.rc == 0, f"the warm pipeline's cold run failed:\n{cold.stdout}\n{cold.stderr}"
    return WarmPipeline(folder, recipe, folder / "cache", home, tiny_model_dir, folder / "tones.jsonl", cold)


def _frozen(outcome: RunOutcome, logs: Path) -> dict:
    """The run's record with its step logs copied to `logs`: a later rerun of the same recipe (test_local_run)
    replaces out/run.json and out/logs/, and the tests reading the cold run read these."""
    record = outcome.record
    shutil.copytree(outcome.out_dir / "logs", logs)
    for step in record["steps"]:
        if step.get("log"):
            step["log"] = str(logs / Path(step["log"]).name)
    return record


def tracked_run(home: Path, stdout: str):
    """The MLflow run a tracked `slmforge run` named in its summary, and its step runs by step name."""
    import re

    from slmforge.registry.mlflow_store import client_for

    found = re.search(r"tracked: MLflow run (\w+) \(experiment [^)]+\): mlflow ui --backend-store-uri (\S+)", stdout)
    assert found, stdout
    client = client_for(found.group(2))
    run = client.get_run(found.group(1))
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    return client, run, {r.data.tags["slmforge.step"]: r for r in children}


def cache_entries(cache: Path, component: str) -> list[Path]:
    folder = cache / component
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, read_only: bool = False):
    """A real tmpfs mounted at `where` (a full disk, or a read-only folder even for root); pytest.skip, with
    the reason, where this machine cannot mount one (not root, no mount permission)."""
    import pytest

    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)
