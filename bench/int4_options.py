"""int4 options on the real model: which builder settings keep a fine-tuned SmolLM2's accuracy.

Fine-tunes SmolLM2-135M-Instruct on the seed data (LoRA q/v/o r16, 40 steps: the recipe of docs/pitfalls.md;
reused when its folders exist), merges it, then builds it with each option set below and scores
every build on the seed data's eval split and on the held-out tone set (phrases written
elsewhere), against the merged model's own answers. Writes bench/results/int4_options.json.

    python bench/int4_options.py [--work DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "data" / "phrase-classification" / "dataset-classification.json"
HELDOUT = REPO / "src" / "slmforge" / "data" / "tones-heldout.jsonl"
BASE = REPO / ".slmforge" / "models" / "smollm2-135m-instruct"
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"

# name -> (precision, block_size, accuracy_level, extra_options)
UNTIED = "shared_embeddings=false,op_types_to_quantize=MatMul/Gather"
OPTIONS = {
    "fp32": ("fp32", 32, 4, ""),
    "int8": ("int8", 32, 4, ""),
    "int4 rtn (builder default)": ("int4", 32, 4, ""),
    "int4 rtn acc1": ("int4", 32, 1, ""),
    "int4 rtn block16": ("int4", 16, 4, ""),
    "int4 rtn block64": ("int4", 64, 4, ""),
    "int4 rtn block128": ("int4", 128, 4, ""),
    # SmolLM2 ties its embeddings to the LM head; the 0.18 builder then shares one quantized matrix
    # between Gather and MatMul, and writes an invalid graph for every method but default RTN:
    "int4 rtn asym (tied)": ("int4", 32, 4, "is_symmetric=false,shared_embeddings=true"),
    "int4 k_quant (tied)": ("int4", 32, 4, "algo_config=k_quant,shared_embeddings=true"),
    "int4 rtn_last (tied)": ("int4", 32, 4, "algo_config=rtn_last,shared_embeddings=true"),
    "int4 k_quant_last (tied)": ("int4", 32, 4, "algo_config=k_quant_last,shared_embeddings=true"),
    "int4 k_quant_mixed (tied)": ("int4", 32, 4, "algo_config=k_quant_mixed,shared_embeddings=true"),
    "int4 k_quant_mixed (tied) acc1": ("int4", 32, 1, "algo_config=k_quant_mixed,shared_embeddings=true"),
    # ... so the head and the embedding are quantized separately (shared_embeddings=false), the
    # embedding in int4 (GatherBlockQuantized) to stay within the size goal:
    "int4 rtn untied": ("int4", 32, 4, UNTIED),
    "int4 rtn asym untied, embedding fp32": ("int4", 32, 4, "is_symmetric=false,shared_embeddings=false"),
    "int4 rtn_last untied": ("int4", 32, 4, "algo_config=rtn_last," + UNTIED),
    "int4 k_quant untied": ("int4", 32, 4, "algo_config=k_quant," + UNTIED),
    "int4 k_quant_last untied": ("int4", 32, 4, "algo_config=k_quant_last," + UNTIED),
    "int4 k_quant_mixed untied": ("int4", 32, 4, "algo_config=k_quant_mixed," + UNTIED),
    "int4 k_quant_mixed untied acc1": ("int4", 32, 1, "algo_config=k_quant_mixed," + UNTIED),
    "int4 k_quant_mixed untied block64": ("int4", 64, 4, "algo_config=k_quant_mixed," + UNTIED),
    # Built from base + adapter instead of the merged weights: the adapter stays float32.
    "int4 rtn, base + float adapter": ("int4", 32, 4, "adapter:algo_config=default"),
    "int4 k_quant_mixed, base + float adapter": ("int4", 32, 4, "adapter:algo_config=k_quant_mixed"),
    # slmforge's default (auto): SmolLM2's base weights are a Q4_1 GGUF's, re-encoded without loss.
    "int4 auto (slmforge default): exact base + float adapter": ("int4", 32, 4, "adapter:algo_config=auto"),
}


def sh(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", *argv], check=True, cwd=REPO)


def reference(work: Path) -> tuple[Path, Path]:
    """(merged model folder, dataset folder), made with the real steps once."""
    model = BASE
    sh("slmforge", "pretrained", "smollm2-135m-instruct", str(model))
    dataset, adapter, merged = work / "dataset", work / "adapter", work / "merged"
    spec = work / "spec.json"
    work.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"text_cols": ["phrase", "tone"], "text_template": TEMPLATE}))
    if not (dataset / "slmforge.json").is_file():
        sh("slmforge.steps.load_data", "--data", str(SEED), "--spec", str(spec), "--tokenizer", str(model),
           "--loss_on", "completion", "--strategy", "line-by-line", "--max_seq_len", "64",
           "--eval_dataset_size", "0.1", "--data_seed", "42", "--dataset", str(dataset))
    if not (adapter / "slmforge.json").is_file():
        sh("slmforge.steps.finetune", "--model", str(model), "--dataset", str(dataset), "--method", "lora",
           "--target_modules", "q_proj,v_proj,o_proj", "--r", "16", "--alpha", "32", "--lora_dropout", "0.0",
           "--learning_rate", "5e-4", "--per_device_train_batch_size", "8", "--max_steps", "40", "--seed", "42",
           "--logging_steps", "10", "--adapter", str(adapter))
    if not (merged / "slmforge.json").is_file():
        sh("slmforge.steps.merge", "--model", str(model), "--adapter", str(adapter), "--output", str(merged))
    return merged, dataset


def score(folder: Path, dataset: Path, reference_answers: dict | None) -> dict:
    from slmforge.models import evaluation
    from slmforge.contract.folders import read_jsonl
    from slmforge.models.answers import examples_from_rows
    from slmforge.models.backend import load_backend
    from slmforge.models.eval_data import read_dataset_folder
    from slmforge.data.template import Template

    rows, examples, template = read_dataset_folder(dataset, 1000)
    heldout = read_jsonl(HELDOUT)
    backend = load_backend(folder, None)
    out = {}
    for name, data, ex in (("eval_split", rows, examples), ("heldout", heldout, None)):
        if ex is None:
            ex = examples_from_rows(backend, data, Template(TEMPLATE))
        m = evaluation.evaluate(backend, data, template, examples=ex, max_new_tokens=4, label=name)
        entry = {"accuracy": m["accuracy"], "n": m["n"], "perplexity": m["perplexity"],
                 "seconds": m["evaluation_seconds"], "predictions": m["predictions"]}
        if reference_answers is not None:
            ref = reference_answers[name]
            entry["answer_agreement"] = round(sum(a == b for a, b in zip(ref, m["predictions"])) / len(ref), 4)
        out[name] = entry
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / ".slmforge" / "bench" / "int4"))
    parser.add_argument("--only", nargs="*", help="option set names to run (default: all)")
    args = parser.parse_args(argv)
    work = Path(args.work)
    merged, dataset = reference(work)

    from slmforge.contract.files import folder_size
    from slmforge.models import onnx_builder

    started = time.perf_counter()
    merged_scores = score(merged, dataset, None)
    reference_answers = {k: v["predictions"] for k, v in merged_scores.items()}
    fp32_size = None
    results = {"merged (PyTorch fp32)": {**merged_scores, "size_bytes": folder_size(merged)}}
    for name, (precision, block, level, extra) in OPTIONS.items():
        if args.only and name not in args.only:
            continue
        out = work / ("build-" + "".join(c if c.isalnum() else "-" for c in name))
        if not (out / "genai_config.json").is_file():
            out.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            try:
                from slmforge.steps.build_onnx import build_model

                from_adapter = extra.startswith("adapter:")
                pieces = dict(p.split("=", 1) for p in extra.removeprefix("adapter:").split(",")
                              if p.startswith(("algo_config=", "is_symmetric=")))
                rest = ",".join(p for p in extra.removeprefix("adapter:").split(",")
                                if not p.startswith(("algo_config=", "is_symmetric=")))
                options = onnx_builder.parse_extra_options(rest or None)
                algo = pieces.get("algo_config", "default")
                symmetric = pieces.get("is_symmetric", "true") == "true"
                source, adapter = (str(BASE), work / "adapter") if from_adapter else (str(merged), None)
                build_model(source, out, precision, "cpu", block, level, algo, symmetric, options, adapter)
            except Exception as e:  # a builder failure is a result of this benchmark, not its end
                results[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
                print(f"{name}: build failed: {results[name]['error']}", flush=True)
                continue
            build_seconds = time.perf_counter() - t
        else:
            build_seconds = None
        scores_file = out / "bench-scores.json"  # rescoring an unchanged build is the slow part of a rerun
        try:
            if scores_file.is_file() and build_seconds is None:
                entry = json.loads(scores_file.read_text())
            else:
                entry = score(out, dataset, reference_answers)
                scores_file.write_text(json.dumps(entry))
        except Exception as e:
            results[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            print(f"{name}: does not run: {results[name]['error']}", flush=True)
            continue
        entry["size_bytes"] = folder_size(out)
        entry["build_seconds"] = build_seconds
        entry["options"] = {"precision": precision, "block_size": block, "accuracy_level": level, "extra": extra}
        if name == "fp32":
            fp32_size = entry["size_bytes"]
        results[name] = entry
        e, h = entry["eval_split"], entry["heldout"]
        print(f"{name}: eval {e['accuracy']:.3f} (agree {e['answer_agreement']:.3f}), heldout {h['accuracy']:.3f} "
              f"(agree {h['answer_agreement']:.3f}), {entry['size_bytes'] / 1e6:.1f} MB", flush=True)

    base = results["merged (PyTorch fp32)"]
    table = []
    for name, entry in results.items():
        if "error" in entry:
            table.append({"name": name, "error": entry["error"]})
            continue
        row = {"name": name, "size_mb": round(entry["size_bytes"] / 1e6, 1)}
        if fp32_size:
            row["size_vs_fp32_onnx"] = round(entry["size_bytes"] / fp32_size, 3)
        for split in ("eval_split", "heldout"):
            row[f"{split}_accuracy"] = entry[split]["accuracy"]
            row[f"{split}_kept"] = round(entry[split]["accuracy"] / base[split]["accuracy"], 3)
            if "answer_agreement" in entry[split]:
                row[f"{split}_agreement"] = entry[split]["answer_agreement"]
        table.append(row)
    for entry in results.values():
        for split in ("eval_split", "heldout"):
            if split in entry:
                entry[split].pop("predictions", None)
    out_file = REPO / "bench" / "results" / "int4_options.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps({
        "benchmark": "int4_options",
        "command": "python bench/int4_options.py",
        "what": "SmolLM2-135M-Instruct, LoRA q/v/o r16 40 steps on the seed data, merged, then built with each "
                "option set; accuracy on the seed eval split (146 rows) and the held-out tone set (200 rows "
                "written elsewhere); kept = accuracy / merged accuracy; agreement = same answer as merged",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "table": table,
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=2) + "\n")
    print(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
