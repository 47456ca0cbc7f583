"""Never overwrite what a user has, find an unusable SLMFORGE_HOME before the work (issue 20 #1-3, #12, #14),
and the swap that puts a run's outputs in place: killed at any moment, the model is whole.

Every refusal here comes before any work: no step runs, so these need no warm pipeline."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slmforge.contract import manifest

from local_pipeline import REPO, cli, run_slmforge, tmpfs, write_recipe


def _one_error_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    rc = getattr(done, "returncode", getattr(done, "rc", None))
    assert rc == 2 and len(lines) == 1, (rc, done.stderr)
    return lines[0]


def test_tiny_model_refuses_a_users_folder_and_rewrites_its_own(tmp_path):
    """#1: tiny-model wrote over the user's config.json and tokenizer.json."""
    user = tmp_path / "mine"
    user.mkdir()
    (user / "config.json").write_text('{"mine": true}\n')
    line = _one_error_line(cli(tmp_path / "home", "tiny-model", str(user)))
    assert str(user) in line and "config.json" in line and "was not written by slmforge" in line
    assert (user / "config.json").read_text() == '{"mine": true}\n' and sorted(os.listdir(user)) == ["config.json"]

    own = tmp_path / "tiny"
    for _ in range(2):  # a new folder, then the same folder again: it is slmforge's own
        done = cli(tmp_path / "home", "tiny-model", str(own))
        assert done.returncode == 0, done.stderr
    assert (own / "config.json").is_file() and (own / ".slmforge").is_file()


def test_compile_never_writes_over_a_users_pipeline_yml(tmp_path, tiny_model_dir):
    """#2: compile -o DIR replaced DIR/pipeline.yml whoever wrote it. An earlier compile's folder (with or
    without the marker, which older versions did not write) is slmforge's own and is rewritten."""
    raw = json.loads((REPO / "pipelines" / "demo-aml.json").read_text())
    raw["input_model"]["config"]["hf_config"]["model_name"] = str(tiny_model_dir)
    raw["data_configs"][0]["load_dataset_config"]["data_files"] = str(REPO / "src/slmforge/data/tones.jsonl")
    recipe = tmp_path / "demo-aml.json"
    recipe.write_text(json.dumps(raw))
    user = tmp_path / "user"
    user.mkdir()
    (user / "pipeline.yml").write_text("my: pipeline\n")
    line = _one_error_line(cli(tmp_path / "home", "compile", str(recipe), "-o", str(user)))
    assert str(user) in line and "pipeline.yml" in line and "earlier `slmforge compile`" in line
    assert (user / "pipeline.yml").read_text() == "my: pipeline\n" and os.listdir(user) == ["pipeline.yml"]

    older = tmp_path / "older"  # what an earlier slmforge compile left, before the marker
    older.mkdir()
    (older / "pipeline.yml").write_text("# Compiled by slmforge from its recipe; submit with ...\njobs: {}\n")
    done = cli(tmp_path / "home", "compile", str(recipe), "-o", str(older))
    assert done.returncode == 0, done.stderr
    assert "jobs:" in (older / "pipeline.yml").read_text() and (older / ".slmforge").is_file()


