"""Olive's recipe generations, and the one table that maps each onto slmforge's recipe.

Three shapes are in use: the Phi-3 Cookbook's (2024: `PyTorchModel` + `hf_config`, pass and system
keys under `config`, `params_config` / `component_kwargs`, `lora_r`), Olive 0.6's (`params` levels)
and Olive 0.7–0.13's flat one (`HfModel`, keys at the pass level, engine keys at the top level).
`normalise` rewrites any of them, mixed section by section, into the flat shape the models in
`schema.py` read, and records where each key came from so that errors name what the user wrote.
Every alias fact lives in `ALIASES`; Olive keys slmforge does not run yet live in `UNSUPPORTED`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from slmforge.recipe.base import NOT_SUPPORTED
from slmforge.recipe.schema import Engine

Path = tuple  # of str | int


@dataclass(frozen=True)
class Alias:
    section: str  # recipe | input_model | PyTorchModel | data_config | system | pass
    old: Path  # a level ("config") whose keys move to `new`; or a key (its path once levels are undone)
    new: Path
    era: str  # who writes the old spelling
    level: bool = False
    yields: str | None = None  # dropped when this canonical key is also given (it names the same model)
    holder: bool = False  # a level that only holds other levels (component_kwargs)


ENGINE_KEYS = tuple(Engine.model_fields)
# Olive's engine keys slmforge does not run yet, and why (at the top level or in `engine`).
ENGINE_UNSUPPORTED = {
    "evaluator": "use the 'evaluate' block",
    "packaging_config": "use the 'register' block",
    "cache_config": "slmforge's cache is content-addressed under cache_dir",
    "clean_evaluation_cache": "use clean_cache",
    "output_name": "the final model is always output_dir/model",
    "plot_pareto_frontier": "slmforge runs no search",
    "log_to_file": "every step always logs to output_dir/logs",
    "ort_log_severity_level": "not wired to onnxruntime's logger",
    "ort_py_log_severity_level": "not wired to onnxruntime's logger",
}
_COOKBOOK = "the Cookbook and Olive < 0.7"

ALIASES: tuple[Alias, ...] = (
    Alias("recipe", ("engine",), ("engine",), "", level=True),
    *(Alias("recipe", (k,), ("engine", k), "Olive 0.7+: engine keys at the top level")
      for k in ENGINE_KEYS + tuple(ENGINE_UNSUPPORTED)),
    Alias("input_model", ("config",), (), _COOKBOOK, level=True),
    Alias("PyTorchModel", ("config",), (), _COOKBOOK, level=True),
    Alias("PyTorchModel", ("config", "hf_config"), (), _COOKBOOK, level=True),
    Alias("PyTorchModel", ("model_name",), ("model_path",), _COOKBOOK, yields="model_path"),
    Alias("PyTorchModel", ("model_loading_args",), ("load_kwargs",), _COOKBOOK),
    Alias("PyTorchModel", ("from_pretrained_args",), ("load_kwargs",), _COOKBOOK),
    Alias("data_config", ("load_dataset_config",), ("load_dataset_config",), "", level=True),
    Alias("data_config", ("load_dataset_config", "params"), ("load_dataset_config",), "Olive 0.6", level=True),
    Alias("data_config", ("pre_process_data_config",), ("pre_process_data_config",), "", level=True),
    Alias("data_config", ("pre_process_data_config", "params"), ("pre_process_data_config",), "Olive 0.6",
          level=True),
    Alias("data_config", ("params_config",), ("load_dataset_config",), "Olive < 0.6.2", level=True),
    Alias("data_config", ("params_config", "component_kwargs"), ("component_kwargs",), "Olive < 0.6.2", level=True,
          holder=True),
    Alias("data_config", ("params_config", "component_kwargs", "pre_process_data"), ("pre_process_data_config",),
          "Olive < 0.6.2", level=True),
    Alias("data_config", ("component_kwargs",), ("component_kwargs",), "Olive < 0.6.2", level=True, holder=True),
    Alias("data_config", ("component_kwargs", "pre_process_data"), ("pre_process_data_config",), "Olive < 0.6.2",
          level=True),
    Alias("data_config", ("pre_process_data_config", "corpus_strategy"), ("pre_process_data_config", "strategy"),
          "the Cookbook and Olive < 0.6.2"),
    Alias("data_config", ("pre_process_data_config", "source_max_len"), ("pre_process_data_config", "max_seq_len"),
          "the Cookbook and Olive < 0.6.2"),
    Alias("system", ("config",), (), _COOKBOOK, level=True),
    Alias("pass", ("config",), (), _COOKBOOK, level=True),
    Alias("pass", ("lora_r",), ("r",), "the Cookbook and Olive < 0.8"),
    Alias("pass", ("lora_alpha",), ("alpha",), "the Cookbook and Olive < 0.8"),
)

RENAMED_TYPES = {"PyTorchModel": "HfModel"}  # the Cookbook's input model type -> today's

_LORA_FAMILY = ("LoRA", "QLoRA", "DoRA", "LoHa", "LoKr")
_LYCORIS_WHY = "a LyCORIS option slmforge does not pass on yet"
_BUILDER_WHY = "a builder option slmforge does not pass on or check; extra_options reaches the builder as is"
# (section, pass/system type or None for any, canonical key) -> why slmforge refuses it for now.
UNSUPPORTED: dict[tuple[str, str | None, str], str] = {
    **{("recipe", None, k): why for k, why in {
        "evaluators": "slmforge evaluates accuracy, size and speed itself; see the 'evaluate' block",
        "workflow_id": "slmforge names runs by output_dir",
        "data_root": "paths resolve relative to the recipe file",
        "auto_optimizer_config": "slmforge runs the passes the recipe names, no search",
    }.items()},
    **{("recipe", None, ("engine", k)): why for k, why in ENGINE_UNSUPPORTED.items()},
    ("input_model", None, "adapter_path"): "starting from an existing adapter is not implemented",
    ("input_model", None, "io_config"): "the ONNX builder derives inputs and outputs itself",
    ("input_model", None, "model_attributes"): "read from the model's config.json",
    ("data_config", None, "post_process_data_config"): "only text-generation pre-processing is implemented",
    ("data_config", None, "dataloader_config"): "batching is set by training_args",
    ("data_config", None, "user_script"): "slmforge runs no user code",
    ("data_config", None, "script_dir"): "slmforge runs no user code",
    **{("data_config", None, ("component_kwargs", k)): "only text-generation pre-processing is implemented"
       for k in ("load_dataset", "post_process_data", "dataloader")},
    ("data_config", None, ("pre_process_data_config", "stride")): "only for join-sliding-window, not implemented",
    ("data_config", None, ("pre_process_data_config", "random_seed")): "only for the random strategies, "
                                                                     "not implemented",
    ("data_config", None, ("pre_process_data_config", "text_formatting_func")): "slmforge runs no user code",
    ("system", None, "olive_managed_env"): "slmforge's environments come from environments/",
    ("system", None, "requirements_file"): "slmforge's environments come from environments/",
    **{("pass", None, k): "slmforge runs every pass on engine.host" for k in ("host", "evaluator")},
    ("pass", None, "clean_run_cache"): "use engine.clean_cache or `slmforge run --force STEP`",
    ("pass", None, "output_name"): "the final model is always output_dir/model",
    **{("pass", t, k): why for t in _LORA_FAMILY for k, why in {
        "modules_to_save": "the merge and int4 build are checked for LoRA weights only",
        "device_map": "slmforge places the model itself (CPU, or the one GPU)",
        "ephemeral_gpu_offload": "slmforge places the model itself (CPU, or the one GPU)",
        "save_quant_config": "a QLoRA adapter is merged into the full-precision base",
    }.items()},
    **{("pass", t, k): _LYCORIS_WHY for t in ("LoHa", "LoKr") for k in (
        "use_effective_conv2d", "exclude_modules", "init_weights", "layers_to_transform", "layers_pattern",
        "rank_pattern", "alpha_pattern")},
    ("pass", "LoKr", "rank_dropout_scale"): _LYCORIS_WHY,
    **{("pass", "ModelBuilder", k): _BUILDER_WHY for k in (
        "metadata_only", "search", "use_qdq", "use_8bits_moe", "use_webgpu_fp32", "use_cuda_bf16",
        "include_hidden_states", "enable_cuda_graph")},
}
UNSUPPORTED_PASS_TYPES = {
    "LoftQ": "LoftQ initialisation rewrites the base model's weights, which the merge and build do not carry yet",
    **{t: "slmforge builds ONNX with ModelBuilder only" for t in (
        "OnnxConversion", "OrtTransformersOptimization", "ExtractAdapters", "OnnxMatMul4Quantizer",
        "OnnxDynamicQuantization", "OnnxStaticQuantization", "OnnxPeepholeOptimizer", "OrtSessionParamsTuning")},
    **{t: "slmforge quantizes in the ModelBuilder pass" for t in ("GptqQuantizer", "AutoAWQQuantizer")},
}
UNSUPPORTED_SYSTEM_TYPES = {t: "slmforge runs locally or on Azure ML" for t in ("Docker", "PythonEnvironment",
                                                                                  "IsolatedORT")}


@dataclass
class Normalised:
    data: dict[str, Any]  # the canonical recipe
    origin: dict[Path, Path] = field(default_factory=dict)  # canonical path -> the user's path
    inside: dict[Path, Path] = field(default_factory=dict)  # canonical node -> the level its keys were in
    problems: list[tuple[Path, str]] = field(default_factory=list)  # (the user's path, message)
    typo_sections: set[Path] = field(default_factory=set)  # where a typo may also leave a key "missing"

    def raw_path(self, cpath: Path) -> Path:
        """The path the user wrote for a canonical path; a key not written belongs inside its level."""
        cpath = tuple(cpath)
        if cpath in self.origin:
            return self.origin[cpath]
        for n in range(len(cpath) - 1, -1, -1):
            prefix, rest = cpath[:n], cpath[n:]
            if prefix in self.inside:
                return self.inside[prefix] + rest
            if prefix in self.origin:
                return self.origin[prefix] + rest
        return cpath


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _key(dest: Path) -> str | Path:
    return dest[0] if len(dest) == 1 else dest


def normalise(raw: dict[str, Any]) -> Normalised:
    """Rewrite any generation's recipe into the canonical shape; problems are reported, not raised."""
    out = Normalised({})
    out.data = _section(raw, "recipe", None, (), (), out)
    model = out.data.get("input_model")
    if isinstance(model, dict):
        section = "PyTorchModel" if model.get("type") == "PyTorchModel" else "input_model"
        out.data["input_model"] = _section(model, section, None, out.raw_path(("input_model",)), ("input_model",), out)
        if model.get("type") in RENAMED_TYPES:
            out.data["input_model"]["type"] = RENAMED_TYPES[model["type"]]
    if isinstance(out.data.get("data_configs"), list):
        out.data["data_configs"] = [
            _section(dc, "data_config", None, out.raw_path(("data_configs", i)), ("data_configs", i), out)
            if isinstance(dc, dict) else dc for i, dc in enumerate(out.data["data_configs"])]
    for name, section, refused in (("systems", "system", UNSUPPORTED_SYSTEM_TYPES),
                                   ("passes", "pass", UNSUPPORTED_PASS_TYPES)):
        block = out.data.get(name)
        if not isinstance(block, dict):
            continue
        kept = {}
        for key, node in block.items():
            cpath = (name, key)
            kind = node.get("type") if isinstance(node, dict) else None
            if isinstance(kind, str) and kind in refused:
                out.problems.append((out.raw_path(cpath) + ("type",),
                                     f"{section} type '{kind}' is {NOT_SUPPORTED} ({refused[kind]})"))
                continue
            kept[key] = _section(node, section, kind, out.raw_path(cpath), cpath, out) if kind else node
        out.data[name] = kept
    return out


