"""Each step's Params is the one definition: the component YAML is generated from it, the recipe schema and
the argv agree with it, constructing it checks it."""

from __future__ import annotations

import dataclasses
import importlib
import json
import typing

import pytest

from slmforge.contract.component_yaml import component_text
from slmforge.contract.params import StepParams, make, param
from slmforge.contract.render import bind, load_component_spec, render_command
from slmforge.contract.step import StepSpec
from slmforge.recipe import passes
from slmforge.recipe.data_config import PreProcessConfig
from slmforge.resources import components_dir, environments_dir
from slmforge.steps._cli import parser_for
from slmforge.steps.catalog import STEPS as STEPS_BY_NAME
from slmforge.steps.components import differences
from slmforge.training.args import TrainArgs

STEPS = ["load_data", "finetune", "merge", "build_onnx", "export_adapter", "evaluate", "register"]


def _params(step: str) -> type:
    return importlib.import_module(f"slmforge.steps.{step}").Params


@pytest.mark.parametrize("step", STEPS)
def test_committed_component_is_the_generated_one(step):
    """components/<step>.yml is exactly what the generator writes from the step's SPEC and Params."""
    diffs = differences(components_dir().resolve())
    assert step + ".yml" not in diffs, "run: make components\n" + diffs[step + ".yml"]
    assert set(STEPS) == set(STEPS_BY_NAME)


def test_the_check_names_a_difference(tmp_path):
    """`--check` fails, with a diff, on a component edited by hand or missing, and on a stray one."""
    from slmforge.steps import components

    assert components.main(["--write", "--dir", str(tmp_path)]) == 0
    assert differences(tmp_path) == {}
    path = tmp_path / "merge.yml"
    path.write_text(path.read_text().replace("default: float32", "default: float16"))
    (tmp_path / "evaluate.yml").unlink()
    (tmp_path / "quantize.yml").write_text("name: slmforge_quantize\n")
    diffs = differences(tmp_path)
    assert sorted(diffs) == ["evaluate.yml", "merge.yml", "quantize.yml"]
    assert "-    default: float16\n+    default: float32\n" in diffs["merge.yml"]
    assert "no step named 'quantize'" in diffs["quantize.yml"]
    assert components.main(["--check", "--dir", str(tmp_path)]) == 1


@dataclasses.dataclass(kw_only=True)
class _Trial(StepParams):
    """Trial

    A step's Params as a new step would write them: the component follows from these lines alone.
    """

    source: str = param(asset="uri_folder", help="the folder read")
    tag: str | None = param(None, help="a name: tag")
    mode: str = param("no", choices=("no", "yes"), help="switch")
    size: int = param(32, choices=(16, 32), help="block")
    rate: float = param(1e-8, gt=0, help="small")
    out: str = param(asset="custom_model", output="model", help="written")


def test_a_params_class_alone_gives_its_component():
    """Types, optional, defaults, enums (strings only), help as descriptions, the environment named in
    environments/gpu.yml, and the command: `$[[...]]` around what may be left out, outputs last."""
    import yaml

    spec = StepSpec("trial", _Trial, version="3", environment="gpu")
    text = component_text(spec)
    data = yaml.safe_load(text)
    assert data["name"] == "slmforge_trial" and data["version"] == "3" and data["code"] == "../src"
    assert data["inputs"] == {
        "source": {"type": "uri_folder", "description": "the folder read"},
        "tag": {"type": "string", "optional": True, "description": "a name: tag"},
        "mode": {"type": "string", "default": "no", "enum": ["no", "yes"], "description": "switch"},
        "size": {"type": "integer", "default": 32, "description": "block (one of 16, 32)"},
        "rate": {"type": "number", "default": 1e-8, "description": "small"}}
    assert data["outputs"] == {"model": {"type": "custom_model", "description": "written"}}
    gpu = yaml.safe_load((environments_dir() / "gpu.yml").read_text())
    assert data["environment"] == {"image": gpu["image"], "conda_file": "../environments/" + gpu["conda_file"]}
    assert data["command"] == ("python -m slmforge.steps.trial --source ${{inputs.source}} $[[--tag ${{inputs.tag}}]] "
                               "--mode ${{inputs.mode}} --size ${{inputs.size}} --rate ${{inputs.rate}} "
                               "--out ${{outputs.model}}")


@pytest.mark.parametrize("step", STEPS)
def test_generated_component_loads_in_the_sdk(step, tmp_path):
    """The generated text is a command component azure-ai-ml loads and validates, with the Params' names."""
    import shutil

    from azure.ai.ml import load_component

    (tmp_path / "components").mkdir()
    (tmp_path / "src").mkdir()
    shutil.copytree(environments_dir(), tmp_path / "environments")
    path = tmp_path / "components" / f"{step}.yml"
    path.write_text(component_text(STEPS_BY_NAME[step]))
    component = load_component(path)
    assert component._validate().passed
    fields = {f.name: f for f in dataclasses.fields(_params(step))}
    outputs = {f.metadata["output"] if isinstance(f.metadata["output"], str) else n
               for n, f in fields.items() if f.metadata["output"]}
    assert set(component.outputs) == outputs
    assert set(component.inputs) == {n for n, f in fields.items() if not f.metadata["output"]}
    assert component.command.startswith(f"python -m slmforge.steps.{step} ")


