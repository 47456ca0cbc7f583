"""The step cache: what reruns when what changes, corruption, resume after SIGKILL, concurrency, failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from slmforge.backends.local.cache import ENTRY, Cache, DigestMemo, cache_key, locked
from slmforge.contract import folders, manifest

from local_pipeline import SLMFORGE, cache_entries, cli, env_for, run_slmforge, start_run, warm_pipeline, write_recipe

pytestmark = pytest.mark.slow

DOWNSTREAM_OF_BUILD = {"build_onnx", "evaluate_onnx", "register"}


@pytest.fixture(scope="module")
def warm(tmp_path_factory, tiny_model_dir, demo_data):
    return warm_pipeline(tmp_path_factory, tiny_model_dir, demo_data)


def ran(outcome) -> set[str]:
    return {name for name, status in outcome.statuses().items() if status == "ran"}


def final_digest(outcome) -> str:
    return manifest.read_manifest(outcome.out_dir / "model")["outputs_digest"]


# ---------------------------------------------------------------------- keys and entries (no models)


def test_key_depends_on_every_part_and_not_on_order():
    material = {"step": "a", "component": "c", "version": "1", "command": "x", "params": {"p": 1, "q": 2},
                "inputs": {"data": "d1"}}
    assert cache_key(material) == cache_key(dict(reversed(list(material.items()))))
    for field, value in (("step", "b"), ("version", "2"), ("command", "y"), ("params", {"p": 1, "q": 3}),
                         ("inputs", {"data": "d2"})):
        assert cache_key({**material, field: value}) != cache_key(material), field


def test_a_step_that_reads_only_the_eval_part_is_keyed_by_it_else_by_the_whole_folder():
    from slmforge.backends.local.runner import _input_digest
    from slmforge.steps import catalog

    assert catalog.spec("evaluate").eval_inputs == ("dataset",) and catalog.spec("finetune").eval_inputs == ()
    found = {"outputs_digest": "whole", folders.EVAL_DIGEST: "eval part"}
    assert _input_digest(found, eval_only=True) == "eval part" and _input_digest(found, eval_only=False) == "whole"
    assert _input_digest({"outputs_digest": "whole"}, eval_only=True) == "whole"  # a folder by an older slmforge


def test_clean_removes_unfinished_entries_and_keeps_finished_ones(tmp_path):
    cache = Cache(tmp_path)
    cache.mark()  # what the runner does when it first uses the folder
    done, partial = cache.entry("merge", "a" * 64), cache.entry("merge", "b" * 64)
    (done.root / "model").mkdir(parents=True)
    (done.root / "model" / "w.bin").write_bytes(b"1")
    manifest.write_manifest(done.root / "model", step="merge", params={})
    done.finish(step="merge", outputs=["model"], seconds=1.0, extra={})
    partial.work.mkdir(parents=True)
    assert cache.clean() == (1, 0)
    assert done.state(["model"]) == "hit" and not partial.root.exists()
    with locked(done.lock_path):  # in use: left alone
        assert cache.clean(everything=True)[0] == 0
    assert cache.clean(everything=True)[0] == 1 and not done.root.exists()


def test_clean_never_touches_folders_slmforge_did_not_make(tmp_path):
    """Issue 11 #1: `cache clean --cache-dir x` once removed x/projects/thesis (no entry.json)."""
    from slmforge.errors import InvalidInput

    thesis = tmp_path / "x" / "projects" / "thesis"
    thesis.mkdir(parents=True)
    (thesis / "t.tex").write_text("hi")
    with pytest.raises(InvalidInput, match="not an slmforge cache"):
        Cache(tmp_path / "x").clean(everything=True)
    assert (thesis / "t.tex").read_text() == "hi"

    # A real cache folder: only <component>/<64-hex key> folders are entries.
    cache = Cache(tmp_path / "x")
    cache.mark()
    partial = cache.entry("merge", "c" * 64)
    partial.work.mkdir(parents=True)
    assert cache.clean(everything=True)[0] == 1
    assert (thesis / "t.tex").read_text() == "hi" and not partial.root.exists()