def _section(node: dict, section: str, kind: str | None, rbase: Path, cbase: Path, out: Normalised) -> dict:
    """Place every key of one section at its canonical path; report clashes and unsupported keys."""
    levels = {a.old: a for a in ALIASES if a.section == section and a.level}
    renames = {a.old: a for a in ALIASES if a.section == section and not a.level}
    placed: dict[Path, tuple[Any, Path, Alias | None]] = {}

    def visit(d: dict, rel: Path, target: Path, holder: bool) -> None:
        for k, v in d.items():
            q = rel + (k,)
            if q in levels and isinstance(v, dict):
                out.inside[cbase + levels[q].new] = rbase + q  # a deeper level wins
                visit(v, q, levels[q].new, levels[q].holder)
                continue
            dest = target + (k,)
            alias = renames.get(dest)
            if alias is not None:
                dest = alias.new
            why = UNSUPPORTED.get((section_kind, kind, _key(dest))) or UNSUPPORTED.get((section_kind, None, _key(dest)))
            if why is not None:
                out.problems.append((rbase + q, f"'{k}' is {NOT_SUPPORTED} ({why})"))
                continue
            if holder:
                inner = [o[-1] for o in levels if o[:-1] == rel]
                out.problems.append((rbase + q, f"unknown key '{k}'{did_you_mean(k, inner)}"))
                out.typo_sections.add(rbase)
                continue
            if dest in placed:
                _, prev, prev_alias = placed[dest]
                if alias is not None and alias.yields == dest[-1]:
                    continue
                if not (prev_alias is not None and prev_alias.yields == dest[-1]):
                    era = next((f" ({a.old[-1]}: {a.era})" for a in (alias, prev_alias) if a and a.era), "")
                    out.problems.append((rbase + q, f"'{k}' and {dotted(rbase + prev)} set the same "
                                                    f"'{dest[-1]}'{era}; keep one"))
                    continue
            placed[dest] = (v, q, alias)

    section_kind = "input_model" if section == "PyTorchModel" else section
    visit(node, (), (), False)
    canon: dict[str, Any] = {}
    for dest, (value, q, _) in placed.items():
        target = canon
        for part in dest[:-1]:
            target = target.setdefault(part, {})
        target[dest[-1]] = value
        out.origin[cbase + dest] = rbase + q
    return canon


