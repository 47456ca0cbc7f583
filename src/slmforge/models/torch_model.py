"""Loading Hugging Face models for the merge, build and evaluate steps, and running them.

Imported only by code that needs torch; nothing here runs at `slmforge` parse time.
A base model is named by a local folder (`model`) or a hub id (`model_id`); a missing
folder is invalid input, never a silent hub lookup.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from slmforge.errors import InvalidInput



def base_source(model: str | Path | None, model_id: str | None) -> str:
    """The path or hub id to load the base model from (exactly one of the two)."""
    if model and model_id:
        raise InvalidInput("give either --model (a folder) or --model_id (a hub id), not both")
    if model:
        from slmforge.models.model_folder import resolve_hf_folder

        # An Azure ML registry model in MLflow format holds the Hugging Face folder inside.
        return str(resolve_hf_folder(model))
    if model_id:
        return model_id
    raise InvalidInput("no base model: give --model (a folder) or --model_id (a hub id)")


def adapter_method(adapter: Path) -> str:
    """lora, dora, loha or lokr, from the adapter's peft config (QLoRA saves a plain LoRA adapter)."""
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidInput(f"{adapter}/adapter_config.json: unreadable ({e})") from None
    kind = str(config.get("peft_type", "LORA")).lower()
    return "dora" if kind == "lora" and config.get("use_dora") else kind


def _hub_kwargs(source: str) -> dict:
    from slmforge.secrets import hf_token

    # A local folder needs no token; a hub id takes HF_TOKEN here or the Key Vault secret in a job.
    return {} if Path(source).is_dir() else {"token": hf_token()}


def load_causal_lm(source: str, torch_dtype: str = "float32"):
    import torch
    from transformers import AutoModelForCausalLM

    from slmforge.models.weights_check import check_loadable, load_error

    check_loadable(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, torch_dtype), **_hub_kwargs(source))
    except OSError as e:
        raise InvalidInput(f"{source}: cannot load the model: {e}") from e
    except Exception as e:  # noqa: BLE001 - a load error names the folder; anything else is re-raised
        raise (load_error(source, e) or e) from e
    return model.eval()


def load_tokenizer(source: str):
    """A freshly loaded tokenizer (one called with padding saves a padding block: docs/pitfalls.md)."""
    from transformers import AutoTokenizer

    from slmforge.models.model_folder import resolve_tokenizer_folder

    if Path(source).is_dir():
        from slmforge.models.weights_check import check_json_files

        source = str(resolve_tokenizer_folder(source))
        check_json_files(source)
    try:
        return AutoTokenizer.from_pretrained(source, **_hub_kwargs(source))
    except OSError as e:
        raise InvalidInput(f"{source}: cannot load the tokenizer: {e}") from e


