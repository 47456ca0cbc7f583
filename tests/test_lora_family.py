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
