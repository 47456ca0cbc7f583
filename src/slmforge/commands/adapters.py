"""`slmforge adapters convert|show`: separate adapters for a base built with adapter slots.

`convert ADAPTER_DIR --model BASE_DIR -o FILE` turns a peft LoRA or QLoRA adapter folder (from a
finetune step or any peft run on that base's model) into an `.onnx_adapter` + its sidecar `FILE.json`,
for that base only (what `olive convert-adapters` does). The training template comes from the adapter's
manifest (`--template` overrides). DoRA, LoHa and LoKr adapters are refused by name: build them merged.
`show FILE` prints the sidecar (what the adapter was made for) and the file's tensor count.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slmforge.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{convert,show}")
    convert = sub.add_parser("convert", help="a peft LoRA/QLoRA adapter folder -> an .onnx_adapter for a base")
    convert.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="peft adapter folder (adapter_config.json, "
                                                                    "adapter_model.safetensors)")
    convert.add_argument("--model", required=True, help="the base: an onnxruntime-genai folder built with adapter "
                                                        "slots (build_onnx --adapter_slots all)")
    convert.add_argument("-o", "--output", required=True, help="the file to write, NAME.onnx_adapter (its sidecar "
                                                               "NAME.onnx_adapter.json beside it)")
    convert.add_argument("--name", help="the adapter's name when served (default: NAME of the file)")
    convert.add_argument("--template", help="text template recorded for predict/evaluate (default: the one in the "
                                            "adapter's slmforge.json)")
    show = sub.add_parser("show", help="what an .onnx_adapter was made for: its sidecar and tensor count")
    show.add_argument("file", metavar="FILE", help="an .onnx_adapter file (or a folder holding one)")
    show.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    return _convert(args) if args.action == "convert" else _show(args)


def _convert(args: argparse.Namespace) -> int:
    from slmforge.commands import output_file
    from slmforge.contract.folders import carried_template, open_adapter
    from slmforge.data.template import Template
    from slmforge.models.adapter_slots import require_slots
    from slmforge.models.onnx_adapter import SUFFIX

    out = output_file(args.output, "-o")
    if not out.name.endswith(SUFFIX) or out.name == SUFFIX:
        raise InvalidInput(f"-o {out}: name the file NAME{SUFFIX} (predict, chat and evaluate look for that suffix)")
    if args.template:
        Template(args.template)  # a broken --template is named before any work
    adapter_dir = open_adapter(args.adapter_dir)
    require_slots(args.model)
    template = args.template or carried_template(adapter_dir)
    written = convert_atomically(adapter_dir, Path(args.model), out, name=args.name, template=template)
    meta = written.meta
    print(f"wrote {out} ({out.stat().st_size:,} bytes, {meta['tensors']} tensors, {meta['method']} rank "
          f"{meta['rank']}) for the base {args.model} ({meta['base']['digest'][:12]}); "
          f"{'template recorded' if template else 'no template recorded: predict/evaluate need --template'}")
    return 0


def convert_atomically(adapter_dir: Path, base: Path, out: Path, *, name: str | None, template: str | None):
    """onnx_adapter.convert into a scratch folder beside `out`, then moved into place: a refused or failed
    conversion leaves no file, and an older file of that name keeps its own sidecar until replaced (the
    old sidecar goes first, so a crash between the two moves leaves a file without a sidecar, which is
    still checked against its base, never a file with another file's sidecar)."""
    import shutil
    import tempfile

    from slmforge.contract.folders import open_adapter
    from slmforge.models import onnx_adapter
    from slmforge.models.torch_model import adapter_method
    from slmforge.training.methods import separate_adapter_refusal

    refusal = separate_adapter_refusal(adapter_method(open_adapter(adapter_dir)))
    if refusal:
        raise InvalidInput(f"{adapter_dir}: {refusal}")
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.resolve().parent))
    try:
        written = onnx_adapter.convert(adapter_dir, base, scratch / out.name,
                                       name=name or out.name.removesuffix(onnx_adapter.SUFFIX), template=template)
        onnx_adapter.sidecar(out).unlink(missing_ok=True)
        (scratch / out.name).replace(out)
        onnx_adapter.sidecar(scratch / out.name).replace(onnx_adapter.sidecar(out))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return onnx_adapter.AdapterFile(out, written.meta)


def _show(args: argparse.Namespace) -> int:
    from slmforge.models import onnx_adapter

    adapter = onnx_adapter.open_file(args.file)
    meta = dict(adapter.meta)
    shapes = meta.pop("shapes")
    meta.update(file=str(adapter.path), size_bytes=adapter.path.stat().st_size, tensors_in_file=len(shapes),
                sidecar=onnx_adapter.sidecar(adapter.path).is_file())
    if args.json:
        print(json.dumps(meta, sort_keys=True))
        return 0
    base = meta.get("base") or {}
    print(f"{adapter.name}: {adapter.path} ({meta['size_bytes']:,} bytes, {len(shapes)} tensors)")
    if not meta["sidecar"]:
        print(f"  no sidecar ({onnx_adapter.sidecar(adapter.path).name}): only the base's model version "
              f"{meta['model_version']:#x} is known")
        return 0
    targets = meta.get("target_modules") or "?"
    targets = targets if isinstance(targets, str) else ", ".join(targets)
    print(f"  method {meta.get('method')}, rank {meta.get('rank')}, alpha {meta.get('alpha')}, targets {targets}")
    print(f"  base {str(base.get('digest', '?'))[:12]} (slots on {', '.join(base.get('modules') or []) or '?'})")
    template = meta.get("text_template")
    print(f"  template {json.dumps(template) if template else '(none)'}")
    return 0
