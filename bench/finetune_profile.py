"""Where a fine-tune step's time goes on SmolLM2, and how close it is to this CPU's matmul peak.

    python bench/finetune_profile.py [--dataset DIR] [--steps N] [--batch N]

Builds the step from the finetune step's own pieces (load_model, BatchPlan, pack_batch,
causal_lm_loss, make_optimizer: what training/loop.py runs) and times each phase of every step:
data (choose + pack the batch), forward, backward, optimizer (clip + AdamW + zero_grad). One more
step runs under torch.profiler for the operators that take the time. The matmul peak is measured
here too: fp32 torch.mm of 1024-square matrices on the same threads. Used FLOP/s counts 4 x the
non-embedding parameters per token (forward 2N, backward through frozen weights 2N; LoRA's own
small matrices and attention's score products are not counted). Writes bench/results/finetune_profile.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def matmul_peak_gflops(threads: int, n: int = 1024, seconds: float = 2.0) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            a @ b
            count += 1
        rates.append(2 * n**3 * count / (time.perf_counter() - start) / 1e9)
    return round(max(rates), 1)  # the least disturbed window: a peak, not a typical rate


def tokenized(work: Path, max_len: int = 64, loss_on: str = "completion") -> Path:
    from slmforge.steps import load_data

    spec = work / "spec.json"
    spec.write_text('{"text_cols": ["phrase", "tone"], "text_template": %s}' % __import__("json").dumps(harness.TEMPLATE))
    out = work / "dataset"
    load_data.run(data=str(harness.SEED_DATA), spec=spec, tokenizer=harness.SMOLLM2, dataset=out,
                  strategy="line-by-line", loss_on=loss_on, max_seq_len=max_len)
    return out


def profile(dataset: Path, steps: int, batch: int, method: str, threads: int, target_modules: str | None = None,
            lora_dropout: float = 0.05) -> dict:
    import torch

    from slmforge.training.data import BatchPlan, attention_cost, count_tokens, pack_batch, read_dataset
    from slmforge.training.loss import causal_lm_loss
    from slmforge.contract.params import make
    from slmforge.steps.finetune import Params, adapter_spec
    from slmforge.training.model import load_model, make_optimizer

    torch.set_num_threads(threads)
    data = read_dataset(dataset)
    # The finetune step's own defaults, with the benchmark's adapter settings (bench/finetune.py's TRAIN)
    spec = adapter_spec(make(Params, {"model": str(harness.SMOLLM2), "dataset": str(dataset), "adapter": "unused",
                                   "method": method, "r": 16, "alpha": 32.0, "lora_dropout": lora_dropout,
                                   **({"target_modules": target_modules} if target_modules else {})}))
    model = load_model(harness.SMOLLM2, None, spec, "cpu", seed=0)
    config = model.get_base_model().config
    embedding = config.vocab_size * config.hidden_size
    non_embedding = sum(p.numel() for n, p in model.get_base_model().named_parameters()
                        if "lora_" not in n) - embedding * (1 if config.tie_word_embeddings else 2)
    cost = attention_cost(config.hidden_size, config.intermediate_size)
    plan = BatchPlan([len(ids) for ids, _ in data.train], batch, seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer("adamw_torch", params, lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                         device_type="cpu")
    loss_module = causal_lm_loss(model)
    model.train()
    phases: dict[str, list[float]] = {"data": [], "forward": [], "backward": [], "optimizer": []}
    tokens: list[int] = []

    def step(k: int, record: bool) -> None:
        t0 = time.perf_counter()
        examples = [data.train[i] for i in plan.micro_batch(k)]
        batch_ = pack_batch(examples, data.pad_token_id, cost)
        t1 = time.perf_counter()
        loss, n = loss_module(**batch_)
        t2 = time.perf_counter()
        (loss / n).backward()
        loss_module.release()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if record:
            for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[name].append(seconds)
            tokens.append(count_tokens(examples))

    step(0, False)  # warm-up: first-call allocations and kernel selection
    for k in range(1, steps + 1):
        step(k, True)
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step(steps + 1, False)
    ops = [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 1)}
           for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]]
    total = sum(sum(v) for v in phases.values())
    step_seconds = total / steps
    tps = sum(tokens) / total
    return {"method": method, "steps": steps, "batch": batch, "threads": threads, "lora_dropout": lora_dropout,
            "target_modules": target_modules or "all-linear",
            "tokens_per_step": round(statistics.mean(tokens), 1), "step_seconds": round(step_seconds, 3),
            "tokens_per_second": round(tps, 1), "non_embedding_params_millions": round(non_embedding / 1e6, 1),
            "used_gflops": round(4 * non_embedding * tps / 1e9, 1),
            "phase_share": {k: round(sum(v) / total, 3) for k, v in phases.items()},
            "phase_seconds_per_step": {k: round(statistics.mean(v), 4) for k, v in phases.items()},
            "top_ops_one_step": ops}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", help="a load_data folder tokenized for SmolLM2 (default: made from the seed data)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--methods", default="lora")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--target-modules", help="comma list (default: every linear layer)")
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--loss-on", default="completion", choices=("completion", "all"),
                   help="labels on the answer only, or on the whole text (a recipe without loss_on)")
    p.add_argument("--out", help="result file (default bench/results/finetune_profile.json)")
    a = p.parse_args(argv)
    result = harness.Result("finetune_profile", Path(a.out) if a.out else None)
    peak_before = matmul_peak_gflops(a.threads)
    with tempfile.TemporaryDirectory(prefix="slmforge-bench-prof-") as tmp:
        dataset = Path(a.dataset) if a.dataset else tokenized(Path(tmp), loss_on=a.loss_on)
        runs = [profile(dataset, a.steps, a.batch, m, a.threads, a.target_modules, a.lora_dropout)
                for m in a.methods.split(",")]
    peak_after = matmul_peak_gflops(a.threads)
    peak = max(peak_before, peak_after)
    for r in runs:
        r["share_of_matmul_peak"] = round(r["used_gflops"] / peak, 3)
        print(f"{r['method']}: {r['tokens_per_second']:.0f} tokens/s, {r['used_gflops']} GFLOP/s = "
              f"{100 * r['share_of_matmul_peak']:.0f} % of the {peak} GFLOP/s matmul peak; "
              f"phases {r['phase_share']}", flush=True)
    result.write(what=__doc__.split("\n\n")[1].replace("\n", " "),
                 matmul_peak_gflops={"before": peak_before, "after": peak_after, "used": peak,
                                     "how": "fp32 torch.mm 1024x1024, best of 5 windows"},
                 runs=runs, target={"share_of_matmul_peak_min": 0.6})
    return 0


if __name__ == "__main__":
    sys.exit(main())