def test_run_refuses_a_users_output_folder_before_any_work(tmp_path, tiny_model_dir, demo_data):
    """#3: run wrote over the report.md, run.json and loss.png of a user's folder; only model/ was protected."""
    recipe = write_recipe(tmp_path, tiny_model_dir, demo_data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("my report\n")
    line = _one_error_line(run_slmforge(recipe, tmp_path / "home"))
    assert f"engine.output_dir {out}" in line and "report.md" in line
    assert os.listdir(out) == ["report.md"] and (out / "report.md").read_text() == "my report\n"
    assert not (tmp_path / "cache").exists()  # refused before any step


def test_slmforge_home_that_is_a_file_is_one_line_for_models_and_run(tmp_path, tiny_model_dir, demo_data):
    """#14: `models` printed "no registered models in …/file/registry.db", exit 0."""
    home = tmp_path / "home-file"
    home.write_text("not a folder\n")
    line = _one_error_line(cli(home, "models"))
    assert f"SLMFORGE_HOME {home}: is a file" in line
    recipe = write_recipe(tmp_path / "r", tiny_model_dir, demo_data)
    line = _one_error_line(run_slmforge(recipe, home))
    assert f"SLMFORGE_HOME {home}: is a file" in line
    assert not (tmp_path / "r" / "cache").exists() and not (tmp_path / "r" / "out").exists()


def test_a_read_only_registry_is_found_before_the_run_starts(tmp_path, tiny_model_dir, demo_data):
    """#14: a read-only SLMFORGE_HOME showed only at the register step, after the whole run. A read-only
    tmpfs: chmod does not stop root, a read-only mount does."""
    recipe = write_recipe(tmp_path / "r", tiny_model_dir, demo_data)
    with tmpfs(tmp_path / "home", "64k", read_only=True) as home:
        line = _one_error_line(run_slmforge(recipe, home))
    assert "step 'register'" in line and str(home / "registry.db") in line and "read-only" in line
    assert not (tmp_path / "r" / "cache").exists() and not (tmp_path / "r" / "out").exists()


def test_the_failure_record_lands_on_a_full_disk(tmp_path):
    """#12: on a full output disk run.json stayed `running`. The running record reserves its room; the
    failure record, too big to write anew, is written over it in place."""
    from slmforge.backends.local import staging

    with tmpfs(tmp_path / "disk", "256k") as disk:
        run_json = disk / "run.json"
        staging.write_record(run_json, {"status": "running", "pid": 1, "steps": []}, reserve=True)
        assert run_json.stat().st_size == staging.RESERVE
        with open(disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError, match="No space left"):
            while True:
                filler.write(b"\1" * 4096)
        with pytest.raises(OSError, match="No space left"):
            (disk / "probe").write_bytes(b"x" * 8192)
        failed = {"status": "failed", "pid": 1, "error": "model: no space left on device",
                  "steps": [{"name": f"step{i}", "log": "x" * 200} for i in range(40)]}  # > RESERVE
        staging.write_failure_record(run_json, failed)
        record = json.loads(run_json.read_text())
    assert record["status"] == "failed" and record["error"] == failed["error"] and "shortened" in record["note"]


_SWAPPER = """
import sys, json
from pathlib import Path
from slmforge.backends.local import staging
from slmforge.contract import manifest
out = Path(sys.argv[1])
i = 0
while True:
    i += 1
    stage = staging.begin(out)
    model = stage.path / "model"
    model.mkdir()
    for n in range(20):
        (model / f"part{n}.bin").write_bytes(str(i).encode() * 5000)
    manifest.write_manifest(model, step="test", params={"i": i})
    (stage.path / "run.json").write_text(json.dumps({"i": i}))
    staging.swap_in(stage, ["model", "run.json"], stale=[])
    print(i, flush=True)
"""


def _exchange_works(where: Path) -> bool:
    from slmforge.contract.files import exchange

    (where / "xa").mkdir(exist_ok=True)
    (where / "xb").mkdir(exist_ok=True)
    return exchange(where / "xa", where / "xb")


def test_a_swap_killed_at_any_moment_leaves_a_whole_model(tmp_path):
    """#4: SIGKILL at random moments of back-to-back swaps; out/model is always one run's model, whole."""
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    rng = random.Random(0)
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _SWAPPER, str(out)], stdout=subprocess.PIPE, env=env, text=True)
        assert proc.stdout.readline().strip(), "the swapper made no swap"
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        from slmforge.backends.local import staging

        if _exchange_works(tmp_path):  # one renameat2: whole without any repair
            assert manifest.is_finished(out / "model"), sorted(os.listdir(out / "model"))
        staging.recover(out)  # what the next run does first (after a two-rename swap cut short)
        assert manifest.is_finished(out / "model"), sorted(os.listdir(out / "model"))
        contents = {p.read_bytes()[:8] for p in (out / "model").glob("part*.bin")}
        assert len(contents) == 1  # one run's model, never a mix
