"""The real pretrained model end to end, and the self-checks in both directions on it.

SmolLM2-135M-Instruct (written from its PyPI package once per machine, session fixture) is
fine-tuned briefly on the seed data with the real steps, merged, built to int4 with slmforge's
defaults and evaluated on the held-out tone set — phrases written separately from any training
row. The checks must pass on these correct models and fail, with one line, on broken ones: a
wrongly scaled adapter, a mis-wired LM head, a zeroed layer. Minutes, not seconds: the fixtures
build each model once per session.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slmforge.contract import manifest
from slmforge.errors import StepFailed
from slmforge.models import answers, evaluation, onnx_check
from slmforge.models.backend import load_backend
from slmforge.models.eval_data import read_dataset_folder
from slmforge.steps import build_onnx, evaluate, finetune, load_data, merge

TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
HELDOUT = Path(__file__).resolve().parents[1] / "src" / "slmforge" / "data" / "tones-heldout.jsonl"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tuned(smollm2_dir, seed_data, tmp_path_factory) -> dict[str, Path]:
    """LoRA (q/v/o, r16) on the seed data for 30 steps, merged, and built to int4 with the defaults."""
    root = tmp_path_factory.mktemp("smollm2")
    spec = root / "spec.json"
    spec.write_text(json.dumps({"text_cols": ["phrase", "tone"], "text_template": TEMPLATE}))
    paths = {n: root / n for n in ("dataset", "heldout", "adapter", "merged", "int4")}
    assert load_data.main(["--data", str(seed_data), "--spec", str(spec), "--tokenizer", str(smollm2_dir),
                           "--loss_on", "completion", "--strategy", "line-by-line", "--max_seq_len", "64",
                           "--eval_dataset_size", "0.1", "--data_seed", "42", "--dataset", str(paths["dataset"])]) == 0
    # The same training rows, evaluated on the held-out tone set instead of the seed data's split.
    assert load_data.main(["--data", str(seed_data), "--eval_data", str(HELDOUT), "--spec", str(spec),
                           "--tokenizer", str(smollm2_dir), "--loss_on", "completion", "--strategy",
                           "line-by-line", "--max_seq_len", "64", "--dataset", str(paths["heldout"])]) == 0
    assert finetune.main(["--model", str(smollm2_dir), "--dataset", str(paths["dataset"]), "--method", "lora",
                          "--target_modules", "q_proj,v_proj,o_proj", "--r", "16", "--alpha", "32",
                          "--lora_dropout", "0.0", "--learning_rate", "5e-4", "--per_device_train_batch_size", "8",
                          "--max_steps", "30", "--seed", "42", "--logging_steps", "10",
                          "--adapter", str(paths["adapter"])]) == 0
    assert merge.main(["--model", str(smollm2_dir), "--adapter", str(paths["adapter"]),
                       "--output", str(paths["merged"])]) == 0
    # As the pipeline builds after a merge: base + adapter, slmforge's default int4 method.
    assert build_onnx.main(["--model", str(smollm2_dir), "--adapter", str(paths["adapter"]),
                            "--dataset", str(paths["heldout"]), "--output", str(paths["int4"])]) == 0
    return paths


def _metrics(model: Path, dataset: Path, out: Path) -> dict:
    assert evaluate.main(["--model", str(model), "--dataset", str(dataset), "--max_new_tokens", "4",
                          "--metrics", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def heldout(tuned, tmp_path_factory) -> dict[str, Path]:
    """The merged and the baked int4 model evaluated once on the 200 held-out rows (evaluate outputs)."""
    root = tmp_path_factory.mktemp("heldout-metrics")
    for name in ("merged", "int4"):
        _metrics(tuned[name], tuned["heldout"], root / name)
    return {"merged": root / "merged", "int4": root / "int4"}


def _read(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_the_real_model_learns_and_int4_keeps_it_on_rows_it_never_saw(tuned, heldout, smollm2_dir, tmp_path):
    base = _metrics(smollm2_dir, tuned["heldout"], tmp_path / "base")
    merged, int4 = _read(heldout["merged"]), _read(heldout["int4"])
    print(f"held-out accuracy: base {base['accuracy']:.3f}, merged {merged['accuracy']:.3f}, "
          f"int4 {int4['accuracy']:.3f} (majority {merged['majority_baseline']:.3f}, n {merged['n']})")
    assert merged["n"] == int4["n"] == 200 and merged["majority_baseline"] == 0.25
    assert base["accuracy"] < merged["majority_baseline"]  # zero-shot it does not know the task
    assert merged["accuracy"] >= merged["majority_baseline"] + 0.15
    assert int4["accuracy"] >= 0.9 * merged["accuracy"]
    assert int4["size_bytes"] <= 0.35 * 4 * 134_515_008  # a third of the fp32 weights
    check = manifest.read_manifest(tuned["int4"])["metrics"]["check"]
    assert check["answers"]["rows"] == 200 and check["tokenizer_matches"] == check["prompts"]


def test_merge_check_passes_on_the_real_model_and_fails_on_a_wrongly_scaled_adapter(tuned, smollm2_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    check = manifest.read_manifest(tuned["merged"])["metrics"]["check"]
    assert check["layers"] == 30 and 0 < check["max_abs_diff"] <= check["bound"]

    # The same adapter with lora_B doubled (a wrong alpha/r scaling) merged, checked against the
    # logits of the adapter that was meant.
    wrong = tmp_path / "wrong-adapter"
    shutil.copytree(tuned["adapter"], wrong)
    weights = load_file(wrong / "adapter_model.safetensors")
    save_file({k: (v * 2 if "lora_B" in k else v) for k, v in weights.items()}, wrong / "adapter_model.safetensors")
    from slmforge.models import logit_check, torch_model

    reference_model = torch_model.TorchBackend(str(smollm2_dir), adapter=tuned["adapter"])
    token_ids = [reference_model.encode(p) for p in logit_check.CHECK_PROMPTS]
    reference = torch_model.all_logits(reference_model.model, token_ids)
    del reference_model
    with pytest.raises(StepFailed, match=r"does not reproduce the adapter model: max abs logit difference .* > ") as e:
        merge.merge_into(str(smollm2_dir), wrong, tmp_path / "out", "float32", reference=reference)
    print(f"wrongly scaled adapter: {e.value}")


def _rewire_lm_head(folder: Path, out: Path) -> None:
    """The builder's mis-wiring, reproduced: `logits` computed from layer 15's input instead of the final norm."""
    import onnx

    shutil.copytree(folder, out)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    head = next(n for n in model.graph.node if n.name.startswith("/lm_head/"))
    norms = [n.output[0] for n in model.graph.node if n.name.startswith("/model/layers.15/")]
    head.input[0] = norms[0]
    onnx.save(model, str(out / "model.onnx"))


def test_build_check_fails_on_a_miswired_head_and_a_zeroed_layer(tuned, heldout, smollm2_dir, tmp_path):
    eval_data = read_dataset_folder(tuned["heldout"], 200)
    check = manifest.read_manifest(tuned["int4"])["metrics"]["check"]
    assert check["answers"]["answer_agreement"] >= 0.85
    # The gates' reference answers: the merged model's evaluation (base + adapter is the same function: the
    # merge check), as the pipeline hands them to build_onnx, rather than answering the 200 rows twice more.
    reference = onnx_check.read_reference(str(heldout["merged"]), str(tuned["heldout"]), eval_data, 4)

    miswired = tmp_path / "miswired"
    _rewire_lm_head(tuned["int4"], miswired)
    with pytest.raises(StepFailed, match=r"^the int4 ONNX model does not match its source: mean logit cosine") as e:
        onnx_check.check_against_pytorch(miswired, str(tuned["merged"]), None, "int4", "cpu", eval_data=eval_data,
                                         reference_answers=reference, max_new_tokens=4)
    print(f"mis-wired head: {e.value}")

    # A layer zeroed in the base the builder reads (slmforge's int4 path: base + adapter), checked
    # against the model that was meant.
    from safetensors.torch import load_file, save_file

    zeroed_base = tmp_path / "zeroed-base"
    shutil.copytree(smollm2_dir, zeroed_base)
    weights = load_file(zeroed_base / "model.safetensors")
    weights["model.layers.10.mlp.down_proj.weight"].zero_()
    save_file(weights, zeroed_base / "model.safetensors", metadata={"format": "pt"})
    zeroed = tmp_path / "zeroed"
    zeroed.mkdir()
    how = build_onnx.build_model(str(zeroed_base), zeroed, "int4", "cpu", 32, 4, "auto", True, {}, tuned["adapter"])
    assert how["method"].startswith("exact")
    with pytest.raises(StepFailed, match=r"^the int4 ONNX model does not match its source: ") as e:
        onnx_check.check_against_pytorch(zeroed, str(smollm2_dir), tuned["adapter"], "int4", "cpu", eval_data=eval_data,
                                         reference_answers=reference, max_new_tokens=4)
    print(f"zeroed layer: {e.value}")


def test_batched_evaluation_gives_the_answers_of_one_at_a_time_decoding(tuned):
    rows, examples, template = read_dataset_folder(tuned["heldout"], 60)
    for folder in (tuned["merged"], tuned["int4"]):
        backend = load_backend(folder, None)
        batched = evaluation.evaluate(backend, rows, template, examples=examples, max_new_tokens=6)
        one_by_one = []
        for row in rows:
            suffix = answers.template_suffix(template, row)
            text, _ = backend.generate(template.prompt(row), 6, answers.answer_finished(suffix))
            one_by_one.append(answers.answer_of(text, suffix))
        if folder == tuned["merged"]:
            assert batched["predictions"] == one_by_one  # teacher-forced argmaxes: exactly greedy's chain
        else:
            # og's batched int4 decoding runs batch-shaped MatMulNBits kernels: a near-tie may flip (measured
            # on an AMD EPYC here: row 51 of 60, 'disappointed' vs 'disappointment', both wrong), never more.
            differ = [i for i, (a, b) in enumerate(zip(batched["predictions"], one_by_one)) if a != b]
            assert len(differ) <= 2, differ
            truth = [answers.expected_answer(r, template) for r in rows]
            assert all((batched["predictions"][i] == truth[i]) == (one_by_one[i] == truth[i]) for i in differ)
        assert batched["rows_off_expected_answer"] > 0  # the continuation path ran too


def test_fp32_onnx_parity_bound_holds_on_the_real_model(tuned, tmp_path):
    """The fp32 build must match PyTorch to rounding, with a bound that scales with 30 layers' logits."""
    out = tmp_path / "fp32"
    assert build_onnx.main(["--model", str(tuned["merged"]), "--precision", "fp32", "--output", str(out)]) == 0
    check = manifest.read_manifest(out)["metrics"]["check"]
    print(f"fp32 ONNX vs PyTorch: max abs logit difference {check['max_abs_diff']:.3g}, bound {check['bound']:.3g}")
    assert check["layers"] == 30 and check["positions"] > 150
    assert 0 < check["max_abs_diff"] <= check["bound"] < 0.05