def with_adapter(base, adapter: str | Path):
    """Wrap a full-precision base with a PEFT adapter (a QLoRA adapter works the same way)."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base, str(adapter)).eval()
    except (ValueError, KeyError, RuntimeError) as e:
        raise InvalidInput(f"{adapter}: the adapter does not fit the base model: {e}") from e


def all_logits(model, token_ids: list[list[int]], *, packed: bool = False):
    """Logits at every position, one numpy array [seq, vocab] per sequence (float64 for a float64 model,
    else float32). One forward per sequence, as a user's prompt runs; `packed`: all sequences in one row,
    each restarting its position_ids at 0, which transformers masks as separate sequences (as training's
    packed batches, training/data.py): one forward of many tokens instead of many of a few."""
    import torch

    def as_numpy(logits):
        return logits.numpy() if logits.dtype == torch.float64 else logits.float().numpy()

    with torch.inference_mode(), few_threads_for(model):
        if not packed:
            return [as_numpy(model(torch.tensor([ids])).logits[0]) for ids in token_ids]
        ids = torch.tensor([[t for seq in token_ids for t in seq]])
        positions = torch.tensor([[p for seq in token_ids for p in range(len(seq))]])
        logits = as_numpy(model(input_ids=ids, position_ids=positions, use_cache=False).logits[0])
    starts = [0]
    for seq in token_ids:
        starts.append(starts[-1] + len(seq))
    return [logits[a:b] for a, b in zip(starts, starts[1:])]


def float64_logits(source: str, adapter: str | Path | None, token_ids: list[list[int]]):
    """all_logits of the model at `source` (+ `adapter`) run in float64: the yardstick the fp32 checks
    measure float32 rounding with (logit_check.fp32_bound).

    The float32 model is loaded and each module is cast to float64 only while it runs (float32 -> float64
    -> float32 is exact), so the pass computes what the whole model loaded in float64 computes, at the
    float32 model's memory plus one module's float64 copy (Phi-3-mini: 15 GB, not 30). A model whose
    float64 copy is small (WHOLE_FLOAT64_BYTES) is cast whole once instead (the same logits, bit for bit).
    The prompts run packed, one forward: float64 matmuls of a dozen rows ran at a fraction of the CPU's
    rate, and this pass was most of SmolLM2's merge check; packing moves its logits by float64 rounding
    (1e-16 relative), far below the float32 rounding it measures."""
    import torch

    model = load_causal_lm(source, "float32")
    if adapter is not None:
        model = with_adapter(model, adapter)
    if sum(p.numel() for p in model.parameters()) * 8 <= WHOLE_FLOAT64_BYTES:
        return all_logits(model.to(torch.float64), token_ids, packed=True)
    with _float64_while_running(model):
        return all_logits(model, token_ids, packed=True)


# A float64 copy this small is made whole (SmolLM2-135M: 1.1 GB); above it, one layer at a time.
WHOLE_FLOAT64_BYTES = 2 * 1024**3


@contextlib.contextmanager
def _float64_while_running(model):
    """Each decoder layer in float64 while it runs; the rest (embeddings, final norm, LM head, rotary
    buffers) in float64 for the whole pass. Layers, not single Linears: peft and several attention
    implementations read a weight's dtype before that module runs."""
    import torch

    layers = next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList)
                  and len(m) == int(model.config.num_hidden_layers))
    in_layers = {id(t) for t in (*layers.parameters(), *layers.buffers())}
    rest = [(module, kind, name) for module in model.modules() for kind in ("_parameters", "_buffers")
            for name, tensor in getattr(module, kind).items() if tensor is not None and id(tensor) not in in_layers]

    def cast(dtype):
        for module, kind, name in rest:
            tensor = getattr(module, kind)[name]
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(dtype)

    def to_float64(module, args) -> None:  # a hook's return value would replace the inputs
        module.to(torch.float64)

    def to_float32(module, args, output) -> None:  # ... or the output
        module.to(torch.float32)

    handles = [h for layer in layers
               for h in (layer.register_forward_pre_hook(to_float64), layer.register_forward_hook(to_float32))]
    cast(torch.float64)
    try:
        yield
    finally:
        cast(torch.float32)
        for handle in handles:
            handle.remove()


# Below this many parameters a forward pass is too little work to split across threads: the
# intra-op sync overhead dominates, and on a loaded machine badly (tiny model, 2 busy cores:
# 3.6 ms/token with 1 thread, 65 ms/token with 2). Bigger models keep torch's default.
SMALL_MODEL_PARAMETERS = 20_000_000


@contextlib.contextmanager
def few_threads_for(model):
    import torch

    previous = torch.get_num_threads()
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(previous)


