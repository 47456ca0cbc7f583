"""A deterministic tiny Phi-3 (random weights, ~0.56 M parameters) with a ByteLevel BPE tokenizer.

No machine of this project reaches a model hub; tests, benchmarks and the demo build this model
locally in about a second. Facts behind the choices (docs/pitfalls.md, Tokenizers and The ONNX builder):
ByteLevel BPE is the only locally trained tokenizer onnxruntime-genai reproduces exactly, and a
vocab size equal to certain layer widths makes the ONNX builder wire the LM head to the wrong layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# Text the tokenizer learns its merges from, besides the data rows: the templates users write.
_TEMPLATE_TEXT = [
    "### Text: {}\n### The tone is:\n{}",
    "<|user|>\n{}<|end|>\n<|assistant|>\n{}<|end|>",
]


@dataclass(frozen=True)
class TinySpec:
    """Shape of a random Phi-3. `tiny` is the test model; `small` (~27 M parameters) the benchmark one."""

    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 512

    def builder_collisions(self) -> set[int]:
        """Widths the ONNX builder could mistake for the LM head, silently (docs/pitfalls.md, The ONNX builder)."""
        kv = self.hidden_size  # num_key_value_heads == num_attention_heads here
        h, i = self.hidden_size, self.intermediate_size
        return {h, kv, h + 2 * kv, i, 2 * i}


SPECS = {
    "tiny": TinySpec(),
    # ~31 M parameters; its 4096-token vocab needs the seed data set as extra corpus.
    "small": TinySpec(vocab_size=4096, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                      num_attention_heads=8, max_position_embeddings=1024),
}


def demo_data_path() -> Path:
    """The small tone data set shipped with slmforge (written for this project)."""
    return Path(str(resources.files("slmforge") / "data" / "tones.jsonl"))


def _corpus(extra_files: list[Path]) -> list[str]:
    lines: list[str] = []
    for path in [demo_data_path(), *extra_files]:
        for raw in path.read_text(encoding="utf-8").splitlines():
            if not raw.strip():
                continue
            row = json.loads(raw)
            values = [str(v) for v in row.values()]
            lines.append(" ".join(values))
            if len(values) == 2:
                lines.extend(t.format(*values) for t in _TEMPLATE_TEXT)
    return lines


def train_tokenizer(vocab_size: int, extra_files: list[Path] = ()):
    """A ByteLevel BPE wrapped as PreTrainedTokenizerFast, adding `<s>` like Phi-3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(list(extra_files)), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, size: str = "tiny",
                     extra_corpus: list[Path] = ()) -> Path:
    """Write a random Phi-3 and its tokenizer to `out_dir`. Same seed and size → identical bytes."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    spec = SPECS[size]
    if spec.vocab_size in spec.builder_collisions():
        raise AssertionError(
            f"vocab_size {spec.vocab_size} equals a layer width {sorted(spec.builder_collisions())}: "
            "the ONNX builder would wire the LM head to the wrong layer"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(spec.vocab_size, list(extra_corpus))
    if len(tokenizer) != spec.vocab_size:
        raise ValueError(f"the tokenizer corpus yields only {len(tokenizer)} tokens, the '{size}' model needs "
                         f"{spec.vocab_size}: pass more text with extra_corpus")
    config = Phi3Config(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        original_max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
