"""Test helper: a PEFT LoRA adapter for the tiny model, made with the real peft library.

Used before (and independently of) the finetune step: lora_B is set to small random values so
merging it changes the model (a freshly initialised LoRA has lora_B = 0 and merges to a no-op).
"""

from __future__ import annotations

import json
from pathlib import Path

TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


def make_lora_adapter(base_dir: Path, out_dir: Path, *, seed: int = 0, r: int = 8, std: float = 0.05,
                      quantized: bool = False, targets: list[str] = TARGETS) -> Path:
    """Save a LoRA adapter (optionally trained-on-4-bit style, i.e. a QLoRA adapter) for `base_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    kwargs = {}
    if quantized:
        from transformers import BitsAndBytesConfig

        kwargs = {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32), "device_map": "cpu"}
    base = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    torch.manual_seed(seed)  # before get_peft_model: LoRA weights are initialised there
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, std)
    model.save_pretrained(out_dir)
    # Like the finetune step: the adapter names its base without a machine-local path.
    config_path = Path(out_dir) / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "slmforge/tiny-phi3"
    config_path.write_text(json.dumps(config, indent=2))
    return Path(out_dir)


def adapter_logits(base_dir: Path, adapter: Path) -> list:
    """Logits of base + adapter (peft, float32) at every position of logit_check.CHECK_PROMPTS: what the merge
    check compares a merged model with (merge.merge_into's `reference`)."""
    from slmforge.models import logit_check, torch_model

    tokenizer = torch_model.load_tokenizer(str(base_dir))
    token_ids = [list(tokenizer(p)["input_ids"]) for p in logit_check.CHECK_PROMPTS]
    model = torch_model.with_adapter(torch_model.load_causal_lm(str(base_dir)), adapter)
    return torch_model.all_logits(model, token_ids)


def tone_dataset(root, tokenizer_dir, seed_data, *, max_samples: int, max_seq_len: int):
    """A load_data folder of the seed data's first rows: loss on the tone only, 10% held out."""
    import json

    from slmforge.steps import load_data

    spec = root / "spec.json"
    spec.write_text(json.dumps({"text_cols": ["phrase", "tone"],
                                "text_template": "### Text: {phrase}\n### The tone is:\n{tone}"}))
    out = root / "dataset"
    load_data.run(data=str(seed_data), spec=spec, tokenizer=tokenizer_dir, dataset=out, max_samples=max_samples,
                  strategy="line-by-line", loss_on="completion", eval_dataset_size=0.1,
                  max_seq_len=max_seq_len)
    return out
