"""onnxruntime-genai folders: load, tokenize, generate greedily, stream; full logits via onnxruntime.

Never imports torch or transformers: predict, chat and evaluate of an ONNX folder start in a
fraction of a second. Facts behind the details (docs/pitfalls.md, Tokenizers): og's tokenizer adds no BOS
unless told to, and reproduces the Hugging Face ids exactly for ByteLevel BPE tokenizers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from slmforge.contract.folders import GENAI_CONFIG, is_onnx_folder
from slmforge.errors import InvalidInput, StepFailed
from slmforge.models.adapter_slots import SLOTS_FILE

if TYPE_CHECKING:
    from slmforge.models.onnx_adapter import AdapterFile


def require_onnx_folder(folder: str | Path) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise InvalidInput(f"{path}: no such model folder")
    if not is_onnx_folder(path):
        raise InvalidInput(f"{path}: not an onnxruntime-genai model folder (no {GENAI_CONFIG}); "
                           "build one with the build_onnx step")
    return path


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # what og's tokenizer reads (BPE json or sentencepiece)


def read_genai_config(folder: Path) -> dict:
    """The "model" object of the folder's genai_config.json, and a tokenizer beside it, or one line naming
    the file that is broken or missing."""
    path = folder / GENAI_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise InvalidInput(f"{path}: no \"model\" object (not an onnxruntime-genai config)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InvalidInput(f"{folder}: no {TOKENIZER_FILES[0]} (the tokenizer onnxruntime-genai needs) beside "
                           f"{GENAI_CONFIG}")
    return config["model"]


def usable_cores() -> int:
    """The cores this process may run on (its affinity), og's thread count unless the folder sets one."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _config_with_threads(og, folder: Path, decoder: dict):
    """og's config for `folder`, running on every core this process may use.

    og leaves onnxruntime at one intra-op thread unless genai_config.json says otherwise:
    measured on 2 cores (SmolLM2 int4), prompt processing ran at 377 tokens/s with that default
    and 692 tokens/s with 2 threads. A folder that sets its own thread count keeps it.
    A base with adapter slots would make onnxruntime warn once per slot that an initializer is also
    an input (that is what makes it optional): errors only, for such a base.
    """
    config = og.Config(str(folder))
    options = decoder.get("session_options", {})
    overlay = {}
    if "intra_op_num_threads" not in options:
        overlay["intra_op_num_threads"] = usable_cores()
    if "log_severity_level" not in options and (folder / SLOTS_FILE).is_file():
        overlay["log_severity_level"] = 3
    if overlay:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": overlay}}}))
    return config


