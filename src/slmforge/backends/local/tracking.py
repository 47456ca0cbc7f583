"""A local run as an experiment: the recipe's `report_to` targets, filled from the run's record and steps.

MLflow: one run per slmforge run in slmforge's own store (the register step's tracking URI: the recipe's
`register.tracking_uri`, else `$SLMFORGE_HOME/registry.db`), in the experiment named after the recipe file;
a nested run per step, cached ones included (tag `cached`). The MLflow writing itself is
training/tracking.py's, shared with the fine-tune step inside an Azure ML job.

A rerun in which nothing ran (every step cached, the same recipe digest) repeats the run before it:
it names that run's MLflow run instead of writing an identical one, so it stays as fast as a cached
rerun was (importing mlflow and opening its store alone take 2-3 s, docs/pitfalls.md).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from slmforge.backends.local import staging
from slmforge.backends.local.cache import locked
from slmforge.backends.local.runner import StepResult, extra_params
from slmforge.contract import manifest
from slmforge.contract.run_record import RUN_JSON
from slmforge.errors import InvalidInput
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.step_graph import StepGraph
from slmforge.registry.rules import default_tracking_uri
from slmforge.training import tracking

ARTIFACTS = ("report.md", "loss.png", "run.json")


def targets(loaded: LoadedRecipe) -> set[str]:
    """What the recipe's fine-tune passes ask for (report_to), or the default when none says."""
    asked = [getattr(p, "training_args", None) for p in loaded.recipe.passes.values()]
    values = [t.report_to for t in asked if t is not None and t.report_to is not None]
    try:
        if not values:
            return tracking.report_targets(None)
        return set().union(*(tracking.report_targets(v) for v in values))
    except ValueError as e:  # only the environment's default can be wrong here: the recipe was validated
        raise InvalidInput(f"{tracking.DEFAULT_ENV}: {e}") from None


def preflight(loaded: LoadedRecipe) -> None:
    """Refuse, before any work, a target this machine cannot write."""
    if "tensorboard" in targets(loaded) and (why := tracking.tensorboard_missing()):
        raise InvalidInput(f"{loaded.path}: {why}")


def tracking_uri(loaded: LoadedRecipe, graph: StepGraph) -> str:
    """The store the run's registration goes to (StepSpec.local_params), else slmforge's default."""
    for step in graph.steps:
        uri = extra_params(loaded, step).get("tracking_uri")
        if uri:
            return str(uri)
    return default_tracking_uri()


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}"


def track(loaded: LoadedRecipe, graph: StepGraph, results: list[StepResult], record: dict[str, Any],
          folder: Path) -> dict[str, Any] | None:
    """Write the run to each target; `folder` holds its report.md, loss.png, run.json. Returns what the
    summary says about it (None: nothing tracked)."""
    wanted = targets(loaded)
    if not wanted:
        return None
    steps = [_step_run(r) for r in results if r.status != "skipped"]
    points = [p for s in steps for p in s.points]
    metrics = {**{k: v for s in steps for k, v in s.metrics.items() if k in ("tokens_per_second", "train_seconds",
                                                                             "final_loss") and s.points},
               **{k: v for label, m in (record.get("evaluation") or {}).items()
                  for k, v in tracking.scalars(m, f"{label}.").items()}}
    info: dict[str, Any] = {}
    if "mlflow" in wanted:
        uri, experiment = tracking_uri(loaded, graph), loaded.path.stem
        params = {**tracking.flatten(loaded.canonical), "recipe_digest": str(graph.recipe_digest)}
        tags = {"slmforge.recipe": str(loaded.path), "slmforge.recipe_digest": str(graph.recipe_digest),
                "slmforge.run_id": str(record.get("run_id")), "slmforge.status": record["status"]}
        run_id = tracking.log_run_tree(
            uri, experiment, name=f"{experiment} {record.get('run_id') or ''}".strip(), params=params, tags=tags,
            metrics=metrics, points=points, steps=steps, artifacts=[folder / a for a in ARTIFACTS],
            status="FINISHED" if record["status"] == "succeeded" else "FAILED")
        info["mlflow"] = {"tracking_uri": uri, "experiment": experiment, "run_id": run_id, "ui": ui_command(uri)}
    if "tensorboard" in wanted:
        where = tracking.write_tensorboard(folder / "logs" / tracking.TENSORBOARD_DIR, points, metrics)
        info["tensorboard"] = {"logdir": str(where), "ui": f"tensorboard --logdir {shlex.quote(str(where))}"}
    return info


def _step_run(r: StepResult) -> tracking.StepRun:
    found = next((m for m in (manifest.read_manifest(o) for o in r.outputs.values()) if m), None) or {}
    history = r.metrics.get("loss_history")
    points = tracking.history_points(history, r.metrics.get("eval_history") or []) if isinstance(history, list) else []
    return tracking.StepRun(r.name, r.status, params=found.get("params") or {}, metrics=tracking.scalars(r.metrics),
                            points=points, seconds=r.seconds)


def previous_record(out_dir: Path) -> dict[str, Any] | None:
    """The run.json of the last good run in output_dir (None: none, or unreadable)."""
    try:
        return json.loads((out_dir / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def track_finished(loaded: LoadedRecipe, graph: StepGraph, results: list[StepResult], record: dict[str, Any],
                   out_dir: Path, previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """A succeeded run (its outputs swapped into `out_dir`): tracked, or the repeat of the run before it;
    what was tracked goes into `record` and its run.json."""
    before = (previous or {}).get("tracking")
    repeat = (before and previous.get("recipe_digest") == record["recipe_digest"]
              and all(r.status == "cached" for r in results if r.status != "skipped")
              and set(before) - {"repeated"} == targets(loaded) == {"mlflow"})  # tensorboard's files are in logs/,
    # which each run replaces: written again
    info = {**before, "repeated": True} if repeat else track(loaded, graph, results, record, out_dir)
    if info:
        record["tracking"] = info
        with locked(out_dir / staging.LOCK):
            staging.write_record(out_dir / RUN_JSON, record)
    return info
