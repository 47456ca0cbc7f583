"""`slmforge models`: registered models, versions and aliases — local MLflow registry or a workspace.

An adapter (registered on a shared base, issue 22) is listed under the base version it names.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from slmforge.registry.rules import (
    BASE_NAME_TAG,
    BASE_VERSION_TAG,
    HERE_TRACKING_URI_TEXT,
    KIND_TAG,
    accuracy_tag,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="only this model")
    parser.add_argument("--tracking-uri", help=f"local MLflow registry (default: {HERE_TRACKING_URI_TEXT})")
    parser.add_argument("--workspace", metavar="CONFIG",
                        help="list an Azure ML workspace's models instead (config.json or the emulator's file)")
    parser.add_argument("--registry", help="with --workspace: an Azure ML registry instead of the workspace")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    if args.workspace or args.registry:
        return _workspace(args)
    from slmforge.registry.mlflow_store import list_models
    from slmforge.registry.rules import tracking_uri_here

    uri = args.tracking_uri or tracking_uri_here()
    models = nest_adapters(list_models(uri))
    models = [m for m in models if not args.name or args.name in
              {m["name"], *(a["name"] for v in m["versions"] for a in v.get("adapters", []))}]
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
            for i, a in enumerate(v.get("adapters", [])):
                branch = "└─" if i == len(v["adapters"]) - 1 else "├─"
                print(f"{'  ' + branch + ' adapter ' + a['name']:<28} {a['version']:>7}  "
                      f"{','.join(a['aliases']) or '-':<12} {a['created']:<16}  {accuracy_tag(a['tags']):<8}  "
                      f"{a['source']}")
    print(f"registry: {uri}")
    return 0


def nest_adapters(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each adapter version listed under the base version its tags name (`adapters`, by name then version),
    not as a model of its own; an adapter whose base version is not in the registry stays a model."""
    versions = {(m["name"], v["version"]): v for m in models for v in m["versions"]}
    out = []
    for m in models:
        kept = []
        for v in m["versions"]:
            base = versions.get((v["tags"].get(BASE_NAME_TAG), v["tags"].get(BASE_VERSION_TAG)))
            if v["tags"].get(KIND_TAG) == "adapter" and base is not None:
                base.setdefault("adapters", []).append({"name": m["name"], **v})
            else:
                kept.append(v)
        if kept:
            out.append({**m, "versions": kept})
    for v in versions.values():
        v.get("adapters", []).sort(key=lambda a: (a["name"], -int(a["version"])))
    return out


def _workspace(args: argparse.Namespace) -> int:
    from slmforge.backends.aml.models import list_workspace_models

    flat = list_workspace_models(args.workspace, registry=args.registry)
    rows = [r for r in nest_rows(flat) if not args.name or args.name in {r["name"], *(a["name"] for a in r.get("adapters", []))}]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no registered models")
        return 0
    width = max(7, *(len(str(r["version"])) for r in flat))
    print(f"{'name':<28} {'version':>{width}}  {'type':<14} {'created':<20} accuracy")
    for r in rows:
        print(f"{r['name']:<28} {r['version']:>{width}}  {r['type']:<14} {r['created'] or '-':<20} {accuracy_tag(r.get('tags'))}")
        for i, a in enumerate(r.get("adapters", [])):
            branch = "└─" if i == len(r["adapters"]) - 1 else "├─"
            print(f"{'  ' + branch + ' adapter ' + a['name']:<28} {a['version']:>{width}}  {a['type']:<14} "
                  f"{a['created'] or '-':<20} {accuracy_tag(a.get('tags'))}")
    return 0


def nest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A workspace's flat rows with each adapter under the base row its tags name (`adapters`)."""
    by_version = {(r["name"], r["version"]): r for r in rows}
    out = []
    for r in rows:
        tags = r.get("tags") or {}
        base = by_version.get((tags.get(BASE_NAME_TAG), tags.get(BASE_VERSION_TAG)))
        if tags.get(KIND_TAG) == "adapter" and base is not None:
            base.setdefault("adapters", []).append(r)
        else:
            out.append(r)
    return out
