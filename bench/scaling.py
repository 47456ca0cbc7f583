"""How fine-tune time on SmolLM2 grows with data rows and sequence length: predict a run before starting it.

    python bench/scaling.py [--rows 1000,4000,16000] [--lengths 64,256,1024]

Synthetic data made from the seed rows by resampling (with replacement, seeded): `--rows` rows of
one phrase each at 64 tokens, and 1000 rows of ~L tokens (random phrases joined until the row
reaches L tokens) for each `--lengths` L. Each point runs in its own process: load_data (tokenizing
all rows: timed), then the finetune step (LoRA r16, loss on the answer) for a few steps only; the
per-epoch time is extrapolated from the measured tokens/s as epoch tokens / tokens/s, plus the
tokenizing time. The steps and batch per point are in the result (batch shrinks at long rows to keep
a step's tokens similar). Writes bench/results/scaling.json and bench/results/scaling.png.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

# (batch, steps) by row length: about 500-2000 tokens a step, a few steps, the whole table in minutes
PLAN = {64: (8, 4), 256: (4, 2), 1024: (1, 2)}


def synthetic_rows(rows: int, length: int, tokenizer, seed: int = 0) -> list[dict]:
    seed_rows = [json.loads(line) for line in harness.SEED_DATA.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        row = dict(rng.choice(seed_rows))
        if length > 64:
            parts, n = [row["phrase"]], len(tokenizer(row["phrase"])["input_ids"])
            while n < length - 16:  # the template and the answer take ~15 tokens
                extra = rng.choice(seed_rows)["phrase"]
                parts.append(extra)
                n += len(tokenizer(" " + extra)["input_ids"])
            row["phrase"] = " ".join(parts)
        out.append(row)
    return out


def point(rows: int, length: int, work: Path) -> dict:
    """One (rows, length) point, in this process."""
    from transformers import AutoTokenizer

    from slmforge.steps import finetune, load_data

    batch, steps = PLAN[length]
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows(
        rows, length, AutoTokenizer.from_pretrained(harness.SMOLLM2))))
    spec = work / "spec.json"
    spec.write_text(json.dumps({"text_cols": ["phrase", "tone"], "text_template": harness.TEMPLATE}))
    started = time.perf_counter()
    manifest = load_data.run(data=str(data), spec=spec, tokenizer=harness.SMOLLM2, dataset=work / "dataset",
                             strategy="line-by-line", loss_on="completion", max_seq_len=length)
    tokenize_seconds = time.perf_counter() - started
    adapter = work / "adapter"
    argv = ["--model", str(harness.SMOLLM2), "--dataset", str(work / "dataset"), "--method", "lora",
            "--r", "16", "--alpha", "32", "--lora_dropout", "0.0", "--per_device_train_batch_size", str(batch),
            "--max_steps", str(steps), "--logging_steps", str(steps), "--save_steps", str(steps + 1),
            "--learning_rate", "5e-4", "--seed", "0", "--adapter", str(adapter)]
    if finetune.main(argv) != 0:
        raise SystemExit("the finetune step failed")
    m = json.loads((adapter / "slmforge.json").read_text())["metrics"]
    epoch_tokens = manifest["metrics"]["train_tokens"]
    tps = m["tokens_per_second"]
    return {"rows": rows, "length": length, "batch": batch, "steps_measured": steps,
            "tokens_measured": m["tokens"], "tokens_per_second": tps, "epoch_tokens": epoch_tokens,
            "mean_row_tokens": round(epoch_tokens / max(manifest["metrics"]["train_examples"], 1), 1),
            "tokenize_seconds": round(tokenize_seconds, 2),
            "predicted_epoch_minutes": round((epoch_tokens / tps + tokenize_seconds) / 60, 2)}


def plot(points: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    by_rows = sorted((p for p in points if p["length"] == 64), key=lambda p: p["rows"])
    left.plot([p["rows"] for p in by_rows], [p["predicted_epoch_minutes"] for p in by_rows], "o-")
    left.set(xscale="log", yscale="log", xlabel="training rows (64-token rows)", ylabel="minutes per epoch",
             title="epoch time vs rows")
    by_len = sorted((p for p in points if p["rows"] == min(q["rows"] for q in points)), key=lambda p: p["length"])
    right.plot([p["length"] for p in by_len], [p["tokens_per_second"] for p in by_len], "o-", label="tokens/s")
    right.set(xscale="log", xlabel="row length (tokens)", ylabel="training tokens/s", title="throughput vs row length")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("slmforge LoRA on SmolLM2-135M, 2 CPU cores (extrapolated from a few steps per point)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1000,4000,16000")
    p.add_argument("--lengths", default="64,256,1024")
    p.add_argument("--point", nargs=2, type=int, metavar=("ROWS", "LENGTH"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.point:
        with tempfile.TemporaryDirectory(prefix="slmforge-bench-scale-") as tmp:
            print(json.dumps(point(*a.point, Path(tmp))))
        return 0
    result = harness.Result("scaling")
    rows, lengths = [int(x) for x in a.rows.split(",")], [int(x) for x in a.lengths.split(",")]
    wanted = [(r, 64) for r in rows] + [(min(rows), n) for n in lengths if n != 64]
    points = []
    for r, n in wanted:
        done = harness.run_measured([sys.executable, __file__, "--point", str(r), str(n)], env=harness.child_env())
        if done["rc"] != 0:
            raise SystemExit(f"point {r} rows x {n} tokens failed:\n{done['stdout'][-2000:]}")
        points.append({**harness.last_json_line(done["stdout"]), "wall_seconds": done["wall_seconds"],
                       "peak_rss_mb": done["peak_rss_mb"]})
        q = points[-1]
        print(f"{r:>6} rows x {n:>4} tokens: {q['tokens_per_second']:.0f} tokens/s, predicted epoch "
              f"{q['predicted_epoch_minutes']:.1f} min, peak RSS {q['peak_rss_mb']:.0f} MB", flush=True)
    png = harness.RESULTS / "scaling.png"
    plot(points, png)
    result.write(what=__doc__.split("\n\n")[1].replace("\n", " "), plan=PLAN, points=points, plot=png.name,
                 table=[{k: q[k] for k in ("rows", "length", "mean_row_tokens", "tokens_per_second",
                                           "predicted_epoch_minutes", "peak_rss_mb")} for q in points])
    return 0


if __name__ == "__main__":
    sys.exit(main())
