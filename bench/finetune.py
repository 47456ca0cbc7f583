"""Fine-tune benchmark: slmforge's finetune step vs a plain Hugging Face Trainer + peft (what Olive runs).

    python bench/finetune.py [--reps N] [--out bench/results/finetune.json]

LoRA and QLoRA on the tiny Phi-3, on the "small" one (tinymodel.SPECS["small"], ~27 M parameters) and
on the real model SmolLM2-135M-Instruct (--sizes smollm2), on the Cookbook's phrase/tone data set (../shared/data/phrase-classification), loss on the answer,
one example per row. Both sides get the same tokenized rows, model, LoRA settings, batch size,
optimizer (fused AdamW), learning rate schedule, step count and thread count. Each configuration
runs in its own process, so peak RSS is that configuration's; ours and the baseline alternate.

tokens/s counts the tokens of the training examples (pad tokens excluded) per second of the
training loop; wall time is the whole process, imports included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

REPO, SEED_DATA, TEMPLATE = harness.REPO, harness.SEED_DATA, harness.TEMPLATE
# steps per configuration: enough for a steady rate, small enough for `make bench` to fit its budget
STEPS = {"tiny": 60, "small": 16, "smollm2": 8}
TRAIN = dict(r=16, alpha=32, lora_dropout=0.05, seed=0, per_device_train_batch_size=16, learning_rate=3e-3,
             lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0)


# ----------------------------------------------------------------------------- children


def child_ours(a: argparse.Namespace) -> dict:
    """The finetune step exactly as the pipeline runs it (same argv as its component)."""
    from slmforge.steps import finetune

    adapter = Path(a.work) / "adapter"
    argv = ["--model", a.model, "--dataset", a.dataset, "--method", a.method, "--max_steps", str(a.steps),
            "--logging_steps", str(a.steps), "--save_steps", str(a.steps + 1), "--adapter", str(adapter),
            "--checkpoints", str(Path(a.work) / "checkpoints")]
    argv += [x for k, v in TRAIN.items() for x in (f"--{k}", str(v))]
    if finetune.main(argv) != 0:
        raise SystemExit("the finetune step failed")
    m = json.loads((adapter / "slmforge.json").read_text())["metrics"]
    return {"tokens_per_second": m["tokens_per_second"], "train_seconds": m["train_seconds"],
            "tokens": m["tokens"], "final_loss": m["final_loss"]}


def child_baseline(a: argparse.Namespace) -> dict:
    """HF Trainer + peft with Trainer defaults: dynamic padding to the longest row of each batch."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainerCallback, TrainingArguments)

    torch.manual_seed(TRAIN["seed"])
    kwargs = {}
    if a.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs = {"device_map": "cpu", "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32)}
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, **kwargs)
    if a.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(r=TRAIN["r"], lora_alpha=TRAIN["alpha"],
                                             lora_dropout=TRAIN["lora_dropout"], target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    tok = AutoTokenizer.from_pretrained(a.model)
    rows = [json.loads(line) for line in (Path(a.dataset) / "train.jsonl").read_text().splitlines()]
    collate = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100, return_tensors="pt")
    counted: list[tuple[int, int]] = []  # (real tokens, padded tokens) per batch built

    def counting_collator(features):
        batch = collate(features)
        counted.append((int(batch["attention_mask"].sum()), batch["input_ids"].numel()))
        return batch

    class Clock(TrainerCallback):
        begin = end = 0.0

        def on_train_begin(self, *args, **kw):
            Clock.begin = time.perf_counter()

        def on_train_end(self, *args, **kw):
            Clock.end = time.perf_counter()

    args = TrainingArguments(
        output_dir=str(Path(a.work) / "trainer"), per_device_train_batch_size=TRAIN["per_device_train_batch_size"],
        max_steps=a.steps, learning_rate=TRAIN["learning_rate"], lr_scheduler_type=TRAIN["lr_scheduler_type"],
        warmup_steps=TRAIN["warmup_steps"], weight_decay=TRAIN["weight_decay"], max_grad_norm=TRAIN["max_grad_norm"],
        seed=TRAIN["seed"], logging_steps=a.steps, save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=counting_collator,
                      callbacks=[Clock()])
    out = trainer.train()
    seconds = Clock.end - Clock.begin
    real = sum(n for n, _ in counted[:a.steps])
    padded = sum(n for _, n in counted[:a.steps])
    return {"tokens_per_second": round(real / seconds, 1), "train_seconds": round(seconds, 3), "tokens": real,
            "padded_tokens": padded, "final_loss": out.training_loss}


