"""Serving separate adapters: `slmforge adapters convert|show`, `predict/chat/evaluate --adapter`, and the
evaluate step's `adapter` input, on one int4 base of the tiny model built with adapter slots.

What they prove: a peft adapter converted for the base answers as the build with that adapter baked in
(and, on an fp32 base, as the merged PyTorch model); two adapters scored in one evaluate call give what
each gives alone; an adapter on a model that is not its base, and a DoRA adapter, are refused in one line.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slmforge.cli import main
from slmforge.contract import manifest
from slmforge.steps import build_onnx

from lora_adapter import make_lora_adapter

TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
PHRASES = ("I lost my keys again.", "This haunted house is terrifying!", "What a lovely morning.")


def cli(capsys, *args: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `slmforge ARGS` in this process."""
    capsys.readouterr()
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _peft(tiny_model_dir: Path, out: Path, seed: int) -> Path:
    adapter = make_lora_adapter(tiny_model_dir, out, seed=seed)
    manifest.write_manifest(adapter, step="finetune", params={"text_template": TEMPLATE})  # as finetune carries it
    return adapter


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Two peft adapters, the int4 base with slots, adapter a baked into an int4 build, the adapters converted."""
    root = tmp_path_factory.mktemp("adapters-serve")
    made = {"root": root, "peft_a": _peft(tiny_model_dir, root / "peft-a", 5),
            "peft_b": _peft(tiny_model_dir, root / "peft-b", 6)}
    build_onnx.run(model=str(tiny_model_dir), precision="int4", adapter_slots="all", output=str(root / "base"))
    build_onnx.run(model=str(tiny_model_dir), adapter=str(made["peft_a"]), precision="int4", output=str(root / "baked-a"))
    made.update(base=root / "base", baked_a=root / "baked-a", out=root / "adapters")
    made["out"].mkdir()
    for name in ("a", "b"):
        assert main(["adapters", "convert", str(made[f"peft_{name}"]), "--model", str(made["base"]),
                     "-o", str(made["out"] / f"{name}.onnx_adapter")]) == 0
    rows = root / "rows.jsonl"
    rows.write_text("".join(json.dumps({"phrase": p, "tone": t}) + "\n" for p, t in
                            zip(PHRASES * 2, ("sadness", "fear", "joy", "joy", "fear", "sadness"))), encoding="utf-8")
    made["rows"] = rows
    return made


def test_convert_writes_the_adapter_and_its_sidecar_with_the_template(built, capsys):
    out = built["out"]
    assert sorted(p.name for p in out.iterdir()) == ["a.onnx_adapter", "a.onnx_adapter.json",
                                                     "b.onnx_adapter", "b.onnx_adapter.json"]  # no scratch left
    meta = json.loads((out / "a.onnx_adapter.json").read_text())
    assert meta["name"] == "a" and meta["text_template"] == TEMPLATE and meta["method"] == "lora"
    assert meta["base"]["digest"] == json.loads((built["base"] / "adapter_slots.json").read_text())["digest"]
    code, shown, _ = cli(capsys, "adapters", "show", str(out / "a.onnx_adapter"), "--json")
    assert code == 0
    shown = json.loads(shown)
    assert shown["tensors_in_file"] == meta["tensors"] == 28 and shown["text_template"] == TEMPLATE


def test_predict_with_the_adapter_answers_as_the_baked_build(built, capsys):
    adapter = str(built["out"] / "a.onnx_adapter")
    differs = False
    for phrase in PHRASES:
        # No --template: the adapter's sidecar carries it (the base was built without one).
        code, with_adapter, err = cli(capsys, "predict", "--model", str(built["base"]), "--adapter", adapter, phrase,
                                      "--max_new_tokens", "8")
        assert code == 0, err
        code, baked, err = cli(capsys, "predict", "--model", str(built["baked_a"]), "--template", TEMPLATE, phrase,
                               "--max_new_tokens", "8")
        assert code == 0, err
        code, alone, err = cli(capsys, "predict", "--model", str(built["base"]), "--template", TEMPLATE, phrase,
                               "--max_new_tokens", "8")
        assert code == 0, err
        assert with_adapter == baked
        differs |= alone != with_adapter
    assert differs, "the adapter changed no answer: the test would not see it missing"
    # In a fresh process: the same answer, and serving an adapter imports no torch.
    code = ("import sys\nfrom slmforge.cli import main\nrc = main(sys.argv[1:])\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "predict", "--model", str(built["base"]), "--adapter", adapter,
                           PHRASES[-1], "--max_new_tokens", "8"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == with_adapter + "HEAVY []\n"


def test_chat_with_the_adapter_replies_as_the_baked_build(built, capsys, monkeypatch):
    lines = "hello there\nhow are you?\n"
    code, with_adapter, err = cli(capsys, "chat", "--model", str(built["base"]), "--adapter", str(built["out"]),
                                  "--max_new_tokens", "6", stdin=lines, monkeypatch=monkeypatch)
    assert code == 2 and "holds 2 .onnx_adapter files" in err  # a folder with two: name the file
    code, with_adapter, err = cli(capsys, "chat", "--model", str(built["base"]), "--adapter",
                                  str(built["out"] / "a.onnx_adapter"), "--max_new_tokens", "6", stdin=lines,
                                  monkeypatch=monkeypatch)
    assert code == 0, err
    code, baked, err = cli(capsys, "chat", "--model", str(built["baked_a"]), "--max_new_tokens", "6", stdin=lines,
                           monkeypatch=monkeypatch)
    assert code == 0, err
    assert with_adapter == baked and with_adapter.count("\n") == 2


def _evaluate(capsys, model: Path, rows: Path, *extra: str) -> list[dict]:
    code, out, err = cli(capsys, "evaluate", "--model", str(model), "--data", str(rows), "--json",
                         "--max_new_tokens", "4", *extra)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_evaluate_scores_two_adapters_in_one_call_each_as_alone_and_as_baked(built, capsys):
    a, b = built["out"] / "a.onnx_adapter", built["out"] / "b.onnx_adapter"
    both = _evaluate(capsys, built["base"], built["rows"], "--adapter", str(a), "--adapter", str(b))
    assert [m["label"] for m in both] == ["base+a", "base+b"]
    assert [m["adapter"]["name"] for m in both] == ["a", "b"]
    assert both[0]["adapter"]["sha256"] == manifest.digest_file(a)
    for result, file in zip(both, (a, b)):
        (alone,) = _evaluate(capsys, built["base"], built["rows"], "--adapter", str(file))
        for key in ("predictions", "accuracy", "perplexity", "first_answer_tokens", "adapter"):
            assert result[key] == alone[key], key
    assert both[0]["perplexity"] != both[1]["perplexity"]  # each answered with its own adapter
    (baked,) = _evaluate(capsys, built["baked_a"], built["rows"], "--template", TEMPLATE)
    assert both[0]["predictions"] == baked["predictions"]
    assert both[0]["perplexity"] == pytest.approx(baked["perplexity"], rel=1e-4)
    (alone,) = _evaluate(capsys, built["base"], built["rows"], "--template", TEMPLATE)  # no --adapter: the base
    assert "adapter" not in alone and alone["perplexity"] != pytest.approx(both[0]["perplexity"], rel=1e-3)


def test_an_fp32_base_with_the_adapter_answers_as_the_merged_model(built, tiny_model_dir, capsys):
    from slmforge.steps import merge

    root = built["root"]
    build_onnx.run(model=str(tiny_model_dir), precision="fp32", adapter_slots="all", output=str(root / "base32"))
    assert main(["adapters", "convert", str(built["peft_a"]), "--model", str(root / "base32"),
                 "-o", str(root / "a32.onnx_adapter")]) == 0
    merge.run(model=str(tiny_model_dir), adapter=str(built["peft_a"]), output=str(root / "merged"))
    (og,) = _evaluate(capsys, root / "base32", built["rows"], "--adapter", str(root / "a32.onnx_adapter"))
    (torch,) = _evaluate(capsys, root / "merged", built["rows"])
    # Token for token (the texts may differ: og and transformers decode a lone invalid UTF-8 byte differently).
    assert og["first_answer_tokens"] == torch["first_answer_tokens"] and og["accuracy"] == torch["accuracy"]
    assert og["perplexity"] == pytest.approx(torch["perplexity"], rel=1e-4)


def test_evaluate_step_records_which_adapter_answered(built, tiny_model_dir, seed_data, tmp_path):
    from lora_adapter import tone_dataset
    from slmforge.contract.folders import read_metrics
    from slmforge.errors import InvalidInput
    from slmforge.steps import evaluate

    dataset = tone_dataset(tmp_path, tiny_model_dir, seed_data, max_samples=40, max_seq_len=64)
    folder = tmp_path / "export"  # what export_adapter writes: a folder holding one adapter
    folder.mkdir()
    for suffix in ("", ".json"):
        (folder / f"a.onnx_adapter{suffix}").write_bytes((built["out"] / f"a.onnx_adapter{suffix}").read_bytes())
    result = evaluate.run(model=str(built["base"]), adapter=str(folder), dataset=str(dataset),
                          metrics=str(tmp_path / "m"), label="onnx", max_new_tokens=4)
    record = read_metrics(tmp_path / "m")["adapter"]
    assert record["name"] == "a" and record["sha256"] == manifest.digest_file(folder / "a.onnx_adapter")
    assert manifest.read_manifest(tmp_path / "m")["inputs"]["adapter"]["path"] == str(folder)
    baked = evaluate.run(model=str(built["baked_a"]), dataset=str(dataset), metrics=str(tmp_path / "mb"),
                         max_new_tokens=4)
    assert result["predictions"] == baked["predictions"] and "adapter" not in baked
    with pytest.raises(InvalidInput, match="not a base for separate adapters"):
        evaluate.run(model=str(built["baked_a"]), adapter=str(folder), dataset=str(dataset),
                     metrics=str(tmp_path / "m2"))


@pytest.fixture(scope="module")
def other_base(tmp_path_factory) -> Path:
    """A base of another tiny model (seed 1): the same slot names and shapes, other weights."""
    from slmforge.models.tinymodel import build_tiny_model

    root = tmp_path_factory.mktemp("other-base")
    tiny = build_tiny_model(root / "tiny-1", seed=1)
    build_onnx.run(model=str(tiny), precision="int4", adapter_slots="all", output=str(root / "base"))
    return root / "base"


def _one_line_refusal(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_an_adapter_on_a_model_that_is_not_its_base_is_refused_in_one_line(built, other_base, tiny_model_dir, capsys):
    a = str(built["out"] / "a.onnx_adapter")
    _one_line_refusal(*cli(capsys, "predict", "--model", str(other_base), "--adapter", a, "hi")[::2],
                      "made for the base", "adapters convert")
    _one_line_refusal(*cli(capsys, "predict", "--model", str(built["baked_a"]), "--adapter", a, "hi")[::2],
                      "not a base for separate adapters")
    _one_line_refusal(*cli(capsys, "evaluate", "--model", str(tiny_model_dir), "--adapter", a,
                           "--data", str(built["rows"]))[::2], "not on a Hugging Face model")
    _one_line_refusal(*cli(capsys, "evaluate", "--model", str(built["base"]), "--adapter", a, "--adapter", a,
                           "--data", str(built["rows"]))[::2], "two adapters are named 'a'")
    # The whole process, not only the error boundary: one line on stderr, no traceback.
    proc = subprocess.run([sys.executable, "-m", "slmforge.cli", "chat", "--model", str(other_base), "--adapter", a],
                          input="hi\n", capture_output=True, text=True, timeout=120)
    _one_line_refusal(proc.returncode, proc.stderr, "made for the base")


def test_convert_refuses_dora_and_loha_adapters_by_name_and_writes_nothing(built, tiny_model_dir, tmp_path, capsys):
    from peft import LoHaConfig, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    out.mkdir()
    for name, config in (("DoRA", LoraConfig(r=4, use_dora=True, target_modules=["qkv_proj"])),
                         ("LoHa", LoHaConfig(r=4, target_modules=["qkv_proj"]))):
        get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config).save_pretrained(tmp_path / name)
        _one_line_refusal(*cli(capsys, "adapters", "convert", str(tmp_path / name), "--model", str(built["base"]),
                               "-o", str(out / "d.onnx_adapter"))[::2], f"a {name} adapter cannot be served separately",
                          "build it merged")
        assert list(out.iterdir()) == []
    _one_line_refusal(*cli(capsys, "adapters", "convert", str(built["peft_a"]), "--model", str(built["baked_a"]),
                           "-o", str(out / "a.onnx_adapter"))[::2], "not a base for separate adapters")
    assert list(out.iterdir()) == []
