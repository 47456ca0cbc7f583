"""A checkout-shaped tmp tree for the shipped `pipelines/demo-aml.json`.

The recipe names its model and data relative to itself ("../.slmforge/models/phi3-tiny",
"../src/slmforge/data/tones.jsonl"): the tree holds a copy of pipelines/, the shipped tone set and
the session's tiny model at those places, so tests submit the shipped recipe, not a look-alike.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
DEMO_AML = REPO / "pipelines" / "demo-aml.json"


def demo_aml_tree(root: Path, tiny_model_dir: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Lay out root/{pipelines, src/slmforge/data, .slmforge/models/phi3-tiny}; return the recipe path.

    `edit(raw)` changes the copied recipe (e.g. fewer training steps); the shipped file is untouched.
    """
    raw = json.loads(DEMO_AML.read_text())
    model = _in_repo(raw["input_model"]["config"]["hf_config"]["model_name"])
    data = _in_repo(raw["data_configs"][0]["load_dataset_config"]["data_files"])
    shutil.copytree(REPO / "pipelines", root / "pipelines")
    model_copy, data_copy = root / model, root / data
    shutil.copytree(tiny_model_dir, model_copy)
    data_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / data, data_copy)
    recipe = root / "pipelines" / DEMO_AML.name
    if edit is not None:
        edit(raw)
        recipe.write_text(json.dumps(raw, indent=1))
    return recipe


def _in_repo(relative_to_recipe: str) -> Path:
    """A recipe-relative path as a path inside the checkout (no symlinks followed)."""
    return Path(os.path.normpath(DEMO_AML.parent / relative_to_recipe)).relative_to(REPO)