# ----------------------------------------------------------------------------- parent


def prepare(work: Path, sizes: list[str]) -> dict[str, tuple[Path, Path]]:
    """(model folder, dataset folder) per size; the small model's tokenizer also learns the seed data."""
    from slmforge.steps import load_data
    from slmforge.models.tinymodel import build_tiny_model

    spec = work / "spec.json"
    spec.write_text(json.dumps({"text_cols": ["phrase", "tone"], "text_template": TEMPLATE}))
    out = {}
    for size in sizes:
        model = harness.SMOLLM2 if size == "smollm2" else build_tiny_model(
            work / f"phi3-{size}", seed=0, size=size, extra_corpus=[SEED_DATA] if size == "small" else [])
        dataset = work / f"data-{size}"
        load_data.run(data=str(SEED_DATA), spec=spec, tokenizer=model, dataset=dataset,
                      strategy="line-by-line", loss_on="completion", max_seq_len=256)
        out[size] = (model, dataset)
    return out


def run_child(impl: str, size: str, method: str, model: Path, dataset: Path, work: Path, threads: int) -> dict:
    child_work = tempfile.mkdtemp(dir=work, prefix=f"{impl}-{size}-{method}-")
    argv = [sys.executable, __file__, "--child", impl, "--model", str(model), "--dataset", str(dataset),
            "--method", method, "--steps", str(STEPS[size]), "--work", child_work]
    done = harness.run_measured(argv, env=harness.child_env(threads))
    if done["rc"] != 0:
        raise SystemExit(f"{impl} {size} {method} failed:\n{done['stdout'][-3000:]}")
    return {**harness.last_json_line(done["stdout"]), "wall_seconds": done["wall_seconds"],
            "peak_rss_mb": done["peak_rss_mb"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3, help="runs of each configuration (median reported)")
    p.add_argument("--out", default=str(harness.RESULTS / "finetune.json"))
    p.add_argument("--sizes", default=",".join(STEPS))
    p.add_argument("--methods", default="lora,qlora")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch threads of every run (default: all cores of this machine)")
    p.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    for name in ("model", "dataset", "method", "work"):
        p.add_argument(f"--{name}", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child_ours(a) if a.child == "ours" else child_baseline(a)))
        return 0

    result = harness.Result("finetune", Path(a.out))
    threads = a.threads
    sizes, methods = a.sizes.split(","), a.methods.split(",")
    table = []
    with tempfile.TemporaryDirectory(prefix="slmforge-bench-ft-") as tmp:
        work = Path(tmp)
        prepared = prepare(work, sizes)
        for size in sizes:
            model, dataset = prepared[size]
            params_millions = round((model / "model.safetensors").stat().st_size / 4 / 1e6, 2)  # fp32
            for method in methods:
                runs = harness.alternate(
                    {impl: (lambda rep, impl=impl: run_child(impl, size, method, model, dataset, work, threads))
                     for impl in ("ours", "baseline")}, a.reps, f"{size} {method}")
                row = {"model_params_millions": params_millions, "model": size, "method": method,
                       "steps": STEPS[size], **TRAIN}
                for impl, rs in runs.items():
                    row[impl] = {**harness.medians(rs), "runs": rs}
                ours, base = row["ours"], row["baseline"]
                row["tokens_per_second_ratio"] = harness.ratio(ours["tokens_per_second"], base["tokens_per_second"], 2)
                best = [max(r["tokens_per_second"] for r in runs[impl]) for impl in ("ours", "baseline")]
                row["best_tokens_per_second_ratio"] = round(best[0] / best[1], 2)  # least disturbed runs
                row["peak_rss_ratio"] = harness.ratio(ours["peak_rss_mb"], base["peak_rss_mb"])
                table.append(row)
    result.write(
        data=SEED_DATA.name, threads=threads, reps=a.reps,
        tokens_per_second="tokens of the training examples (no pad) per second of the training loop; median of reps",
        target="ours >= 1.5x baseline tokens/s at no more peak RSS",
        baseline="transformers.Trainer + peft, DataCollatorForSeq2Seq(padding=True), Trainer defaults",
        ours="slmforge finetune step: packed batches (no pad compute), LM head and the last layer's MLP and "
             "o_proj only at labelled positions (same loss and gradients), fused AdamW, a plain loop",
        results=table)
    for row in table:
        print(f"{row['model']:5} {row['method']:5}: ours/baseline tokens/s {row['tokens_per_second_ratio']:.2f}x "
              f"(best runs {row['best_tokens_per_second_ratio']:.2f}x), peak RSS {row['peak_rss_ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
