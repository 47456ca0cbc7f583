"""evaluate step and `slmforge evaluate`: the same metrics for PyTorch and onnxruntime-genai folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slmforge.contract import manifest
from slmforge.models.answers import answer_finished, answer_of
from slmforge.steps import build_onnx, evaluate, load_data, merge

from lora_adapter import make_lora_adapter

TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
KEYS = {"label", "accuracy", "n", "confusion", "perplexity", "tokens_per_second", "size_bytes", "model_kind"}
# Runs the CLI in a fresh interpreter and reports which heavy libraries it imported.
CLI_REPORTING_IMPORTS = ("import sys, json\nfrom slmforge.cli import main\nrc = main(sys.argv[1:])\n"
                         "print('HEAVY=' + json.dumps(sorted(m for m in ('torch', 'transformers', 'peft') "
                         "if m in sys.modules)))\nsys.exit(rc)")


def run_cli_without_torch(*args: str) -> tuple[str, list[str]]:
    """(stdout before the report line, heavy modules imported); fails on a non-zero exit."""
    proc = subprocess.run([sys.executable, "-c", CLI_REPORTING_IMPORTS, *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out, _, heavy = proc.stdout.rpartition("HEAVY=")
    return out, json.loads(heavy)


@pytest.fixture(scope="module")
def folders(tiny_model_dir, demo_data, tmp_path_factory) -> dict[str, Path]:
    """load_data on the demo data -> adapter -> merge -> int4; plus an fp32 build of the base."""
    root = tmp_path_factory.mktemp("evaluate")
    spec = root / "spec.json"
    spec.write_text(json.dumps({"text_cols": ["phrase", "tone"], "text_template": TEMPLATE}))
    dataset = root / "dataset"
    assert load_data.main(["--data", str(demo_data), "--spec", str(spec), "--tokenizer", str(tiny_model_dir),
                           "--loss_on", "completion", "--strategy", "line-by-line",
                           "--eval_dataset_size", "0.2", "--dataset", str(dataset)]) == 0
    adapter = make_lora_adapter(tiny_model_dir, root / "adapter", seed=4)
    manifest.write_manifest(adapter, step="finetune", params={}, inputs={"dataset": dataset})
    merged, int4, fp32 = root / "merged", root / "int4", root / "fp32"
    assert merge.main(["--model", str(tiny_model_dir), "--adapter", str(adapter), "--output", str(merged)]) == 0
    assert build_onnx.main(["--model", str(merged), "--precision", "int4", "--output", str(int4)]) == 0
    assert build_onnx.main(["--model", str(tiny_model_dir), "--precision", "fp32", "--output", str(fp32)]) == 0
    return {"root": root, "dataset": dataset, "merged": merged, "int4": int4, "fp32": fp32}


def _evaluate_step(model: Path, dataset: Path, out: Path, label: str) -> dict:
    assert evaluate.main(["--model", str(model), "--dataset", str(dataset), "--label", label,
                          "--max_samples", "40", "--max_new_tokens", "4", "--metrics", str(out)]) == 0
    assert manifest.is_finished(out)
    return json.loads((out / "metrics.json").read_text())


def test_step_gives_the_same_metrics_for_pytorch_and_its_fp32_onnx(tiny_model_dir, folders, tmp_path):
    torch_metrics = _evaluate_step(tiny_model_dir, folders["dataset"], tmp_path / "m-pt", "base")
    onnx_metrics = _evaluate_step(folders["fp32"], folders["dataset"], tmp_path / "m-onnx", "onnx")
    for metrics, kind in ((torch_metrics, "pytorch"), (onnx_metrics, "onnx")):
        assert KEYS <= set(metrics) and metrics["model_kind"] == kind
        assert metrics["n"] == 40 and sum(sum(row.values()) for row in metrics["confusion"].values()) == 40
        assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["tokens_per_second"] > 0 and metrics["size_bytes"] > 0
        assert metrics["perplexity_tokens"] > 40  # the tone token(s) + </s> of each row
    # Same weights, same tokens: perplexity agrees to float rounding, greedy answers are identical.
    assert onnx_metrics["perplexity"] == pytest.approx(torch_metrics["perplexity"], rel=1e-4)
    assert onnx_metrics["confusion"] == torch_metrics["confusion"]
    assert onnx_metrics["generated_tokens"] == torch_metrics["generated_tokens"]
    assert manifest.read_manifest(tmp_path / "m-onnx")["params"]["text_template"] == TEMPLATE


def test_evaluate_json_on_an_int4_folder_imports_no_torch(folders, seed_data):
    """The template comes from the int4 folder's manifest, carried dataset -> adapter -> merge -> build."""
    assert manifest.read_manifest(folders["int4"])["params"]["text_template"] == TEMPLATE
    out, heavy = run_cli_without_torch("evaluate", "--model", str(folders["int4"]), "--data", str(seed_data),
                                       "--max_samples", "30", "--json")
    metrics = json.loads(out)
    assert heavy == []
    assert KEYS <= set(metrics) and metrics["model_kind"] == "onnx" and metrics["n"] == 30
    assert metrics["perplexity"] > 1 and metrics["size_bytes"] == sum(
        p.stat().st_size for p in folders["int4"].iterdir())
    assert set(metrics["confusion"]) <= {"joy", "surprise", "fear", "sadness"}


