"""The `.onnx_adapter` file: a peft LoRA adapter as onnxruntime-genai loads it beside its base.

The file (onnxruntime's AdapterFormat) holds only tensors and two int32 versions, so what serving and
evaluation need travels in a sidecar, `<file>.json`: the base's digest, the method, rank and alpha,
the target modules, the training template. The model version in the file is 28 bits of the base's
digest, so a file that lost its sidecar is still checked against its base. Tensors are keyed by the
base's slot names (adapter_slots.py): `A.T` and `(B * scaling).T`, as the builder bakes them, with
Phi-3's fused qkv_proj/gate_up_proj split as the builder splits them.

onnxruntime-genai itself checks nothing: an adapter for another base loads, and fails at the first
token or, worse, runs (docs/research/issue-22, pitfall 5); `check_fits` is the refusal.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmforge.contract.files import write_atomic
from slmforge.errors import InvalidInput
from slmforge.models.adapter_slots import BaseSlots, require_slots

SUFFIX = ".onnx_adapter"
SIDECAR_SUFFIX = ".json"
FORMAT = "slmforge.onnx_adapter/1"
_PEFT_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.lora_([AB])\.weight$")


def sidecar(file: Path) -> Path:
    return file.with_name(file.name + SIDECAR_SUFFIX)


def model_version(digest: str) -> int:
    """The int32 the file can hold: the first 28 bits of the base digest."""
    return int(digest[:7], 16)


def peft_parameters(adapter_dir: Path, base: BaseSlots, config: dict) -> dict[str, Any]:
    """{slot name: array in the slot's dtype} for a peft LoRA folder, or one line naming what does not fit."""
    import numpy as np
    from safetensors.numpy import load_file

    _refuse_unservable(adapter_dir, config)
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise InvalidInput(f"{adapter_dir}: no adapter_model.safetensors")
    sizes = _fused_sizes(base)
    params: dict[str, Any] = {}
    for key, w in load_file(str(weights_file)).items():
        m = _PEFT_KEY.match(key)
        if not m:
            raise InvalidInput(f"{adapter_dir}: tensor {key} is not a LoRA weight of a decoder Linear; "
                               "only those have slots in the base")
        layer, block, module, ab = m.groups()
        w = w.astype(np.float32)
        if ab == "B":
            w = w * np.float32(scaling)
        part = "attn" if block == "self_attn" else "mlp"
        for sub, piece in _split_fused(module, ab, w, sizes).items():
            name = f"model.layers.{layer}.{part}.{sub}.lora_{ab}.MatMul.weight"
            if name not in base.slots:
                raise InvalidInput(f"{adapter_dir}: {module} of layer {layer} has no slot in the base {base.folder} "
                                   f"(its slots: {', '.join(base.modules)}); build the base with adapter_slots all")
            params[name] = np.ascontiguousarray(piece.T).astype(base.dtype(name))
    _check_shapes(adapter_dir, params, base)
    return params


def _refuse_unservable(adapter_dir: Path, config: dict) -> None:
    """Only what `x·A·B` added to the base computes: plain LoRA (QLoRA's adapter is one). The callers
    give the LoRA family registry's reason first (training.methods.separate_adapter_refusal)."""
    kind = str(config.get("peft_type", "?"))
    if kind.upper() != "LORA" or config.get("use_dora"):
        raise InvalidInput(f"{adapter_dir}: a {'DoRA' if config.get('use_dora') else kind} adapter has no plain "
                           "low-rank weights to serve separately; build it merged")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise InvalidInput(f"{adapter_dir}: {key} (per-module ranks or alphas) is not supported in a separate "
                               "adapter; build it merged")
    if config.get("bias", "none") != "none" or config.get("modules_to_save"):
        raise InvalidInput(f"{adapter_dir}: it trains biases or whole modules (bias/modules_to_save), which change "
                           "the base's own weights; build it merged")


def _fused_sizes(base: BaseSlots) -> dict[str, int]:
    """Output widths of q/k/v and gate/up in the base, to split Phi-3's fused modules as the builder does."""
    sizes: dict[str, int] = {}
    for name, slot in base.slots.items():
        m = re.match(r"^model\.layers\.0\.\w+\.(\w+_proj)\.lora_B\.", name)
        if m:
            sizes[m.group(1)] = int(slot["shape"][1])
    return sizes


def _split_fused(module: str, ab: str, w, sizes: dict[str, int]) -> dict[str, Any]:
    """lora_A is shared by the parts of a fused module; lora_B's output rows are split (builder order)."""
    parts = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}.get(module)
    if parts is None:
        return {module: w}
    if ab == "A":
        return {p: w for p in parts}
    out, start = {}, 0
    for p in parts:
        out[p] = w[start:start + sizes.get(p, 0)]
        start += sizes.get(p, 0)
    return out


def _check_shapes(adapter_dir: Path, params: dict, base: BaseSlots) -> None:
    for name, arr in params.items():
        want = base.slots[name]["shape"]
        rank_axis = 0 if isinstance(want[0], str) else 1
        fixed_axis = 1 - rank_axis
        if arr.ndim != 2 or arr.shape[fixed_axis] != want[fixed_axis]:
            raise InvalidInput(f"{adapter_dir}: {name} is {list(arr.shape)} but the base {base.folder} expects "
                               f"{want[fixed_axis]} on axis {fixed_axis}: it was trained on another model")
    if not params:
        raise InvalidInput(f"{adapter_dir}: the adapter holds no LoRA weights")


