"""One int4 base, many adapters (issue 22), on the tiny model: recipes with ExtractAdapters.

Two recipes fine-tune the same base on different data into one shared cache: the first is written as
olive-recipes writes its LoRA recipes (lower-case pass types, OnnxConversion -> OrtTransformersOptimization
-> ExtractAdapters -> ModelBuilder with metadata_only), the second in the flat shape with ExtractAdapters
after ModelBuilder. They must share one base build, each leave its own .onnx_adapter, and each adapter
served on the base through onnxruntime-genai must answer as its merged PyTorch model does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from adapter_recipes import TEMPLATE, olive_recipes_shape
from local_pipeline import cli

from slmforge.contract import manifest
from slmforge.errors import InvalidInput, StepFailed
from slmforge.models import adapter_slots, onnx_adapter


def test_two_recipes_share_one_base_and_leave_one_adapter_each(two_runs):
    a, b = two_runs["a"], two_runs["b"]
    assert a.statuses()["build_onnx"] == "ran" and b.statuses()["build_onnx"] == "cached"
    assert a.statuses()["finetune"] == b.statuses()["finetune"] == "ran"
    def digest(folder):  # the model's files, each run's own model card aside
        return manifest.digest_path(folder, exclude=(manifest.MANIFEST, manifest.CARD))

    assert digest(a.out_dir / "model") == digest(b.out_dir / "model")  # the same base bytes
    base = adapter_slots.require_slots(a.out_dir / "model")
    files = {}
    for name, run in two_runs.items():
        file = onnx_adapter.find(run.out_dir / "adapters")
        adapter = onnx_adapter.open_file(file)
        assert adapter.meta["base"]["digest"] == base.digest and adapter.meta["method"] == "lora"
        assert adapter.meta["text_template"] == TEMPLATE and adapter.meta["rank"] == 8
        files[name] = file
        assert run.record["adapter"]["path"] == str(run.out_dir / "adapters")
        assert "evaluate_onnx" in run.statuses()  # the base evaluated with this adapter active
    assert files["a"].read_bytes() != files["b"].read_bytes()


def _answers(backend, dataset: Path) -> dict:
    from slmforge.models.eval_data import read_dataset_folder
    from slmforge.models.evaluation import evaluate

    rows, _, template = read_dataset_folder(dataset, 16)
    return evaluate(backend, rows, template, examples=[], max_new_tokens=4, label="t")


def _step_output(run, step: str) -> Path:
    return Path(next(s["output"] for s in run.record["steps"] if s["name"] == step))


def test_each_adapter_through_onnxruntime_genai_answers_as_its_merged_model(two_runs, tiny_model_dir, tmp_path):
    from slmforge.models import logit_check
    from slmforge.models.genai import GenaiModel
    from slmforge.models.torch_model import TorchBackend

    base = two_runs["a"].out_dir / "model"
    served = GenaiModel(base, adapters=[two_runs[n].out_dir / "adapters" for n in ("a", "b")])
    gate = logit_check.ANSWER_GATES["int4"]
    for name, run in two_runs.items():
        dataset, peft_adapter = _step_output(run, "load_data"), _step_output(run, "finetune")
        served.use_adapter(onnx_adapter.open_file(run.out_dir / "adapters").name)
        ours = _answers(served, dataset)
        merged = _answers(TorchBackend(str(tiny_model_dir), adapter=peft_adapter), dataset)
        comparison = logit_check.answer_comparison(merged, ours)
        assert not logit_check.answer_failures(comparison, gate), (name, comparison)
        check = manifest.read_manifest(_step_output(run, "export_adapter"))["metrics"]["check"]
        assert check["answers"]["rows"] == 16 and check["tokenizer_matches"] == check["prompts"]
    # No adapter active: the slots hold rank-0 defaults and the base answers exactly as an int4 build
    # without slots (random tiny weights: int4 against PyTorch would flip near-ties, the same build must not).
    from slmforge.steps import build_onnx

    build_onnx.run(model=str(tiny_model_dir), precision="int4", output=str(tmp_path / "plain"))
    served.use_adapter(None)
    dataset = _step_output(two_runs["a"], "load_data")
    plain, alone = _answers(GenaiModel(tmp_path / "plain"), dataset), _answers(served, dataset)
    assert plain["predictions"] == alone["predictions"] and plain["perplexity"] == pytest.approx(alone["perplexity"])


def test_an_adapter_is_refused_on_a_base_it_was_not_made_for(two_runs, tmp_path):
    from slmforge.models.genai import GenaiModel
    from slmforge.models.tinymodel import build_tiny_model
    from slmforge.steps import build_onnx

    other = build_tiny_model(tmp_path / "other-tiny", seed=1)  # same shapes, other weights
    build_onnx.run(model=str(other), precision="int4", adapter_slots="all", output=str(tmp_path / "other-base"))
    adapter = onnx_adapter.open_file(two_runs["a"].out_dir / "adapters")
    with pytest.raises(InvalidInput, match=r"made for the base [0-9a-f]{12}, not for .*other-base") as e:
        GenaiModel(tmp_path / "other-base", adapters=[adapter.path])
    assert "\n" not in str(e.value)
    # Without its sidecar the file's own model version still tells the bases apart.
    bare = tmp_path / "bare" / "a.onnx_adapter"
    bare.parent.mkdir()
    shutil.copyfile(adapter.path, bare)
    with pytest.raises(InvalidInput, match="made for another base"):
        onnx_adapter.check_fits(onnx_adapter.open_file(bare), tmp_path / "other-base")
    with pytest.raises(InvalidInput, match="not a base for separate adapters"):  # a baked/plain build has no slots
        onnx_adapter.check_fits(adapter, _step_output(two_runs["a"], "build_onnx").parent / "nowhere")


def test_the_adapter_check_is_exact_at_fp32_and_fails_on_a_wrongly_converted_adapter(two_runs, tiny_model_dir, tmp_path):
    """Both directions of the self-check, where it is exact: an fp32 base with the adapter matches
    PyTorch within the rounding bound; the same adapter converted with lora_B doubled does not."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from slmforge.models import onnx_check
    from slmforge.steps import build_onnx, export_adapter

    peft_adapter = _step_output(two_runs["a"], "finetune")
    build_onnx.run(model=str(tiny_model_dir), precision="fp32", adapter_slots="all", output=str(tmp_path / "fp32"))
    check = export_adapter.run(model=str(tmp_path / "fp32"), adapter=str(peft_adapter), source=str(tiny_model_dir),
                               name="a", output=str(tmp_path / "a32"))
    assert 0 < check["max_abs_diff"] <= check["bound"]
    wrong = tmp_path / "doubled"
    shutil.copytree(peft_adapter, wrong)
    weights = load_file(str(wrong / "adapter_model.safetensors"))
    save_file({k: (v * np.float32(2) if "lora_B" in k else v) for k, v in weights.items()},
              str(wrong / "adapter_model.safetensors"))
    file = onnx_adapter.convert(wrong, tmp_path / "fp32", tmp_path / "doubled.onnx_adapter").path
    with pytest.raises(StepFailed, match=r"fp32 ONNX adapter on its base does not match its source: max abs logit"):
        onnx_check.check_against_pytorch(tmp_path / "fp32", str(tiny_model_dir), peft_adapter, "fp32", "cpu",
                                         onnx_adapter=file)


