"""What a local run leaves in `engine.output_dir`: model/, run.json, report.md (+ loss.png), logs/.

The run builds them in its own folder, output_dir/runs/<run-id>/ (staging.py), and swaps them in
only when it succeeds: a failed, interrupted or killed rerun leaves the last good model and its
record whole, and its own record and logs in runs/<run-id>/. model/ holds the cache's files, never a
second full copy where the filesystem allows: hard links (read-only, like every file the cache shares;
an edit in place, which root can still make, shows as a corrupt entry that the next run rebuilds and
puts back), else copy-on-write clones, else copies (another filesystem). output_dir is a folder
slmforge made (its `.slmforge` marker) or an empty one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from slmforge.backends.local import staging
from slmforge.backends.local.cache import READ_ONLY, SHARE_MIN_BYTES, DigestMemo, locked
from slmforge.backends.local.model_card import write_card
from slmforge.backends.local.runner import StepResult
from slmforge.contract import manifest
from slmforge.contract.ownership import claim
from slmforge.contract.run_record import RUN_JSON, evaluation_entry, run_record
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.step_graph import StepGraph
from slmforge.steps import catalog

REPORT = "report.md"
MODEL = "model"
ADAPTERS = "adapters"  # a base with adapter slots: the recipe's adapter file, served on model/
LOGS = "logs"


def model_kind(component: str) -> str:
    return catalog.spec(component).model_kind or component


def same_model(source: Path, dest: Path, memo: DigestMemo | None = None) -> bool:
    """True when `dest` already holds `source`'s model, unchanged (the model card written into it aside)."""
    wanted = (manifest.read_manifest(source) or {}).get("outputs_digest")
    have = (manifest.read_manifest(dest) or {}).get("outputs_digest")
    if have != wanted or not dest.is_dir():
        return False
    return manifest.content_matches(dest, wanted, file_digest=memo.file_digest if memo is not None else
                                    manifest.digest_file)


def copy_model(source: Path, dest: Path, memo: DigestMemo | None = None) -> None:
    """Place the final model at `dest`, atomically: its files linked to the cache's (`share_file`)."""
    if same_model(source, dest, memo):
        return  # already there, unchanged
    with manifest.atomic_output(dest) as tmp:
        for file in sorted(source.rglob("*"), key=lambda p: p.name == manifest.MANIFEST):
            target = tmp / file.relative_to(source)
            if file.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            share_file(file, target)


def share_file(source: Path, target: Path) -> None:
    """`target` as a read-only hard link to `source` (one inode, no second copy); where the filesystem
    cannot link (another filesystem), a clone or copy. The manifest is copied: each folder has its own."""
    if source.name != manifest.MANIFEST and source.stat().st_size >= SHARE_MIN_BYTES:
        try:
            os.chmod(source, READ_ONLY)
            os.link(source, target)
            return
        except OSError:
            pass
    clone_or_copy(source, target)


_FICLONE = 0x40049409  # linux/fs.h: share extents copy-on-write (btrfs, xfs, overlayfs on them)


def clone_or_copy(source: Path, target: Path) -> None:
    """A copy-on-write clone where the filesystem offers one (instant, no extra space), else a copy."""
    import fcntl

    try:
        with open(source, "rb") as src, open(target, "wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
            except OSError:
                shutil.copyfileobj(src, dst, 1 << 20)
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, str(target)) from e  # a write names no file: name the one written
    shutil.copystat(source, target)


def local_run_record(loaded: LoadedRecipe, graph: StepGraph, results: list[StepResult], *, status: str,
                     started: float, model_dir: Path | None, error: str | None, **extra: Any) -> dict[str, Any]:
    by_name = {r.name: r for r in results}
    done = [r for r in results if r.status in ("ran", "cached")]
    evaluation = {r.metrics.get("label", r.name): evaluation_entry(r.metrics)
                  for r in done if catalog.spec(r.component).record == "evaluation"}
    final_step, final_output = graph.final
    registered = None
    reg = next((r for r in done if catalog.spec(r.component).record == "registration"), None)
    if reg is not None:
        registered = {k: reg.metrics.get(k) for k in ("name", "version")}
        # No new version this run: register found this very model registered (same digests), or was cached.
        registered["reused"] = bool(reg.metrics.get("reused")) or reg.status == "cached"
        if isinstance(reg.metrics.get("base"), dict):  # an adapter, registered on its shared base
            registered["base"] = reg.metrics["base"]
        registration = Path(reg.outputs.get("registration", "")) / "registration.json"
        if registration.is_file():
            info = json.loads(registration.read_text(encoding="utf-8"))
            registered.update(tracking_uri=info.get("tracking_uri"), alias=info.get("alias"))
    return run_record(status=status, recipe=str(loaded.path), recipe_digest=graph.recipe_digest,
                      seconds=time.time() - started, steps=[_step_record(r) for r in results], evaluation=evaluation,
                      model={"path": str(model_dir) if model_dir else None, "step": final_step, "output": final_output,
                             "kind": model_kind(by_name[final_step].component)},
                      **({"adapter": {"path": str(model_dir.parent / ADAPTERS) if model_dir else None,
                                      "step": graph.adapter[0], "output": graph.adapter[1]}} if graph.adapter else {}),
                      registered=registered, error=error,
                      **({"scored": _scored(graph, evaluation)} if graph.scored else {}),
                      **extra)


