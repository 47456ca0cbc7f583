"""Two recipes with ExtractAdapters on the tiny model, one shared cache (issue 22): the `two_runs` fixture
(conftest.py) of test_separate_adapters and test_register_adapters, run once per session.

The first is written as olive-recipes writes its LoRA recipes (lower-case pass types, OnnxConversion ->
OrtTransformersOptimization -> ExtractAdapters -> ModelBuilder with metadata_only), the second in the flat
shape with ExtractAdapters after ModelBuilder; each fine-tunes on its own half of the tone rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from local_pipeline import run_slmforge

TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
DATA = {"name": "tones", "type": "HuggingfaceContainer",
        "load_dataset_config": {"data_name": "json", "data_files": "DATA"},
        "pre_process_data_config": {"text_cols": ["phrase", "tone"], "text_template": TEMPLATE,
                                    "corpus_strategy": "line-by-line", "source_max_len": 64, "loss_on": "completion"}}
TRAIN = {"r": 8, "alpha": 16, "lora_dropout": 0.0, "train_data_config": "tones", "eval_dataset_size": 0.25,
         "training_args": {"seed": 0, "per_device_train_batch_size": 8, "learning_rate": 0.003, "max_steps": 20}}


def olive_recipes_shape(model: Path, data: str, out: str) -> dict:
    return {
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "data_configs": [{**DATA, "load_dataset_config": {"data_name": "json", "data_files": data}}],
        "passes": {
            "l": {"type": "lora", **TRAIN},
            "c": {"type": "OnnxConversion", "use_dynamo_exporter": True, "save_metadata_for_token_generation": True,
                  "torch_dtype": "float32"},
            "o": {"type": "OrtTransformersOptimization", "model_type": "gpt2", "opt_level": 0, "keep_io_types": False},
            "e": {"type": "extractadapters", "make_inputs": True},
            "m": {"type": "ModelBuilder", "metadata_only": True, "precision": "int4"},
        },
        "cache_dir": "cache", "output_dir": out, "evaluate": {"max_samples": 16, "max_new_tokens": 4},
    }


def flat_shape(model: Path, data: str, out: str) -> dict:
    return {
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "data_configs": [{**DATA, "load_dataset_config": {"data_name": "json", "data_files": data}}],
        "passes": {"lora": {"type": "LoRA", **TRAIN, "training_args": {**TRAIN["training_args"], "seed": 1}},
                   "builder": {"type": "ModelBuilder", "precision": "int4"},
                   "extract": {"type": "ExtractAdapters"}},
        "cache_dir": "cache", "output_dir": out, "evaluate": {"max_samples": 16, "max_new_tokens": 4},
    }


def run_two_recipes(tiny_model_dir: Path, demo_data: Path, folder: Path) -> dict:
    rows = demo_data.read_text(encoding="utf-8").splitlines()
    (folder / "tones-a.jsonl").write_text("\n".join(rows[::2]) + "\n", encoding="utf-8")  # other data for each
    (folder / "tones-b.jsonl").write_text("\n".join(rows[1::2]) + "\n", encoding="utf-8")
    outcomes = {}
    for name, shape in (("a", olive_recipes_shape), ("b", flat_shape)):
        recipe = folder / f"recipe-{name}.json"
        recipe.write_text(json.dumps(shape(tiny_model_dir, f"tones-{name}.jsonl", f"out-{name}")), encoding="utf-8")
        outcomes[name] = run_slmforge(recipe, folder / "home")
        assert outcomes[name].rc == 0, outcomes[name].stderr[-3000:]
    return outcomes
