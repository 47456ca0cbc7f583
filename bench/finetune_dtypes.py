"""What a recipe's training dtype costs on this machine: the finetune step's tokens/s per dtype.

    python bench/finetune_dtypes.py [--sizes tiny smollm2] [--configs fp32 bf16 ...] [--threads 1] [--smollm2 DIR]

LoRA on the tiny Phi-3 and on SmolLM2-135M-Instruct, the same rows, seed and settings as
bench/finetune.py, one run per configuration (a few steps: a rate, not a quality figure):
float32 (slmforge's default), bf16 autocast over a float32 base, a bfloat16 base under bf16
(Olive's default torch_dtype with `bf16: true`), a float16 base under fp16 (with its gradient scaler).
The adapter stays float32 in every case (peft's autocast_adapter_dtype).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetune as bench_finetune  # noqa: E402
import harness  # noqa: E402

STEPS = {"tiny": 30, "smollm2": 4}
CONFIGS = {  # name -> the finetune step's parameters beside bench/finetune.py's
    "fp32": {},  # slmforge's default
    "bf16": {"bf16": True},  # bf16 autocast over a float32 base
    "bf16-base": {"torch_dtype": "bfloat16", "bf16": True},  # Olive's default torch_dtype, with bf16: true
    "fp16-base": {"torch_dtype": "float16", "fp16": True},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny"], choices=sorted(STEPS),
                   help="smollm2: about 5 minutes per half-precision run on a 2-core CPU")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smollm2", default=str(harness.SMOLLM2), help="SmolLM2 folder (slmforge pretrained)")
    p.add_argument("--out", default=str(harness.RESULTS / "finetune_dtypes.json"))
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    harness.SMOLLM2 = Path(a.smollm2)
    from slmforge.steps import finetune

    result = harness.Result("finetune_dtypes", Path(a.out))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepared = bench_finetune.prepare(work, a.sizes)
        for size in a.sizes:
            model, dataset = prepared[size]
            base = None
            for name in a.configs:
                extra = CONFIGS[name]
                out = work / f"{size}-{len(rows)}"
                m = finetune.run(model=str(model), dataset=str(dataset), adapter=str(out),
                                 checkpoints=str(work / f"ck-{len(rows)}"), max_steps=STEPS[size],
                                 logging_steps=1, save_steps=STEPS[size] + 1, progress=False,
                                 **bench_finetune.TRAIN, **extra)["metrics"]
                base = m["tokens_per_second"] if name == "fp32" else base
                rows.append({"model": size, "dtype": name, **extra, "steps": STEPS[size],
                             "tokens_per_second": m["tokens_per_second"],
                             "vs_float32": round(m["tokens_per_second"] / base, 3) if base else None,
                             "first_loss": round(m["loss_history"][0]["loss"], 4),
                             "final_loss": round(m["final_loss"], 4)})
                print(json.dumps(rows[-1]), flush=True)
    result.write(threads=a.threads, batch=bench_finetune.TRAIN["per_device_train_batch_size"], results=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
