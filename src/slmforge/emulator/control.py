"""start / stop / status of the background emulator (what `slmforge emulator ...` calls)."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from slmforge.emulator import azurite, pidfile
from slmforge.emulator.context import Config
from slmforge.emulator.pidfile import PID_FILE
from slmforge.emulator.workspace_file import FILE_NAME
from slmforge.errors import InvalidInput, SlmforgeError

START_TIMEOUT_S = 30


def default_dir() -> Path:
    return Path(os.environ.get("SLMFORGE_EMULATOR_DIR", ".slmforge/emulator"))


def _port_free(port: int) -> bool:
    if port <= 0:
        return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running_pid(folder: Path) -> int | None:
    """The pid of the daemon serving `folder` (it holds its pid file's lock); a stale pid file is removed."""
    return pidfile.inspect(folder).pid


def admin(folder: Path, method: str, path: str, body: dict | None = None, timeout: float = 2.0) -> Any:
    """Call an /_emulator admin endpoint of the emulator serving `folder`."""
    config = Config.load(folder)
    ctx = ssl.create_default_context(cafile=str(folder / "tls" / "cert.pem"))
    req = urllib.request.Request(f"https://127.0.0.1:{config.port}/_emulator/{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def start(folder: Path, *, port: int | None = None, faults: dict | None = None,
          computes: list[str] | None = None) -> dict[str, Any]:
    folder = folder.resolve()
    if running_pid(folder):
        raise InvalidInput(f"an emulator already runs for {folder} (pid {running_pid(folder)}); stop it first")
    folder.mkdir(parents=True, exist_ok=True)
    script = azurite.ensure_installed()  # once per machine; minutes at most, then instant
    config = Config.load(folder)
    if port:
        if not _port_free(port):
            raise InvalidInput(f"port {port} on 127.0.0.1 is taken")
        config.port = port
    elif not _port_free(config.port):
        config.port = free_port()
    if not _port_free(config.azurite_port) or config.azurite_port == config.port:
        config.azurite_port = free_port()
    if faults is not None:
        config.faults = faults
    if computes:
        config.computes = computes
    config.save(folder)
    assert script.is_file()
    (folder / "logs").mkdir(exist_ok=True)
    with open(folder / "logs" / "daemon.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "slmforge.emulator.daemon", "--dir", str(folder)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(folder))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (folder / "logs" / "daemon.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise SlmforgeError(f"the emulator exited during start (code {proc.returncode}): {' | '.join(tail)}")
        if (folder / PID_FILE).is_file():
            try:
                admin(folder, "GET", "health", timeout=1.0)
                return {"pid": proc.pid, "workspace_file": str(folder / FILE_NAME), "port": config.port,
                        "azurite_port": config.azurite_port}
            except OSError:
                pass
        time.sleep(0.05)
    proc.terminate()
    raise SlmforgeError(f"the emulator did not answer within {START_TIMEOUT_S}s; see {folder}/logs/")


def stop(folder: Path, timeout: float = 15.0) -> str | None:
    """Stop the emulator serving `folder`: the line to print, or None when none was running."""
    folder = folder.resolve()
    found = pidfile.inspect(folder)
    if found.stale_pid is not None:
        named = f"pid {found.stale_pid}" if found.stale_pid > 0 else "no readable pid"
        return (f"no emulator running for {folder}: removed its stale {PID_FILE} ({named}; no emulator holds"
                " the file, so nothing was signalled)")
    pid = found.pid
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child (tests): reap it
                return "stopped"
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "stopped"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    (folder / PID_FILE).unlink(missing_ok=True)
    return f"stopped (killed: it did not stop within {timeout:g} s of SIGTERM)"


def status(folder: Path) -> dict[str, Any]:
    folder = folder.resolve()
    pid = running_pid(folder)
    out: dict[str, Any] = {"dir": str(folder), "running": pid is not None, "pid": pid}
    if pid is not None:
        try:
            out.update(admin(folder, "GET", "health"))
            out["faults"] = admin(folder, "GET", "faults")
        except OSError as e:
            out["error"] = f"not answering: {e}"
        out["workspace_file"] = str(folder / FILE_NAME)
    return out
