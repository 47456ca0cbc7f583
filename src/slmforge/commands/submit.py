"""`slmforge submit RECIPE`: run the recipe on Azure ML (or the emulator) as a pipeline job.

Prints the job name and studio URL. With --wait (the default) it follows the job step by step,
exits 1 naming the failed step, registers the final model when the job completes, and ends with the
summary a local run prints (steps, times, the evaluation table: the steps' figures from their MLflow runs).
"""

from __future__ import annotations

import argparse

from slmforge.commands import check_names, service_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe file (or a shipped recipe's name, e.g. demo-aml) whose engine.host is an AzureML system (any host with --compute)")
    parser.add_argument("--workspace", metavar="CONFIG",
                        help="Azure ML config.json or the emulator's workspace file "
                             "(default: the recipe's azureml_client, else ./config.json)")
    parser.add_argument("--compute", help="default compute (instead of the system's aml_compute; "
                                          "required for a recipe whose host is not an AzureML system)")
    parser.add_argument("--experiment", help="experiment name (default: the model name)")
    parser.add_argument("--version", help="version of the final model (default: from the recipe digest)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--wait", dest="wait", action="store_true", default=True,
                      help="follow the job to the end, then register its model (default)")
    mode.add_argument("--detach", dest="wait", action="store_false", help="return once the job is submitted")
    parser.add_argument("--no-register", dest="register", action="store_false",
                        help="with --wait: do not register the model after the job completes")


@service_command
def run(args: argparse.Namespace) -> int:
    from slmforge.backends.aml.jobs import follow, raise_if_failed, studio_url, submit
    from slmforge.backends.aml.logs import failure_cause
    from slmforge.backends.aml.models import register_job_model
    from slmforge.backends.aml.workspace import resolve_ml_client
    from slmforge.recipe.loader import load_recipe
    from slmforge.resources import find_recipe

    check_names(args)
    loaded = load_recipe(find_recipe(args.recipe))
    ml_client = resolve_ml_client(args.workspace, loaded.recipe.azureml_client)
    job = submit(ml_client, loaded, compute=args.compute, experiment=args.experiment, version=args.version)
    print(f"submitted {job.name}")
    url = studio_url(job)
    if url:
        print(f"studio: {url}")
    if not args.wait:
        print(f"follow with: slmforge status {job.name}")
        return 0
    final = follow(ml_client, job.name)
    raise_if_failed(final, failure_cause(ml_client, final))
    if args.register and loaded.recipe.register_.enabled:
        registry = loaded.recipe.register_.registry
        registry_client = resolve_ml_client(args.workspace, loaded.recipe.azureml_client,
                                            registry_name=registry) if registry else None
        print_registered(register_job_model(ml_client, job.name, registry=registry, registry_client=registry_client))
    print_job_summary(ml_client, job.name)
    return 0


def print_job_summary(ml_client, name: str) -> None:
    """The closing summary a local run prints (its renderer): steps, times, the evaluation table."""
    import sys

    from slmforge.backends.aml.jobs import get_job, job_record
    from slmforge.backends.local.report import print_summary

    print_summary(job_record(ml_client, get_job(ml_client, name)), sys.stdout, rich=sys.stdout.isatty())


def print_registered(models: list, where: str = "") -> None:
    """One line per registered model; a separate adapter's line names its base."""
    from slmforge.registry.rules import BASE_NAME_TAG, BASE_VERSION_TAG, KIND_TAG

    for m in models:
        tags = m.tags or {}
        kind = tags.get(KIND_TAG)
        if kind == "adapter":
            print(f"registered adapter {m.name}:{m.version} on base {tags[BASE_NAME_TAG]}:{tags[BASE_VERSION_TAG]}{where}")
        else:
            print(f"registered {'base' if kind == 'base' else 'model'} {m.name}:{m.version}{where}")
