"""`slmforge compile RECIPE -o DIR`: write DIR/pipeline.yml, the Azure ML pipeline job of the recipe.

DIR also gets the small generated files the pipeline uploads (e.g. spec.json) and a snapshot of the
steps' code (code/, the files the SDK would upload from src/), referenced relatively: the folder
can be moved, then submitted from anywhere. Local data and model inputs stay absolute paths. The YAML loads
with `azure.ai.ml.load_job` and is accepted by `az ml job create -f DIR/pipeline.yml`.
"""

from __future__ import annotations

import argparse

from slmforge.commands import check_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe file (or a shipped recipe's name, e.g. demo-aml) whose engine.host is an AzureML system (any host with --compute)")
    parser.add_argument("-o", "--output", required=True, help="folder for pipeline.yml and the files it references")
    parser.add_argument("--compute", help="default compute (instead of the system's aml_compute; "
                                          "required for a recipe whose host is not an AzureML system)")
    parser.add_argument("--experiment", help="experiment name (default: the model name)")
    parser.add_argument("--version", help="version of the final model (default: from the recipe digest)")


def run(args: argparse.Namespace) -> int:
    from slmforge.backends.aml.pipeline import (
        compile_pipeline,
        compiled_here,
        summary,
        validate_pipeline,
        write_pipeline,
    )
    from slmforge.contract.ownership import claim
    from slmforge.recipe.loader import load_recipe
    from slmforge.resources import find_recipe

    check_names(args)
    # Never over a user's pipeline.yml: a folder slmforge compiled into before is rewritten.
    out_dir = claim(args.output, what="-o", made_by="compile", ours=compiled_here,
                    hint="choose a new or empty folder, or one an earlier `slmforge compile` wrote").resolve()
    loaded = load_recipe(find_recipe(args.recipe))
    compiled = compile_pipeline(loaded, out_dir, compute=args.compute, version=args.version,
                                experiment=args.experiment)
    validate_pipeline(compiled.job)
    path = write_pipeline(compiled, out_dir)
    info = summary(compiled)
    print(f"{path}: {len(info['nodes'])} steps on {info['default_compute']}; final model "
          f"{info['final_model']['name']}:{info['final_model']['version']} from {info['final_model']['from']}")
    for node, compute in info["nodes"].items():
        print(f"  {node:<16} {compute}")
    return 0
