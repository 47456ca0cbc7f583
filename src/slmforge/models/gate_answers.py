"""The built model's own greedy answers to build_onnx's gate rows, kept for its evaluation.

build_onnx's answer gates (onnx_check.py) answer the dataset's eval rows with the built model through
onnxruntime-genai exactly as the evaluate step answers them afterwards on the same folder: the same
backend, rows, batches and max_new_tokens. `record` keeps, per row, the greedy tokens, the log-probabilities
of the expected tokens seen on the way and whether decoding left the expected answer; `read` finds them
again for an evaluation, and `Recorded.fill` hands them over only when the evaluation would send the very
same requests. The evaluation then scores the rest (perplexity) as before: metrics.json is the one a fresh
evaluation writes, with `answers_from` saying where the answers came from; its speed figures
(generation_seconds, tokens_per_second) are those the gate measured answering the same rows.

Kept in the folder's manifest (slmforge.json) under KEY, outside its `metrics`: the record describes what
the step computed, not the model's files (their digest, the model card and the registry stay as they were),
and manifest metrics are copied into run.json, which has no use for every row's tokens.
Only the very same requests qualify: og batches rows by length across the whole set (length_batches), and
batch-shaped int4 kernels can flip a near tie (verified_greedy.py), so a subset or a superset of the rows
is answered afresh; so is an evaluation on another CPU, thread count or onnxruntime(-genai) version (a
cached build evaluated elsewhere or later), whose int4 kernels may round differently. A gate that served
a separate adapter (export_adapter) keeps no record.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

from slmforge.contract import manifest

KEY = "gate_answers"


@dataclass
class Answered:
    """The gate's answered eval rows (verified_greedy.Request) and the seconds answering them took;
    evaluation.evaluate fills it in, build_onnx writes its `record` under KEY."""

    requests: list = field(default_factory=list)
    seconds: float = 0.0

    def record(self, dataset: str | Path, max_new_tokens: int) -> dict:
        """The answers and what identifies them: the dataset's digest, the requests' digest, their count,
        max_new_tokens and the runtime; with the answering seconds (the evaluation's speed figures)."""
        return {"dataset_digest": _dataset_digest(dataset), "rows": len(self.requests),
                "max_new_tokens": max_new_tokens, "requests_digest": _requests_digest(self.requests),
                "runtime": _runtime(), "seconds": self.seconds,
                "answers": [{"tokens": r.tokens, "logprobs": {str(k): v for k, v in sorted(r.logprobs.items())},
                             "continued": r.continued} for r in self.requests]}


@dataclass(frozen=True)
class Recorded:
    """A gate's answers whose model and dataset match the evaluation's (from `read`)."""

    found: dict
    source: str = "build_onnx gate"  # metrics.json's `answers_from` when the answers came from here

    @property
    def seconds(self) -> float:
        """How long the gate took to answer (generation_seconds and tokens_per_second come from it)."""
        return float(self.found["seconds"])

    def fill(self, requests) -> bool:
        """Fill `requests` (verified_greedy.Request) from the record when they are the very requests the gate
        answered (same prompts and expected answers, same order); False, touching nothing, otherwise."""
        if len(requests) != self.found["rows"] or _requests_digest(requests) != self.found["requests_digest"]:
            return False
        for request, answer in zip(requests, self.found["answers"]):
            request.tokens = [int(t) for t in answer["tokens"]]
            request.logprobs = {int(k): float(v) for k, v in answer["logprobs"].items()}
            request.continued = bool(answer["continued"])
        return True


def read(model: str | Path | None, dataset: str | Path, max_new_tokens: int) -> Recorded | None:
    """The answers `model`'s build gates recorded for `dataset` at `max_new_tokens`, or None: no record,
    another dataset or answer length, or files that no longer match the model's manifest."""
    found = manifest.read_manifest(model) if model and Path(model).is_dir() else None
    kept = (found or {}).get(KEY)
    if not isinstance(kept, dict) or kept.get("max_new_tokens") != max_new_tokens:
        return None
    if kept.get("dataset_digest") is None or kept.get("dataset_digest") != _dataset_digest(dataset):
        return None
    if not isinstance(kept.get("answers"), list) or len(kept["answers"]) != kept.get("rows"):
        return None
    if not isinstance(kept.get("seconds"), (int, float)):
        return None
    if kept.get("runtime") != _runtime():
        return None
    if not manifest.content_matches(model, found.get("outputs_digest")):  # ~0.1 s for SmolLM2 int4
        return None
    return Recorded(kept)


def _dataset_digest(dataset: str | Path) -> str | None:
    """What identifies the eval rows the gate answered: the digest of the dataset's eval part its manifest
    records (folders.eval_digest, what the cache keys an evaluation by), else its whole content's."""
    from slmforge.contract import folders

    found = manifest.read_manifest(dataset) or {}
    return found.get(folders.EVAL_DIGEST) or found.get("outputs_digest")


def _runtime() -> dict:
    """What decides how the og model rounds: its libraries' versions, the CPU and the threads it runs on."""
    from slmforge.models.genai import usable_cores

    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {**manifest.library_versions("onnxruntime-genai", "onnxruntime"), "cpu": cpu, "threads": usable_cores()}


def _requests_digest(requests) -> str:
    """Digest of every request's prompt and expected answer tokens, in order."""
    payload = json.dumps([[list(r.prompt), list(r.expected)] for r in requests], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()
