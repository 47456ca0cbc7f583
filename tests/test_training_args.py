"""Every Hugging Face TrainingArguments name is known to a recipe (honoured, ignored and named, or refused
by name), and the loop honours what changes training: fractional steps, load_best_model_at_end,
save_total_limit, bf16 / fp16, and a base loaded in bfloat16 (issue 19 #2, #6)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from slmforge.cli import main
from slmforge.errors import InvalidInput
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loader import load_recipe
from slmforge.steps import finetune
from slmforge.training import hf_args
from slmforge.training.args import TrainArgs, every

from lora_adapter import tone_dataset

RECIPES = Path(__file__).parent / "recipes"
FAST = dict(r=8, alpha=16, learning_rate=3e-3, per_device_train_batch_size=4, lr_scheduler_type="constant",
            progress=False)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# --------------------------------------------------------------------------- the table


def test_the_table_is_the_installed_transformers_training_arguments():
    """Fails when transformers adds or drops a field: the committed list (hf_args.CURRENT) must be moved
    with it, and the new name classed in the table."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
    from transformers.training_args import TrainingArguments

    from slmforge.training.tracking import REPORT_TO

    installed = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    assert set(hf_args.CURRENT) == installed, (sorted(installed - set(hf_args.CURRENT)),
                                               sorted(set(hf_args.CURRENT) - installed))
    assert not set(hf_args.OLDER) & installed  # a name transformers brought back moves to CURRENT
    assert set(hf_args.TABLE) == set(hf_args.CURRENT) | set(hf_args.OLDER)  # each name classed once
    honoured = {n for n, r in hf_args.TABLE.items() if r.kind == hf_args.HONOURED}
    assert honoured | set(hf_args.SLMFORGE_OWN) == set(TrainArgs.__dataclass_fields__) | set(hf_args.RECIPE_SIDE)
    assert not set(hf_args.SLMFORGE_OWN) & installed
    assert set(REPORT_TO) < set(INTEGRATION_TO_CALLBACK) | {"all", "none"}  # HF's names, the ones honoured


# --------------------------------------------------------------------------- recipes


@pytest.fixture()
def recipe_dir(tmp_path, seed_data, phi3_stand_in_dir) -> Path:
    shutil.copy(RECIPES / "cookbook-local.json", tmp_path / "olive-config.json")
    shutil.copytree(phi3_stand_in_dir, tmp_path / "model-cache" / "microsoft" / "phi-3-mini")
    (tmp_path / "dataset").mkdir()
    shutil.copy(seed_data, tmp_path / "dataset" / "dataset-classification.json")
    return tmp_path


def _with_training_args(folder: Path, drop: tuple = (), **args) -> Path:
    path = folder / "olive-config.json"
    recipe = json.loads(path.read_text())
    targs = recipe["passes"]["lora"]["config"]["training_args"]
    targs.update(args)
    for key in drop:
        del targs[key]
    path.write_text(json.dumps(recipe, indent=2))
    return path


OLIVE_ARGS = dict(load_best_model_at_end=True, output_dir="models/out", overwrite_output_dir=True,
                  logging_dir="logs", report_to=["mlflow", "tensorboard"], resume_from_checkpoint=True, bf16=True,
                  logging_steps=50.0, save_strategy="steps", save_total_limit=3, dataloader_num_workers=4,
                  push_to_hub=False, extra_args={"metric_for_best_model": "eval_loss", "greater_is_better": False})


def test_olive_training_args_validate_and_the_ignored_are_named(recipe_dir, capsys):
    path = _with_training_args(recipe_dir, **OLIVE_ARGS)  # beside the recipe's evaluation_strategy: steps
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    where = "passes.lora.config.training_args"
    for key in ("output_dir", "overwrite_output_dir", "logging_dir", "save_strategy", "dataloader_num_workers",
                "push_to_hub"):
        assert f"  note: {where}.{key}: ignored: {hf_args.TABLE[key].reason}\n" in out, key
    assert f"  note: {where}.report_to: accepted: mlflow (the default), azure_ml, tensorboard" in out
    assert f"  note: {where}.resume_from_checkpoint: accepted:" in out
    assert f"{where}.load_best_model_at_end" not in out and f"{where}.logging_steps" not in out  # honoured

    params = build_graph(load_recipe(path)).step("finetune").params
    assert params["load_best_model_at_end"] is True and params["bf16"] is True and params["save_total_limit"] == 3
    assert params["logging_steps"] == 50 and params["eval_strategy"] == "steps"
    assert params["metric_for_best_model"] == "eval_loss" and params["greater_is_better"] is False
    assert not set(params) & {"output_dir", "report_to", "resume_from_checkpoint", "push_to_hub"}
    finetune.Params(**{k: v for k, v in params.items() if k != "model_id"}, dataset="d", adapter="a").check()


