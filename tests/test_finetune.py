"""finetune on the tiny model: loss goes down, same seed -> same adapter, SIGKILL + resume -> same adapter,
QLoRA on CPU, every training argument honoured, packed batches equal padded ones, a 2-process torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slmforge.steps import finetune

from lora_adapter import tone_dataset

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
FAST = dict(r=8, alpha=16, learning_rate=3e-3, per_device_train_batch_size=4, logging_steps=5, progress=False)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One thread in-process and in subprocesses alike: comparable runs, and no thread thrashing
    when the test machine's cores are busy."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_model_dir, seed_data) -> Path:
    """240 rows of the seed data, loss on the tone only, 10% held out."""
    return tone_dataset(tmp_path_factory.mktemp("ft-data"), tiny_model_dir, seed_data, max_samples=240,
                        max_seq_len=128)


def train(tmp_path, name, tiny_model_dir, dataset, **kw) -> tuple[Path, dict]:
    args = dict(FAST)
    args.update(kw)
    out = tmp_path / name
    m = finetune.run(model=tiny_model_dir, dataset=dataset, adapter=out, checkpoints=tmp_path / f"{name}-ck", **args)
    return out, m


def step_argv(tiny_model_dir, dataset, adapter, checkpoints, **kw) -> list[str]:
    args = {"model": tiny_model_dir, "dataset": dataset, "adapter": adapter, "checkpoints": checkpoints,
            **{k: v for k, v in FAST.items() if k != "progress"}, **kw}
    return [x for k, v in args.items() for x in (f"--{k}", str(v))]


def test_loss_goes_down_and_the_adapter_loads(tmp_path, tiny_model_dir, dataset, monkeypatch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out, m = train(tmp_path, "adapter", tiny_model_dir, dataset, max_steps=40, eval_strategy="steps", eval_steps=20)
    c = m["metrics"]
    losses = [e["loss"] for e in c["loss_history"]]
    assert [e["step"] for e in c["loss_history"]] == list(range(5, 45, 5))
    assert losses[-1] < losses[0] - 0.5, losses
    assert [e["step"] for e in c["eval_history"]] == [20, 40] and c["eval_loss"] == c["eval_history"][-1]["loss"]
    assert c["eval_history"][-1]["loss"] < c["eval_history"][0]["loss"] + 0.5
    assert c["tokens_per_second"] > 0 and c["peak_rss_mb"] > 0 and c["train_seconds"] > 0 and c["tokens"] > 0
    assert m["params"]["text_template"] == TEMPLATE and m["loss_on"] == "completion"

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny_model_dir.name == "phi3-tiny"
    assert str(tmp_path) not in (out / "adapter_config.json").read_text()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 40, 50, 60]])
    before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, out)
    assert not torch.allclose(tuned(ids).logits, before, atol=1e-4)

    import mlflow

    history = mlflow.MlflowClient().get_metric_history(m["mlflow_run_id"], "loss")
    assert [(h.step, h.value) for h in history] == [(e["step"], e["loss"]) for e in c["loss_history"]]


def test_same_seed_gives_the_same_adapter_bytes_and_losses(tmp_path, tiny_model_dir, dataset):
    runs = [train(tmp_path, name, tiny_model_dir, dataset, max_steps=10, seed=seed, lora_dropout=0.1)
            for name, seed in (("a", 7), ("b", 7), ("c", 8))]
    weights = [(out / "adapter_model.safetensors").read_bytes() for out, _ in runs]
    losses = [m["metrics"]["loss_history"] for _, m in runs]
    assert weights[0] == weights[1] and losses[0] == losses[1]
    assert weights[0] != weights[2] and losses[0] != losses[2]


def test_sigkill_then_restart_resumes_to_the_same_adapter(tmp_path, tiny_model_dir, dataset, capsys):
    steps, save = 60, 5
    # logging every 3 steps, saving every 5: a checkpoint falls inside a logging window
    reference, _ = train(tmp_path, "reference", tiny_model_dir, dataset, max_steps=steps, save_steps=save,
                         logging_steps=3)

    adapter, checkpoints = tmp_path / "killed", tmp_path / "killed-ck"
    argv = [sys.executable, "-m", "slmforge.steps.finetune",
            *step_argv(tiny_model_dir, dataset, adapter, checkpoints, max_steps=steps, save_steps=save,
                       logging_steps=3)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("step-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err  # killed mid-run, not finished
    assert not adapter.exists()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr
    m = json.loads((adapter / "slmforge.json").read_text())
    ref = json.loads((reference / "slmforge.json").read_text())
    assert m["metrics"]["resumed_from_step"] >= save
    weights = "adapter_model.safetensors"
    assert (adapter / weights).read_bytes() == (reference / weights).read_bytes()
    assert m["metrics"]["loss_history"] == ref["metrics"]["loss_history"]

    # checkpoints from other parameters are not resumed from
    capsys.readouterr()
    _, other = train(tmp_path, "other", tiny_model_dir, dataset, max_steps=12, save_steps=save)
    assert other["metrics"]["resumed_from_step"] is None
    finetune.run(model=tiny_model_dir, dataset=dataset, adapter=tmp_path / "again", checkpoints=checkpoints,
                 max_steps=12, **FAST)
    assert "is from a different run" in capsys.readouterr().err


def test_qlora_trains_on_cpu(tmp_path, tiny_model_dir, dataset, capfd):
    out, m = train(tmp_path, "qlora", tiny_model_dir, dataset, method="qlora", max_steps=15,
                   optim="paged_adamw_32bit", quant_type="nf4", double_quant=True)
    losses = [e["loss"] for e in m["metrics"]["loss_history"]]
    assert losses[-1] < losses[0], losses
    assert m["params"]["method"] == "qlora" and (out / "adapter_model.safetensors").is_file()
    err = capfd.readouterr().err
    assert err.count("optim 'paged_adamw_32bit' needs CUDA; using AdamW on CPU") == 1


def test_training_arguments_are_honoured(tmp_path, tiny_model_dir, dataset):
    from slmforge.training.data import read_dataset

    n_train = len(read_dataset(dataset).train)
    _, m = train(tmp_path, "args", tiny_model_dir, dataset, per_device_train_batch_size=8,
                 gradient_accumulation_steps=2, num_train_epochs=1.0, max_steps=-1, logging_steps=1,
                 lr_scheduler_type="cosine", warmup_ratio=0.3, weight_decay=0.01, eval_strategy="epoch",
                 group_by_length=True, gradient_checkpointing=True, max_grad_norm=0.5, optim="adamw_torch_fused")
    c = m["metrics"]
    steps = -(-n_train // 8) // 2  # epochs -> optimizer steps, like the HF Trainer
    assert c["steps"] == steps and [e["step"] for e in c["loss_history"]] == list(range(1, steps + 1))
    lrs = [e["learning_rate"] for e in c["loss_history"]]
    peak = lrs.index(max(lrs))
    assert 0 < peak < steps - 1 and lrs[:peak + 1] == sorted(lrs[:peak + 1]) and lrs[peak:] == sorted(lrs[peak:])[::-1]
    assert max(lrs) == pytest.approx(3e-3)
    assert [e["step"] for e in c["eval_history"]] == [steps]  # one epoch: evaluated once, at the end
    assert m["params"]["gradient_checkpointing"] is True and m["params"]["weight_decay"] == 0.01


@pytest.mark.parametrize("argv,expected", [
    (["--optim", "adafactor"], "optim 'adafactor' is not one of"),
    (["--lr_scheduler_type", "cyclic"], "lr_scheduler_type 'cyclic' is not one of"),
    (["--dataset", "/nonexistent/ds"], "not a load_data dataset folder"),
])
def test_bad_arguments_exit_2(argv, expected, tmp_path, tiny_model_dir, dataset, capsys):
    base = step_argv(tiny_model_dir, dataset, tmp_path / "ad", tmp_path / "ck", max_steps=2)
    rc = finetune.main(base + argv)
    err = capsys.readouterr().err
    assert rc == 2 and expected in err, err
    assert not (tmp_path / "ad").exists()


@pytest.mark.parametrize("loss_on", ["all", "completion"])
def test_packed_batch_gives_the_padded_batch_loss_and_gradients(loss_on, tiny_model_dir, demo_data):
    """Packing examples into rows (position_ids restart per example), the LM head on labelled
    positions only and, with `completion`, the last layer's MLP and o_proj on those positions
    only: the same loss and LoRA gradients as the plain padded batch."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmforge.data.template import Template
    from slmforge.data.tokens import tokenize_rows
    from slmforge.training.data import pack_batch
    from slmforge.training.loss import causal_lm_loss

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [json.loads(line) for line in demo_data.read_text().splitlines()[:12]]
    examples = tokenize_rows(tok, Template(TEMPLATE), rows, loss_on)
    examples[0] = (examples[0][0] * 3, examples[0][1] * 3)  # one long example: the others pack beside it
    batch = pack_batch(examples, tok.pad_token_id)
    assert batch["input_ids"].shape[0] < len(examples)

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False))
    lora = [p for p in model.parameters() if p.requires_grad]
    loss_module = causal_lm_loss(model)
    total, count = loss_module(**batch)
    (total / count).backward()
    loss_module.release()
    ours = [p.grad.clone() for p in lora]
    model.zero_grad()

    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), tok.pad_token_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (e_ids, e_labels) in enumerate(examples):
        ids[i, :len(e_ids)], labels[i, :len(e_ids)], mask[i, :len(e_ids)] = (
            torch.tensor(e_ids), torch.tensor(e_labels), 1)
    padded = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    padded.backward()
    assert count == sum(sum(1 for t in e_labels[1:] if t != -100) for _, e_labels in examples)
    assert (total / count).item() == pytest.approx(padded.item(), abs=1e-5)
    for mine, theirs in zip(ours, (p.grad for p in lora)):
        assert torch.allclose(mine, theirs, atol=1e-5, rtol=1e-4)


def test_two_process_torchrun_completes(tmp_path, tiny_model_dir, dataset):
    adapter, checkpoints = tmp_path / "ddp", tmp_path / "ddp-ck"
    argv = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "-m",
            "slmforge.steps.finetune", "--",
            *step_argv(tiny_model_dir, dataset, adapter, checkpoints, max_steps=6, save_steps=3)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads((adapter / "slmforge.json").read_text())
    assert m["metrics"]["world_size"] == 2 and m["metrics"]["steps"] == 6
    assert sorted(p.name for p in (checkpoints / "step-00000003").iterdir()) == [
        "adapter_model.safetensors", "optimizer.pt", "rng_state_0.pt", "rng_state_1.pt", "state.json"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial folders left
    assert done.stderr.count("finetune: 6 steps") == 1  # only rank 0 reports (and writes)
