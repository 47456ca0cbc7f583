"""What every benchmark shares: child processes measured for wall time and peak RSS, alternating
runs, medians, the machine's description and the result file.

This machine is shared: a figure is only compared with one measured in the same run, the two
sides alternating so that a neighbour's load hits both; the load average is recorded beside it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
SEED_DATA = REPO.parent / "shared" / "data" / "phrase-classification" / "dataset-classification.json"
HELDOUT = REPO / "src" / "slmforge" / "data" / "tones-heldout.jsonl"
SMOLLM2 = REPO / ".slmforge" / "models" / "smollm2-135m-instruct"
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"


def child_env(threads: int | None = None, **extra: str) -> dict[str, str]:
    """Offline, quiet, our src first; the same for both sides of a comparison."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OLIVE_DISABLE_TELEMETRY="1", MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1",
               PYTHONWARNINGS="ignore", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_measured(argv: list[str], cwd: Path | None = None, env: dict | None = None, log: Path | None = None,
                 timeout: float = 1800) -> dict:
    """Run a command; its wall time, exit code, stdout (when no log is given) and peak RSS.

    Peak RSS is the largest VmHWM (the kernel's high-water mark of a process's resident set) among
    the child and its descendants, sampled every 50 ms. Not wait4's ru_maxrss: that survives exec,
    so every child of a big parent would report at least the parent's size.
    """
    out = open(log, "w") if log else subprocess.PIPE
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env or child_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    peak = {"kb": 0}
    done = threading.Event()

    def sample() -> None:
        while True:
            peak["kb"] = max([peak["kb"], *(_hwm_kb(pid) for pid in _tree(proc.pid))])
            if done.wait(0.05):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout = proc.communicate(timeout=timeout)[0] or ""
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, rc = proc.communicate()[0] or "", 124
    finally:
        done.set()
        sampler.join()
        if log:
            out.close()
    return {"rc": rc, "wall_seconds": round(time.perf_counter() - started, 2),
            "peak_rss_mb": round(peak["kb"] / 1024, 1) or None, "stdout": stdout}


def _tree(pid: int) -> list[int]:
    """pid and its descendants now alive (from /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in children.read_text().split()]
            except OSError:
                pass
    return found


def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def alternate(sides: dict[str, Callable[[int], dict]], reps: int, label: str = "") -> dict[str, list[dict]]:
    """Each side once per rep, the order reversed every other rep; the raw runs of each side."""
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    names = list(sides)
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            result = sides[name](rep)
            runs[name].append(result)
            shown = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            print(f"{label} {name} rep {rep + 1}: " + ", ".join(f"{k} {v:g}" for k, v in shown.items()), flush=True)
    return runs


def same_files(a: Path | None, b: Path | None, skip: tuple[str, ...] = ("slmforge.json", "README.md")) -> bool | None:
    """Whether two model folders hold the same files with the same bytes (their manifests and model cards
    aside: they record how each was checked and evaluated); None when either is missing."""
    if a is None or b is None:
        return None

    def files(folder: Path) -> dict[str, bytes]:
        import hashlib

        return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).digest()
                for f in sorted(folder.rglob("*")) if f.is_file() and f.name not in skip}
    return files(a) == files(b)


def medians(runs: list[dict]) -> dict:
    """The median of every numeric field over the runs that have it."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for k in keys:
        values = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if values:
            out[k] = round(statistics.median(values), 4)
    return out


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def machine() -> dict:
    return {"cpus": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "python": platform.python_version(), "cpu_model": _cpu_model(), "cpu_vector_flags": _vector_flags(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def _vector_flags() -> list[str]:
    """The CPU's SIMD extensions that decide matmul speed (bf16 without avx512_bf16 is emulated, slowly)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma")))


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


class Result:
    """Collects one benchmark's figures and writes bench/results/<name>.json atomically at the end,
    with the command, the machine and the load average before and after."""

    def __init__(self, name: str, out: Path | None = None):
        self.name, self.out = name, out or RESULTS / f"{name}.json"
        self.started, self.load_before = time.perf_counter(), os.getloadavg()
        self.data: dict = {"benchmark": name, "command": " ".join(["python", *_relative_argv()])}

    def write(self, **fields) -> Path:
        self.data.update(fields)
        self.data.update(machine=machine(), load_average_before=[round(x, 2) for x in self.load_before],
                         load_average_after=[round(x, 2) for x in os.getloadavg()],
                         seconds=round(time.perf_counter() - self.started, 1),
                         created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.out)
        print(f"wrote {self.out} in {self.data['seconds']:.0f} s", flush=True)
        return self.out


def _relative_argv() -> list[str]:
    script = Path(sys.argv[0]).resolve()
    shown = str(script.relative_to(REPO)) if script.is_relative_to(REPO) else sys.argv[0]
    return [shown, *sys.argv[1:]]
