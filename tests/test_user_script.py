"""A recipe's `user_script` (issue 19 part 4): Olive data components named by `type` run the user's own
functions — registered with Olive's decorators (slmforge's stand-in for `olive.data.registry` when Olive
is not installed) or plain — inside load_data; validate finds them without running them; a failure in
them is one line naming the file, the line and the function; the script's content is in the cache key.

The scripts here are written for these tests, in the manner of Olive's published ones
(examples/open_llama/lora_user_script.py at v0.4.0 to v0.6.2: a registered loader filtering rows).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slmforge.backends.local.runner import LocalRunner
from slmforge.recipe.graph import build_graph
from slmforge.recipe.loaded import LoadedRecipe
from slmforge.recipe.loader import load_recipe

from local_pipeline import REPO, run_slmforge

TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"

REGISTERED = '''\
from pathlib import Path

import datasets

from olive.constants import Framework
from olive.data.registry import Registry
from olive.model import PyTorchModelHandler


def dummy_inputs(model: PyTorchModelHandler, framework=Framework.PYTORCH):
    """Published scripts import these names for their export helpers (examples/llama2/user_script.py)."""


def _read(name):
    import json

    return [json.loads(line) for line in (Path(__file__).parent / name).read_text().splitlines()]


@Registry.register_dataset()
def load_tone_rows(data_name: str, split: str, language: str, token=True):
    """Like Olive's load_tiny_code_dataset: load, then keep one language."""
    rows = datasets.Dataset.from_list(_read(data_name))
    return rows.filter(lambda r: r["lang"] == language)
'''

PLAIN = '''\
import pandas as pd


def frame(data_name):
    import json
    from pathlib import Path

    rows = [json.loads(line) for line in (Path(__file__).parent / data_name).read_text().splitlines()]
    return pd.DataFrame(rows)


def tokenize(dataset, model_name, max_len=16):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_name)
    out = []
    for text in dataset["phrase"]:
        ids = tok(text)["input_ids"][:max_len]
        out.append({"input_ids": ids, "labels": [-100] + ids[1:]})
    return out
'''

FAILING = '''\
from olive.data.registry import Registry


def _pick(row):
    return row["missing_column"]


@Registry.register_dataset("broken_rows")
def load(data_name):
    return [{"phrase": _pick({"a": 1}), "tone": "joy"}]