def test_identical_result_files_of_two_entries_become_one_read_only_file(tmp_path):
    from slmforge.backends.local.cache import share_identical

    cache = Cache(tmp_path)
    memo = cache.memo
    blob, other = os.urandom(8192), os.urandom(8192)
    first, second, changed = (tmp_path / "merge" / (c * 64) / "model" for c in "abc")
    for folder, data in ((first, blob), (second, blob), (changed, other)):
        folder.mkdir(parents=True)
        (folder / "w.bin").write_bytes(data)
    memo.file_digest(first / "w.bin")
    memo.file_digest(changed / "w.bin")
    (changed / "w.bin").write_bytes(blob)  # now equal to blob, but the memo remembers the old content
    assert share_identical([second], tmp_path, memo) == 8192
    assert (second / "w.bin").stat().st_ino == (first / "w.bin").stat().st_ino
    assert (second / "w.bin").read_bytes() == blob and not (first / "w.bin").stat().st_mode & 0o222
    (first / "w.bin").chmod(0o644)
    (first / "w.bin").write_bytes(other)  # an edit behind the memo's back (root ignores read-only)
    third = tmp_path / "merge" / ("d" * 64) / "model"
    third.mkdir(parents=True)
    (third / "w.bin").write_bytes(blob)
    share_identical([third], tmp_path, memo)  # the edited file is re-digested, never linked to
    assert (third / "w.bin").read_bytes() == blob


def test_digest_memo_matches_manifest_and_sees_same_size_rewrites(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"x" * 1000)
    (folder / "sub").mkdir()
    (folder / "sub" / "b.txt").write_text("hello")
    memo = DigestMemo(tmp_path / "memo.json")
    assert memo.digest_path(folder) == manifest.digest_path(folder)
    memo.save()
    again = DigestMemo(tmp_path / "memo.json")
    assert again.digest_path(folder) == manifest.digest_path(folder) and not again.dirty  # from the memo
    time.sleep(0.01)
    (folder / "a.bin").write_bytes(b"y" * 1000)  # same size, new content
    assert again.digest_path(folder) == manifest.digest_path(folder) and again.dirty


# ---------------------------------------------------------------------- the cache matrix


def test_changed_data_content_at_the_same_path_reruns_from_load_data(warm, tmp_path):
    recipe, _ = warm.fork(tmp_path)
    data = tmp_path / "tones.jsonl"
    rows = data.read_text().splitlines()
    data.write_text("\n".join(rows[1:] + rows[:1]) + "\n")  # same rows, another order: new content
    outcome = run_slmforge(recipe, warm.home)
    assert outcome.rc == 0, outcome.stderr
    assert ran(outcome) == set(outcome.statuses())  # everything depends on the data


