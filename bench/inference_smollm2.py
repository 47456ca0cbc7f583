"""Inference on the real model: int4 onnxruntime-genai against PyTorch `generate` for the merged SmolLM2.

    python bench/inference_smollm2.py [--run RUN_JSON] [--reps N] [--new-tokens N]

The models are the merged model and the int4 build of slmforge's run in bench/e2e_smollm2.py (read
from its run.json); without that run, the base SmolLM2 stands in for the merged model (a merge
changes the weights, not the shapes: the same speed) and its int4 build is made here. Each
(model, batch) is measured in a fresh process, PyTorch and og alternating, `--reps` times: import
and load time, time to first token (prefill + the first greedy token), then decode tokens/s over
the remaining new tokens (EOS ignored), at batch 1 and batch 8 (held-out phrases in the recipe's
template; batch 8 counts the tokens of all 8 rows). Writes bench/results/inference_smollm2.json.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before any heavy import: the load-time clock of a measurement

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

E2E_RUN = harness.REPO / ".slmforge" / "bench" / "e2e-smollm2" / "slmforge-0" / "out" / "run.json"
FALLBACK_INT4 = harness.REPO / ".slmforge" / "bench" / "inference-smollm2" / "int4"
BATCHES = (1, 8)
TARGET = {"int4_decode_vs_pytorch_batch1_min": 5.0}


def prompts(batch: int) -> list[str]:
    rows = [json.loads(line) for line in harness.HELDOUT.read_text().splitlines()[:8]]
    prefix = harness.TEMPLATE.split("{tone}")[0]
    return [prefix.format(phrase=r["phrase"]) for r in rows[:batch]]


def measure_pytorch(folder: str, batch: int, new_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    imported = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    loaded = time.perf_counter()
    enc = tok(prompts(batch), return_tensors="pt", padding=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def timed(n: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad)
        return time.perf_counter() - start

    timed(2)  # warm-up
    ttft = statistics.median(timed(1) for _ in range(3))
    total = timed(new_tokens)
    return _result(imported, loaded, ttft, total, batch, new_tokens, threads=torch.get_num_threads())


def measure_og(folder: str, batch: int, new_tokens: int) -> dict:
    import numpy as np
    import onnxruntime_genai as og

    imported = time.perf_counter()
    model = og.Model(folder)
    tok = og.Tokenizer(model)
    tok.update_options(add_special_tokens="true")
    loaded = time.perf_counter()
    ids = [list(tok.encode(p)) for p in prompts(batch)]
    width = max(len(i) for i in ids)
    pad = int(json.loads((Path(folder) / "genai_config.json").read_text())["model"]["pad_token_id"])
    tokens = np.full((batch, width), pad, dtype=np.int32)
    for row, seq in enumerate(ids):
        tokens[row, :len(seq)] = seq  # right-padded, as slmforge's batched evaluation does

    def timed(n: int) -> tuple[float, float]:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, min_length=width + n, max_length=width + n, batch_size=batch)
        start = time.perf_counter()
        generator = og.Generator(model, params)
        generator.append_tokens(tokens)
        generator.generate_next_token()
        first = time.perf_counter() - start
        while not generator.is_done():
            generator.generate_next_token()
        return first, time.perf_counter() - start

    timed(2)  # warm-up
    ttft = statistics.median(timed(1)[0] for _ in range(3))
    _, total = timed(new_tokens)
    return _result(imported, loaded, ttft, total, batch, new_tokens)


def _result(imported: float, loaded: float, ttft: float, total: float, batch: int, new_tokens: int, **extra) -> dict:
    decode = max(total - ttft, 1e-9)
    return {"import_seconds": round(imported - STARTED, 3), "load_seconds": round(loaded - imported, 3),
            "time_to_first_token_seconds": round(ttft, 4),
            "decode_tokens_per_second": round(batch * (new_tokens - 1) / decode, 1),
            "batch": batch, "new_tokens": new_tokens, **extra}


def models(run_json: Path) -> tuple[Path, Path, str]:
    """(merged HF folder, int4 genai folder, where they came from)."""
    if run_json.is_file():
        run = json.loads(run_json.read_text())
        steps = {s["name"]: s for s in run.get("steps", [])}  # a run still going has none yet
        merged, int4 = steps.get("merge", {}).get("output"), steps.get("build_onnx", {}).get("output")
        if run.get("status") == "succeeded" and merged and int4:
            return Path(merged), Path(int4), f"slmforge's run of the Olive recipe ({run_json})"
    if not (FALLBACK_INT4 / "genai_config.json").is_file():
        from slmforge.steps import build_onnx

        build_onnx.run(model=harness.SMOLLM2, output=FALLBACK_INT4, precision="int4")
    return harness.SMOLLM2, FALLBACK_INT4, "base SmolLM2 (no e2e run found) and its int4 build"


def size_mb(folder: Path) -> float:
    from slmforge.contract.files import folder_size as size_on_disk

    return round(size_on_disk(folder) / 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=str(E2E_RUN), help="run.json of slmforge's e2e run (models to measure)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--measure", nargs=3, metavar=("KIND", "DIR", "BATCH"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.measure:
        kind, folder, batch = a.measure
        print(json.dumps((measure_pytorch if kind == "pytorch" else measure_og)(folder, int(batch), a.new_tokens)))
        return 0
    result = harness.Result("inference_smollm2")
    merged, int4, source = models(Path(a.run))
    folders = {"pytorch": merged, "og_int4": int4}

    def side(kind: str, batch: int):
        def run(rep: int) -> dict:
            argv = [sys.executable, __file__, "--new-tokens", str(a.new_tokens), "--measure",
                    "pytorch" if kind == "pytorch" else "og", str(folders[kind]), str(batch)]
            r = harness.run_measured(argv, env=harness.child_env())
            if r["rc"] != 0:
                raise SystemExit(f"{kind} batch {batch} failed:\n{r['stdout'][-2000:]}")
            return {**harness.last_json_line(r["stdout"]), "wall_seconds": r["wall_seconds"],
                    "peak_rss_mb": r["peak_rss_mb"]}
        return run

    table, raw = {}, {}
    for batch in BATCHES:
        runs = harness.alternate({k: side(k, batch) for k in folders}, a.reps, f"batch {batch}")
        raw[f"batch_{batch}"] = runs
        med = {k: harness.medians(rs) for k, rs in runs.items()}
        table[f"batch_{batch}"] = {**med, "int4_decode_vs_pytorch": harness.ratio(
            med["og_int4"]["decode_tokens_per_second"], med["pytorch"]["decode_tokens_per_second"], 2),
            "int4_ttft_vs_pytorch": harness.ratio(med["og_int4"]["time_to_first_token_seconds"],
                                                  med["pytorch"]["time_to_first_token_seconds"])}
    sizes = {k: size_mb(f) for k, f in folders.items()}
    summary = {"size_mb": sizes, **{b: {k: v for k, v in t.items() if not isinstance(v, dict)} | {
        f"{k}_decode_tokens_per_second": t[k]["decode_tokens_per_second"] for k in folders} | {
        f"{k}_ttft_seconds": t[k]["time_to_first_token_seconds"] for k in folders} for b, t in table.items()},
        "load_seconds": {k: table["batch_1"][k]["load_seconds"] for k in folders},
        "import_seconds": {k: table["batch_1"][k]["import_seconds"] for k in folders}}
    met = {"int4_decode_vs_pytorch_batch1": (summary["batch_1"]["int4_decode_vs_pytorch"] or 0)
           >= TARGET["int4_decode_vs_pytorch_batch1_min"]}
    result.write(what=__doc__.split("\n\n")[1].replace("\n", " "), models={"merged": str(merged), "int4": str(int4),
                 "source": source}, summary=summary, table=table, raw=raw, target=TARGET, met=met)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
