"""Hugging Face Hub datasets, offline: a hub cache laid out as huggingface_hub writes it
(`datasets--ORG--NAME/snapshots/<sha>/...`, `refs/main`) is read through the very code path a user's
recipe takes — huggingface_hub resolves the snapshot, slmforge picks the subset's and split's files
and reads them. Nothing of slmforge is stood in for; HF_HUB_CACHE and HF_HUB_OFFLINE are set per test
(monkeypatch), so nothing leaks into other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slmforge.errors import InvalidInput
from slmforge.steps import load_data

from local_pipeline import env_for, run_slmforge

TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
SHA1, SHA2 = "1" * 40, "2" * 40
DATA = Path(__file__).resolve().parents[1] / "src" / "slmforge" / "data" / "tones-train.jsonl"


def tone_rows(n: int = 40) -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()[:n]]
    return [{**r, "lang": "en" if i % 2 == 0 else "fr", "n": i} for i, r in enumerate(rows)]


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def snapshot(cache: Path, repo: str, sha: str) -> Path:
    """A snapshot folder of dataset `repo` in the hub cache, with refs/main pointing at it."""
    storage = cache / f"datasets--{repo.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(sha)
    folder = storage / "snapshots" / sha
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture()
def hub(tmp_path, monkeypatch) -> Path:
    """An offline hub cache holding acme/tones (one parquet train file) and acme/tones-subsets (a README
    with `configs:` naming subsets en and fr, JSON lines split into train and test)."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = tone_rows()
    write_parquet(snapshot(cache, "acme/tones", SHA1) / "data" / "train-00000-of-00001.parquet", rows)
    folder = snapshot(cache, "acme/tones-subsets", SHA1)
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: en\n  data_files:\n  - split: train\n    path: en/train-*\n"
        "  - split: test\n    path: en/test-*\n- config_name: fr\n  data_files:\n  - split: train\n"
        "    path: fr/train-*\n---\n# tones\n", encoding="utf-8")
    for lang in ("en", "fr"):
        mine = [r for r in rows if r["lang"] == lang]
        write_jsonl(folder / lang / "train-00000-of-00001.jsonl", mine[:-4])
        write_jsonl(folder / lang / "test-00000-of-00001.jsonl", mine[-4:])
    return cache


@pytest.fixture()
def spec(tmp_path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"text_cols": ["phrase", "tone"], "text_template": TEMPLATE}))
    return path


def load(tmp_path, spec, tiny_model_dir, hub_data: dict, name="ds", **kw) -> tuple[Path, dict]:
    hub_file = tmp_path / f"{name}-hub.json"
    hub_file.write_text(json.dumps(hub_data))
    out = tmp_path / name
    m = load_data.run(hub_data=str(hub_file), spec=spec, tokenizer=tiny_model_dir, dataset=out, **kw)
    return out, m


def phrases(path: Path) -> list[str]:
    return [json.loads(line)["phrase"] for line in path.read_text().splitlines()]


def test_reads_the_cached_snapshot_with_split_slices(hub, tmp_path, spec, tiny_model_dir):
    """train[:25%] trains, train[-6:] evaluates: exactly those rows, and the manifest names the commit."""
    rows = tone_rows()
    out, m = load(tmp_path, spec, tiny_model_dir, {"train": {"name": "acme/tones", "split": "train[:25%]"},
                                                   "eval": {"name": "acme/tones", "split": "train[-6:]"}})
    assert m["metrics"]["train_rows"] == 10 and m["metrics"]["eval_rows"] == 6
    assert phrases(out / "eval_rows.jsonl") == [r["phrase"] for r in rows[-6:]]
    data = m["inputs"]["data"]
    assert data["hub"] == "acme/tones" and data["revision"] == SHA1 and data["split"] == "train[:25%]"
    assert data["files"] == ["data/train-00000-of-00001.parquet"] and len(data["digest"]) == 64
    assert m["inputs"]["eval_data"]["split"] == "train[-6:]"

    out, m = load(tmp_path, spec, tiny_model_dir, {"train": {"name": "acme/tones", "split": "train[4:12]"}},
                  name="ds2", eval_dataset_size=2)
    assert m["metrics"]["rows"] == 8 and m["metrics"]["eval_rows"] == 2
    assert set(phrases(out / "eval_rows.jsonl")) <= {r["phrase"] for r in rows[4:12]}


