"""Each step's Params is the one definition: the component YAML, the recipe schema and the argv agree with it."""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing

import pytest

from slmforge.contract.params import optional, value_type
from slmforge.contract.render import load_component_spec
from slmforge.recipe import passes
from slmforge.recipe.data_config import PreProcessConfig
from slmforge.training.args import TrainArgs

STEPS = ["load_data", "finetune", "merge", "build_onnx", "evaluate", "register"]
AML_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _params(step: str) -> type:
    return importlib.import_module(f"slmforge.steps.{step}").Params


@pytest.mark.parametrize("step", STEPS)
def test_component_yaml_matches_params(step):
    """Names, types, defaults, enums and optional of every input, the outputs, and a `--name` per field
    in the command (inside a `$[[...]]` block exactly when it may be left out)."""
    spec, params = load_component_spec(step), _params(step)
    fields = {f.name: f for f in dataclasses.fields(params)}
    # an output's component name, when it is not the option's (--output ${{outputs.model}})
    outputs = {n: f.metadata["output"] if isinstance(f.metadata["output"], str) else n
               for n, f in fields.items() if f.metadata["output"]}
    assert set(spec.outputs) == set(outputs.values())
    assert set(spec.inputs) == set(fields) - set(outputs)
    for name, f in fields.items():
        declared = spec.outputs[outputs[name]] if name in outputs else spec.inputs[name]
        meta = f.metadata
        where = f"{step}.yml {name}"
        assert declared["type"] == (meta["asset"] or AML_TYPES[value_type(params, name)]), where
        ref = f"outputs.{outputs[name]}" if name in outputs else f"inputs.{name}"
        option = f"--{name} ${{{{{ref}}}}}"
        assert option in spec.command, where
        in_block = re.search(r"\$\[\[" + re.escape(option) + r"\]\]", spec.command) is not None
        assert in_block == (optional(f) and name not in outputs), where  # an output always has a path
        if name in outputs:
            continue
        assert bool(declared.get("optional", False)) == optional(f), where
        if f.default in (dataclasses.MISSING, None):
            assert "default" not in declared, where
        else:
            assert declared["default"] == f.default and type(declared["default"]) is type(f.default), where
        choices = meta["choices"] or ()
        if choices and isinstance(choices[0], str):  # Azure ML enums are strings
            assert tuple(declared.get("enum", ())) == choices, where
        else:
            assert "enum" not in declared, where


def _literal(annotation) -> tuple:
    args = typing.get_args(annotation)
    out = []
    for a in args or (annotation,):
        if typing.get_origin(a) is typing.Literal:
            out += typing.get_args(a)
        elif a is type(None):
            continue
        elif typing.get_origin(annotation) is typing.Literal:
            out.append(a)
    return tuple(out)


def _bounds(info) -> dict:
    return {k: getattr(m, k) for m in info.metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)}


def test_recipe_training_args_are_the_finetune_step_s():
    """The recipe's training_args are generated from training/args.py: same names, defaults, allowed
    values and bounds; the others are the recipe-side names and the HF names slmforge ignores or refuses
    (training/hf_args.py)."""
    from slmforge.training import hf_args

    recipe = passes.TrainingArgs.model_fields
    step = {f.name: f for f in dataclasses.fields(TrainArgs)}
    others = set(hf_args.RECIPE_SIDE) | {n for n, r in hf_args.TABLE.items() if r.kind != hf_args.HONOURED}
    assert set(recipe) - set(step) == others
    assert set(step) <= set(_params("finetune").__dataclass_fields__)
    for name, f in step.items():
        info = recipe[name]
        assert _literal(info.annotation) == (f.metadata["choices"] or ()), name
        assert _bounds(info) == {k: f.metadata[k] for k in ("ge", "gt", "le", "lt") if f.metadata.get(k) is not None}, name
        if name != "eval_strategy":  # the recipe's is None until given: it may be spelt evaluation_strategy
            assert info.default == f.default, name


# (recipe model, recipe key) -> (step, parameter): what recipe/graph.py passes on.
RECIPE_TO_STEP = {
    (passes.FinetunePass, "r"): ("finetune", "r"),
    (passes.FinetunePass, "alpha"): ("finetune", "alpha"),
    (passes.FinetunePass, "lora_dropout"): ("finetune", "lora_dropout"),
    (passes.FinetunePass, "quant_type"): ("finetune", "quant_type"),
    (passes.FinetunePass, "double_quant"): ("finetune", "double_quant"),
    (passes.FinetunePass, "compute_dtype"): ("finetune", "compute_dtype"),
    (passes.FinetunePass, "torch_dtype"): ("finetune", "torch_dtype"),
    (passes.FINETUNE_PASSES["LoHa"], "rank_dropout"): ("finetune", "rank_dropout"),
    (passes.FINETUNE_PASSES["LoHa"], "module_dropout"): ("finetune", "module_dropout"),
    (passes.FINETUNE_PASSES["LoKr"], "decompose_both"): ("finetune", "decompose_both"),
    (passes.FINETUNE_PASSES["LoKr"], "decompose_factor"): ("finetune", "decompose_factor"),
    (passes.MergePass, "torch_dtype"): ("merge", "torch_dtype"),
    (passes.ModelBuilderPass, "precision"): ("build_onnx", "precision"),
    (passes.ModelBuilderPass, "execution_provider"): ("build_onnx", "execution_provider"),
    (passes.ModelBuilderPass, "int4_block_size"): ("build_onnx", "int4_block_size"),
    (passes.ModelBuilderPass, "int4_accuracy_level"): ("build_onnx", "int4_accuracy_level"),
    (passes.ModelBuilderPass, "int4_algo_config"): ("build_onnx", "int4_algo_config"),
    (passes.ModelBuilderPass, "int4_is_symmetric"): ("build_onnx", "int4_is_symmetric"),
    (passes.ModelBuilderPass, "max_accuracy_drop"): ("build_onnx", "max_accuracy_drop"),
    (PreProcessConfig, "strategy"): ("load_data", "corpus_strategy"),
    (PreProcessConfig, "max_seq_len"): ("load_data", "source_max_len"),
    (PreProcessConfig, "loss_on"): ("load_data", "loss_on"),
    (PreProcessConfig, "pad_to_max_len"): ("load_data", "pad_to_max_len"),
}


