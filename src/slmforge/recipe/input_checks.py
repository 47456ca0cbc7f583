"""What the step graph will read, checked before any step runs: the data rows and the model's modules.

`validate` and `run` call `check_inputs` on the built graph, so the rows are read with exactly the
parameters the load_data step gets (file, format, split, columns, max_samples, the held-out share and
seed) and through the same reader (data/readers.py) and split (data/split.py): a broken JSON line, an
empty file, a row of another schema, a null value, a bad chat turn, an eval share the rows cannot give,
or a target module the model does not have is one line and exit 2 before the work starts.

Cheap by design: one pass over the rows of a local data file; the model's module names come from the
safetensors header (models/folder_check.py), never the weights. Datastore (azureml://) and hub rows are
not on this machine: the load_data step checks them when it reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from slmforge.data import chat_rows
from slmforge.data.packing import cut_rows
from slmforge.data.readers import Rows, read_rows
from slmforge.data.split import split_eval
from slmforge.data.template import Template
from slmforge.errors import InvalidInput
from slmforge.models.folder_check import module_names, tensor_names, unknown_targets
from slmforge.models.model_folder import resolve_hf_folder, resolve_tokenizer_folder
from slmforge.models.onnx_builder_refusals import refuse_from_config_json
from slmforge.recipe.checks import data_config_path, resolve_path
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.schema import FinetunePass

USER_FUNCTIONS = ("load_dataset", "pre_process_data")
MAX_TOKENIZED_ROWS = 10_000  # ~0.5 s with a fast tokenizer on 2 cores (1464 rows: 0.2-0.5 s); more: load_data checks


def check_inputs(loaded: LoadedRecipe, graph) -> None:
    """Raise InvalidInput (every problem, each on its own line) when the graph's inputs cannot work."""
    problems = [f"{loaded.path}: {p}" for p in (*_check_rows(loaded, graph), *_check_targets(loaded, graph),
                                                 *_check_buildable(graph))]
    if problems:
        raise InvalidInput(problems[0], problems)


def _check_rows(loaded: LoadedRecipe, graph) -> Iterator[str]:
    if "load_data" not in graph.names():
        return
    step = graph.step("load_data")
    spec = json.loads(step.inputs["spec"].value)
    if any(k in spec for k in USER_FUNCTIONS):
        return  # rows made by the user's script: read when the step runs it
    chat = spec.get("chat") is True
    cols = [chat_rows.COLUMN] if chat else spec["text_cols"]
    p = step.params
    read = dict(text_cols=cols, max_samples=p.get("max_samples"), chat=chat)
    train = _read(loaded, step.inputs.get("data"), str(p.get("data_format", "json")), str(p.get("split", "train")),
                  read)
    if isinstance(train, str):
        yield train
        return
    held = _read(loaded, step.inputs.get("eval_data"), str(p.get("data_format", "json")), "train", read)
    if isinstance(held, str):
        yield held
        return
    if train is None:
        return
    cut = _check_lengths(step, spec, train.rows + (held.rows if held else []))
    if cut:
        yield f"{_data_where(loaded, Path(step.inputs['data'].value), 'max_seq_len')}: {cut}"
    if step.inputs.get("eval_data") is not None or not p.get("eval_dataset_size"):
        return
    if chat:
        def prompt_of(row: dict) -> str:  # the conversation up to its last assistant turn, as load_data renders it
            messages = row[chat_rows.COLUMN]
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            return json.dumps(messages[:last])
    else:
        prompt_of = Template(spec["text_template"]).prompt
    try:
        split_eval(train.rows, prompt_of, p["eval_dataset_size"], int(p.get("data_seed", 42)))
    except InvalidInput as e:
        yield f"{_eval_size_where(loaded)}: {e}"