@pytest.mark.parametrize("edit,message", [
    (lambda r: r["passes"]["l"].update(type="dora"),
     "passes.e: a DoRA adapter cannot be served separately: DoRA rescales"),
    (lambda r: r["passes"]["e"].update(adapter_type="loha"),
     "passes.e: a LoHa adapter cannot be served separately: LoHa's update is a Hadamard product"),
    (lambda r: r["passes"].update(merge={"type": "MergeAdapterWeights"}),
     "MergeAdapterWeights bakes the adapter into the model and ExtractAdapters keeps it separate"),
    (lambda r: [r["passes"].pop(k) for k in ("c", "o", "m")],
     "ExtractAdapters needs a ModelBuilder pass"),
    (lambda r: r["passes"]["e"].update(pack_inputs=True), "pack_inputs"),
])
def test_what_cannot_be_served_separately_is_refused_by_name(tiny_model_dir, tmp_path, edit, message):
    recipe = olive_recipes_shape(tiny_model_dir, "tones.jsonl", "out")
    edit(recipe)
    (tmp_path / "tones.jsonl").write_text('{"phrase": "hi", "tone": "joy"}\n', encoding="utf-8")
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe), encoding="utf-8")
    done = cli(tmp_path / "home", "validate", str(path))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_convert_of_the_recipes_peft_adapter_answers_like_the_recipes_adapter(two_runs, tmp_path):
    """`slmforge adapters convert` (Olive's `convert-adapters`) of the fine-tune's peft folder gives the very
    tensors the recipe exported, so the same answers through onnxruntime-genai."""
    from slmforge.models.genai import GenaiModel

    run = two_runs["a"]
    out = tmp_path / "converted.onnx_adapter"
    done = cli(tmp_path / "home", "adapters", "convert", str(_step_output(run, "finetune")), "--model",
               str(run.out_dir / "model"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    ours, recipes = onnx_adapter.open_file(out), onnx_adapter.open_file(run.out_dir / "adapters")
    assert ours.meta["text_template"] == TEMPLATE and ours.meta["shapes"] == recipes.meta["shapes"]
    mine, theirs = onnx_adapter.feeds(ours), onnx_adapter.feeds(recipes)
    assert all((mine[k] == theirs[k]).all() for k in theirs)
    served = GenaiModel(run.out_dir / "model", adapters=[out, recipes.path])  # distinct names: file stems
    dataset = _step_output(run, "load_data")
    first = _answers(served, dataset)
    served.use_adapter(recipes.name)
    assert _answers(served, dataset)["predictions"] == first["predictions"]


def test_a_qlora_adapter_serves_separately_like_lora(tiny_model_dir, tmp_path):
    """A QLoRA adapter (trained on a 4-bit base) is a LoRA adapter of the full-precision base: on an fp32 base
    it matches PyTorch base + adapter within the fp32 rounding bound."""
    from lora_adapter import make_lora_adapter

    from slmforge.steps import build_onnx, export_adapter

    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "qlora", seed=3, quantized=True)
    build_onnx.run(model=str(tiny_model_dir), precision="fp32", adapter_slots="all", output=str(tmp_path / "fp32"))
    check = export_adapter.run(model=str(tmp_path / "fp32"), adapter=str(adapter), source=str(tiny_model_dir),
                               name="q", output=str(tmp_path / "q"))
    assert 0 < check["max_abs_diff"] <= check["bound"]