'''


def _rows(folder: Path, n: int = 24) -> None:
    tones = ["joy", "fear", "sadness", "surprise"]
    lines = [json.dumps({"phrase": f"{i} phrase", "tone": tones[i % 4], "lang": "en" if i % 3 else "fr"})
             for i in range(n)]
    (folder / "rows.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _recipe(folder: Path, model: Path, script: str, data_config: dict, *, passes: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _rows(folder)
    (folder / "user_script.py").write_text(script, encoding="utf-8")
    recipe = {
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "data_configs": [{"name": "tones", "user_script": "user_script.py", **data_config}],
        "passes": passes or {"lora": {"type": "LoRA", "r": 4, "alpha": 8, "train_data_config": "tones",
                                      "training_args": {"max_steps": 2, "per_device_train_batch_size": 4}}},
        "cache_dir": "cache", "output_dir": "out", "register": {"enabled": False},
    }
    path = folder / "recipe.json"
    path.write_text(json.dumps(recipe, indent=2), encoding="utf-8")
    return path


REGISTERED_CONFIG = {
    "load_dataset_config": {"type": "load_tone_rows",
                            "params": {"data_name": "rows.jsonl", "split": "train", "language": "en"}},
    "pre_process_data_config": {"text_template": TEMPLATE, "strategy": "line-by-line", "max_seq_len": 64},
}
PLAIN_CONFIG = {
    "load_dataset_config": {"type": "frame", "data_name": "rows.jsonl"},
    "pre_process_data_config": {"type": "tokenize", "max_len": 12},
}


def _argv(recipe: Path) -> tuple[list[str], LoadedRecipe, str]:
    """The recipe's load_data argv as the local runner renders it (its generated spec written), its key."""
    loaded = load_recipe(recipe)
    graph = build_graph(loaded)
    prepared = LocalRunner(loaded, graph).prepare(graph.step("load_data"))
    for path, text in prepared.texts.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    return prepared.argv[prepared.argv.index("slmforge.steps.load_data") + 1:], loaded, prepared.entry.key


def _load_data(recipe: Path) -> tuple[Path, LoadedRecipe]:
    """Run the recipe's load_data step in-process, with the argv Azure ML would run."""
    from slmforge.steps import load_data

    argv, loaded, _ = _argv(recipe)
    assert load_data.main(argv) == 0
    return Path(argv[argv.index("--dataset") + 1]), loaded


def _step_process(recipe: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The load_data step as Azure ML runs it: `python -m slmforge.steps.load_data ARGV`."""
    argv, _, _ = _argv(recipe)
    return subprocess.run([sys.executable, "-m", "slmforge.steps.load_data", *argv], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_a_registered_loader_feeds_the_text_template(tmp_path, tiny_model_dir):
    """`@Registry.register_dataset()` from `olive.data.registry` imports unchanged (Olive is not installed:
    the stand-in serves it), the loader gets its params, its rows go through the recipe's template, and
    the manifest holds the script's digest."""
    from transformers import AutoTokenizer

    assert subprocess.run([sys.executable, "-c", "import olive"], capture_output=True).returncode != 0
    recipe = _recipe(tmp_path / "r", tiny_model_dir, REGISTERED, REGISTERED_CONFIG)
    folder, _ = _load_data(recipe)
    data = json.loads((folder / "slmforge.json").read_text())
    assert data["metrics"]["rows"] == 16  # the loader kept the 16 English rows of 24
    script = (tmp_path / "r" / "user_script.py").read_bytes()
    assert data["inputs"]["user_script"]["digest"] == hashlib.sha256(script).hexdigest()
    assert data["params"]["text_template"] == TEMPLATE
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [tok.decode(r["input_ids"]) for r in _jsonl(folder / "train.jsonl")]
    assert all("### The tone is:" in t for t in texts) and len(texts) == data["metrics"]["train_examples"]
    assert "olive" not in sys.modules  # the stand-in is there only while the script runs


def test_a_plain_pre_process_function_gives_the_token_ids(tmp_path, tiny_model_dir):
    """Plain functions (no decorator): a loader returning a pandas DataFrame and a pre-process returning
    token ids, called as Olive calls it (the dataset first, model_name filled in from the input model).
    Its ids and labels are written as they are; with no rows to answer, no evaluate step is planned."""
    recipe = _recipe(tmp_path / "p", tiny_model_dir, PLAIN, PLAIN_CONFIG, passes={
        "lora": {"type": "LoRA", "r": 4, "alpha": 8, "train_data_config": "tones", "eval_dataset_size": 4,
                 "training_args": {"max_steps": 2}},
        "merge": {"type": "MergeAdapterWeights"}})
    folder, loaded = _load_data(recipe)
    records = _jsonl(folder / "train.jsonl") + _jsonl(folder / "eval.jsonl")
    assert len(records) == 24 and len(_jsonl(folder / "eval.jsonl")) == 4
    assert all(len(r["input_ids"]) <= 12 and r["labels"][0] == -100 and r["labels"][1:] == r["input_ids"][1:]
               for r in records)
    assert [s.component for s in build_graph(loaded).steps] == ["load_data", "finetune", "merge"]


def test_the_script_is_in_the_cache_key_and_a_full_run_reaches_a_merged_model(tmp_path, tiny_model_dir):
    """One run to a merged model through `slmforge run`; editing the script changes load_data's key
    (a comment too: the key is the file's content), leaving it alone keeps it."""
    recipe = _recipe(tmp_path / "k", tiny_model_dir, REGISTERED, REGISTERED_CONFIG, passes={
        "lora": {"type": "LoRA", "r": 4, "alpha": 8, "train_data_config": "tones", "eval_dataset_size": 4,
                 "training_args": {"max_steps": 4, "per_device_train_batch_size": 4}},
        "merge": {"type": "MergeAdapterWeights"}})
    raw = json.loads(recipe.read_text())
    raw["evaluate"] = {"max_samples": 4, "max_new_tokens": 2}
    recipe.write_text(json.dumps(raw))
    outcome = run_slmforge(recipe, tmp_path / "home")
    assert outcome.rc == 0, outcome.stderr[-2000:]
    assert (outcome.out_dir / "model" / "config.json").is_file()
    assert outcome.statuses()["load_data"] == "ran"

    def key() -> str:
        return _argv(recipe)[2]

    first = key()
    assert key() == first
    script = tmp_path / "k" / "user_script.py"
    script.write_text(script.read_text() + "# edited\n")
    assert key() != first


def test_a_failure_in_user_code_is_one_line_naming_file_line_and_function(tmp_path, tiny_model_dir):
    """As Azure ML runs the step (`python -m slmforge.steps.load_data`): exit 2, one line, no traceback,
    naming the user's file and the line inside it where the error was raised, and the function."""
    recipe = _recipe(tmp_path / "f", tiny_model_dir, FAILING, {
        "load_dataset_config": {"type": "broken_rows", "data_name": "rows.jsonl"},
        "pre_process_data_config": {"text_template": TEMPLATE, "max_seq_len": 64}})
    done = _step_process(recipe, tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    script = tmp_path / "f" / "user_script.py"
    line = next(i for i, text in enumerate(script.read_text().splitlines(), 1) if "missing_column" in text)
    assert f"{script}:{line} in _pick()" in lines[0], lines[0]
    assert "load_dataset_config.type 'broken_rows' raised KeyError: 'missing_column'" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("config, expected", [
    ({**REGISTERED_CONFIG, "load_dataset_config": {"type": "load_tone_row", "data_name": "rows.jsonl",
                                                   "split": "train", "language": "en"}},
     "data_configs[0].load_dataset_config.type: user_script.py has no load_dataset function 'load_tone_row'; "
     "did you mean 'load_tone_rows'?"),
    ({**REGISTERED_CONFIG, "load_dataset_config": {"type": "load_tone_rows", "data_name": "rows.jsonl",
                                                   "split": "train", "languge": "en"}},
     "data_configs[0].load_dataset_config: 'languge' is not a parameter of load_tone_rows(); did you mean "
     "'language'?"),
    ({**REGISTERED_CONFIG, "user_script": "nowhere.py"}, "data_configs[0].user_script: file 'nowhere.py' not found"),
    ({**REGISTERED_CONFIG, "script_dir": "."}, "data_configs[0].script_dir: folder '.' holds the recipe's cache_dir"),
    ({**REGISTERED_CONFIG, "load_dataset_config": {"type": "dummy_dataset"}},
     "data_configs[0].load_dataset_config.type: 'dummy_dataset' (one of Olive's own load_dataset components) is "
     "not supported by slmforge yet"),
])
def test_validate_finds_the_function_without_running_it(tmp_path, tiny_model_dir, config, expected):
    """validate reads the script with `ast` (nothing of it runs: a module-level raise is never reached) and
    refuses a function it does not define, a parameter the function does not take, a missing file:
    one line each, exit 2."""
    recipe = _recipe(tmp_path / "v", tiny_model_dir, "raise SystemExit('ran')\n" + REGISTERED, config)
    done = subprocess.run([sys.executable, "-m", "slmforge.cli", "validate", str(recipe)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert expected in lines[0], lines[0]


def test_what_the_stand_in_lacks_is_refused_by_name(tmp_path, tiny_model_dir):
    """A script importing a part of Olive the stand-in does not provide: one line naming the import and
    what the stand-in has, not a ModuleNotFoundError traceback."""
    script = "from olive.workflows import run as olive_run\n" + REGISTERED
    recipe = _recipe(tmp_path / "s", tiny_model_dir, script, REGISTERED_CONFIG)
    done = _step_process(recipe, tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].endswith("user_script.py:1: imports olive.workflows, which slmforge's stand-in for Olive "
                             "does not provide (it has olive.data.registry, olive.constants, olive.model); "
                             "install Olive to use it"), lines[0]


REGISTERED_PRE = '''\
import datasets

