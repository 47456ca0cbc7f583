"""`make bench`: run every benchmark, one after another (this machine is shared: never in parallel).

Each bench/<name>.py writes bench/results/<name>.json; this script runs them and prints their
headline ratios. Figures are compared side by side within one run, never against stored numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ORDER = ["finetune", "inference", "int4_options", "evaluate_speed", "e2e"]


def main(argv: list[str]) -> int:
    names = argv or ORDER
    failed = []
    for name in names:
        script = BENCH / f"{name}.py"
        if not script.is_file():
            print(f"bench {name}: {script} missing", file=sys.stderr)
            failed.append(name)
            continue
        print(f"== bench {name}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=BENCH.parent)
        print(f"== bench {name}: exit {rc} in {time.perf_counter() - start:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
            continue
        result = BENCH / "results" / f"{name}.json"
        if result.is_file():
            summary = json.loads(result.read_text()).get("summary")
            if summary:
                print(json.dumps(summary, indent=2))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
