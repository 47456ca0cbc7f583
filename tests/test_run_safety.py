"""A local run under hostile conditions (issue 11): signals, a step that outlives its run, inputs that
change under a step, edits to an output folder, and the debris of killed writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slmforge.backends.local.cache import ENTRY
from slmforge.contract import manifest

from local_pipeline import cache_entries, run_slmforge, start_run, warm_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warm(tmp_path_factory, tiny_model_dir, demo_data):
    return warm_pipeline(tmp_path_factory, tiny_model_dir, demo_data)


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _untrained(warm, tmp_path):
    """A fork of the warm cache without its finetune entry: the next run trains (for seconds)."""
    recipe, cache = warm.fork(tmp_path)
    for entry in cache_entries(cache, "finetune"):
        subprocess.run(["rm", "-rf", str(entry)], check=True)
    return recipe, cache


def test_the_output_model_is_a_copy_so_editing_it_never_edits_the_cache(warm, tmp_path):
    """#7: out/model was hard-linked into the cache; an edit there rewrote the cache entry."""
    recipe, cache = warm.fork(tmp_path)
    first = run_slmforge(recipe, warm.home)
    assert first.rc == 0, first.stderr
    model = tmp_path / "out" / "model"
    [entry] = cache_entries(cache, "build_onnx")
    for file in (p for p in model.rglob("*") if p.is_file()):
        cached = entry / "model" / file.relative_to(model)
        assert file.stat().st_nlink == 1 and file.stat().st_ino != cached.stat().st_ino, file
    config = model / "genai_config.json"
    cached_config = (entry / "model" / "genai_config.json").read_text()
    config.write_text(config.read_text().replace('"top_k"', '"top_k_edited"'))
    assert (entry / "model" / "genai_config.json").read_text() == cached_config

    again = run_slmforge(recipe, warm.home)
    assert again.rc == 0, again.stderr
    assert set(again.statuses().values()) == {"cached"} and "corrupt" not in again.stdout
    assert config.read_text() == cached_config  # the run put its own model back


def test_sigterm_stops_a_run_like_ctrl_c_and_run_json_says_so(warm, tmp_path):
    """#6: SIGTERM left no 'interrupted' line and run.json still said the earlier run `succeeded`."""
    recipe, cache = warm.fork(tmp_path)
    assert run_slmforge(recipe, warm.home).rc == 0
    run_json = tmp_path / "out" / "run.json"
    assert json.loads(run_json.read_text())["status"] == "succeeded"
    for entry in cache_entries(cache, "finetune"):
        subprocess.run(["rm", "-rf", str(entry)], check=True)
    proc = start_run(recipe, warm.home)
    _wait_for(lambda: json.loads(run_json.read_text()).get("status") == "running", proc, "run.json says running")
    _wait_for(lambda: next(iter(cache.glob("finetune/*/work/checkpoints/step-*")), None), proc, "a checkpoint")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["slmforge: interrupted"]
    record = json.loads(run_json.read_text())
    assert record["status"] == "failed" and record["error"] == "interrupted"
    assert not (tmp_path / "out" / "model").exists()


def test_sigkill_leaves_run_json_saying_running_not_an_earlier_success(warm, tmp_path):
    recipe, cache = warm.fork(tmp_path)
    assert run_slmforge(recipe, warm.home).rc == 0
    run_json = tmp_path / "out" / "run.json"
    for entry in cache_entries(cache, "finetune"):
        subprocess.run(["rm", "-rf", str(entry)], check=True)
    proc = start_run(recipe, warm.home)
    _wait_for(lambda: next(iter(cache.glob("finetune/*/work/checkpoints/step-*")), None), proc, "a checkpoint")
    proc.kill()
    proc.wait()
    record = json.loads(run_json.read_text())
    assert record["status"] == "running" and record["pid"] == proc.pid


def _step_children(marker: str) -> list[int]:
    """Live processes running the finetune step on a cache under `marker`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "slmforge.steps.finetune" in cmdline and marker in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def test_an_isolated_step_dies_with_its_run_and_the_rerun_resumes_alone(warm, tmp_path):
    """#11: SIGKILL of `run --isolate` left the finetune child running (PPID 1); the rerun started a second
    finetune on the same entry and checkpoints."""
    recipe, cache = _untrained(warm, tmp_path)
    proc = start_run(recipe, warm.home, "--isolate")
    _wait_for(lambda: next(iter(cache.glob("finetune/*/work/checkpoints/step-*")), None), proc, "a checkpoint")
    [child] = _step_children(str(cache))
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _step_children(str(cache)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _step_children(str(cache)) == [], f"the finetune child {child} outlived its run"

    resumed = run_slmforge(recipe, warm.home, "--isolate")
    assert resumed.rc == 0, resumed.stderr
    assert "resuming from" in (tmp_path / "out" / "logs" / "finetune.log").read_text()


def test_an_input_that_changes_while_a_step_reads_it_is_never_cached(warm, tmp_path, monkeypatch):
    """#4: the entry keyed for the original content stored the other rows, forever. The change is made
    by the step's own first action: the moment the step starts reading, as a concurrent writer would."""
    from slmforge.backends.local.runner import LocalRunner
    from slmforge.errors import StepFailed
    from slmforge.recipe.graph import build_graph
    from slmforge.recipe.loader import load_recipe
    from slmforge.steps import load_data

    recipe, cache = warm.fork(tmp_path)
    data = tmp_path / "tones.jsonl"
    extra_row = json.dumps({"phrase": "A row written while the step read the file.", "tone": "neutral"}) + "\n"
    real_main = load_data.main

    def main_with_a_concurrent_write(argv):
        with data.open("a", encoding="utf-8") as f:
            f.write(extra_row)
        return real_main(argv)

    monkeypatch.setattr(load_data, "main", main_with_a_concurrent_write)
    with data.open("a", encoding="utf-8") as f:  # content the warm cache has not seen: load_data runs
        f.write(json.dumps({"phrase": "One more row.", "tone": "neutral"}) + "\n")
    loaded = load_recipe(recipe)
    with pytest.raises(StepFailed, match=r"input 'data' \(.*tones.jsonl\) changed while the step ran"):
        LocalRunner(loaded, build_graph(loaded)).run()
    unfinished = [e for e in cache_entries(cache, "load_data") if not (e / ENTRY).exists()]
    assert unfinished and not any(manifest.read_manifest(e / "dataset") for e in unfinished)

    monkeypatch.setattr(load_data, "main", real_main)
    rerun = LocalRunner(loaded, build_graph(loaded))
    rerun.run()
    dataset = Path(rerun.results["load_data"].outputs["dataset"])
    rows = sum(1 for line in data.read_text().splitlines() if line.strip())
    assert rerun.results["load_data"].status == "ran"
    assert manifest.read_manifest(dataset)["metrics"]["rows"] == rows


def test_a_killed_writers_partial_folder_is_removed_by_the_next_writer(tmp_path):
    """#23: SIGKILL during merge left an empty `.model.partial-PID` behind for good."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".model.partial-{dead.pid}"
    stale.mkdir()
    alive = tmp_path / f".model.partial-{os.getppid()}"  # a live writer's work in progress
    alive.mkdir()
    with manifest.atomic_output(tmp_path / "model") as tmp:
        (tmp / "weights.bin").write_bytes(b"x")
    assert not stale.exists() and alive.is_dir()
    assert (tmp_path / "model" / "weights.bin").read_bytes() == b"x"