def test_edited_training_rows_leave_the_base_evaluation_cached_and_edited_eval_rows_do_not(tmp_path, tiny_model_dir,
                                                                                              demo_data, monkeypatch):
    """Issue 25 #2: evaluate_base reads only the eval part of the dataset (StepSpec.eval_inputs), so it is keyed by
    that part (folders.eval_digest): a new training row reruns load_data and finetune, not the base's evaluation."""
    import slmforge

    rows = demo_data.read_text().splitlines()
    train, held = tmp_path / "tones.jsonl", tmp_path / "heldout.jsonl"
    held.write_text("\n".join(rows[:8]) + "\n")
    train.write_text("\n".join(rows[8:]) + "\n")

    def separate(recipe):  # eval rows from their own data config; LoRA only: load_data, evaluate_base, finetune
        heldout = json.loads(json.dumps(recipe["data_configs"][0]))
        heldout["name"], heldout["load_dataset_config"]["data_files"] = "heldout", held.name
        recipe["data_configs"].append(heldout)
        recipe["evaluate"].update(data_config="heldout", max_samples=8)
        lora = recipe["passes"]["lora"]["config"]
        del lora["eval_dataset_size"], recipe["passes"]["merge"], recipe["passes"]["builder"]
        lora["training_args"].update(max_steps=2, save_steps=2, logging_steps=1)
        recipe["register"] = {"enabled": False}

    def statuses(result) -> dict[str, str]:
        return {s["name"]: s["status"] for s in result.record["steps"]}

    def edit_first_row(path):
        lines = path.read_text().splitlines()
        row = json.loads(lines[0])
        row["phrase"] += " Really."
        path.write_text("\n".join([json.dumps(row)] + lines[1:]) + "\n")

    monkeypatch.setenv("SLMFORGE_HOME", str(tmp_path / "home"))
    recipe = write_recipe(tmp_path, tiny_model_dir, train, edit=separate)
    first = slmforge.run(recipe)  # in this process: three runs of a subprocess each cost seconds of imports
    assert statuses(first) == {"load_data": "ran", "evaluate_base": "ran", "finetune": "ran"}

    edit_first_row(train)
    second = slmforge.run(recipe)
    assert statuses(second) == {"load_data": "ran", "evaluate_base": "cached", "finetune": "ran"}
    assert second.metrics["base"] == first.metrics["base"]
    # the reused evaluation read the first run's dataset folder, and stands for the second's (build_onnx's --reference)
    outputs = {s["name"]: Path(s["output"]) for s in second.record["steps"]}
    evaluation, dataset = folders.find_evaluation(outputs["evaluate_base"]), folders.open_dataset(outputs["load_data"])
    assert dataset.manifest[folders.EVAL_DIGEST] == dataset.eval_digest()
    assert evaluation.dataset_digest != manifest.digest_path(dataset.path) and evaluation.evaluated(dataset)

    edit_first_row(held)
    third = slmforge.run(recipe)
    assert statuses(third) == {"load_data": "ran", "evaluate_base": "ran", "finetune": "ran"}


def test_changed_precision_reruns_only_the_build_and_later(warm, tmp_path):
    def to_fp32(r):
        r["passes"]["builder"]["config"]["precision"] = "fp32"
    recipe, _ = warm.fork(tmp_path, edit=to_fp32)
    outcome = run_slmforge(recipe, warm.home)
    assert outcome.rc == 0, outcome.stderr
    assert ran(outcome) == DOWNSTREAM_OF_BUILD
    assert outcome.record["evaluation"]["onnx"]["size_bytes"] > warm.cold.record["evaluation"]["onnx"]["size_bytes"]


def test_corrupted_entry_is_detected_and_rebuilt(warm, tmp_path):
    recipe, cache = warm.fork(tmp_path)
    [entry] = cache_entries(cache, "finetune")
    weights = entry / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    outcome = run_slmforge(recipe, warm.home)
    assert outcome.rc == 0, outcome.stderr
    assert "finetune" in ran(outcome)
    assert "corrupt" in outcome.stdout
    assert manifest.is_finished(entry / "adapter")
    assert final_digest(outcome) == final_digest(warm.cold)  # training is deterministic


def test_missing_manifest_counts_as_corrupt(warm, tmp_path):
    recipe, cache = warm.fork(tmp_path)
    [entry] = cache_entries(cache, "merge")
    (entry / "model" / manifest.MANIFEST).unlink()
    outcome = run_slmforge(recipe, warm.home)
    assert outcome.rc == 0, outcome.stderr
    assert "merge" in ran(outcome) and manifest.is_finished(entry / "model")


def test_force_one_step(warm, tmp_path):
    recipe, _ = warm.fork(tmp_path)
    outcome = run_slmforge(recipe, warm.home, "--force", "merge")
    assert outcome.rc == 0, outcome.stderr
    assert ran(outcome) == {"merge"}  # same bytes again: later steps stay cached