class TorchBackend:
    """Greedy generation and teacher-forced scoring with transformers, for evaluate.

    The batched methods (score, greedy) are what evaluation uses (verified_greedy.py);
    generate() decodes one prompt at a time, the reference they are tested against.
    """

    kind = "pytorch"
    # Tokens per padded forward batch: big enough to keep both cores busy on matmuls, small enough
    # that the activations of a 30-layer model stay well under a GB.
    TOKEN_BUDGET = 2048

    def __init__(self, source: str, adapter: str | Path | None = None):
        self.model = load_causal_lm(source)
        if adapter is not None:
            self.model = with_adapter(self.model, adapter)
        self.tokenizer = load_tokenizer(source)
        self.eos_token_id = self.tokenizer.eos_token_id
        self.eos_token_ids = {self.eos_token_id}
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_token_id

    def encode(self, text: str, special: bool = True) -> list[int]:
        """Token ids; `special` adds BOS (the prompt), without it a continuation (the completion)."""
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def generate(self, prompt: str, max_new_tokens: int, stop) -> tuple[str, int]:
        """Greedy continuation of `prompt`; stops at EOS or when `stop(text)` says so."""
        import torch

        ids = torch.tensor([self.encode(prompt)])
        new: list[int] = []
        cache = None
        with torch.inference_mode(), few_threads_for(self.model):
            for _ in range(max_new_tokens):
                out = self.model(input_ids=ids, cache=cache, use_cache=True)
                cache = out.cache
                token = int(out.logits[0, -1].argmax())
                new.append(token)
                if token == self.eos_token_id:
                    break
                if stop(self.tokenizer.decode(new, skip_special_tokens=True)):
                    break
                ids = torch.tensor([[token]])
        return self.tokenizer.decode(new, skip_special_tokens=True), len(new)

    def answers(self, requests, max_new_tokens: int) -> None:
        """Greedy answers of eval rows (verified_greedy.Request), teacher-forced then decoded."""
        from slmforge.models.verified_greedy import teacher_forced_answers

        teacher_forced_answers(self, requests, max_new_tokens, self.TOKEN_BUDGET)

    def score(self, requests: list[tuple[list[int], list[int]]]):
        """(argmax, log p(next token)) at the requested positions of each sequence, batched.

        Right padding: a causal model's outputs at real positions never see the padding after them.
        The LM head runs only at the requested positions (it is a fifth of a small model's work).
        """
        import numpy as np
        import torch

        from slmforge.models.verified_greedy import length_batches, log_softmax_at

        decoder, head = self.model.get_decoder(), self.model.get_output_embeddings()
        results: list = [None] * len(requests)
        with torch.inference_mode(), few_threads_for(self.model):
            for batch in length_batches([len(ids) for ids, _ in requests], self.TOKEN_BUDGET):
                width = max(len(requests[i][0]) for i in batch)
                ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    seq = requests[i][0]
                    ids[row, :len(seq)] = torch.tensor(seq)
                    mask[row, :len(seq)] = 1
                hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
                rows = [row for row, i in enumerate(batch) for _ in requests[i][1]]
                cols = [p for i in batch for p in requests[i][1]]
                logits = head(hidden[rows, cols]).float().numpy()
                targets = np.asarray([requests[i][0][p + 1] if p + 1 < len(requests[i][0]) else 0
                                      for i in batch for p in requests[i][1]])
                argmax, logprob = log_softmax_at(logits, targets)
                offset = 0
                for i in batch:
                    n = len(requests[i][1])
                    results[i] = (argmax[offset:offset + n], logprob[offset:offset + n])
                    offset += n
        return results

    def greedy(self, prefixes: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations of many prefixes at once (left padding, KV cache), EOS included."""
        import torch
        from transformers import GenerationConfig

        width = max(len(p) for p in prefixes)
        ids = torch.full((len(prefixes), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prefixes), width), dtype=torch.long)
        for row, prefix in enumerate(prefixes):
            ids[row, width - len(prefix):] = torch.tensor(prefix)
            mask[row, width - len(prefix):] = 1
        config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=self.eos_token_id,
                                  pad_token_id=self.pad_token_id)
        with torch.inference_mode(), few_threads_for(self.model):
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        continuations = []
        for row in out[:, width:].tolist():
            if self.eos_token_id in row:
                row = row[: row.index(self.eos_token_id) + 1]
            continuations.append(row)
        return continuations
