"""`slmforge status|logs|download|cancel JOB`: follow up on an Azure ML pipeline job."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slmforge.commands import output_folder


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("job", help="job name (printed by `slmforge submit`)")
    parser.add_argument("--workspace", metavar="CONFIG",
                        help="Azure ML config.json or the emulator's workspace file (default: ./config.json)")
    if name == "status":
        parser.add_argument("--wait", action="store_true", help="follow the job until it ends")
        parser.add_argument("--json", action="store_true", help="print the status as JSON")
    elif name == "logs":
        parser.add_argument("--step", help="one step's log (e.g. finetune); a finished step's stored log is printed, "
                                           "a running one is followed")
    elif name == "download":
        parser.add_argument("-o", "--output", required=True, help="folder for model/ and run.json")


def run(args: argparse.Namespace) -> int:
    from slmforge.backends.aml.workspace import service_errors

    with service_errors():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from slmforge.backends.aml import jobs as aml_jobs
    from slmforge.backends.aml import logs as aml_logs
    from slmforge.backends.aml.workspace import resolve_ml_client

    if args.command == "download":
        output_folder(args.output, "-o")  # before any service call
    ml_client = resolve_ml_client(args.workspace)
    if args.command == "status":
        from slmforge.backends.aml.run_metrics import metrics_text, step_runs

        current = aml_jobs.follow(ml_client, args.job) if args.wait else aml_jobs.state(ml_client, args.job)
        logged = step_runs(ml_client, current.runs)  # what each step logged to its MLflow run so far
        if args.json:
            print(json.dumps({"job": current.name, "status": current.status, "steps": current.steps,
                              "metrics": {step: run.metrics for step, run in logged.items()},
                              "studio_url": current.studio_url}, indent=2))
        else:
            if not args.wait:
                print(f"{current.name}: {current.status}")
            for step, status in current.steps.items():
                if not args.wait or step in logged:
                    figures = f"  {metrics_text(logged[step].metrics)}" if step in logged else ""
                    print(f"  {step:<16} {status:<10}{figures}".rstrip())
        if current.done:
            aml_jobs.raise_if_failed(current, aml_logs.failure_cause(ml_client, current))
        return 0
    if args.command == "logs":
        aml_logs.print_logs(ml_client, args.job, args.step)
        return 0
    if args.command == "download":
        model = aml_jobs.download(ml_client, args.job, Path(args.output))
        print(f"{model} (and {model.parent / 'run.json'})")
        return 0
    if args.command == "cancel":
        aml_jobs.cancel(ml_client, args.job)
        print(f"{args.job}: cancel requested")
        return 0
    raise AssertionError(args.command)
