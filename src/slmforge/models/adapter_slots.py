"""A base model whose LoRA weights are graph inputs: one int4 build serving many adapters.

onnxruntime-genai 0.18 serves separate adapters (`og.Adapters`) by feeding their tensors as extra
named inputs of the model. Its builder has no "LoRA as inputs" option, only `adapter_path`, which
bakes a float LoRA path (`lora_A/MatMul` -> `lora_B/MatMul` -> `lora/Add`) beside each Linear. So
the base is built with a *skeleton* adapter (zeros, rank 1, on every decoder Linear of the chosen
kinds) and each LoRA initializer is then made an optional graph input (what Olive's ExtractAdapters
does with make_inputs, dynamic_lora_r and optional_inputs): its default is a rank-0 tensor, so the
base runs unchanged (MatMul with K=0 is exactly zero) until an adapter is active.

The base never depends on an adapter: its bytes are a function of the model and the build options
(measured: two builds byte-identical), so one cache entry serves every fine-tune of that model.
`adapter_slots.json` beside the model lists the slots (name -> shape, the rank axis symbolic) and the
digest of the graph files, which an adapter records and is checked against (og checks nothing:
docs/research/issue-22, pitfall 5).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from slmforge.errors import InvalidInput

SLOTS_FILE = "adapter_slots.json"
# Decoder Linears by their Hugging Face names (Llama/Qwen/Mistral/SmolLM; Phi-3's fused qkv_proj and
# gate_up_proj are split by the builder into these too).
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
# The builder's float LoRA weight names (make_matmul_lora):
#   model.layers.{i}.attn.{q,k,v,o}_proj.lora_{A,B}.MatMul.weight, model.layers.{i}.mlp.{gate,up,down}_proj....
SLOT_NAME = re.compile(r"^model\.layers\.(\d+)\.(attn|mlp)\.(\w+_proj)\.lora_([AB])\.MatMul\.weight$")
_HF_LINEAR = re.compile(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.weight$")
_GRAPH_FILES = ("model.onnx", "model.onnx.data")


def parse_modules(text: str) -> tuple[str, ...]:
    """`all` or a comma list of MODULES -> the module kinds that get slots, in MODULES' order."""
    if text.strip() == "all":
        return MODULES
    wanted = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in MODULES]
    if unknown or not wanted:
        raise InvalidInput(f"adapter_slots: {unknown[0] if unknown else text!r} is not a decoder Linear; "
                           f"use 'all' or a comma list of {', '.join(MODULES)}")
    return tuple(m for m in MODULES if m in wanted)


def skeleton_adapter(source: Path, out: Path, modules: tuple[str, ...]) -> Path:
    """A peft LoRA folder of zeros (rank 1) on every decoder Linear of `modules` in `source`: only its
    shape matters to the builder. Phi-3's fused modules get a slot when any of their parts is wanted."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file

    tensors, targets = {}, set()
    for file in sorted(source.glob("*.safetensors")):
        with safe_open(str(file), framework="np") as f:
            for key in f.keys():
                m = _HF_LINEAR.match(key)
                if not m or not set(_FUSED.get(m.group(3), (m.group(3),))) & set(modules):
                    continue
                out_features, in_features = f.get_slice(key).get_shape()
                path = key.removesuffix(".weight")
                tensors[f"base_model.model.{path}.lora_A.weight"] = np.zeros((1, in_features), np.float32)
                tensors[f"base_model.model.{path}.lora_B.weight"] = np.zeros((out_features, 1), np.float32)
                targets.add(m.group(3))
    if not tensors:
        raise InvalidInput(f"{source}: no decoder Linear named {', '.join(modules)} in its safetensors: "
                           "this model family has no LoRA slots slmforge knows how to place")
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 1, "lora_alpha": 1, "lora_dropout": 0.0,
        "target_modules": sorted(targets), "bias": "none", "base_model_name_or_path": str(source)}), encoding="utf-8")
    return out


def make_inputs(folder: Path, modules: tuple[str, ...]) -> dict:
    """Turn the builder's LoRA initializers in folder/model.onnx into optional inputs (in place);
    write SLOTS_FILE and return what it holds."""
    import numpy as np
    import onnx_ir as ir

    model = ir.load(str(folder / "model.onnx"))
    graph = model.graph
    slots: dict[str, dict] = {}
    for name, value in list(graph.initializers.items()):
        m = SLOT_NAME.match(name)
        if not m:
            continue
        rows, cols = value.shape
        rank_axis = 1 if m.group(4) == "A" else 0
        fixed = [rows, cols]
        fixed[rank_axis] = 0
        dtype = value.const_value.numpy().dtype
        value.const_value = ir.Tensor(np.zeros(fixed, dtype), name=name)  # rank 0: no adapter, the plain base
        dims: list = [rows, cols]
        # One symbolic rank per module: a rank shared by all (Olive's `lora_r`) makes onnxruntime's
        # memory planner reuse buffers across modules of different rank and log a warning per slot per run.
        dims[rank_axis] = name.rsplit(".lora_", 1)[0] + ".lora_r"
        value.shape = ir.Shape(dims)
        graph.inputs.append(value)
        slots[name] = {"shape": dims, "dtype": str(dtype)}
        if m.group(4) == "A":
            for use in value.uses():  # the builder declared A's output [batch, seq, 1]: a stale static rank
                out = use.node.outputs[0]
                if out.shape is not None:
                    out.shape = ir.Shape([*list(out.shape)[:-1], dims[1]])
    if not slots:
        raise InvalidInput(f"{folder}: the builder wrote no LoRA MatMuls to turn into inputs")
    # The builder stamps `producer_version` with the git commit of the folder it is installed in (a .venv
    # inside a checkout gives that checkout's HEAD): the same base would get a new digest with every
    # commit and refuse every adapter made before. The package version alone says what built it.
    model.producer_version = str(model.producer_version or "").split("+", 1)[0]
    rewritten = folder / ".with-slots"  # the weights load lazily from model.onnx.data: write beside, then move
    rewritten.mkdir()
    ir.save(model, str(rewritten / "model.onnx"), external_data="model.onnx.data")
    del model, graph
    for name in _GRAPH_FILES:
        (rewritten / name).replace(folder / name)
    rewritten.rmdir()
    record = {"format": 1, "modules": list(modules), "digest": graph_digest(folder), "slots": slots}
    (folder / SLOTS_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def graph_digest(folder: Path) -> str:
    """sha256 of the graph and its weights: what an adapter is made for."""
    h = hashlib.sha256()
    for name in _GRAPH_FILES:
        path = folder / name
        if path.is_file():
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class BaseSlots:
    """A base folder's SLOTS_FILE: where adapters plug in."""

    folder: Path
    digest: str
    modules: tuple[str, ...]
    slots: dict[str, dict]

    def dtype(self, name: str) -> str:
        return self.slots[name]["dtype"]


def read_slots(folder: str | Path) -> BaseSlots | None:
    """The base's slots, or None when `folder` is a model without them (a baked or plain build)."""
    path = Path(folder) / SLOTS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return BaseSlots(Path(folder), str(data["digest"]), tuple(data["modules"]), dict(data["slots"]))
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidInput(f"{path}: not a valid adapter slot list ({e})") from None


def require_slots(folder: str | Path) -> BaseSlots:
    found = read_slots(folder)
    if found is None:
        raise InvalidInput(f"{folder}: not a base for separate adapters (no {SLOTS_FILE}); build it with "
                           "adapter_slots (an ExtractAdapters pass in a recipe)")
    return found