def _check_lengths(step, spec: dict, rows: list[dict]) -> str | None:
    """load_data's refusal of line-by-line rows cut off by max_seq_len, ahead of time: with the folder's fast
    tokenizer (`tokenizers`, no transformers import; its ids equal transformers' on the tiny Phi-3 and SmolLM2),
    for text-template rows up to MAX_TOKENIZED_ROWS. Chat rows need the chat template: load_data checks them."""
    tokenizer = step.inputs.get("tokenizer")
    if (spec.get("chat") or step.params.get("strategy") != "line-by-line" or tokenizer is None
            or tokenizer.kind != "path" or len(rows) > MAX_TOKENIZED_ROWS):
        return None
    try:
        file = resolve_tokenizer_folder(Path(tokenizer.value)) / "tokenizer.json"
    except InvalidInput:
        return None  # not a model folder: checks.py names it
    if not file.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(file))
    except Exception:  # noqa: BLE001 - a tokenizer the fast library cannot read: load_data loads it and names it
        return None
    template = Template(spec["text_template"])
    prompts = tok.encode_batch([template.prompt(r) for r in rows], add_special_tokens=True)
    answers = tok.encode_batch([template.completion(r) for r in rows], add_special_tokens=False)
    lengths = [len(p.ids) + len(a.ids) + 1 for p, a in zip(prompts, answers)]  # + EOS, as load_data adds it
    try:
        cut_rows(lengths, int(step.params["max_seq_len"]))
    except InvalidInput as e:
        return str(e)
    return None


def _read(loaded: LoadedRecipe, ref, data_format: str, split: str, read: dict) -> Rows | str | None:
    """The rows of a local data file, a problem line, or None (no file, or one not on this machine)."""
    if ref is None or ref.kind != "path":
        return None  # an azureml:// datastore file: read by the load_data step
    try:
        return read_rows(Path(ref.value), data_format, split=split, **read)
    except InvalidInput as e:
        n = len(e.problems) - 1  # the reader stops listing at 20
        more = f" (and {n} more bad row{'s' if n > 1 else ''})" if n else ""
        return f"{_data_where(loaded, Path(ref.value))}: {e}{more}"


def _data_where(loaded: LoadedRecipe, path: Path, field: str = "data_files") -> str:
    """The JSON path of `field` of the data config reading `path`, in the shape the user wrote."""
    for i, dc in enumerate(loaded.recipe.data_configs):
        files = getattr(dc.load_dataset_config, "data_files", None)
        if isinstance(files, str) and resolve_path(loaded, files) == path:
            return data_config_path(loaded, i, field)
    return field


def _eval_size_where(loaded: LoadedRecipe) -> str:
    for name, p in loaded.recipe.passes.items():
        if isinstance(p, FinetunePass):
            key = "eval_dataset_size" if p.eval_dataset_size is not None else "train_data_config"
            return loaded.where("passes", name, key)
    return "evaluate"


def _check_buildable(graph) -> Iterator[str]:
    """A model the ONNX builder would build wrong or not at all, named before the fine-tune spends its time
    (models/onnx_builder_refusals.py; build_onnx checks the model itself again)."""
    if "build_onnx" not in graph.names():
        return
    build = graph.step("build_onnx")
    first = graph.step("finetune") if "finetune" in graph.names() else build  # the step reading the input model
    source = first.inputs.get("model")
    if source is None or source.kind != "path":
        return  # a hub model: the builder reads it
    try:
        folder = resolve_hf_folder(Path(source.value))
    except InvalidInput:
        return  # not a model folder: checks.py names it
    try:
        refuse_from_config_json(folder, build.params["precision"], build.params["int4_block_size"])
    except InvalidInput as e:
        yield str(e)


def _check_targets(loaded: LoadedRecipe, graph) -> Iterator[str]:
    if "finetune" not in graph.names():
        return
    step = graph.step("finetune")
    model = step.inputs.get("model")
    targets = [t.strip() for t in str(step.params.get("target_modules") or "").split(",") if t.strip()]
    if not targets or model is None or model.kind != "path":
        return  # every linear layer, or a model not on this machine: the finetune step checks it
    try:
        folder = resolve_hf_folder(Path(model.value))
    except InvalidInput:
        return  # not a model folder: checks.py names it
    modules = module_names(folder)
    if modules is None:
        return  # pytorch_model.bin weights: names not readable without loading them
    missing = unknown_targets(targets, modules)
    if missing:
        name = next(n for n, p in loaded.recipe.passes.items() if isinstance(p, FinetunePass))
        leaves = sorted({n.split(".")[-2] for n in tensor_names(folder) or [] if "." in n})
        yield (f"{loaded.where('passes', name, 'target_modules')}: '{missing[0]}' names no module of the model "
               f"({model.value}); its module names: {', '.join(leaves)}")