def test_col_filters_keep_rows_equal_to_the_value_after_the_slice(hub, tmp_path, spec, tiny_model_dir):
    rows = tone_rows()
    out, m = load(tmp_path, spec, tiny_model_dir,
                  {"train": {"name": "acme/tones", "split": "train[:20]", "col_filters": {"lang": "fr"}},
                   "eval": {"name": "acme/tones", "split": "train[20:]", "col_filters": {"lang": "en", "n": 24}}})
    assert m["metrics"]["train_rows"] == 10  # the odd rows among the first 20
    assert phrases(out / "eval_rows.jsonl") == [rows[24]["phrase"]]  # an int column compared as in Olive
    with pytest.raises(InvalidInput, match=r"data/train-00000-of-00001.parquet: no column 'language'"):
        load(tmp_path, spec, tiny_model_dir, {"train": {"name": "acme/tones", "col_filters": {"language": "en"}}},
             name="bad")
    with pytest.raises(InvalidInput, match=r"en/train-00000-of-00001.jsonl: row 1 \(line 1\): no column 'language' "
                                           r"\(named in col_filters\)"):
        load(tmp_path, spec, tiny_model_dir, {"train": {"name": "acme/tones-subsets", "subset": "en",
                                                        "col_filters": {"language": "en"}}}, name="bad2")


def test_subset_reads_the_readme_config(hub, tmp_path, spec, tiny_model_dir):
    rows = tone_rows()
    fr = [r["phrase"] for r in rows if r["lang"] == "fr"]
    out, m = load(tmp_path, spec, tiny_model_dir,
                  {"train": {"name": "acme/tones-subsets", "subset": "fr", "split": "train"},
                   "eval": {"name": "acme/tones-subsets", "subset": "en", "split": "test"}})
    assert m["metrics"]["train_rows"] == len(fr) - 4
    assert m["inputs"]["data"]["files"] == ["fr/train-00000-of-00001.jsonl"]
    assert phrases(out / "eval_rows.jsonl") == [r["phrase"] for r in rows if r["lang"] == "en"][-4:]
    with pytest.raises(InvalidInput, match=r"hub dataset 'acme/tones-subsets' subset 'fr': no split 'test' "
                                           r"\(splits: train"):
        load(tmp_path, spec, tiny_model_dir, {"train": {"name": "acme/tones-subsets", "subset": "fr", "split": "test"}},
             name="bad")
    with pytest.raises(InvalidInput, match=r"no subset 'de' \(subsets: en, fr\)"):
        load(tmp_path, spec, tiny_model_dir, {"train": {"name": "acme/tones-subsets", "subset": "de"}}, name="bad2")


