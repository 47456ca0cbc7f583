"""The model card: README.md in the output's model folder (base model, data, recipe, metrics, how to load it).

Written by every successful run from its run.json record. The card is not part of the model's content:
the folder still matches its manifest with the card set aside (manifest.content_matches), so writing it
never makes a rerun copy the model again, nor the folder look edited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slmforge.contract import manifest
from slmforge.contract.files import write_atomic
from slmforge.recipe.loaded import LoadedRecipe

CARD = manifest.CARD
_FIGURES = (("accuracy", "accuracy", 3), ("n", "rows", 0), ("perplexity", "perplexity", 2),
            ("tokens_per_second", "tokens/s", 0))


def write_card(folder: Path, record: dict[str, Any], loaded: LoadedRecipe) -> Path:
    """Write the card into `folder` (the model folder being staged, or the output's own when it was kept); its
    text names the model where the run leaves it (run.json's model path)."""
    path = folder / CARD
    shown = Path((record.get("model") or {}).get("path") or folder)
    write_atomic(path, card_text(record, loaded, shown, _prompt(folder)))
    return path


def card_text(record: dict[str, Any], loaded: LoadedRecipe, model_dir: Path, prompt: str) -> str:
    recipe = loaded.recipe
    reg = record.get("registered") or {}
    title = reg.get("name") or model_dir.parent.name
    base = recipe.input_model.model_path
    base_text = base if isinstance(base, str) else getattr(base, "uri", str(base))
    kind = (record.get("model") or {}).get("kind", "model")
    what = {"onnx": "An onnxruntime-genai (ONNX) model", "merged": "A Hugging Face model (the adapter merged)",
            "adapter": "A peft adapter"}.get(kind, f"A {kind} model")
    lines = [f"# {title}", "",
             f"{what} made by slmforge from the recipe `{record.get('recipe')}` "
             f"(digest `{(record.get('recipe_digest') or '')[:12]}`) on {record.get('created', '')}.", "",
             f"- base model: `{base_text}`"]
    if reg:
        lines.append(f"- registered: `{reg.get('name')}` version {reg.get('version')} in `{reg.get('tracking_uri')}`")
    lines += [f"- {d}" for d in _data_lines(record)]
    if record.get("scored"):
        from slmforge.backends.local.report import scored_text

        lines.append(f"- evaluated on: {scored_text(record)}")
    lines += ["", "## Metrics", "", "| model | " + " | ".join(h for _, h, _ in _FIGURES) + " |",
              "|---" * (len(_FIGURES) + 1) + "|"]
    for label, m in (record.get("evaluation") or {}).items():
        cells = [_num(m.get(key), digits) for key, _, digits in _FIGURES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Use it", "", *_usage(kind, model_dir, prompt), "", "## Recipe", "", "```json",
              json.dumps(loaded.raw, indent=2, ensure_ascii=False), "```"]
    return "\n".join(lines) + "\n"


def _data_lines(record: dict[str, Any]) -> list[str]:
    """The data files the run read, with their digests (the dataset folder's manifest: `inputs`)."""
    for step in record.get("steps", []):
        found = manifest.read_manifest(step["output"]) if step.get("output") else None
        if found and "source_digest" in found:  # the folder load_data wrote
            roles = {"data": "training data", "eval_data": "eval data"}
            files = [f"{roles[role]}: {_source(v)} (sha256 `{str(v.get('digest'))[:16]}`)"
                     for role, v in (found.get("inputs") or {}).items() if role in roles and isinstance(v, dict)]
            return files + [f"tokenized dataset: digest `{str(found.get('outputs_digest'))[:16]}`"]
    return []


def _source(record: dict[str, Any]) -> str:
    """A data input as the manifest records it: a file (its path), or a hub dataset (its name and commit)."""
    if record.get("path"):
        return f"`{Path(record['path']).name}`"
    return f"hub dataset `{record.get('hub')}` at commit `{str(record.get('revision'))[:12]}`"


def _usage(kind: str, model_dir: Path, prompt: str) -> list[str]:
    if kind != "onnx":  # a merged Hugging Face model, or a peft adapter on its base
        loader = "AutoPeftModelForCausalLM" if kind == "adapter" else "AutoModelForCausalLM"
        source = "peft" if kind == "adapter" else "transformers"
        return ["```python", f"from {source} import {loader}", "from transformers import AutoTokenizer", "",
                f"model = {loader}.from_pretrained({str(model_dir)!r})",
                f"tokenizer = AutoTokenizer.from_pretrained({str(model_dir)!r})",
                f"ids = tokenizer({prompt!r}, return_tensors='pt').input_ids",
                "print(tokenizer.decode(model.generate(ids, max_new_tokens=8)[0][ids.shape[1]:]))", "```"]
    return ["With onnxruntime-genai (`pip install onnxruntime-genai`), or `slmforge predict --model "
            f"{model_dir} TEXT`:", "",
            "```python", "import onnxruntime_genai as og", "",
            f"model = og.Model({str(model_dir)!r})", "tokenizer = og.Tokenizer(model)",
            f"prompt = {prompt!r}", "params = og.GeneratorParams(model)",
            "params.set_search_options(do_sample=False, max_length=64)",
            "generator = og.Generator(model, params)", "generator.append_tokens(tokenizer.encode(prompt))",
            "while not generator.is_done():", "    generator.generate_next_token()",
            "answer = tokenizer.decode(generator.get_sequence(0)[len(tokenizer.encode(prompt)):])",
            "print(answer)", "```"]


def _prompt(model_dir: Path) -> str:
    """A prompt in the model's training template (its first field filled with an example), or plain text."""
    from slmforge.contract.folders import carried_template
    from slmforge.data.template import Template

    text = carried_template(model_dir)
    if not text:
        return "I can't wait for the weekend!"
    template = Template(text)
    inputs = [f for f in dict.fromkeys(template.fields) if f != template.answer_field]
    return template.prompt({f: "I can't wait for the weekend!" for f in inputs})


def _num(value: Any, digits: int) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
