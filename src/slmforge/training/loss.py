"""The training loss, computed only where it is needed.

With `loss_on: completion` a few positions per example carry a label (the answer and EOS).
Everything the loss reads from the final layer is taken at those positions only:

- the LM head (a vocabulary-wide projection, and its backward) runs on labelled positions;
- the last decoder layer's attention output projection and MLP are position-wise, and their
  outputs elsewhere feed nothing but the unused head: they run on labelled positions too.

The loss and its gradients are the same as the full computation's (tests/test_finetune.py
checks it); only work whose result is thrown away is skipped.
"""

from __future__ import annotations

import types

from slmforge.data import IGNORE

_TRIM_BELOW = 0.5  # trim the last layer when fewer than half the positions carry a label


class _Rows:
    """The positions ([batch, seq] bool) the last layer must compute; None: all of them."""

    keep = None


def _compute_rows_only(module, rows: _Rows) -> None:
    """Make a position-wise `module` run on rows.keep only (zeros elsewhere); names unchanged."""
    original = module.forward

    def forward(self, x, *args, **kwargs):
        if rows.keep is None:
            return original(x, *args, **kwargs)
        picked = original(x[rows.keep], *args, **kwargs)
        out = picked.new_zeros(*rows.keep.shape, picked.shape[-1])
        out[rows.keep] = picked
        return out

    module.forward = types.MethodType(forward, module)  # an instance attribute: state_dict keys stay


def causal_lm_loss(peft_model):
    """A module returning (sum of token losses, label-token count) for a packed batch.

    Wrapped in a module so DistributedDataParallel can hook it.
    """
    import torch
    import torch.nn.functional as F

    class CausalLMLoss(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model
            base = model.get_base_model()
            decoder = base.get_decoder()
            # a tuple, not attributes: they are already registered under self.model
            self._parts = (decoder, base.get_output_embeddings())
            self._softcap = getattr(base.config, "final_logit_softcapping", None)
            self._rows = None
            last = getattr(decoder, "layers", [None])[-1]
            position_wise = [getattr(last, "mlp", None), getattr(getattr(last, "self_attn", None), "o_proj", None)]
            if all(m is not None for m in position_wise):
                self._rows = _Rows()
                for m in position_wise:
                    _compute_rows_only(m, self._rows)

        def release(self) -> None:
            """Back to full computation. Call after backward: recomputation (gradient
            checkpointing) during backward must see the positions the forward saw."""
            if self._rows is not None:
                self._rows.keep = None

        def forward(self, input_ids, position_ids, labels):
            decoder, head = self._parts
            targets = labels[:, 1:]
            keep = targets != IGNORE
            if self._rows is not None:
                rows = torch.nn.functional.pad(keep, (0, 1))  # position t predicts token t + 1
                self._rows.keep = rows if rows.float().mean() < _TRIM_BELOW else None
            out = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False)
            logits = head(out.last_hidden_state[:, :-1][keep]).float()
            if self._softcap:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            return F.cross_entropy(logits, targets[keep], reduction="sum"), keep.sum()

    return CausalLMLoss(peft_model)
