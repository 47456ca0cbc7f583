"""A recipe with ExtractAdapters submitted to the emulated workspace (issue 22): the compiled pipeline has an
`adapter` output beside the model (the shared base), and after the job both are registered through the SDK,
the adapter tagged with its base. A second recipe on the same base registers a second adapter and reuses
the base version; `slmforge models --workspace` lists both adapters under it.

Cheap on purpose: the tiny model, two training steps, and data pre-processed by a user_script (token ids,
so no evaluate step or answer gates run).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from slmforge.cli import main as cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parents[1]
SCRIPT = '''\
from olive.data.registry import Registry


@Registry.register_pre_process("tone_ids")
def tone_ids(dataset, model_name, task=None, **kwargs):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_name)
    return dataset.map(lambda r: tok(r["phrase"] + " " + r["tone"]), remove_columns=dataset.column_names)
'''


def _recipe(folder: Path, model: Path, name: str, seed: int, *, rows: bool = False) -> Path:
    """Token ids from a user_script (no evaluation), or with `rows` text rows: then the adapter's evaluation
    on the base and its gates run too (no accuracy bound: the tiny model is random)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "user_script.py").write_text(SCRIPT, encoding="utf-8")
    shutil.copy(REPO / "src" / "slmforge" / "data" / "tones.jsonl", folder / "rows.jsonl")
    data = {"name": "tones", "type": "HuggingfaceContainer", "user_script": "user_script.py",
            "load_dataset_config": {"data_name": "json", "data_files": "rows.jsonl"},
            "pre_process_data_config": {"type": "tone_ids"}}
    if rows:
        data = {"name": "tones", "type": "HuggingfaceContainer",
                "load_dataset_config": {"data_name": "json", "data_files": "rows.jsonl"},
                "pre_process_data_config": {"text_cols": ["phrase", "tone"], "source_max_len": 64,
                                            "text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                                            "corpus_strategy": "line-by-line", "loss_on": "completion"}}
    recipe = {
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "data_configs": [data],
        "passes": {"lora": {"type": "LoRA", "r": 4, "alpha": 8, "train_data_config": "tones",
                            "training_args": {"max_steps": 2, "per_device_train_batch_size": 4, "seed": seed}},
                   "builder": {"type": "ModelBuilder", "precision": "int4", **({"max_accuracy_drop": 1.0} if rows else {})},
                   "extract": {"type": "ExtractAdapters"}},
        "cache_dir": "cache", "output_dir": "out", "register": {"name": name},
        "evaluate": {"max_samples": 8, "max_new_tokens": 4},
    }
    path = folder / "recipe.json"
    path.write_text(json.dumps(recipe, indent=1), encoding="utf-8")
    return path


def _submit(recipe: Path, ws: str) -> str:
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("SLMFORGE_POLL_SECONDS", "1")
        rc = cli(["submit", str(recipe), "--workspace", ws, "--compute", "cpu-cluster", "--wait"])
    assert rc == 0, out.getvalue()
    return out.getvalue()


def test_a_submitted_adapter_and_its_base_are_registered_once_per_base(emulator, tiny_model_dir, tmp_path, capsys):
    from slmforge.emulator.client import ml_client
    from slmforge.models.adapter_slots import SLOTS_FILE

    ws = str(emulator[1])
    client = ml_client(ws)
    out = _submit(_recipe(tmp_path / "a", tiny_model_dir, "tiny-tones-a", seed=1), ws)
    job = re.search(r"^submitted (\S+)$", out, re.M).group(1)
    outputs = client.jobs.get(job).outputs
    assert {"model", "adapter"} <= set(outputs) and outputs["adapter"].name == "tiny-tones-a"
    base_name, base_version = re.search(r"^registered base (\S+):(\S+)$", out, re.M).groups()
    adapter = re.search(r"^registered adapter tiny-tones-a:(\S+) on base (\S+)$", out, re.M)
    assert adapter and adapter.group(2) == f"{base_name}:{base_version}", out
    assert base_name == f"{tiny_model_dir.name}-int4-base"  # registry/rules.py default_base_name

    # The registered base is the job's model output, and its version is the digest the adapter was made for.
    dl = tmp_path / "dl"
    client.models.download(base_name, base_version, download_path=str(dl))
    slots = json.loads(next(dl.rglob(SLOTS_FILE)).read_text())
    assert base_version == slots["digest"][:12]
    a = client.models.get("tiny-tones-a", adapter.group(1))
    assert (a.tags["slmforge.kind"], a.tags["slmforge.base_name"], a.tags["slmforge.base_version"]) == \
        ("adapter", base_name, base_version)
    assert a.tags["slmforge.base_digest"] == slots["digest"] and a.tags["slmforge.job"] == job
    client.models.download("tiny-tones-a", adapter.group(1), download_path=str(tmp_path / "dl-a"))
    assert list((tmp_path / "dl-a").rglob("tiny-tones-a.onnx_adapter"))
    # `slmforge download`: the base and the adapter where a local run leaves them (model/, adapters/)
    assert cli(["download", job, "--workspace", ws, "-o", str(tmp_path / "job")]) == 0
    assert (tmp_path / "job" / "model" / SLOTS_FILE).is_file()
    assert (tmp_path / "job" / "adapters" / "tiny-tones-a.onnx_adapter.json").is_file()
    record = json.loads((tmp_path / "job" / "run.json").read_text())
    assert record["adapter"]["path"] == str(tmp_path / "job" / "adapters") and record["adapter"]["name"] == "tiny-tones-a"

    # A second recipe fine-tuning the same base (other data and build gates): a second adapter, carrying its
    # evaluation on the base, and the same base version (no new one).
    out = _submit(_recipe(tmp_path / "b", tiny_model_dir, "tiny-tones-b", seed=2, rows=True), ws)
    assert re.search(rf"^registered base {base_name}:{base_version}$", out, re.M), out
    b = re.search(rf"^registered adapter tiny-tones-b:(\S+) on base {base_name}:{base_version}$", out, re.M)
    assert b, out
    assert [m.version for m in client.models.list(name=base_name)] == [base_version]
    job_b = client.jobs.get(re.search(r"^submitted (\S+)$", out, re.M).group(1))
    assert {"model", "adapter", "adapter_metrics"} <= set(job_b.outputs) and "metrics" not in job_b.outputs
    b_tags = client.models.get("tiny-tones-b", b.group(1)).tags
    assert b_tags["metrics.label"] == "onnx" and 0.0 <= float(b_tags["metrics.accuracy"]) <= 1.0
    assert "metrics.accuracy" not in a.tags  # token ids only: nothing evaluated the first adapter

    capsys.readouterr()
    assert cli(["models", "--workspace", ws]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{base_name} "))
    assert re.match(r"^ +├─ adapter tiny-tones-a ", lines[at + 1]), lines
    assert re.match(r"^ +└─ adapter tiny-tones-b ", lines[at + 2]), lines
    assert not any(line.startswith("tiny-tones-") for line in lines), lines
