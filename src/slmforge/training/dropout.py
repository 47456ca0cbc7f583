"""LoRA dropout on CPU with the same Bernoulli mask, drawn at a fraction of the cost.

peft puts an `nn.Dropout` in front of every adapted module's A matrix. On CPU its mask is drawn by
`bernoulli_`, about 7 ns an element on this machine: in a LoRA step on SmolLM2 (every linear layer,
dropout 0.05) the masks took 22 % of the step, more than the rank-16 matmuls they feed
(bench/results/finetune_profile.json). Here each element keeps with probability 1 - p by
thresholding a 32-bit uniform integer from the same torch generator (random 64-bit words, read as
two 32-bit halves): a Bernoulli mask with p rounded to a multiple of 2^-32 (finer than
torch.rand's 2^-24), kept elements scaled by 1 / (1 - p) as nn.Dropout scales them. The values
are the same distribution, not the same draws: a run with dropout gets another random sequence
than before, and is still a pure function of the seed (the generator's state is what checkpoints
save, training/checkpoint.py). The mask is kept as bool for the backward pass, as nn.Dropout keeps it.

CUDA keeps nn.Dropout (its Philox generator is fast); dropout 0 is peft's nn.Identity, untouched.
"""

from __future__ import annotations

_WORD_BITS = 32


def keep_threshold(p: float) -> int:
    """The signed 32-bit value at or above which an element is kept: P(drop) = round(p * 2^32) / 2^32."""
    return round(p * 2**_WORD_BITS) - 2**(_WORD_BITS - 1)


def keep_mask(shape, p: float, device=None):
    """A bool mask of `shape`: True with probability 1 - p (rounded to 2^-32), from torch's generator."""
    import torch

    n = 1
    for size in shape:
        n *= int(size)
    words = torch.empty((n + 1) // 2, dtype=torch.int64, device=device)
    words.random_(-2**63, None)  # from the type's minimum, no bound: all 64 bits uniform
    return words.view(torch.int32)[:n].view(shape) >= keep_threshold(p)


def install(peft_model) -> int:
    """Replace the nn.Dropout of every LoRA layer of `peft_model` (on CPU) by the mask above; the count."""
    import torch

    dropout_cls = _dropout_class()
    count = 0
    for module in peft_model.modules():
        layers = getattr(module, "lora_dropout", None)
        if not isinstance(layers, torch.nn.ModuleDict):
            continue
        for name, layer in list(layers.items()):
            if type(layer) is torch.nn.Dropout and layer.p > 0:
                layers[name] = dropout_cls(layer.p)
                layers[name].train(layer.training)
                count += 1
    return count


_CLASS = None


def _dropout_class():
    """The module class, made once torch is imported (this module stays light at import)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import torch

    class _MaskedScale(torch.autograd.Function):
        """x * keep / (1 - p), saving the bool mask (not a float one: a quarter of the memory)."""

        @staticmethod
        def forward(ctx, x, keep, scale: float):
            ctx.save_for_backward(keep)
            ctx.scale = scale
            return x * keep.to(x.dtype).mul_(scale)

        @staticmethod
        def backward(ctx, grad):
            (keep,) = ctx.saved_tensors
            return grad * keep.to(grad.dtype).mul_(ctx.scale), None, None

    class LoraDropout(torch.nn.Module):
        """nn.Dropout(p) with the thresholded mask (module doc)."""

        def __init__(self, p: float):
            super().__init__()
            self.p = float(p)

        def forward(self, x):
            if not self.training or self.p == 0:
                return x
            return _MaskedScale.apply(x, keep_mask(x.shape, self.p, x.device), 1.0 / (1.0 - self.p))

        def extra_repr(self) -> str:
            return f"p={self.p}"

    _CLASS = LoraDropout
    return _CLASS
