"""The LoRA family, one entry per method: the finetune step, the recipe and the ONNX build all read it.

An entry names the finetune step's `--method`, the Olive pass type it answers to (matched in any case,
as Olive matches them: recipe/olive_passes.py), the finetune step parameters only it reads, the peft
config it builds, and what the ONNX side can do with its adapter. From `METHODS` come the step's
`--method` choices, the parameters it records and passes on, the recipe's pass models
(recipe/passes.py, their fields generated from the step's `Params`), the recipe's checks and the
builder's refusal of an adapter it cannot read.

Adding a method is one entry here plus its behaviour (a peft config, and a loader hook if it changes
how the base is loaded); its new step parameters are fields of `steps/finetune.py`'s `Params`.
Light at import (stdlib only): the CLI imports it to parse arguments; peft is imported inside builders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# Torch dtype names a base model loads in and QLoRA computes in (the recipe also takes Olive's bf16/fp16/fp32).
TORCH_DTYPES = ("float32", "float16", "bfloat16")

# The finetune step parameters every method's recipe pass carries (Olive's LoRA keys; the Cookbook
# writes QLoRA's quantization keys on its LoRA pass too: accepted there, read by QLoRA). A method's
# own parameters beyond these are its entry's `params`.
SHARED = ("target_modules", "r", "alpha", "lora_dropout", "torch_dtype", "double_quant", "quant_type",
          "compute_dtype")


@dataclass(kw_only=True)
class AdapterSpec:
    """The adapter to train, as the finetune step's Params give it (their defaults are the only ones)."""

    method: str  # a key of METHODS
    r: int
    alpha: float
    dropout: float  # lora_dropout (LoRA, QLoRA, DoRA)
    target_modules: list[str] | None  # None: every linear layer but the LM head
    torch_dtype: str  # the base model's dtype; peft keeps the adapter in float32 (autocast_adapter_dtype)
    gradient_checkpointing: bool
    options: dict[str, Any] = field(default_factory=dict)  # the method's own parameters (its entry's `params`)


def decompose_factor_problem(value: int) -> str | None:
    """LoKr's Kronecker split: -1 (automatic) or at least 1 (the bound -1 is the parameter's own)."""
    return "decompose_factor is -1 (automatic) or at least 1" if value == 0 else None


@dataclass(frozen=True)
class Method:
    name: str  # the finetune step's --method
    pass_type: str  # Olive's pass type, canonical spelling (a recipe may write it in any case)
    summary: str
    peft_config: Callable[[AdapterSpec], Any]  # the peft config the adapter is trained with
    # finetune step parameters this method reads beyond r/alpha/target_modules/torch_dtype: passed on from
    # its recipe pass, and (unless SHARED) recorded in the manifest only for this method
    params: tuple[str, ...] = ()
    # SHARED keys this method does not read: a recipe that sets one is refused with the hint given
    refuses: dict[str, str] = field(default_factory=dict)
    # per-parameter value rules beyond the bounds: name -> problem(value) (None when fine)
    rules: dict[str, Callable[[Any], str | None]] = field(default_factory=dict)
    quantized_base: bool = False  # the base is loaded in bitsandbytes 4-bit (params quant_type, double_quant...)
    autocasts: bool = False  # the forward runs under a compute_dtype other than float32 (as before bf16 / fp16)
    # The ONNX builder reads the adapter beside the base (its adapter_path takes plain low-rank LoRA
    # weights); the other adapters are built from the merged model (MergeAdapterWeights first).
    builder_reads_adapter: bool = False
    # Whether onnxruntime-genai can serve the adapter as a separate adapter (onnxruntime_genai.Adapters,
    # one base and several adapters), and why (not): measured here (docs/research/issue-22).
    genai_adapter: bool = False
    genai_adapter_why: str = ""


def _lora_config(spec: AdapterSpec, *, use_dora: bool):
    from peft import LoraConfig

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, bias="none",
                      target_modules=spec.target_modules or "all-linear", use_dora=use_dora, task_type="CAUSAL_LM")


