"""Numerical checks of a converted model against its PyTorch source, on fixed prompts.

merge and build_onnx call these after writing a model and fail (StepFailed) when the new model
does not compute what the source computes. numpy only: callers bring the logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Short, varied texts: plain sentences, the tone template shape, the chat shape, digits and
# punctuation. Every position of every prompt is compared, so a dozen prompts give ~200 positions.
CHECK_PROMPTS = [
    "Best day ever thanks to the neighbour's garden!",
    "### Text: I can't believe I lost my keys again.\n### The tone is:\n",
    "### Text: The storm outside is getting worse and the lights went out.\n### The tone is:\n",
    "<|user|>\nWhat is the capital of France?<|end|>\n<|assistant|>\n",
    "I miss the science exam so much it hurts.",
    "The quick brown fox jumps over the lazy dog.",
    "Wow, I never expected to win the raffle at the fair!",
    "Numbers: 1, 2, 3, 42 and 1000 - all fine?",
    "She opened the door slowly, afraid of what she might find.",
    "Thank you so much for the lovely flowers.",
    "hello",
    "### Text: We finally moved into our new house today!\n### The tone is:\n",
]

# fp32 must match PyTorch to float rounding: the builder only rearranges the same fp32 maths
# (fused QKV, SkipLayerNorm, GQA). 1e-4 is ~100x the differences seen on correct builds (~6e-7)
# and far below what any wiring mistake produces (O(0.1) and more).
FP32_MAX_ABS_DIFF = 1e-4

# Quantized / half builds are approximations, judged by what matters for use: does the model
# still rank the vocabulary the same way (cosine of the logit vectors), and does it pick the same
# next token wherever PyTorch clearly prefers one. Measured with these prompts (int4, block 32):
#                                     cosine_mean  decisive positions  argmax agreement there
#   tiny random model (2 layers)         0.987          3 / 305              1.0
#   small random model (8 layers, 27 M)  0.954          1 / 201              1.0
#   tiny after LoRA on the seed data     0.988        253 / 305              0.988
#   LM head mis-wired by the builder     0.587         18 / 305              0.11
#   int8 / fp16 (small random model)     0.9997 / 0.999999
# - "Decisive": PyTorch's top-1 logit beats its top-2 by >= DECISIVE_MARGIN standard deviations of
#   that position's logits. Untrained models have nearly flat logits, where int4 noise alone flips
#   the argmax (the small model agrees on 59% of ALL positions), so agreement is only counted where
#   the reference is decisive, and only gated when there are at least MIN_DECISIVE such positions.
#   It is computed from the reference alone, so a worse candidate cannot shrink its own test.
# - Cosine is gated always. Random weights are the worst case for int4 (no structure, every matmul
#   adds independent noise): 0.954 on the 8-layer model. A bound of 0.9 passes that and still
#   fails a mis-wired head (0.59); on trained models the agreement gate is the sharper test
#   (NOTES.md: 48/50 on a bigger variant), so >= 0.9 leaves room for a borderline position.
DECISIVE_MARGIN = 1.0
MIN_DECISIVE = 10
THRESHOLDS = {
    "int4": {"cosine_mean": 0.9, "argmax_agreement": 0.9},
    "int8": {"cosine_mean": 0.995, "argmax_agreement": 0.95},
    "fp16": {"cosine_mean": 0.999, "argmax_agreement": 0.98},
}


@dataclass
class Comparison:
    positions: int
    max_abs_diff: float
    cosine_mean: float
    cosine_min: float
    argmax_agreement_all: float
    decisive_positions: int
    argmax_agreement: float | None  # at decisive positions; None when there are none

    def as_dict(self) -> dict:
        return {k: (round(v, 8) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> Comparison:
    """Compare logits [seq, vocab] per prompt, at every position."""
    ref = np.concatenate([r.astype(np.float64) for r in reference])
    cand = np.concatenate([c.astype(np.float64) for c in candidate])
    if ref.shape != cand.shape:
        return Comparison(ref.shape[0], float("inf"), 0.0, 0.0, 0.0, 0, 0.0)
    norms = np.linalg.norm(ref, axis=-1) * np.linalg.norm(cand, axis=-1)
    cosine = (ref * cand).sum(-1) / np.maximum(norms, 1e-30)
    agree = ref.argmax(-1) == cand.argmax(-1)
    top2 = np.sort(ref, axis=-1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) >= DECISIVE_MARGIN * ref.std(-1)
    return Comparison(
        positions=int(ref.shape[0]),
        max_abs_diff=float(np.abs(ref - cand).max()),
        cosine_mean=float(cosine.mean()),
        cosine_min=float(cosine.min()),
        argmax_agreement_all=float(agree.mean()),
        decisive_positions=int(decisive.sum()),
        argmax_agreement=float(agree[decisive].mean()) if decisive.any() else None,
    )


def failures(comparison: Comparison, precision: str) -> list[str]:
    """What falls short of the bound for `precision` (empty: the check passed)."""
    if precision == "fp32":
        if not comparison.max_abs_diff <= FP32_MAX_ABS_DIFF:
            return [f"max abs logit difference {comparison.max_abs_diff:.3g} > {FP32_MAX_ABS_DIFF:g}"]
        return []
    bounds = THRESHOLDS[precision]
    out = []
    if not comparison.cosine_mean >= bounds["cosine_mean"]:
        out.append(f"mean logit cosine {comparison.cosine_mean:.4f} < {bounds['cosine_mean']}")
    agreement = comparison.argmax_agreement
    if comparison.decisive_positions >= MIN_DECISIVE and agreement < bounds["argmax_agreement"]:
        out.append(f"next-token argmax agreement {agreement:.3f} at {comparison.decisive_positions} decisive "
                   f"positions < {bounds['argmax_agreement']}")
    return out
