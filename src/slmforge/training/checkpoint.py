"""Training checkpoints: adapter weights, optimizer, scheduler, RNG states and the data position.

A checkpoint is the folder `step-NNNNNNNN` in the checkpoints folder. It is written as a hidden
`.step-NNNNNNNN.partial` folder and renamed when complete, so a kill at any moment leaves either
the previous checkpoint or the new one, never a half one. The data position is the step number
itself (training.data.BatchPlan derives the order from it). Each rank saves its own RNG states.
With load_best_model_at_end the best evaluated adapter so far travels in the checkpoint too
(`best_adapter.safetensors`), and with fp16 the gradient scaler's state beside the optimizer's.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from slmforge.contract.files import json_digest

STATE = "state.json"
_NAME = re.compile(r"^step-(\d{8})$")
KEEP = 2  # checkpoints kept by default (save_total_limit); older ones are removed once a newer one is complete
BEST = "best_adapter.safetensors"


def fingerprint(**parts: Any) -> str:
    """What must match for a checkpoint to be resumed: training parameters and input digests."""
    return json_digest(parts)


def model_fingerprint(model_dir: str | Path | None, model_id: str | None) -> str:
    """Cheap identity of a (possibly multi-GB) model folder: file names and sizes; a hub id as is."""
    if not model_dir:
        return f"hub:{model_id}"
    folder = Path(model_dir)
    return fingerprint(files=sorted((p.relative_to(folder).as_posix(), p.stat().st_size)
                                    for p in folder.rglob("*") if p.is_file()))


def find_latest(root: str | Path, expected: str) -> Path | None:
    """The newest complete checkpoint made by the same run; others are reported once and ignored."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = sorted((int(m[1]), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE).is_file())
    for _, path in reversed(found):
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
        if state.get("fingerprint") == expected:
            return path
        print(f"finetune: notice: {path} is from a different run (parameters or inputs differ); "
              "not resuming from it", file=sys.stderr)
        return None
    return None


def save(root: str | Path, step: int, *, rank: int, barrier: Callable[[], None], adapter: dict,
         optimizer, scheduler, state: dict, best: dict | None = None, scaler=None,
         keep: int | None = None) -> Path | None:
    """Write checkpoint `step` (every rank calls this); returns its path on rank 0. `keep`: how many
    checkpoints stay (save_total_limit: None keeps KEEP, 0 all)."""
    import torch
    from safetensors.torch import save_file

    root = Path(root)
    final = root / f"step-{step:08d}"
    tmp = root / f".{final.name}.partial"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, tmp / "adapter_model.safetensors")
        if best is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in best.items()}, tmp / BEST)
        blob = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        if scaler is not None:
            blob["scaler"] = scaler.state_dict()
        torch.save(blob, tmp / "optimizer.pt")
    barrier()
    torch.save(_rng_states(), tmp / f"rng_state_{rank}.pt")
    barrier()
    if rank != 0:
        return None
    (tmp / STATE).write_text(json.dumps(dict(state, step=step), indent=1), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    keep = KEEP if keep is None else keep
    if keep > 0:
        for old in sorted(p for p in root.iterdir() if _NAME.match(p.name))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path, rank: int, optimizer, scheduler, scaler=None) -> tuple[dict, dict, dict | None]:
    """(adapter tensors, state, best adapter or None) of checkpoint `path`; restores optimizer, scheduler,
    the gradient scaler and this rank's RNG."""
    import torch
    from safetensors.torch import load_file

    blob = torch.load(path / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if scaler is not None and "scaler" in blob:
        scaler.load_state_dict(blob["scaler"])
    rng = path / f"rng_state_{rank}.pt"
    if rng.is_file():
        _set_rng_states(torch.load(rng, weights_only=False))
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    best = load_file(path / BEST) if (path / BEST).is_file() else None
    return load_file(path / "adapter_model.safetensors"), state, best


def _rng_states() -> dict:
    import numpy as np
    import torch

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
