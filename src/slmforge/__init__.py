"""slmforge: fine-tune a small language model from an Olive recipe and ship it as INT4 ONNX.

The Python API (`slmforge.run`, `validate`, `load_recipe`, `evaluate`, `RunResult`) lives in slmforge/api.py,
imported on first use of one of its names, so `import slmforge` stays as fast as `slmforge --help`.
"""

__version__ = "0.1.0"
__all__ = ["RunResult", "evaluate", "load_recipe", "run", "validate"]


def __getattr__(name: str):
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("slmforge.api"), name)  # by name, as cli.py imports a command
    raise AttributeError(f"module 'slmforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