def _scored(graph: StepGraph, evaluation: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The rows the evaluations scored: the recipe's data config and split, and how many (the evaluations' n)."""
    counts = [m["n"] for m in evaluation.values() if m.get("n") is not None]
    return {**(graph.scored or {}), **({"rows": max(counts)} if counts else {})}


def _step_record(r: StepResult) -> dict[str, Any]:
    data = asdict(r)
    data["cache_key"] = data.pop("key")
    data["seconds"] = round(r.seconds, 3) if r.seconds is not None else None
    data["output"] = next(iter(r.outputs.values()), None)
    return data


def start(loaded: LoadedRecipe, graph: StepGraph, out_dir: Path) -> staging.Stage:
    """Claim output_dir and open this run's folder in it; its run.json says `running` (with the pid) from
    now until the run ends, so a killed run is told apart from a finished one."""
    claim(out_dir, what="engine.output_dir", made_by="run", ours=staging.made_by_older_slmforge)
    stage = staging.begin(out_dir)
    record = run_record(status="running", recipe=str(loaded.path), recipe_digest=graph.recipe_digest, steps=[],
                        evaluation={}, model=None, pid=os.getpid(), run_id=stage.run_id)
    staging.write_record(stage.path / RUN_JSON, record, reserve=True)
    return stage


def finish(loaded: LoadedRecipe, graph: StepGraph, results: list[StepResult], stage: staging.Stage, *,
           started: float, memo: DigestMemo | None = None) -> dict[str, Any]:
    """A run that succeeded: build its outputs in its folder, then swap them into output_dir."""
    from slmforge.backends.local.report import LOSS_PNG, write_report

    out_dir = stage.out
    by_name = {r.name: r for r in results}
    source = Path(by_name[graph.final[0]].outputs[graph.final[1]])
    adapter = Path(by_name[graph.adapter[0]].outputs[graph.adapter[1]]) if graph.adapter else None
    with locked(out_dir / staging.LOCK):
        if not same_model(source, out_dir / MODEL, memo):
            copy_model(source, stage.path / MODEL, memo)
        if adapter is not None and not same_model(adapter, out_dir / ADAPTERS, memo):
            copy_model(adapter, stage.path / ADAPTERS, memo)
        if memo is not None:
            memo.save()
        plot_stamp = f".{LOSS_PNG}.sha256"
        for name in (LOSS_PNG, plot_stamp):  # an unchanged curve is not drawn again
            if (out_dir / name).is_file():
                shutil.copy2(out_dir / name, stage.path / name)
        record = local_run_record(loaded, graph, results, status="succeeded", started=started,
                                  model_dir=out_dir / MODEL, error=None, run_id=stage.run_id)
        for step in record["steps"]:  # the logs' place once swapped in
            if step.get("log") and Path(step["log"]).parent == stage.path / LOGS:
                step["log"] = str(out_dir / LOGS / Path(step["log"]).name)
        write_report(record, stage.path / REPORT)
        write_card(stage.path / MODEL if (stage.path / MODEL).is_dir() else out_dir / MODEL, record, loaded)
        staging.write_record(stage.path / RUN_JSON, record)
        (stage.path / LOGS).mkdir(exist_ok=True)
        names = [MODEL, ADAPTERS, LOGS, LOSS_PNG, plot_stamp, REPORT, RUN_JSON]
        stale = [LOSS_PNG, plot_stamp] + ([] if adapter is not None else [ADAPTERS])
        staging.swap_in(stage, names, stale=stale)
    return record


def fail(loaded: LoadedRecipe, graph: StepGraph, results: list[StepResult], stage: staging.Stage, *,
         started: float, error: str) -> dict[str, Any]:
    """A run that failed or was stopped: its record and report stay in its own folder; output_dir is untouched."""
    from slmforge.backends.local.report import write_report

    record = local_run_record(loaded, graph, results, status="failed", started=started, model_dir=None,
                              error=error, run_id=stage.run_id, pid=os.getpid())
    try:
        write_report(record, stage.path / REPORT)
    except OSError as e:  # a full disk: run.json below still says how the run ended
        record["report_error"] = f"report.md not written: {e.strerror or e}"
    staging.write_failure_record(stage.path / RUN_JSON, record)
    return record
