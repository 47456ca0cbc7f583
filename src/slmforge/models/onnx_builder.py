"""The onnxruntime-genai model builder, called through its Python API with checked options.

(Not named `builder*`: onnxruntime_genai/models/__init__.py puts its own folder, which holds
`builders`, `builder_config`, `quantization` and `loaders`, on sys.path.)

Facts from onnxruntime-genai 0.18.0 (docs/pitfalls.md): `python -m ...builder --help` crashes,
so the Python API is used; the quantization options are `block_size` and `accuracy_level` (the
`int4_`-prefixed spellings are silently ignored), and unknown extra options are silently accepted
too, so slmforge checks option names against the builder's own documented list.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import re
import tempfile
from pathlib import Path

from slmforge.errors import InvalidInput, StepFailed
from slmforge.models import onnx_builder_compat, onnx_builder_refusals

# Options that slmforge sets from its own inputs, and where the user should say them instead.
_OWN_OPTIONS = {
    "adapter_path": "the --adapter input",
    "block_size": "the int4_block_size input",
    "int4_block_size": "the int4_block_size input",
    "accuracy_level": "the int4_accuracy_level input",
    "int4_accuracy_level": "the int4_accuracy_level input",
    "algo_config": "the int4_algo_config input",
    "int4_algo_config": "the int4_algo_config input",
    "is_symmetric": "the int4_is_symmetric input",
    "int4_is_symmetric": "the int4_is_symmetric input",
    "hf_token": "the HF_TOKEN environment variable (a token never goes on a command line)",
}
_QUANTIZED = ("int4", "int8")

# The builder's int4 methods (algo_config), and the one slmforge uses unless told otherwise: the
# best accuracy kept on the real model within the size goal (bench/int4_options.py measures them all).
# "auto" (slmforge's): a base whose weights already lie on a 4-bit grid is re-encoded without loss
# (exact_quant.py); any other model is quantized with AUTO_METHOD.
INT4_ALGOS = ("auto", "default", "rtn", "k_quant", "rtn_last", "k_quant_last", "k_quant_mixed", "k_quant_linear")
DEFAULT_INT4_ALGO = "auto"
AUTO_METHOD = "k_quant_mixed"


def parse_extra_options(text: str | None) -> dict[str, str]:
    """`k=v,k=v` -> dict. A piece without `=` continues the previous value (nodes_to_exclude=a,b)."""
    options: dict[str, str] = {}
    last: str | None = None
    for piece in (text or "").split(","):
        piece = piece.strip()
        if not piece:
            continue
        if "=" in piece:
            key, value = (s.strip() for s in piece.split("=", 1))
            if not key:
                raise InvalidInput(f"--extra_options: {piece!r} has no option name before '='")
            options[key] = value
            last = key
        elif last is not None:
            options[last] += "," + piece
        else:
            raise InvalidInput(f"--extra_options: {piece!r} is not key=value")
    known = builder_option_names()
    for key in options:
        if key in _OWN_OPTIONS:
            raise InvalidInput(f"--extra_options: {key} is set by slmforge; use {_OWN_OPTIONS[key]}")
        if key not in known:
            match = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{match[0]}'?" if match else ""
            raise InvalidInput(f"--extra_options: unknown onnxruntime-genai builder option '{key}'{hint}")
    return options


def builder_option_names() -> set[str]:
    """The extra options the installed builder documents (its --extra_options help text)."""
    import inspect

    from onnxruntime_genai.models import builder

    source = inspect.getsource(builder.get_args)
    start = source.index('"--extra_options"')
    end = source.index("parser.add_argument", start)
    return set(re.findall(r"^\s+([a-z][a-z_0-9]*) = ", source[start:end], re.M))


def build(*, source: str, out_dir: Path, precision: str, execution_provider: str,
          block_size: int, accuracy_level: int, extra: dict[str, str], adapter: Path | None = None,
          algo_config: str = "default", is_symmetric: bool = True) -> str:
    """Run the builder into `out_dir`; return the options it ran with. A builder error is StepFailed."""
    from onnxruntime_genai.models.builder import create_model
    from onnxruntime_genai.models.builder import parse_extra_options as builder_parse

    from slmforge.models.weights_check import check_loadable

    check_loadable(source)  # a corrupt file is the user's, named; not "the builder failed"
    onnx_builder_refusals.refuse_unbuildable(source, precision, block_size)  # before building: the cause, named
    options = dict(extra)
    if precision in _QUANTIZED:
        algo_config = AUTO_METHOD if algo_config == "auto" else algo_config
        options.update(block_size=str(block_size), accuracy_level=str(accuracy_level), algo_config=algo_config,
                       is_symmetric="true" if is_symmetric else "false")
    if adapter is not None:
        options["adapter_path"] = str(adapter)
        if precision in _QUANTIZED:
            # The adapter's rank-r MatMuls stay float: k_quant cannot quantize a K=r < block matrix
            # (0.18: "cannot reshape array of size 64 into shape (128,newaxis)"), and they are a
            # rounding error of the model's size.
            excluded = [n for n in options.get("nodes_to_exclude", "").split(",") if n]
            options["nodes_to_exclude"] = ",".join(excluded + _lora_node_names(source))
    is_folder = Path(source).is_dir()
    model_name, input_path = ("", source) if is_folder else (source, "")
    log = io.StringIO()
    with (tempfile.TemporaryDirectory(prefix="slmforge-builder-cache-") as cache_dir, _quiet(log),
          onnx_builder_compat.builder_shims()):
        try:
            kv = builder_parse(model_name, input_path, str(out_dir), precision, execution_provider, cache_dir,
                               [f"{k}={v}" for k, v in options.items()])
            create_model(model_name, input_path, str(out_dir), precision, execution_provider, cache_dir, **kv)
        except InvalidInput:  # a compatibility shim's refusal (onnx_builder_compat.py), already one line
            raise
        except Exception as e:  # the builder raises bare Exception/ValueError/NotImplementedError
            raise StepFailed(f"onnxruntime-genai builder failed ({precision}, {execution_provider}): "
                             f"{type(e).__name__}: {e}") from e
    options.pop("adapter_path", None)
    return options


def _lora_node_names(source: str) -> list[str]:
    """The builder's names for LoRA MatMuls (`/model/layers.{i}/attn/q_proj/lora_A/MatMul`, ...)."""
    import json

    config = Path(source) / "config.json"
    layers = json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers", 0) if config.is_file() else 0
    modules = [f"attn/{p}_proj" for p in "qkvo"] + [f"mlp/{p}_proj" for p in ("gate", "up", "down")]
    return [f"/model/layers.{i}/{m}/lora_{ab}/MatMul" for i in range(layers) for m in modules for ab in "AB"]


@contextlib.contextmanager
def _quiet(log: io.StringIO):
    """Keep the builder's prints, progress bars and per-node INFO logs out of the step log."""
    logging.disable(logging.INFO)
    # With tied embeddings the int4 quantizer reads a graph whose embedding already points at the LM head's
    # quantized weights ("... cannot be found in any scope. The model is invalid but we will still create a
    # new input"): onnx_ir's warning, through handlers that write past the redirect; the built model is checked.
    serde = logging.getLogger("onnx_ir.serde")
    level = serde.level
    serde.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        logging.disable(logging.NOTSET)
        serde.setLevel(level)