def test_a_separate_adapter_on_the_shared_int4_base_answers_as_the_baked_build_and_its_check_fails_when_broken(
        tuned, heldout, smollm2_dir, tmp_path):
    """Issue 22 on the real model: the int4 base with adapter slots plus the tone adapter as an .onnx_adapter
    passes the gates of a baked build and scores as the baked build does on 200 held-out rows; the same
    check fails for an adapter that is not applied (lora_B zero) and for one converted with lora_B doubled."""
    from safetensors.torch import load_file, save_file

    from slmforge.models import onnx_adapter
    from slmforge.steps import export_adapter

    merged = _read(heldout["merged"])  # the gates' reference answers
    base, exported = tmp_path / "base", tmp_path / "exported"
    assert build_onnx.main(["--model", str(smollm2_dir), "--adapter_slots", "all", "--output", str(base)]) == 0
    assert export_adapter.main(["--model", str(base), "--adapter", str(tuned["adapter"]), "--source", str(smollm2_dir),
                                "--name", "tones", "--dataset", str(tuned["heldout"]), "--reference",
                                str(heldout["merged"]), "--check_max_new_tokens", "4", "--output", str(exported)]) == 0
    check = manifest.read_manifest(exported)["metrics"]["check"]
    assert check["answers"]["rows"] == 200 and check["answers"]["answer_agreement"] >= 0.85
    assert evaluate.main(["--model", str(base), "--adapter", str(exported), "--dataset", str(tuned["heldout"]),
                          "--max_new_tokens", "4", "--metrics", str(tmp_path / "separate")]) == 0
    separate = json.loads((tmp_path / "separate" / "metrics.json").read_text())
    baked = _read(heldout["int4"])
    print(f"held-out accuracy: merged {merged['accuracy']:.3f}, baked int4 {baked['accuracy']:.3f}, separate adapter "
          f"{separate['accuracy']:.3f}; gate agreement {check['answers']['answer_agreement']:.3f}")
    assert separate["accuracy"] >= 0.97 * merged["accuracy"] and abs(separate["accuracy"] - baked["accuracy"]) <= 0.02

    eval_data = read_dataset_folder(tuned["heldout"], 60)  # enough rows to fail on, a third of the time
    reference = onnx_check.read_reference(str(heldout["merged"]), str(tuned["heldout"]), eval_data, 4)
    for name, scale in (("not applied", 0.0), ("lora_B doubled", 2.0)):
        wrong = tmp_path / name.replace(" ", "-")
        shutil.copytree(tuned["adapter"], wrong)
        weights = load_file(wrong / "adapter_model.safetensors")
        save_file({k: (v * scale if "lora_B" in k else v) for k, v in weights.items()}, wrong / "adapter_model.safetensors")
        file = onnx_adapter.convert(wrong, base, tmp_path / f"{wrong.name}.onnx_adapter").path
        with pytest.raises(StepFailed, match=r"^the int4 ONNX adapter on its base does not match its source: ") as e:
            onnx_check.check_against_pytorch(base, str(smollm2_dir), tuned["adapter"], "int4", "cpu",
                                             eval_data=eval_data, reference_answers=reference, max_new_tokens=4,
                                             onnx_adapter=file)
        print(f"adapter {name}: {e.value}")
