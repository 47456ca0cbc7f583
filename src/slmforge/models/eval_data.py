"""What an evaluation reads from a load_data dataset folder: the held-out rows (checked against the
template's columns), the tokenized eval sequences for perplexity, and the template. The folder itself
(file names, line shapes, the manifest) is contract/folders.py's.
"""

from __future__ import annotations

from pathlib import Path

from slmforge.contract import folders
from slmforge.data.template import Template
from slmforge.errors import InvalidInput


def read_dataset_folder(dataset: str | Path, max_samples: int):
    """(eval rows, perplexity examples, template) from a load_data output folder, first max_samples each."""
    data = folders.open_dataset(dataset)
    template = Template(data.template)
    if max_samples < 1:
        raise InvalidInput(f"--max_samples {max_samples}: must be at least 1")
    for name in (folders.EVAL_ROWS, folders.EVAL):  # either missing is named before anything is read
        data.file(name)
    rows = data.held_out_rows(max_samples)
    check_rows(rows, template, str(data.path / folders.EVAL_ROWS))
    examples = [(r["input_ids"], r["labels"]) for r in data.sequences(folders.EVAL, max_samples)]
    return rows, examples, template


def check_rows(rows: list[dict], template: Template, where: str) -> None:
    for i, row in enumerate(rows, 1):
        missing = [f for f in template.fields if f not in row]
        if missing:
            raise InvalidInput(f"{where}: row {i} has no column {missing[0]!r} (the template uses "
                               f"{', '.join(template.fields)})")