def test_sigkill_during_finetune_resumes_and_matches_an_uninterrupted_run(warm, tmp_path):
    recipe, cache = warm.fork(tmp_path)
    for entry in cache_entries(cache, "finetune"):  # train again, same key as the warm (uninterrupted) run
        shutil.rmtree(entry)
    proc = start_run(recipe, warm.home)
    deadline = time.monotonic() + 300
    checkpoint = None
    while checkpoint is None and proc.poll() is None and time.monotonic() < deadline:
        checkpoint = next(iter(cache.glob("finetune/*/work/checkpoints/step-*")), None)
        time.sleep(0.02)
    assert checkpoint is not None, "no checkpoint appeared before the run ended"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    [entry] = cache_entries(cache, "finetune")
    assert not (entry / ENTRY).exists() and not manifest.is_finished(entry / "adapter")

    resumed = run_slmforge(recipe, warm.home)
    assert resumed.rc == 0, resumed.stderr
    assert resumed.statuses()["finetune"] == "ran"
    assert "resuming from" in (tmp_path / "out" / "logs" / "finetune.log").read_text()
    adapters = [Path(next(s["output"] for s in o.record["steps"] if s["name"] == "finetune"))
                for o in (resumed, warm.cold)]
    assert manifest.digest_path(adapters[0]) == manifest.digest_path(adapters[1])  # every adapter file
    assert final_digest(resumed) == final_digest(warm.cold)
    assert not (entry / "work" / "checkpoints").exists()  # only needed until the step finished


def test_two_concurrent_runs_on_one_cache_both_succeed(warm, tmp_path):
    def other_training(r):
        r["passes"]["lora"]["config"]["training_args"]["max_steps"] = 30
    recipe_a, cache = warm.fork(tmp_path / "a", edit=other_training)
    recipe_b = write_recipe(tmp_path / "b", warm.model_dir, warm.data_file, cache_dir=cache, edit=other_training)
    procs = [start_run(r, warm.home) for r in (recipe_a, recipe_b)]
    for proc in procs:
        proc.communicate(timeout=600)
    assert [p.returncode for p in procs] == [0, 0]
    records = [json.loads((r.parent / "out" / "run.json").read_text()) for r in (recipe_a, recipe_b)]
    by_step = {}
    for record in records:
        for s in record["steps"]:
            by_step.setdefault(s["name"], []).append(s["status"])
    # Each shared step ran in exactly one of the runs; the other waited and reused it.
    for name in ("finetune", "merge", "build_onnx", "evaluate_onnx"):
        assert sorted(by_step[name]) == ["cached", "ran"], (name, by_step[name])
    models = [manifest.read_manifest(r.parent / "out" / "model")["outputs_digest"] for r in (recipe_a, recipe_b)]
    assert models[0] == models[1]


def test_failing_step_exits_1_with_one_line_and_leaves_nothing_finished(warm, tmp_path):
    def bad_modules(r):  # a module the model has (validate passes it), of a type LoRA cannot adapt
        r["passes"]["lora"]["config"]["target_modules"] = ["input_layernorm"]  # no_such_proj: refused by validate
    recipe, cache = warm.fork(tmp_path, edit=bad_modules)
    outcome = run_slmforge(recipe, warm.home)
    assert outcome.rc == 1
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, outcome.stderr
    [folder] = (tmp_path / "out" / "runs").iterdir()  # a failed run's record and logs (issue 20 #4)
    log = folder / "logs" / "finetune.log"
    assert lines[0].startswith("slmforge: error: step 'finetune' failed: ") and f"(log: {log})" in lines[0]
    assert log.is_file()
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "failed"
    assert {s["name"]: s["status"] for s in record["steps"]}["finetune"] == "failed"
    assert not (tmp_path / "out" / "model").exists()
    for entry in cache_entries(cache, "finetune"):
        meta = entry / ENTRY
        if meta.exists():  # the warm run's good entry
            continue
        assert not any(manifest.read_manifest(p) for p in entry.iterdir() if p.is_dir())