# A sample of values per step and the argv the hand-kept components rendered for them (commit e08be62):
# the generated components render the very same argv.
ARGV_BEFORE = {
    "load_data": (
        {"data": "/d/rows.jsonl", "spec": "/w/spec.json", "tokenizer": "/m", "eval_dataset_size": 0.25,
         "pad_to_max_len": True}, {"dataset": "/o/dataset"},
        "--data /d/rows.jsonl --spec /w/spec.json --tokenizer /m --data_format json --split train --strategy "
        "join --max_seq_len 1024 --pad_to_max_len True --use_attention_mask True --loss_on all "
        "--eval_dataset_size 0.25 --data_seed 42 --dataset /o/dataset"),
    "finetune": (
        {"model": "/m", "dataset": "/o/dataset", "method": "qlora", "r": 8, "alpha": 16.0, "save_total_limit": 3,
         "learning_rate": 1e-3}, {"adapter": "/o/adapter", "checkpoints": "/o/ck"},
        "--model /m --dataset /o/dataset --method qlora --r 8 --alpha 16.0 --lora_dropout 0.05 --quant_type nf4 "
        "--double_quant True --compute_dtype float32 --torch_dtype float32 --rank_dropout 0.0 --module_dropout 0.0 "
        "--decompose_both False --decompose_factor -1 --seed 42 --per_device_train_batch_size 8 "
        "--per_device_eval_batch_size 8 --gradient_accumulation_steps 1 --gradient_checkpointing False "
        "--learning_rate 0.001 --lr_scheduler_type linear --warmup_steps 0 --warmup_ratio 0.0 --weight_decay 0.0 "
        "--num_train_epochs 1.0 --max_steps -1 --logging_steps 10.0 --save_steps 500.0 --save_total_limit 3 "
        "--eval_strategy no --load_best_model_at_end False --bf16 False --fp16 False --max_eval_samples 1000 "
        "--group_by_length False --adam_beta1 0.9 --adam_beta2 0.999 --adam_epsilon 1e-08 --max_grad_norm 1.0 "
        "--optim adamw_torch --adapter /o/adapter --checkpoints /o/ck"),
    "merge": (
        {"model_id": "org/model", "adapter": "/o/adapter", "torch_dtype": "float16"}, {"model": "/o/merged"},
        "--model_id org/model --adapter /o/adapter --torch_dtype float16 --output /o/merged"),
    "build_onnx": (
        {"model": "/o/merged", "dataset": "/o/dataset", "max_accuracy_drop": 0.05, "int4_is_symmetric": False},
        {"model": "/o/onnx"},
        "--model /o/merged --precision int4 --execution_provider cpu --int4_block_size 32 --int4_accuracy_level 4 "
        "--int4_algo_config auto --int4_is_symmetric False --dataset /o/dataset --check_max_samples 200 "
        "--check_max_new_tokens 8 --max_accuracy_drop 0.05 --output /o/onnx"),
    "export_adapter": (  # new with issue 22: its first generated command
        {"model": "/o/base", "adapter": "/o/adapter", "source": "/m", "name": "tones", "dataset": "/o/dataset"},
        {"adapter": "/o/exported"},
        "--model /o/base --adapter /o/adapter --source /m --name tones --dataset /o/dataset --check_max_samples 200 "
        "--check_max_new_tokens 8 --output /o/exported"),
    "evaluate": (
        {"model": "/o/onnx", "dataset": "/o/dataset", "label": "onnx"}, {"metrics": "/o/metrics"},
        "--model /o/onnx --dataset /o/dataset --label onnx --max_samples 200 --max_new_tokens 8 --metrics /o/metrics"),
    "register": (
        {"model": "/o/onnx", "name": "tones", "recipe_digest": "abc"}, {"registration": "/o/reg"},
        "--model /o/onnx --name tones --format custom_model --recipe_digest abc --registration /o/reg"),
}


@pytest.mark.parametrize("step", STEPS)
def test_generated_command_renders_the_argv_as_before(step, tmp_path):
    """contract/render.py renders the generated component's command to the argv the hand-kept one gave
    (defaults filled in, unset optional inputs dropped, booleans True/False; a parameter added since
    may add its own `--name value`), and the step parses it."""
    values, outputs, expected = ARGV_BEFORE[step]
    (tmp_path / f"{step}.yml").write_text(component_text(STEPS_BY_NAME[step]))
    spec = load_component_spec(step, tmp_path)
    argv = render_command(spec.command, bind(spec, values, outputs))
    before = set(expected.split()[::2])  # every option takes a value
    kept = [word for option, value in zip(argv[3::2], argv[4::2]) if option in before for word in (option, value)]
    assert argv[:3] == ["python", "-m", f"slmforge.steps.{step}"] and len(argv) % 2 == 1
    assert kept == expected.split()
    parsed = vars(parser_for(_params(step), step, "").parse_args(argv[3:]))
    assert make(_params(step), parsed)  # the argv is one the step accepts


