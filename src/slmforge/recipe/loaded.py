"""A recipe as loaded: the validated model, the file, what the user wrote and its canonical shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmforge.recipe.generations import Normalised, dotted
from slmforge.recipe.schema import Recipe


@dataclass(frozen=True)
class LoadedRecipe:
    recipe: Recipe
    path: Path  # the recipe file, resolved
    raw: dict[str, Any]  # as the user wrote it
    normalised: Normalised  # in the canonical shape, with where each key came from

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def canonical(self) -> dict[str, Any]:
        return self.normalised.data

    def where(self, *cpath: str | int) -> str:
        """The JSON path, in the shape the user wrote, of a canonical path (for messages)."""
        return dotted(self.normalised.raw_path(cpath))

    @property
    def notes(self) -> list[str]:
        """One line per valid Olive key slmforge reads differently or not at all, with the reason: the
        normaliser's (ignored keys, the export chain's mapping, pass_flows) and each fine-tune pass's
        training_args (ignored keys, report_to, resume_from_checkpoint)."""
        lines = list(self.normalised.notes)
        for name, p in self.recipe.passes.items():
            targs = getattr(p, "training_args", None)
            for key, what in targs.notes() if targs is not None else []:
                lines.append(f"{self.where('passes', name, 'training_args', key)}: {what}")
        return lines
