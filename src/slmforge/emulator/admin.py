"""Admin endpoints under /_emulator (never subject to injected faults): health, faults, counters."""

from __future__ import annotations

from slmforge.emulator.context import Emulator
from slmforge.emulator.routing import Reply, Request, error, route


@route("GET", r"/_emulator/health")
def health(emu: Emulator, req: Request) -> Reply:
    return Reply(200, {"ok": True, "workspace": emu.config.workspace, "port": emu.config.port,
                       "azurite_port": emu.config.azurite_port})


@route("GET", r"/_emulator/faults")
def get_faults(emu: Emulator, req: Request) -> Reply:
    return Reply(200, emu.faults.settings())


@route("PUT", r"/_emulator/faults")
def put_faults(emu: Emulator, req: Request) -> Reply:
    try:
        emu.faults.configure(req.json)
    except (ValueError, TypeError) as e:
        return error(400, "UserError", str(e))
    return Reply(200, emu.faults.settings())


@route("GET", r"/_emulator/counters")
def counters(emu: Emulator, req: Request) -> Reply:
    """How often each route answered: tests check e.g. that a rerun made no startPendingUpload."""
    with emu.lock:
        return Reply(200, dict(emu.counters))
