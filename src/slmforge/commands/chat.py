"""`slmforge chat --model DIR`: a streamed conversation with onnxruntime-genai only.

Each line read from stdin is a user turn; the reply streams to stdout as it is generated. Works
interactively and with piped input (`printf 'hi\\nbye\\n' | slmforge chat --model DIR`). Uses the
folder's chat template (chat_template.jinja / tokenizer_config.json). `--adapter FILE` replies with a
separate `.onnx_adapter` on a base built with adapter slots. torch is never imported.
"""

from __future__ import annotations

import argparse
import json
import sys

from slmforge.commands import positive_int

END_OF_TURN = "<|end|>"  # Phi-3's end-of-turn token; generation also stops at EOS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="onnxruntime-genai model folder (build_onnx output), or a "
                                                       "registered one: models:/NAME/VERSION, models:/NAME@ALIAS")
    parser.add_argument("--adapter", help="an .onnx_adapter file (or a folder holding one) to reply with, on a "
                                          "base built with adapter slots")
    parser.add_argument("--system", help="a system message to start the conversation with")
    parser.add_argument("--max_new_tokens", type=positive_int, default=256, help="longest reply in tokens (default 256)")


def run(args: argparse.Namespace) -> int:
    from slmforge.commands.predict import serving_folder
    from slmforge.models.genai import GenaiModel

    folder, adapter = serving_folder(args.model, args.adapter)
    model = GenaiModel(folder, adapters=[adapter.path] if adapter else [])
    end_id = model.token_id(END_OF_TURN)
    stop_ids = model.eos_token_ids | ({end_id} if end_id is not None else set())
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.rstrip("\n")})
        prompt_ids = fitting_prompt(model, messages, args.max_new_tokens)
        reply = ""
        for token, piece in model.stream(prompt_ids, args.max_new_tokens, stop_ids):
            if token in stop_ids:
                break
            reply += piece
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": reply})
    return 0


def fitting_prompt(model, messages: list[dict], max_new_tokens: int) -> list[int]:
    """Token ids of the conversation so far, dropping the oldest turns when the context is full."""
    from slmforge.errors import InvalidInput

    while True:
        try:
            text = model.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        except RuntimeError as e:
            raise InvalidInput(f"{model.folder}: no usable chat template ({e})") from e
        ids = model.encode(text)
        if len(ids) + max_new_tokens <= model.context_length:
            return ids
        first_turn = 1 if messages and messages[0]["role"] == "system" else 0
        if len(messages) - first_turn <= 1:
            raise InvalidInput(f"the message is {len(ids)} tokens; with --max_new_tokens {max_new_tokens} it "
                               f"does not fit the model's context of {model.context_length}")
        del messages[first_turn:first_turn + 2]  # the oldest user turn and its reply