def test_transformers_5_spellings_map_onto_the_step(recipe_dir):
    path = _with_training_args(recipe_dir, drop=("gradient_checkpointing",), activation_checkpointing=True,
                               train_sampling_strategy="random", group_by_length=False, eval_steps=0.25)
    params = build_graph(load_recipe(path)).step("finetune").params
    assert params["gradient_checkpointing"] is True and params["group_by_length"] is False
    assert params["eval_steps"] == 0.25
    path = _with_training_args(recipe_dir, gradient_checkpointing=True, activation_checkpointing=False)
    with pytest.raises(InvalidInput, match="'gradient_checkpointing' and 'activation_checkpointing' disagree"):
        load_recipe(path)


def test_half_precision_torch_dtype_reaches_the_step(recipe_dir):
    """Olive's torch_dtype float16 / bfloat16 (refused before) and QLoRA's compute_dtype bfloat16."""
    path = recipe_dir / "olive-config.json"
    recipe = json.loads(path.read_text())
    recipe["passes"]["lora"]["type"] = "QLoRA"
    recipe["passes"]["lora"]["config"].update(torch_dtype="bf16", compute_dtype="bfloat16")
    path.write_text(json.dumps(recipe))
    params = build_graph(load_recipe(path)).step("finetune").params
    assert params["torch_dtype"] == "bfloat16" and params["compute_dtype"] == "bfloat16"
    recipe["passes"]["lora"]["config"]["torch_dtype"] = "float16"
    path.write_text(json.dumps(recipe))
    assert build_graph(load_recipe(path)).step("finetune").params["torch_dtype"] == "float16"


@pytest.mark.parametrize("args,expected", [
    ({"push_to_hub": True}, "training_args.push_to_hub: slmforge cannot honour push_to_hub=True: slmforge does not "
                            "push to the Hugging Face Hub"),
    ({"hub_model_id": "me/tuned"}, "training_args.hub_model_id: slmforge cannot honour hub_model_id='me/tuned'"),
    ({"deepspeed": "ds_config.json"}, "training_args.deepspeed: slmforge cannot honour deepspeed='ds_config.json': "
                                      "slmforge trains with DDP"),
    ({"fsdp": "full_shard"}, "training_args.fsdp: slmforge cannot honour fsdp='full_shard'"),
    ({"resume_from_checkpoint": "out/checkpoint-500"}, "training_args.resume_from_checkpoint: slmforge cannot "
                                                       "resume from 'out/checkpoint-500'"),
    ({"train_sampling_strategy": "sequential"}, "training_args.train_sampling_strategy: 'sequential' is not "
                                                "supported by slmforge yet"),
    ({"report_to": "mlfow"}, "training_args.report_to: report_to 'mlfow' is not one slmforge honours; expected one "
                             "of mlflow, tensorboard, azure_ml, none, all"),
    ({"report_to": ["mlflow", "wandb"]}, "training_args.report_to: report_to 'wandb' is not one slmforge honours"),
    ({"logging_steps": 50.5}, "training_args: logging_steps 50.5 is neither a share of the run"),
    ({"bf16": True, "fp16": True}, "training_args: bf16 and fp16 are both true; give one"),
    ({"load_best_model_at_end": True, "evaluation_strategy": "no"},
     "training_args: load_best_model_at_end needs an evaluation"),
    # Typos stay errors, and the hint is a real name (the HF names are all known now).
    ({"learning_rat": 1e-3}, "training_args.learning_rat: unknown key 'learning_rat'; did you mean 'learning_rate'?"),
    ({"evaluation_strategi": "steps"}, "training_args.evaluation_strategi: unknown key 'evaluation_strategi'; "
                                       "did you mean 'evaluation_strategy'?"),
    ({"load_best_model": True}, "training_args.load_best_model: unknown key 'load_best_model'; did you mean "
                                "'load_best_model_at_end'?"),
])
def test_refusals_and_typos_are_one_line_naming_the_key(recipe_dir, capsys, args, expected):
    path = _with_training_args(recipe_dir, **args)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: passes.lora.config.{expected}" in err[0], err


def test_fractional_steps_are_a_share_of_the_run():
    assert [every(v, 40) for v in (0.1, 0.25, 0.01, 1, 50.0, 7)] == [4, 10, 1, 1, 50, 7]
    assert every(0.1, 45) == 5  # ceil(4.5), as transformers reads it


# --------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_model_dir, seed_data) -> Path:
    return tone_dataset(tmp_path_factory.mktemp("ta-data"), tiny_model_dir, seed_data, max_samples=120,
                        max_seq_len=128)


def _train(tmp_path, name, tiny_model_dir, dataset, **kw) -> tuple[Path, dict]:
    out = tmp_path / name
    m = finetune.run(model=tiny_model_dir, dataset=dataset, adapter=out, checkpoints=tmp_path / f"{name}-ck",
                     **{**FAST, **kw})
    return out, m