def test_constructing_params_checks_them():
    """Params(...) itself checks types, allowed values, bounds and the rules between fields: no caller
    can skip the check by not calling make()."""
    from slmforge.errors import InvalidInput
    from slmforge.steps import build_onnx, load_data, merge

    with pytest.raises(InvalidInput, match="torch_dtype 'int8' is not one of float32, float16"):
        merge.Params(adapter="a", output="o", torch_dtype="int8")
    with pytest.raises(InvalidInput, match="check_max_new_tokens must be at least 1, got 0"):
        build_onnx.Params(output="o", check_max_new_tokens=0)
    with pytest.raises(InvalidInput, match="int4_accuracy_level: expected int, got '4'"):
        build_onnx.Params(output="o", int4_accuracy_level="4")
    with pytest.raises(InvalidInput, match="give either eval_data or eval_dataset_size, not both"):
        load_data.Params(data="d", spec="s", dataset="o", eval_data="e", eval_dataset_size=0.2)
    with pytest.raises(InvalidInput, match="parameter 'adapter' is required"):
        merge.Params(adapter=None, output="o")
    assert merge.Params(adapter="a", output="o").torch_dtype == "float32"


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
    (PreProcessConfig, "strategy"): ("load_data", "strategy"),
    (PreProcessConfig, "max_seq_len"): ("load_data", "max_seq_len"),
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


# Recipe models whose fields are generated from a step's Params: (model, step, fields from the step, those
# whose default or help the recipe words itself, Olive's other spellings of a choice).
GENERATED = [
    (passes.ModelBuilderPass, "build_onnx", ("precision", "execution_provider", "int4_block_size", "int4_accuracy_level",
                                             "int4_algo_config", "int4_is_symmetric", "max_accuracy_drop"),
     ("execution_provider", "max_accuracy_drop"), {}),
    (passes.MergePass, "merge", ("torch_dtype",), (), {"fp16": "float16", "fp32": "float32"}),
    ("EvaluateConfig", "evaluate", ("max_samples", "max_new_tokens"), (), {}),
]


@pytest.mark.parametrize("model, step, names, own, aliases", GENERATED,
                         ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", None))
def test_recipe_fields_are_generated_from_the_step(model, step, names, own, aliases):
    """The recipe's ModelBuilder, MergeAdapterWeights and evaluate fields carry the step's help, default,
    allowed values (with Olive's aliases) and bounds; `slmforge schema` documents every key of them."""
    from slmforge.commands.schema import recipe_schema_text
    from slmforge.recipe import schema

    model = getattr(schema, model) if isinstance(model, str) else model
    params = _params(step).__dataclass_fields__
    for name in names:
        info, f = model.model_fields[name], params[name]
        if name not in own:
            assert (info.description, info.default) == (f.metadata["help"], f.default), name
        choices = f.metadata["choices"] or ()
        assert set(_literal(info.annotation)) == set(choices) | {a for a, c in aliases.items() if c in choices}, name
        assert _bounds(info) == {k: f.metadata[k] for k in ("ge", "gt", "le", "lt") if f.metadata.get(k) is not None}
    documented = json.loads(recipe_schema_text())["$defs"][model.__name__]["properties"]
    assert [k for k, v in documented.items() if k not in ("type", "config") and "description" not in v] == []


def test_evaluation_defaults_live_in_the_evaluate_step():
    """200 rows and 8 new tokens are written once: the recipe's evaluate block and build_onnx's answer
    gates take them from evaluate's Params."""
    from slmforge.recipe.schema import EvaluateConfig
    from slmforge.steps import build_onnx, evaluate

    ours = evaluate.Params.__dataclass_fields__
    gates = build_onnx.Params.__dataclass_fields__
    assert (ours["max_samples"].default, ours["max_new_tokens"].default) == (200, 8)
    assert (EvaluateConfig().max_samples, EvaluateConfig().max_new_tokens) == (200, 8)
    assert (gates["check_max_samples"].default, gates["check_max_new_tokens"].default) == (200, 8)


# One bad argv per step, each a different kind: a missing required option, an unknown option, a
# value of the wrong type, a value not allowed, a bound.
BAD_ARGV = {
    "load_data": (["--data", "d.jsonl", "--spec", "s.json"], "the following arguments are required: --dataset"),
    "finetune": (["--dataset", "ds", "--adapter", "a", "--r", "eight"], "argument --r: invalid int value: 'eight'"),
    "merge": (["--adapter", "a", "--output", "o", "--torch_dtype", "int8"], "torch_dtype 'int8' is not one of"),
    "build_onnx": (["--output", "o", "--int4_block_size", "48"], "int4_block_size 48 is not one of"),
    "export_adapter": (["--model", "b", "--output", "o"], "the following arguments are required: --adapter"),
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
    with pytest.raises(InvalidInput, match="max_seq_len: expected int, got '64'"):
        load_data.run(data="d", spec="s", dataset="o", max_seq_len="64")
    with pytest.raises(InvalidInput, match="give either eval_data or eval_dataset_size"):
        load_data.run(data="d", spec="s", dataset="o", eval_data="e", eval_dataset_size=0.2)
