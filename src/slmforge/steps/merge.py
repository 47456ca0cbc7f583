"""Step `merge`: fold a PEFT adapter into its full-precision base model.

Output: a Hugging Face folder (safetensors in float32 or float16, a freshly saved tokenizer)
plus slmforge.json carrying the training template forward. A QLoRA adapter merges into the
full-precision base, never into 4-bit weights. The step checks itself: the merged model, reloaded
from the files it wrote, must give the adapter model's logits on fixed prompts (max abs
difference recorded; above the bound the step fails and leaves no output).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from slmforge.contract import folders, manifest
from slmforge.contract.params import StepParams, make, param
from slmforge.contract.step import StepSpec
from slmforge.errors import StepFailed
from slmforge.steps._cli import run_step

STEP = "merge"
LIBRARIES = ("torch", "transformers", "peft", "safetensors")

# fp32: merging W + s*B@A only reorders float32 sums: logit_check.fp32_bound is a multiple of the
# adapter model's own float32 rounding, measured against the same forward in float64. fp16: the
# saved weights are rounded to 11 significant bits (relative error <= 2^-11 ~ 4.9e-4 per weight);
# through the layers that moves logits by a few 1e-3 of their scale. That bound is relative to the largest reference logit; a wrong or missing adapter moves
# logits by O(0.1) of their scale and still fails.
FP16_RELATIVE_BOUND = 1e-2


@dataclass(kw_only=True)
class Params(StepParams):
    """Merge adapter into base

    Merge a PEFT adapter into its full-precision base model and check the merged logits against the
    adapter model's (at fp32: within a multiple of the adapter model's own float32 rounding).
    """

    model: str | None = param(None, asset="uri_folder", help="base model folder (Hugging Face format)")
    model_id: str | None = param(None, help="hub id of the base model, when no folder is given")
    adapter: str = param(asset="uri_folder", help="PEFT adapter folder (finetune output)")
    torch_dtype: str = param("float32", choices=("float32", "float16"), help="dtype of the merged weights")
    output: str = param(asset="custom_model", output="model", help="merged model folder to write")


SPEC = StepSpec("merge", Params, version="1", model_kind="merged")


def run(**given) -> dict:
    """Merge, check and write the model folder (`given`: Params' names); return the check."""
    p = make(Params, given)
    model, model_id, torch_dtype, output = p.model, p.model_id, p.torch_dtype, p.output
    from slmforge.models import torch_model

    started = time.perf_counter()
    source = torch_model.base_source(model, model_id)
    adapter = folders.open_adapter(p.adapter)

    with manifest.atomic_output(output) as tmp:
        check = merge_into(source, adapter, tmp, torch_dtype)
        params = {"model_id": model_id, "torch_dtype": torch_dtype,
                  **folders.template_param(folders.carried_template(adapter))}
        manifest.write_manifest(
            tmp, step=STEP, params=params,
            inputs={"model": model, "adapter": adapter},
            metrics={"check": check},
            seconds=time.perf_counter() - started, libraries=LIBRARIES,
        )
    print(f"merged {adapter} into {source} -> {output} ({torch_dtype}); "
          f"max abs logit difference {check['max_abs_diff']:.3g}")
    return check


def merge_into(source: str, adapter: Path, out_dir: Path, torch_dtype: str = "float32", *,
               reference: list | None = None) -> dict:
    """Merge `adapter` into the base at `source`, save to `out_dir`, check it; return the check.

    The check compares with the logits of base + `adapter` on logit_check.CHECK_PROMPTS, or with
    `reference` when given (tests pass another adapter's logits to show the check fails); the fp32
    bound comes from base + `adapter` run in float64 (the reference's own rounding)."""
    import torch

    from slmforge.models import logit_check, torch_model

    tokenizer = torch_model.load_tokenizer(source)
    token_ids = [list(tokenizer(p)["input_ids"]) for p in logit_check.CHECK_PROMPTS]
    peft_model = torch_model.with_adapter(torch_model.load_causal_lm(source, "float32"), adapter)
    # Adapter model first: merge_and_unload() rewrites the base weights in place.
    adapter_model = torch_model.all_logits(peft_model, token_ids)
    merged = peft_model.merge_and_unload()
    merged.to(getattr(torch, torch_dtype)).save_pretrained(out_dir)
    del merged, peft_model
    torch_model.load_tokenizer(source).save_pretrained(out_dir)  # fresh: no padding block
    rounding = None
    if torch_dtype == "float32":  # the adapter model's own float32 rounding sizes the bound
        rounding = logit_check.rounding_scale(adapter_model, torch_model.float64_logits(source, adapter, token_ids))

    return check_merged(adapter_model if reference is None else reference, token_ids, out_dir, torch_dtype, rounding)


def check_merged(reference: list, token_ids: list[list[int]], folder: Path, torch_dtype: str = "float32",
                 rounding: float | None = None) -> dict:
    """Reload the merged model from `folder` in float32 and compare it with the adapter model's logits.

    float32: `rounding` (logit_check.rounding_scale of the adapter model) is required; it sizes the bound."""
    from slmforge.models import logit_check, torch_model

    # What was written is checked, reloaded in float32 (fp16 weights are compared as stored).
    reloaded = torch_model.load_causal_lm(str(folder), "float32")
    layers = int(getattr(reloaded.config, "num_hidden_layers", 1))
    result = logit_check.compare(reference, torch_model.all_logits(reloaded, token_ids))
    scale = max(float(abs(r).max()) for r in reference)
    if torch_dtype == "float32":
        bound = logit_check.fp32_bound(reference, rounding)
        measured = {"reference_rounding": rounding}
        cause = f"the adapter model's own float32 rounding, against float64: {rounding:.3g}"
    else:
        bound, measured = FP16_RELATIVE_BOUND * max(scale, 1.0), {}
        cause = f"logits up to {scale:.3g}"
    check = {**result.as_dict(), "bound": bound, **measured, "prompts": len(token_ids), "layers": layers,
             "max_abs_logit": round(scale, 4)}
    if not result.max_abs_diff <= bound:
        raise StepFailed(f"merged model does not reproduce the adapter model: max abs logit difference "
                         f"{result.max_abs_diff:.3g} > {bound:.3g} ({torch_dtype}, {layers} layers, {cause})")
    return check


def main(argv: list[str] | None = None) -> int:
    return run_step(STEP, Params, argv, lambda values: run(**values), __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
