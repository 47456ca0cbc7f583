"""`slmforge emulator start|status|faults|stop` as a user runs them (subprocesses, own state dir)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from slmforge.emulator.control import free_port


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slmforge", "emulator", *args],
                          capture_output=True, text=True, timeout=120)


def test_start_status_faults_stop(tmp_path):
    folder = tmp_path / "emu"
    port = free_port()
    started = time.monotonic()
    start = _cli("start", "--dir", str(folder), "--port", str(port), "--computes", "cpu-a,gpu-b")
    start_s = time.monotonic() - started
    try:
        assert start.returncode == 0, start.stderr
        assert f"https://127.0.0.1:{port}" in start.stdout
        ws = json.loads((folder / "workspace.json").read_text())
        assert ws["kind"] == "slmforge-emulator" and ws["computes"] == ["cpu-a", "gpu-b"]
        assert ws["cloud"]["metadata"]["resource_manager"] == f"https://127.0.0.1:{port}/"
        assert "key" not in json.dumps(ws).lower().replace("keyvault", "")  # no secrets in the file
        again = _cli("start", "--dir", str(folder))
        assert again.returncode == 2 and "already runs" in again.stderr
        status = _cli("status", "--dir", str(folder))
        assert status.returncode == 0 and json.loads(status.stdout)["port"] == port
        faults = _cli("faults", "--dir", str(folder), "--faults", "0.25:503,drop", "--retry-after", "2")
        assert faults.returncode == 0, faults.stderr
        assert json.loads(faults.stdout)["kinds"] == ["503", "drop"]
        bad = _cli("faults", "--dir", str(folder), "--faults", "2:teapot")
        assert bad.returncode == 2 and "--faults" in bad.stderr
    finally:
        stop = _cli("stop", "--dir", str(folder))
    assert stop.returncode == 0 and "stopped" in stop.stdout
    after = _cli("status", "--dir", str(folder))
    assert after.returncode == 1 and json.loads(after.stdout)["running"] is False
    assert not (folder / "emulator.pid").exists()
    print(f"emulator start (CLI, Azurite already installed): {start_s:.2f}s")


def test_stop_never_signals_a_process_a_stale_pid_file_names(tmp_path):
    """emulator.pid left behind, its pid now another live process: stop must leave that process alone (#10)."""
    folder = tmp_path / "emu"
    folder.mkdir()
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        (folder / "emulator.pid").write_text(f"{stranger.pid}\n")
        stop = _cli("stop", "--dir", str(folder))
        time.sleep(0.2)  # a SIGTERM, had one been sent, has landed by now
        assert stranger.poll() is None, "stop signalled a process that is not the emulator"
        assert stop.returncode == 0, stop.stderr
        line = stop.stdout.strip()
        assert line == (f"no emulator running for {folder.resolve()}: removed its stale emulator.pid (pid {stranger.pid};"
                        " no emulator holds the file, so nothing was signalled)"), line
        assert not (folder / "emulator.pid").exists()
        # the same stale file does not make start think an emulator already runs
        (folder / "emulator.pid").write_text(f"{stranger.pid}\n")
        status = _cli("status", "--dir", str(folder))
        assert status.returncode == 1 and json.loads(status.stdout)["running"] is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
