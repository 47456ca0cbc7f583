"""Every pass type Olive has shipped, matched as Olive matches them (case-insensitively), and what
slmforge does with each: run it, fold it into its one checked ModelBuilder build, or refuse it by name.

Olive looks pass types up by `type.lower()` (olive/passes/olive_pass.py registers `__name__.lower()`),
so `"qlora"`, `"dora"` and `"gptq"` are valid Olive; errors still name the canonical spelling.

The ONNX export chain Olive's LoRA recipes end in — `OnnxConversion` → `OrtTransformersOptimization`
→ (`OnnxMatMul4Quantizer` | `OnnxBnb4Quantization` | `OnnxBlockWiseRtnQuantization`) →
`ModelBuilder` with `metadata_only` — yields an onnxruntime-genai model of the fine-tuned model.
slmforge builds that same model through its own ModelBuilder step (checked against PyTorch), so
`fold_export_chain` rewrites the chain into one ModelBuilder pass and says how, in one note.
"""

from __future__ import annotations

from typing import Any

from slmforge.training.methods import PASS_TYPES

RUN = (*PASS_TYPES, "MergeAdapterWeights", "ModelBuilder", "ExtractAdapters")
EXPORT_CHAIN = ("OnnxConversion", "OrtTransformersOptimization", "OnnxMatMul4Quantizer", "OnnxBnb4Quantization",
                "OnnxBlockWiseRtnQuantization")
QUANTIZERS = ("OnnxMatMul4Quantizer", "OnnxBnb4Quantization", "OnnxBlockWiseRtnQuantization")

_TORCH_QUANT = ("quantizes the PyTorch model; slmforge quantizes in its checked ModelBuilder step instead: "
                "use ModelBuilder with precision int4 and int4_algo_config (rtn, k_quant, k_quant_mixed, or "
                "slmforge's default auto)")
_GRAPH = ("rewrites the ONNX graph for a vendor execution provider or an NPU; slmforge ships onnxruntime-genai "
          "models for CPU and CUDA from ModelBuilder")
_ONNX_QUANT = ("quantizes an ONNX graph after the build; slmforge quantizes inside ModelBuilder: use its precision "
               "(int4, int8) and int4_algo_config")
_TUNING = ("tunes onnxruntime session options; onnxruntime-genai reads its session options from "
           "genai_config.json, which slmforge writes")
_IO = "converts the model's input/output types; ModelBuilder writes the types onnxruntime-genai expects"
_OTHER = "is not a step of fine-tuning and shipping a language model, which is what slmforge runs"

# Olive pass types slmforge does not run, with why and what it offers instead (Olive 0.4 to today).
REFUSED: dict[str, str] = {
    "LoftQ": ("initialises LoRA by rewriting the base model's weights, which the merge and build do not carry "
              "yet; use LoRA or QLoRA"),
    "SDLoRA": "fine-tunes Stable Diffusion, not a language model",
    **{t: _TORCH_QUANT for t in (
        "GptqQuantizer", "Gptq", "GptqModel", "AutoAWQQuantizer", "Rtn", "QuaRot", "SpinQuant", "SliceGPT",
        "SparseGPT", "SelectiveMixedPrecision", "KQuant", "AutoClip", "QuarkQuantization", "MixedPrecisionOverrides",
        "QuantizationAwareTraining", "PyTorchTensorParallel", "MoEExpertsDistributor", "CaptureLayerAnnotations")},
    **{t: _ONNX_QUANT for t in (
        "OnnxKQuantQuantization", "OnnxHqqQuantization", "OnnxStaticQuantization", "OnnxDynamicQuantization",
        "OnnxQuantization", "OnnxQuantizationPreprocess", "IncQuantization", "IncStaticQuantization",
        "IncDynamicQuantization", "OrtMixedPrecision", "OnnxFloatToFloat16", "MatMulNBitsToQDQ", "quantize_static",
        "NVModelOptQuantization", "AimetQuantization", "VitisAIQuantization", "VitisQDQQuantizer",
        "VitisQOpQuantizer", "PowerOfTwoMethod")},
    **{t: _GRAPH for t in (
        "GraphSurgeries", "SplitModel", "StaticLLM", "CaptureSplitInfo", "EPContextBinaryGenerator",
        "ComposeOnnxModels", "NVModelOptGraphSurgery", "VitisAIAddMetaData", "VitisGenerateModelLLM",
        "VitisGenerateModelSD", "RyzenGenerateModelLLM", "QNNContextBinaryGenerator", "QNNConversion",
        "QNNModelLibGenerator", "QNNPreprocess", "QairtEncapsulation", "QairtGenAIBuilder", "QairtMHA2SHA",
        "QairtPipelinePass", "QairtPreparation", "OpenVINOConversion", "OpenVINOEncapsulation", "OpenVINOIoUpdate",
        "OpenVINOOptimumConversion", "OpenVINOQuantization", "OpenVINOQuantizationWithAccuracy",
        "OpenVINOWeightCompression", "SNPEConversion", "SNPEQuantization", "SNPEtoONNXConversion",
        "TorchTRTConversion", "TrtMatMulToConvTransform", "DynamicToFixedShape", "InputNCHWtoNHWC",
        "MobiusBuilder")},
    **{t: _TUNING for t in ("OrtSessionParamsTuning", "OrtPerfTuning")},
    **{t: _IO for t in ("OnnxIODataTypeConverter", "OnnxIOFloat16ToFloat32")},
    **{t: _OTHER for t in (
        "AddOliveMetadata", "AppendPrePostProcessingOps", "ConvertHfToGGUF", "InsertBeamSearch", "OnnxDiscrepancyCheck",
        "OnnxModelOptimizer", "OnnxOpVersionConversion", "OnnxPeepholeOptimizer", "OnnxScriptFusion",
        "OptimumConversion", "OptimumMerging", "SaveTestModelConfig")},
}

