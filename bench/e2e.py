"""End to end: slmforge vs Olive 0.13 on the Cookbook-style recipe (LoRA -> merge -> int4) on the tiny Phi-3.

Same machine, same run, alternating: slmforge fresh, Olive fresh, slmforge cached, Olive cached, for
each round; then `slmforge --help` vs `olive --help`. Writes bench/results/e2e.json.

Olive runs in its own virtual environment (bench/olive_venv.py: olive-ai 0.13.0 + `requests` +
onnxruntime-genai 0.14.1, the combination that works, docs/pitfalls.md; the same torch, transformers and
peft versions as this project's). Olive runs with OLIVE_DISABLE_TELEMETRY=1 (offline, its telemetry
would only add time).
slmforge's graph also evaluates the merged and the ONNX model (Olive's does not); registration is off.
When Olive cannot be installed, the reason is recorded and slmforge is still measured.

    python bench/e2e.py [--rounds N] [--steps N] [--no-olive]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import olive_venv  # noqa: E402

REPO = harness.REPO
RESULTS = harness.RESULTS / "e2e.json"
CACHE = Path(os.environ.get("SLMFORGE_BENCH_CACHE", REPO / ".slmforge" / "bench"))
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
TARGETS = {"fresh_ratio_max": 0.5, "cached_seconds_max": 2.0, "help_seconds_max": 0.3}


def training(steps: int) -> dict:
    return {"seed": 0, "per_device_train_batch_size": 16, "learning_rate": 0.003, "max_steps": steps,
            "logging_steps": 10, "save_steps": 1000}


def slmforge_recipe(folder: Path, model: Path, data: Path, steps: int) -> Path:
    recipe = {
        "input_model": {"type": "HfModel", "model_path": str(model), "task": "text-generation"},
        "data_configs": [{"name": "tones", "type": "HuggingfaceContainer",
                          "load_dataset_config": {"data_name": "json", "data_files": str(data), "split": "train"},
                          "pre_process_data_config": {"text_cols": ["phrase", "tone"], "text_template": TEMPLATE,
                                                      "corpus_strategy": "line-by-line", "source_max_len": 64,
                                                      "pad_to_max_len": False}}],
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": ["cpu"]}},
        "passes": {"lora": {"type": "LoRA", "config": {"r": 16, "alpha": 32, "lora_dropout": 0.0,
                                                       "train_data_config": "tones", "eval_dataset_size": 0.25,
                                                       "training_args": training(steps)}},
                   "merge": {"type": "MergeAdapterWeights"},
                   "builder": {"type": "ModelBuilder", "config": {"precision": "int4"}}},
        "engine": {"host": "local_system", "target": "local_system", "cache_dir": "cache", "output_dir": "out"},
        "evaluate": {"max_samples": 16, "max_new_tokens": 4},
        "register": {"enabled": False},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.json"
    path.write_text(json.dumps(recipe, indent=2))
    return path


def olive_config(folder: Path, model: Path, data: Path, steps: int) -> Path:
    config = {
        "input_model": {"type": "HfModel", "model_path": str(model), "task": "text-generation"},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "data_configs": [{"name": "tones", "type": "HuggingfaceContainer",
                          "load_dataset_config": {"data_name": "json", "data_files": str(data), "split": "train"},
                          "pre_process_data_config": {"text_template": TEMPLATE, "strategy": "line-by-line",
                                                      "max_seq_len": 64, "pad_to_max_len": False}}],
        "passes": {"lora": {"type": "LoRA", "r": 16, "alpha": 32, "lora_dropout": 0.0, "train_data_config": "tones",
                            "training_args": training(steps)},
                   "merge": {"type": "MergeAdapterWeights"},
                   "builder": {"type": "ModelBuilder", "precision": "int4"}},
        "host": "local_system", "target": "local_system", "cache_dir": "cache", "output_dir": "out",
        "log_severity_level": 1,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "olive.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def timed(command: list[str], cwd: Path, log: Path | None = None) -> tuple[float, int]:
    r = harness.run_measured(command, cwd=cwd, env=harness.child_env(), log=log or Path(os.devnull))
    return r["wall_seconds"], r["rc"]


def olive_output_ok(folder: Path) -> bool:
    return (folder / "out" / "model.onnx").is_file() or any((folder / "out").rglob("genai_config.json"))


def median(values: list[float]) -> float | None:
    return harness.medians([{"v": v} for v in values]).get("v") if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="LoRA optimizer steps (both tools)")
    parser.add_argument("--no-olive", action="store_true")
    args = parser.parse_args(argv)

    work = CACHE / "bench-e2e"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    from slmforge.models.tinymodel import build_tiny_model, demo_data_path

    model = build_tiny_model(work / "phi3-tiny", seed=0)
    data = work / "tones.jsonl"
    shutil.copyfile(demo_data_path(), data)

    olive, olive_error = (None, "skipped (--no-olive)") if args.no_olive else olive_venv.ensure()
    ours_cmd = [sys.executable, "-m", "slmforge.cli", "run", "recipe.json", "--plain"]
    times: dict[str, dict[str, list[float]]] = {"slmforge": {"fresh": [], "cached": []},
                                                "olive": {"fresh": [], "cached": []}}
    failures: list[str] = []
    for round_ in range(args.rounds):
        ours = slmforge_recipe(work / f"slmforge-{round_}", model, data, args.steps).parent
        theirs = olive_config(work / f"olive-{round_}", model, data, args.steps).parent if olive else None
        for phase in ("fresh", "cached"):
            seconds, rc = timed(ours_cmd, ours, ours / f"{phase}.log")
            record = ours / "out" / "run.json"  # a failed run leaves the last good one's (issue 20 #4), or none
            ok = rc == 0 and record.is_file() and json.loads(record.read_text())["status"] == "succeeded"
            (times["slmforge"][phase].append(seconds) if ok else failures.append(f"slmforge {phase} round {round_}"))
            print(f"round {round_} slmforge {phase}: {seconds:.1f} s (exit {rc})", flush=True)
            if theirs is not None:
                seconds, rc = timed([str(olive), "run", "--config", "olive.json"], theirs, theirs / f"{phase}.log")
                ok = rc == 0 and olive_output_ok(theirs)  # Olive exits 0 when a pass fails: check the output
                (times["olive"][phase].append(seconds) if ok else failures.append(f"olive {phase} round {round_}"))
                print(f"round {round_} olive {phase}: {seconds:.1f} s (exit {rc}, output {'ok' if ok else 'MISSING'})",
                      flush=True)

    help_times: dict[str, list[float]] = {"slmforge": [], "olive": []}
    for i in range(5):
        help_times["slmforge"].append(timed([str(Path(sys.executable).parent / "slmforge"), "--help"], REPO)[0])
        if olive and i < 3:
            help_times["olive"].append(timed([str(olive), "--help"], REPO)[0])

    ours_fresh, ours_cached = median(times["slmforge"]["fresh"]), median(times["slmforge"]["cached"])
    olive_fresh, olive_cached = median(times["olive"]["fresh"]), median(times["olive"]["cached"])
    ours_help, olive_help = median(help_times["slmforge"]), median(help_times["olive"])
    ratio = harness.ratio
    summary = {
        "fresh_seconds": {"slmforge": ours_fresh, "olive": olive_fresh, "ratio": ratio(ours_fresh, olive_fresh)},
        "cached_seconds": {"slmforge": ours_cached, "olive": olive_cached, "ratio": ratio(ours_cached, olive_cached)},
        "help_seconds": {"slmforge": ours_help, "olive": olive_help, "ratio": ratio(ours_help, olive_help)},
    }
    met = {
        "fresh_ratio": summary["fresh_seconds"]["ratio"] is not None
        and summary["fresh_seconds"]["ratio"] <= TARGETS["fresh_ratio_max"],
        "cached_seconds": ours_cached is not None and ours_cached <= TARGETS["cached_seconds_max"],
        "help_seconds": ours_help is not None and ours_help <= TARGETS["help_seconds_max"],
    }
    harness.Result("e2e", RESULTS).write(
        what="Cookbook-style recipe LoRA -> merge -> int4 on the tiny Phi-3 (0.56 M params), tones data",
        settings={"rounds": args.rounds, "lora_steps": args.steps, "batch": 16,
                  "slmforge_extra_work": "evaluates the merged and ONNX models (16 rows each); register off",
                  "olive_env": {"OLIVE_DISABLE_TELEMETRY": "1"}, "olive_pins": olive_venv.pins()},
        raw_seconds=times, help_raw_seconds=help_times, summary=summary, targets=TARGETS, met=met,
        olive_error=olive_error, failures=failures)
    print(json.dumps(summary, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
