"""Olive 0.13 in its own virtual environment (.bench-venvs/olive), installed on first use.

olive-ai 0.13.0 installs broken (docs/pitfalls.md): it needs `requests`, which it does not declare, and its
ModelBuilder works only with onnxruntime-genai 0.14.1. torch is pinned to the CPU build this machine
has (a looser pin pulls a multi-GB CUDA build); transformers, peft, accelerate, datasets and onnx are
pinned to the versions of this project's venv, so both tools train with the same libraries.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

VENV = Path(__file__).resolve().parents[1] / ".bench-venvs" / "olive"
SAME_AS_OURS = ("transformers", "peft", "accelerate", "datasets", "onnx", "onnx-ir", "onnxruntime")
PINS = ["olive-ai==0.13.0", "requests", "onnxruntime-genai==0.14.1", "torch==2.13.0"]


def pins() -> list[str]:
    return PINS + [f"{name}=={metadata.version(name)}" for name in SAME_AS_OURS]


def ensure() -> tuple[Path | None, str | None]:
    """The venv's `olive` script, or None and the reason it could not be installed."""
    olive = VENV / "bin" / "olive"
    if olive.is_file():
        return olive, None
    try:
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(VENV)], check=True, capture_output=True, text=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", *pins()], check=True, capture_output=True,
                       text=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        lines = [ln for ln in str(getattr(e, "stderr", "") or e).splitlines() if ln.strip() and "is ignored" not in ln]
        return None, f"installing {' '.join(pins())} failed: {lines[-1] if lines else e}"
    return (olive, None) if olive.is_file() else (None, "olive-ai installed no `olive` script")


if __name__ == "__main__":
    path, error = ensure()
    print(path or error)
    sys.exit(0 if path else 1)