def test_command_reads_a_dataset_folder_and_prints_a_table(folders, capsys):
    from slmforge.cli import main

    assert main(["evaluate", "--model", str(folders["int4"]), "--data", str(folders["dataset"]),
                 "--max_samples", "10", "--label", "int4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("int4 (onnx): accuracy ") and "true \\ predicted" in out


def test_template_errors_are_invalid_input(folders, tiny_model_dir, demo_data, tmp_path, capsys):
    from slmforge.cli import main

    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(demo_data)]) == 2
    assert "has no slmforge.json to take the text template from; pass --template" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(folders["int4"]), "--data", str(demo_data),
                 "--template", "{phrase} => {label}"]) == 2
    assert "missing column 'label'" in capsys.readouterr().err
    empty = tmp_path / "dataset"
    empty.mkdir()
    assert evaluate.main(["--model", str(folders["int4"]), "--dataset", str(empty), "--metrics", str(tmp_path / "m")]) == 2
    assert not (tmp_path / "m").exists()


def test_answer_is_the_first_line_before_the_suffix():
    assert answer_of("joy\n### Text: more") == "joy"
    assert answer_of("\n  fear  \nsadness") == "fear"
    assert answer_of("surprise<|end|>\n", "<|end|>") == "surprise"
    assert answer_of("") == ""
    stop = answer_finished("<|end|>")
    assert not stop("\n") and not stop("jo") and stop("joy\n") and stop("joy<|end|>")