class GenaiModel:
    """An og model and tokenizer, BOS on, like the Hugging Face tokenizer used in training.

    `adapters`: `.onnx_adapter` files for a base with adapter slots, each checked against the base and
    loaded once (og.Adapters); `use_adapter(name)` picks the one every later generator runs with
    (None: the base alone)."""

    kind = "onnx"

    def __init__(self, folder: str | Path, adapters: list[str | Path] = ()):
        import onnxruntime_genai as og

        if hasattr(og, "disable_telemetry_events"):
            og.disable_telemetry_events()  # slmforge sends no telemetry
        self.folder = require_onnx_folder(folder)
        self._og = og
        config = read_genai_config(self.folder)
        try:
            self.model = og.Model(_config_with_threads(og, self.folder, config.get("decoder", {})))
        except Exception as e:  # og raises RuntimeError/OSError subclasses with the reason
            raise InvalidInput(f"{self.folder}: onnxruntime-genai cannot load the model: {e}") from e
        try:
            self.tokenizer = og.Tokenizer(self.model)
        except Exception as e:  # noqa: BLE001 - og raises RuntimeError with the reason
            raise InvalidInput(f"{self.folder}: onnxruntime-genai cannot load the tokenizer: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        self.tokenizer.update_options(add_special_tokens="true")
        self.bos_token_id = int(self.tokenizer.bos_token_id)
        self.context_length = int(config.get("context_length", 2048))
        # Sliding-window layers (Gemma-2/3, Mistral, Phi-3-mini-4k): og 0.18 sizes their caches
        # min(max_length, window + slack), and onnxruntime refuses a cache smaller than the window
        # ("KV cache capacity (39) must be at least local_window_size (127)"): generations ask for at least
        # the window. And the windowed kernel takes no right padding ("seqlens_k[0] = 23 is too small for
        # sequence_length 35"): batches hold prompts of one length, as many rows as a window-long cache allows.
        self.window = max(_window_layers(config.get("decoder", {})).values(), default=0)
        eos = config.get("eos_token_id", [])
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_token_ids = set(eos)
        self.eos_token_id = eos[0] if eos else None
        self._logits: PlainOrtModel | None = None
        self.adapters: dict[str, AdapterFile] = {}
        self.active: str | None = None
        self._og_adapters = None
        for path in adapters:
            self.load_adapter(path)

    def load_adapter(self, path: str | Path) -> str:
        """Check `path` against this base and load it; return its name (the first one becomes active)."""
        from slmforge.models import onnx_adapter

        adapter = onnx_adapter.open_file(path)
        onnx_adapter.check_fits(adapter, self.folder)
        if adapter.name in self.adapters:
            raise InvalidInput(f"{adapter.path}: another adapter named {adapter.name!r} is loaded already")
        if self._og_adapters is None:
            self._og_adapters = self._og.Adapters(self.model)
        try:
            self._og_adapters.load(str(adapter.path), adapter.name)
        except Exception as e:  # noqa: BLE001 - og raises RuntimeError with its reason
            raise InvalidInput(f"{adapter.path}: onnxruntime-genai cannot load the adapter: {e}") from e
        self.adapters[adapter.name] = adapter
        if self.active is None:
            self.use_adapter(adapter.name)
        return adapter.name

    def use_adapter(self, name: str | None) -> None:
        if name is not None and name not in self.adapters:
            raise InvalidInput(f"no adapter named {name!r} is loaded (loaded: {', '.join(self.adapters) or 'none'})")
        self.active = name
        if self._logits is not None:
            self._logits.adapter = self.adapters.get(name) if name else None

    def _generator(self, params):
        generator = self._og.Generator(self.model, params)
        if self.active is not None:
            generator.set_active_adapter(self._og_adapters, self.active)
        return generator

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
        params.set_search_options(do_sample=False, max_length=self._max_length(len(prompt_ids) + max_new_tokens))
        generator = self._generator(params)
        generator.append_tokens(prompt_ids)
        decoder = self.tokenizer.create_stream()
        for _ in range(max_new_tokens):
            if generator.is_done():
                return
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            piece = decoder.decode(token)
            yield token, piece
            if token in self.eos_token_ids or token in stop_ids:
                return

    def decode(self, tokens: list[int]) -> str:
        """Text of generated tokens, glued from stream pieces (see generate), EOS left out."""
        decoder = self.tokenizer.create_stream()
        return "".join(decoder.decode(int(t)) for t in tokens if int(t) not in self.eos_token_ids)

    def generate(self, prompt: str, max_new_tokens: int, stop: Callable[[str], bool]) -> tuple[str, int]:
        """Greedy continuation of `prompt`, one prompt at a time (predict, chat, and the reference
        the batched evaluation is tested against).

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

    # Tokens per padded batch through plain onnxruntime: the logits of a batch are
    # tokens x vocab floats (1024 x 49152 x 4 bytes = 200 MB for SmolLM2).
    TOKEN_BUDGET = 1024

    def score(self, requests: list[tuple[list[int], list[int]]]):
        """(argmax, log p(next token)) at the requested positions of each sequence, batched (numpy)."""
        import numpy as np

        from slmforge.models.verified_greedy import log_softmax_at

        if self._logits is None:
            self._logits = PlainOrtModel(self.folder, adapter=self.adapters.get(self.active) if self.active else None)
        results: list = [None] * len(requests)
        for batch in self._batches([len(ids) for ids, _ in requests]):
            logits = self._logits.batch_logits([requests[i][0] for i in batch])
            for row, i in enumerate(batch):
                seq, positions = requests[i]
                targets = np.asarray([seq[p + 1] if p + 1 < len(seq) else 0 for p in positions])
                results[i] = log_softmax_at(logits[row, positions], targets)
        return results

    def answers(self, requests, max_new_tokens: int) -> None:
        """Greedy answers of eval rows (verified_greedy.Request) by batched og decoding.

        Rows are right-padded with og's pad token, similar lengths together (measured: the same
        tokens as one prompt at a time; left padding is not). While a row follows its expected
        answer, the logits of each step give that token's log-probability for the perplexity.
        """
        from slmforge.models.verified_greedy import finished, log_softmax_at

        for indices in self._batches([len(r.prompt) for r in requests]):
            chunk = [requests[i] for i in indices]
            generator = self._batch_generator([r.prompt for r in chunk], max_new_tokens)
            for r in chunk:
                r.tokens, r.logprobs, r.continued = [], {}, False
            live = list(range(len(chunk)))
            for step in range(max_new_tokens):
                logits = generator.get_logits().reshape(len(chunk), -1)
                for row in live:
                    r = chunk[row]
                    if not r.continued and step < len(r.expected):
                        r.logprobs[step] = float(log_softmax_at(logits[row:row + 1], [r.expected[step]])[1][0])
                generator.generate_next_token()
                tokens = generator.get_next_tokens()
                still = []
                for row in live:
                    r = chunk[row]
                    r.tokens.append(int(tokens[row]))
                    if not r.continued and (step >= len(r.expected) or r.tokens[-1] != r.expected[step]):
                        r.continued = True
                    if not finished(self, r, max_new_tokens):
                        still.append(row)
                live = still
                if not live or generator.is_done():
                    break

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        from slmforge.models.verified_greedy import length_batches

        if not self.window:
            return length_batches(lengths, self.TOKEN_BUDGET)
        return length_batches(lengths, self.TOKEN_BUDGET, max_rows=max(1, min(32, self.TOKEN_BUDGET // self.window)),
                              same_length=True)

    def _max_length(self, needed: int) -> int:
        return min(self.context_length, max(needed, self.window))

    def _batch_generator(self, prefixes: list[list[int]], max_new_tokens: int):
        import numpy as np

        og = self._og
        width = max(len(p) for p in prefixes)
        if width + max_new_tokens > self.context_length:
            raise InvalidInput(f"an input is {width} tokens; with {max_new_tokens} new tokens that exceeds the "
                               f"model's context of {self.context_length}")
        batch = np.full((len(prefixes), width), int(self.tokenizer.pad_token_id), dtype=np.int32)
        for row, prefix in enumerate(prefixes):
            batch[row, :len(prefix)] = prefix
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=self._max_length(width + max_new_tokens),
                                  batch_size=len(prefixes))
        generator = self._generator(params)
        generator.append_tokens(batch)
        return generator


class PlainOrtModel:
    """The folder's model.onnx in plain onnxruntime: logits at every position of a sequence.

    og only exposes the last position's logits; the build check and perplexity need them all.
    With `adapter` (an AdapterFile) its tensors are fed to the base's slots; without, the slots keep
    their rank-0 defaults (the base alone).
    """

    def __init__(self, folder: str | Path, provider: str = "cpu", adapter: AdapterFile | None = None):
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
        self.window_layers = _window_layers(config)
        self.adapter = adapter
        self._feeds: tuple[AdapterFile, dict] | None = None

    def _adapter_feeds(self) -> dict:
        from slmforge.models import onnx_adapter

        if self.adapter is None:
            return {}
        if self._feeds is None or self._feeds[0] is not self.adapter:
            self._feeds = (self.adapter, onnx_adapter.feeds(self.adapter))
        return self._feeds[1]

    def logits(self, ids: list[int]):
        """Logits [seq, vocab] of one sequence."""
        return self.batch_logits([ids])[0, :len(ids)]

    def batch_logits(self, sequences: list[list[int]]):
        """Logits [batch, longest, vocab] of right-padded sequences (padding positions are junk)."""
        import numpy as np

        width = max(len(s) for s in sequences)
        ids = np.zeros((len(sequences), width), dtype=np.int64)
        mask = np.zeros((len(sequences), width), dtype=np.int64)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        feeds = dict(self._adapter_feeds())  # optional inputs (initializers too): get_inputs() leaves them out
        for inp in self.session.get_inputs():
            if inp.name == "input_ids":
                feeds[inp.name] = ids
            elif inp.name == "attention_mask":
                feeds[inp.name] = mask
            elif inp.name == "position_ids":
                feeds[inp.name] = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy()
            elif inp.name.startswith("past_key_values"):
                # Empty (the mask says no past), but a sliding-window layer's cache has its window's
                # capacity: onnxruntime refuses a smaller one (sliding_window_cache, GroupQueryAttention).
                dtype = np.float16 if "float16" in inp.type else np.float32
                capacity = self.window_layers.get(int(inp.name.split(".")[1]), 0)
                feeds[inp.name] = np.zeros((len(sequences), self.kv_heads, capacity, self.head_size), dtype=dtype)
            else:
                raise StepFailed(f"model.onnx has an input slmforge does not know how to feed: {inp.name}")
        return self.session.run(["logits"], feeds)[0].astype(np.float32, copy=False)


def _window_layers(decoder: dict) -> dict[int, int]:
    """{layer: cache capacity} of the sliding-window layers genai_config.json names (onnxruntime-genai 0.18:
    `sliding_window` with `window_size`, `layers`, `cache_slack`); those layers' caches are window-sized."""
    window = decoder.get("sliding_window") or {}
    capacity = int(window.get("window_size", 0)) + int(window.get("cache_slack", 0))
    return {int(layer): capacity for layer in window.get("layers", [])} if capacity > 0 else {}
