"""The tiny Phi-3: same seed -> byte-identical files; a vocab size the ONNX builder would mis-wire is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from slmforge.models import tinymodel


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tiny_model_dir, tmp_path):
    again = tinymodel.build_tiny_model(tmp_path / "again", seed=0)
    other = tinymodel.build_tiny_model(tmp_path / "other", seed=1)
    first, second, third = files_of(tiny_model_dir), files_of(again), files_of(other)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(first)
    assert first == second
    assert third["model.safetensors"] != first["model.safetensors"]  # the seed is the weights' seed
    assert third["tokenizer.json"] == first["tokenizer.json"]  # the tokenizer does not depend on it


def test_tiny_model_loads_offline(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    assert model.config.vocab_size == len(tok) == tinymodel.SPECS["tiny"].vocab_size
    assert tok("hello")["input_ids"][0] == tok.bos_token_id


@pytest.mark.parametrize("size", sorted(tinymodel.SPECS))
def test_shipped_specs_are_clear_of_the_builder_collision(size):
    spec = tinymodel.SPECS[size]
    assert spec.vocab_size not in spec.builder_collisions()


@pytest.mark.parametrize("width", ["hidden", "intermediate", "double-intermediate", "qkv"])
def test_vocab_size_equal_to_a_layer_width_is_refused(width, tmp_path, monkeypatch):
    h, i = 128, 384
    vocab = {"hidden": h, "intermediate": i, "double-intermediate": 2 * i, "qkv": h + 2 * h}[width]
    monkeypatch.setitem(tinymodel.SPECS, "colliding", tinymodel.TinySpec(vocab_size=vocab, hidden_size=h,
                                                                         intermediate_size=i))
    with pytest.raises(AssertionError, match=f"vocab_size {vocab} equals a layer width"):
        tinymodel.build_tiny_model(tmp_path / "bad", size="colliding")
    assert not (tmp_path / "bad").exists()  # refused before anything is written
