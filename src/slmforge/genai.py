"""onnxruntime-genai folders: load, tokenize, generate greedily, stream; full logits via onnxruntime.

Never imports torch or transformers: predict, chat and evaluate of an ONNX folder start in a
fraction of a second. Facts behind the details are in NOTES.md: og's tokenizer adds no BOS
unless told to, and reproduces the Hugging Face ids exactly for ByteLevel BPE tokenizers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

from slmforge.errors import InvalidInput, StepFailed
from slmforge.model_folder import GENAI_CONFIG, is_onnx_folder


def require_onnx_folder(folder: str | Path) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise InvalidInput(f"{path}: no such model folder")
    if not is_onnx_folder(path):
        raise InvalidInput(f"{path}: not an onnxruntime-genai model folder (no {GENAI_CONFIG}); "
                           "build one with the build_onnx step")
    return path


class GenaiModel:
    """An og model and tokenizer, BOS on, like the Hugging Face tokenizer used in training."""

    kind = "onnx"

    def __init__(self, folder: str | Path):
        import onnxruntime_genai as og

        if hasattr(og, "disable_telemetry_events"):
            og.disable_telemetry_events()  # slmforge sends no telemetry
        self.folder = require_onnx_folder(folder)
        self._og = og
        try:
            self.model = og.Model(str(self.folder))
        except Exception as e:  # og raises RuntimeError/OSError subclasses with the reason
            raise InvalidInput(f"{self.folder}: onnxruntime-genai cannot load the model: {e}") from e
        self.tokenizer = og.Tokenizer(self.model)
        self.tokenizer.update_options(add_special_tokens="true")
        self.bos_token_id = int(self.tokenizer.bos_token_id)
        config = json.loads((self.folder / GENAI_CONFIG).read_text(encoding="utf-8"))["model"]
        self.context_length = int(config.get("context_length", 2048))
        eos = config.get("eos_token_id", [])
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_token_ids = set(eos)
        self.eos_token_id = eos[0] if eos else None
        self._logits: PlainOrtModel | None = None

    def encode(self, text: str, special: bool = True) -> list[int]:
        """Token ids; `special` adds BOS (the prompt), without it a continuation (the completion)."""
        ids = [int(t) for t in self.tokenizer.encode(text)]
        if not special and ids and ids[0] == self.bos_token_id:
            ids = ids[1:]
        return ids

    def token_id(self, token: str) -> int | None:
        """The id of a token in the vocabulary (e.g. `<|end|>`), None when it has none."""
        token_id = int(self.tokenizer.to_token_id(token))
        return token_id if token_id >= 0 else None

    def stream(self, prompt_ids: list[int], max_new_tokens: int,
               stop_ids: set[int] = frozenset()) -> Iterator[tuple[int, str]]:
        """Greedy tokens after `prompt_ids`, each with its decoded text piece; ends at EOS or a stop id."""
        og = self._og
        if len(prompt_ids) >= self.context_length:
            raise InvalidInput(f"the input is {len(prompt_ids)} tokens; the model's context is {self.context_length}")
        params = og.GeneratorParams(self.model)
        max_length = min(self.context_length, len(prompt_ids) + max_new_tokens)
        params.set_search_options(do_sample=False, max_length=max_length)
        generator = og.Generator(self.model, params)
        generator.append_tokens(prompt_ids)
        decoder = self.tokenizer.create_stream()
        while not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            piece = decoder.decode(token)
            yield token, piece
            if token in self.eos_token_ids or token in stop_ids:
                return

    def generate(self, prompt: str, max_new_tokens: int, stop: Callable[[str], bool]) -> tuple[str, int]:
        """Greedy continuation of `prompt` (same contract as TorchBackend.generate).

        The text is glued from the token stream's pieces: og's one-shot decode drops everything
        after a token that is not valid UTF-8 on its own (seen with untrained models).
        """
        text, count = "", 0
        for token, piece in self.stream(self.encode(prompt), max_new_tokens):
            count += 1
            if token in self.eos_token_ids:
                break
            text += piece
            if stop(text):
                break
        return text, count

    def nll(self, ids: list[int], labels: list[int]) -> tuple[float, int]:
        """Summed negative log-likelihood of the labelled tokens, from model.onnx via onnxruntime."""
        import numpy as np

        if self._logits is None:
            self._logits = PlainOrtModel(self.folder)
        logits = self._logits.logits(ids)[:-1].astype(np.float64)
        target = np.asarray(labels[1:])
        keep = target != -100
        if not keep.any():
            return 0.0, 0
        rows = logits[keep]
        peak = rows.max(-1, keepdims=True)
        log_z = np.log(np.exp(rows - peak).sum(-1)) + peak[:, 0]
        return float((log_z - rows[np.arange(len(rows)), target[keep]]).sum()), int(keep.sum())


class PlainOrtModel:
    """The folder's model.onnx in plain onnxruntime: logits at every position of a sequence.

    og only exposes the last position's logits; the build check and perplexity need them all.
    """

    def __init__(self, folder: str | Path, provider: str = "cpu"):
        import onnxruntime as ort

        folder = Path(folder)
        config = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8"))["model"]["decoder"]
        providers = ["CPUExecutionProvider"]
        if provider == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / config.get("filename", "model.onnx")), options,
                                            providers=providers)
        self.kv_heads = int(config["num_key_value_heads"])
        self.head_size = int(config["head_size"])

    def logits(self, ids: list[int]):
        import numpy as np

        n = len(ids)
        feeds = {}
        for inp in self.session.get_inputs():
            if inp.name == "input_ids":
                feeds[inp.name] = np.asarray([ids], dtype=np.int64)
            elif inp.name == "attention_mask":
                feeds[inp.name] = np.ones((1, n), dtype=np.int64)
            elif inp.name == "position_ids":
                feeds[inp.name] = np.arange(n, dtype=np.int64)[None, :]
            elif inp.name.startswith("past_key_values"):
                dtype = np.float16 if "float16" in inp.type else np.float32
                feeds[inp.name] = np.zeros((1, self.kv_heads, 0, self.head_size), dtype=dtype)
            else:
                raise StepFailed(f"model.onnx has an input slmforge does not know how to feed: {inp.name}")
        return self.session.run(["logits"], feeds)[0][0].astype(np.float32)
