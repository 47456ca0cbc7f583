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

from local_pipeline import cache_entries, run_slmforge, start_run, tmpfs, warm_pipeline, write_recipe

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


def test_an_edit_of_the_linked_output_model_is_caught_and_undone_by_the_next_run(warm, tmp_path):
    """#7 then issue 24: out/model shares the cache's files (no second copy) read-only; an edit anyway (root
    can) is never served from the cache: the next run finds the entry corrupt, rebuilds it, puts the model back."""
    recipe, cache = warm.fork(tmp_path)
    first = run_slmforge(recipe, warm.home)
    assert first.rc == 0, first.stderr
    model = tmp_path / "out" / "model"
    [entry] = cache_entries(cache, "build_onnx")
    assert (model / "README.md").is_file()  # the run's model card: written there, never in the cache
    assert not (entry / "model" / "README.md").exists()
    data = next(p for p in model.rglob("*") if p.is_file() and p.stat().st_size >= 4096)
    assert data.stat().st_ino == (entry / "model" / data.relative_to(model)).stat().st_ino
    assert not data.stat().st_mode & 0o222  # read-only: a user's editor refuses (root's does not)
    original = data.read_bytes()
    data.write_bytes(original[:-8] + b"edited!!")

    again = run_slmforge(recipe, warm.home)
    assert again.rc == 0, again.stderr
    assert "build_onnx" in {n for n, st in again.statuses().items() if st == "ran"} and "corrupt" in again.stdout
    assert data.read_bytes() == original  # the run put its own model back
    assert manifest.content_matches(model, manifest.read_manifest(model)["outputs_digest"])


def _good_run(warm, tmp_path):
    """A finished run in tmp_path/out, then the cache without its finetune entry: the next run trains."""
    recipe, cache = warm.fork(tmp_path)
    assert run_slmforge(recipe, warm.home).rc == 0
    out = tmp_path / "out"
    assert json.loads((out / "run.json").read_text())["status"] == "succeeded"
    for entry in cache_entries(cache, "finetune"):
        subprocess.run(["rm", "-rf", str(entry)], check=True)
    return recipe, cache, out, _snapshot(out)


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file of the last good run's outputs (the runs/ of unfinished runs aside)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] != "runs" and p.name != ".slmforge.lock"}


def _the_run_folder(out: Path) -> Path:
    [folder] = (out / "runs").iterdir()
    return folder


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_rerun_keeps_the_last_good_outputs_and_says_where_its_own_are(warm, tmp_path, signum):
    """Issue 20 #4: Ctrl-C during the fine-tune of a rerun deleted out/model and mixed its logs into the
    good run's. Issue 11 #6: SIGTERM stops a run like Ctrl-C, and its record says so."""
    recipe, cache, out, before = _good_run(warm, tmp_path)
    proc = start_run(recipe, warm.home)
    _wait_for(lambda: next(iter(cache.glob("finetune/*/work/checkpoints/step-*")), None), proc, "a checkpoint")
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["slmforge: interrupted"]
    assert _snapshot(out) == before  # model/, run.json, report.md, loss.png, logs/: all the good run's
    assert manifest.is_finished(out / "model")
    folder = _the_run_folder(out)
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] == "interrupted" and record["run_id"] == folder.name
    assert (folder / "logs" / "finetune.log").is_file() and (folder / "report.md").is_file()
    assert f"this run's record and logs: {folder}" in stdout


def test_a_failed_rerun_keeps_the_last_good_model_and_names_its_logs(warm, tmp_path):
    """Issue 20 #4: a rerun that failed after 2 s left out/ without model/."""
    recipe, cache, out, before = _good_run(warm, tmp_path)

    def bad_modules(r):
        r["passes"]["lora"]["config"]["target_modules"] = ["input_layernorm"]  # LoRA cannot adapt it: finetune fails
    write_recipe(tmp_path, warm.model_dir, warm.data_file, edit=bad_modules)
    failed = run_slmforge(recipe, warm.home)
    assert failed.rc == 1
    [line] = failed.stderr.strip().splitlines()
    folder = _the_run_folder(out)
    assert line.startswith("slmforge: error: step 'finetune' failed: ")
    assert f"(log: {folder / 'logs' / 'finetune.log'})" in line and f"this run's record and logs: {folder}" in line
    assert _snapshot(out) == before and manifest.is_finished(out / "model")
    assert json.loads((folder / "run.json").read_text())["status"] == "failed"

    write_recipe(tmp_path, warm.model_dir, warm.data_file)  # fixed: the next good run replaces the outputs
    again = run_slmforge(recipe, warm.home)
    assert again.rc == 0, again.stderr
    assert again.record["status"] == "succeeded" and (out / "logs" / "finetune.log").is_file()
    assert [p.name for p in (out / "runs").iterdir()] == [folder.name]  # only the failed run's folder stays


def test_sigkill_leaves_its_record_saying_running_beside_the_last_good_run(warm, tmp_path):
    """Issue 11 #6: a killed run never leaves an earlier run's `succeeded` as if it were its own: its own
    record says `running` with its pid; the good run's outputs stay whole (issue 20 #4)."""
    recipe, cache, out, before = _good_run(warm, tmp_path)
    proc = start_run(recipe, warm.home)
    _wait_for(lambda: next(iter(cache.glob("finetune/*/work/checkpoints/step-*")), None), proc, "a checkpoint")
    proc.kill()
    proc.wait()
    record = json.loads((_the_run_folder(out) / "run.json").read_text())
    assert record["status"] == "running" and record["pid"] == proc.pid
    assert _snapshot(out) == before and manifest.is_finished(out / "model")


def test_a_full_output_disk_ends_the_run_failed_not_running(warm, tmp_path):
    """Issue 20 #12: when the output folder ran out of space, run.json stayed `running`. The output_dir is
    a real 512 KiB tmpfs: the run's record fits, the ~0.9 MB ONNX model does not."""
    recipe, cache = warm.fork(tmp_path)
    with tmpfs(tmp_path / "out", "512k") as out:
        outcome = run_slmforge(recipe, warm.home)
        assert outcome.rc == 1
        [line] = outcome.stderr.strip().splitlines()
        assert "no space left on device" in line
        record = json.loads((_the_run_folder(out) / "run.json").read_text())
        assert record["status"] == "failed" and "no space left on device" in record["error"]
        assert not (out / "model").exists()


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