def hub_recipe(folder: Path, model_dir: Path, *, eval_split: str | None = "train[32:40]", **load) -> Path:
    """A LoRA recipe on hub dataset acme/tones: trained on a slice, evaluated on another data config's slice
    (Olive's llama2_qlora shape) or, with eval_split None, on eval_dataset_size."""
    pre = {"text_template": TEMPLATE, "strategy": "line-by-line", "max_seq_len": 64, "loss_on": "completion"}
    configs = [{"name": "train", "type": "HuggingfaceContainer", "pre_process_data_config": pre,
                "load_dataset_config": {"data_name": "acme/tones", "split": "train[:32]", **load}}]
    lora = {"type": "LoRA", "r": 4, "alpha": 8, "train_data_config": "train",
            "training_args": {"seed": 0, "per_device_train_batch_size": 4, "max_steps": 3, "logging_steps": 1}}
    if eval_split:
        configs.append({"name": "eval", "type": "HuggingfaceContainer", "pre_process_data_config": pre,
                        "load_dataset_config": {"data_name": "acme/tones", "split": eval_split}})
        lora["eval_data_config"] = "eval"
    else:
        lora["eval_dataset_size"] = 4
    recipe = {"input_model": {"type": "HfModel", "model_path": str(model_dir)}, "data_configs": configs,
              "passes": {"lora": lora}, "cache_dir": "cache", "output_dir": "out",
              "register": {"enabled": False}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.json"
    path.write_text(json.dumps(recipe, indent=2))
    return path


def test_the_cache_key_follows_the_resolved_commit(hub, tmp_path, tiny_model_dir):
    """The load_data key is the commit refs/main resolves to: the same commit keys the same, another
    commit (main moved) keys anew, and the step is told to read that very commit."""
    from slmforge.backends.local.runner import LocalRunner
    from slmforge.recipe.graph import build_graph
    from slmforge.recipe.loader import load_recipe

    def key_and_pin() -> tuple[str, dict]:
        loaded = load_recipe(hub_recipe(tmp_path / "r", tiny_model_dir))
        graph = build_graph(loaded)
        step = graph.step("load_data")
        assert "data" not in step.inputs and "eval_data" not in step.inputs
        return LocalRunner(loaded, graph).prepare(step).entry.key, json.loads(step.inputs["hub_data"].value)

    first, pinned = key_and_pin()
    assert pinned["train"] == {"name": "acme/tones", "split": "train[:32]", "revision": SHA1}
    assert pinned["eval"]["revision"] == SHA1
    assert key_and_pin()[0] == first
    write_parquet(snapshot(hub, "acme/tones", SHA2) / "data" / "train-00000-of-00001.parquet", tone_rows())
    second, pinned = key_and_pin()
    assert second != first and pinned["train"]["revision"] == SHA2


def test_validate_offline_without_the_dataset_is_one_line(tmp_path, tiny_model_dir, monkeypatch):
    cache = tmp_path / "empty-hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    recipe = hub_recipe(tmp_path / "r", tiny_model_dir)
    done = subprocess.run([sys.executable, "-m", "slmforge.cli", "validate", str(recipe)], capture_output=True,
                          text=True, env=env_for(tmp_path / "home"), timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "data_configs[0].load_dataset_config.data_name: hub dataset 'acme/tones' (revision main): not in the " \
           f"hub cache {cache} and the hub cannot be reached: offline mode (HF_HUB_OFFLINE) is on" in lines[0]


def test_recipe_keys(hub, tmp_path, tiny_model_dir):
    """trust_remote_code true is refused by name (false passes); data_files belong to file formats."""
    from slmforge.recipe.loader import load_recipe

    def problems(**load) -> str:
        with pytest.raises(InvalidInput) as e:
            load_recipe(hub_recipe(tmp_path / "k", tiny_model_dir, **load))
        return "\n".join(e.value.args[1] if len(e.value.args) > 1 else e.value.args)

    assert "slmforge runs no dataset scripts" in problems(trust_remote_code=True)
    load_recipe(hub_recipe(tmp_path / "k", tiny_model_dir, trust_remote_code=False, revision="main",
                           col_filters={"lang": "en"}))
    assert "data_files with hub dataset 'acme/tones'" in problems(data_files="x.jsonl")
    # Olive's huggingface_dataset reads split "validation" when none is named
    with pytest.raises(InvalidInput, match=r"data_configs\[0\].load_dataset_config.data_name: hub dataset "
                                           r"'acme/tones': no split 'validation' \(splits: train"):
        from slmforge.recipe.graph import build_graph

        recipe = hub_recipe(tmp_path / "k", tiny_model_dir)
        raw = json.loads(recipe.read_text())
        del raw["data_configs"][0]["load_dataset_config"]["split"]
        recipe.write_text(json.dumps(raw))
        build_graph(load_recipe(recipe))


def test_validate_names_the_commit(hub, tmp_path, tiny_model_dir):
    done = subprocess.run([sys.executable, "-m", "slmforge.cli", "validate", str(hub_recipe(tmp_path, tiny_model_dir))],
                          capture_output=True, text=True, env=env_for(tmp_path / "home"), timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"train rows: hub dataset acme/tones split train[:32] at commit {SHA1}" in done.stdout
    assert f"eval rows: hub dataset acme/tones split train[32:40] at commit {SHA1}" in done.stdout


@pytest.mark.parametrize("eval_split", ["train[32:40]", None])
def test_a_hub_recipe_runs_load_data_and_finetune(hub, tmp_path, tiny_model_dir, eval_split):
    """Olive's two ways to evaluate a hub dataset: a second data config on another slice, or eval_dataset_size."""
    recipe = hub_recipe(tmp_path / "run", tiny_model_dir, eval_split=eval_split)
    outcome = run_slmforge(recipe, tmp_path / "home")
    assert outcome.rc == 0, outcome.stdout + outcome.stderr
    assert outcome.statuses() == {"load_data": "ran", "finetune": "ran"}
    manifest = json.loads((Path(outcome.record["steps"][0]["outputs"]["dataset"]) / "slmforge.json").read_text())
    assert manifest["inputs"]["data"]["revision"] == SHA1
    counts = (manifest["metrics"]["train_rows"], manifest["metrics"]["eval_rows"])
    assert counts == ((32, 8) if eval_split else (28, 4))
    assert (outcome.out_dir / "model" / "adapter_config.json").is_file()


def test_azure_ml_compile_pins_the_commit_and_the_job_reads_the_token_from_key_vault(hub, tmp_path):
    """On Azure ML the step gets the same hub_data file (uploaded beside the pipeline) with the commit
    pinned at compile time; the node knows only the Key Vault's name, from which slmforge.secrets reads
    the token for the download (as for a hub model)."""
    from test_aml_compile import COOKBOOK_AML, compile_to, edited, rest_body

    def to_hub(raw):
        raw["data_configs"][0]["load_dataset_config"] = {"params": {"data_name": "acme/tones", "split": "train[:32]"}}

    import shutil

    shutil.copyfile(COOKBOOK_AML.parent / "conda.yaml", tmp_path / "conda.yaml")  # the recipe's docker config
    _, job = compile_to(edited(tmp_path, COOKBOOK_AML, to_hub), tmp_path / "out")
    node = rest_body(job)["jobs"]["load_data"]
    assert "data" not in node["inputs"] and node["inputs"]["hub_data"]["job_input_type"] == "uri_file"
    pinned = json.loads((tmp_path / "out" / "hub_data.json").read_text())
    assert pinned == {"train": {"name": "acme/tones", "split": "train[:32]", "revision": SHA1}}
    assert node["environment_variables"] == {"SLMFORGE_KEYVAULT": "kv-slmforge"}


@pytest.mark.parametrize("listing, split, subset, chosen", [
    # timdettmers/openassistant-guanaco: split names inside file names; "eval" is the Hub's test split
    (["openassistant_best_replies_train.jsonl", "openassistant_best_replies_eval.jsonl", "README.md"], "test", None,
     ("openassistant_best_replies_eval.jsonl",)),
    # tatsu-lab/alpaca: data/train-*.parquet
    (["data/train-00000-of-00001-a09b74b3ef9c3b56.parquet", ".gitattributes"], "train", None,
     ("data/train-00000-of-00001-a09b74b3ef9c3b56.parquet",)),
    # no split name anywhere: every data file is train
    (["tiny_codes.jsonl", "more/codes.jsonl"], "train", None, ("more/codes.jsonl", "tiny_codes.jsonl")),
    # the parquet conversion's <subset>/<split>/NNNN.parquet
    (["wikitext-2-raw-v1/train/0000.parquet", "wikitext-2-raw-v1/test/0000.parquet", "other/train/0000.parquet"],
     "train", "wikitext-2-raw-v1", ("wikitext-2-raw-v1/train/0000.parquet",)),
])
def test_files_are_chosen_by_the_hub_s_conventions(tmp_path, listing, split, subset, chosen):
    from slmforge.data.hub_files import HubSource, choose_files

    assert choose_files(HubSource("org/name", split, subset), tmp_path, listing, split) == chosen


def test_the_dataset_card_s_configs_choose_the_files(tmp_path):
    from slmforge.data.hub_files import HubSource, choose_files

    (tmp_path / "README.md").write_text(
        "---\nlicense: mit\nconfigs:\n- config_name: main\n  default: true\n  data_files: main/*.parquet\n"
        "- config_name: extra\n  data_dir: x\n  data_files:\n    - split: train\n      path: 'tr/**'\n"
        "    - split: validation\n      path: [va-1.csv, va-2.csv]\n---\n")
    listing = ["main/a.parquet", "main/b.parquet", "x/tr/1/2.csv", "x/va-1.csv", "x/va-2.csv", "va-1.csv"]
    assert choose_files(HubSource("o/n"), tmp_path, listing, "train") == ("main/a.parquet", "main/b.parquet")
    assert choose_files(HubSource("o/n", subset="extra"), tmp_path, listing, "train") == ("x/tr/1/2.csv",)
    assert choose_files(HubSource("o/n", subset="extra"), tmp_path, listing, "validation") == ("x/va-1.csv",
                                                                                               "x/va-2.csv")