_CANONICAL = {t.lower(): t for t in (*RUN, *EXPORT_CHAIN, *REFUSED)}


def canonical_type(name: Any) -> Any:
    """Olive's canonical spelling of a pass type written in any case; anything else unchanged."""
    return _CANONICAL.get(name.lower(), name) if isinstance(name, str) else name


def known_types() -> list[str]:
    return list(_CANONICAL.values())


# The chain's keys that carry over to ModelBuilder (quantizer key -> ModelBuilder key).
_QUANT_KEYS = {"block_size": "int4_block_size", "is_symmetric": "int4_is_symmetric",
               "accuracy_level": "int4_accuracy_level", "nodes_to_exclude": "int4_nodes_to_exclude"}
_ALGORITHMS = {None: None, "DEFAULT": None, "RTN": "rtn", "k_quant": "k_quant"}


def fold_export_chain(passes: dict[str, Any]) -> tuple[dict[str, Any], str | None, list[str]]:
    """Rewrite Olive's ONNX export chain into one ModelBuilder pass.

    Returns (passes, note, problems): the passes with the chain folded, one line stating the mapping
    (None without a chain), and values the chain carries that slmforge cannot map.
    """
    chain = [(name, p) for name, p in passes.items() if isinstance(p, dict) and p.get("type") in EXPORT_CHAIN]
    if not chain:
        return passes, None, []
    problems: list[str] = []
    builders = [(name, p) for name, p in passes.items() if isinstance(p, dict) and p.get("type") == "ModelBuilder"]
    if len(builders) > 1:
        return passes, None, []  # checks.py reports the second ModelBuilder
    quant = [(name, p) for name, p in chain if p["type"] in QUANTIZERS]
    opt = next((p for _, p in chain if p["type"] == "OrtTransformersOptimization"), {})
    conv = next((p for _, p in chain if p["type"] == "OnnxConversion"), {})
    folded: dict[str, Any] = {"type": "ModelBuilder"}
    if builders:
        name, builder = builders[0]
        folded.update({k: v for k, v in builder.items() if k not in ("metadata_only",)})
    else:
        name = chain[-1][0]
    if not quant and "precision" not in folded:
        fp16 = opt.get("float16") or str(conv.get("torch_dtype", "")).lower() in ("float16", "fp16")
        folded["precision"] = "fp16" if fp16 else "fp32"
    if quant:  # the quantizer decided the weights; ModelBuilder(metadata_only) only wrote genai_config
        folded["precision"] = "int4"
        qname, q = quant[-1]
        for key, target in _QUANT_KEYS.items():
            if key in q and target not in folded:
                folded[target] = q[key]
        algorithm = q.get("algorithm")
        if algorithm not in _ALGORITHMS:
            problems.append(f"{qname}.algorithm: {algorithm!r} has no ModelBuilder counterpart in slmforge "
                            "(RTN, DEFAULT and k_quant map to int4_algo_config)")
        elif _ALGORITHMS[algorithm] and "int4_algo_config" not in folded:
            folded["int4_algo_config"] = _ALGORITHMS[algorithm]
    order = " -> ".join(p["type"] for _, p in chain) + (" -> ModelBuilder(metadata_only)" if builders else "")
    note = (f"passes: the ONNX export chain {order} is built as one checked ModelBuilder pass '{name}' "
            f"(precision {folded['precision']}"
            + "".join(f", {k} {folded[k]}" for k in ("int4_block_size", "int4_algo_config") if k in folded)
            + "); the chain's exporter and optimizer settings do not apply to ModelBuilder")
    merged_first = _needs_merge(passes)
    if merged_first:
        note += ("; the adapter is merged before the build (OnnxConversion exports a "
                 f"{merged_first} adapter inside the model; the builder reads LoRA adapters only)")
    chain_names = {n for n, _ in chain}
    out: dict[str, Any] = {}
    for pname, p in passes.items():
        if pname == name:
            if merged_first:
                out[_free_name(passes, "merge")] = {"type": "MergeAdapterWeights"}
            out[pname] = folded
        elif pname not in chain_names:
            out[pname] = p
    return out, note, problems


def _needs_merge(passes: dict[str, Any]) -> str | None:
    """The type of a fine-tune the builder cannot read beside its base, when no merge follows it."""
    types = [p.get("type") for p in passes.values() if isinstance(p, dict)]
    if "MergeAdapterWeights" in types or "ExtractAdapters" in types:  # with ExtractAdapters: refused in checks.py
        return None
    return next((t for t in types if t in ("DoRA", "LoHa", "LoKr")), None)


def _free_name(passes: dict[str, Any], base: str) -> str:
    name, i = base, 1
    while name in passes:
        i += 1
        name = f"{base}{i}"
    return name
