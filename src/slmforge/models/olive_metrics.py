"""Olive's evaluator metrics, computed from slmforge's evaluation: the sub-type vocabulary and the values.

An Olive metric is `{name, type, sub_types: [{name, priority, higher_is_better, goal}]}`. slmforge
scores generated answers, so each Olive type reads the evaluation it already has:

- accuracy: `accuracy_score` is the share of rows answered exactly (micro; `average: macro` in the
  sub-type's metric_config, or `task: multiclass` as torchmetrics reads it, gives the mean per-class
  recall); `f1_score`, `precision`, `recall` are per-class figures from the confusion table
  (macro by default; `micro`, `weighted` on request), the classes being the rows' expected answers
  (an answer outside them counts against its row's class only); `perplexity` is the evaluation's
  perplexity (lower is better, unlike Olive's default which calls every accuracy sub-type "higher").
  `auroc` needs class scores a generated answer does not give: refused by name.
- latency: milliseconds per request, each row answered on its own (`generate`), after `warmup_num`
  untimed requests, over `repeat_test_num` timed ones (Olive's metric_config, defaults 10 and 20;
  rows are taken in turn), `sleep_num` seconds apart.
- throughput: tokens per second of those same requests (one set of timed requests serves every
  latency and throughput metric; the first such metric's metric_config sets it): `avg` is all their tokens over all their
  time; `min`/`max` the slowest and fastest request; `pNN` the rate of the request at latency pNN,
  as Olive derives throughput from latency.

Goals follow Olive's engine: `threshold` is the value itself; `min-improvement`, `max-degradation`
and their `percent-` forms are measured from a baseline (the input model's evaluation). A goal is
reported met or not; it never fails a run (Olive uses goals to rank search candidates).
numpy only: ONNX evaluation never imports torch.
"""

from __future__ import annotations

import time
from typing import Any

ACCURACY_SUB_TYPES = ("accuracy_score", "f1_score", "precision", "recall", "perplexity")
_PERCENTILES = {"p50": 50, "p75": 75, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}
LATENCY_SUB_TYPES = ("avg", "max", "min", *_PERCENTILES)
SUB_TYPES: dict[str, tuple[str, ...]] = {"accuracy": ACCURACY_SUB_TYPES, "latency": LATENCY_SUB_TYPES,
                                         "throughput": LATENCY_SUB_TYPES}
# Olive sub-types slmforge cannot compute, and why.
REFUSED_SUB_TYPES = {("accuracy", "auroc"): "AUROC needs class scores; slmforge's accuracy is over generated answers"}
UNITS = {"latency": "ms", "throughput": "tokens/s"}
GOAL_TYPES = ("threshold", "min-improvement", "percent-min-improvement", "max-degradation",
              "percent-max-degradation")
LATENCY_DEFAULTS = {"warmup_num": 10, "repeat_test_num": 20, "sleep_num": 0}


def higher_is_better(metric_type: str, sub_type: str) -> bool:
    """slmforge's default direction of a sub-type (Olive's, except perplexity: lower is better)."""
    return not (metric_type == "latency" or sub_type == "perplexity")


def check_spec(spec: Any, where: str) -> None:
    """An --evaluator file as recipe/evaluators.py writes it; InvalidInput naming what is wrong."""
    from slmforge.errors import InvalidInput

    metrics = spec.get("metrics") if isinstance(spec, dict) else None
    if not isinstance(metrics, list) or not isinstance(spec.get("name"), str):
        raise InvalidInput(f"{where}: expected {{name, metrics: [...]}}")
    for i, m in enumerate(metrics):
        subs = m.get("sub_types") if isinstance(m, dict) else None
        if m.get("type") not in SUB_TYPES or not isinstance(subs, list) or not isinstance(m.get("name"), str):
            raise InvalidInput(f"{where}: metrics[{i}] needs a name, a type ({', '.join(SUB_TYPES)}) and sub_types")
        if m["type"] in UNITS and set(m.get("latency") or {}) != set(LATENCY_DEFAULTS):
            raise InvalidInput(f"{where}: metrics[{i}].latency needs {', '.join(LATENCY_DEFAULTS)}")
        for j, s in enumerate(subs):
            if not isinstance(s, dict) or s.get("name") not in SUB_TYPES[m["type"]] or \
                    not isinstance(s.get("higher_is_better"), bool) or "priority" not in s:
                raise InvalidInput(f"{where}: metrics[{i}].sub_types[{j}] needs a {m['type']} sub-type name, "
                                   "priority and higher_is_better")