@dataclass(frozen=True)
class AdapterFile:
    """An `.onnx_adapter` file and its sidecar."""

    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name.removesuffix(SUFFIX))

    @property
    def template(self) -> str | None:
        value = self.meta.get("text_template")
        return value if isinstance(value, str) and value else None


def convert(adapter_dir: str | Path, base_dir: str | Path, out_file: str | Path, *,
            name: str | None = None, template: str | None = None) -> AdapterFile:
    """Write `out_file` (+ sidecar) from a peft LoRA folder for the base in `base_dir`."""
    import onnxruntime as ort

    from slmforge.contract.folders import open_adapter

    adapter_dir, out_file = open_adapter(adapter_dir), Path(out_file)
    base = require_slots(base_dir)
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (UnicodeError, ValueError) as e:
        raise InvalidInput(f"{adapter_dir}/adapter_config.json: not valid JSON ({e})") from None
    params = peft_parameters(adapter_dir, base, config)
    meta = {
        "format": FORMAT,
        "name": name or out_file.name.removesuffix(SUFFIX),
        "base": {"digest": base.digest, "modules": list(base.modules)},
        "method": "qlora" if _is_qlora(adapter_dir) else "lora",
        "rank": int(config["r"]), "alpha": float(config["lora_alpha"]),
        "use_rslora": bool(config.get("use_rslora", False)),
        "target_modules": sorted(config.get("target_modules") or []) if not isinstance(config.get("target_modules"), str)
        else config["target_modules"],
        "tensors": len(params),
    }
    if template:
        meta["text_template"] = template
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(model_version(base.digest))
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()})
    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(out_file.name + ".partial")
    try:
        fmt.export_adapter(str(partial))
        partial.replace(out_file)
    finally:
        partial.unlink(missing_ok=True)
    write_atomic(sidecar(out_file), json.dumps(meta, indent=1) + "\n")
    return AdapterFile(out_file, meta)


def _is_qlora(adapter_dir: Path) -> bool:
    from slmforge.contract import manifest

    found = manifest.read_manifest(adapter_dir) or {}
    return str((found.get("params") or {}).get("method", "")).lower() == "qlora"


def find(path: str | Path) -> Path:
    """An adapter file given as itself or as a folder holding exactly one (a step output, adapters/)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(f"*{SUFFIX}"))
        if len(files) != 1:
            raise InvalidInput(f"{path}: holds {len(files)} {SUFFIX} files; name the file")
        return files[0]
    if not path.is_file():
        raise InvalidInput(f"{path}: no such adapter file")
    if not path.name.endswith(SUFFIX):
        raise InvalidInput(f"{path}: not an {SUFFIX} file (convert a peft adapter with `slmforge adapters convert`)")
    return path


def open_file(path: str | Path) -> AdapterFile:
    """The adapter at `path` with its sidecar (an empty one when it lost it: the file is still checked)."""
    import onnxruntime as ort

    file = find(path)
    try:
        fmt = ort.AdapterFormat.read_adapter(str(file))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises RuntimeError/Fail with its reason
        raise InvalidInput(f"{file}: not a readable {SUFFIX} file ({str(e).splitlines()[0] if str(e) else e})") from None
    meta: dict[str, Any] = {}
    if sidecar(file).is_file():
        try:
            meta = json.loads(sidecar(file).read_text(encoding="utf-8"))
        except (UnicodeError, ValueError) as e:
            raise InvalidInput(f"{sidecar(file)}: not valid JSON ({e})") from None
    meta["model_version"] = int(fmt.get_model_version())
    # Names and shapes, copied: the arrays are views into `fmt` (pitfall 7).
    meta["shapes"] = {k: list(v.shape()) for k, v in fmt.get_parameters().items()}
    return AdapterFile(file, meta)


def check_fits(adapter: AdapterFile, base_dir: str | Path) -> None:
    """Refuse, in one line, an adapter made for another base than `base_dir`."""
    base = require_slots(base_dir)
    recorded = (adapter.meta.get("base") or {}).get("digest")
    if recorded and recorded != base.digest:
        raise InvalidInput(f"{adapter.path}: made for the base {recorded[:12]}, not for {base_dir} ({base.digest[:12]}); "
                           "convert its peft adapter for this base (slmforge adapters convert)")
    if adapter.meta["model_version"] != model_version(base.digest):
        raise InvalidInput(f"{adapter.path}: made for another base than {base_dir} (model version "
                           f"{adapter.meta['model_version']:#x}, the base's {model_version(base.digest):#x})")
    for name, shape in adapter.meta["shapes"].items():
        if name not in base.slots:
            raise InvalidInput(f"{adapter.path}: {name} has no slot in the base {base_dir}")
        want = base.slots[name]["shape"]
        if any(isinstance(w, int) and w != s for w, s in zip(want, shape)):
            raise InvalidInput(f"{adapter.path}: {name} is {shape}, the base {base_dir} expects {want}")


def feeds(adapter: AdapterFile) -> dict[str, Any]:
    """{input name: array} of the adapter, for plain onnxruntime (the build check's logits)."""
    import numpy as np
    import onnxruntime as ort

    fmt = ort.AdapterFormat.read_adapter(str(adapter.path))
    return {k: np.array(v.numpy(), copy=True) for k, v in fmt.get_parameters().items()}
