"""Olive's recipe layouts before today's: rewritten into the canonical shape before its sections are read.

Each function takes the `generations.Normalised` being built (`out`: its data, where each key came
from, problems and notes) and rewrites one layout Olive once wrote:
Olive 0.4/0.5's `data_configs` keyed by name and inline engine systems, `pass_flows`, null engine
keys, and the ONNX export chain (olive_passes.py) folded into one ModelBuilder pass.
"""

from __future__ import annotations

from slmforge.recipe.base import did_you_mean, dotted
from slmforge.recipe.olive_passes import fold_export_chain
from slmforge.recipe.schema import Engine

ENGINE_KEYS = tuple(Engine.model_fields)
PASS_FLOWS_WHY = "slmforge runs one flow per recipe: write one recipe per flow"


def engine_defaults(out) -> None:
    """`"output_dir": null` and friends: Olive reads a null engine key as its default."""
    engine = out.data.get("engine")
    if isinstance(engine, dict):
        for key in [k for k, v in engine.items() if v is None and k in ENGINE_KEYS]:
            del engine[key]


def data_configs_by_name(out) -> None:
    """Olive 0.4/0.5 keyed `data_configs` by name: today's list, each entry named by its key."""
    configs = out.data.get("data_configs")
    if not isinstance(configs, dict):
        return
    listed = []
    for i, (key, dc) in enumerate(configs.items()):
        out.origin[("data_configs", i)] = ("data_configs", key)
        if isinstance(dc, dict):
            dc = dict(dc)
            if dc.get("name", key) != key:  # Olive < 0.6 refers to a data config by its key
                out.notes.append(f"data_configs.{key}.name: ignored: '{dc['name']}'; passes refer to it as '{key}'")
            dc["name"] = key
        listed.append(dc)
    out.data["data_configs"] = listed


def inline_systems(out) -> None:
    """Olive 0.4/0.5 could write a system object as engine.host/target: it joins `systems` by a name."""
    engine = out.data.get("engine")
    if not isinstance(engine, dict):
        return
    systems = out.data.setdefault("systems", {})
    if not isinstance(systems, dict):
        return
    for role in ("host", "target"):
        system = engine.get(role)
        if isinstance(system, dict):
            name = f"{role}_system"
            while name in systems:
                name = "_" + name
            systems[name] = system
            out.origin[("systems", name)] = out.raw_path(("engine", role))
            engine[role] = name


def pass_flows(out) -> None:
    """`pass_flows` with one flow runs those passes in that order, as Olive does; several are refused."""
    flows = out.data.pop("pass_flows", None)
    passes = out.data.get("passes")
    if flows is None or not isinstance(passes, dict):
        return
    where = out.raw_path(("pass_flows",))
    if not (isinstance(flows, list) and all(isinstance(f, list) for f in flows)):
        out.problems.append((where, "must be a list of lists of pass names"))
    elif len(flows) != 1:
        out.problems.append((where, f"{len(flows)} flows: {PASS_FLOWS_WHY}"))
    elif unknown := [n for n in flows[0] if n not in passes]:
        out.problems.append((where, f"no pass named '{unknown[0]}'{did_you_mean(str(unknown[0]), list(passes))}"))
    else:
        left = [n for n in passes if n not in flows[0]]
        out.data["passes"] = {n: passes[n] for n in flows[0]}
        if left:
            out.notes.append(f"{dotted(where)}: passes {', '.join(left)} are not in the flow and do not run (as in Olive)")


def fold_chain(out) -> None:
    passes = out.data.get("passes")
    if not isinstance(passes, dict):
        return
    folded, note, problems = fold_export_chain(passes)
    out.data["passes"] = folded
    if note:
        out.notes.append(note)
    out.problems.extend((("passes",) + tuple(p.split(": ", 1)[0].split(".")), p.split(": ", 1)[1]) for p in problems)
    for name, p in folded.items():
        if isinstance(p, dict) and p.pop("metadata_only", False):
            out.problems.append((out.raw_path(("passes", name, "metadata_only")),
                                 "writes only genai_config.json for an ONNX model an export chain made before it "
                                 "(OnnxConversion ...), and this recipe has none; leave metadata_only out"))