def needs_requests(spec: dict[str, Any] | None) -> bool:
    return bool(spec) and any(m["type"] in ("latency", "throughput") for m in spec["metrics"])


def time_requests(backend, prompts: list[tuple[str, Any]], max_new_tokens: int, latency: dict[str, int]
                  ) -> list[tuple[float, int]]:
    """(seconds, generated tokens) of each timed request; `prompts` are (prompt text, stop rule)."""
    timed: list[tuple[float, int]] = []
    warmup, repeat, sleep = latency["warmup_num"], latency["repeat_test_num"], latency["sleep_num"]
    for i in range(warmup + repeat):
        prompt, stop = prompts[i % len(prompts)]
        started = time.perf_counter()
        _, tokens = backend.generate(prompt, max_new_tokens, stop)
        seconds = time.perf_counter() - started
        if i >= warmup:
            timed.append((seconds, tokens))
            if sleep:
                time.sleep(sleep)
    return timed


def run_spec(spec: dict[str, Any], backend, rows: list[dict], template, result: dict[str, Any], *,
             max_new_tokens: int, baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluator's results for one model: timed requests when a latency/throughput metric asks."""
    from slmforge.models.answers import answer_finished, template_suffix

    timed = None
    if needs_requests(spec):
        latency = next(m["latency"] for m in spec["metrics"] if m["type"] in UNITS)
        prompts = [(template.prompt(row), answer_finished(template_suffix(template, row))) for row in rows]
        timed = time_requests(backend, prompts, max_new_tokens, latency)
    return score(spec, result, timed, baseline)


def _latency_values(timed: list[tuple[float, int]]) -> dict[str, float]:
    import numpy as np

    ms = np.array([s * 1000 for s, _ in timed])
    values = {"avg": float(ms.mean()), "max": float(ms.max()), "min": float(ms.min())}
    values.update({k: float(np.percentile(ms, q)) for k, q in _PERCENTILES.items()})
    return {k: round(v, 5) for k, v in values.items()}


def _throughput_values(timed: list[tuple[float, int]]) -> dict[str, float]:
    import numpy as np

    seconds = np.array([s for s, _ in timed])
    rates = np.array([t / s if s > 0 else 0.0 for s, t in timed])
    values = {"avg": float(sum(t for _, t in timed) / seconds.sum()) if seconds.sum() > 0 else 0.0,
              "max": float(rates.max()), "min": float(rates.min())}
    for key, q in _PERCENTILES.items():  # the rate of the request at latency pNN
        at = np.percentile(seconds, q, method="nearest")
        values[key] = float(rates[int(np.argmin(np.abs(seconds - at)))])
    return {k: round(v, 5) for k, v in values.items()}


def _per_class(confusion: dict[str, dict[str, int]]) -> dict[str, tuple[int, int, int]]:
    """class -> (true positives, predicted as it, rows of it)."""
    out = {}
    for cls in confusion:
        tp = confusion[cls].get(cls, 0)
        predicted = sum(row.get(cls, 0) for row in confusion.values())
        out[cls] = (tp, predicted, sum(confusion[cls].values()))
    return out


def _classification(name: str, result: dict[str, Any], average: str) -> float | None:
    classes = _per_class(result.get("confusion") or {})
    if not classes:
        return None
    n = sum(rows for _, _, rows in classes.values())
    if name == "accuracy_score" and average == "micro":
        return result.get("accuracy")
    if average == "micro":  # one pool: every wrong answer is a false positive of something, or of no class
        tp = sum(t for t, _, _ in classes.values())
        predicted = sum(p for _, p, _ in classes.values())
        precision, recall = (tp / predicted if predicted else 0.0), tp / n
        return {"precision": precision, "recall": recall,
                "f1_score": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}[name]
    scores, weights = [], []
    for tp, predicted, rows in classes.values():
        precision, recall = (tp / predicted if predicted else 0.0), (tp / rows if rows else 0.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append({"precision": precision, "recall": recall, "accuracy_score": recall, "f1_score": f1}[name])
        weights.append(rows if average == "weighted" else 1)
    return sum(s * w for s, w in zip(scores, weights)) / sum(weights)


def _accuracy_value(sub: dict[str, Any], result: dict[str, Any]) -> float | None:
    if sub["name"] == "perplexity":
        return result.get("perplexity")
    config = sub.get("metric_config") or {}
    default = "micro" if sub["name"] == "accuracy_score" and config.get("task") != "multiclass" else "macro"
    value = _classification(sub["name"], result, config.get("average") or default)
    return None if value is None else round(value, 6)


def resolve_goal(goal: dict[str, Any], higher: bool, baseline: float | None) -> float | None:
    """The value a goal asks for (Olive's engine); None when a relative goal has no baseline."""
    if goal["type"] == "threshold":
        return goal["value"]
    if baseline is None:
        return None
    sign = 1 if higher else -1
    return {
        "max-degradation": baseline - sign * goal["value"],
        "min-improvement": baseline + sign * goal["value"],
        "percent-max-degradation": baseline * (1 - sign * goal["value"] / 100),
        "percent-min-improvement": baseline * (1 + sign * goal["value"] / 100),
    }[goal["type"]]


def _baseline_value(baseline: dict[str, Any] | None, metric: str, sub_type: str) -> float | None:
    for m in (baseline or {}).get("metrics", []):
        if m.get("name") == metric:
            for s in m.get("sub_types", []):
                if s.get("name") == sub_type:
                    return s.get("value")
    return None


def score(spec: dict[str, Any], result: dict[str, Any], timed: list[tuple[float, int]] | None,
          baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluator's results: each metric with its sub-types' values, units and goals judged."""
    values_of = {"latency": _latency_values(timed) if timed else {},
                 "throughput": _throughput_values(timed) if timed else {}}
    metrics = []
    for metric in spec["metrics"]:
        subs = []
        for sub in metric["sub_types"]:
            if metric["type"] == "accuracy":
                value = _accuracy_value(sub, result)
            else:
                value = values_of[metric["type"]].get(sub["name"])
            entry = {"name": sub["name"], "value": value, "unit": UNITS.get(metric["type"]),
                     "priority": sub["priority"], "higher_is_better": sub["higher_is_better"]}
            goal = sub.get("goal")
            if goal:
                base = _baseline_value(baseline, metric["name"], sub["name"])
                target = resolve_goal(goal, sub["higher_is_better"], base)
                met = None if target is None or value is None else (
                    value >= target if sub["higher_is_better"] else value <= target)
                entry["goal"] = {**goal, "target": None if target is None else round(target, 6), "met": met,
                                 **({"baseline": base} if goal["type"] != "threshold" else {})}
                if met is None:
                    entry["goal"]["why"] = "no value" if value is None else "no baseline (the input model's value)"
            subs.append(entry)
        metrics.append({"name": metric["name"], "type": metric["type"], "sub_types": subs,
                        **({"requests": len(timed)} if metric["type"] in UNITS and timed else {})})
    return {"name": spec["name"], "metrics": metrics}


def goal_text(goal: dict[str, Any] | None) -> str:
    """A goal as the report shows it: `threshold 0.5 -> met`."""
    if not goal:
        return "-"
    verdict = {True: "met", False: "not met"}.get(goal.get("met"), f"not judged ({goal.get('why')})")
    target = f" (target {goal['target']:g})" if goal.get("target") is not None and goal["type"] != "threshold" else ""
    return f"{goal['type']} {goal['value']:g}{target}: {verdict}"

