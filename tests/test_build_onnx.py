"""build_onnx step: the onnxruntime-genai builder's output checked against PyTorch, at every position."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slmforge.contract import manifest
from slmforge.errors import InvalidInput
from slmforge.steps import build_onnx

from lora_adapter import make_lora_adapter

PROMPTS = ["### Text: The storm took our roof.\n### The tone is:\n", "Thank you for the flowers!",
           "<|user|>\nhi<|end|>\n<|assistant|>\n", "a"]


def _build(model: Path, out: Path, *extra: str) -> int:
    return build_onnx.main(["--model", str(model), "--output", str(out), *extra])


@pytest.fixture(scope="module")
def onnx_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def fp32_dir(tiny_model_dir, onnx_root) -> Path:
    assert _build(tiny_model_dir, onnx_root / "fp32", "--precision", "fp32") == 0
    return onnx_root / "fp32"


@pytest.fixture(scope="module")
def int4_dir(tiny_model_dir, onnx_root) -> Path:
    assert _build(tiny_model_dir, onnx_root / "int4", "--precision", "int4") == 0
    return onnx_root / "int4"


def _hf_logits(model_dir, prompts, adapter=None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    with torch.inference_mode():
        return ids, [model(torch.tensor([i])).logits[0].numpy() for i in ids]


def test_fp32_onnx_matches_pytorch_at_every_position(tiny_model_dir, fp32_dir):
    import numpy as np
    import onnxruntime as ort

    ids, reference = _hf_logits(tiny_model_dir, PROMPTS)
    session = ort.InferenceSession(str(fp32_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for seq, ref in zip(ids, reference):
        feeds = {"input_ids": np.array([seq], dtype=np.int64), "attention_mask": np.ones((1, len(seq)), dtype=np.int64)}
        for layer in range(2):
            for kind in ("key", "value"):
                feeds[f"past_key_values.{layer}.{kind}"] = np.zeros((1, 4, 0, 32), dtype=np.float32)
        logits = session.run(["logits"], feeds)[0][0]
        assert logits.shape == ref.shape
        assert np.abs(logits - ref).max() <= 1e-4
    check = manifest.read_manifest(fp32_dir)["metrics"]["check"]
    assert check["max_abs_diff"] <= 1e-4 and check["positions"] > 100 and check["tokenizer_matches"] == check["prompts"]


def test_lm_head_miswiring_is_caught_and_nothing_is_shipped(tiny_model_dir, tmp_path, capsys):
    """vocab_size == intermediate_size: the builder wires `logits` to an MLP layer without a word."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    model_dir = tmp_path / "collides"
    config = Phi3Config(vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                        original_max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=3,
                        tie_word_embeddings=False)
    torch.manual_seed(0)
    Phi3ForCausalLM(config).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, model_dir / name)
    out = tmp_path / "onnx"
    assert _build(model_dir, out, "--precision", "fp32") == 1
    assert "max abs logit difference" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".onnx.partial-*"))
    assert _build(model_dir, out, "--precision", "int4") == 1  # the int4 bounds catch it too
    assert "logit cosine" in capsys.readouterr().err and not out.exists()


def test_int4_builds_loads_and_generates_with_onnxruntime_genai(int4_dir, fp32_dir):
    import onnxruntime_genai as og

    names = {p.name for p in int4_dir.iterdir()}
    assert {"genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json", "slmforge.json"} <= names
    assert manifest.is_finished(int4_dir)
    assert (int4_dir / "model.onnx.data").stat().st_size < (fp32_dir / "model.onnx.data").stat().st_size / 3
    model = og.Model(str(int4_dir))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=40)
    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode("### Text: hello\n### The tone is:\n"))
    generated = 0
    while not generator.is_done():
        generator.generate_next_token()
        generated += 1
    assert generated > 0
    check = manifest.read_manifest(int4_dir)["metrics"]["check"]
    assert check["cosine_mean"] >= check["bounds"]["cosine_mean"] and check["positions"] > 100
    assert not check["argmax_gated"] or check["argmax_agreement"] >= check["bounds"]["argmax_agreement"]


def test_og_token_ids_equal_hf_tokenizer_ids(int4_dir, demo_data, seed_data):
    from transformers import AutoTokenizer

    from slmforge.models.genai import GenaiModel

    texts = []
    for path in (demo_data, seed_data):
        for line in path.read_text(encoding="utf-8").splitlines()[:200]:
            row = json.loads(line)
            texts += [row["phrase"], f"### Text: {row['phrase']}\n### The tone is:\n{row['tone']}"]
    texts += ["<|user|>\nWhy?<|end|>\n<|assistant|>\n", "  spaces  and\ttabs\n\nnewlines ", "émoji 🎉 ünïcödé"]
    hf = AutoTokenizer.from_pretrained(int4_dir)
    og_model = GenaiModel(int4_dir)
    mismatches = [t for t in texts if og_model.encode(t) != hf(t)["input_ids"]]
    assert len(texts) > 400 and mismatches == []
    assert all(og_model.encode(t, special=False) == hf(t, add_special_tokens=False)["input_ids"] for t in texts[:50])