def old_spellings(cparent: Path) -> list[str]:
    """Key names other generations use at a canonical path: a 'did you mean' knows them too."""
    section, rel = _section_of(cparent)
    if section is None:
        return []
    aliases = [a for a in ALIASES if a.section in section]
    names = [a.old[-1] for a in aliases if not a.level and a.old[:-1] == rel]
    level_of = {a.old: a.new for a in aliases if a.level}
    names += [a.old[-1] for a in aliases if a.level and (level_of.get(a.old[:-1]) if a.old[:-1] else ()) == rel]
    return list(dict.fromkeys(names))


def did_you_mean(key: str, known: list[str]) -> str:
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def canonical_name(name: str) -> str:
    """Today's name of a key another generation spells `name` (the name itself if none)."""
    return next((a.new[-1] for a in ALIASES if not a.level and a.old[-1] == name), name)


def _section_of(cpath: Path) -> tuple[tuple[str, ...] | None, Path]:
    if cpath[:1] == ("input_model",):
        return ("input_model", "PyTorchModel"), tuple(cpath[1:])
    for block, section in (("data_configs", "data_config"), ("systems", "system"), ("passes", "pass")):
        if cpath[:1] == (block,) and len(cpath) >= 2:
            return (section,), tuple(cpath[2:])
    if cpath in ((), ("engine",)):
        return ("recipe",), tuple(cpath)
    return None, ()


def to_current(canonical: dict[str, Any]) -> dict[str, Any]:
    """The canonical recipe as Olive 0.13 writes it: the engine's keys at the top level."""
    current = {k: v for k, v in canonical.items() if k != "engine"}
    engine = canonical.get("engine")
    if isinstance(engine, dict):
        current.update(engine)
    return current
