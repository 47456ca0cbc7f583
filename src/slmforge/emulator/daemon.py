"""The emulator process: `python -m slmforge.emulator.daemon --dir DIR` (started by control.start).

It makes the certificate, runs Azurite as its child, serves the AML API and executes jobs. SIGTERM
stops everything; DIR keeps the state for the next start.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def _die_with_parent() -> None:
    """Azurite must not outlive the daemon, even after a SIGKILL (Linux: PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    from slmforge.emulator import azurite, pidfile, tls, workspace_file
    from slmforge.emulator.context import Config, Emulator
    from slmforge.emulator.executor import Executor
    from slmforge.emulator.server import make_server, serve_in_thread

    parser = argparse.ArgumentParser(prog="slmforge.emulator.daemon")
    parser.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    folder = args.dir.resolve()
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=folder / "logs" / "emulator.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    config = Config.load(folder)
    cert, key = tls.make_certificate(folder / "tls")

    azurite_log = open(folder / "logs" / "azurite.log", "ab")
    (folder / "azurite").mkdir(exist_ok=True)
    blob = subprocess.Popen(
        azurite.command(azurite.main_script(), port=config.azurite_port, location=folder / "azurite",
                        cert=cert, key=key),
        stdout=azurite_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )
    emu = Emulator(folder, config, cert)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = None
    executor = None
    pid_handle = None
    try:
        wait_for_port(config.azurite_port, 20, blob)
        emu.blob.get_container_client(azurite.DATASTORE_CONTAINER).exists() or \
            emu.blob.create_container(azurite.DATASTORE_CONTAINER)
        executor = Executor(emu)
        emu.executor = executor
        server = make_server(emu, cert, key, config.port)
        serve_in_thread(server)
        workspace_file.write(emu)
        pid_handle = pidfile.claim(folder)
        executor.resume()
        logging.info("emulator ready on %s (Azurite on %d)", emu.base_url, config.azurite_port)
        stop.wait()
    finally:
        logging.info("stopping")
        if executor is not None:
            executor.shutdown()
        if server is not None:
            server.shutdown()
            server.server_close()
        blob.terminate()
        try:
            blob.wait(timeout=5)
        except subprocess.TimeoutExpired:
            blob.kill()
        emu.store.close()
        if pid_handle is not None:
            pidfile.release(folder, pid_handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
