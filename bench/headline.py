"""The README's headline table, from bench/results/*.json (run after `make bench`).

    python bench/headline.py    # prints Markdown
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def load(name: str) -> dict:
    path = harness.RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def fmt(value, unit: str = "", digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}{unit}"


def rows() -> list[tuple[str, str, str, str, str]]:
    out = []
    e2e = load("e2e_smollm2").get("summary", {})
    for phase in ("fresh", "cached"):
        s = e2e.get(phase, {})
        out.append((f"end to end, {phase} (one Olive 0.13 recipe)", fmt(s.get("slmforge", {}).get("wall_seconds"), " s"),
                    fmt(s.get("olive", {}).get("wall_seconds"), " s"), fmt(s.get("wall_ratio"), "×", 3),
                    "≤ 1.0×" if phase == "fresh" else "≤ 0.05×"))
        if phase == "fresh" and "slmforge-eval-off" in s:
            out.append(("end to end, fresh, evaluation off (as Olive runs it)",
                        fmt(s["slmforge-eval-off"].get("wall_seconds"), " s"), fmt(s.get("olive", {}).get("wall_seconds"), " s"),
                        fmt(s.get("eval_off_wall_ratio"), "×", 3), ""))
    acc = e2e.get("heldout_accuracy_int4", {})
    out.append(("int4 held-out accuracy (200 rows)", fmt(acc.get("slmforge"), "", 3), fmt(acc.get("olive"), "", 3),
                fmt(e2e.get("accuracy_points_over_olive"), " pts"), "≥ +10 pts"))
    for row in load("finetune_smollm2").get("results", []):
        out.append((f"fine-tune tokens/s, {row['method']} (vs HF Trainer + peft)",
                    fmt(row["ours"]["tokens_per_second"]), fmt(row["baseline"]["tokens_per_second"]),
                    fmt(row["tokens_per_second_ratio"], "×", 2) + f", RSS {fmt(row['peak_rss_ratio'], '×', 2)}",
                    "≥ 1.8× at ≤ RSS" if row["method"] == "lora" else "≥ 1.5× at ≤ RSS"))
    prof = load("finetune_profile")
    for run in prof.get("runs", []):
        out.append((f"fine-tune share of matmul peak ({prof['matmul_peak_gflops']['used']} GFLOP/s)",
                    fmt(100 * run["share_of_matmul_peak"], " %", 0), "", "", "≥ 60 %"))
    inf = load("inference_smollm2").get("summary", {})
    for b in ("batch_1", "batch_8"):
        s = inf.get(b, {})
        out.append((f"decode tokens/s, {b.replace('_', ' ')} (int4 og vs PyTorch generate)",
                    fmt(s.get("og_int4_decode_tokens_per_second")), fmt(s.get("pytorch_decode_tokens_per_second")),
                    fmt(s.get("int4_decode_vs_pytorch"), "×", 2), "≥ 5× at batch 1" if b == "batch_1" else ""))
    return out


def main() -> int:
    print("| measure | slmforge | other | ratio | goal |\n| --- | ---: | ---: | ---: | --- |")
    for r in rows():
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