def test_load_best_model_writes_the_best_evaluated_adapter(tmp_path, tiny_model_dir, dataset):
    """greater_is_better on the loss makes an early step the best: the adapter written is that step's
    (byte for byte the adapter of a run stopped there; a constant learning rate makes them one run),
    the manifest names the step, fractional steps are resolved, and save_total_limit keeps N checkpoints."""
    out, m = _train(tmp_path, "best", tiny_model_dir, dataset, max_steps=8, logging_steps=0.5, eval_steps=0.25,
                    eval_strategy="steps", save_steps=1, save_total_limit=3, load_best_model_at_end=True,
                    metric_for_best_model="eval_loss", greater_is_better=True)
    c = m["metrics"]
    assert [e["step"] for e in c["loss_history"]] == [4, 8]  # 0.5 of 8 steps
    assert [e["step"] for e in c["eval_history"]] == [2, 4, 6, 8]  # 0.25 of 8 steps, and the final one
    worst = max(c["eval_history"], key=lambda e: e["loss"])
    assert c["best_step"] == worst["step"] < 8 and c["best_eval_loss"] == c["eval_loss"] == worst["loss"]
    stopped, _ = _train(tmp_path, "stopped", tiny_model_dir, dataset, max_steps=c["best_step"])
    weights = "adapter_model.safetensors"
    assert (out / weights).read_bytes() == (stopped / weights).read_bytes()

    kept = sorted(p.name for p in (tmp_path / "best-ck").glob("step-*"))
    assert kept == ["step-00000005", "step-00000006", "step-00000007"]  # saved at 1..7, three kept
    assert all((tmp_path / "best-ck" / k / "best_adapter.safetensors").is_file() for k in kept)

    # The default: the lowest eval loss wins.
    _, low = _train(tmp_path, "lowest", tiny_model_dir, dataset, max_steps=8, eval_steps=2, eval_strategy="steps",
                    load_best_model_at_end=True)
    best = min(low["metrics"]["eval_history"], key=lambda e: e["loss"])
    assert low["metrics"]["best_step"] == best["step"] and low["metrics"]["eval_loss"] == best["loss"]


def test_bf16_base_trains_and_merges_under_the_check(tmp_path, tiny_model_dir, dataset):
    """A base loaded in bfloat16, trained under bf16 autocast: the adapter is float32 (peft keeps it so),
    and merged into the float32 base it passes the merge step's logit check."""
    from safetensors.torch import load_file

    from slmforge.steps import merge

    out, m = _train(tmp_path, "bf16", tiny_model_dir, dataset, max_steps=6, torch_dtype="bfloat16", bf16=True,
                    logging_steps=1)
    losses = [e["loss"] for e in m["metrics"]["loss_history"]]
    assert m["params"]["torch_dtype"] == "bfloat16" and m["params"]["bf16"] is True
    assert losses[-1] < losses[0], losses
    tensors = load_file(out / "adapter_model.safetensors")
    assert {str(t.dtype) for t in tensors.values()} == {"torch.float32"}
    assert any(float(t.abs().max()) > 0 for k, t in tensors.items() if "lora_B" in k)  # it trained
    check = merge.run(model=str(tiny_model_dir), adapter=str(out), output=str(tmp_path / "merged"))
    assert check["max_abs_diff"] <= check["bound"]


def test_fp16_trains_with_a_gradient_scaler(tmp_path, tiny_model_dir, dataset):
    out, m = _train(tmp_path, "fp16", tiny_model_dir, dataset, max_steps=6, torch_dtype="float16", fp16=True,
                    logging_steps=1, save_steps=3)
    losses = [e["loss"] for e in m["metrics"]["loss_history"]]
    assert all(loss == loss and loss < 20 for loss in losses) and losses[-1] < losses[0], losses
    import torch

    blob = torch.load(next((tmp_path / "fp16-ck").glob("step-*")) / "optimizer.pt", weights_only=False)
    assert blob["scaler"]["scale"] > 0  # the scaler's state travels with the checkpoint


def test_a_resumed_run_keeps_the_best_adapter_it_had(tmp_path, tiny_model_dir, dataset):
    """The best adapter travels in the checkpoint: run again on the same checkpoints folder, the step
    resumes after the best evaluation and still writes that adapter, byte for byte."""
    kw = dict(max_steps=8, eval_steps=2, eval_strategy="steps", save_steps=4, load_best_model_at_end=True,
              greater_is_better=True)
    first, m1 = _train(tmp_path, "run", tiny_model_dir, dataset, **kw)
    again = tmp_path / "again"
    m2 = finetune.run(model=tiny_model_dir, dataset=dataset, adapter=again, checkpoints=tmp_path / "run-ck",
                      **{**FAST, **kw})
    assert m2["metrics"]["resumed_from_step"] == 4 and m1["metrics"]["best_step"] < 4
    assert m2["metrics"]["best_step"] == m1["metrics"]["best_step"]
    weights = "adapter_model.safetensors"
    assert (again / weights).read_bytes() == (first / weights).read_bytes()
