"""A user script in Olive 0.4's style: a registered dataset loader the recipe names by type."""

import json
from pathlib import Path

from olive.data.registry import Registry


@Registry.register_dataset()
def load_tone_rows(data_name, split, data_files, language="en", token=False):
    """Rows of a local JSON-lines file, filtered the way Olive's examples filter by language."""
    path = Path(__file__).parent / data_files
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if row.get("lang", language) == language]
