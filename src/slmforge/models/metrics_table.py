"""The human summary of an evaluation's metrics: headline figures and the confusion table."""

from __future__ import annotations


def format_table(metrics: dict) -> str:
    """A human summary: headline figures and the confusion table."""
    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)
    lines = [
        f"{metrics['label']} ({metrics['model_kind']}): accuracy {fmt(metrics['accuracy'], '.3f')} "
        f"on {metrics['n']} rows (majority class {fmt(metrics['majority_baseline'], '.3f')}), "
        f"perplexity {fmt(metrics['perplexity'], '.3f')}, {fmt(metrics['tokens_per_second'], '.0f')} tokens/s, "
        f"size {fmt(metrics['size_bytes'], ',')} bytes",
    ]
    confusion = metrics["confusion"]
    if confusion:
        predicted = sorted({p for row in confusion.values() for p in row})
        corner = "true \\ predicted"
        first = max(len(corner), *(len(t) for t in confusion)) + 2
        width = max(6, *(len(p) for p in predicted)) + 2
        lines.append(corner.ljust(first) + "".join(p.rjust(width) for p in predicted))
        for truth in sorted(confusion):
            lines.append(truth.ljust(first) + "".join(str(confusion[truth].get(p, 0)).rjust(width)
                                                      for p in predicted))
    return "\n".join(lines)
