"""`slmforge run [RECIPE]`: run a recipe on this machine (default: the shipped smollm2-tones)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time

DEFAULT_RECIPE = "smollm2-tones"  # pipelines/smollm2-tones.json, a shipped recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help=f"recipe file, or the name of a shipped one such as demo (default: "
                                                  f"{DEFAULT_RECIPE}, a real model learning tones)")
    parser.add_argument("--force", nargs="?", action="append", const="*", metavar="STEP",
                        help="rerun every step (or, repeatable, only STEP) even when cached")
    parser.add_argument("--isolate", action="store_true",
                        help="run every step as a subprocess instead of in this process")
    parser.add_argument("--plain", action="store_true", help="plain line output even on a terminal")


def _console():
    """A handle on the terminal that survives the in-process steps' fd redirection."""
    try:
        return os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    except (AttributeError, OSError, ValueError):
        return sys.stdout


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (a `kill`, a scheduler, a closing container) stops the run like Ctrl-C does: steps stop,
    run.json says interrupted. Without it the run dies silently mid-step."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run(args: argparse.Namespace) -> int:
    offline_env()
    from slmforge.backends.local.shipped_model import ensure_shipped_model
    from slmforge.recipe.loader import load_recipe

    if args.recipe is None and args.force and args.force[-1].endswith((".json", ".yml", ".yaml")):
        args.recipe, args.force[-1] = args.force[-1], "*"  # `run --force RECIPE`: argparse took it as STEP
    from slmforge.resources import find_recipe, slmforge_home

    slmforge_home()  # a file there is refused before any work
    recipe = find_recipe(args.recipe or DEFAULT_RECIPE)
    ensure_shipped_model(recipe)
    run_loaded(load_recipe(recipe), force=args.force, isolate=args.isolate, plain=args.plain)
    return 0


def run_loaded(loaded, *, force: list[str] | None = None, isolate: bool = False, plain: bool = False) -> dict:
    """Run a loaded recipe (`slmforge run` and the Python API's `slmforge.run`); return its run.json record."""
    offline_env()
    from slmforge.backends.local.display import Display
    from slmforge.backends.local.outputs import fail, finish, start
    from slmforge.backends.local.report import print_summary
    from slmforge.backends.local.runner import LocalRunner, output_dir
    from slmforge.backends.local.tracking import preflight as tracking_preflight
    from slmforge.backends.local.tracking import previous_record, track, track_finished
    from slmforge.errors import StepFailed, as_user_error
    from slmforge.recipe.checks import recipe_notes
    from slmforge.recipe.graph import build_graph
    from slmforge.recipe.input_checks import check_inputs

    graph = build_graph(loaded)
    check_inputs(loaded, graph)  # what `validate` checks: the rows and the model's modules, before any step
    tracking_preflight(loaded)
    forced = set(force or [])
    # Olive's `clean_cache: true` means "start from an empty cache": rebuild every step.
    force_steps: bool | set[str] = True if "*" in forced or loaded.recipe.engine.clean_cache else forced
    console = _console()
    for note in recipe_notes(loaded):  # valid Olive keys slmforge reads differently: said, never dropped silently
        print(f"[slmforge] note: {note}", file=console, flush=True)
    live = bool(console.isatty()) and not plain
    started = time.time()
    runner = LocalRunner(loaded, graph, force=force_steps, isolate=isolate,
                         display=Display(graph.names(), out=console, live=live))
    out = output_dir(loaded)
    runner.preflight()
    previous = previous_record(out)
    stage = start(loaded, graph, out)
    runner.logs_dir = stage.path / "logs"
    kept = f"{out} keeps the last good run's outputs; this run's record and logs: {stage.path}"
    try:
        with terminate_as_interrupt(), runner.display:
            runner.run()
            record = finish(loaded, graph, list(runner.results.values()), stage, started=started,
                            memo=runner.cache.memo)
    except KeyboardInterrupt:
        if not stage.swapped:  # stopped while its outputs were swapped in: the run is whole
            fail(loaded, graph, list(runner.results.values()), stage, started=started, error="interrupted")
            print(f"[slmforge] interrupted: {kept}", file=console, flush=True)
        raise
    except Exception as e:
        if stage.swapped:
            raise
        known = as_user_error(e)
        failed = fail(loaded, graph, list(runner.results.values()), stage, started=started,
                      error=str(known) if known is not None else f"{type(e).__name__}: {e}")
        _track_failed(track, loaded, graph, list(runner.results.values()), failed, stage.path, console)
        if isinstance(known, StepFailed):
            raise StepFailed(f"{known}; {kept}") from e
        raise
    track_finished(loaded, graph, list(runner.results.values()), record, out, previous)
    print_summary(record, console, rich=live)
    if os.environ.get("SLMFORGE_PRINT_RUN_JSON"):
        print(json.dumps(record), file=console)
    return record


def _track_failed(track, loaded, graph, results, record, folder, console) -> None:
    """A failed run is tracked too (status FAILED); a tracking error then is said, never in place of the run's."""
    from slmforge.errors import as_user_error

    try:
        track(loaded, graph, results, record, folder)
    except Exception as e:  # noqa: BLE001 - the run's own error follows; this one is printed, not lost
        known = as_user_error(e)
        print(f"[slmforge] note: the failed run was not tracked: {known or f'{type(e).__name__}: {e}'}",
              file=console, flush=True)