def test_build_straight_from_base_plus_adapter(tiny_model_dir, int4_dir, tmp_path):
    import numpy as np

    from slmforge.models.genai import PlainOrtModel
    from slmforge.models.logit_check import compare

    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "adapter", seed=3)
    manifest.write_manifest(adapter, step="finetune", params={}, extra={"text_template": "Q: {q}\nA: {a}"})
    out = tmp_path / "int4-adapter"
    assert _build(tiny_model_dir, out, "--adapter", str(adapter), "--precision", "int4") == 0
    data = manifest.read_manifest(out)
    assert data["params"]["text_template"] == "Q: {q}\nA: {a}" and "adapter" in data["inputs"]

    ids, with_adapter = _hf_logits(tiny_model_dir, PROMPTS, adapter)
    _, base_only = _hf_logits(tiny_model_dir, PROMPTS)
    built = PlainOrtModel(out)
    candidate = [built.logits(i) for i in ids]
    assert compare(with_adapter, candidate).cosine_mean > 0.95
    assert compare(base_only, candidate).cosine_mean < compare(with_adapter, candidate).cosine_mean - 0.05
    assert not np.allclose(candidate[0], PlainOrtModel(int4_dir).logits(ids[0]), atol=1e-2)


def test_block_size_input_reaches_the_builder(tiny_model_dir, int4_dir, tmp_path):
    out = tmp_path / "int4-b16"
    assert _build(tiny_model_dir, out, "--precision", "int4", "--int4_block_size", "16") == 0
    # Smaller blocks carry more scales: the data file grows.
    assert (out / "model.onnx.data").stat().st_size > (int4_dir / "model.onnx.data").stat().st_size
    assert manifest.read_manifest(out)["params"]["int4_block_size"] == 16


@pytest.mark.parametrize("options, message", [
    ("blok_size=16", "did you mean 'block_size'"),
    ("int4_block_size=16", "use the int4_block_size input"),
    ("adapter_path=/x", "use the --adapter input"),
    ("nonsense", "is not key=value"),
])
def test_extra_options_are_checked_before_any_work(tiny_model_dir, tmp_path, capsys, options, message):
    assert _build(tiny_model_dir, tmp_path / "o", "--extra_options", options) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_extra_options_pass_through(tiny_model_dir, int4_dir, tmp_path):
    from slmforge.models.onnx_builder import parse_extra_options

    assert parse_extra_options("nodes_to_exclude=/lm_head/MatMul,/model/x,op_types_to_quantize=MatMul") == {
        "nodes_to_exclude": "/lm_head/MatMul,/model/x", "op_types_to_quantize": "MatMul"}
    with pytest.raises(InvalidInput, match="is_symmetric is set by slmforge; use the int4_is_symmetric input"):
        parse_extra_options("is_symmetric=false")
    out = tmp_path / "int4-excl"
    assert _build(tiny_model_dir, out, "--extra_options", "nodes_to_exclude=/lm_head/MatMul") == 0
    assert manifest.read_manifest(out)["params"]["extra_options"] == {"nodes_to_exclude": "/lm_head/MatMul"}
    # The excluded LM head stays float32, so the data file is bigger than the all-int4 build's.
    assert (out / "model.onnx.data").stat().st_size > (int4_dir / "model.onnx.data").stat().st_size


def test_fp32_check_bound_is_the_references_own_rounding_and_fails_a_miswired_head_and_a_zeroed_layer(
        tiny_model_dir, fp32_dir, tmp_path):
    """The fp32 bound is a multiple of PyTorch's float32-vs-float64 distance: the correct build passes it,
    a head wired to layer 1's input and a model whose layer was zeroed do not (logit_check.fp32_bound)."""
    import onnx
    from safetensors.torch import load_file, save_file

    from slmforge.errors import StepFailed
    from slmforge.models import onnx_check

    check = manifest.read_manifest(fp32_dir)["metrics"]["check"]
    print(f"fp32 ONNX: max abs diff {check['max_abs_diff']:.3g}, bound {check['bound']:.3g}, "
          f"PyTorch float32 vs float64 {check['reference_rounding']:.3g}")
    assert 0 < check["reference_rounding"] and 0 < check["max_abs_diff"] <= check["bound"] <= 1e-4

    miswired = tmp_path / "miswired"
    shutil.copytree(fp32_dir, miswired)
    model = onnx.load(str(miswired / "model.onnx"), load_external_data=False)
    head = next(n for n in model.graph.node if n.name.startswith("/lm_head/"))
    head.input[0] = next(n.output[0] for n in model.graph.node if n.name.startswith("/model/layers.1/"))
    onnx.save(model, str(miswired / "model.onnx"))
    with pytest.raises(StepFailed, match=r"fp32 ONNX model does not match its source: max abs logit difference "
                                         r".* > .*own float32 rounding") as e:
        onnx_check.check_against_pytorch(miswired, str(tiny_model_dir), None, "fp32", "cpu")
    print(f"mis-wired head: {e.value}")

    zeroed = tmp_path / "zeroed-source"
    shutil.copytree(tiny_model_dir, zeroed)
    weights = load_file(zeroed / "model.safetensors")
    weights["model.layers.1.mlp.down_proj.weight"].zero_()
    save_file(weights, zeroed / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(StepFailed, match=r"max abs logit difference .* > ") as e:
        onnx_check.check_against_pytorch(fp32_dir, str(zeroed), None, "fp32", "cpu")
    print(f"zeroed layer: {e.value}")
