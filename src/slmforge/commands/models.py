"""`slmforge models`: registered models, versions and aliases — local MLflow registry or a workspace."""

from __future__ import annotations

import argparse
import json

from slmforge.registry.rules import DEFAULT_TRACKING_URI_TEXT, accuracy_tag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="only this model")
    parser.add_argument("--tracking-uri", help=f"local MLflow registry (default: {DEFAULT_TRACKING_URI_TEXT})")
    parser.add_argument("--workspace", metavar="CONFIG",
                        help="list an Azure ML workspace's models instead (config.json or the emulator's file)")
    parser.add_argument("--registry", help="with --workspace: an Azure ML registry instead of the workspace")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    if args.workspace or args.registry:
        return _workspace(args)
    from slmforge.registry.mlflow_store import list_models
    from slmforge.registry.rules import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    models = [m for m in list_models(uri) if not args.name or m["name"] == args.name]
    if args.json:
        print(json.dumps({"tracking_uri": uri, "models": models}, indent=2))
        return 0
    if not models:
        print(f"no registered models in {uri}")
        return 0
    print(f"{'name':<28} {'version':>7}  {'aliases':<12} {'created':<16}  accuracy  source")
    for m in models:
        for v in m["versions"]:
            accuracy = accuracy_tag(v["tags"])
            print(f"{m['name']:<28} {v['version']:>7}  {','.join(v['aliases']) or '-':<12} {v['created']:<16}  "
                  f"{accuracy:<8}  {v['source']}")
    print(f"registry: {uri}")
    return 0


def _workspace(args: argparse.Namespace) -> int:
    from slmforge.backends.aml.models import list_workspace_models

    rows = list_workspace_models(args.workspace, registry=args.registry, name=args.name)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no registered models")
        return 0
    width = max(7, *(len(str(r["version"])) for r in rows))
    print(f"{'name':<28} {'version':>{width}}  {'type':<14} {'created':<20} accuracy")
    for r in rows:
        accuracy = accuracy_tag(r.get("tags"))
        print(f"{r['name']:<28} {r['version']:>{width}}  {r['type']:<14} {r['created'] or '-':<20} {accuracy}")
    return 0
