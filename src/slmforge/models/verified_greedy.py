"""Greedy answers for many eval rows at once: the tokens one-at-a-time greedy decoding gives.

Each row is a `Request`: its prompt, the expected answer (label tokens + EOS) and the stop rule of
the one-at-a-time decoder. A backend's `answers(requests, max_new_tokens)` fills in each row's
greedy tokens and the log-probabilities of the expected tokens it saw on the way; two strategies:

- teacher-forced (PyTorch, `teacher_forced_answers`): greedy decoding is a chain of argmaxes, so one
  batched forward over prompt + expected answer checks the whole chain: at each answer position the
  argmax either is the expected token (decoding would have produced it and fed it back) or is the
  token decoding produces instead. Rows whose answer ends inside the chain are done in that pass;
  the rest continue with batched greedy decoding from their first differing token. One forward per
  row instead of a generator per row (measured 36 s -> 11 s for 146 rows of SmolLM2 on 2 cores).
- decoded (onnxruntime-genai, GenaiModel.answers): batched og decoding. There prompt processing and
  single-token steps run different int4 kernels, so a teacher-forced pass can differ from og's own
  decoding at near-ties (measured: 4 of 146 answers); og's batched decoding gives its own tokens,
  except that batch-shaped int4 kernels can flip a near-tie of single decoding too (measured on an AMD
  EPYC: 1 of 60 rows, a wrong answer either way; tests/test_real_model.py bounds it).

numpy only: ONNX evaluation never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Request:
    prompt: list[int]
    expected: list[int]  # the label's tokens, EOS last
    stop: Callable[[str], bool]  # the decoder's stop rule on the text so far
    tokens: list[int] = field(default_factory=list)  # the greedy answer (EOS included when generated)
    logprobs: dict[int, float] = field(default_factory=dict)  # k -> log p(expected[k] | prompt + expected[:k])
    continued: bool = False  # decoding left the expected answer
    # More sequence positions whose next-token log-probability is wanted (a perplexity over the
    # prompt too): a teacher-forced pass reads them from the forward it runs anyway.
    score_also: tuple[int, ...] = ()
    scored: dict[int, float] = field(default_factory=dict)  # sequence position -> log p(next token)

    @property
    def sequence(self) -> tuple[int, ...]:
        return tuple(self.prompt + self.expected)

    def position(self, k: int) -> int:
        """The sequence position whose logits choose answer token k."""
        return len(self.prompt) - 1 + k


def finished(backend, request: Request, max_new_tokens: int) -> bool:
    """The one-at-a-time decoder's rule, applied after each new token."""
    if request.tokens[-1] in backend.eos_token_ids or len(request.tokens) >= max_new_tokens:
        return True
    return request.stop(backend.decode(request.tokens))


def teacher_forced_answers(backend, requests: list[Request], max_new_tokens: int, token_budget: int) -> None:
    """Fill `requests` with one scoring pass over prompt + expected, then decode the rows that leave it."""
    wanted = []
    for r in requests:
        answer = [r.position(k) for k in range(len(r.expected))]
        wanted.append((list(r.sequence), answer + sorted(set(r.score_also) - set(answer))))
    results = backend.score(wanted)
    pending: list[Request] = []
    for request, (_, positions), (argmax, logprob) in zip(requests, wanted, results):
        n = len(request.expected)
        request.tokens, request.continued = [], False
        request.logprobs = {k: float(v) for k, v in enumerate(logprob[:n])}
        request.scored = {p: float(v) for p, v in zip(positions[n:], logprob[n:])}
        for k, expected in enumerate(request.expected):
            request.tokens.append(int(argmax[k]))
            if finished(backend, request, max_new_tokens):
                break
            if request.tokens[-1] != expected:
                request.continued = True
                pending.append(request)
                break
    # Similar lengths together: a padded batch computes every padded position.
    for indices in length_batches([len(r.prompt) + len(r.tokens) for r in pending], token_budget):
        chunk = [pending[i] for i in indices]
        budget = max(max_new_tokens - len(r.tokens) for r in chunk)
        for request, continuation in zip(chunk, backend.greedy([r.prompt + r.tokens for r in chunk], budget)):
            for token in continuation:
                request.tokens.append(int(token))
                if finished(backend, request, max_new_tokens):
                    break


def score_positions(backend, wanted: dict[tuple[int, ...], set[int]]) -> dict[tuple[int, ...], dict[int, float]]:
    """log p(next token) at the wanted positions of each distinct sequence, one batched pass."""
    keys = list(wanted)
    results = backend.score([(list(k), sorted(wanted[k])) for k in keys])
    return {k: dict(zip(sorted(wanted[k]), (float(v) for v in logprob))) for k, (_, logprob) in zip(keys, results)}


def log_softmax_at(logits: np.ndarray, targets, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(argmax, log p(target)) for rows of logits [n, vocab]; log p in float64.

    The exponentials are float32 (each term off by <= 1 ulp, under 6e-8 relative) and summed in
    float64: measured 2.6e-8 from an all-float64 computation on 2048 rows of a 49k vocabulary,
    and 43x faster (numpy's float64 exp is scalar code: 14.6 s -> 0.34 s there). A few rows at a
    time, so the temporaries stay in cache rather than a GB-sized float64 copy.
    """
    logits = np.asarray(logits, dtype=np.float32)
    targets = np.asarray(targets)
    argmax = np.empty(len(logits), dtype=np.int64)
    logprob = np.empty(len(logits), dtype=np.float64)
    for start in range(0, len(logits), chunk):
        rows = logits[start:start + chunk]
        peak = rows.max(-1, keepdims=True)
        log_z = np.log(np.exp(rows - peak).sum(-1, dtype=np.float64)) + peak[:, 0]
        argmax[start:start + chunk] = rows.argmax(-1)
        picked = rows[np.arange(len(rows)), targets[start:start + chunk]]
        logprob[start:start + chunk] = picked.astype(np.float64) - log_z
    return argmax, logprob


def length_batches(lengths: list[int], token_budget: int, max_rows: int = 32,
                   same_length: bool = False) -> list[list[int]]:
    """Indices grouped by similar length (`same_length`: equal): each padded batch holds <= token_budget
    tokens and <= max_rows rows (og's generator takes at most 32)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and ((len(current) + 1) * lengths[i] > token_budget or len(current) == max_rows
                        or (same_length and lengths[i] != lengths[current[-1]])):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
