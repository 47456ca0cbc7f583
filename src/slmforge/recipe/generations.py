"""Olive's recipe generations, and the one table that maps each onto slmforge's recipe.

Three shapes are in use: the Phi-3 Cookbook's (2024: `PyTorchModel` + `hf_config`, pass and system
keys under `config`, `params_config` / `component_kwargs`, `lora_r`), Olive 0.6's (`params` levels)
and Olive 0.7–0.13's flat one (`HfModel`, keys at the pass level, engine keys at the top level).
`normalise` rewrites any of them, mixed section by section, into the flat shape the models in
`schema.py` read, and records where each key came from so that errors name what the user wrote.
Every alias fact lives in `ALIASES`; Olive keys slmforge does not run yet live in `UNSUPPORTED`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slmforge.recipe.base import NOT_SUPPORTED, did_you_mean, dotted  # noqa: F401 - re-exported
from slmforge.recipe.olive_layout import data_configs_by_name, engine_defaults, fold_chain, inline_systems, pass_flows
from slmforge.recipe.olive_passes import REFUSED as REFUSED_PASS_TYPES
from slmforge.recipe.olive_passes import canonical_type
from slmforge.recipe.olive_passes import known_types as known_pass_types
from slmforge.recipe.schema import Engine
from slmforge.training.methods import PASS_TYPES

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
    "packaging_config": "use the 'register' block",
    "cache_config": "slmforge's cache is content-addressed under cache_dir",
}
# Olive's engine keys about logs, names and search plots: accepted, and named by `validate` as ignored.
ENGINE_IGNORED = {
    "clean_evaluation_cache": "evaluations are cached by content like every step (clean_cache clears all)",
    "output_name": "the final model is always output_dir/model",
    "plot_pareto_frontier": "slmforge runs no search, so there is no frontier to plot",
    "log_to_file": "every step always logs to output_dir/logs",
    "ort_log_severity_level": "onnxruntime's own log level is left at its default",
    "ort_py_log_severity_level": "onnxruntime's own log level is left at its default",
    "log_severity_level": "slmforge prints progress, notes and errors; every step's full log is in output_dir/logs",
}
_COOKBOOK = "the Cookbook and Olive < 0.7"

ALIASES: tuple[Alias, ...] = (
    Alias("recipe", ("engine",), ("engine",), "", level=True),
    *(Alias("recipe", (k,), ("engine", k), "Olive 0.7+: engine keys at the top level")
      for k in ENGINE_KEYS + tuple(ENGINE_UNSUPPORTED) + tuple(ENGINE_IGNORED)),
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
    # Olive 0.4/0.5: `components` name each data component ({type, params}); `component_kwargs` hold
    # their keyword arguments. Both land on today's `<component>_config` levels.
    *(Alias("data_config", holder + (component,) + inner, (f"{component}_config",), "Olive < 0.6.2", level=True)
      for holder in (("components",), ("component_kwargs",), ("params_config", "component_kwargs"))
      for component in ("load_dataset", "post_process_data", "dataloader")
      for inner in ((), ("params",)) if not (holder != ("components",) and inner)),
    *(Alias("data_config", ("components", "pre_process_data") + inner, ("pre_process_data_config",), "Olive < 0.6.2",
            level=True) for inner in ((), ("params",))),
    Alias("data_config", ("components",), ("components",), "Olive < 0.6.2", level=True, holder=True),
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

_LORA_FAMILY = PASS_TYPES
_LYCORIS_WHY = "a LyCORIS option slmforge does not pass on yet"
# (section, pass/system type or None for any, canonical key) -> why slmforge refuses it for now.
UNSUPPORTED: dict[tuple[str, str | None, str], str] = {
    **{("recipe", None, k): why for k, why in {
        "workflow_id": "slmforge names runs by output_dir",
        "data_root": "paths resolve relative to the recipe file",
        "auto_optimizer_config": "slmforge runs the passes the recipe names, no search",
    }.items()},
    **{("recipe", None, ("engine", k)): why for k, why in ENGINE_UNSUPPORTED.items()},
    ("input_model", None, "adapter_path"): "starting from an existing adapter is not implemented",
    ("input_model", None, "model_attributes"): "read from the model's config.json",
    ("data_config", None, "post_process_data_config"): "Olive's fine-tuning never calls it (it turns model outputs "
                                                        "into predictions for evaluators); slmforge's evaluate steps "
                                                        "read the answers themselves",
    ("data_config", None, "dataloader_config"): "slmforge's training loop batches by training_args (Olive's "
                                                "fine-tuning never calls a dataloader either)",
    ("data_config", None, ("pre_process_data_config", "stride")): "only for join-sliding-window, not implemented",
    ("data_config", None, ("pre_process_data_config", "random_seed")): "only for the random strategies, "
                                                                     "not implemented",
    ("data_config", None, ("pre_process_data_config", "text_formatting_func")): "a row's whole text from a "
                                                                             "function has no answer boundary to "
                                                                             "evaluate on; use text_template",
    ("system", None, "olive_managed_env"): "slmforge's environments come from environments/",
    ("system", None, "requirements_file"): "slmforge's environments come from environments/",
    **{("pass", None, k): "slmforge runs every pass on engine.host" for k in ("host", "evaluator")},
    ("pass", None, "clean_run_cache"): "use engine.clean_cache or `slmforge run --force STEP`",
    ("pass", None, "output_name"): "the final model is always output_dir/model",
    **{("pass", t, k): why for t in _LORA_FAMILY for k, why in {
        "modules_to_save": "the merge and int4 build are checked for LoRA weights only",
        "save_quant_config": "a QLoRA adapter is merged into the full-precision base",
    }.items()},
    **{("pass", t, k): _LYCORIS_WHY for t in ("LoHa", "LoKr") for k in (
        "use_effective_conv2d", "exclude_modules", "init_weights", "layers_to_transform", "layers_pattern",
        "rank_pattern", "alpha_pattern")},
    ("pass", "LoKr", "rank_dropout_scale"): _LYCORIS_WHY,
    ("pass", "ModelBuilder", "search"): ("generation search options; slmforge's evaluation decodes greedily and "
                                         "genai_config.json keeps the builder's search defaults"),
}
UNSUPPORTED_SYSTEM_TYPES = {t: "slmforge runs locally or on Azure ML" for t in ("Docker", "PythonEnvironment",
                                                                                  "IsolatedORT")}

_EXPORT_ONLY = "the ONNX exporter's; slmforge's ModelBuilder step derives the graph from the model itself"
# Valid Olive keys that mean nothing to slmforge: accepted, and named in `validate`'s output with why.
IGNORED: dict[tuple[str, str | None, str | Path], str] = {
    ("recipe", None, "no_artifacts"): "slmforge always writes the run's outputs under output_dir",
    **{("recipe", None, ("engine", k)): why for k, why in ENGINE_IGNORED.items()},
    ("recipe", None, ("engine", "no_artifacts")): "slmforge always writes the run's outputs under output_dir",
    **{("input_model", None, k): _EXPORT_ONLY for k in ("io_config", "dummy_inputs_func", "model_script",
                                                        "model_loader")},
    ("input_model", None, "generative"): "slmforge evaluates every model as a generative one",
    ("input_model", None, "model_class"): "slmforge loads the causal language model config.json names",
    ("system", "AzureML", "is_dev"): "slmforge's Azure ML steps always run the slmforge that submits them (its "
                                     "source goes with the components)",
    ("pass", "ModelBuilder", "save_as_external_data"): "ModelBuilder always writes the weights beside model.onnx",
    **{("pass", t, "use_ort_trainer"): "slmforge trains with its own torch loop" for t in _LORA_FAMILY},
    **{("pass", t, k): "slmforge places the model itself (CPU, or the one GPU)" for t in _LORA_FAMILY
       for k in ("device_map", "ephemeral_gpu_offload")},
}


@dataclass
class Normalised:
    data: dict[str, Any]  # the canonical recipe
    origin: dict[Path, Path] = field(default_factory=dict)  # canonical path -> the user's path
    inside: dict[Path, Path] = field(default_factory=dict)  # canonical node -> the level its keys were in
    problems: list[tuple[Path, str]] = field(default_factory=list)  # (the user's path, message)
    typo_sections: set[Path] = field(default_factory=set)  # where a typo may also leave a key "missing"
    notes: list[str] = field(default_factory=list)  # what slmforge reads differently from Olive, and why

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


def _key(dest: Path) -> str | Path:
    return dest[0] if len(dest) == 1 else dest


def normalise(raw: dict[str, Any]) -> Normalised:
    """Rewrite any generation's recipe into the canonical shape; problems are reported, not raised."""
    out = Normalised({})
    out.data = _section(raw, "recipe", None, (), (), out)
    engine_defaults(out)
    model = out.data.get("input_model")
    if isinstance(model, dict):
        section = "PyTorchModel" if model.get("type") == "PyTorchModel" else "input_model"
        out.data["input_model"] = _section(model, section, None, out.raw_path(("input_model",)), ("input_model",), out)
        if model.get("type") in RENAMED_TYPES:
            out.data["input_model"]["type"] = RENAMED_TYPES[model["type"]]
    data_configs_by_name(out)
    if isinstance(out.data.get("data_configs"), list):
        out.data["data_configs"] = [
            _section(dc, "data_config", None, out.raw_path(("data_configs", i)), ("data_configs", i), out)
            if isinstance(dc, dict) else dc for i, dc in enumerate(out.data["data_configs"])]
    inline_systems(out)
    pass_flows(out)
    for name, section, refused in (("systems", "system", UNSUPPORTED_SYSTEM_TYPES),
                                   ("passes", "pass", REFUSED_PASS_TYPES)):
        block = out.data.get(name)
        if not isinstance(block, dict):
            continue
        kept = {}
        for key, node in block.items():
            cpath = (name, key)
            kind = node.get("type") if isinstance(node, dict) else None
            if section == "pass" and isinstance(kind, str):
                kind = canonical_type(kind)  # Olive looks pass types up case-insensitively
                if kind not in known_pass_types():
                    out.problems.append((out.raw_path(cpath) + ("type",), f"unknown pass type '{kind}'"
                                         f"{did_you_mean(kind, known_pass_types())}"))
                    continue
            if isinstance(kind, str) and kind in refused:
                out.problems.append((out.raw_path(cpath) + ("type",),
                                     f"{section} type '{kind}' is {NOT_SUPPORTED}: it {refused[kind]}"
                                     if section == "pass" else
                                     f"{section} type '{kind}' is {NOT_SUPPORTED} ({refused[kind]})"))
                continue
            kept[key] = _section(node, section, kind, out.raw_path(cpath), cpath, out) if kind else node
            if kind:
                kept[key]["type"] = kind
        out.data[name] = kept
    fold_chain(out)
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
            ignored = IGNORED.get((section_kind, kind, _key(dest))) or IGNORED.get((section_kind, None, _key(dest)))
            if ignored is not None:
                out.notes.append(f"{dotted(rbase + q)}: ignored: {ignored}")
                continue
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