def test_cache_ls_and_clean_commands(warm, tmp_path):
    _, cache = warm.fork(tmp_path)
    (cache / "finetune" / ("f" * 64) / "work").mkdir(parents=True)  # a killed run's leftovers
    listing = cli(warm.home, "cache", "ls", "--cache-dir", str(cache))
    assert listing.returncode == 0 and "unfinished" in listing.stdout and "finished" in listing.stdout
    assert "load_data" in listing.stdout and "9 entries" in listing.stdout
    cleaned = cli(warm.home, "cache", "clean", "--cache-dir", str(cache))
    assert "removed 1 entry" in cleaned.stdout
    assert cli(warm.home, "cache", "clean", "--cache-dir", str(cache), "--older-than", "1h").stdout.startswith("removed 0")
    assert cli(warm.home, "cache", "clean", "--cache-dir", str(cache), "--all").stdout.startswith("removed 8")
    assert cli(warm.home, "cache", "clean", "--older-than", "soon").returncode == 2


def test_the_output_model_and_identical_cache_files_are_links_not_copies(warm):
    """Issue 24: out/model holds the cache's files (one inode, read-only), not a second full copy."""
    [entry] = cache_entries(warm.cache, "build_onnx")
    model = warm.cold.out_dir / "model"
    big = [p for p in model.rglob("*") if p.is_file() and p.stat().st_size >= 4096 and p.name != manifest.MANIFEST]
    assert big and any(p.name == "model.onnx.data" or p.suffix == ".onnx" for p in big), big
    for file in big:
        cached = entry / "model" / file.relative_to(model)
        assert file.stat().st_ino == cached.stat().st_ino and file.stat().st_nlink > 1, file
        assert not file.stat().st_mode & 0o222, f"{file}: a shared file must be read-only"
    # identical files of two entries (the tokenizer the merge and the build both carry) are one file
    [merged] = cache_entries(warm.cache, "merge")
    merged_inodes = {p.stat().st_ino for p in merged.rglob("*") if p.is_file()}
    assert any(p.stat().st_ino in merged_inodes for p in (entry / "model").rglob("*") if p.is_file())
    listing = subprocess.run([*SLMFORGE, "cache", "ls", "--cache-dir", str(warm.cache)], capture_output=True,
                             text=True, env=env_for(warm.home), timeout=120)
    assert listing.returncode == 0 and "on disk" in listing.stdout, listing


def test_cache_ls_from_the_recipe_folder_finds_the_recipe_cache(warm, tmp_path):
    """The recipe's cache_dir, resolved from its folder, not ./.slmforge/cache (which said "empty")."""
    recipe, cache = warm.fork(tmp_path / "project")
    (tmp_path / "project" / "notes.json").write_text('{"not": "a recipe"}')
    (tmp_path / "project" / ".slmforge" / "cache").mkdir(parents=True)  # an empty default cache beside it
    listing = subprocess.run([*SLMFORGE, "cache", "ls"], capture_output=True, text=True, env=env_for(warm.home),
                             cwd=recipe.parent, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "8 entries" in listing.stdout and str(cache) in listing.stdout, listing.stdout


def test_cache_clean_keep_last_keeps_each_steps_most_recent_entries(warm, tmp_path):
    _, cache = warm.fork(tmp_path)
    [merge] = cache_entries(cache, "merge")
    older = cache / "merge" / ("e" * 64)  # an earlier run's merge: the same files, used a day ago
    shutil.copytree(merge, older)
    day_ago = time.time() - 86400
    os.utime(older / ENTRY, (day_ago, day_ago))
    assert cli(warm.home, "cache", "clean", "--cache-dir", str(cache), "--keep-last", "-1").returncode == 2
    cleaned = cli(warm.home, "cache", "clean", "--cache-dir", str(cache), "--keep-last", "1")
    assert cleaned.stdout.startswith("removed 1 entry"), cleaned
    assert not older.exists() and merge.is_dir()
    assert cli(warm.home, "cache", "clean", "--cache-dir", str(cache), "--keep-last", "0").stdout.startswith("removed 8")
