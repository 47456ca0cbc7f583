"""`slmforge emulator start|stop|status|faults`: the offline Azure ML workspace on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slmforge.commands import output_folder, port_number

FAULT_SETTINGS = ("rate", "kinds", "retry_after", "retry_after_ms", "methods")  # what PUT /_emulator/faults takes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = sub.add_parser("start", help="start Azurite and the emulated workspace in the background")
    stop = sub.add_parser("stop", help="stop them (the state stays in --dir)")
    status = sub.add_parser("status", help="is it running, on which ports")
    faults = sub.add_parser("faults", help="inject 429/503/dropped connections into a share of requests")
    for p in (start, stop, status, faults):
        p.add_argument("--dir", type=Path, default=None,
                       help="state folder (default: $SLMFORGE_EMULATOR_DIR or .slmforge/emulator)")
    start.add_argument("--port", type=port_number, default=None, help="HTTPS port on 127.0.0.1 (default: a free one)")
    start.add_argument("--computes", default=None,
                       help="comma-separated compute names to offer (default: cpu-cluster,gpu-cluster)")
    for p in (start, faults):
        p.add_argument("--faults", default=None, metavar="RATE[:KINDS]",
                       help="e.g. 0.3:429,503,drop — answer 30%% of API requests with one of these faults"
                            " (0 turns it off)")
    faults.add_argument("--retry-after", type=int, default=None,
                        help="Retry-After seconds on 429/503 (default: unchanged; 1 when the emulator started)")


def run(args: argparse.Namespace) -> int:
    from slmforge.emulator import control
    from slmforge.emulator.faults import parse_spec
    from slmforge.errors import InvalidInput

    folder = output_folder(args.dir or control.default_dir(), "--dir")
    fault_settings = None
    if getattr(args, "faults", None) is not None:
        try:
            fault_settings = parse_spec(args.faults)
        except ValueError as e:
            raise InvalidInput(f"--faults: {e}") from None
    if args.action == "start":
        computes = [c.strip() for c in args.computes.split(",") if c.strip()] if args.computes else None
        info = control.start(folder, port=args.port, faults=fault_settings, computes=computes)
        print(f"emulator running on https://127.0.0.1:{info['port']} (Azurite on {info['azurite_port']}),"
              f" pid {info['pid']}")
        print(f"workspace file: {info['workspace_file']}")
        print(f"try: slmforge submit RECIPE --workspace {info['workspace_file']} --wait")
        return 0
    if args.action == "stop":
        print(control.stop(folder) or f"no emulator running for {folder.resolve()}")
        return 0
    if args.action == "status":
        info = control.status(folder)
        print(json.dumps(info, indent=2))
        return 0 if info["running"] else 1
    if args.action == "faults":
        if not control.running_pid(folder.resolve()):
            raise InvalidInput(f"no emulator running for {folder.resolve()}")
        # change only what was given: the rest of the running emulator's settings stay as they are
        current = control.admin(folder.resolve(), "GET", "faults")
        settings = {k: current[k] for k in FAULT_SETTINGS if current.get(k) is not None}
        settings.update(fault_settings or {})
        if args.retry_after is not None:
            settings["retry_after"] = args.retry_after
        print(json.dumps(control.admin(folder.resolve(), "PUT", "faults", settings), indent=2))
        return 0
    return 2
