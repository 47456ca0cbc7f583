"""`slmforge predict --model DIR TEXT`: the model's answer for one input, with onnxruntime-genai only.

DIR is a model folder or a registered model: `models:/NAME/VERSION`, `models:/NAME@ALIAS` (e.g. `@current`).

TEXT fills the template's input field (`--template`, else the one in the adapter's sidecar, else the one
carried in the folder's slmforge.json); a template with several input fields takes TEXT as a JSON object.
`--adapter FILE` answers with a separate `.onnx_adapter` on a base built with adapter slots (without it
the base answers alone). With no
template at all TEXT is the prompt as it is. Greedy decoding stops at EOS or at the end of the
answer (a newline after it, or the template's suffix). torch is never imported.
"""

from __future__ import annotations

import argparse
import json

from slmforge.commands import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="onnxruntime-genai model folder (build_onnx output), or a "
                                                       "registered one: models:/NAME/VERSION, models:/NAME@ALIAS")
    parser.add_argument("text", help="the input, e.g. a phrase; a JSON object for multi-field templates")
    parser.add_argument("--adapter", help="an .onnx_adapter file (or a folder holding one) to answer with, on a "
                                          "base built with adapter slots")
    parser.add_argument("--template", help="text template (default: the adapter's, else the one in the folder's "
                                           "slmforge.json)")
    parser.add_argument("--max_new_tokens", type=positive_int, default=32, help="upper bound on answer length (default 32)")


def run(args: argparse.Namespace) -> int:
    from slmforge.contract.folders import carried_template
    from slmforge.data.template import Template
    from slmforge.errors import InvalidInput
    from slmforge.models.answers import answer_finished, answer_of
    from slmforge.models.genai import GenaiModel

    if not args.text.strip():
        raise InvalidInput("TEXT is empty: give the input to answer, e.g. slmforge predict --model DIR 'some text'")
    if args.template:
        Template(args.template)  # a broken --template is named before the model folder is looked at
    folder, adapter = serving_folder(args.model, args.adapter)
    text = args.template or (adapter.template if adapter else None) or carried_template(folder)
    prompt, suffix = prompt_and_suffix(text, args.text) if text else (args.text, "")
    model = GenaiModel(folder, adapters=[adapter.path] if adapter else [])
    generated, _ = model.generate(prompt, args.max_new_tokens, answer_finished(suffix))
    print(answer_of(generated, suffix))
    return 0


def serving_folder(model: str, adapter: str | None):
    """(the og folder, the opened adapter or None) of predict and chat: a folder that is no base for the
    adapter (a Hugging Face folder, a plain or baked build) is said before og loads anything. `model` may be
    a models:/ URI (a registered adapter answers on its base unless --adapter names another)."""
    from slmforge.commands import model_argument
    from slmforge.models.genai import require_onnx_folder

    model, registered_adapter, _ = model_argument(model)
    adapter = adapter or registered_adapter

    if adapter is None:
        return require_onnx_folder(model), None
    from slmforge.models import onnx_adapter
    from slmforge.models.backend import require_adapter_base

    return require_adapter_base(model), onnx_adapter.open_file(adapter)


def prompt_and_suffix(template_text: str, text: str) -> tuple[str, str]:
    """Render the prompt for one input and the suffix expected after the answer."""
    from slmforge.data.template import Template
    from slmforge.errors import InvalidInput
    from slmforge.models.answers import template_suffix

    template = Template(template_text)
    inputs = [f for f in dict.fromkeys(template.fields) if f != template.answer_field]
    if len(inputs) == 1:
        row = {inputs[0]: text}
    else:
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or any(f not in row for f in inputs):
            raise InvalidInput(f"the template takes the fields {', '.join(inputs) or '(none)'}: "
                               f"pass TEXT as a JSON object with them")
    row = {**row, template.answer_field: ""}
    return template.prompt(row), template_suffix(template, row)