def test_build_gates_reuse_the_merged_evaluation_and_refuse_a_foreign_one(folders, tmp_path, capsys):
    """The int4 gates take the source model's answers from its evaluate output when given one: the
    same check as answering every row again, and an evaluation of other rows or answer lengths is
    refused in one line before any work."""
    import shutil

    reference = tmp_path / "merged-metrics"
    _evaluate_step(folders["merged"], folders["dataset"], reference, "merged")  # 40 rows, 4 new tokens
    common = ["--model", str(folders["merged"]), "--precision", "int4", "--check_max_samples", "40",
              "--max_accuracy_drop", "1.0"]
    dataset = ["--dataset", str(folders["dataset"])]
    assert build_onnx.main([*common, *dataset, "--check_max_new_tokens", "4", "--output", str(tmp_path / "computed")]) == 0
    assert build_onnx.main([*common, *dataset, "--check_max_new_tokens", "4", "--reference", str(reference),
                            "--output", str(tmp_path / "reused")]) == 0
    computed, reused = (manifest.read_manifest(tmp_path / name)["metrics"]["check"]["answers"]
                        for name in ("computed", "reused"))
    assert reused == computed and reused["rows"] == 40

    other = tmp_path / "other-dataset"
    shutil.copytree(folders["dataset"], other)
    rows = (other / "eval_rows.jsonl").read_text().splitlines(keepends=True)
    (other / "eval_rows.jsonl").write_text("".join(rows[1:] + rows[:1]))  # the same rows, another order
    capsys.readouterr()
    for argv, message in ((["--dataset", str(other), "--check_max_new_tokens", "4"], "it evaluated another dataset"),
                          ([*dataset, "--check_max_new_tokens", "8"], "the gates need 40 with 8")):
        assert build_onnx.main([*common, *argv, "--reference", str(reference), "--output", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "bad").exists()


def test_a_whole_row_perplexity_is_read_from_the_answering_pass(folders):
    """With every token labelled (loss_on: all), the perplexity's prompt positions are scored in the
    teacher-forced answering pass itself: one batched pass, and the same value a separate pass gives."""
    import math

    from slmforge.models import answers, backend as backends, eval_data, evaluation
    from slmforge.models.verified_greedy import score_positions

    rows, _, template = eval_data.read_dataset_folder(folders["dataset"], 20)
    backend = backends.load_backend(folders["merged"], None)
    whole = []
    for row in rows:
        prompt, expected = answers.encode_row(backend, template, row)
        whole.append((prompt + expected, prompt + expected))  # every token labelled
    passes, score = [], backend.score
    backend.score = lambda requests: passes.append(len(requests)) or score(requests)
    try:
        metrics = evaluation.evaluate(backend, rows, template, examples=whole, max_new_tokens=4)
    finally:
        backend.score = score
    assert passes == [len(rows)]  # the answers' and the perplexity's positions in one pass

    separate = score_positions(backend, {tuple(ids): set(range(len(ids) - 1)) for ids, _ in whole})
    count = sum(len(v) for v in separate.values())
    assert metrics["perplexity_tokens"] == count
    assert metrics["perplexity"] == pytest.approx(math.exp(-sum(sum(v.values()) for v in separate.values()) / count),
                                                  rel=1e-5)


def test_an_onnx_evaluation_takes_the_answers_its_build_gates_gave(folders, tmp_path):
    """build_onnx's gates answer the eval rows with the built model the way evaluate does; evaluate takes
    those answers for the very same requests (rows, max_new_tokens, dataset): the metrics a fresh
    evaluation gives, timings aside, and it says so. Anything else is answered afresh."""
    import shutil

    from slmforge.models import gate_answers

    gated, plain = tmp_path / "gated", tmp_path / "plain"
    assert build_onnx.main(["--model", str(folders["merged"]), "--precision", "int4",
                            "--dataset", str(folders["dataset"]), "--check_max_samples", "40", "--check_max_new_tokens", "4", "--max_accuracy_drop", "1.0",
                            "--output", str(gated)]) == 0
    found = manifest.read_manifest(gated)
    assert found[gate_answers.KEY]["rows"] == 40 and "gate_answers" not in found["metrics"]
    shutil.copytree(gated, plain)  # the same model without the record: evaluated the way it was before
    del found[gate_answers.KEY]
    (plain / manifest.MANIFEST).write_text(json.dumps(found))
    assert manifest.is_finished(plain)

    reused = _evaluate_step(gated, folders["dataset"], tmp_path / "m-reused", "onnx")  # 40 rows, 4 new tokens
    fresh = _evaluate_step(plain, folders["dataset"], tmp_path / "m-fresh", "onnx")
    assert reused["answers_from"] == "build_onnx gate" and "answers_from" not in fresh
    assert reused["generation_seconds"] == round(manifest.read_manifest(gated)[gate_answers.KEY]["seconds"], 3) > 0
    timings = {"generation_seconds", "evaluation_seconds", "tokens_per_second", "answers_from", "size_bytes"}
    assert {k: v for k, v in reused.items() if k not in timings} == {k: v for k, v in fresh.items() if k not in timings}
    assert reused["perplexity"] == fresh["perplexity"] and reused["predictions"] == fresh["predictions"]
    assert reused["size_bytes"] - fresh["size_bytes"] == ((gated / manifest.MANIFEST).stat().st_size
                                                          - (plain / manifest.MANIFEST).stat().st_size)

    other = tmp_path / "other-dataset"  # the same rows in another order: another dataset
    shutil.copytree(folders["dataset"], other)
    rows = (other / "eval_rows.jsonl").read_text().splitlines(keepends=True)
    (other / "eval_rows.jsonl").write_text("".join(rows[1:] + rows[:1]))
    found = manifest.read_manifest(other)
    (other / manifest.MANIFEST).write_text(json.dumps({**found, "outputs_digest": manifest.digest_path(other)}))
    assert manifest.is_finished(other)
    for dataset, rows, new_tokens in ((other, 40, 4), (folders["dataset"], 40, 3), (folders["dataset"], 41, 4),
                                      (folders["dataset"], 39, 4)):
        out = tmp_path / f"m-{rows}-{new_tokens}-{dataset.name}"
        assert evaluate.main(["--model", str(gated), "--dataset", str(dataset), "--max_samples", str(rows),
                              "--max_new_tokens", str(new_tokens), "--metrics", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert "answers_from" not in metrics and metrics["n"] == rows, (dataset, rows, new_tokens)
