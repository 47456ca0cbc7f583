"""Inference benchmark: int4 ONNX vs fp32 ONNX vs PyTorch — size on disk, load time, tokens/s.

For the tiny and the small random Phi-3 (tinymodel.SPECS): build the model, build its fp32 and
int4 onnxruntime-genai folders with the build_onnx step (checks included), then measure each
variant in its own fresh process so import and load times are not shared. Greedy decoding of a
fixed number of new tokens (EOS ignored) on fixed prompts; tokens/s is the median over prompts.
Writes bench/results/inference.json. This machine is shared: figures are compared within a run.

    python bench/inference.py                     # the whole benchmark
    python bench/inference.py --measure KIND DIR  # one measurement (used by the benchmark itself)
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before any heavy import: the load-time clock of a measurement

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULT = BENCH / "results" / "inference.json"
SEED_DATA = BENCH.parents[1] / "shared" / "data" / "phrase-classification" / "dataset-classification.json"
SIZES = ("tiny", "small")
# pytorch_1_thread: torch's default intra-op threads collapse when the machine is busy (tiny model,
# 2 loaded cores: 65 vs 3.6 ms/token); one thread shows what PyTorch does without that contention.
VARIANTS = ("pytorch", "pytorch_1_thread", "onnx_fp32", "onnx_int4")
NEW_TOKENS = 64
PROMPTS = [
    "### Text: Best day ever thanks to the neighbour's garden!\n### The tone is:\n",
    "<|user|>\nTell me about the storm last night.<|end|>\n<|assistant|>\n",
    "The quick brown fox jumps over the lazy dog and",
]


def measure_pytorch(folder: str, threads: int | None = None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    imported = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    loaded = time.perf_counter()
    rates = []
    with torch.inference_mode():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            start = time.perf_counter()
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            rates.append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - start))
    return _timings(imported, loaded, rates, threads=torch.get_num_threads())


def measure_onnx(folder: str) -> dict:
    import onnxruntime_genai as og

    imported = time.perf_counter()
    model = og.Model(folder)
    tokenizer = og.Tokenizer(model)
    tokenizer.update_options(add_special_tokens="true")
    loaded = time.perf_counter()
    rates = []
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        params = og.GeneratorParams(model)
        length = len(ids) + NEW_TOKENS
        params.set_search_options(do_sample=False, min_length=length, max_length=length)
        start = time.perf_counter()
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        count = 0
        while not generator.is_done():
            generator.generate_next_token()
            count += 1
        rates.append(count / (time.perf_counter() - start))
    return _timings(imported, loaded, rates)


def _timings(imported: float, loaded: float, rates: list[float], **extra) -> dict:
    return {"import_seconds": round(imported - STARTED, 3), "load_seconds": round(loaded - imported, 3),
            "import_and_load_seconds": round(loaded - STARTED, 3),
            "tokens_per_second": round(statistics.median(rates), 1),
            "tokens_per_second_all": [round(r, 1) for r in rates], "new_tokens": NEW_TOKENS, **extra}


def run_measurement(kind: str, folder: Path) -> dict:
    """One measurement in a fresh interpreter (nothing imported or cached in-process beforehand)."""
    proc = subprocess.run([sys.executable, __file__, "--measure", kind, str(folder)], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {kind} {folder} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build_base(size: str, folder: Path) -> tuple[Path, str | None]:
    """tinymodel's model of that size (the small one's tokenizer also learns from the seed data)."""
    from slmforge.models import tinymodel

    extra = [SEED_DATA] if size == "small" else []
    return tinymodel.build_tiny_model(folder, size=size, extra_corpus=extra), None


def bench_size(size: str, root: Path) -> dict:
    from slmforge.contract.files import folder_size as size_on_disk
    from slmforge.steps import build_onnx

    base, note = build_base(size, root / size / "hf")
    folders = {"pytorch": base, "pytorch_1_thread": base}
    build = {}
    for precision in ("fp32", "int4"):
        out = root / size / precision
        start = time.perf_counter()
        check = build_onnx.run(model=base, output=out, precision=precision)
        build[precision] = {"seconds": round(time.perf_counter() - start, 2), "check": check}
        folders[f"onnx_{precision}"] = out
    variants = {}
    for variant in VARIANTS:
        kind = "onnx" if variant.startswith("onnx") else variant
        weights = sum(p.stat().st_size for p in folders[variant].iterdir()
                      if p.suffix in (".safetensors", ".onnx", ".data"))
        variants[variant] = {"size_bytes": size_on_disk(folders[variant]), "weights_bytes": weights,
                             **run_measurement(kind, folders[variant])}
        print(f"  {size:<5} {variant:<16} {variants[variant]['size_bytes']:>12,} B  "
              f"load {variants[variant]['load_seconds']:.2f} s  "
              f"(import+load {variants[variant]['import_and_load_seconds']:.2f} s)  "
              f"{variants[variant]['tokens_per_second']:>9,.0f} tokens/s", flush=True)
    config = json.loads((base / "config.json").read_text())
    return {"note": note, "config": {k: config[k] for k in ("vocab_size", "hidden_size", "intermediate_size",
                                              "num_hidden_layers", "num_attention_heads")},
            "build": build, "variants": variants}


def summary(models: dict) -> dict:
    out = {}
    for size, data in models.items():
        v = data["variants"]
        out[size] = {
            "int4_size_vs_fp32": round(v["onnx_int4"]["size_bytes"] / v["onnx_fp32"]["size_bytes"], 3),
            "int4_size_vs_pytorch": round(v["onnx_int4"]["size_bytes"] / v["pytorch"]["size_bytes"], 3),
            "int4_tokens_per_second_vs_pytorch": round(v["onnx_int4"]["tokens_per_second"]
                                                       / v["pytorch"]["tokens_per_second"], 2),
            "int4_tokens_per_second_vs_pytorch_1_thread": round(v["onnx_int4"]["tokens_per_second"]
                                                                / v["pytorch_1_thread"]["tokens_per_second"], 2),
            "fp32_onnx_tokens_per_second_vs_pytorch": round(v["onnx_fp32"]["tokens_per_second"]
                                                            / v["pytorch"]["tokens_per_second"], 2),
            "int4_import_and_load_vs_pytorch": round(v["onnx_int4"]["import_and_load_seconds"]
                                                     / v["pytorch"]["import_and_load_seconds"], 3),
        }
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "DIR"),
                        help="measure one folder (pytorch | pytorch_1_thread | onnx)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.measure:
        kind, folder = args.measure
        measure = {"pytorch": measure_pytorch, "pytorch_1_thread": lambda f: measure_pytorch(f, threads=1),
                   "onnx": measure_onnx}[kind]
        print(json.dumps(measure(folder)))
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slmforge-bench-inference-") as tmp:
        models = {size: bench_size(size, Path(tmp)) for size in args.sizes}
    result = {
        "benchmark": "inference",
        "what": f"greedy decoding of {NEW_TOKENS} new tokens (EOS ignored) on {len(PROMPTS)} prompts, "
                "median tokens/s; each variant measured in a fresh process",
        "machine": {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)},
        "models": models,
        "summary": summary(models),
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    tmp_result = RESULT.with_suffix(".json.tmp")
    tmp_result.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_result, RESULT)
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
