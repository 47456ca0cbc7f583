"""What a local run leaves in `engine.output_dir`: model/, run.json, report.md (+ loss.png), logs/.

Everything is written atomically: model/ is assembled in a temporary sibling and renamed into
place (files copied from the cache, as reflinks where the filesystem can: never hard links, so
editing the output never edits the cache), run.json and report.md are written to a temporary file and renamed. A failed run removes model/, so nothing of it looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from slmforge.backends.local.cache import DigestMemo, locked
from slmforge.backends.local.runner import StepResult
from slmforge.contract import manifest
from slmforge.contract.files import write_atomic
from slmforge.contract.run_record import RUN_JSON, evaluation_entry, run_record
from slmforge.recipe.graph import StepGraph
from slmforge.recipe.loaded import LoadedRecipe

REPORT = "report.md"
MODEL = "model"


def model_kind(component: str) -> str:
    return {"build_onnx": "onnx", "merge": "merged", "finetune": "adapter"}.get(component, component)


def copy_model(source: Path, dest: Path, memo: DigestMemo | None = None) -> None:
    """Place the final model at `dest` as its own copy (issue 11 #7: hard links let an edit of the output
    rewrite the cache entry and every other output folder), atomically."""
    wanted = (manifest.read_manifest(source) or {}).get("outputs_digest")
    have = (manifest.read_manifest(dest) or {}).get("outputs_digest")
    if have == wanted and dest.is_dir():
        digest = memo.digest_path if memo is not None else manifest.digest_path
        if digest(dest) == wanted:
            return  # already there, unchanged
    with manifest.atomic_output(dest) as tmp:
        for file in sorted(source.rglob("*"), key=lambda p: p.name == manifest.MANIFEST):
            target = tmp / file.relative_to(source)
            if file.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            clone_or_copy(file, target)


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
                     started: float, model_dir: Path | None, error: str | None) -> dict[str, Any]:
    by_name = {r.name: r for r in results}
    evaluation = {r.metrics.get("label", r.name.removeprefix("evaluate_")): evaluation_entry(r.metrics)
                  for r in results if r.component == "evaluate" and r.status in ("ran", "cached")}
    final_step, final_output = graph.final
    registered = None
    reg = by_name.get("register")
    if reg is not None and reg.status in ("ran", "cached"):
        registered = {k: reg.metrics.get(k) for k in ("name", "version")}
        registration = Path(reg.outputs.get("registration", "")) / "registration.json"
        if registration.is_file():
            info = json.loads(registration.read_text(encoding="utf-8"))
            registered.update(tracking_uri=info.get("tracking_uri"), alias=info.get("alias"))
    return run_record(status=status, recipe=str(loaded.path), recipe_digest=graph.recipe_digest,
                      seconds=time.time() - started, steps=[_step_record(r) for r in results], evaluation=evaluation,
                      model={"path": str(model_dir) if model_dir else None, "step": final_step, "output": final_output,
                             "kind": model_kind(by_name[final_step].component)},
                      registered=registered, error=error)


def _step_record(r: StepResult) -> dict[str, Any]:
    data = asdict(r)
    data["cache_key"] = data.pop("key")
    data["seconds"] = round(r.seconds, 3) if r.seconds is not None else None
    data["output"] = next(iter(r.outputs.values()), None)
    return data


def mark_running(loaded: LoadedRecipe, graph: StepGraph, out_dir: Path) -> None:
    """run.json says `running` while a run is under way, so a killed run never leaves an earlier
    run's `succeeded` behind as if it were this one's (issue 11 #6). model/ stays until replaced."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = run_record(status="running", recipe=str(loaded.path), recipe_digest=graph.recipe_digest, steps=[],
                        evaluation={}, model=None, pid=os.getpid())
    with locked(out_dir / ".slmforge.lock"):
        write_atomic(out_dir / RUN_JSON, json.dumps(record, indent=2) + "\n")


def write_outputs(loaded: LoadedRecipe, graph: StepGraph, results: list[StepResult], out_dir: Path, *,
                  status: str, started: float, error: str | None = None,
                  memo: DigestMemo | None = None) -> dict[str, Any]:
    """Fill the output folder; under a lock so two runs into one folder don't interleave."""
    from slmforge.backends.local.report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    with locked(out_dir / ".slmforge.lock"):
        model_dir: Path | None = None
        by_name = {r.name: r for r in results}
        final = by_name.get(graph.final[0])
        if status == "succeeded" and final is not None and graph.final[1] in final.outputs:
            model_dir = out_dir / MODEL
            copy_model(Path(final.outputs[graph.final[1]]), model_dir, memo)
            if memo is not None:
                memo.save()
        elif manifest.read_manifest(out_dir / MODEL) is not None:  # never delete a model/ slmforge did not write
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(out_dir / MODEL)
        record = local_run_record(loaded, graph, results, status=status, started=started, model_dir=model_dir, error=error)
        write_report(record, out_dir / REPORT)
        write_atomic(out_dir / RUN_JSON, json.dumps(record, indent=2, default=str) + "\n")
    return record