@pytest.mark.parametrize("key", sorted(RECIPE_TO_STEP, key=lambda k: (k[0].__name__, k[1])),
                         ids=lambda k: f"{k[0].__name__}.{k[1]}")
def test_recipe_keys_fit_the_step_params(key):
    """Every value the recipe accepts is one the step accepts (Olive's aliases as recipe/passes.py
    maps them), within the step's bounds, and a recipe default is the step's."""
    model, name = key
    step, param = RECIPE_TO_STEP[key]
    f = _params(step).__dataclass_fields__[param]
    info = model.model_fields[name]
    alias = passes.dtype_name if name.endswith("dtype") else (lambda v: v)  # fp16 -> float16
    allowed = {alias(v) for v in _literal(info.annotation)}
    if f.metadata["choices"]:
        assert allowed and allowed <= set(f.metadata["choices"]), (allowed, f.metadata["choices"])
    step_bounds = {k: f.metadata[k] for k in ("ge", "gt", "le", "lt") if f.metadata.get(k) is not None}
    recipe_bounds = _bounds(info)
    if (model.__name__, name) == ("PreProcessConfig", "max_seq_len"):
        step_bounds = {}  # recipe/limits.py: at least the template's prompt and answer (16+), beyond the step's 2
    for k, v in step_bounds.items():  # the recipe is at least as strict as the step
        assert k in recipe_bounds and (recipe_bounds[k] >= v if k in ("ge", "gt") else recipe_bounds[k] <= v), \
            (k, recipe_bounds, step_bounds)
    if (model.__name__, name) != ("ModelBuilderPass", "execution_provider"):  # None: from the engine's providers
        assert alias(info.default) == f.default, (info.default, f.default)


# One bad argv per step, each a different kind: a missing required option, an unknown option, a
# value of the wrong type, a value not allowed, a bound.
BAD_ARGV = {
    "load_data": (["--data", "d.jsonl", "--spec", "s.json"], "the following arguments are required: --dataset"),
    "finetune": (["--dataset", "ds", "--adapter", "a", "--r", "eight"], "argument --r: invalid int value: 'eight'"),
    "merge": (["--adapter", "a", "--output", "o", "--torch_dtype", "int8"], "torch_dtype 'int8' is not one of"),
    "build_onnx": (["--output", "o", "--int4_block_size", "48"], "int4_block_size 48 is not one of"),
    "evaluate": (["--dataset", "d", "--metrics", "m", "--max_new_tokens", "0"], "max_new_tokens must be at least 1"),
    "register": (["--model", "m", "--name", "n", "--registration", "r", "--colour", "red"],
                 "unrecognized arguments: --colour red"),
}


@pytest.mark.parametrize("step", STEPS)
def test_bad_argv_is_one_line_and_exit_2(step, tmp_path, monkeypatch):
    """Run as Azure ML runs it (`python -m slmforge.steps.X`): one line naming the step and the cause,
    exit 2, nothing written."""
    import subprocess
    import sys

    argv, expected = BAD_ARGV[step]
    monkeypatch.chdir(tmp_path)
    done = subprocess.run([sys.executable, "-m", f"slmforge.steps.{step}", *argv], capture_output=True, text=True,
                          timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"slmforge {step}: error: ") and expected in lines[0], lines
    assert not list(tmp_path.iterdir())


def test_run_checks_values_like_the_argv():
    """A caller of run() gets the same one-line errors as the command line (one validation)."""
    from slmforge.errors import InvalidInput
    from slmforge.steps import finetune, load_data

    with pytest.raises(InvalidInput, match="optim 'adafactor' is not one of"):
        finetune.run(dataset="ds", adapter="a", optim="adafactor")
    with pytest.raises(InvalidInput, match="unknown parameter 'max_step'"):
        finetune.run(dataset="ds", adapter="a", max_step=3)
    with pytest.raises(InvalidInput, match="source_max_len: expected int, got '64'"):
        load_data.run(data="d", spec="s", dataset="o", source_max_len="64")
    with pytest.raises(InvalidInput, match="give either eval_data or eval_dataset_size"):
        load_data.run(data="d", spec="s", dataset="o", eval_data="e", eval_dataset_size=0.2)
