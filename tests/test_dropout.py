"""training/dropout.py: the LoRA dropout mask is a Bernoulli(1 - p) mask, scaled as nn.Dropout scales,
drawn from torch's seeded generator, and put in place of peft's nn.Dropout on CPU (only where p > 0)."""

from __future__ import annotations

import math

import pytest
import torch

from slmforge.training import dropout


def _z(observed: float, p: float, n: int) -> float:
    return abs(observed - p) / math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_the_mask_keeps_each_element_with_probability_one_minus_p_independently(p):
    torch.manual_seed(0)
    n = 1_000_000
    keep = dropout.keep_mask((1000, 1000), p).flatten()
    dropped = (~keep).double()
    # Both 32-bit halves of each random word are uniform: a draw whose high half were biased (a
    # 63-bit draw: random_() without bounds) would drop nothing at odd positions.
    for part in (dropped[0::2], dropped[1::2]):
        assert _z(part.mean().item(), p, n // 2) < 5
    # Neighbours are independent: both dropped with probability p^2.
    both = (dropped[0::2] * dropped[1::2]).mean().item()
    assert _z(both, p * p, n // 2) < 5


def test_the_mask_is_a_function_of_the_seed():
    torch.manual_seed(3)
    a, b = dropout.keep_mask((64, 64), 0.1), dropout.keep_mask((64, 64), 0.1)
    torch.manual_seed(3)
    assert torch.equal(dropout.keep_mask((64, 64), 0.1), a)
    assert not torch.equal(a, b)


def test_the_threshold_rounds_p_to_a_multiple_of_two_to_the_minus_32():
    for p in (0.05, 0.1, 1 / 3):
        threshold = dropout.keep_threshold(p)
        assert abs((threshold + 2**31) / 2**32 - p) <= 2**-33


def test_forward_and_backward_scale_kept_elements_as_nn_dropout_does():
    layer = dropout._dropout_class()(0.2)
    x = torch.randn(40, 30, requires_grad=True)
    y = layer(x)
    y.backward(torch.ones_like(y))
    kept = y != 0
    assert 0.6 < kept.float().mean().item() < 0.95
    assert torch.equal(y[kept], x[kept] * (1 / 0.8))
    assert torch.equal(x.grad, kept.float() * (1 / 0.8))
    layer.eval()
    assert layer(x) is x  # evaluation: the identity, as nn.Dropout


def test_install_replaces_only_lora_dropouts_with_p_above_zero(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def peft_model(p: float):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return get_peft_model(base, LoraConfig(r=4, lora_dropout=p, target_modules=["qkv_proj", "o_proj"],
                                               init_lora_weights=False))

    model = peft_model(0.1)
    ids = torch.tensor([[1, 5, 9, 30, 2]])
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
    layers = sum(1 for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict))
    assert dropout.install(model) == layers > 0
    assert not any(type(m) is torch.nn.Dropout for n, m in model.named_modules() if "lora_dropout" in n)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)  # evaluation is untouched
    model.train()
    torch.manual_seed(1)
    first = model(input_ids=ids).logits
    torch.manual_seed(1)
    assert torch.equal(model(input_ids=ids).logits, first)  # seeded
    assert not torch.equal(model(input_ids=ids).logits, first)  # and masked: another draw, other logits
    assert dropout.install(peft_model(0.0)) == 0  # dropout 0 is peft's nn.Identity: nothing to replace
