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
