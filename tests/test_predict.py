"""`slmforge predict` and `slmforge chat`: onnxruntime-genai only, never torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slmforge.contract import manifest
from slmforge.steps import build_onnx

from lora_adapter import make_lora_adapter

TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
CLI_REPORTING_IMPORTS = ("import sys, json\nfrom slmforge.cli import main\nrc = main(sys.argv[1:])\n"
                         "print('HEAVY=' + json.dumps(sorted(m for m in ('torch', 'transformers', 'peft') "
                         "if m in sys.modules)))\nsys.exit(rc)")


def run_cli(*args: str, stdin: str = "") -> tuple[int, str, str, list[str]]:
    """(exit code, stdout, stderr, heavy modules imported) of `slmforge ARGS` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", CLI_REPORTING_IMPORTS, *args], input=stdin, capture_output=True,
                          text=True, timeout=120)
    out, _, heavy = proc.stdout.rpartition("HEAVY=")
    return proc.returncode, out, proc.stderr, json.loads(heavy) if heavy else []


@pytest.fixture(scope="module")
def int4_dir(tiny_model_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    adapter = make_lora_adapter(tiny_model_dir, root / "adapter", seed=5)
    manifest.write_manifest(adapter, step="finetune", params={}, extra={"text_template": TEMPLATE})
    assert build_onnx.main(["--model", str(tiny_model_dir), "--adapter", str(adapter), "--precision", "int4",
                            "--output", str(root / "int4")]) == 0
    return root / "int4"


def _og_greedy(folder: Path, prompt: str, max_new_tokens: int, stop_ids: set[int]) -> str:
    """Greedy text from og's own API, decoded as a stream, ending before a stop token."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    tokenizer.update_options(add_special_tokens="true")
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + max_new_tokens)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    stream, text = tokenizer.create_stream(), ""
    while not generator.is_done():
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        if token in stop_ids:
            break
        text += stream.decode(token)
    return text


def test_predict_prints_the_greedy_answer_without_torch(int4_dir):
    code, out, err, heavy = run_cli("predict", "--model", str(int4_dir), "I lost my keys again.", "--max_new_tokens", "6")
    assert code == 0, err
    assert heavy == []
    text = _og_greedy(int4_dir, "### Text: I lost my keys again.\n### The tone is:\n", 6, {2})
    expected = next((line.strip() for line in text.splitlines() if line.strip()), "")
    assert out == expected + "\n"


def test_predict_with_a_multi_field_template_takes_json(int4_dir):
    template = "Q: {question}\nContext: {context}\nA: {answer}"
    code, out, err, _ = run_cli("predict", "--model", str(int4_dir), "--template", template,
                                json.dumps({"question": "why?", "context": "none"}), "--max_new_tokens", "3")
    assert code == 0, err
    assert out.endswith("\n") and out.count("\n") == 1
    code, _, err, _ = run_cli("predict", "--model", str(int4_dir), "--template", template, "plain text")
    assert code == 2 and "takes the fields question, context" in err


def test_predict_refuses_a_pytorch_folder(tiny_model_dir):
    code, _, err, heavy = run_cli("predict", "--model", str(tiny_model_dir), "hello")
    assert code == 2 and "not an onnxruntime-genai model folder" in err and heavy == []


def test_chat_streams_replies_to_piped_lines_without_torch(int4_dir):
    code, out, err, heavy = run_cli("chat", "--model", str(int4_dir), "--max_new_tokens", "8",
                                    stdin="hello there\n\nhow are you?\n")
    assert code == 0, err
    assert heavy == []
    # The same conversation with og directly: turn 2 sees turn 1's reply.
    import onnxruntime_genai as og

    tokenizer = og.Tokenizer(og.Model(str(int4_dir)))
    stop = {2, int(tokenizer.to_token_id("<|end|>"))}
    messages, expected = [], ""
    for line in ("hello there", "how are you?"):
        messages.append({"role": "user", "content": line})
        prompt = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        reply = _og_greedy(int4_dir, prompt, 8, stop)
        messages.append({"role": "assistant", "content": reply})
        expected += reply + "\n"
    assert out == expected