from olive.data.registry import Registry


@Registry.register_pre_process("Tone_Ids")
def tone_ids(dataset, model_name, task=None, **kwargs):
    from transformers import AutoTokenizer

    assert isinstance(dataset, datasets.Dataset) and task == "text-generation"
    tok = AutoTokenizer.from_pretrained(model_name)
    return dataset.map(lambda r: tok(r["phrase"] + " " + r["tone"]), remove_columns=dataset.column_names)
'''


def test_a_registered_pre_process_reads_the_data_file_as_olive_hands_it(tmp_path, tiny_model_dir):
    """A data file with a registered pre-process (looked up case-insensitively, as Olive does): the function
    gets the file as a datasets.Dataset and `task` filled in; without labels the ids are learned whole."""
    from transformers import AutoTokenizer

    recipe = _recipe(tmp_path / "d", tiny_model_dir, REGISTERED_PRE, {
        "load_dataset_config": {"data_name": "json", "data_files": "rows.jsonl"},
        "pre_process_data_config": {"type": "tone_ids"}})
    folder, _ = _load_data(recipe)
    records = _jsonl(folder / "train.jsonl") + _jsonl(folder / "eval.jsonl")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert sorted(tok.decode(r["input_ids"], skip_special_tokens=True) for r in records) == \
        sorted(f"{i} phrase {t}" for i, t in zip(range(24), ["joy", "fear", "sadness", "surprise"] * 6))
    assert all(r["labels"] == r["input_ids"] for r in records)


def test_olive_04_components_and_shared_params_reach_the_function_as_olive_passes_them(tmp_path, tiny_model_dir):
    """Olive 0.4/0.5's shape (examples/open_llama at v0.4.0): `components.load_dataset.type`, the shared
    `params_config` (its keys go to each function that takes them, as Olive's fill_in_params does: `batch_size`
    is not the loader's) and `component_kwargs.load_dataset`."""
    recipe = _recipe(tmp_path / "o", tiny_model_dir, REGISTERED, {})
    raw = json.loads(recipe.read_text())
    raw["data_configs"] = {"tones": {
        "name": "tones", "type": "HuggingfaceContainer", "user_script": "user_script.py",
        "components": {"load_dataset": {"type": "load_tone_rows"}},
        "params_config": {"data_name": "rows.jsonl", "split": "train", "batch_size": 2, "component_kwargs": {
            "load_dataset": {"language": "fr"},
            "pre_process_data": {"text_template": TEMPLATE, "corpus_strategy": "line-by-line",
                                 "source_max_len": 64}}}}}
    recipe.write_text(json.dumps(raw))
    argv, _, _ = _argv(recipe)
    spec = json.loads(Path(argv[argv.index("--spec") + 1]).read_text())
    assert spec["load_dataset"] == {"type": "load_tone_rows", "params": {
        "data_name": "rows.jsonl", "split": "train", "language": "fr"}}
    folder, _ = _load_data(recipe)
    assert json.loads((folder / "slmforge.json").read_text())["metrics"]["rows"] == 8  # the 8 French rows


def test_script_dir_holds_the_script_and_its_helpers(tmp_path, tiny_model_dir):
    """With script_dir, the script is found there and imports its neighbours (Olive puts script_dir on
    sys.path); the folder is a step input, so it travels to Azure ML with the step."""
    recipe = _recipe(tmp_path / "h", tiny_model_dir, "", {**REGISTERED_CONFIG, "script_dir": "scripts"})
    (tmp_path / "h" / "user_script.py").unlink()
    (tmp_path / "h" / "scripts").mkdir()
    (tmp_path / "h" / "scripts" / "helpers.py").write_text("LANGUAGE = 'fr'\n")
    (tmp_path / "h" / "scripts" / "user_script.py").write_text(
        REGISTERED.replace('    rows = datasets', '    from helpers import LANGUAGE\n\n    language = LANGUAGE\n'
                           '    rows = datasets').replace("Path(__file__).parent / name", "Path(__file__).parents[1] / name"))
    argv, _, _ = _argv(recipe)
    assert argv[argv.index("--script_dir") + 1] == str(tmp_path / "h" / "scripts")
    folder, _ = _load_data(recipe)
    assert json.loads((folder / "slmforge.json").read_text())["metrics"]["rows"] == 8  # French, from the helper