def _loha_config(spec: AdapterSpec):
    from peft import LoHaConfig

    return LoHaConfig(r=spec.r, alpha=spec.alpha, **spec.options, target_modules=spec.target_modules or "all-linear",
                      task_type="CAUSAL_LM")


def _lokr_config(spec: AdapterSpec):
    from peft import LoKrConfig

    return LoKrConfig(r=spec.r, alpha=spec.alpha, **spec.options, target_modules=spec.target_modules or "all-linear",
                      task_type="CAUSAL_LM")


_LOW_RANK = ("LoRA weights are a low-rank MatMul beside the base's: an .onnx_adapter that onnxruntime-genai's "
             "Adapters load onto a base built with adapter slots (ExtractAdapters)")
_MERGED = "build it merged (MergeAdapterWeights, then ModelBuilder); measured in docs/research/issue-22"
_LYCORIS = ("rank_dropout", "module_dropout")
_NO_LORA_DROPOUT = {"lora_dropout": "use 'rank_dropout' or 'module_dropout'"}

METHODS: dict[str, Method] = {m.name: m for m in (
    Method(name="lora", pass_type="LoRA", summary="low-rank adapter (peft LoraConfig)",
           peft_config=lambda s: _lora_config(s, use_dora=False), autocasts=True,
           builder_reads_adapter=True, genai_adapter=True, genai_adapter_why=_LOW_RANK),
    Method(name="qlora", pass_type="QLoRA", summary="LoRA on a bitsandbytes 4-bit base",
           peft_config=lambda s: _lora_config(s, use_dora=False),
           params=("quant_type", "double_quant", "compute_dtype"), quantized_base=True,
           builder_reads_adapter=True, genai_adapter=True,
           genai_adapter_why=_LOW_RANK + "; a QLoRA adapter is a plain LoRA adapter of the full-precision base"),
    Method(name="dora", pass_type="DoRA", summary="LoRA with weight decomposition (peft use_dora)",
           peft_config=lambda s: _lora_config(s, use_dora=True),
           genai_adapter_why="DoRA rescales each merged weight column by a learnt magnitude, which a low-rank "
                             "side path does not express (the builder ignores it: logits 0.112 off the merged "
                             "model at fp32); " + _MERGED),
    Method(name="loha", pass_type="LoHa", summary="low-rank Hadamard product (peft LyCORIS)",
           peft_config=_loha_config, params=_LYCORIS, refuses=_NO_LORA_DROPOUT,
           genai_adapter_why="LoHa's update is a Hadamard product of two low-rank pairs, not a low-rank MatMul "
                             "(the builder stops on it); " + _MERGED),
    Method(name="lokr", pass_type="LoKr", summary="low-rank Kronecker product (peft LyCORIS)",
           peft_config=_lokr_config, params=(*_LYCORIS, "decompose_both", "decompose_factor"),
           refuses=_NO_LORA_DROPOUT, rules={"decompose_factor": decompose_factor_problem},
           genai_adapter_why="LoKr's update is a Kronecker product, not a low-rank MatMul (the builder stops on "
                             "it); " + _MERGED),
)}

PASS_TYPES = tuple(m.pass_type for m in METHODS.values())  # Olive's spellings, in the registry's order


def by_pass_type(pass_type: str) -> Method:
    """The entry of an Olive pass type, written in any case (KeyError when it is none of the family's)."""
    for m in METHODS.values():
        if m.pass_type.lower() == pass_type.lower():
            return m
    raise KeyError(pass_type)


def separate_adapter_refusal(method: str) -> str | None:
    """Why an adapter of `method` (lora, dora, loha, lokr: models.torch_model.adapter_method) cannot be
    served beside its base, or None when it can."""
    entry = METHODS.get(method)
    if entry is not None and entry.genai_adapter:
        return None
    name = entry.pass_type if entry is not None else method
    why = entry.genai_adapter_why if entry is not None else "only LoRA adapters have slots in the base"
    return f"a {name} adapter cannot be served separately: {why}"


def own_params() -> tuple[str, ...]:
    """Step parameters some method reads beyond SHARED: recorded only for the methods that read them."""
    return tuple(dict.fromkeys(n for m in METHODS.values() for n in m.params if n not in SHARED))
