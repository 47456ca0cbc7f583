"""Run a recipe's step graph on this machine, with the same component commands Azure ML runs.

Per step: render the component's `command:` with local folders (contract/render.py), key it by
content (cache.py), reuse a verified cache entry or run the command — in-process when
it is `python -m slmforge.steps.X ...` (the same argv, given to the step's own `main`), as a
subprocess otherwise or with `isolate`. Either way the step's stdout/stderr go to its log file.
Outputs land in the cache entry; `outputs.py` then fills `engine.output_dir`.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmforge.backends.local.cache import Cache, Entry, Held, cache_key, text_digest
from slmforge.backends.local.display import Display
from slmforge.backends.local.launch import last_error_line, run_in_process, run_subprocess
from slmforge.contract import folders, manifest, render
from slmforge.errors import InvalidInput, StepFailed
from slmforge.recipe.checks import resolve_path
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.step_graph import Ref, Step, StepGraph
from slmforge.steps import catalog


@dataclass
class StepResult:
    name: str
    component: str
    status: str  # ran | cached | failed | skipped
    seconds: float | None = None
    key: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    log: str | None = None
    error: str | None = None


@dataclass
class Prepared:
    """A step ready to run: its cache entry, rendered argv and what goes into its key."""

    step: Step
    spec: render.ComponentSpec
    entry: Entry
    argv: list[str]
    texts: dict[str, str]  # generated input files: path -> content
    files: dict[str, tuple[str, str]]  # file/folder inputs: name -> (path, digest in the key)


def cache_dir(loaded: LoadedRecipe) -> Path:
    return resolve_path(loaded, loaded.recipe.engine.cache_dir)


def output_dir(loaded: LoadedRecipe) -> Path:
    return resolve_path(loaded, loaded.recipe.engine.output_dir)


def check_output_dir(loaded: LoadedRecipe, graph: StepGraph) -> None:
    """Refuse an output_dir that would overwrite or delete what the run reads or what slmforge did not write.

    The run writes output_dir/model (replacing it), run.json, report.md and logs/: an input inside
    it (a base model called `model` beside the recipe, with output_dir ".") would be replaced by the
    ONNX model, and a failed run would delete it."""
    out = output_dir(loaded)
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"{loaded.path}: engine.output_dir {out} is a file; expected a folder")
    if out == Path(out.anchor) or out == Path.home().resolve():
        raise InvalidInput(f"{loaded.path}: engine.output_dir resolves to {out}; choose a folder of its own")
    inputs = {Path(ref.value).resolve() for step in graph.steps for ref in step.inputs.values() if ref.kind == "path"}
    inputs.add(loaded.path)
    for path in sorted(inputs):
        if path == out or out in path.parents or path in out.parents:
            raise InvalidInput(f"{loaded.path}: engine.output_dir {out} overlaps the input {path}; the run would "
                               "overwrite or delete it: choose a folder apart from the recipe's inputs")
    from slmforge.backends.local.staging import made_by_older_slmforge
    from slmforge.contract.ownership import check

    # never over a user's report.md or run.json
    check(out, what="engine.output_dir", ours=made_by_older_slmforge, hint="choose a new or empty engine.output_dir")
    model = out / "model"
    if model.exists() and manifest.read_manifest(model) is None:
        raise InvalidInput(f"{model} exists and was not written by slmforge; move it away or choose another "
                           "engine.output_dir (slmforge replaces output_dir/model)")


def check_runnable(graph: StepGraph) -> None:
    """Fail before any work when an input lives in Azure ML."""
    for step in graph.steps:
        for name, ref in step.inputs.items():
            if ref.kind == "uri":
                raise InvalidInput(
                    f"step '{step.name}' input '{name}' is an Azure ML location ({ref.value}), which this "
                    "machine cannot read: use a local file or folder, or run the recipe with `slmforge submit`")


def extra_params(loaded: LoadedRecipe, step: Step) -> dict[str, Any]:
    """Values the local backend adds to a step (StepSpec.local_params, e.g. a local registry)."""
    hook = catalog.spec(step.component).local_params
    return hook(loaded) if hook is not None else {}


class LocalRunner:
    def __init__(self, loaded: LoadedRecipe, graph: StepGraph, *, force: bool | set[str] = False,
                 isolate: bool = False, display: Display | None = None):
        self.loaded, self.graph = loaded, graph
        self.cache = Cache(cache_dir(loaded))
        self.output_dir = output_dir(loaded)
        self.logs_dir = self.output_dir / "logs"
        self.force, self.isolate = force, isolate
        self.display = display
        self.results: dict[str, StepResult] = {s.name: StepResult(s.name, s.component, "skipped") for s in graph.steps}
        if isinstance(force, set):
            unknown = sorted(force - set(graph.names()))
            if unknown:
                raise InvalidInput(f"--force: no step named '{unknown[0]}' (steps: {', '.join(graph.names())})")

    # ------------------------------------------------------------------ planning

    def prepare(self, step: Step) -> Prepared:
        """Resolve inputs, compute the cache key, render the argv (no side effects)."""
        spec = render.load_component_spec(step.component)
        values: dict[str, Any] = {}
        digests: dict[str, str] = {}
        texts: dict[str, str] = {}
        pending_texts: dict[str, Ref] = {}
        eval_only = catalog.spec(step.component).eval_inputs
        for name, ref in step.inputs.items():
            if ref.kind == "step":
                upstream = self.results[ref.value]
                if ref.output not in upstream.outputs:
                    raise StepFailed(f"step '{step.name}' needs {ref.describe()}, which has not been produced")
                values[name] = upstream.outputs[ref.output]
                digests[name] = _input_digest(manifest.read_manifest(values[name]), name in eval_only)
            elif ref.kind == "path":
                values[name] = ref.value
                digests[name] = self.cache.memo.digest_path(ref.value)
            elif ref.kind == "text":
                pending_texts[name] = ref
                digests[name] = text_digest(ref.value)
            else:
                raise InvalidInput(f"step '{step.name}': input '{name}' ({ref.value}) cannot be read locally")
        params = dict(step.params)
        params.update(extra_params(self.loaded, step))
        # Bind once without paths to get every parameter with its default filled in: the key
        # must change when a component's default does.
        probe = render.bind(spec, {**params, **{k: "" for k in step.inputs}},
                            {o: "" for o in spec.outputs})
        bound_params = {k: v for k, v in probe.items()
                        if k.startswith("inputs.") and k.removeprefix("inputs.") not in step.inputs}
        key = cache_key({
            "step": step.name, "component": spec.name, "version": spec.version, "command": spec.command,
            "params": bound_params, "inputs": digests,
        })
        entry = self.cache.entry(spec.name, key)
        for name, ref in pending_texts.items():
            path = entry.work / ref.output
            values[name] = str(path)
            texts[str(path)] = ref.value
        values.update(params)
        outputs = {o: str(entry.output(o)) for o in spec.outputs}
        argv = render.render_command(spec.command, render.bind(spec, values, outputs))
        files = {name: (ref.value, digests[name]) for name, ref in step.inputs.items() if ref.kind == "path"}
        return Prepared(step, spec, entry, argv, texts, files)

    # ------------------------------------------------------------------ running

    def preflight(self) -> None:
        """The checks that refuse a run before it touches anything."""
        check_runnable(self.graph)
        check_output_dir(self.loaded, self.graph)
        for step in self.graph.steps:
            hook = catalog.spec(step.component).preflight
            if hook is not None:
                hook({**step.params, **extra_params(self.loaded, step)}, f"step '{step.name}'")

    def run(self) -> list[StepResult]:
        """Run every step in order; stop at the first failure (raised as StepFailed)."""
        self.preflight()
        if self.logs_dir == self.output_dir / "logs":  # not the CLI's run folder: logs go to output_dir
            from slmforge.backends.local.staging import made_by_older_slmforge
            from slmforge.contract.ownership import claim

            claim(self.output_dir, what="engine.output_dir", made_by="run", ours=made_by_older_slmforge)
        try:
            for step in self.graph.steps:
                self._run_step(step)
        finally:
            self.cache.memo.save()
        return list(self.results.values())

    def _forced(self, name: str) -> bool:
        return self.force is True or (isinstance(self.force, set) and name in self.force)

    def _show(self, name: str, state: str, **kw) -> None:
        if self.display is not None:
            self.display.update(name, state, **kw)

    def _run_step(self, step: Step) -> None:
        prepared = self.prepare(step)
        entry, result = prepared.entry, self.results[step.name]
        result.key = entry.key
        outputs = list(prepared.spec.outputs)
        with self.cache.lock(entry) if _free(entry) else self._waiting(step.name, entry) as held:
            state = entry.state(outputs, self.cache.memo)
            if state == "hit" and self._forced(step.name):
                state = "forced"
            if state == "hit" and not _still_valid(step, prepared):
                state = "stale"
            if state in ("corrupt", "forced", "stale"):
                if state == "corrupt" and self.display is not None:
                    self.display.message(f"[slmforge] {step.name}: cache entry {entry.key[:12]} is corrupt; rebuilding")
                entry.remove()
            if state == "hit":
                meta = entry.meta() or {}
                entry.touch()
                result.status, result.seconds = "cached", meta.get("seconds")
                result.log = str(entry.log) if entry.log.exists() else None
                self._collect(result, entry, outputs)
                self._show(step.name, "cached", seconds=result.seconds)
                return
            self._execute(prepared, result, outputs, held)

    @contextlib.contextmanager
    def _waiting(self, name: str, entry: Entry):
        self._show(name, "waiting")
        with self.cache.lock(entry) as held:
            yield held

    def _execute(self, prepared: Prepared, result: StepResult, outputs: list[str], held: Held) -> None:
        step, entry = prepared.step, prepared.entry
        self.cache.mark()
        entry.work.mkdir(parents=True, exist_ok=True)
        for path, text in prepared.texts.items():
            Path(path).write_text(text, encoding="utf-8")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.logs_dir / f"{step.name}.log"
        result.log = str(log)
        resumed = any(entry.output(o).exists() for o in outputs if o in entry.work_outputs)
        self._show(step.name, "running", log=log, note="resuming" if resumed else "")
        started = time.monotonic()
        with open(log, "w", encoding="utf-8") as log_file:
            log_file.write("$ " + " ".join(prepared.argv) + "\n")
            log_file.flush()
            module = render.step_module(prepared.argv)
            if module is not None and not self.isolate:
                rc = run_in_process(module, prepared.argv[3:], log_file)
            else:
                rc = run_subprocess(prepared.argv, log_file, lock=held)
        seconds = time.monotonic() - started
        result.seconds = seconds
        error = None
        if rc == 0 and (changed := self._changed_input(prepared)):
            error = changed
        elif rc == 0:
            try:
                entry.finish(step=step.name, outputs=outputs, seconds=seconds, extra={"argv": prepared.argv},
                             memo=self.cache.memo)
            except FileNotFoundError as e:
                error = f"the step exited 0 but {e}"
        else:
            error = last_error_line(log) or f"exited with code {rc}"
        if error is not None:
            entry.remove_results()
            result.status, result.error = "failed", error
            self._show(step.name, "failed", seconds=seconds)
            raise StepFailed(f"step '{step.name}' failed: {error} (log: {log})")
        shutil.copyfile(log, entry.log)
        for name in outputs:  # work outputs (checkpoints) were only needed to resume
            if name in entry.work_outputs:
                shutil.rmtree(entry.output(name), ignore_errors=True)
        result.status = "ran"
        self._collect(result, entry, outputs)
        self._show(step.name, "done", seconds=seconds)

    def _changed_input(self, prepared: Prepared) -> str | None:
        """An input that changed while the step read it would publish outputs under the key of
        content the step never saw: verify before the entry is finished."""
        for name, (path, keyed) in prepared.files.items():
            try:
                now = self.cache.memo.digest_path(path)
            except FileNotFoundError:
                now = None
            if now != keyed:
                return f"input '{name}' ({path}) changed while the step ran; run again once it stays put"
        return None

    def _collect(self, result: StepResult, entry: Entry, outputs: list[str]) -> None:
        for name in outputs:
            if name in entry.work_outputs:
                continue
            folder = entry.output(name)
            result.outputs[name] = str(folder)
            found = manifest.read_manifest(folder) or {}
            result.metrics.update(found.get("metrics") or {})
            if (folder / folders.METRICS).is_file():  # an evaluation: its figures
                result.metrics.update(folders.read_metrics(folder))


def _input_digest(found: dict[str, Any], eval_only: bool) -> str:
    """What keys an upstream folder: its whole content, or for a step that reads only its eval part
    (StepSpec.eval_inputs) the digest of that part load_data recorded (folders.eval_digest), so a new
    training row leaves the step cached; a folder without one (an older slmforge's) by its whole content."""
    return (found.get(folders.EVAL_DIGEST) if eval_only else None) or found["outputs_digest"]


def _free(entry: Entry) -> bool:
    """True when nobody else holds the entry's lock right now (so we need not show 'waiting')."""
    from slmforge.backends.local.cache import locked

    with locked(entry.lock_path, blocking=False) as got:
        return got


def _still_valid(step: Step, prepared: Prepared) -> bool:
    """A cache hit is good unless the step says otherwise (StepSpec.still_valid: a registration whose
    version has left its registry)."""
    hook = catalog.spec(step.component).still_valid
    return hook is None or hook({o: prepared.entry.output(o) for o in prepared.spec.outputs})
