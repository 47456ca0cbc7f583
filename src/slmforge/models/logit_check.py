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

# fp32 must match PyTorch to float rounding: merging only reorders float32 sums and the builder
# only rearranges the same fp32 maths (fused QKV, SkipLayerNorm, GQA). How large that rounding is
# depends on the model, the adapter (how large its weights and the hidden states grew) and the depth,
# so it is measured, not guessed: the reference itself is run a second time in float64 on the same
# prompts, and its float32-vs-float64 distance is the size of float32 rounding for this model. A
# correct rewrite is another float32 rounding of the same maths, of the same order; the bound is
#     FP32_ROUNDING_MULTIPLE * max |reference32 - reference64| + FP32_FLOOR_ULPS * eps * max |logit|
# (the floor: a model float32 computes exactly, whose float64 run shows no rounding at all).
# transformers keeps RMSNorm's and the rotary tables' internals in float32 even in a float64 model,
# so the float64 run slightly understates the rounding; the multiple covers it.
# Measured, tiny Phi-3 (2 layers), max abs difference / the reference's float32-vs-float64 distance:
#   merge, peft adapters on all projections, lora_B std 0.01-0.4:   0.6-6.4e-6 / 0.5-4.6e-6, ratio 1.1-1.6
#   merge, LoRA qkv_proj+o_proj r16 lr 0.003 200 steps on the seed data (the Cookbook shape; reported
#     failing the old bound, 64 * eps * max|logit| * layers = 3.85e-5, with 4.03e-5; here, this CPU,
#     the merge step gives 9.5e-7 against the same old bound): 9.5e-7 / 1.15e-6 (0.83)
#   merge, LoRA on all projections r16 lr 1e-2 300 steps on the seed data: 6.0e-4 / 2.2e-4 (2.76): the
#     trained adapter grows the hidden states, and rounding with them (the old bound, 4.2e-5, fails this
#     correct merge 14x over); random peft adapters of its weights' size (A std 0.1, B std 0.09) show
#     only 1.4e-6 of rounding, so the scale must be measured on the model itself
#   fp32 ONNX: base 6.6e-7 / 6.2e-7 (1.07); base + adapter, lora_B std 0.04: 5.4e-7 / 5.2e-7 (1.04),
#     all projections std 0.4: 2.4e-6 / 3.2e-6 (0.76)
#   SmolLM2-135M (30 layers, |logit| <= 38), peft adapters on q/v/o r16: merge, lora_B std 0.005:
#     1.11e-4 / 1.05e-4 (1.05), std 0.05: 7.6e-5 / 8.4e-5 (0.90); fp32 ONNX of base + the std 0.005
#     adapter: 1.10e-4 / 1.05e-4 (1.04), bound 1.7e-3 (the old bound there: 8.7e-3)
#   broken (tiny): lora_B x2 0.73, a zeroed MLP layer 0.20 (merge) / 0.29 (ONNX), a mis-wired head 1.03 -- all
#     against bounds of ~1e-5.
# A multiple of 16 leaves ~6x room over the largest ratio seen (2.76) and stays orders of magnitude below a
# wrong adapter scale, a zeroed layer or a mis-wired head, which move logits by O(0.1) of their scale.
FLOAT32_EPSILON = 2.0 ** -23
FP32_ROUNDING_MULTIPLE = 16.0
FP32_FLOOR_ULPS = 8.0


def rounding_scale(reference: list[np.ndarray], reference64: list[np.ndarray]) -> float:
    """The reference's own float32 rounding: its max abs logit distance to the same forward in float64."""
    return max(float(np.abs(r.astype(np.float64) - r64.astype(np.float64)).max())
               for r, r64 in zip(reference, reference64))


def fp32_bound(reference: list[np.ndarray], rounding: float) -> float:
    """The largest max abs logit difference a correct fp32 rewrite of the model may show (`rounding`:
    rounding_scale of the reference)."""
    scale = max(float(np.abs(r).max()) for r in reference)
    return (FP32_ROUNDING_MULTIPLE * rounding
            + FP32_FLOOR_ULPS * FLOAT32_EPSILON * max(scale, 1.0))


