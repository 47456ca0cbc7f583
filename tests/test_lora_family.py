"""The LoRA family beyond LoRA (issue 12 #2): DoRA, LoHa and LoKr train on the tiny model, load in peft,
merge under the same check as LoRA (which fails on a broken adapter), and build int4 from the merge."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from slmforge.contract import manifest
from slmforge.errors import StepFailed
from slmforge.steps import build_onnx, finetune, merge

from lora_adapter import tone_dataset

PEFT_CONFIG = {"dora": "LoraConfig", "loha": "LoHaConfig", "lokr": "LoKrConfig"}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_model_dir, seed_data) -> Path:
    return tone_dataset(tmp_path_factory.mktemp("family-data"), tiny_model_dir, seed_data, max_samples=160,
                        max_seq_len=96)


@pytest.fixture(scope="module", params=sorted(PEFT_CONFIG))
def trained(request, tmp_path_factory, tiny_model_dir, dataset):
    method = request.param
    root = tmp_path_factory.mktemp(method)
    extra = {"rank_dropout": 0.0, "module_dropout": 0.0} if method in ("loha", "lokr") else {}
    m = finetune.run(model=tiny_model_dir, dataset=dataset, adapter=root / "adapter", checkpoints=root / "ck",
                     method=method, r=8, alpha=16, lora_dropout=0.0, learning_rate=3e-3, max_steps=16,
                     per_device_train_batch_size=8, logging_steps=4, save_steps=100, seed=0, progress=False, **extra)
    return method, root, m


def test_each_method_trains_and_its_adapter_loads_in_peft(trained, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    method, root, m = trained
    losses = [h["loss"] for h in m["metrics"]["loss_history"]]
    assert losses[-1] < losses[0], losses
    assert m["params"]["method"] == method and m["metrics"]["trainable_params"] > 0
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, root / "adapter")
    config = model.peft_config["default"]
    assert type(config).__name__ == PEFT_CONFIG[method]
    assert getattr(config, "use_dora", False) == (method == "dora")


def test_each_method_merges_under_the_check_and_builds_int4(trained, tiny_model_dir):
    method, root, _ = trained
    merged = root / "merged"
    merge.run(adapter=root / "adapter", output=merged, model=tiny_model_dir)
    check = manifest.read_manifest(merged)["metrics"]["check"]
    assert check["max_abs_diff"] <= check["bound"], check
    built = build_onnx.run(output=root / "onnx", model=merged, precision="int4")  # raises when its check fails
    assert manifest.is_finished(root / "onnx") and built["cosine_mean"] >= built["bounds"]["cosine_mean"]


def test_the_merge_check_fails_on_a_broken_adapter_of_each_method(trained, tiny_model_dir, tmp_path):
    """A merge whose weights differ from the adapter's own forward must fail: here the saved adapter is
    scaled after training, and the check compares against the model the intact adapter defines."""
    from slmforge.models import logit_check, torch_model

    method, root, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in (root / "adapter").iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(broken / "adapter_model.safetensors")
    save_file({k: v * 3 for k, v in weights.items()}, broken / "adapter_model.safetensors")
    reference_model = torch_model.TorchBackend(str(tiny_model_dir), adapter=root / "adapter")
    token_ids = [reference_model.encode(p) for p in logit_check.CHECK_PROMPTS]
    reference = torch_model.all_logits(reference_model.model, token_ids)
    with pytest.raises(StepFailed, match="does not reproduce the adapter model"):
        merge.merge_into(str(tiny_model_dir), broken, tmp_path / "out", reference=reference)


def test_the_builder_refuses_an_unmerged_dora_loha_or_lokr_adapter_with_one_line(trained, tiny_model_dir, tmp_path, capsys):
    method, root, _ = trained
    rc = build_onnx.main(["--model", str(tiny_model_dir), "--adapter", str(root / "adapter"),
                          "--output", str(tmp_path / "onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"a {method} adapter" in err[0] and "merge it first" in err[0], err
    assert not (tmp_path / "onnx").exists()


# --- the registry (issue 21 #2): one entry per method, every consumer reads it --------------------------------

def test_the_step_the_recipe_and_olive_s_pass_list_read_one_registry():
    """The step's --method choices, the recipe's pass models (their own keys are the entry's parameters, each
    described by the step's help) and Olive's run list are the registry's; a pass type matches in any case."""
    import dataclasses

    from slmforge.recipe import olive_passes, passes
    from slmforge.training.methods import METHODS, PASS_TYPES, SHARED, by_pass_type

    step = {f.name: f for f in dataclasses.fields(finetune.Params)}
    assert step["method"].metadata["choices"] == tuple(METHODS) == ("lora", "qlora", "dora", "loha", "lokr")
    assert tuple(passes.FINETUNE_PASSES) == PASS_TYPES and set(PASS_TYPES) <= set(olive_passes.RUN)
    for m in METHODS.values():
        assert by_pass_type(m.pass_type.upper()) is by_pass_type(m.pass_type.lower()) is m
        model = passes.FINETUNE_PASSES[m.pass_type]
        assert set(model.model_fields) - set(passes.FinetunePass.model_fields) == set(m.params) - set(SHARED)
        assert set(m.params) <= set(step), m.name
        for name in (set(m.params) | set(SHARED)) - {"target_modules"}:
            assert model.model_fields[name].description == step[name].metadata["help"], (m.name, name)
    with pytest.raises(KeyError):
        by_pass_type("LoftQ")


def test_the_recipe_passes_each_method_its_own_step_parameters():
    from slmforge.recipe.passes import FINETUNE_PASSES, finetune_step_params

    def given(kind, **keys):
        return finetune_step_params(FINETUNE_PASSES[kind](type=kind, train_data_config="d", **keys))

    assert given("LoRA", compute_dtype="bf16") == {"method": "lora", "r": 64, "alpha": 16, "lora_dropout": 0.05,
                                                   "torch_dtype": "float32"}
    assert given("QLoRA", compute_dtype="bf16", target_modules=["q_proj", "v_proj"]) == {
        "method": "qlora", "r": 64, "alpha": 16, "lora_dropout": 0.05, "target_modules": "q_proj,v_proj",
        "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16", "torch_dtype": "float32"}
    lokr = given("LoKr", decompose_factor=4, rank_dropout=0.1)
    assert {k: lokr[k] for k in ("method", "rank_dropout", "module_dropout", "decompose_both", "decompose_factor")} \
        == {"method": "lokr", "rank_dropout": 0.1, "module_dropout": 0.0, "decompose_both": False,
            "decompose_factor": 4} and "quant_type" not in lokr


def test_decompose_factor_s_rule_is_one_rule_for_the_step_and_the_recipe():
    from pydantic import ValidationError

    from slmforge.contract.params import make
    from slmforge.errors import InvalidInput
    from slmforge.recipe.passes import FINETUNE_PASSES

    message = "decompose_factor is -1 (automatic) or at least 1"
    with pytest.raises(InvalidInput, match=r"^decompose_factor is -1 \(automatic\) or at least 1$"):
        make(finetune.Params, {"dataset": "d", "adapter": "a", "method": "lokr", "decompose_factor": 0})
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FINETUNE_PASSES["LoKr"](type="LoKr", train_data_config="d", decompose_factor=0)


def test_a_new_entry_gives_its_recipe_pass_with_the_step_s_bounds_its_rules_and_its_refusals():
    """What a sixth method takes on the recipe side: its entry alone (its parameters are the step's fields)."""
    from pydantic import ValidationError

    from slmforge.recipe.passes import FinetunePass, pass_model
    from slmforge.training.methods import Method, decompose_factor_problem

    entry = Method(name="kron", pass_type="Kron", summary="a trial member", peft_config=lambda spec: None,
                   params=("rank_dropout", "decompose_factor"), refuses={"alpha": "the rank sets the scale"},
                   rules={"decompose_factor": decompose_factor_problem})
    model = pass_model(entry)
    made = model(type="Kron", train_data_config="d", decompose_factor=3)
    assert isinstance(made, FinetunePass) and made.rank_dropout == 0.0 and made.decompose_factor == 3
    assert model.__name__ == "KronPass" and "decompose_both" not in model.model_fields
    for keys, words in (({"alpha": 8}, "Kron has no 'alpha'; the rank sets the scale"),
                        ({"decompose_factor": 0}, "decompose_factor is -1"),
                        ({"rank_dropout": 1.0}, "less than 1"), ({"type": "LoRA"}, "Kron")):
        with pytest.raises(ValidationError, match=words):
            model(**{"type": "Kron", "train_data_config": "d", **keys})


def test_the_registry_says_what_the_onnx_side_reads_and_why_not():
    from slmforge.training.methods import METHODS

    assert [m.name for m in METHODS.values() if m.builder_reads_adapter] == ["lora", "qlora"]
    assert [m.name for m in METHODS.values() if m.genai_adapter] == ["lora", "qlora"]
    assert all("build it merged" in m.genai_adapter_why for m in METHODS.values() if not m.genai_adapter)


def test_only_lora_runs_its_forward_under_compute_dtype_as_the_registry_says():
    from slmforge.contract.params import make
    from slmforge.errors import InvalidInput
    from slmforge.training.methods import METHODS

    def params(method, **more):
        return make(finetune.Params, {"dataset": "d", "adapter": "a", "method": method, **more})

    assert [m for m in METHODS if params(m, compute_dtype="bfloat16").autocast_dtype()] == ["lora"]
    with pytest.raises(InvalidInput, match="two autocast dtypes"):
        params("lora", compute_dtype="float16", bf16=True)
    assert params("dora", compute_dtype="float16", bf16=True).autocast_dtype() == "bfloat16"
