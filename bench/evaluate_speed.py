"""Evaluation speed on the real model: batched (what evaluate does) against one row at a time.

Uses the fine-tuned SmolLM2 of bench/int4_options.py (run that first: it builds the merged model
and the int4 builds). For the merged PyTorch model and slmforge's default int4 build, on the seed
data's 146 eval rows: `evaluation.evaluate` (all rows batched, perplexity included) against the
one-at-a-time path it replaced (a generator per row, then one scoring pass per row for the
perplexity), alternating, each timed twice; the answers must be the same.

    python bench/evaluate_speed.py   -> bench/results/evaluate_speed.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".slmforge" / "bench" / "int4"
MODELS = {"merged (PyTorch fp32)": WORK / "merged",
          "int4 auto (onnxruntime-genai)": WORK / "build-int4-auto--slmforge-default---exact-base---float-adapter"}


def one_at_a_time(backend, rows, examples, template, max_new_tokens):
    from slmforge.models.answers import answer_finished, answer_of, template_suffix

    answers = []
    for row in rows:
        suffix = template_suffix(template, row)
        text, _ = backend.generate(template.prompt(row), max_new_tokens, answer_finished(suffix))
        answers.append(answer_of(text, suffix))
    for ids, labels in examples:  # the old per-row perplexity: one forward per example
        backend.score([(ids, [p for p in range(len(ids) - 1) if labels[p + 1] != -100])])
    return answers


def main() -> int:
    from slmforge.models import evaluation
    from slmforge.models.backend import load_backend
    from slmforge.models.eval_data import read_dataset_folder

    rows, examples, template = read_dataset_folder(WORK / "dataset", 1000)
    results = {}
    for name, folder in MODELS.items():
        if not (folder / "slmforge.json").is_file() and not (folder / "genai_config.json").is_file():
            print(f"{folder} missing: run bench/int4_options.py first", file=sys.stderr)
            return 1
        started = time.perf_counter()
        backend = load_backend(folder, None)
        load = time.perf_counter() - started
        runs = {"batched": [], "one_at_a_time": []}
        same = None
        for _ in range(2):  # alternate the two sides
            t = time.perf_counter()
            batched = evaluation.evaluate(backend, rows, template, examples=examples, max_new_tokens=4)
            runs["batched"].append(round(time.perf_counter() - t, 2))
            t = time.perf_counter()
            single = one_at_a_time(backend, rows, examples, template, 4)
            runs["one_at_a_time"].append(round(time.perf_counter() - t, 2))
            same = sum(a == b for a, b in zip(batched["predictions"], single))
        results[name] = {"rows": len(rows), "load_seconds": round(load, 2), "runs_seconds": runs,
                         "batched_median_s": statistics.median(runs["batched"]),
                         "one_at_a_time_median_s": statistics.median(runs["one_at_a_time"]),
                         "same_answers": f"{same}/{len(rows)}", "accuracy": batched["accuracy"]}
        r = results[name]
        print(f"{name}: batched {r['batched_median_s']} s, one at a time {r['one_at_a_time_median_s']} s, "
              f"same answers {r['same_answers']}", flush=True)
    out = REPO / "bench" / "results" / "evaluate_speed.json"
    out.write_text(json.dumps({
        "benchmark": "evaluate_speed", "command": "python bench/evaluate_speed.py",
        "what": "evaluate() on 146 seed eval rows (answers + perplexity), batched vs one row at a time, "
                "max_new_tokens 4, 2 alternating runs each; model load excluded",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "results": results,
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
