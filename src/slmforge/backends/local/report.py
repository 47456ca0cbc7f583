"""The human side of a run: report.md (with a loss curve PNG) and the summary printed at the end.

Both read only the run record (run.json's content), so a report can be rebuilt from run.json.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
from pathlib import Path
from typing import Any, TextIO

from slmforge.backends.local.display import fmt_seconds
from slmforge.contract.files import write_atomic

LOSS_PNG = "loss.png"
_EVAL_ORDER = ("base", "merged", "onnx")


def fmt_size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def loss_history(record: dict[str, Any]) -> list[dict[str, float]]:
    """The training loss curve: the `loss_history` metric of the step that trained (the adapter folder's)."""
    for step in record.get("steps", []):
        if "loss_history" in (step.get("metrics") or {}):
            return list(step["metrics"]["loss_history"] or [])
    return []


def data_note(record: dict[str, Any]) -> str | None:
    """What load_data cut off: line-by-line rows longer than max_seq_len (refused past 10 %, said here below)."""
    from slmforge.data.packing import cut_text

    for step in record.get("steps", []):
        m = step.get("metrics") or {}
        if m.get("cut_rows") and m.get("tokenized_rows"):  # the dataset folder's metrics
            return cut_text(m["cut_rows"], m["tokenized_rows"], m.get("max_seq_len"), m.get("longest_row_tokens"))
    return None


def scored_text(record: dict[str, Any]) -> str | None:
    """Which rows the evaluations scored (run.json's `scored`): how many, of which data config and split."""
    scored = record.get("scored")
    if not scored:
        return None
    rows = f"{scored['rows']} rows" if scored.get("rows") is not None else "rows"
    split = f", split '{scored['split']}'" if scored.get("split") else ""
    if scored.get("separate"):
        how = "a data config of its own, not trained on"
    else:
        size = scored.get("held_out")
        share = f"{size:.0%}" if isinstance(size, float) and size < 1 else f"{size} rows"
        how = f"a seeded {share} held out of training"
    return f"{rows} of data config '{scored['data_config']}'{split} ({how})"


def evaluations(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = record.get("evaluation", {})
    ordered = [k for k in _EVAL_ORDER if k in found] + sorted(k for k in found if k not in _EVAL_ORDER)
    return [(k, found[k]) for k in ordered]


def plot_loss(history: list[dict[str, float]], path: Path) -> bool:
    """Write the training loss curve; False when there is nothing to plot."""
    points = [(h["step"], h["loss"]) for h in history if "step" in h and "loss" in h]
    if not points:
        return False
    # matplotlib costs ~1 s to import: skip it when the same curve is already drawn (cached reruns).
    stamp = path.parent / f".{path.name}.sha256"
    digest = hashlib.sha256(json.dumps(points).encode()).hexdigest()
    if path.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return True
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # no font-cache chatter on stderr
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    write_atomic(path, png.getvalue())
    stamp.write_text(digest)
    return True


def predict_command(record: dict[str, Any]) -> str | None:
    """`slmforge predict` on the final model with the first row the run evaluated (the recipe's own eval data,
    `example` of an evaluation), callable as written: `slmforge` when it is on PATH, else its path."""
    model = record.get("model", {})
    if model.get("kind") != "onnx" or not model.get("path"):
        return None
    adapter = (record.get("adapter") or {}).get("path")
    served = f" --adapter {shlex.quote(adapter)}" if adapter else ""
    example = next((m["example"] for _, m in evaluations(record) if (m or {}).get("example")), None)
    text = _shell_text(example["text"]) if example else "TEXT"
    expected = f"   # a held-out row; expected: {example['expected']}" if example else ""
    return f"{cli_command()} predict --model {shlex.quote(model['path'])}{served} {text}{expected}"


def _shell_text(text: str) -> str:
    """`text` as one shell word, in double quotes when that needs no escape (an apostrophe reads better)."""
    return f'"{text}"' if not any(c in text for c in '"$`\\!\n') else shlex.quote(text)


def cli_command() -> str:
    """How to call slmforge from here: `slmforge` when PATH finds this installation's, else the script
    beside this Python (`.venv/bin/slmforge` after `make demo`, relative when under the current folder)."""
    import os
    import shutil
    import sys

    script = Path(sys.executable).parent / "slmforge"
    found = shutil.which("slmforge")
    if found is not None and (not script.is_file() or os.path.samefile(found, script)):
        return "slmforge"
    if not script.is_file():
        return "slmforge"
    try:
        return shlex.quote(str(script.relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(script))


def evaluator_table(evals: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The recipe's evaluator metrics: one row per model, metric and sub-type, with its goal judged."""
    from slmforge.models.olive_metrics import goal_text

    rows = []
    for label, m in evals:
        evaluator = m.get("evaluator") or {}
        for metric in evaluator.get("metrics", []):
            for sub in metric["sub_types"]:
                unit = f" {sub['unit']}" if sub.get("unit") else ""
                rows.append(f"| {label} | {metric['name']} ({metric['type']}) | {sub['name']} "
                            f"| {_num(sub.get('value'), 4)}{unit} | {goal_text(sub.get('goal'))} |")
    if not rows:
        return []
    name = next(m["evaluator"]["name"] for _, m in evals if m.get("evaluator"))
    return ["", f"### Evaluator `{name}`", "", "Goals are reported, never fail the run (Olive ranks search "
            "candidates by them).", "", "| model | metric | sub-type | value | goal |", "|---|---|---|---|---|", *rows]


def render_markdown(record: dict[str, Any], has_plot: bool) -> str:
    lines = [f"# slmforge run: {record['status']}", "",
             f"- recipe: `{record['recipe']}` (digest `{record['recipe_digest'][:12]}`)",
             f"- wall time: {fmt_seconds(record.get('seconds'))}"]
    model = record.get("model", {})
    if model.get("path"):
        lines.append(f"- model ({model['kind']}): `{model['path']}`")
    if record.get("registered"):
        reg = record["registered"]
        on = (f" (an adapter on the base `{reg['base'].get('name')}` version {reg['base'].get('version')})"
              if isinstance(reg.get("base"), dict) else "")
        how = f"{'reused ' if reg.get('reused') else ''}version {reg.get('version')}"
        how += " (same model)" if reg.get("reused") else ""
        lines.append(f"- registered: `{reg.get('name')}` {how}{on} in `{reg.get('tracking_uri')}`")
    if record.get("error"):
        lines.append(f"- error: {record['error']}")
    if data_note(record):
        lines.append(f"- data: {data_note(record)}")
    if scored_text(record):
        lines.append(f"- scored: {scored_text(record)}")
    lines += ["", "## Steps", "", "| step | status | time | cache key | log |", "|---|---|---|---|---|"]
    for s in record["steps"]:
        time_text = fmt_seconds(s.get("seconds")) + (" (original)" if s["status"] == "cached" else "")
        key = f"`{s['cache_key'][:12]}`" if s.get("cache_key") else ""
        log = f"`{s['log']}`" if s.get("log") else ""
        lines.append(f"| {s['name']} | {s['status']} | {time_text} | {key} | {log} |")
    evals = evaluations(record)
    if evals:
        lines += ["", "## Evaluation", "", "| model | accuracy | n | perplexity | tokens/s | size |", "|---|---|---|---|---|---|"]
        for label, m in evals:
            lines.append(f"| {label} | {_num(m.get('accuracy'))} | {_num(m.get('n'))} | {_num(m.get('perplexity'), 2)} "
                         f"| {_num(m.get('tokens_per_second'), 0)} | {fmt_size(m.get('size_bytes'))} |")
        lines += evaluator_table(evals)
    if has_plot:
        lines += ["", "## Training loss", "", f"![training loss]({LOSS_PNG})"]
    command = predict_command(record)
    if command:
        lines += ["", "## Try it", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


def write_report(record: dict[str, Any], path: Path) -> Path:

    has_plot = plot_loss(loss_history(record), path.parent / LOSS_PNG)
    write_atomic(path, render_markdown(record, has_plot))
    return path


# ---------------------------------------------------------------------- the closing summary


def summary_rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) pairs for the summary: the headline figures of a run."""
    rows: list[tuple[str, str]] = []
    if data_note(record):
        rows.append(("data", data_note(record)))
    evals = dict(evaluations(record))
    scored = [(label, m) for label, m in evals.items() if m and m.get("accuracy") is not None]
    if scored:
        chain = " -> ".join(f"{label} {m['accuracy']:.3f}" for label, m in scored)
        last = scored[-1][1]
        majority = f", majority class {last['majority_baseline']:.3f}" if last.get("majority_baseline") is not None else ""
        rows.append(("accuracy", f"{chain} on {last.get('n')} held-out rows{majority}"))
    if scored_text(record):
        rows.append(("scored", scored_text(record)))
    goals = [s["goal"]["met"] for m in evals.values() for metric in (m.get("evaluator") or {}).get("metrics", [])
             for s in metric["sub_types"] if s.get("goal")]
    if goals:
        rows.append(("goals", f"{goals.count(True)} met, {goals.count(False)} not met, "
                              f"{goals.count(None)} not judged (report.md; a goal never fails a run)"))
    merged, onnx = evals.get("merged"), evals.get("onnx")
    if merged and onnx and merged.get("size_bytes") and onnx.get("size_bytes"):
        rows.append(("size", f"{fmt_size(merged['size_bytes'])} (PyTorch fp32) -> {fmt_size(onnx['size_bytes'])} (ONNX)"))
    for label in ("merged", "onnx"):
        m = evals.get(label)
        if m and m.get("tokens_per_second"):
            rows.append((f"tokens/s ({label})", f"{m['tokens_per_second']:.0f}"))
    model = record.get("model", {})
    if model.get("path"):
        rows.append(("model", f"{model['path']} ({model['kind']})"))
    if (record.get("adapter") or {}).get("path"):
        rows.append(("adapter", f"{record['adapter']['path']} (.onnx_adapter for that base; the base alone without it)"))
    if record.get("registered"):
        reg = record["registered"]
        on = f" on base {reg['base'].get('name')} v{reg['base'].get('version')}" if isinstance(reg.get("base"), dict) else ""
        how = f"reused v{reg.get('version')} (same model)" if reg.get("reused") else f"v{reg.get('version')}"
        uri = f"models:/{reg.get('name')}@{reg.get('alias') or 'current'}"  # predict/chat/evaluate --model take it
        rows.append(("registered", f"{reg.get('name')} {how}{on}: {uri}"))
    command = predict_command(record)
    if command:
        rows.append(("try it", command))
    tracked = record.get("tracking") or {}
    if tracked.get("mlflow"):
        m = tracked["mlflow"]
        again = "; nothing ran: the run this one repeats" if tracked.get("repeated") else ""
        rows.append(("tracked", f"MLflow run {m['run_id']} (experiment {m['experiment']}{again}): {m['ui']}"))
    if tracked.get("tensorboard"):
        rows.append(("tensorboard", tracked["tensorboard"]["ui"]))
    return rows


def print_summary(record: dict[str, Any], out: TextIO, *, rich: bool) -> None:
    steps = [(s["name"], s["status"], fmt_seconds(s.get("seconds")) + (" (cached)" if s["status"] == "cached" else ""))
             for s in record["steps"]]
    rows = summary_rows(record)
    if rich:
        from rich.console import Console
        from rich.table import Table

        console = Console(file=out, force_terminal=True)
        table = Table(title=f"slmforge run {record['status']} in {fmt_seconds(record.get('seconds'))}",
                      show_header=True, header_style="bold")
        table.add_column("step")
        table.add_column("status")
        table.add_column("time", justify="right")
        for step in steps:
            table.add_row(*step)
        console.print(table)
        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="bold")
        facts.add_column(overflow="fold")
        for what, value in rows:
            facts.add_row(what, value)
        console.print(facts)
        return
    print(f"slmforge run {record['status']} in {fmt_seconds(record.get('seconds'))}", file=out)
    for name, status, seconds in steps:
        print(f"  {name:<16} {status:<7} {seconds}", file=out)
    for what, value in rows:
        print(f"{what:>16}: {value}", file=out)
    out.flush()


if __name__ == "__main__":  # `make demo`: the try-it command of a run.json, to print and run
    import sys

    print(predict_command(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))) or "")
