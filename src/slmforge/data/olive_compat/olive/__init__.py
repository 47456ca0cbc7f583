"""slmforge's stand-in for Olive: olive.data.registry, olive.constants, olive.model (names only)."""

SLMFORGE_STAND_IN = True
PROVIDED = ("olive.data.registry", "olive.constants", "olive.model")
