"""`slmforge validate RECIPE`: every problem on its own line (exit 2), or the step graph (exit 0)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe file (Olive workflow JSON or YAML), or the name of a shipped one")
    parser.add_argument("--json", action="store_true", help="print the step graph as JSON")


def run(args: argparse.Namespace) -> int:
    from slmforge.recipe.checks import recipe_notes
    from slmforge.recipe.graph import build_graph
    from slmforge.recipe.input_checks import check_inputs
    from slmforge.recipe.loader import load_recipe
    from slmforge.resources import find_recipe

    loaded = load_recipe(find_recipe(args.recipe))
    graph = build_graph(loaded)
    check_inputs(loaded, graph)  # the rows and the model's modules, before anything says "valid"
    notes = recipe_notes(loaded)  # what slmforge reads differently, and why
    if args.json:
        print(json.dumps({**graph_as_dict(graph), "notes": notes}, indent=2))
        return 0
    print(f"{loaded.path}: valid; {len(graph.steps)} steps")
    for note in notes:
        print(f"  note: {note}")
    for step in graph.steps:
        ins = ", ".join(f"{k}={r.describe()}" for k, r in step.inputs.items())
        print(f"  {step.name:<16} {step.component:<11} {ins}")
        hub = step.inputs.get("hub_data")
        for role, source in (json.loads(hub.value).items() if hub is not None and hub.kind == "text" else ()):
            subset = f" subset {source['subset']}" if source.get("subset") else ""
            print(f"  {'':<16} {role} rows: hub dataset {source['name']}{subset} split {source['split']} "
                  f"at commit {source['revision']}")
    print(f"  final model: {graph.final[0]}.{graph.final[1]}")
    return 0


def graph_as_dict(graph) -> dict:
    return {
        "recipe_digest": graph.recipe_digest,
        "final": {"step": graph.final[0], "output": graph.final[1]},
        "steps": [
            {
                "name": s.name,
                "component": s.component,
                "inputs": {k: {"kind": r.kind, "value": r.value if r.kind != "text" else r.output, "output": r.output}
                           for k, r in s.inputs.items()},
                "params": s.params,
            }
            for s in graph.steps
        ],
    }