def fp32_failures(comparison: Comparison, bound: float, rounding: float) -> list[str]:
    """The fp32 check: empty when the candidate is within `bound` (fp32_bound) of the reference."""
    if comparison.max_abs_diff <= bound:
        return []
    return [f"max abs logit difference {comparison.max_abs_diff:.3g} > {bound:.3g} (the reference's own "
            f"float32 rounding, measured against float64: {rounding:.3g})"]


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
# - Cosine is a sanity gate, always on: it catches a mis-wired head or a broken layer, and leaves
#   judging a lossy but working build to the answer gates below. Random weights are the worst case
#   for int4 (no structure, every matmul adds independent noise): 0.954 on the 8-layer model;
#   SmolLM2 after LoRA: builder RTN 0.869, k_quant_mixed 0.845 (lossy, but a model), slmforge's
#   exact re-encoding 0.9988; a mis-wired head 0.59 (tiny) and far lower on SmolLM2 (the test
#   prints it). 0.7 passes every working build and fails the broken ones.
DECISIVE_MARGIN = 1.0
MIN_DECISIVE = 10
THRESHOLDS = {
    "int4": {"cosine_mean": 0.7, "argmax_agreement": 0.9},
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
    """What falls short of the bounds for a quantized or half `precision` (fp32: fp32_failures)."""
    bounds = THRESHOLDS[precision]
    out = []
    if not comparison.cosine_mean >= bounds["cosine_mean"]:
        out.append(f"mean logit cosine {comparison.cosine_mean:.4f} < {bounds['cosine_mean']}")
    agreement = comparison.argmax_agreement
    if comparison.decisive_positions >= MIN_DECISIVE and agreement < bounds["argmax_agreement"]:
        out.append(f"next-token argmax agreement {agreement:.3f} at {comparison.decisive_positions} decisive "
                   f"positions < {bounds['argmax_agreement']}")
    return out


# ---- gates on the eval rows: what a user of the built model cares about
#
# With the recipe's eval rows at hand, a quantized or half build is judged by its answers: the
# share of rows where its greedy answer is the source model's, the share where it picks the same
# first answer token, and the accuracy it loses. Measured on SmolLM2-135M after LoRA
# (bench/results/int4_options.json; seed eval split 146 rows / held-out tone set 200 rows):
#                                  answer agreement   accuracy drop
#   int4 exact (slmforge default)    0.973 / 0.935    -0.007 / 0.005   (demo recipe: 0.975, -0.005)
#   int8                             0.980 / 0.930    -0.021 / -0.010
#   int4 k_quant_mixed               0.829 / 0.700     0.075 / 0.095
#   int4 builder default (RTN)       0.651 / 0.325     0.143 / 0.295
# Agreement is lower on the held-out rows because there the model is often unsure (accuracy 0.53),
# so near-ties flip under any rounding; the accuracy drop is what the user loses. The int4 bounds
# pass the exact build with room and fail the lossy ones; int8/fp16/fp32 bounds are tighter.
@dataclass(frozen=True)
class AnswerGate:
    min_answer_agreement: float
    min_first_token_agreement: float
    max_accuracy_drop: float  # absolute, in accuracy points / 100


ANSWER_GATES = {
    "int4": AnswerGate(0.85, 0.85, 0.05),
    "int8": AnswerGate(0.90, 0.90, 0.03),
    "fp16": AnswerGate(0.95, 0.95, 0.02),
    "fp32": AnswerGate(0.98, 0.98, 0.01),
}


def answer_comparison(reference: dict, candidate: dict) -> dict:
    """Agreement of two evaluate() results on the same rows (their `predictions`, first tokens, accuracy)."""
    pairs = list(zip(reference["predictions"], candidate["predictions"]))
    firsts = list(zip(reference["first_answer_tokens"], candidate["first_answer_tokens"]))
    return {
        "rows": len(pairs),
        "answer_agreement": round(sum(a == b for a, b in pairs) / len(pairs), 6) if pairs else None,
        "first_token_agreement": round(sum(a == b for a, b in firsts) / len(firsts), 6) if firsts else None,
        "reference_accuracy": reference["accuracy"],
        "accuracy": candidate["accuracy"],
        "accuracy_drop": round(reference["accuracy"] - candidate["accuracy"], 6),
    }


def answer_failures(comparison: dict, gate: AnswerGate) -> list[str]:
    out = []
    if not comparison["rows"]:
        return out
    if comparison["answer_agreement"] < gate.min_answer_agreement:
        out.append(f"its answers agree with the source model's on {comparison['answer_agreement']:.3f} of "
                   f"{comparison['rows']} eval rows < {gate.min_answer_agreement}")
    if comparison["first_token_agreement"] < gate.min_first_token_agreement:
        out.append(f"its first answer token agrees on {comparison['first_token_agreement']:.3f} of the rows "
                   f"< {gate.min_first_token_agreement}")
    if comparison["accuracy_drop"] > gate.max_accuracy_drop:
        out.append(f"accuracy {comparison['accuracy']:.3f} against the source model's "
                   f"{comparison['reference_accuracy']:.3f} (drop {comparison['accuracy_drop']:.3f} > "
                   f"{gate.max_accuracy_drop})")
    return out
