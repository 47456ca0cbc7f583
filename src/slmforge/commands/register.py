"""`slmforge register JOB`: register an Azure ML job's final model in the workspace or a registry."""

from __future__ import annotations

import argparse

from slmforge.commands import check_names, service_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="a completed pipeline job submitted by slmforge")
    parser.add_argument("--workspace", metavar="CONFIG",
                        help="Azure ML config.json or the emulator's workspace file (default: ./config.json)")
    parser.add_argument("--registry", help="also share the model into this Azure ML registry")
    parser.add_argument("--name", help="model name (default: the name the job was compiled with)")
    parser.add_argument("--version", help="model version (default: the version the job was compiled with)")
    parser.add_argument("--format", choices=["custom_model", "mlflow_model"],
                        help="model type (default: the recipe's register.format)")


@service_command
def run(args: argparse.Namespace) -> int:
    from slmforge.backends.aml.models import register_job_model
    from slmforge.backends.aml.workspace import resolve_ml_client

    check_names(args)
    from slmforge.commands.submit import print_registered

    ml_client = resolve_ml_client(args.workspace)
    registry_client = require_registry(args.workspace, args.registry) if args.registry else None
    models = register_job_model(ml_client, args.job, name=args.name, version=args.version,
                                model_format=args.format, registry=args.registry, registry_client=registry_client)
    print_registered(models, f" (shared into registry {args.registry})" if args.registry else "")
    return 0


def require_registry(workspace: str | None, registry: str):
    """An MLClient on the registry to share into; InvalidInput before registering anything when it does not exist."""
    from azure.core.exceptions import ResourceNotFoundError

    from slmforge.backends.aml.workspace import one_line, resolve_ml_client
    from slmforge.errors import InvalidInput

    try:
        return resolve_ml_client(workspace, registry_name=registry)  # the SDK looks the registry up here
    except ResourceNotFoundError as e:
        raise InvalidInput(f"--registry {registry}: no such Azure ML registry; the service said: {one_line(e)}") from None
