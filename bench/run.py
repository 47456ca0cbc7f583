"""`make bench` / `make bench-quick`: run the benchmarks one after another (this machine is shared:
never in parallel) and print each one's summary.

    python bench/run.py full      # the real model, SmolLM2-135M (<= 30 min on 2 cores)
    python bench/run.py quick     # the tiny random Phi-3 subset (<= 5 min)
    python bench/run.py NAME ...  # single benchmarks by name (see SUITES)

Each bench/<script>.py writes bench/results/<name>.json; figures are compared side by side within
one run, never against stored numbers. Heavier studies run on their own: bench/int4_options.py
(every int4 method of the builder, ~1 h) and bench/evaluate_speed.py (needs int4_options' models).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# name -> (script, arguments); the result file is bench/results/<name>.json
BENCHMARKS = {
    # Olive's LoRA in float32: its default bf16 is emulated, ~40x slower, on a CPU without AVX512-BF16
    "e2e_smollm2": ("e2e_smollm2.py", ["--olive-torch-dtype", "float32"]),
    "inference_smollm2": ("inference_smollm2.py", []),  # measures the models e2e_smollm2 made
    "finetune_smollm2": ("finetune.py", ["--sizes", "smollm2", "--out", str(BENCH / "results" / "finetune_smollm2.json")]),
    "finetune_profile": ("finetune_profile.py", []),
    "scaling": ("scaling.py", []),
    "finetune": ("finetune.py", ["--sizes", "tiny", "--methods", "lora", "--reps", "3"]),
    "finetune_dtypes": ("finetune_dtypes.py", []),  # on its own: float32 vs bf16 / fp16 (tiny model)
    "inference": ("inference.py", ["--sizes", "tiny"]),
    "e2e": ("e2e.py", ["--rounds", "1"]),
    "adapters": ("adapters.py", ["--fresh"]),  # one int4 base + two adapters vs two baked builds (~15 min)
}
SUITES = {"full": ["e2e_smollm2", "inference_smollm2", "finetune_smollm2", "finetune_profile", "scaling"],
          "quick": ["finetune", "inference", "e2e"]}


def main(argv: list[str]) -> int:
    names = [n for a in (argv or ["full"]) for n in SUITES.get(a, [a])]
    failed = []
    started = time.perf_counter()
    for name in names:
        if name not in BENCHMARKS:
            print(f"bench: no benchmark '{name}' (known: {', '.join(BENCHMARKS)}; suites: {', '.join(SUITES)})",
                  file=sys.stderr)
            return 2
        script, args = BENCHMARKS[name]
        print(f"== bench {name}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, str(BENCH / script), *args], cwd=BENCH.parent)
        print(f"== bench {name}: exit {rc} in {time.perf_counter() - t:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
            continue
        result = BENCH / "results" / f"{name}.json"
        if result.is_file():
            summary = json.loads(result.read_text()).get("summary")
            if summary:
                print(json.dumps(summary, indent=2))
    print(f"== bench: {len(names) - len(failed)}/{len(names)} ran in {time.perf_counter() - started:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
